"""The report's area-adjusted accuracy: labels from the synthetic truth, from a labelled design, or none at all.

The project is :class:`tests.unit.test_reporting.Fixture`'s: 2 x 2 tiles whose maps are the download's
synthetic truth with a known share of errors per tile. With the truth present the stage draws a sample
and labels it from the truth; a labelled design (the conventional season folder, or the configured
``stages.reporting.accuracy``) takes precedence; without either the report says so plainly and labels
the test-split figures as what they are.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.unit.test_reporting import Fixture, _map_patch, _setup_project, html_text, raw_keys


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    return Fixture(tmp_path_factory.mktemp("reporting-accuracy"))


@pytest.fixture(scope="module")
def report(fixture: Fixture) -> tuple[dict[str, Any], Path]:
    from lcms_tasks.stages import reporting

    uri = reporting.run(fixture.ctx)[0]
    folder = fixture.ctx.storage.local_path(uri)
    return json.loads((folder / "report.json").read_text()), folder


def _frame(fixture: Fixture) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per tile: (map, truth, frame mask: a legend class and the pixel centre inside the AOI)."""
    import shapely

    from lcms_tasks.grid import load_aoi

    aoi = shapely.union_all(list(load_aoi(fixture.cfg).to_crs(32638).geometry))
    out = {}
    for tile in fixture.tiles:
        x0, _, _, y1 = tile.bounds
        cols, rows = np.meshgrid(np.arange(tile.size_px), np.arange(tile.size_px))
        inside = shapely.contains_xy(aoi, x0 + (cols + 0.5) * tile.resolution, y1 - (rows + 0.5) * tile.resolution)
        classes = fixture.maps[tile.id]
        out[tile.id] = (classes, fixture.truth[tile.id], inside & (classes > 0))
    return out


def _run_ids(rep: dict[str, Any]) -> list[str]:
    return [rep["run"]["run_id"], *[r for ids in rep["run"]["upstream_run_ids"].values() for r in ids]]


# -- labels from the synthetic truth -------------------------------------------------------------------------


def test_synthetic_truth_labels_a_drawn_sample(fixture: Fixture, report: tuple[dict[str, Any], Path]) -> None:
    rep, folder = report
    block = rep["area_adjusted"]
    assert block["available"] is True and block["label_source"] == "synthetic_truth"
    design = block["design"]
    assert block["n_points"] == block["n_labelled"] == sum(s["n"] for s in design["strata"])
    assert design["options"]["seed"] == fixture.cfg.source.seed == 7
    # Change strata (the season has change polygons) and a buffer, then the classes; at least 50 points each.
    assert [s["kind"] for s in design["strata"]][-8:] == ["class"] * 8
    assert "buffer" in [s["name"] for s in design["strata"]]
    assert all(s["n"] >= min(50, s["pixels"]) for s in design["strata"])
    # The frame: pixels with a legend class inside the AOI, counted independently.
    frame = _frame(fixture)
    pixel_km2 = fixture.cfg.grid.resolution_m**2 / 1e6
    n_frame = sum(int(f.sum()) for _, _, f in frame.values())
    assert sum(s["pixels"] for s in design["strata"]) == n_frame
    assert block["total_area"] == pytest.approx(n_frame * pixel_km2)
    assert sum(block["area"].values()) == pytest.approx(block["total_area"])
    assert sum(block["mapped_area"].values()) == pytest.approx(block["total_area"])
    # Area-adjusted OA estimates the census of the frame (every tile, not only those without training samples).
    census = sum(int((m == t)[f].sum()) for m, t, f in frame.values()) / n_frame
    assert abs(block["overall_accuracy"] - census) < 3 * block["overall_accuracy_se"]
    assert block["overall_accuracy_ci95"] == pytest.approx(1.96 * block["overall_accuracy_se"])
    # The drawn design and its labelled points are written with the report.
    points = pd.read_csv(folder / "accuracy" / "points.csv", keep_default_na=False)
    assert len(points) == block["n_points"] and (points["reference"] != "").all()
    for row in points.head(50).itertuples():
        truth = fixture.truth[row.tile][row.row, row.col]
        assert row.reference == {c.id: c.name for c in fixture.cfg.legend()}[int(truth)]
        assert row.map_class_id == fixture.maps[row.tile][row.row, row.col]
    assert json.loads((folder / "accuracy" / "design.json").read_text())["kind"] == "lcms-accuracy-design"


