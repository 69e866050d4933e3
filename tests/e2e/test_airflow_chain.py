"""End to end through a real Airflow: API server, scheduler (LocalExecutor), DAG processor, SQLite.

For a 2 x 2-tile project whose first season was processed from the CLI, one trigger of
``lcms_download`` for the second season must run every stage, each DAG started by the previous
stage's asset, and end in a report and change polygons that agree with the synthetic truth; the
publish stage (triggered by reporting's asset) loads them into a real PostGIS change store, where
GDAL's OGC API Features driver (the client QGIS uses) reads them through the LCMS service.

Airflow runs here as in production: the CeleryExecutor with two workers (distinct names, only one of them
serving the download queue), Redis (the machine's, 127.0.0.1:6379) as broker and a fresh PostgreSQL
database as metadata database and Celery result backend. The chain's batches must run on both workers,
download batches only where the download queue is served.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import yaml

from lcms_airflow.local_stack import LocalAirflow
from lcms_tasks import eopatch, runner
from lcms_tasks.config import load_config
from lcms_tasks.context import RunContext
from lcms_tasks.grid import project_tiles
from lcms_tasks.stages import STAGES, stage_names
from tests.store_fixtures import fresh_database, query_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def change_store() -> Iterator[str]:
    """A fresh, migrated change store on the machine's PostgreSQL, for the publish stage of these runs."""
    with fresh_database("lcms_e2e_chain", migrate=True) as url:
        yield url


