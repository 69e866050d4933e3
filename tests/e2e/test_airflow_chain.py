"""End to end through a real Airflow: API server, scheduler (LocalExecutor), DAG processor, SQLite.

One trigger of ``lcms_download`` for a 2 x 2-tile project must produce the downloads, publish the
download asset, and thereby start ``lcms_features`` for the same config and season, which records
which download run it follows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from lcms_airflow.local_stack import LocalAirflow

from lcms_tasks import eopatch
from lcms_tasks.config import load_config
from lcms_tasks.context import RunContext
from lcms_tasks.grid import project_tiles

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def airflow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAirflow]:
    home = tmp_path_factory.mktemp("airflow-home")
    # Only the stages this test exercises, so the scheduler does not chase the whole chain.
    dags = tmp_path_factory.mktemp("dags")
    for stage in ("download", "features"):
        src = Path(__file__).resolve().parents[2] / "dags" / f"lcms_{stage}.py"
        (dags / src.name).write_text(src.read_text())
    stack = LocalAirflow(home=home, dags_folder=dags, extra_env={"LCMS_RETRY_DELAY_SECONDS": "2"})
    try:
        stack.start()
        stack.wait_for_dags(["lcms_download", "lcms_features"])
        yield stack
    finally:
        stack.stop()


def test_download_then_features_through_assets(airflow_stack: LocalAirflow, config_path: Path) -> None:
    run_id = airflow_stack.trigger("lcms_download", {"config": str(config_path), "season": "2023"})
    download = airflow_stack.wait_for_run("lcms_download", run_id=run_id, timeout=600)
    assert download["state"] == "success", airflow_stack.task_states("lcms_download", run_id)
    states = airflow_stack.task_states("lcms_download", run_id)
    assert sorted(s["map_index"] for s in states if s["task_id"] == "run_batch") == ["0", "1"]  # 4 tiles, batches of 2

    features = airflow_stack.wait_for_run("lcms_features", after=0, timeout=600)
    assert features["state"] == "success", airflow_stack.task_states("lcms_features", features["run_id"])
    assert features["run_id"].startswith("asset_triggered__")

    cfg = load_config(config_path)
    ctx = RunContext.create(cfg, season="2023")
    tiles = project_tiles(cfg)
    assert len(tiles) == 4
    for tile in tiles:
        dl, dl_meta = eopatch.load(ctx.storage, ctx.tile_uri("download", tile.id))
        assert dl_meta["run_id"] == run_id
        assert dl.data["BANDS"].dtype == np.uint16 and dl.data["BANDS"].shape[1:] == (64, 64, 13)
        assert dl.mask["IS_VALID"].dtype == bool
        ft, ft_meta = eopatch.load(ctx.storage, ctx.tile_uri("features", tile.id))
        # The features run knows which download run it follows.
        assert ft_meta["run_id"] == features["run_id"]
        assert ft_meta["upstream_run_id"] == run_id
        feats = ft.data["FEATURES"]
        assert feats.shape[1:] == (64, 64, 6) and feats.dtype == np.float32
        no_data = ft.mask_timeless["NO_DATA"][..., 0]
        assert not np.isnan(feats[:, ~no_data]).any()
        assert np.nanmin(feats[..., 0]) >= -1 and np.nanmax(feats[..., 0]) <= 1

    runs_dir = ctx.storage.local_path(ctx.run_uri("features", "runs"))
    summary = json.loads((runs_dir / f"{_safe(features['run_id'])}.json").read_text())
    assert summary["tiles_complete"] == 4 and summary["upstream_run_id"] == run_id


def _safe(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in run_id)
