"""Connecting to the change store: which database, how to reach it, and its schema's migrations.

The store is PostgreSQL with PostGIS; its tables live in the schema ``lcms`` and are created by the
Alembic migrations in ``lcms_tasks/store/migrations`` (:func:`upgrade`, ``lcms db upgrade``).

Which database (:func:`database_url`), in order:

1. ``database.url`` of the project config (write the password as ``${VAR}``);
2. the environment variable ``LCMS_DATABASE_URL``;
3. the providers registered with :func:`register_url_provider`, asked with the config's
   ``database.airflow_conn_id`` (the Airflow glue registers one that reads that connection);
4. the project-local embedded cluster (:mod:`lcms_tasks.store.embedded`) when it is running;
5. none: ``None``.

Every failure to connect is one :class:`~lcms_tasks.errors.ChangeStoreError` whose message names the
database (user, host, port, name; never the password) and says what to do. URLs may be written
as libpq URIs (``postgresql://...``) or SQLAlchemy URLs (``postgresql+psycopg2://...``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcms_tasks.errors import ChangeStoreError

if TYPE_CHECKING:
    import sqlalchemy

    from lcms_tasks.config import ProjectConfig

log = logging.getLogger(__name__)

#: The PostgreSQL schema holding the store's tables (and Alembic's version table).
SCHEMA = "lcms"
#: Environment variable naming the store's URL when the config does not.
ENV_URL = "LCMS_DATABASE_URL"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: The newest migration's revision: the schema this code reads and writes (a test checks it is the head).
SCHEMA_REVISION = "0004"
DEFAULT_CONNECT_TIMEOUT_S = 10

#: A provider maps an Airflow connection id (``database.airflow_conn_id``) to a URL, or None.
UrlProvider = Callable[[str], "str | None"]

_PROVIDERS: list[UrlProvider] = []
_LOCK = threading.Lock()

# Alembic announces each of its autogenerate plugins at INFO when it is first imported, and its migration
# context on every run: noise for an operator (a user's own logging config may still lower these).
for _name in ("alembic.runtime.plugins", "alembic.runtime.migration"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)


# --------------------------------------------------------------------------------------------- URLs
def _parsed(url: str) -> Any:
    from sqlalchemy.engine import make_url

    try:
        return make_url(sqlalchemy_url(url))
    except Exception as err:  # sqlalchemy.exc.ArgumentError: never echo the URL, it may hold a password
        raise ChangeStoreError(
            "the change store URL is not a database URL (expected postgresql://USER[:PASSWORD]@HOST[:PORT]/NAME)",
            permanent=True,
        ) from err


def sqlalchemy_url(url: str) -> str:
    """``url`` as a SQLAlchemy URL on the psycopg2 driver (``postgresql+psycopg2://...``)."""
    return re.sub(r"^(?:postgres|postgresql)(?:\+\w+)?://", "postgresql+psycopg2://", url.strip(), count=1)


def libpq_url(url: str) -> str:
    """``url`` as a libpq URI (``postgresql://...``, no driver suffix), for psycopg2, asyncpg and psql."""
    return re.sub(r"^(?:postgres|postgresql)(?:\+\w+)?://", "postgresql://", url.strip(), count=1)


def describe(url: str) -> str:
    """``database 'NAME' at HOST:PORT (user USER)``: names the database, never its password."""
    u = _parsed(url)
    host = u.host or u.query.get("host") or "the local socket"
    if isinstance(host, tuple):
        host = ",".join(host)
    port = u.port or u.query.get("port") or 5432
    user = u.username or os.environ.get("PGUSER") or "(default user)"
    return f"database {u.database or '(default)'!r} at {host}:{port} (user {user})"


def hide_password(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    u = _parsed(url)
    rendered: str = u.render_as_string(hide_password=True)
    return libpq_url(rendered) if not url.strip().startswith("postgresql+") else rendered


def _redact(text: str, url: str) -> str:
    try:
        password = _parsed(url).password
    except ChangeStoreError:
        return text
    return text.replace(str(password), "***") if password else text


# ---------------------------------------------------------------------------------------- providers
def register_url_provider(provider: UrlProvider) -> None:
    """Ask ``provider`` for the store's URL when neither the config nor the environment give one (no-op twice)."""
    with _LOCK:
        if provider not in _PROVIDERS:
            _PROVIDERS.append(provider)


def unregister_url_provider(provider: UrlProvider) -> None:
    """Forget ``provider`` (no-op if it was not registered)."""
    with _LOCK:
        if provider in _PROVIDERS:
            _PROVIDERS.remove(provider)


def resolve_database_url(cfg: ProjectConfig | None = None) -> tuple[str, str] | None:
    """``(url, where it came from)`` of the change store, in the order of the module docstring; None if none."""
    if cfg is not None and cfg.database.url:
        return cfg.database.url, "database.url of the config"
    env = os.environ.get(ENV_URL, "").strip()
    if env:
        return env, f"the environment variable {ENV_URL}"
    conn_id = cfg.database.airflow_conn_id if cfg is not None else "lcms_change_store"
    with _LOCK:
        providers = list(_PROVIDERS)
    for provider in providers:
        name = getattr(provider, "__qualname__", repr(provider))
        try:
            found = provider(conn_id)
        except Exception as exc:  # a broken provider must not hide the embedded fallback
            log.warning("database URL provider %s failed for connection %r: %s", name, conn_id, type(exc).__name__)
            continue
        if found:
            return found, f"the connection {conn_id!r}"
    from lcms_tasks.store.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres()
    if embedded.is_running():
        return embedded.url, f"the embedded database ({embedded.data_dir})"
    return None


def database_url(cfg: ProjectConfig | None = None) -> str | None:
    """The store's URL: ``database.url``, ``LCMS_DATABASE_URL``, a provider, the running embedded one, or None."""
    found = resolve_database_url(cfg)
    return found[0] if found else None


def require_database_url(cfg: ProjectConfig | None = None) -> str:
    """:func:`database_url`, or a :class:`ChangeStoreError` saying how to configure or start one."""
    url = database_url(cfg)
    if url is None:
        raise ChangeStoreError(
            f"no change store database: set database.url in the config or {ENV_URL}, "
            "or start the project-local one with `lcms db start`",
            permanent=True,
        )
    return url


@contextlib.contextmanager
def project_database(cfg: ProjectConfig | None = None, *, say: Any = None) -> Iterator[str]:
    """The store's URL for one command; with nothing configured, the embedded cluster for its duration.

    :func:`database_url` when it finds one; otherwise the project-local embedded cluster is started
    (created and migrated on first use) and stopped again afterwards, so that commands such as
    ``lcms users add`` work after ``make demo`` (which stops it) without a ``lcms db start`` first.
    ``say``: called with one line when the cluster is started here.
    """
    url = database_url(cfg)
    if url is not None:
        yield url
        return
    from lcms_tasks.store.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres()
    if say is not None:
        say(f"starting the project-local change store for this command ({embedded.data_dir})")
    url = embedded.start()
    try:
        yield url
    finally:
        embedded.stop()


# ------------------------------------------------------------------------------------------ connect
def _fix_for(message: str, url: str) -> tuple[str, str, bool]:
    """(what went wrong, the fix, permanent) for a libpq connection error message."""
    m = message.lower()
    where = f"database.url / {ENV_URL} (or the Airflow connection)"
    if "password authentication failed" in m or "no password supplied" in m or "authentication failed" in m:
        return (
            "the server refused the login (wrong user or password)",
            f"set the right user and password in {where}; write the password as ${{VAR}} in the config",
            True,
        )
    if "role" in m and "does not exist" in m:
        return (
            "the server has no such role (user)",
            f"create the role on the server (createuser) or name an existing one in {where}",
            True,
        )
    if "database" in m and "does not exist" in m:
        return "the database does not exist on the server", "create it (createdb NAME) or fix its name", True
    if "pg_hba.conf" in m:
        return (
            "the server does not allow this host/user/database (pg_hba.conf)",
            "add a pg_hba.conf entry on the server for this client",
            True,
        )
    if "could not translate host name" in m or "name or service not known" in m:
        return "the host name does not resolve", f"correct the host in {where}", True
    if any(
        s in m
        for s in ("connection refused", "timeout expired", "could not connect", "no route to host", "unreachable")
    ):
        return (
            "the server is unreachable (nothing answers at that host and port)",
            f"start the server or correct the host and port in {where}; for the project-local database "
            "run `lcms db start`",
            False,
        )
    return "the connection failed", f"check the server and {where}", False


def connection_error(err: BaseException, url: str, *, doing: str = "connect to the change store") -> ChangeStoreError:
    """A one-line :class:`ChangeStoreError` for a failed connection: the database, the cause, the fix."""
    raw = " ".join(str(err).split())
    what, fix, permanent = _fix_for(raw, url)
    detail = _redact(raw.split("FATAL:")[-1].strip(), url)
    return ChangeStoreError(
        f"cannot {doing}: {describe(url)}: {what} ({detail}). Fix: {fix}",
        database=describe(url),
        permanent=permanent,
    )


def connect(url: str, *, application_name: str = "lcms", connect_timeout: int | None = None) -> Any:
    """A psycopg2 connection to ``url`` (autocommit off); :class:`ChangeStoreError` if it cannot connect."""
    import psycopg2

    describe(url)  # refuse a malformed URL before libpq echoes it
    kwargs: dict[str, Any] = {"application_name": application_name}
    if "connect_timeout" not in url:
        kwargs["connect_timeout"] = connect_timeout or DEFAULT_CONNECT_TIMEOUT_S
    try:
        return psycopg2.connect(libpq_url(url), **kwargs)
    except psycopg2.OperationalError as err:
        raise connection_error(err, url) from None


def create_engine(url: str, **kwargs: Any) -> sqlalchemy.engine.Engine:
    """A SQLAlchemy engine on psycopg2 for ``url`` (tried once first, failing with the errors of :func:`connect`)."""
    import sqlalchemy

    connect(url).close()  # one clear error for a wrong password or an unreachable host
    connect_args = kwargs.pop("connect_args", {})
    if "connect_timeout" not in url:
        connect_args.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT_S)
    return sqlalchemy.create_engine(sqlalchemy_url(url), connect_args=connect_args, **kwargs)


# ------------------------------------------------------------------------------------------- schema
def ensure_postgis(connection: sqlalchemy.engine.Connection) -> str:
    """Create the PostGIS extension in the connected database if absent; its version.

    :class:`ChangeStoreError` naming the database and the fix when the server lacks PostGIS or the
    role may not create the extension.
    """
    import sqlalchemy
    from sqlalchemy import text

    url = connection.engine.url.render_as_string(hide_password=False)
    version = connection.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'postgis'")).scalar()
    if version:
        return str(version)
    major = int(connection.execute(text("SHOW server_version_num")).scalar() or 0) // 10000
    available = connection.execute(
        text("SELECT default_version FROM pg_available_extensions WHERE name = 'postgis'")
    ).scalar()
    db = describe(url)
    if available is None:
        raise ChangeStoreError(
            f"{db}: the server has no PostGIS extension to create. Fix: install the Debian package "
            f"postgresql-{major}-postgis-3 on the database server (`make setup` does it for a local server), "
            "then run `lcms db upgrade` again",
            database=db,
            permanent=True,
        )
    try:
        with connection.begin_nested():
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
    except sqlalchemy.exc.DBAPIError as err:
        if getattr(err.orig, "pgcode", None) != "42501":  # insufficient_privilege
            raise
        u = connection.engine.url
        raise ChangeStoreError(
            f"{db}: the PostGIS extension is not created in this database and user {u.username} may not create "
            f"it. Fix: as a superuser run `CREATE EXTENSION postgis;` in database {u.database!r} (e.g. psql -h "
            f"{u.host} -p {u.port or 5432} -U postgres -d {u.database} -c 'CREATE EXTENSION postgis'), "
            "then `lcms db upgrade` again",
            database=db,
            permanent=True,
        ) from None
    version = connection.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'postgis'")).scalar()
    log.info("created the PostGIS extension %s in %s", version, db)
    return str(version)


def alembic_config(connection: sqlalchemy.engine.Connection | None = None) -> Any:
    """Alembic's configuration for the store's migrations (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_table_schema", SCHEMA)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest migration's revision id."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise ChangeStoreError(f"no migrations found in {MIGRATIONS_DIR}")
    return str(head)


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is migrated to (None: no LCMS schema yet)."""
    conn = connect(url, application_name="lcms-store")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.alembic_version",))
            if cur.fetchone()[0] is None:
                return None
            cur.execute(f"SELECT version_num FROM {SCHEMA}.alembic_version")
            row = cur.fetchone()
            return str(row[0]) if row else None
    finally:
        conn.close()


def require_schema(url: str) -> None:
    """:class:`ChangeStoreError` unless the database at ``url`` is migrated to the newest revision."""
    current = current_revision(url)
    head = SCHEMA_REVISION
    if current != head:
        raise ChangeStoreError(
            f"{describe(url)}: the change store schema is at revision {current or '(none)'}, this LCMS needs "
            f"{head}. Fix: run `lcms db upgrade` (with --config for a configured database)",
            database=describe(url),
            permanent=True,
        )


def upgrade(url: str, revision: str = "head") -> str:
    """Migrate the database at ``url`` to ``revision`` (idempotent); the revision it is at afterwards.

    One transaction: a failed migration leaves the database as it was. Creates the PostGIS
    extension when the role may (else :class:`ChangeStoreError` naming the database and the fix).
    """
    from alembic import command

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), revision)
    except ChangeStoreError:
        raise
    except Exception as err:
        import sqlalchemy

        if isinstance(err, sqlalchemy.exc.OperationalError):
            raise connection_error(err, url, doing="migrate the change store") from None
        raise ChangeStoreError(
            f"cannot migrate the change store, {describe(url)}: {_redact(' '.join(str(err).split()), url)}",
            database=describe(url),
        ) from err
    finally:
        engine.dispose()
    now = current_revision(url)
    log.info("change store %s at revision %s", describe(url), now)
    return now or ""
