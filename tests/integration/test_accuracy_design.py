"""``lcms accuracy design`` and ``lcms accuracy assess`` on a small synthetic published season.

The season is :func:`lcms_service.maps_testing.make_project`'s: 2 x 2 tiles of 64 x 64 pixels of
20 m, a random block class map and change map, written as the publish stage writes them. The tests
recompute the strata independently from those arrays, check every point against them, label the
points with a known "truth" raster and check that the estimates find the truth's figures.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lcms_service.maps_testing import SyntheticProject, make_project, utm_block
from lcms_tasks.cli import main

LCMS = str(Path(sys.executable).with_name("lcms"))
SEASON = "2024"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> SyntheticProject:
    return make_project(
        tmp_path_factory.mktemp("accuracy-design"),
        aoi=utm_block(32638, 498, 3440, 2, 2, 1280.0),
        aoi_crs=32638,
        tile_px=64,
        resolution=20.0,
        seasons=(SEASON,),
        imagery=False,
        features=False,
        seed=3,
    )


def in_aoi(project: SyntheticProject, tile: Any) -> np.ndarray:
    """Pixel centres inside the AOI, by shapely (independently of the design's rasterio mask)."""
    import shapely
    from shapely.geometry import box

    aoi = utm_block(32638, 498, 3440, 2, 2, 1280.0)
    x0, _, _, y1 = tile.bounds
    res = tile.resolution
    cols, rows = np.meshgrid(np.arange(tile.size_px), np.arange(tile.size_px))
    xs, ys = x0 + (cols + 0.5) * res, y1 - (rows + 0.5) * res
    assert aoi.equals(box(*aoi.bounds))
    return np.asarray(shapely.contains_xy(aoi, xs, ys))


def expected_strata(project: SyntheticProject, buffer_px: int) -> dict[str, int]:
    """Pixels per stratum, recomputed from the written arrays with plain numpy."""
    ctx = project.context(SEASON)
    from lcms_tasks.stages.publish import transition_codes

    labels = {c.code: c.label for c in transition_codes(ctx)}
    names = {c.id: c.name for c in project.config.legend()}
    out: dict[str, int] = {}
    for tile in project.tiles:
        classes = project.classes[(SEASON, tile.id)]
        change = project.change[(SEASON, tile.id)]
        frame = (classes > 0) & in_aoi(project, tile)
        changed = change > 0
        near = np.zeros_like(changed)
        padded = np.pad(changed, buffer_px)
        for dr in range(2 * buffer_px + 1):
            for dc in range(2 * buffer_px + 1):
                near |= padded[dr : dr + changed.shape[0], dc : dc + changed.shape[1]]
        for code in np.unique(change[frame & changed]):
            key = f"change: {labels[int(code)]}"
            out[key] = out.get(key, 0) + int(np.sum(frame & (change == code)))
        out["buffer"] = out.get("buffer", 0) + int(np.sum(frame & near & ~changed))
        rest = frame & ~near
        for cid in np.unique(classes[rest]):
            out[names[int(cid)]] = out.get(names[int(cid)], 0) + int(np.sum(rest & (classes == cid)))
    return out


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


def design(project: SyntheticProject, out: Path, *extra: str) -> list[str]:
    return ["accuracy", "design", "--config", str(project.config_path), "--season", SEASON, "--out", str(out), *extra]


def test_design_over_a_published_season(project: SyntheticProject, tmp_path: Path) -> None:
    out = tmp_path / "design"
    proc = subprocess.run(
        [LCMS, *design(project, out, "--min-per-stratum", "8", "--target-se", "0.03", "--seed", "11")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    meta = json.loads((out / "design.json").read_text())
    assert summary["source"] == meta["source"] == "published"
    assert meta["change_strata"] is True and meta["buffer_px"] == 2
    strata = {s["name"]: s for s in meta["strata"]}
    # The strata as recomputed from the arrays: change transitions, the buffer, then the classes.
    assert {k: s["pixels"] for k, s in strata.items()} == expected_strata(project, 2)
    kinds = [s["kind"] for s in meta["strata"]]
    assert kinds == sorted(kinds, key=["change", "buffer", "class"].index)
    sizes = np.array([s["pixels"] for s in meta["strata"]])
    ua = np.array([s["expected_ua"] for s in meta["strata"]])
    # n = ceil((Σ W_h S_h / 0.03)²) with S_h = sqrt(0.85 · 0.15) = 0.357071 everywhere: (0.357071/0.03)² = 141.67
    assert np.all(ua == 0.85)
    assert meta["allocation"]["n_cochran"] == math.ceil((0.357071 / 0.03) ** 2 - 1e-6) == 142
    n_h = np.array([s["n"] for s in meta["strata"]])
    assert np.all(n_h >= np.minimum(8, sizes))
    assert meta["allocation"]["n_total"] == int(n_h.sum()) >= 142

    points = pd.read_csv(out / "points.csv", keep_default_na=False)
    assert list(points.columns) == [
        "point_id", "stratum", "map_class", "map_class_id", "change", "tile", "row", "col", "epsg",
        "x", "y", "lon", "lat", "inclusion_probability", "reference",
    ]  # fmt: skip
    assert len(points) == n_h.sum() and points["point_id"].is_unique
    assert (points["reference"] == "").all()
    assert points.groupby("stratum").size().to_dict() == {k: s["n"] for k, s in strata.items() if s["n"]}
    # Inclusion probability n_h / N_h of the point's stratum.
    expected_pi = points["stratum"].map({k: s["n"] / s["pixels"] for k, s in strata.items()})
    np.testing.assert_allclose(points["inclusion_probability"], expected_pi)
    # Every point is where it says: its pixel has its map class and change label, inside the AOI.
    from pyproj import Transformer

    names = {c.id: c.name for c in project.config.legend()}
    tiles = {t.id: t for t in project.tiles}
    to_utm = Transformer.from_crs(4326, 32638, always_xy=True)
    for p in points.itertuples():
        tile = tiles[p.tile]
        classes = project.classes[(SEASON, p.tile)]
        assert classes[p.row, p.col] == p.map_class_id and names[p.map_class_id] == p.map_class
        assert in_aoi(project, tile)[p.row, p.col]
        code = int(project.change[(SEASON, p.tile)][p.row, p.col])
        assert (p.change == "no change") == (code == 0)
        if p.stratum.startswith("change: "):
            assert p.stratum == f"change: {p.change}"
        x0, _, _, y1 = tile.bounds
        assert (p.x, p.y) == (x0 + (p.col + 0.5) * 20, y1 - (p.row + 0.5) * 20)
        x, y = to_utm.transform(p.lon, p.lat)
        assert abs(x - p.x) < 0.01 and abs(y - p.y) < 0.01
    # Ids in random order: the first points are not all of one stratum.
    assert points["stratum"].head(20).nunique() > 1

    blind = pd.read_csv(out / "points_blind.csv", keep_default_na=False)
    assert list(blind.columns) == ["point_id", "tile", "row", "col", "epsg", "x", "y", "lon", "lat", "reference"]
    assert blind["point_id"].tolist() == points["point_id"].tolist()
    import geopandas as gpd

    gpkg = gpd.read_file(out / "points.gpkg", layer="points")
    assert gpkg.crs.to_epsg() == 4326 and gpkg["point_id"].tolist() == points["point_id"].tolist()
    np.testing.assert_allclose(gpkg.geometry.x, points["lon"])
    np.testing.assert_allclose(gpkg.geometry.y, points["lat"])


def test_the_same_seed_gives_the_same_design(
    project: SyntheticProject, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {}
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        code, _, err = run_cli(
            capsys, *design(project, tmp_path / name, "--seed", seed, "--sample-size", "120", "--min-per-stratum", "2")
        )
        assert code == 0, err
        files[name] = ((tmp_path / name / "points.csv").read_text(), (tmp_path / name / "design.json").read_text())
    assert files["a"] == files["b"]
    assert files["a"][0] != files["c"][0]
    assert json.loads(files["a"][1])["allocation"]["n_total"] == 120


def test_options_change_the_strata_and_the_allocation(
    project: SyntheticProject, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary, err = run_cli(
        capsys,
        *design(project, tmp_path / "x", "--no-change-strata", "--expected-ua", "0.9", "--expected-ua", "forest=0.6"),
    )
    assert code == 0, err
    meta = json.loads((tmp_path / "x" / "design.json").read_text())
    assert meta["change_strata"] is False and meta["buffer_px"] is None
    assert [s["kind"] for s in meta["strata"]] == ["class"] * len(meta["strata"])
    ua = {s["name"]: s["expected_ua"] for s in meta["strata"]}
    assert ua["forest"] == 0.6 and all(v == 0.9 for k, v in ua.items() if k != "forest")
    # Class strata hold every frame pixel of their class.
    total = sum(s["pixels"] for s in meta["strata"])
    assert total == sum(expected_strata(project, 2).values())
    # n from the anticipated accuracies: Σ W_h S_h / 0.01, squared.
    w = np.array([s["weight"] for s in meta["strata"]])
    s_h = np.sqrt(np.array(list(ua.values())) * (1 - np.array(list(ua.values()))))
    assert summary["n_cochran"] == math.ceil((float(np.sum(w * s_h)) / 0.01) ** 2 - 1e-9)
    code, _, err = run_cli(capsys, *design(project, tmp_path / "y", "--buffer-px", "0", "--expected-ua", "change=0.7"))
    assert code == 0, err
    meta = json.loads((tmp_path / "y" / "design.json").read_text())
    assert all(s["expected_ua"] == 0.7 for s in meta["strata"] if s["kind"] == "change")
    assert not any(s["kind"] == "buffer" for s in meta["strata"])  # a buffer of 0 pixels is empty


def truth_of(project: SyntheticProject, tile_id: str) -> np.ndarray:
    """A known reference raster: the map with about 15 % of the pixels of each tile replaced by forest (id 2)."""
    classes = project.classes[(SEASON, tile_id)]
    rng = np.random.default_rng(sum(map(ord, tile_id)))
    wrong = rng.random(classes.shape) < 0.15
    return np.where(wrong & (classes > 0), 2, classes).astype(np.uint8)


def test_assess_finds_the_truth_within_its_confidence_intervals(
    project: SyntheticProject, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "design"
    code, _, err = run_cli(
        capsys, *design(project, out, "--seed", "2", "--target-se", "0.02", "--min-per-stratum", "5")
    )
    assert code == 0, err
    points = pd.read_csv(out / "points.csv", keep_default_na=False)
    names = {c.id: c.name for c in project.config.legend()}
    points["reference"] = [names[int(truth_of(project, p.tile)[p.row, p.col])] for p in points.itertuples()]
    points.loc[points.index[-1], "reference"] = ""  # one unlabelled point
    labels = tmp_path / "labels.csv"
    points.to_csv(labels, index=False)  # the design's own points.csv, filled in, is a labels file
    proc = subprocess.run(
        [LCMS, "accuracy", "assess", "--design", str(out), "--labels", str(labels), "--json", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert json.loads((tmp_path / "r.json").read_text()) == result
    assert result["estimator"] == "stehman2014" and result["area_unit"] == "ha"
    assert result["n_unlabelled"] == 1 and result["n_labelled"] == len(points) - 1
    assert any("1 of" in note and "no label" in note for note in result["notes"])

    # The population's true figures over the frame (pixel centre in the AOI, class > 0).
    truth_area: dict[str, float] = {}
    agree = total = 0
    for tile in project.tiles:
        frame = (project.classes[(SEASON, tile.id)] > 0) & in_aoi(project, tile)
        truth = truth_of(project, tile.id)
        agree += int(np.sum(frame & (truth == project.classes[(SEASON, tile.id)])))
        total += int(frame.sum())
        for cid, name in names.items():
            truth_area[name] = truth_area.get(name, 0.0) + float(np.sum(frame & (truth == cid))) * 0.04  # ha
    assert sum(result["area"].values()) == pytest.approx(total * 0.04)
    true_oa = agree / total
    assert abs(result["overall_accuracy"] - true_oa) < 3 * result["overall_accuracy_se"]
    assert result["overall_accuracy_se"] < 0.03
    for name, area in truth_area.items():
        assert abs(result["area"][name] - area) < 3.5 * result["area_se"][name] + 1e-6, name
    # The map underestimates forest (15 % of everything is really forest): the estimate corrects it.
    mapped_forest = result["mapped_area"]["forest"]
    assert result["area"]["forest"] > mapped_forest
    assert result["area"]["forest"] - result["area_ci95"]["forest"] < truth_area["forest"]


def test_perfect_labels_without_change_strata_give_the_mapped_areas(
    project: SyntheticProject, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "design"
    code, _, err = run_cli(capsys, *design(project, out, "--no-change-strata", "--sample-size", "60"))
    assert code == 0, err
    points = pd.read_csv(out / "points.csv", keep_default_na=False)
    points["reference"] = points["map_class_id"].astype(str)  # ids work as labels too
    points[["point_id", "reference"]].to_csv(tmp_path / "labels.csv", index=False)
    code, result, err = run_cli(
        capsys, "accuracy", "assess", "--design", str(out), "--labels", str(tmp_path / "labels.csv")
    )
    assert code == 0, err
    meta = json.loads((out / "design.json").read_text())
    for s in meta["strata"]:
        assert result["area"][s["name"]] == pytest.approx(s["area_ha"])
        assert result["area_se"][s["name"]] == pytest.approx(0, abs=1e-9)
    assert result["overall_accuracy"] == pytest.approx(1.0) and result["overall_accuracy_se"] == pytest.approx(0)


def write_postprocessing(project: SyntheticProject) -> None:
    """The same season as post-processed EOPatches and change polygons (the form before publish)."""
    from lcms_tasks import eopatch
    from lcms_tasks.changes import vectorise_changes, write_changes
    from lcms_tasks.stages.publish import transition_codes

    ctx = project.context(SEASON)
    codes = transition_codes(ctx)
    names = {c.id: c.name for c in project.config.legend()}
    for tile in project.tiles:
        patch = eopatch.new_patch(tile, [])
        patch.mask_timeless["CLASS"] = project.classes[(SEASON, tile.id)][..., None]
        uri = ctx.tile_uri("postprocessing", tile.id)
        eopatch.save(ctx.storage, uri, patch, meta=ctx.marker_meta("postprocessing", tile.id, {}))
        change = project.change[(SEASON, tile.id)]
        regions = [{"from": c.from_id, "to": c.to_id, "confidence": 1.0} for c in codes]
        frame = vectorise_changes(
            change.astype(np.int32), regions, tile.transform(), tile.crs, class_names=names, tile_id=tile.id,
            season_before="2023", season_after=SEASON,
        )  # fmt: skip
        uri = ctx.tile_uri("change_detection", tile.id)
        with ctx.storage.writing_dir(uri, ctx.marker_meta("change_detection", tile.id, {})) as staging:
            write_changes(frame, staging / "changes.gpkg")


def test_the_post_processed_map_gives_the_same_design_as_the_published_one(
    project: SyntheticProject, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_postprocessing(project)
    runs = {}
    for source in ("published", "postprocessing"):
        code, _, err = run_cli(capsys, *design(project, tmp_path / source, "--source", source, "--seed", "4"))
        assert code == 0, err
        meta = json.loads((tmp_path / source / "design.json").read_text())
        assert meta["source"] == source
        # Transition codes are numbered over the config's transitions in the published map, over those found
        # in the change polygons otherwise: the same strata by name, maybe other numbers.
        strata = [{k: v for k, v in s.items() if k != "transition_code"} for s in meta["strata"]]
        runs[source] = (strata, meta["class_pixels"], (tmp_path / source / "points.csv").read_text())
    assert runs["published"] == runs["postprocessing"]


# -- bad input ---------------------------------------------------------------------------------------------


def test_design_bad_input_exits_2_with_one_line(
    project: SyntheticProject, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (["--expected-ua", "wheat=0.8"], "--expected-ua names unknown stratum/strata 'wheat'"),
        (["--expected-ua", "high"], "--expected-ua 'high': expected a number or NAME=NUMBER"),
        (["--expected-ua", "1.5"], "--expected-ua 1.5: must be in (0, 1]"),
        (["--target-se", "0"], "--target-se 0.0: must be between 0 and 1"),
        (["--min-per-stratum", "-3"], "--min-per-stratum -3: must be >= 0"),
        (["--tile", "32638_1_1"], "32638_1_1"),
    ]
    for extra, message in cases:
        code, _, err = run_cli(capsys, *design(project, tmp_path / "d", *extra))
        lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
        assert code == 2 and len(lines) == 1 and message in lines[0], (extra, err)
    code, _, err = run_cli(
        capsys, "accuracy", "design", "--config", str(project.config_path), "--season", "1999", "--out", "x"
    )
    assert code == 2 and "1999" in err
    # A season without any map: names the stage to run.
    empty = make_project(tmp_path / "none", aoi=utm_block(32638, 498, 3440, 1, 1, 1280.0), aoi_crs=32638,
                         seasons=("2024",), imagery=False, features=False)  # fmt: skip
    import shutil

    shutil.rmtree(Path(empty.config.storage_root.removeprefix("file://")) / "maptest" / SEASON / "publish")
    code, _, err = run_cli(capsys, *design(empty, tmp_path / "e"))
    assert code == 2 and "have no map" in err and "lcms run postprocessing" in err


def test_assess_bad_input_exits_2_with_one_line(
    project: SyntheticProject, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "design"
    code, _, err = run_cli(capsys, *design(project, out, "--sample-size", "40", "--no-change-strata"))
    assert code == 0, err
    points = pd.read_csv(out / "points.csv", keep_default_na=False)
    first, second = points["point_id"].iloc[0], points["point_id"].iloc[1]
    good = "\n".join(f"{p},{m}" for p, m in zip(points["point_id"], points["map_class"], strict=True))
    cases = [
        ("id,label\nP1,forest\n", "labels.csv: line 1: the header has no column 'point_id' or 'reference'"),
        (f"point_id,reference\n{first},forest\n{first},water\n", f"line 3: point {first!r} appears twice"),
        (f"point_id,reference\n{first},forest\n{second},pine\n", f"line 3: point {second!r}: reference 'pine' is not"),
        (
            f"point_id,reference\n{good}\nP99999,forest\n",
            f"line {len(points) + 2}: point 'P99999' is not a point of the design",
        ),
        (f"point_id,reference\n{first},forest\n", "none of its"),
        ("", "labels.csv: the file is empty"),
    ]
    for text, message in cases:
        (tmp_path / "labels.csv").write_text(text)
        code, _, err = run_cli(
            capsys, "accuracy", "assess", "--design", str(out), "--labels", str(tmp_path / "labels.csv")
        )
        lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
        assert code == 2 and len(lines) == 1 and message in lines[0], (text[:40], err)
    code, _, err = run_cli(capsys, "accuracy", "assess", "--design", str(tmp_path), "--labels", "x.csv")
    assert code == 2 and "not a sample design folder: design.json is missing" in err
