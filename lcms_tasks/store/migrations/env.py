"""Alembic environment of the change store: runs the migrations on the connection it is handed.

:func:`lcms_tasks.store.db.upgrade` opens the connection (with its clear connection errors) and
passes it in ``config.attributes["connection"]``; run from the ``alembic`` command line instead,
the URL comes from ``sqlalchemy.url`` or ``LCMS_DATABASE_URL``. Everything runs in one transaction
under an advisory lock, so two processes migrating at once (``make demo`` and ``make serve``) take
turns and a failed migration leaves the database as it was.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from lcms_tasks.store.db import SCHEMA, create_engine

#: pg_advisory_xact_lock key of the store's migrations ("LCMSMIGR" as an integer).
MIGRATION_LOCK = 0x4C434D534D494752


def _run(connection: Connection) -> None:
    context.configure(connection=connection, version_table_schema=SCHEMA, transactional_ddl=True)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get("LCMS_DATABASE_URL", "")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():  # pragma: no cover - SQL scripts are not offered
    raise SystemExit("the change store migrations run online only: lcms db upgrade")
run_migrations_online()
