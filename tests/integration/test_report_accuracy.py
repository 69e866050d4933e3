"""The report's area-adjusted accuracy on a small project processed for real (synthetic source, two seasons).

The 2 x 2-tile conftest project (64 px tiles of 20 m) runs from download to change_detection for 2023
and 2024 (2024 mapped with 2023's model), then the reporting stage for 2024. On the synthetic source the
stage draws a stratified sample over the map and labels it from the generator's truth; the estimates
must agree with the truth (the truth-evaluated accuracy of the report and the census of every pixel),
the estimated areas must add up to the mapped total, and the design must be the one
``lcms accuracy design`` draws with the same seed, which ``lcms accuracy assess`` assesses to the same
figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from lcms_tasks.cli import main
from lcms_tasks.config import load_config
from lcms_tasks.context import RunContext
from tests.chain_helpers import run_chain, run_two_seasons

SEASON = "2024"


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import base_config, write_aoi

    folder = tmp_path_factory.mktemp("report-accuracy")
    write_aoi(folder / "aoi.geojson")
    cfg = base_config("aoi.geojson", "data")
    cfg["stages"] = {
        # 4 small tiles hold few pixels of the rarest classes: drop those rather than fail training.
        "training": {"drop_rare_classes": True, "min_samples_per_class": 10},
        "prediction": {"model_season": "2023"},
    }
    path = folder / "project.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_two_seasons(path)
    run_chain(path, SEASON, ("reporting",), "report-2024")
    return path


def _report(config: Path) -> tuple[dict[str, Any], Path, RunContext]:
    ctx = RunContext.create(load_config(config), season=SEASON)
    folder = ctx.storage.local_path(ctx.run_uri("reporting", "report"))
    return json.loads((folder / "report.json").read_text()), folder, ctx


def _census(ctx: RunContext) -> tuple[float, dict[str, int], dict[str, int]]:
    """(overall accuracy, truth pixels per class, map pixels per class) of every frame pixel (independently)."""
    import shapely

    from lcms_tasks import eopatch
    from lcms_tasks.grid import load_aoi

    aoi = shapely.union_all(list(load_aoi(ctx.config).to_crs(32638).geometry))
    names = {c.id: c.name for c in ctx.config.legend()}
    hits = total = 0
    truth_px: dict[str, int] = {}
    map_px: dict[str, int] = {}
    for tile in ctx.tiles():
        patch, _ = eopatch.load(ctx.storage, ctx.tile_uri("postprocessing", tile.id), features=["mask_timeless/CLASS"])
        classes = np.asarray(patch.mask_timeless["CLASS"])[..., 0]
        tpatch, _ = eopatch.load(
            ctx.storage, ctx.tile_uri("download", tile.id), features=["mask_timeless/TRUTH_LAND_COVER"]
        )
        truth = np.asarray(tpatch.mask_timeless["TRUTH_LAND_COVER"])[..., 0]
        x0, _, _, y1 = tile.bounds
        cols, rows = np.meshgrid(np.arange(tile.size_px), np.arange(tile.size_px))
        inside = shapely.contains_xy(aoi, x0 + (cols + 0.5) * tile.resolution, y1 - (rows + 0.5) * tile.resolution)
        frame = inside & np.isin(classes, list(names))
        hits += int(np.sum(frame & (classes == truth)))
        total += int(frame.sum())
        for cid, name in names.items():
            truth_px[name] = truth_px.get(name, 0) + int(np.sum(frame & (truth == cid)))
            map_px[name] = map_px.get(name, 0) + int(np.sum(frame & (classes == cid)))
    return hits / total, truth_px, map_px


def test_area_adjusted_accuracy_agrees_with_the_truth(processed: Path) -> None:
    rep, folder, ctx = _report(processed)
    block = rep["area_adjusted"]
    assert block["available"] is True and block["label_source"] == "synthetic_truth"
    design = block["design"]
    assert design["change_strata"] is True  # 2024 has a change map: change strata and a buffer
    assert {s["kind"] for s in design["strata"]} == {"change", "buffer", "class"}
    assert block["n_points"] == sum(s["n"] for s in design["strata"]) == design["allocation"]["n_total"]
    assert block["n_labelled"] == block["n_points"]  # the truth labels every point
    oa, se = block["overall_accuracy"], block["overall_accuracy_se"]
    assert 0 < se < 0.03 and block["overall_accuracy_ci95"] == pytest.approx(1.96 * se)
    # The report's own evaluation against the truth (tiles without training samples, every pixel of them).
    truth_oa = rep["evaluation"]["overall_accuracy"]
    assert rep["evaluation"]["n_eval_tiles"] >= 1
    assert abs(oa - truth_oa) < 4 * se, (oa, truth_oa, se)
    # The census of the whole frame (every tile), which the sample estimates.
    census_oa, truth_px, map_px = _census(ctx)
    assert abs(oa - census_oa) < 3 * se, (oa, census_oa, se)

    # Areas: the estimates add up to the mapped total, which is the AOI's mapped pixels of legend classes.
    pixel_km2 = ctx.config.grid.resolution_m**2 / 1e6
    aoi_rows = {r["name"]: r for r in rep["aoi"]["class_areas"] if r["id"] in {c.id for c in ctx.config.legend()}}
    mapped_total = sum(r["area_km2"] for r in aoi_rows.values())
    assert sum(v for v in block["area"].values()) == pytest.approx(block["total_area"])
    assert block["total_area"] == pytest.approx(mapped_total) == pytest.approx(sum(map_px.values()) * pixel_km2)
    assert sum(block["mapped_area"].values()) == pytest.approx(mapped_total)
    for name, area in block["mapped_area"].items():
        assert area == pytest.approx(aoi_rows[name]["area_km2"]) == pytest.approx(map_px[name] * pixel_km2)
    # Each class's true area (the truth's pixels) within a few standard errors of its estimate.
    for name in block["classes"]:
        est, area_se = block["area"][name], block["area_se"][name]
        assert area_se is not None and block["area_ci95"][name] == pytest.approx(1.96 * area_se)
        assert abs(est - truth_px[name] * pixel_km2) <= 4 * area_se + 2 * pixel_km2, (name, est, area_se)
    marker = ctx.storage.read_marker(ctx.run_uri("reporting", "report"))
    assert marker["area_adjusted_overall_accuracy"] == pytest.approx(oa)
    page = (folder / "report.html").read_text()
    assert "Area-adjusted accuracy" in page and f"stratified random sample of {block['n_points']:,} points" in page
    assert "Labels come from the synthetic truth" in page


def test_the_report_draws_the_design_lcms_accuracy_design_draws(
    processed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rep, folder, ctx = _report(processed)
    seed = rep["area_adjusted"]["design"]["options"]["seed"]
    assert seed == ctx.config.source.seed  # the drawn design is seeded from the config's seed
    out = tmp_path / "design"
    args = ["--config", str(processed), "--season", SEASON, "--source", "postprocessing", "--seed", str(seed)]
    assert main(["accuracy", "design", *args, "--out", str(out)]) == 0
    capsys.readouterr()
    drawn = json.loads((folder / "accuracy" / "design.json").read_text())
    cli = json.loads((out / "design.json").read_text())

    def strata(meta: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in s.items() if k != "transition_code"} for s in meta["strata"]]

    assert strata(drawn) == strata(cli) and drawn["class_pixels"] == cli["class_pixels"]
    ours = pd.read_csv(folder / "accuracy" / "points.csv", keep_default_na=False)
    theirs = pd.read_csv(out / "points.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(ours.drop(columns="reference"), theirs.drop(columns="reference"))
    assert (ours["reference"] != "").all()


def test_lcms_accuracy_assess_reproduces_the_report(processed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rep, folder, _ = _report(processed)
    block = rep["area_adjusted"]
    design = folder / "accuracy"
    assert main(["accuracy", "assess", "--design", str(design), "--labels", str(design / "points.csv")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["overall_accuracy"] == pytest.approx(block["overall_accuracy"])
    assert result["overall_accuracy_se"] == pytest.approx(block["overall_accuracy_se"])
    for name in block["classes"]:
        assert result["area"][name] == pytest.approx(100 * block["area"][name])  # ha, the report's km²
        ours, theirs = block["users_accuracy"][name], result["users_accuracy"][name]
        assert theirs == ours if ours is None else theirs == pytest.approx(ours)


def test_change_timing_agrees_with_the_same_season_evaluation(processed: Path) -> None:
    """The tolerant change accuracy's on-time part is the plain same-season overlap; late + false split the rest."""
    rep, folder, _ = _report(processed)
    ev = rep["evaluation"]
    block = ev["change_accuracy"]
    assert block["season"] == SEASON and block["tolerance_seasons"] == 1
    d = block["detections"]
    assert d["detected_km2"] == pytest.approx(ev["predicted_change_area_km2"])
    assert d["on_time_km2"] == pytest.approx(ev["intersection_change_area_km2"])
    assert d["on_time_km2"] + d["late_km2"] + d["false_km2"] == pytest.approx(d["detected_km2"])
    assert d["precision"] == pytest.approx(ev["change_precision"])
    assert d["precision_with_tolerance"] >= d["precision"]
    assert block["reference"]["recall"] == pytest.approx(ev["change_recall"])
    assert block["completed_reference"]["season"] == "2023"  # the season the tolerance reaches back to
    assert "Change timing (tolerance: 1 season)" in (folder / "report.html").read_text()
