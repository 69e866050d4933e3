"""Config-time checks of add_reference file sources (:func:`lcms_tasks.reference.checks.check_file_sources`).

A table of bad sources: each row builds one broken source and asserts that the one line reported
for it names the config field, the file and the problem. Also: good sources (a GeoPackage layer,
a zipped Shapefile, a chain whose first step's targets are codes) report nothing, ``{season}``
paths are checked for the seasons a source serves, and no feature is read and nothing written.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
import yaml
from shapely.geometry import box

from lcms_tasks.config import ProjectConfig, load_config
from lcms_tasks.reference.checks import check_file_sources

F = "stages.add_reference.sources[0]"


@pytest.fixture
def folder(config_path: Path) -> Path:
    """The project folder with good inputs: a GeoPackage (layer 'parcels'), a zipped Shapefile, crosswalks."""
    root = config_path.parent
    frame = gpd.GeoDataFrame(
        {"crop": ["110", "109"], "area": [1.0, 2.0]},
        geometry=[box(0, 0, 100, 100), box(200, 0, 300, 100)],
        crs=32638,
    )
    frame.to_file(root / "lpis_2023.gpkg", driver="GPKG", layer="parcels")
    (root / "shp").mkdir()
    frame.to_file(root / "shp" / "fields.shp")
    with zipfile.ZipFile(root / "fields.zip", "w") as zf:
        for p in (root / "shp").iterdir():
            zf.write(p, p.name)
    nocrs = root / "nocrs"
    nocrs.mkdir()
    frame.to_file(nocrs / "nocrs.shp")
    (nocrs / "nocrs.prj").unlink()
    (root / "not_vector.gpkg").write_text("this is not a GeoPackage\n" * 20)
    (root / "empty.gpkg").write_bytes(b"")
    (root / "cw.csv").write_text("code,class\n110,cropland\n109,0\n")
    (root / "cw_bad_class.csv").write_text("code,class\n110,cropland\n109,orchard\n")
    (root / "cw_no_columns.csv").write_text("kod,razred\n110,cropland\n")
    (root / "national.csv").write_text(
        "original_code,original_name,HCAT3_code\n110,WINTERGERSTE,3301010401\n,,3301070000\n109,SILOMAIS,3301090400\n"
    )
    (root / "hcat.csv").write_text("code,class\n3301010401,cropland\n3301090400,grassland\n3301070000,0\n")
    (root / "hcat_bad.csv").write_text("code,class\n3301010401,cropland\n3301090400,maize field\n")
    return root


def _config(config_path: Path, *sources: dict[str, Any]) -> ProjectConfig:
    data = yaml.safe_load(config_path.read_text())
    data["stages"] = {"add_reference": {"sources": list(sources)}}
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(config_path)


def _problems(config_path: Path, *sources: dict[str, Any], seasons: tuple[str, ...] = ("2023",)) -> list[str]:
    cfg = _config(config_path, *sources)
    return check_file_sources(cfg.stages.add_reference, cfg, list(seasons))


def _file(path: str = "lpis_{season}.gpkg", **kw: Any) -> dict[str, Any]:
    return {"type": "file", "path": path, "layer": "parcels", "class_column": "crop", "crosswalk_file": "cw.csv", **kw}


def _chain(*steps: Any, **kw: Any) -> dict[str, Any]:
    source = _file(**kw)
    del source["crosswalk_file"]
    return {**source, "crosswalk_chain": list(steps)}


NATIONAL_STEP = {"path": "national.csv", "code_column": "original_code", "target_column": "HCAT3_code"}

# (label, source, the field the line must start with, fragments it must contain)
BAD: list[tuple[str, Callable[[], dict[str, Any]], str, tuple[str, ...]]] = [
    ("missing file", lambda: _file("absent.gpkg"), f"{F}.path", ("absent.gpkg", "does not exist")),
    (
        "missing season file",
        lambda: _file(),
        f"{F}.path",
        ("lpis_2024.gpkg", "(season 2024)", "does not exist"),
    ),
    ("empty file", lambda: _file("empty.gpkg", layer=None), f"{F}.path", ("empty.gpkg", "empty (0 bytes)")),
    (
        "not a vector file",
        lambda: _file("not_vector.gpkg", layer=None),
        f"{F}.path",
        ("not_vector.gpkg", "not a readable vector file"),
    ),
    (
        "geoparquet",
        lambda: _file("parcels.parquet", layer=None),
        f"{F}.path",
        ("parcels.parquet", "GeoParquet"),
    ),
    (
        "missing layer",
        lambda: _file(layer="fields"),
        f"{F}.layer",
        ("lpis_2023.gpkg", "no layer 'fields'", "['parcels']"),
    ),
    ("no crs", lambda: _file("nocrs/nocrs.shp", layer=None), f"{F}.path", ("nocrs.shp", "no CRS")),
    (
        "class column",
        lambda: _file(class_column="SNAR_CODE"),
        f"{F}.class_column",
        ("lpis_2023.gpkg", "no column 'SNAR_CODE'", "'crop', 'area'"),
    ),
    (
        "crosswalk file missing",
        lambda: _file(crosswalk_file="cw_{season}.csv"),
        f"{F}.crosswalk_file",
        ("cw_2023.csv", "(season 2023)", "does not exist"),
    ),
    (
        "crosswalk file columns",
        lambda: _file(crosswalk_file="cw_no_columns.csv"),
        f"{F}.crosswalk_file",
        ("cw_no_columns.csv", "'code' and 'class'", "'kod', 'razred'"),
    ),
    (
        "crosswalk file class",
        lambda: _file(crosswalk_file="cw_bad_class.csv"),
        f"{F}.crosswalk_file",
        ("cw_bad_class.csv", "'orchard' (code 109)", "land_cover legend"),
    ),
    (
        "inline crosswalk class",
        lambda: {**_file(crosswalk_file=None), "crosswalk": {"110": "cropland", "109": "vineyard"}},
        f"{F}.crosswalk",
        ("inline crosswalk", "'vineyard' (code 109)"),
    ),
    (
        "chain step missing",
        lambda: _chain({**NATIONAL_STEP, "path": "national_{season}.csv"}, "hcat.csv"),
        f"{F}.crosswalk_chain[0].path",
        ("national_2023.csv", "does not exist"),
    ),
    (
        "chain code column",
        lambda: _chain({**NATIONAL_STEP, "code_column": "SNAR_CODE"}, "hcat.csv"),
        f"{F}.crosswalk_chain[0].code_column",
        ("national.csv", "no column 'SNAR_CODE'", "'original_code', 'original_name', 'HCAT3_code'"),
    ),
    (
        "chain target column",
        lambda: _chain({**NATIONAL_STEP, "target_column": "HCAT2_code"}, "hcat.csv"),
        f"{F}.crosswalk_chain[0].target_column",
        ("national.csv", "no column 'HCAT2_code'"),
    ),
    (
        "chain last step class",
        lambda: _chain(NATIONAL_STEP, "hcat_bad.csv"),
        f"{F}.crosswalk_chain[1].path",
        ("hcat_bad.csv", "'maize field' (line 3)", "land_cover legend"),
    ),
    (
        "chain last step columns",
        lambda: _chain(NATIONAL_STEP, {"path": "national.csv", "target_column": "HCAT3_code"}),
        f"{F}.crosswalk_chain[1].code_column",
        ("national.csv", "no column 'code'"),
    ),
]


@pytest.mark.parametrize(("label", "make", "field", "fragments"), BAD, ids=[row[0] for row in BAD])
def test_each_bad_source_is_named(
    folder: Path,
    config_path: Path,
    label: str,
    make: Callable[[], dict[str, Any]],
    field: str,
    fragments: tuple[str, ...],
) -> None:
    (folder / "parcels.parquet").write_bytes(b"PAR1")
    problems = _problems(config_path, make(), seasons=("2023", "2024") if label == "missing season file" else ("2023",))
    assert len(problems) == 1, problems
    line = problems[0]
    assert line.startswith(f"{field}: "), line
    for fragment in fragments:
        assert fragment in line, f"{label}: {fragment!r} not in {line!r}"
    if "inline" not in label:
        assert str(folder) in line  # the file by its resolved path


def test_good_sources_report_nothing(folder: Path, config_path: Path) -> None:
    sources = [
        _file(),
        _file("fields.zip", layer=None),
        _chain(NATIONAL_STEP, "hcat.csv"),  # the first step's targets are HCAT codes, not classes: fine
        {**_file(crosswalk_file=None), "crosswalk": {"110": "cropland", 109: 0}},
        {"type": "synthetic_truth"},
    ]
    assert _problems(config_path, *sources) == []


def test_season_paths_follow_the_seasons_a_source_serves(folder: Path, config_path: Path) -> None:
    both = _problems(config_path, _file(), seasons=("2023", "2024"))
    assert len(both) == 1 and "lpis_2024.gpkg (season 2024)" in both[0]
    assert _problems(config_path, _file(seasons=["2023"]), seasons=("2023", "2024")) == []
    assert _problems(config_path, _file(), seasons=()) == []  # no season asked: nothing to open


def test_several_problems_of_several_sources(folder: Path, config_path: Path) -> None:
    problems = _problems(
        config_path,
        _file(),
        _file(class_column="SNAR_CODE", crosswalk_file="cw_bad_class.csv"),
        _chain({**NATIONAL_STEP, "path": "absent.csv"}, "hcat_bad.csv"),
    )
    assert [p.split(": ")[0] for p in problems] == [
        "stages.add_reference.sources[1].class_column",
        "stages.add_reference.sources[1].crosswalk_file",
        "stages.add_reference.sources[2].crosswalk_chain[0].path",
        "stages.add_reference.sources[2].crosswalk_chain[1].path",
    ]


def test_checks_read_no_features_and_write_nothing(
    folder: Path, config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fiona

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("check_file_sources must not read features")

    cfg = _config(
        config_path, _file(class_column="nope"), _file("fields.zip", layer=None), _chain(NATIONAL_STEP, "hcat.csv")
    )
    monkeypatch.setattr(gpd, "read_file", refuse)
    monkeypatch.setattr(gpd, "read_parquet", refuse)
    monkeypatch.setattr(fiona.Collection, "__iter__", refuse)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    problems = check_file_sources(cfg.stages.add_reference, cfg, ["2023", "2024"])
    # The first source's class column; the 2024 file of the first and the third source (lpis_{season}.gpkg).
    assert [p.split(": ")[0] for p in problems] == [
        f"{F}.class_column",
        f"{F}.path",
        "stages.add_reference.sources[2].path",
    ]
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
