"""Change store migrations on the machine's PostgreSQL: up from empty, idempotent, the schema's guards, and the
three ways a database can be wrong (no PostGIS for this role, a wrong login, nobody listening)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg2
import pytest

from lcms_tasks.errors import ChangeStoreError
from lcms_tasks.store import current_revision, upgrade
from lcms_tasks.store.db import SCHEMA_REVISION
from tests.store_fixtures import admin_connection, database_url, free_port, fresh_database
from tests.store_fixtures import query_rows as rows


@pytest.fixture(scope="module")
def empty_db() -> Iterator[str]:
    """A database with nothing in it (no PostGIS either: the migration creates it as a superuser)."""
    with fresh_database("lcms_migr", postgis=False) as url:
        yield url


def test_upgrade_from_empty_creates_the_schema_and_is_idempotent(empty_db: str) -> None:
    assert current_revision(empty_db) is None
    assert upgrade(empty_db) == SCHEMA_REVISION
    assert rows(empty_db, "SELECT extname FROM pg_extension WHERE extname = 'postgis'") == [("postgis",)]
    tables = {r[0] for r in rows(empty_db, "SELECT tablename FROM pg_tables WHERE schemaname = 'lcms'")}
    assert tables == {
        *("alembic_version", "changes", "decisions", "detection_links", "loads", "users", "sessions"),
        *("accuracy_labels", "accuracy_label_history"),
    }
    columns = dict(
        rows(
            empty_db,
            "SELECT column_name, udt_name FROM information_schema.columns WHERE table_schema = 'lcms' AND "
            "table_name = 'changes'",
        )
    )
    for name, kind in {
        "id": "uuid",
        "geom": "geometry",
        "corrected_geom": "geometry",
        "tiles": "_text",
        "model_run_ids": "_text",
        "version": "int4",
        "datetime": "timestamptz",
        "area_m2": "float8",
        "status": "text",
    }.items():
        assert columns[name] == kind, name
    geom = rows(
        empty_db,
        "SELECT type, srid FROM geometry_columns WHERE f_table_schema = 'lcms' AND f_table_name = 'changes' "
        "AND f_geometry_column = 'geom'",
    )
    assert geom == [("MULTIPOLYGON", 4326)]
    indexes = {
        r[0]: r[1] for r in rows(empty_db, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'lcms'")
    }
    assert "USING gist (geom)" in indexes["changes_geom_gist"]
    assert "(project, season_before, season_after, status)" in indexes["changes_project_seasons_idx"]
    assert "WHERE (status <> 'detected'::text)" in indexes["changes_decided_idx"]
    # a second run changes nothing
    assert upgrade(empty_db) == SCHEMA_REVISION
    assert rows(empty_db, "SELECT count(*) FROM lcms.alembic_version") == [(1,)]


def _change(cur: object, **values: object) -> str:
    cid = str(uuid.uuid4())
    row = {
        "id": cid,
        "project": "p",
        "season_before": "2023",
        "season_after": "2024",
        "from_class": 1,
        "from_name": "forest",
        "to_class": 5,
        "to_name": "built-up",
        "area_m2": 100.0,
        "confidence": 0.9,
        "run_id": "r",
        "datetime": "2024-04-01T00:00:00Z",
        **values,
    }
    cols = ", ".join(row)
    cur.execute(  # type: ignore[attr-defined]
        f"INSERT INTO lcms.changes ({cols}, geom) VALUES ({', '.join(['%s'] * len(row))}, "
        "ST_Multi(ST_MakeEnvelope(45, 40, 45.001, 40.001, 4326)))",
        list(row.values()),
    )
    return cid


def test_schema_guards(empty_db: str) -> None:
    upgrade(empty_db)
    conn = psycopg2.connect(empty_db)
    conn.autocommit = True
    cur = conn.cursor()
    cid = _change(cur)
    cur.execute("SELECT status, version, updated_at FROM lcms.changes WHERE id = %s", (cid,))
    status, version, updated = cur.fetchone()
    assert (status, version) == ("detected", 1)
    with pytest.raises(psycopg2.errors.CheckViolation):
        _change(cur, status="maybe")
    with pytest.raises(psycopg2.errors.CheckViolation):
        _change(cur, confidence=1.5)
    # optimistic locking by the operator application: UPDATE ... WHERE version = seen
    cur.execute(
        "UPDATE lcms.changes SET status = 'confirmed', version = version + 1 WHERE id = %s AND version = 1", (cid,)
    )
    assert cur.rowcount == 1
    cur.execute(
        "UPDATE lcms.changes SET status = 'rejected', version = version + 1 WHERE id = %s AND version = 1", (cid,)
    )
    assert cur.rowcount == 0  # someone else's edit came first
    cur.execute("SELECT updated_at > %s FROM lcms.changes WHERE id = %s", (updated, cid))
    assert cur.fetchone()[0] is True
    with pytest.raises(psycopg2.errors.IntegrityConstraintViolation, match="never deleted"):
        cur.execute("DELETE FROM lcms.changes WHERE id = %s", (cid,))
    # decisions are append-only
    cur.execute(
        "INSERT INTO lcms.decisions (change_id, decided_by, action, previous, new, comment) "
        "VALUES (%s, 'ana', 'confirm', '{\"status\": \"detected\"}', '{\"status\": \"confirmed\"}', 'seen on site') "
        "RETURNING id",
        (cid,),
    )
    did = cur.fetchone()[0]
    for sql in ("UPDATE lcms.decisions SET comment = 'x' WHERE id = %s", "DELETE FROM lcms.decisions WHERE id = %s"):
        with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="append-only"):
            cur.execute(sql, (did,))
    with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="append-only"):
        cur.execute("TRUNCATE lcms.decisions")
    with pytest.raises(psycopg2.errors.CheckViolation):
        cur.execute("INSERT INTO lcms.decisions (change_id, decided_by, action) VALUES (%s, 'ana', 'shrug')", (cid,))
    conn.close()


@pytest.fixture
def non_superuser_db() -> Iterator[tuple[str, str]]:
    """(URL as a non-superuser owner, role) of a fresh database without PostGIS."""
    role = f"lcms_nosuper_{uuid.uuid4().hex[:8]}"
    admin = admin_connection()
    with admin.cursor() as cur:
        cur.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB')
    try:
        with fresh_database("lcms_nopostgis", postgis=False, owner=role) as url:
            yield database_url(url.rsplit("/", 1)[1], user=role), role
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


def test_no_postgis_and_no_right_to_create_it(non_superuser_db: tuple[str, str]) -> None:
    url, role = non_superuser_db
    name = url.rsplit("/", 1)[1]
    with pytest.raises(ChangeStoreError) as err:
        upgrade(url)
    text = str(err.value)
    assert f"database '{name}' at 127.0.0.1:5432 (user {role})" in text
    assert "CREATE EXTENSION postgis" in text and "superuser" in text
    assert "\n" not in text and err.value.permanent
    # the failed migration left nothing behind (one transaction)
    assert rows(url, "SELECT to_regclass('lcms.changes'), to_regnamespace('lcms')") == [(None, None)]


def test_wrong_role_fails_once_naming_the_database() -> None:
    url = database_url("postgres", user=f"nobody_{uuid.uuid4().hex[:6]}").replace("@", ":hunter2@", 1)
    with pytest.raises(ChangeStoreError) as err:
        upgrade(url)
    text = str(err.value)
    assert "database 'postgres' at 127.0.0.1:5432" in text and "no such role" in text and "Fix:" in text
    assert "hunter2" not in text and "\n" not in text


def test_unreachable_host_fails_once_naming_the_database() -> None:
    port = free_port()
    url = f"postgresql://lcms:hunter2@127.0.0.1:{port}/changes"
    with pytest.raises(ChangeStoreError) as err:
        upgrade(url)
    text = str(err.value)
    assert f"database 'changes' at 127.0.0.1:{port} (user lcms)" in text
    assert "unreachable" in text and "lcms db start" in text
    assert "hunter2" not in text and "\n" not in text and not err.value.permanent
