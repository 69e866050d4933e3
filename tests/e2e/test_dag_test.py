"""In-process DAG runs (``dag.test()``): trigger parameters — tile subset and skip_existing."""

from __future__ import annotations

from pathlib import Path

import pytest

from lcms_tasks.config import load_config
from lcms_tasks.context import RunContext
from lcms_tasks.grid import project_tiles


@pytest.fixture
def download_dag(airflow_db: Path):
    from lcms_airflow.factory import build_stage_dag

    return build_stage_dag("download")


def _fresh_download_dag():
    # dag.test() updates the DAG object's params with the run's conf: each run gets its own object,
    # as each real run gets a freshly parsed DAG.
    from lcms_airflow.factory import build_stage_dag

    return build_stage_dag("download")


def test_tile_subset_and_skip_existing(download_dag, config_path: Path) -> None:
    cfg = load_config(config_path)
    tiles = project_tiles(cfg)
    ctx = RunContext.create(cfg, season="2024")
    subset = [tiles[0].id, tiles[3].id]

    run = download_dag.test(run_conf={"config": str(config_path), "season": "2024", "tiles": subset})
    assert run.state == "success"
    done = {t.id for t in tiles if ctx.storage.is_complete(ctx.tile_uri("download", t.id))}
    assert done == set(subset)
    first = {t: ctx.storage.read_marker(ctx.tile_uri("download", t))["run_id"] for t in subset}

    run2 = _fresh_download_dag().test(run_conf={"config": str(config_path), "season": "2024", "skip_existing": True})
    assert run2.state == "success"
    markers = {t.id: ctx.storage.read_marker(ctx.tile_uri("download", t.id))["run_id"] for t in tiles}
    assert {t: markers[t] for t in subset} == first, "skip_existing must not redo complete tiles"
    assert {markers[t.id] for t in tiles if t.id not in subset} == {run2.run_id}


def test_bad_season_fails_the_run_before_any_work(download_dag, config_path: Path) -> None:
    run = download_dag.test(run_conf={"config": str(config_path), "season": "1999"})
    assert run.state == "failed"
    assert not (config_path.parent / "data").exists()
