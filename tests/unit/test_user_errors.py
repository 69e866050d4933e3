"""Errors a user can cause: exit status 2, one line naming the culprit, no traceback, nothing written.

Each row of the table changes a valid 2 x 2-tile project (config, AOI, reference files, command line)
in one way and runs the command a user would (`lcms config validate` or `lcms run`). Every row
asserts the exit status, that the message names the file, field or record at fault, that no
traceback is shown, and that the storage root was not created.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from lcms_tasks.cli import main

Edit = Callable[[Path, dict[str, Any]], None]


def _write_geojson(path: Path, coords: list[list[float]], crs: str | None) -> None:
    data: dict[str, Any] = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {"region": "a"}, "geometry": {"type": "Polygon", "coordinates": [coords]}}
        ],
    }
    if crs:
        data["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(data))


def _square(x0: float, y0: float, side: float) -> list[list[float]]:
    return [[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side], [x0, y0]]


def _reference(d: Path, name: str = "ref.gpkg", *, crs: int | None = 32638, column: str = "code") -> Path:
    import geopandas as gpd
    from shapely.geometry import box

    x0, y0 = 498 * 1280.0, 3440 * 1280.0
    frame = gpd.GeoDataFrame(
        {column: [1, 2]}, geometry=[box(x0, y0, x0 + 300, y0 + 300), box(x0 + 400, y0, x0 + 700, y0 + 300)]
    )
    if crs is not None:
        frame = frame.set_crs(crs)
    path = d / name
    if crs is None:
        frame.to_file(path.with_suffix(".shp"))  # a shapefile without .prj: no CRS
        return path.with_suffix(".shp")
    frame.to_file(path, driver="GPKG")
    return path


def _source(path: str, **extra: Any) -> dict[str, Any]:
    return {"stages": {"add_reference": {"sources": [{"type": "file", "path": path, "class_column": "code", **extra}]}}}


def _merge(cfg: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            _merge(cfg[key], value)
        else:
            cfg[key] = value


def _set(extra: dict[str, Any]) -> Edit:
    def edit(d: Path, cfg: dict[str, Any]) -> None:
        _merge(cfg, extra)

    return edit


def _aoi_degrees_as_utm(d: Path, cfg: dict[str, Any]) -> None:
    _write_geojson(d / "aoi_bad.geojson", _square(47.5, 40.1, 0.02), "urn:ogc:def:crs:EPSG::32638")
    cfg["aoi"] = {"file": "aoi_bad.geojson"}


def _aoi_metres_as_degrees(d: Path, cfg: dict[str, Any]) -> None:
    cfg["aoi"] = {
        "geojson": {"type": "Polygon", "coordinates": [_square(637440.0, 4403200.0, 2000.0)]},
        "crs": "EPSG:4326",
    }


def _aoi_without_crs(d: Path, cfg: dict[str, Any]) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    gpd.GeoDataFrame({"region": ["a"]}, geometry=[box(0, 0, 1000, 1000)]).to_file(d / "nocrs.shp")
    cfg["aoi"] = {"file": "nocrs.shp"}


def _storage_under_a_file(d: Path, cfg: dict[str, Any]) -> None:
    (d / "afile").write_text("x")
    cfg["storage"] = {"root": "afile/data"}


def _ref_missing(d: Path, cfg: dict[str, Any]) -> None:
    _merge(cfg, _source("missing_{season}.gpkg", crosswalk={1: "cropland"}))


def _ref_without_crs(d: Path, cfg: dict[str, Any]) -> None:
    path = _reference(d, crs=None)
    _merge(cfg, _source(path.name, crosswalk={1: "cropland"}))


def _ref_without_column(d: Path, cfg: dict[str, Any]) -> None:
    _reference(d, column="other")
    _merge(cfg, _source("ref.gpkg", crosswalk={1: "cropland"}))


def _ref_not_vector(d: Path, cfg: dict[str, Any]) -> None:
    (d / "ref.gpkg").write_bytes(b"this is not a GeoPackage")
    _merge(cfg, _source("ref.gpkg", crosswalk={1: "cropland"}))


def _crosswalk_without_column(d: Path, cfg: dict[str, Any]) -> None:
    _reference(d)
    (d / "cw.csv").write_text("code,klass\n1,cropland\n")
    _merge(cfg, _source("ref.gpkg", crosswalk_file="cw.csv"))


def _crosswalk_unknown_class(d: Path, cfg: dict[str, Any]) -> None:
    _reference(d)
    (d / "cw.csv").write_text("code,class\n1,cropland\n2,jungle\n")
    _merge(cfg, _source("ref.gpkg", crosswalk_file="cw.csv"))


def _text(content: bytes | str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        path = d / "odd.yaml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    return make


# (id, how to break the config, words the message must contain)
CONFIG_ROWS: list[tuple[str, Edit, list[str]]] = [
    ("impossible date", _set({"seasons": {"2023": {"start": "2023-02-30"}}}), ["seasons.2023.start", "day"]),
    ("end before start", _set({"seasons": {"2023": {"end": "2023-01-01"}}}), ["seasons.2023", "must be after"]),
    ("unknown key", _set({"grid": {"tile_px": 64}}), ["grid.tile_px", "unknown key"]),
    ("bad colour", _set({"legends": {"land_cover": [{"id": 1, "name": "a", "color": "red"}]}}), ["color"]),
    ("storage under a file", _storage_under_a_file, ["storage.root", "afile", "is a file"]),
    ("storage not writable", _set({"storage": {"root": "/proc/lcms-test-data"}}), ["storage.root", "/proc"]),
    ("AOI degrees declared UTM", _aoi_degrees_as_utm, ["aoi.file", "aoi_bad.geojson", "EPSG:32638", "CRS right"]),
    ("AOI metres declared degrees", _aoi_metres_as_degrees, ["aoi.geojson", "not longitudes/latitudes"]),
    ("AOI without CRS", _aoi_without_crs, ["aoi.file", "nocrs.shp", "no CRS"]),
    ("AOI file missing", _set({"aoi": {"file": "nowhere.gpkg"}}), ["aoi.file", "nowhere.gpkg", "does not exist"]),
    ("reference missing", _ref_missing, ["stages.add_reference.sources[0]", "missing_2023.gpkg"]),
    ("reference without CRS", _ref_without_crs, ["stages.add_reference.sources[0]", "ref.shp", "CRS"]),
    ("reference lacks column", _ref_without_column, ["stages.add_reference.sources[0]", "code", "other"]),
    ("reference not vector", _ref_not_vector, ["stages.add_reference.sources[0]", "ref.gpkg"]),
    ("crosswalk lacks column", _crosswalk_without_column, ["cw.csv", "class"]),
    ("crosswalk unknown class", _crosswalk_unknown_class, ["cw.csv", "jungle"]),
    (
        "erosion of unknown class",
        _set({"stages": {"add_reference": {"erosion_per_class": {"jungle": 2}}}}),
        ["erosion_per_class", "jungle"],
    ),
    (
        "transition of unknown class",
        _set({"stages": {"change_detection": {"transitions": [{"from": "forest", "to": "urban sprawl"}]}}}),
        ["stages.change_detection.transitions", "urban sprawl"],
    ),
    ("model season unknown", _set({"stages": {"prediction": {"model_season": "1999"}}}), ["model_season", "1999"]),
    (
        "crop legend empty",
        _set({"classification": {"legend": "crop_type"}, "legends": {"crop_type": []}}),
        ["crop_type"],
    ),
]


def _project(project_dir: Path, edit: Edit | None = None) -> Path:
    cfg = yaml.safe_load((project_dir / "project.yaml").read_text())
    if edit is not None:
        edit(project_dir, cfg)
    path = project_dir / "edited.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _assert_user_error(code: int, err: str, words: list[str], project_dir: Path) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    assert err.startswith("error: "), err
    for word in words:
        assert word in err, (word, err)
    assert not (project_dir / "data").exists(), "a refused command must write nothing"


@pytest.mark.parametrize(("edit", "words"), [r[1:] for r in CONFIG_ROWS], ids=[r[0] for r in CONFIG_ROWS])
def test_config_validate_refuses(
    project_dir: Path, capsys: pytest.CaptureFixture[str], edit: Edit, words: list[str]
) -> None:
    path = _project(project_dir, edit)
    code = main(["config", "validate", str(path)])
    _assert_user_error(code, capsys.readouterr().err, words, project_dir)
    # The first task of a run checks the same (lcms run does too, before any work).
    code = main(["run", "download", "--config", str(path), "--season", "2023"])
    _assert_user_error(code, capsys.readouterr().err, words, project_dir)


FILE_ROWS = [
    ("not YAML", _text("project: [unclosed\nseasons: {"), ["odd.yaml", "not valid YAML", "line"]),
    ("not text", _text(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"), ["odd.yaml", "not a text file"]),
    ("a YAML list", _text("- a\n- b\n"), ["odd.yaml", "mapping"]),
    ("empty", _text(""), ["odd.yaml", "mapping"]),
    ("unset variable", _text("project: ${LCMS_TEST_NEVER_SET}\n"), ["odd.yaml", "LCMS_TEST_NEVER_SET"]),
]


@pytest.mark.parametrize(("make", "words"), [r[1:] for r in FILE_ROWS], ids=[r[0] for r in FILE_ROWS])
def test_unreadable_configs(
    project_dir: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], Path], words: list[str]
) -> None:
    path = make(project_dir)
    _assert_user_error(main(["config", "validate", str(path)]), capsys.readouterr().err, words, project_dir)


def test_config_that_is_a_folder(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project_dir / "folder.yaml").mkdir()
    code = main(["config", "validate", str(project_dir / "folder.yaml")])
    _assert_user_error(code, capsys.readouterr().err, ["folder.yaml", "not a file"], project_dir)


# Command lines that do not apply (the config is valid).
RUN_ROWS: list[tuple[str, list[str], list[str]]] = [
    ("unknown season", ["features", "--season", "1999"], ["unknown season '1999'", "2023, 2024"]),
    ("unknown tile", ["features", "--tile", "32638_1_2"], ["32638_1_2", "not in this project's grid"]),
    ("unknown batch", ["features", "--batch", "b0099"], ["b0099", "b0000 ... b0001"]),
    ("subset without batch", ["features", "--subset", "32638_498_3440"], ["--subset", "--tile"]),
    ("batch on a per-season stage", ["merge_features", "--batch", "b0000"], ["--batch", "merge_features", "--tile"]),
    ("skip-existing per season", ["training", "--skip-existing"], ["--skip-existing", "training"]),
    ("unknown parameter", ["features", "--param", "before_season=2023"], ["'features'", "before_season", "none"]),
    ("parameter not NAME=VALUE", ["change_detection", "--param", "2023"], ["NAME=VALUE", "'2023'"]),
    (
        "bad parameter value",
        ["change_detection", "--param", "before_season=1999"],
        ["before season '1999'", "run parameter before_season"],
    ),
    (
        "features without download",
        ["features", "--season", "2024"],
        ["features (season 2024)", "download", "4 of 4 tile", "lcms run download --config", "--season 2024"],
    ),
    (
        "training without dataset",
        ["training", "--season", "2023"],
        ["training (season 2023)", "merged sample dataset", "lcms run merge_features"],
    ),
]


@pytest.mark.parametrize(("argv", "words"), [r[1:] for r in RUN_ROWS], ids=[r[0] for r in RUN_ROWS])
def test_run_refuses(project_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: list[str]) -> None:
    path = _project(project_dir)
    code = main(["run", argv[0], "--config", str(path), *argv[1:]])
    err = capsys.readouterr().err
    _assert_user_error(code, err, words, project_dir)
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1


def test_prediction_without_model_names_stage_season_and_command(
    project_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext

    path = _project(project_dir)
    ctx = RunContext.create(load_config(path), season="2024")
    for tile in ctx.tiles():  # features complete (empty folders with markers: enough for the check)
        with ctx.storage.writing_dir(ctx.tile_uri("features", tile.id), {"stage": "features"}):
            pass
    before = sorted(p.relative_to(project_dir) for p in (project_dir / "data").rglob("*"))
    code = main(["run", "prediction", "--config", str(path), "--season", "2024"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.count("\n") == 1, err  # one line, not one per tile
    assert "prediction (season 2024) needs the trained model of season 2024" in err
    assert f"lcms run training --config {path.resolve()} --season 2024" in err
    assert sorted(p.relative_to(project_dir) for p in (project_dir / "data").rglob("*")) == before


def test_debug_shows_the_traceback(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _project(project_dir, _set({"seasons": {"2023": {"start": "2023-02-30"}}}))
    assert main(["config", "validate", str(path), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_real_entry_point_exits_2_without_traceback(project_dir: Path) -> None:
    """The installed `lcms` command, as a user runs it; LCMS_DEBUG=1 shows the traceback."""
    path = _project(project_dir, _storage_under_a_file)
    lcms = str(Path(sys.executable).with_name("lcms"))
    proc = subprocess.run([lcms, "run", "features", "--config", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "storage.root" in proc.stderr
    proc = subprocess.run(
        [lcms, "config", "validate", str(path)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "LCMS_DEBUG": "1"},
    )
    assert proc.returncode == 2 and "Traceback" in proc.stderr