REDIS_URL = os.environ.get("LCMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="module")
def metadata_db() -> Iterator[str]:
    """Airflow's metadata database (and Celery's result backend): a fresh database on the machine's server."""
    with fresh_database("lcms_e2e_airflow", postgis=False) as url:
        yield url


@pytest.fixture(scope="module")
def airflow_stack(
    tmp_path_factory: pytest.TempPathFactory, change_store: str, metadata_db: str
) -> Iterator[LocalAirflow]:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as err:
        pytest.skip(f"Redis not reachable at {REDIS_URL} (set LCMS_TEST_REDIS_URL): {err}")
    # Queue names of this module only: a message another run left in Redis never reaches these workers.
    tag = uuid.uuid4().hex[:8]
    default_queue, download_queue = f"lcms_default_{tag}", f"lcms_download_{tag}"
    stack = LocalAirflow(
        home=tmp_path_factory.mktemp("airflow-home"),
        celery_workers={"worker-a": f"{default_queue},{download_queue}", "worker-b": default_queue},
        extra_env={
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db.replace("postgresql://", "postgresql+psycopg2://", 1),
            "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+"
            + metadata_db.replace("postgresql://", "postgresql+psycopg2://", 1),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": default_queue,
            "LCMS_STAGE_QUEUES": f"download={download_queue}",
            "LCMS_RETRY_DELAY_SECONDS": "2",
            "LCMS_DATABASE_URL": change_store,
        },
    )
    try:
        stack.start()
        stack.wait_for_dags([f"lcms_{s.name}" for s in STAGES])
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def chain_config(config_path: Path) -> Path:
    cfg = yaml.safe_load(config_path.read_text())
    # 4 small tiles hold few pixels of the rarest classes: drop those rather than fail training.
    cfg["stages"] = {"training": {"drop_rare_classes": True, "min_samples_per_class": 10}}
    # Two products: land cover, and crop type inside its cropland (three of the four tiles declare crops).
    cfg["products"] = {
        "land_cover": {"legend": "land_cover"},
        "crop_type": {
            "legend": "crop_type",
            "mask": {"product": "land_cover", "classes": ["cropland"]},
            "stages": {
                "add_reference": {
                    "sources": [{"type": "synthetic_truth", "tile_fraction": 0.75, "parcel_fraction": 1.0}]
                }
            },
        },
    }
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return config_path


def _run_chain(stack: LocalAirflow, conf: dict, first: str = "download") -> tuple[str, dict[str, dict]]:
    """Trigger lcms_<first> with ``conf``; wait for every later stage's next run; each must succeed."""
    stages = STAGES[stage_names().index(first) :]
    seen = {f"lcms_{s.name}": len(stack.runs(f"lcms_{s.name}")) for s in stages}
    run_id = stack.trigger(f"lcms_{first}", conf)
    runs: dict[str, dict] = {}
    for info in stages:
        dag_id = f"lcms_{info.name}"
        run = (
            stack.wait_for_run(dag_id, run_id=run_id, timeout=600)
            if info.name == first
            else stack.wait_for_run(dag_id, after=seen[dag_id], timeout=600)
        )
        assert run["state"] == "success", (dag_id, stack.task_states(dag_id, run["run_id"]))
        runs[info.name] = run
    return run_id, runs


def test_whole_chain_through_assets(
    airflow_stack: LocalAirflow,
    chain_config: Path,
    change_store: str,
    metadata_db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = load_config(chain_config)
    tiles = project_tiles(cfg)
    first = RunContext.create(cfg, season="2023", run_id="cli-2023")
    upto = stage_names().index("postprocessing") + 1
    for info in STAGES[:upto]:  # the first season up to post-processing, from the CLI entry point
        if info.mapped:
            runner.run_tiles(info.name, tiles, first)
        else:
            runner.run_stage(info.name, first)

    run_id, runs = _run_chain(airflow_stack, {"config": str(chain_config), "season": "2024"})
    for name, run in runs.items():
        if name != "download":
            assert run["run_id"].startswith("asset_triggered__")
    download_states = airflow_stack.task_states("lcms_download", run_id)
    assert sorted(s["map_index"] for s in download_states if s["task_id"] == "run_batch") == [0, 1]
    _ran_on_both_celery_workers(airflow_stack, runs, metadata_db)

    ctx = RunContext.create(cfg, season="2024")
    for tile in tiles:
        ft, ft_meta = eopatch.load(ctx.storage, ctx.tile_uri("features", tile.id))
        # Each stage knows which upstream run it follows.
        assert ft_meta["run_id"] == runs["features"]["run_id"]
        assert ft_meta["upstream_run_id"] == run_id
        feats = ft.data["FEATURES"]
        assert feats.shape[1:] == (64, 64, 6) and feats.dtype == np.float32
        assert not np.isnan(feats[:, ~ft.mask_timeless["NO_DATA"][..., 0]]).any()
        pred_meta = ctx.storage.read_marker(ctx.tile_uri("prediction", tile.id))
        assert pred_meta["upstream_run_id"] == runs["training"]["run_id"]

    report_dir = ctx.storage.local_path(ctx.run_uri("reporting", "report"))
    report = json.loads((report_dir / "report.json").read_text())
    assert (report_dir / "report.html").is_file()
    assert report["run"]["season"] == "2024"
    total_km2 = sum(row["area_km2"] for row in report["total"]["class_areas"])
    assert total_km2 == pytest.approx(4 * 1.28 * 1.28, rel=1e-6)  # four 1.28 km tiles
    ev = report["evaluation"]
    # Two reference tiles of 64 px teach the model few fields (the demo's 16 tiles reach 0.96); here the
    # map must still be far better than chance (1/8) and the changes it finds mostly true.
    assert ev["n_eval_tiles"] == 2
    assert ev["overall_accuracy"] > 0.5
    assert ev["change_precision"] > 0.6 and ev["change_recall"] > 0.2

    changes = [
        gpd.read_file(ctx.storage.local_path(ctx.tile_uri("change_detection", t.id)) / "changes.gpkg") for t in tiles
    ]
    polygons = [row for frame in changes for _, row in frame.iterrows()]
    assert polygons, "the second season has true changes; some must be detected"
    for row in polygons:
        assert row["from_class"] != row["to_class"]
        assert row["season_before"] == "2023" and row["season_after"] == "2024"
        assert row["area_m2"] >= 5000 and 0 <= row["confidence"] <= 1

    # The crop type product went through the same runs: its own model, maps inside cropland, report.
    crop = ctx.for_product("crop_type")
    crop_model = ctx.storage.read_marker(crop.run_uri("training", "model"))
    assert crop_model["run_id"] == runs["training"]["run_id"] and crop_model["legend_name"] == "crop_type"
    for tile in tiles:
        lc, _ = eopatch.load(ctx.storage, ctx.tile_uri("postprocessing", tile.id), features=["mask_timeless/CLASS"])
        ct, _ = eopatch.load(ctx.storage, crop.tile_uri("postprocessing", tile.id), features=["mask_timeless/CLASS"])
        assert not np.asarray(ct.mask_timeless["CLASS"])[np.asarray(lc.mask_timeless["CLASS"]) != 1].any()
    crop_report = json.loads((ctx.storage.local_path(crop.run_uri("reporting", "report")) / "report.json").read_text())
    assert crop_report["run"]["product"] == "crop_type" and crop_report["run"]["model_seasons"] == ["2024"]
    assert crop_report["evaluation"]["n_eval_tiles"] >= 1 and crop_report["evaluation"]["overall_accuracy"] > 0.5
    assert ctx.storage.complete_children(crop.stage_uri("publish")) == {t.id for t in tiles}

    # Published: every tile's COGs, the season's mosaics and the STAC catalog ...
    assert runs["publish"]["run_id"].startswith("asset_triggered__")
    assert ctx.storage.complete_children(ctx.stage_uri("publish")) == {t.id for t in tiles}
    assert ctx.storage.is_complete(ctx.run_uri("publish", "mosaic"))
    assert ctx.storage.local_path(ctx.storage.uri(cfg.project, "stac", "catalog.json")).is_file()
    # ... and the change polygons in PostGIS, read back by GDAL's OGC API Features driver through the service.
    _read_changes_through_ogc_api(change_store, polygons, monkeypatch)


def _ran_on_both_celery_workers(stack: LocalAirflow, runs: dict[str, dict], metadata_db: str) -> None:
    """Every task ran on a Celery worker; both workers had batches; download batches only on its queue's worker."""
    download_queue = stack.extra_env["LCMS_STAGE_QUEUES"].partition("=")[2]
    default_queue = stack.extra_env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]
    batch_hosts: set[str] = set()
    for stage, run in runs.items():
        states = stack.task_states(f"lcms_{stage}", run["run_id"])
        batches = [ti for ti in states if ti["task_id"] in ("run_batch", "run_season")]
        assert batches and all(
            ti["hostname"] in ("worker-a", "worker-b") for ti in states if ti["state"] == "success"
        ), (
            stage,
            states,
        )
        expected_queue = download_queue if stage == "download" else default_queue
        assert {ti["queue"] for ti in batches} == {expected_queue}, stage
        if stage == "download":
            assert {ti["hostname"] for ti in batches} == {"worker-a"}, "download batches run where its queue is"
        batch_hosts |= {ti["hostname"] for ti in batches}
    assert batch_hosts == {"worker-a", "worker-b"}
    # The run's state lives in PostgreSQL (metadata and Celery's task results), not in a SQLite file.
    assert not (stack.home / "airflow.db").exists()
    assert query_rows(metadata_db, "SELECT count(*) FROM celery_taskmeta")[0][0] > 0


def _read_changes_through_ogc_api(store_url: str, polygons: list, monkeypatch: pytest.MonkeyPatch) -> None:
    import fiona
    import shapely
    from shapely.geometry import shape

    from lcms_service.testing import ServiceProcess

    detected = list(polygons)
    monkeypatch.setitem(fiona.supported_drivers, "OAPIF", "r")  # fiona opens only the drivers it lists
    with ServiceProcess(store_url) as service, fiona.open(f"OAPIF:{service.url}/ogc", layer="lcms.changes") as src:
        features = list(src)
        assert features, "the publish stage loaded no change into the store"
        # Polygons crossing a tile edge are merged: never more store features than tile polygons.
        assert len(features) <= len(detected)
        assert {(f["properties"]["from_class"], f["properties"]["to_class"]) for f in features} == {
            (int(r["from_class"]), int(r["to_class"])) for r in polygons
        }
        assert all(f["properties"]["season_after"] == "2024" for f in features)
        area = sum(float(f["properties"]["area_m2"]) for f in features)
        assert area == pytest.approx(sum(float(r["area_m2"]) for r in polygons), rel=1e-6)
        # A bbox around one feature returns exactly the features that intersect it.
        first = shape(features[0]["geometry"])
        bbox = first.buffer(0.0005).bounds
        expected = {f["properties"]["id"] for f in features if shape(f["geometry"]).intersects(shapely.box(*bbox))}
        assert {f["properties"]["id"] for f in src.filter(bbox=bbox)} == expected


def test_tile_subset_flows_through_every_stage(airflow_stack: LocalAirflow, config_path: Path) -> None:
    """Triggering lcms_download with two of four tiles runs the whole chain on those two, report included."""
    cfg_data = yaml.safe_load(config_path.read_text())
    cfg_data["stages"] = {
        "add_reference": {"sources": [{"type": "synthetic_truth", "tile_fraction": 1.0}]},
        "training": {"drop_rare_classes": True, "min_samples_per_class": 5},
    }
    config_path.write_text(yaml.safe_dump(cfg_data, sort_keys=False))
    cfg = load_config(config_path)
    ids = [t.id for t in project_tiles(cfg)]
    chosen = ids[1:3]
    _run_chain(airflow_stack, {"config": str(config_path), "season": "2023", "tiles": chosen})

    ctx = RunContext.create(cfg, season="2023")
    for stage in ("download", "features", "sampling", "prediction", "postprocessing", "change_detection"):
        assert ctx.storage.complete_children(ctx.stage_uri(stage)) == set(chosen), stage
    assert ctx.storage.read_marker(ctx.run_uri("merge_features", "dataset"))["tile_subset"] == chosen
    assert ctx.storage.read_marker(ctx.run_uri("training", "model"))["tile_subset"] == chosen
    report_dir = ctx.storage.local_path(ctx.run_uri("reporting", "report"))
    report = json.loads((report_dir / "report.json").read_text())
    assert report["run"]["tile_subset"] == chosen and report["run"]["n_project_tiles"] == 4
    assert report["total"]["area_km2"] == pytest.approx(2 * 1.28 * 1.28, rel=1e-6)
    assert "subset" in (report_dir / "report.html").read_text()


def test_a_failed_tile_within_tolerance_is_a_gap_until_its_rerun_fills_it(
    airflow_stack: LocalAirflow, config_path: Path
) -> None:
    """One tile's imagery corrupted: the chain from features completes without it and its report lists the
    gap; once the imagery is fixed, triggering lcms_features with ``rerun_failed`` fills the gap down the chain."""
    from lcms_tasks.cli import main

    cfg_data = yaml.safe_load(config_path.read_text())
    cfg_data["stages"] = {
        "add_reference": {"sources": [{"type": "synthetic_truth", "tile_fraction": 1.0}]},
        "training": {"drop_rare_classes": True, "min_samples_per_class": 5},
    }
    cfg_data["failures"] = {"mapped": {"max_count": 1}}
    config_path.write_text(yaml.safe_dump(cfg_data, sort_keys=False))
    cfg = load_config(config_path)
    ctx = RunContext.create(cfg, season="2023")
    ids = [t.id for t in ctx.tiles()]
    args = ["--config", str(config_path), "--season", "2023"]
    assert main(["run", "download", *args, "--run-id", "dl"]) == 0
    poisoned = ids[2]
    bands = next(p for p in ctx.storage.local_path(ctx.tile_uri("download", poisoned)).rglob("BANDS*"))
    data = bands.read_bytes()
    bands.write_bytes(data[: len(data) // 2])

    conf = {"config": str(config_path), "season": "2023"}
    features_run, runs = _run_chain(airflow_stack, conf, first="features")
    batches = [s for s in airflow_stack.task_states("lcms_features", features_run) if s["task_id"] == "run_batch"]
    assert sorted(s["state"] for s in batches) == ["failed", "success"]  # the poisoned tile's batch failed
    for stage in ("features", "sampling", "prediction", "postprocessing", "change_detection", "publish"):
        assert ctx.storage.complete_children(ctx.stage_uri(stage)) == set(ids) - {poisoned}, stage
    report = json.loads((ctx.storage.local_path(ctx.run_uri("reporting", "report")) / "report.json").read_text())
    [gap] = report["run"]["gaps"]
    assert gap["tile"] == poisoned and gap["reason"].startswith(f"features failed (run {features_run}):")
    assert "truncated" in gap["reason"] and report["run"]["n_tiles"] == 3
    model = ctx.storage.read_marker(ctx.run_uri("training", "model"))
    assert model["excluded"] == {poisoned: gap["reason"]}

    # Fixed at the source; one trigger re-runs the failed tile and the chain below fills the gap.
    assert main(["run", "download", *args, "--tile", poisoned, "--run-id", "dl-fix"]) == 0
    rerun, runs = _run_chain(airflow_stack, {**conf, "rerun_failed": features_run}, first="features")
    for stage in ("features", "sampling", "prediction", "postprocessing", "change_detection", "publish"):
        assert ctx.storage.complete_children(ctx.stage_uri(stage)) == set(ids), stage
    assert ctx.storage.read_marker(ctx.tile_uri("features", poisoned))["run_id"] == rerun
    assert ctx.storage.read_marker(ctx.tile_uri("features", ids[0]))["run_id"] == features_run  # not redone
    # The other tiles' maps came from this model: the refilled tile is mapped by the same one.
    assert ctx.storage.read_marker(ctx.run_uri("training", "model")) == model
    report = json.loads((ctx.storage.local_path(ctx.run_uri("reporting", "report")) / "report.json").read_text())
    assert report["run"]["gaps"] == [] and report["run"]["n_tiles"] == 4
    assert report["run"]["run_id"] == runs["reporting"]["run_id"]
