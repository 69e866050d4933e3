"""Migration 0002 (``lcms.users``, ``lcms.sessions``): up from an empty database and from 0001 with data in it,
down again, and the guards of its tables."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from lcms_tasks.store import current_revision, head_revision, upgrade
from lcms_tasks.store.db import SCHEMA_REVISION
from lcms_tasks.users import hash_password
from tests.store_fixtures import downgrade, fresh_database


@pytest.fixture
def empty_db() -> Iterator[str]:
    with fresh_database("lcms_users_migr", postgis=False) as url:
        yield url


def rows(url: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def tables(url: str) -> set[str]:
    return {r[0] for r in rows(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'lcms'")}


def columns(url: str, table: str) -> dict[str, str]:
    return dict(
        rows(
            url,
            "SELECT column_name, udt_name FROM information_schema.columns WHERE table_schema = 'lcms' "
            "AND table_name = %s",
            table,
        )
    )


def test_the_schema_revision_is_the_head() -> None:
    assert SCHEMA_REVISION == head_revision() == "0004"


def test_up_from_empty(empty_db: str) -> None:
    assert upgrade(empty_db) == SCHEMA_REVISION
    assert {"users", "sessions"} <= tables(empty_db)
    assert columns(empty_db, "users") == {
        "id": "int8",
        "name": "text",
        "password_hash": "text",
        "role": "text",
        "disabled": "bool",
        "created_at": "timestamptz",
    }
    assert columns(empty_db, "sessions") == {
        "token_hash": "bytea",
        "user_id": "int8",
        "csrf_token": "text",
        "created_at": "timestamptz",
        "expires_at": "timestamptz",
        "last_seen": "timestamptz",
    }
    assert upgrade(empty_db) == SCHEMA_REVISION  # idempotent


def test_up_from_0001_keeps_the_data_and_down_again(empty_db: str) -> None:
    assert upgrade(empty_db, "0001") == "0001"
    assert not {"users", "sessions"} & tables(empty_db)
    change = str(uuid.uuid4())
    rows(
        empty_db,
        "INSERT INTO lcms.changes (id, project, season_before, season_after, from_class, from_name, to_class, "
        "to_name, area_m2, confidence, run_id, datetime, geom) VALUES (%s, 'p', '2023', '2024', 1, 'forest', 5, "
        "'built-up', 100, 0.9, 'r', '2024-04-01', ST_Multi(ST_MakeEnvelope(45, 40, 45.001, 40.001, 4326)))",
        change,
    )
    assert upgrade(empty_db) == SCHEMA_REVISION
    assert current_revision(empty_db) == SCHEMA_REVISION
    assert rows(empty_db, "SELECT id::text FROM lcms.changes") == [(change,)]
    assert {"users", "sessions"} <= tables(empty_db)

    downgrade(empty_db, "0001")
    assert current_revision(empty_db) == "0001"
    assert not {"users", "sessions"} & tables(empty_db)
    assert rows(empty_db, "SELECT id::text FROM lcms.changes") == [(change,)]
    assert upgrade(empty_db) == SCHEMA_REVISION


def test_table_guards(empty_db: str) -> None:
    upgrade(empty_db)
    good = hash_password("a long enough passphrase")

    def add(name: str, role: str = "viewer", password_hash: str = good) -> int:
        [(uid,)] = rows(
            empty_db,
            "INSERT INTO lcms.users (name, password_hash, role) VALUES (%s, %s, %s) RETURNING id",
            name,
            password_hash,
            role,
        )
        return int(uid)

    uid = add("ana")
    with pytest.raises(psycopg2.errors.UniqueViolation):
        add("ANA")  # names are one user whatever their case
    with pytest.raises(psycopg2.errors.CheckViolation, match="users_role_check"):
        add("bob", role="root")
    with pytest.raises(psycopg2.errors.CheckViolation, match="users_name_check"):
        add("bob smith")
    with pytest.raises(psycopg2.errors.CheckViolation, match="users_password_hash_check"):
        add("bob", password_hash="plain text password")
    assert rows(empty_db, "SELECT disabled, created_at IS NOT NULL FROM lcms.users") == [(False, True)]

    session = (b"\x01" * 32, uid, "csrf")
    insert = "INSERT INTO lcms.sessions (token_hash, user_id, csrf_token, expires_at) VALUES (%s, %s, %s, {})"
    rows(empty_db, insert.format("now() + interval '1 hour'"), *session)
    with pytest.raises(psycopg2.errors.CheckViolation, match="sessions_token_hash_check"):
        rows(empty_db, insert.format("now() + interval '1 hour'"), b"short", uid, "csrf")
    with pytest.raises(psycopg2.errors.CheckViolation, match="sessions_expiry_check"):
        rows(empty_db, insert.format("now() - interval '1 hour'"), b"\x02" * 32, uid, "csrf")
    with pytest.raises(psycopg2.errors.ForeignKeyViolation):
        rows(empty_db, insert.format("now() + interval '1 hour'"), b"\x03" * 32, uid + 100, "csrf")
    # deleting a user ends their sessions
    rows(empty_db, "DELETE FROM lcms.users WHERE id = %s", uid)
    assert rows(empty_db, "SELECT count(*) FROM lcms.sessions") == [(0,)]
