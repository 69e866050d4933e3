"""Production metadata database: the same DAGs run with Airflow on PostgreSQL.

Uses the PostgreSQL server on 127.0.0.1:5432 (override with LCMS_TEST_PG_URL); a fresh database
is created for the test and dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lcms_airflow.local_stack import LocalAirflow
from lcms_tasks.config import load_config
from lcms_tasks.context import RunContext
from lcms_tasks.grid import project_tiles

pytestmark = pytest.mark.slow

PG_URL = os.environ.get("LCMS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    import psycopg2

    try:
        admin = psycopg2.connect(PG_URL, connect_timeout=5)
    except psycopg2.OperationalError as err:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {err}")
    admin.autocommit = True
    name = f"lcms_airflow_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base = PG_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_download_and_features_on_postgres(
    pg_database: str, config_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    dags = tmp_path_factory.mktemp("dags")
    repo_dags = Path(__file__).resolve().parents[2] / "dags"
    for stage in ("download", "features"):
        (dags / f"lcms_{stage}.py").write_text((repo_dags / f"lcms_{stage}.py").read_text())
    stack = LocalAirflow(
        home=tmp_path_factory.mktemp("airflow-pg"),
        dags_folder=dags,
        extra_env={"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_database, "LCMS_RETRY_DELAY_SECONDS": "2"},
    )
    try:
        stack.start()
        stack.wait_for_dags(["lcms_download", "lcms_features"])
        run_id = stack.trigger("lcms_download", {"config": str(config_path), "season": "2023"})
        assert stack.wait_for_run("lcms_download", run_id=run_id, timeout=600)["state"] == "success"
        features = stack.wait_for_run("lcms_features", after=0, timeout=600)
        assert features["state"] == "success"
    finally:
        stack.stop()
    assert not (stack.home / "airflow.db").exists(), "the metadata must live in PostgreSQL, not SQLite"
    cfg = load_config(config_path)
    ctx = RunContext.create(cfg, season="2023")
    for tile in project_tiles(cfg):
        meta = ctx.storage.read_marker(ctx.tile_uri("features", tile.id))
        assert meta["upstream_run_id"] == run_id
