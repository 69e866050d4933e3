"""The data-readiness gate and empty tiles: flagged in features, kept out of training and prediction, reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from lcms_tasks.config import load_config
from lcms_tasks.context import RunContext
from lcms_tasks.runner import run_stage, run_tiles
from lcms_tasks.stages.features import Readiness, readiness_of


def test_readiness_from_the_clear_observation_counts() -> None:
    gate = Readiness(min_valid_observations=3, max_share_below=0.25)
    counts = np.full((4, 4), 5)
    assert readiness_of(counts, None, 10, gate)["ready"]
    counts[:2, :2] = 2  # 4 of 16 pixels below 3: a quarter, still allowed
    verdict = readiness_of(counts, None, 10, gate)
    assert verdict["ready"] and verdict["share_below"] == 0.25 and verdict["reason"] is None
    counts[2, 0] = 0
    verdict = readiness_of(counts, None, 10, gate)
    assert not verdict["ready"] and verdict["empty"] is None
    assert verdict["reason"] == (
        "31 % of the pixels with data have fewer than 3 clear observation(s) (at most 25 % allowed)"
    )
    # Pixels the source has no data for (sea beyond the coast) do not count against the tile.
    footprint = np.ones((4, 4), bool)
    footprint[2:, :] = False
    counts[2:, :] = 0
    counts[:2, :2] = 5
    coastal = readiness_of(counts, footprint, 10, gate)
    assert coastal["ready"] and coastal["share_below"] == 0.0 and coastal["footprint_share"] == 0.5


def test_a_tile_without_any_clear_observation_is_empty_with_the_reason() -> None:
    zeros = np.zeros((3, 3), np.uint16)
    clouded = readiness_of(zeros, np.ones((3, 3), bool), 12, Readiness())
    assert not clouded["ready"] and clouded["empty"] == clouded["reason"]
    assert clouded["empty"] == "no clear observation: all 12 date(s) of the season clouded or without data"
    sea = readiness_of(zeros, np.zeros((3, 3), bool), 12, Readiness(min_valid_observations=0, max_share_below=1.0))
    assert not sea["ready"] and sea["empty"].startswith("no data: the source has no pixel of this tile")


def _project(config_path: Path, **readiness: object) -> RunContext:
    data = yaml.safe_load(config_path.read_text())
    data["stages"] = {
        "add_reference": {"sources": [{"type": "synthetic_truth", "tile_fraction": 1.0}]},
        "training": {"drop_rare_classes": True, "min_samples_per_class": 5},
        "features": {"readiness": readiness},
    }
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return RunContext.create(load_config(config_path), season="2023", run_id="r1", config_path=str(config_path))


def _at_sea(ctx: RunContext, tile_id: str) -> None:
    """The tile's downloaded season without any data (as over the sea, outside the source's footprint)."""
    folder = ctx.storage.local_path(ctx.tile_uri("download", tile_id)) / "mask"
    for name in ("IS_DATA", "IS_VALID"):
        array = np.load(folder / f"{name}.npy")
        np.save(folder / f"{name}.npy", np.zeros_like(array))


@pytest.mark.parametrize("mode", ["exclude", "flag"])
def test_an_empty_tile_flows_through_the_chain_as_no_data(config_path: Path, mode: str) -> None:
    ctx = _project(config_path, not_ready=mode)
    tiles = ctx.tiles()
    sea = tiles[0].id
    run_tiles("download", tiles, ctx)
    _at_sea(ctx, sea)
    for stage in ("features", "add_reference", "sampling", "merge_features", "training", "prediction"):
        if stage in ("merge_features", "training"):
            run_stage(stage, ctx)
        else:
            assert not run_tiles(stage, tiles, ctx).failed, stage
    readiness = ctx.storage.read_marker(ctx.tile_uri("features", sea))["readiness"]
    assert not readiness["ready"] and readiness["empty"].startswith("no data")
    assert ctx.storage.read_marker(ctx.tile_uri("features", tiles[1].id))["readiness"]["ready"]
    sampled = ctx.storage.read_marker(ctx.tile_uri("sampling", sea))
    predicted = ctx.storage.read_marker(ctx.tile_uri("prediction", sea))
    assert sampled["n_samples"] == 0 and predicted["pixels_predicted"] == 0  # no clear pixel: nothing either way
    assert predicted["not_ready"] == readiness["reason"]
    if mode == "exclude":
        assert sampled["skipped_reason"] == f"not ready: {readiness['reason']}"
        assert predicted["not_predicted"] == readiness["reason"]
    else:
        assert predicted["not_predicted"] is None


def test_a_tile_below_the_gate_is_not_sampled_nor_predicted_and_the_report_maps_it(config_path: Path) -> None:
    # 13 to 16 clear observations per pixel on the synthetic tiles: a gate of 15 stops some of them.
    ctx = _project(config_path, min_valid_observations=15, max_share_below=0.5)
    tiles = ctx.tiles()
    for stage in ("download", "features", "add_reference", "sampling"):
        run_tiles(stage, tiles, ctx)
    verdicts = {t.id: ctx.storage.read_marker(ctx.tile_uri("features", t.id))["readiness"] for t in tiles}
    stopped = sorted(t for t, v in verdicts.items() if not v["ready"])
    assert stopped and len(stopped) < len(tiles), verdicts
    for tile_id in stopped:
        assert ctx.storage.read_marker(ctx.tile_uri("sampling", tile_id))["n_samples"] == 0
    ready = next(t for t in verdicts if t not in stopped)
    assert ctx.storage.read_marker(ctx.tile_uri("sampling", ready))["n_samples"] > 0
    for stage in ("merge_features", "training"):
        run_stage(stage, ctx)
    for stage in ("prediction", "postprocessing", "change_detection"):
        run_tiles(stage, tiles, ctx)
    for tile_id in stopped:
        assert ctx.storage.read_marker(ctx.tile_uri("prediction", tile_id))["pixels_predicted"] == 0
    assert ctx.storage.read_marker(ctx.tile_uri("prediction", ready))["pixels_predicted"] > 0
    run_stage("reporting", ctx)
    folder = ctx.storage.local_path(ctx.run_uri("reporting", "report"))
    block = json.loads((folder / "report.json").read_text())["run"]["readiness"]
    assert block["n_not_ready"] == len(stopped) and [r["tile"] for r in block["not_ready"]] == stopped
    assert block["thresholds"]["min_valid_observations"] == 15 and len(block["tiles"]) == 4
    assert (folder / "readiness.png").stat().st_size > 1000
    page = (folder / "report.html").read_text()
    assert 'id="readiness"' in page and "no data (not sampled, not predicted)" in page
