"""The change store: LCMS change polygons in PostgreSQL + PostGIS, with operator decisions.

* :mod:`~lcms_tasks.store.db` — which database (:func:`database_url`), connecting with clear errors,
  and the schema's Alembic migrations (:func:`upgrade`, ``lcms db upgrade``);
* :mod:`~lcms_tasks.store.load` — loading a season's change polygons in one transaction
  (:func:`load_season`);
* :mod:`~lcms_tasks.store.parcel_checks` — a season's parcel disagreements (parcel markers) as parcel
  checks for the Validation Tool (:func:`~lcms_tasks.store.parcel_checks.load_parcel_checks`);
* :mod:`~lcms_tasks.store.embedded` — the project-local cluster of the one-machine default
  (:class:`EmbeddedPostgres`, ``lcms db start|stop|status``);
* :mod:`~lcms_tasks.store.bench` — the bulk-load benchmark (:func:`~lcms_tasks.store.bench.bench_load`).

Tables (schema ``lcms``): ``changes`` (one row per change: stable id, project, seasons, transition,
area, confidence, geometry in EPSG:4326, tiles, run ids, status and corrections, version),
``decisions`` (append-only operator decisions), ``detection_links`` (later detections overlapping a
decided change) and ``loads`` (one row per load). See ``migrations/versions``.
"""

from __future__ import annotations

from lcms_tasks.errors import ChangeStoreError
from lcms_tasks.store.db import (
    SCHEMA,
    connect,
    current_revision,
    database_url,
    describe,
    head_revision,
    project_database,
    register_url_provider,
    require_database_url,
    resolve_database_url,
    unregister_url_provider,
    upgrade,
)
from lcms_tasks.store.embedded import EmbeddedPostgres
from lcms_tasks.store.load import TileChanges, load_season, prepare_changes, store_changes

__all__ = [
    "SCHEMA",
    "ChangeStoreError",
    "EmbeddedPostgres",
    "TileChanges",
    "connect",
    "current_revision",
    "database_url",
    "describe",
    "head_revision",
    "load_season",
    "prepare_changes",
    "project_database",
    "register_url_provider",
    "require_database_url",
    "resolve_database_url",
    "store_changes",
    "unregister_url_provider",
    "upgrade",
]
