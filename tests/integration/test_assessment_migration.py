"""Migration 0003 (``lcms.accuracy_labels``, ``lcms.accuracy_label_history``): up, its guards, and down again."""

from __future__ import annotations

import psycopg2
import pytest

from lcms_tasks.store import current_revision, upgrade
from lcms_tasks.store.db import SCHEMA_REVISION
from tests.store_fixtures import downgrade, fresh_database, query_rows

TABLES = {"accuracy_labels", "accuracy_label_history"}


def tables(url: str) -> set[str]:
    return {r[0] for r in query_rows(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'lcms'")}


def execute(url: str, sql: str, *args: object) -> None:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, args)
    finally:
        conn.close()


def test_0003_up_guards_and_down() -> None:
    with fresh_database("lcms_assess_mig") as url:
        assert upgrade(url, "0002") == "0002"
        assert not TABLES & tables(url)
        assert upgrade(url, "0003") == "0003" and tables(url) >= TABLES
        execute(
            url,
            "INSERT INTO lcms.accuracy_labels (project, season, design_id, point_id, labelled_by, reference_class, "
            "reference_name) VALUES ('p', '2024', 'd', 'P00001', 'ana', 1, 'cropland')",
        )
        with pytest.raises(psycopg2.errors.UniqueViolation):  # one row per point per labeller
            execute(
                url,
                "INSERT INTO lcms.accuracy_labels (project, season, design_id, point_id, labelled_by, "
                "reference_class, reference_name) VALUES ('p', '2024', 'd', 'P00001', 'ana', 2, 'forest')",
            )
        with pytest.raises(psycopg2.errors.CheckViolation):  # cannot tell has no class
            execute(
                url,
                "INSERT INTO lcms.accuracy_labels (project, season, design_id, point_id, labelled_by, "
                "reference_class, reference_name, cannot_tell) VALUES ('p', '2024', 'd', 'P2', 'ana', 2, 'x', true)",
            )
        execute(
            url,
            "INSERT INTO lcms.accuracy_label_history (label_id, version, labelled_by, cannot_tell) "
            "SELECT id, 1, 'ana', false FROM lcms.accuracy_labels",
        )
        for sql in ("DELETE FROM lcms.accuracy_label_history", "TRUNCATE lcms.accuracy_label_history"):
            with pytest.raises(psycopg2.Error, match="append-only"):
                execute(url, sql)
        downgrade(url, "0002")
        assert current_revision(url) == "0002" and not TABLES & tables(url)
        assert upgrade(url) == SCHEMA_REVISION