def test_html_shows_the_area_adjusted_section(report: tuple[dict[str, Any], Path]) -> None:
    rep, folder = report
    block = rep["area_adjusted"]
    page = (folder / "report.html").read_text()
    text = html_text(page)
    section = text[text.index("Area-adjusted accuracy From a") : text.index("Regions Pixels are assigned")]
    assert f"stratified random sample of {block['n_points']:,} points" in section
    assert "Labels come from the synthetic truth" in section and "accuracy/points.csv" in section
    oa, ci = block["overall_accuracy"], block["overall_accuracy_ci95"]
    assert f"overall accuracy (95 % CI) {100 * oa:.1f} % ± {100 * ci:.1f}" in section
    for header in ("estimated area (km²)", "95 % CI (km²)", "user's accuracy", "producer's accuracy"):
        assert header in section
    grassland_ci = block["area_ci95"]["grassland"]
    assert f"± {grassland_ci:,.4f}" in section
    assert "Sample design" in section and "inclusion probability" in section
    # The cards: the area-adjusted figure first, the test split labelled as what it is.
    assert f"{100 * oa:.1f} % ± {100 * ci:.1f} area-adjusted overall accuracy (95 % CI)" in text
    assert "overall accuracy, test split (not a probability sample)" in text
    assert "Model test metrics: test split (not a probability sample)" in text
    assert "The map's accuracy is the area-adjusted one above." in text
    assert raw_keys(page, _run_ids(rep)) == []


def test_notes_of_the_estimators_are_words() -> None:
    from lcms_tasks.report.html import _note_words

    note = "users_accuracy['water']: no sample unit is mapped as this class: undefined"
    assert _note_words(note) == "user's accuracy of 'water': no sample unit is mapped as this class: undefined"
    assert _note_words("producers_accuracy['a b']: x").startswith("producer's accuracy of 'a b'")


# -- without labels ------------------------------------------------------------------------------------------------


def test_without_labels_the_report_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Maps and a model but no download truth and no design: no figures, a plain statement, the test split labelled."""
    from lcms_tasks import eopatch
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import project_tiles
    from lcms_tasks.stages import reporting

    cfg = load_config(_setup_project(tmp_path))
    ctx = RunContext.create(cfg, season="2023", run_id="r")
    for tile in project_tiles(cfg):
        classes = np.ones(tile.shape, np.uint8)
        eopatch.save(
            ctx.storage,
            ctx.tile_uri("postprocessing", tile.id),
            _map_patch(tile, classes, np.ones(tile.shape)),
            meta=ctx.marker_meta("postprocessing", tile.id, {}),
        )
    meta = ctx.marker_meta(
        "training", None, {"metrics": {"overall_accuracy": 0.9, "confusion_matrix": [[9, 1], [1, 9]]}}
    )
    meta["legend"] = [{"id": 1}, {"id": 2}]
    with ctx.storage.writing_dir(ctx.run_uri("training", "model"), meta):
        pass
    caplog.set_level(logging.INFO)
    uri = reporting.run(ctx)[0]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    folder = ctx.storage.local_path(uri)
    rep = json.loads((folder / "report.json").read_text())
    block = rep["area_adjusted"]
    season_folder = ctx.storage.uri("testproj", "2023", "accuracy")
    assert block == {
        "available": False,
        "reason": "no reference labels from a probability sample for season 2023: no sample design at "
        f"{season_folder}, and the download EOPatches carry no synthetic truth",
        "problem": False,
        "looked_for": [season_folder],
    }
    assert ctx.storage.read_marker(uri)["area_adjusted_overall_accuracy"] is None
    assert not (folder / "accuracy").exists()
    page = (folder / "report.html").read_text()
    text = html_text(page)
    assert "No area-adjusted accuracy for this season: no reference labels from a probability sample" in text
    assert "no defensible map accuracy and no confidence intervals for the class areas" in text
    assert "lcms accuracy design" in text and season_folder in text
    assert "no labels area-adjusted overall accuracy" in text  # the card
    assert "90.0 % overall accuracy, test split (not a probability sample)" in text
    assert "Model test metrics: test split (not a probability sample)" in text
    assert "there are no reference labels of a probability sample for this season" in text
    assert raw_keys(page, _run_ids(rep)) == []


# -- a labelled design -----------------------------------------------------------------------------------------------


def _config_with(fixture: Fixture, name: str, accuracy: dict[str, Any]) -> Any:
    """A context of the fixture's project (same storage) whose reporting stage has these accuracy options."""
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext

    folder = Path(fixture.cfg.base_dir)
    raw = yaml.safe_load((folder / "project.yaml").read_text())
    raw.setdefault("stages", {})["reporting"] = {"accuracy": accuracy}
    (folder / name).write_text(yaml.safe_dump(raw, sort_keys=False))
    return RunContext.create(load_config(folder / name), season="2024", run_id=f"rep-{name}")


