"""Fixtures of the integration tests: the change store's (a fresh PostgreSQL + PostGIS database per module or
session, emptied per test; a private embedded cluster), defined in :mod:`tests.store_fixtures`."""

from __future__ import annotations

from tests.store_fixtures import embedded_store, store_db, store_db_session, store_url  # noqa: F401  (fixtures)
