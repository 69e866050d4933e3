"""Fixtures for tests that need the change store (PostgreSQL + PostGIS), for any test module to reuse.

Import the fixtures you use into your test module (pytest finds fixtures by name in the module)::

    from tests.store_fixtures import store_db, store_url  # noqa: F401  (pytest fixtures)

* ``store_db`` (module scope): the URL of a fresh database on the machine's server, PostGIS created
  and the LCMS schema migrated; dropped after the module.
* ``store_db_session`` (session scope): the same, shared by the whole session.
* ``store_url`` (function scope): ``store_db`` with the store's tables emptied before the test.
* ``embedded_store`` (module scope, slow): a private :class:`~lcms_tasks.store.EmbeddedPostgres`
  cluster (temporary state folder, free port, password authentication), started and migrated;
  stopped and deleted after the module. Yields the cluster (``.url``, ``.password``).

Helpers: :func:`fresh_database` (a context manager for a database of your own: with or without
PostGIS, migrated or not, owned by a role of your choice), :func:`clean_store`, :func:`free_port`,
:func:`downgrade` (migrate a database down to a revision), :func:`run_async` (a coroutine function on an
asyncpg connection, as the service's store functions take one).
The server is ``LCMS_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``, a
superuser); when it is unreachable the tests using these fixtures are skipped, saying so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
PG_ADMIN_URL = os.environ.get("LCMS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def admin_connection() -> Any:
    """An autocommit psycopg2 connection to the test server's maintenance database (skips if unreachable)."""
    import psycopg2

    try:
        conn = psycopg2.connect(PG_ADMIN_URL, connect_timeout=5, application_name="lcms-test-admin")
    except psycopg2.OperationalError as err:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL} (set LCMS_TEST_PG_URL): {err}")
    conn.autocommit = True
    return conn


def query_rows(url: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """The rows of one query on ``url`` (its own connection, closed afterwards)."""
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def database_url(name: str, *, user: str | None = None) -> str:
    """URL of database ``name`` on the test server (as ``user``, default the admin URL's user)."""
    from sqlalchemy.engine import make_url

    u = make_url(PG_ADMIN_URL).set(database=name)
    if user is not None:
        u = u.set(username=user, password=None)
    rendered: str = u.render_as_string(hide_password=False)
    return rendered


@contextlib.contextmanager
def fresh_database(
    prefix: str = "lcms_test", *, postgis: bool = True, migrate: bool = False, owner: str | None = None
) -> Iterator[str]:
    """A new database on the test server for the ``with`` block (its URL, as the admin user); dropped after."""
    admin = admin_connection()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"' + (f' OWNER "{owner}"' if owner else ""))
        url = database_url(name)
        if postgis:
            import psycopg2

            conn = psycopg2.connect(url)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            conn.close()
        if migrate:
            from lcms_tasks.store import upgrade

            upgrade(url)
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def run_async(url: str, fn: Callable[[Any], Awaitable[T]]) -> T:
    """``fn(connection)`` on a fresh asyncpg connection to ``url``; its result."""
    import asyncio

    import asyncpg

    async def go() -> T:
        conn = await asyncpg.connect(url)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


def downgrade(url: str, revision: str) -> None:
    """Migrate the store at ``url`` down to ``revision`` (Alembic, as ``lcms db upgrade`` goes up)."""
    from alembic import command

    from lcms_tasks.store.db import alembic_config, create_engine

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), revision)
    finally:
        engine.dispose()


def clean_store(url: str) -> None:
    """Empty the store's tables (decisions are append-only: their guard triggers are bypassed for this)."""
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SET session_replication_role = replica")  # user triggers off for this session
            cur.execute("TRUNCATE lcms.decisions, lcms.detection_links, lcms.changes, lcms.loads")
        conn.commit()
    finally:
        conn.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def store_db() -> Iterator[str]:
    """A fresh, migrated change store database for the test module."""
    with fresh_database("lcms_store", migrate=True) as url:
        yield url


@pytest.fixture(scope="session")
def store_db_session() -> Iterator[str]:
    """A fresh, migrated change store database for the test session."""
    with fresh_database("lcms_store_session", migrate=True) as url:
        yield url


@pytest.fixture
def store_url(store_db: str) -> str:
    """The module's store database, emptied before the test."""
    clean_store(store_db)
    return store_db


@pytest.fixture(scope="module")
def embedded_store() -> Iterator[Any]:
    """A private embedded cluster (temporary state folder the ``postgres`` user can reach, free port, password)."""
    from lcms_tasks.store import EmbeddedPostgres

    state = Path(tempfile.mkdtemp(prefix="lcms-test-pg-", dir="/tmp"))
    state.chmod(0o755)  # the server runs as the postgres system user when tests run as root
    db = EmbeddedPostgres(state, port=free_port(), password=f"pw-{uuid.uuid4().hex[:12]}")
    try:
        db.start()
        yield db
    finally:
        try:
            db.stop()
        finally:
            shutil.rmtree(state, ignore_errors=True)