def _labelled_copy(report_folder: Path, target: Path, *, labels: str | None = "labels.csv", drop: int = 0) -> None:
    """The report's drawn design copied to ``target``, its labels (all but ``drop`` of them) as a labels CSV."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("design.json", "points.csv"):
        shutil.copy(report_folder / "accuracy" / name, target / name)
    points = pd.read_csv(target / "points.csv", keep_default_na=False)
    points.loc[points.index[:drop], "reference"] = ""
    if labels:
        points[["point_id", "reference"]].to_csv(target / labels, index=False)


def test_a_labelled_design_in_the_season_folder_comes_first(
    fixture: Fixture, report: tuple[dict[str, Any], Path]
) -> None:
    from lcms_tasks.report.html import render
    from lcms_tasks.stages import reporting

    rep, folder = report
    season_folder = fixture.ctx.storage.uri("testproj", "2024", "accuracy")
    local = fixture.ctx.storage.local_path(season_folder)
    try:
        # A design without labels yet: said plainly, not a problem, and the synthetic truth is not used instead.
        _labelled_copy(folder, local, labels=None)
        block = reporting.build_report(fixture.ctx)[0]["area_adjusted"]
        assert block["available"] is False and block["problem"] is False
        assert block["reason"] == f"the sample design at {season_folder} has no labels yet ({season_folder}/labels.csv)"
        # With the labels (10 points left unlabelled), the labels' estimates.
        _labelled_copy(folder, local, drop=10)
        new = reporting.build_report(fixture.ctx)[0]
        block = new["area_adjusted"]
        assert block["available"] is True and block["label_source"] == "labels"
        assert block["design"]["origin"] == season_folder and block["design"]["labels"] == f"{season_folder}/labels.csv"
        n = rep["area_adjusted"]["n_points"]
        assert (block["n_points"], block["n_labelled"], block["n_unlabelled"]) == (n, n - 10, 10)
        assert block["notes"][0].startswith("10 of ")
        assert abs(block["overall_accuracy"] - rep["area_adjusted"]["overall_accuracy"]) < 0.01
        assert sum(block["area"].values()) == pytest.approx(block["total_area"])
        text = html_text(render(new, {}))
        assert f"Reference labels: {season_folder}/labels.csv ; sample design: {season_folder} ." in text
        assert "synthetic truth" not in text[text.index("Area-adjusted accuracy From") : text.index("Regions")]
    finally:
        shutil.rmtree(local, ignore_errors=True)


def test_a_configured_design_with_season_placeholders(
    fixture: Fixture, report: tuple[dict[str, Any], Path], caplog: pytest.LogCaptureFixture
) -> None:
    from lcms_tasks.stages import reporting

    rep, folder = report
    base = Path(fixture.cfg.base_dir)
    _labelled_copy(folder, base / "designs" / "2024", labels="my labels.csv")
    ctx = _config_with(
        fixture, "configured.yaml", {"design": "designs/{season}", "labels": "designs/{season}/my labels.csv"}
    )
    block = reporting.build_report(ctx)[0]["area_adjusted"]
    assert block["available"] is True and block["label_source"] == "labels"
    assert block["design"]["origin"] == str(base / "designs" / "2024")
    assert block["overall_accuracy"] == pytest.approx(rep["area_adjusted"]["overall_accuracy"])
    # A design of another season is refused, with a warning naming it; the report is still written.
    meta_path = base / "designs" / "2024" / "design.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "season": "2023"}))
    caplog.set_level(logging.INFO)
    block = reporting.build_report(ctx)[0]["area_adjusted"]
    assert block["available"] is False and block["problem"] is True
    assert "is for project 'testproj' season 2023, not 'testproj' season 2024" in block["reason"]
    assert any("no area-adjusted accuracy" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    meta_path.write_text(json.dumps(meta))
    # A label that is not a class: the file and its line in the reason.
    labels = base / "designs" / "2024" / "my labels.csv"
    lines = labels.read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ",marsh"
    labels.write_text("\n".join(lines) + "\n")
    block = reporting.build_report(ctx)[0]["area_adjusted"]
    assert block["problem"] is True and f"{labels}: line 4: point" in block["reason"]
    assert "reference 'marsh' is not a class of the legend" in block["reason"]
    # A configured design that does not exist is a problem too, not a fallback to the synthetic truth.
    ctx = _config_with(fixture, "absent.yaml", {"design": "nowhere/{season}"})
    block = reporting.build_report(ctx)[0]["area_adjusted"]
    assert block["available"] is False and block["problem"] is True
    assert f"stages.reporting.accuracy.design: {base / 'nowhere' / '2024'}" in block["reason"]


def test_synthetic_truth_can_be_switched_off(fixture: Fixture) -> None:
    from lcms_tasks.stages import reporting

    ctx = _config_with(fixture, "off.yaml", {"synthetic_truth": False})
    rep = reporting.build_report(ctx)[0]
    assert rep["area_adjusted"]["available"] is False
    assert rep["area_adjusted"]["reason"].endswith("the synthetic truth is switched off in the reporting stage's "
                                                   "accuracy options")  # fmt: skip
    assert rep["evaluation"]["overall_accuracy"] is not None  # the evaluation against the truth is unchanged


def test_accuracy_options_are_validated(tmp_path: Path) -> None:
    from lcms_tasks.config import load_config
    from lcms_tasks.errors import ConfigError

    path = _setup_project(tmp_path)
    raw = yaml.safe_load(path.read_text())
    for bad in ({"desing": "x"}, {"target_se": 0}, {"min_per_stratum": -1}, {"seed": -2}):
        raw["stages"] = {"reporting": {"accuracy": bad}}
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match="accuracy"):
            load_config(path)


# -- the demo's summary ----------------------------------------------------------------------------------------------


def test_demo_summary_has_the_area_adjusted_accuracy(report: tuple[dict[str, Any], Path]) -> None:
    from lcms_airflow.demo import _area_adjusted_line, _area_adjusted_summary

    block = report[0]["area_adjusted"]
    summary = _area_adjusted_summary(block)
    oa, ci = block["overall_accuracy"], block["overall_accuracy_ci95"]
    assert summary["area_adjusted_overall_accuracy"] == oa and summary["area_adjusted_overall_accuracy_ci95"] == ci
    assert summary["area_adjusted_overall_accuracy_interval95"] == [oa - ci, oa + ci]
    assert summary["area_adjusted_label_source"] == "synthetic_truth"
    line = _area_adjusted_line(block)
    assert line == (
        f"area-adjusted overall accuracy (stratified sample of {block['n_labelled']} points labelled by the synthetic "
        f"truth): {oa:.4f} ± {ci:.4f} (95 % CI)"
    )
    none = {"available": False, "reason": "no labels here"}
    assert _area_adjusted_summary(none)["area_adjusted_overall_accuracy"] is None
    assert _area_adjusted_line(none) == "area-adjusted overall accuracy: none (no labels here)"
