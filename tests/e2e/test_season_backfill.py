"""Season timetable and backfill through the real scheduler (PostgreSQL metadata database, LocalExecutor).

The config schedules ``lcms_download`` by season (``schedule: {timetable: seasons}``). Deployed, the
scheduler runs the latest season that is over by itself; ``airflow backfill create`` over the three
seasons before it creates one run per season. Each season's outputs must be its own (its imagery dates
inside the season, nothing overwritten by another season's run) and the chain must continue for each
season (``lcms_features`` runs on every season's asset event).
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lcms_airflow.local_stack import LocalAirflow
from lcms_tasks import eopatch
from lcms_tasks.config import load_config
from lcms_tasks.context import RunContext
from lcms_tasks.grid import project_tiles
from tests.conftest import write_aoi
from tests.store_fixtures import fresh_database

pytestmark = pytest.mark.slow

SEASONS = {
    "2020": ("2020-05-01", "2020-06-30"),
    "2021": ("2021-05-01", "2021-06-30"),
    "2022": ("2022-05-01", "2022-06-30"),
    "2023": ("2023-05-01", "2023-06-30"),
}
BACKFILLED = ["2020", "2021", "2022"]


@pytest.fixture
def season_config(project_dir: Path) -> Path:
    write_aoi(project_dir / "aoi.geojson", ncols=2, nrows=1)  # two tiles: one batch per run
    path = project_dir / "project.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["seasons"] = {sid: {"start": a, "end": b} for sid, (a, b) in SEASONS.items()}
    cfg["schedule"] = {"timetable": "seasons"}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture
def metadata_db() -> Iterator[str]:
    # PostgreSQL, as in production. Seasons are backfilled one at a time (--max-active-runs 1): two
    # download runs publishing within a second of each other can leave the second season without its
    # features run (Airflow's asset-queue race, seen here on SQLite and on PostgreSQL; see the README).
    with fresh_database("lcms_backfill", postgis=False) as url:
        yield url.replace("postgresql://", "postgresql+psycopg2://", 1)


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory, season_config: Path, metadata_db: str) -> Iterator[LocalAirflow]:
    dags = tmp_path_factory.mktemp("dags")
    repo_dags = Path(__file__).resolve().parents[2] / "dags"
    for stage in ("download", "features"):
        shutil.copy(repo_dags / f"lcms_{stage}.py", dags)
    airflow = LocalAirflow(
        home=tmp_path_factory.mktemp("airflow-backfill"),
        dags_folder=dags,
        extra_env={
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db,
            "LCMS_CONFIG": str(season_config),
            "LCMS_RETRY_DELAY_SECONDS": "2",
        },
    )
    try:
        airflow.start()
        airflow.wait_for_dags(["lcms_download", "lcms_features"])
        yield airflow
    finally:
        airflow.stop()


def _wait(stack: LocalAirflow, dag_id: str, count: int, timeout: float = 600) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = stack.runs(dag_id)
        done = [r for r in runs if r["state"] in ("success", "failed")]
        if len(done) >= count and len(done) == len(runs):
            return runs
        time.sleep(2)
    raise TimeoutError(f"{dag_id}: {count} finished runs expected, have {stack.runs(dag_id)}")


def test_the_scheduler_runs_the_last_season_and_a_backfill_the_three_before(
    stack: LocalAirflow, season_config: Path
) -> None:
    dag = stack.api("GET", "/api/v2/dags/lcms_download")
    assert "seasons 2020" in str(dag.get("timetable_summary")), dag

    # Deployed with catch-up off, the scheduler runs the latest season that is over, by itself.
    scheduled = _wait(stack, "lcms_download", 1)
    assert [r["run_type"] for r in scheduled] == ["scheduled"]
    assert scheduled[0]["run_id"].startswith("scheduled__season_2023__")

    airflow = str(Path(sys.executable).with_name("airflow"))
    proc = subprocess.run(
        [airflow, "backfill", "create", "--dag-id", "lcms_download", "--from-date", "2020-01-01", "--to-date",
         "2022-12-31", "--max-active-runs", "1"],
        env=stack.env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    runs = _wait(stack, "lcms_download", 4)
    assert all(r["state"] == "success" for r in runs), runs
    by_season: dict[str, str] = {}
    for r in runs:  # each run's data interval is one season: [start, end + 1 day)
        [sid] = [s for s, (a, _) in SEASONS.items() if r["data_interval_start"].startswith(a)]
        end = dt.date.fromisoformat(SEASONS[sid][1]) + dt.timedelta(days=1)
        assert r["data_interval_end"].startswith(end.isoformat()), r
        by_season[sid] = r["run_id"]
    assert sorted(r["run_type"] for r in runs) == ["backfill"] * 3 + ["scheduled"]
    assert sorted(by_season) == sorted(SEASONS)
    assert all(by_season[s].startswith("backfill__") for s in BACKFILLED)

    # The chain goes on for every season: features runs on each download asset event.
    deadline = time.monotonic() + 300
    cfg = load_config(season_config)
    tiles = project_tiles(cfg)
    while time.monotonic() < deadline:
        done = {
            sid
            for sid in SEASONS
            if all(RunContext.create(cfg, season=sid).storage.is_complete(
                RunContext.create(cfg, season=sid).tile_uri("features", t.id)) for t in tiles)
        }  # fmt: skip
        if done == set(SEASONS):
            break
        time.sleep(3)
    assert done == set(SEASONS)
    features_runs = _wait(stack, "lcms_features", 1)
    assert all(r["state"] == "success" for r in features_runs), features_runs

    for sid, (start, end) in SEASONS.items():
        ctx = RunContext.create(cfg, season=sid)
        for tile in tiles:
            patch, meta = eopatch.load(ctx.storage, ctx.tile_uri("download", tile.id))
            dates = [t.date() for t in patch.timestamps]
            assert dates and str(min(dates)) >= start and str(max(dates)) <= end, (sid, dates[:3], dates[-3:])
            assert meta["run_id"] == by_season[sid]  # written by that season's run, not overwritten since
            features_meta = ctx.storage.read_marker(ctx.tile_uri("features", tile.id))
            assert features_meta["upstream_run_id"] == by_season[sid]
