"""A load is one transaction: a connection killed in the middle of it leaves the previous state intact.

The backend of the loading connection is terminated from another connection (``pg_terminate_backend``)
while it COPYs (found in ``pg_stat_activity``), and while it runs the set-based SQL after the COPY;
meanwhile other sessions keep seeing the old state.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import psycopg2
import pytest

from lcms_tasks.errors import ChangeStoreError
from lcms_tasks.store.bench import synthetic_tiles
from lcms_tasks.store.load import TileChanges, prepare_changes, store_changes

N_FIRST = 2_000
N_MANY = 200_000
KEY = {"project": "faults", "season_before": "b0", "season_after": "b1"}


def load(url: str, parts: list[TileChanges], **kw: Any) -> dict[str, Any]:
    rows = prepare_changes(parts, **KEY)
    return store_changes(
        url,
        rows,
        **KEY,
        datetime=dt.datetime(2024, 4, 1, tzinfo=dt.UTC),
        load_run_id=kw.pop("run", "r"),
        scope_tiles=[p.tile for p in parts],
        **kw,
    )


def snapshot(url: str) -> tuple[Any, ...]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*), md5(string_agg(id::text || status || version, ',' ORDER BY id)) FROM lcms.changes"
            )
            changes = cur.fetchone()
            cur.execute("SELECT count(*) FROM lcms.loads")
            loads = cur.fetchone()
            cur.execute("SELECT count(*) FROM lcms.detection_links")
            links = cur.fetchone()
            return (*changes, *loads, *links)
    finally:
        conn.close()


def terminate_loader(url: str) -> int:
    """Terminate the backend of the loading connection; its pid."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'lcms-store-load' AND datname = current_database()"
            )
            found = cur.fetchall()
    finally:
        conn.close()
    assert len(found) == 1 and found[0][1] is True, found
    return int(found[0][0])


@pytest.fixture
def loaded(store_url: str) -> tuple[str, tuple[Any, ...]]:
    """The store with a first load of the season pair and one decided change; its snapshot."""
    load(store_url, synthetic_tiles(N_FIRST, per_tile=1_000, seed=1), run="first")
    conn = psycopg2.connect(store_url)
    with conn.cursor() as cur:
        first = "(SELECT id FROM lcms.changes ORDER BY id LIMIT 1)"
        cur.execute(f"UPDATE lcms.changes SET status = 'confirmed', version = 2 WHERE id = {first}")
    conn.commit()
    conn.close()
    return store_url, snapshot(store_url)


def test_backend_killed_during_copy_leaves_the_previous_state(loaded: tuple[str, tuple[Any, ...]]) -> None:
    url, before = loaded
    parts = synthetic_tiles(N_MANY, per_tile=10_000, seed=2)
    killed: dict[str, Any] = {}

    def killer() -> None:
        # wait until the loading session is inside a COPY, then terminate it from this other connection
        conn = psycopg2.connect(url)
        conn.autocommit = True
        deadline = time.monotonic() + 120
        with conn.cursor() as cur:
            while time.monotonic() < deadline:
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lcms-store-load' "
                    "AND state = 'active' AND query LIKE 'COPY%'"
                )
                if cur.fetchone()[0]:
                    killed["seen_during_load"] = snapshot(url)
                    killed["pid"] = terminate_loader(url)
                    break
                time.sleep(0.005)
        conn.close()

    thread = threading.Thread(target=killer)
    thread.start()
    with pytest.raises(ChangeStoreError) as err:
        load(url, parts, run="killed", chunk_rows=20_000)
    thread.join(timeout=130)
    assert "pid" in killed, "the load finished before it could be killed"
    text = str(err.value)
    assert "connection was lost" in text and "nothing was changed" in text and "database 'lcms_store_" in text
    assert killed["seen_during_load"] == before  # other sessions saw the old state while the load ran
    assert snapshot(url) == before
    # the store still works: the same load, not killed, replaces the undecided changes
    out = load(url, parts, run="again")
    assert out["inserted"] + out["linked"] == N_MANY and out["replaced"] == N_FIRST - 1 and out["kept"] == 1


def test_backend_killed_between_statements_leaves_the_previous_state(loaded: tuple[str, tuple[Any, ...]]) -> None:
    url, before = loaded
    parts = synthetic_tiles(N_FIRST, per_tile=1_000, seed=1)  # the same polygons: links to the decided one
    steps: list[str] = []

    def progress(step: str, done: int) -> None:
        steps.append(step)
        if step == "copy" and done == N_FIRST:  # copied into the temporary table: kill before the linking SQL
            assert snapshot(url) == before
            terminate_loader(url)

    with pytest.raises(ChangeStoreError, match="connection was lost"):
        load(url, parts, run="killed", progress=progress, chunk_rows=500)
    assert steps[0] == "replaced" and steps.count("copy") == 4
    assert snapshot(url) == before


def test_a_failing_statement_rolls_back_too(
    loaded: tuple[str, tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, before = loaded
    from lcms_tasks.store import load as store_load

    monkeypatch.setattr(store_load, "_TMP", "_lcms_load (")  # a broken statement after the DELETE
    with pytest.raises(ChangeStoreError, match="failed, nothing was changed"):
        load(url, synthetic_tiles(N_FIRST, per_tile=1_000, seed=1), run="broken")
    assert snapshot(url) == before
