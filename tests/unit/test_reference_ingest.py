"""Reference ingestion: crosswalk parsing, cleaning reasons, accounting, dates, bad inputs, fusion, quality."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import LineString, Point, Polygon, box

from lcms_tasks.cli import main
from lcms_tasks.config import LegendClass
from lcms_tasks.errors import ConfigError
from lcms_tasks.reference.crosswalk import Crosswalk, CrosswalkRow, normalise_code, read_crosswalk
from lcms_tasks.reference.ingest import (
    DROP_REASONS,
    IngestOptions,
    fuse_frames,
    ingest_frame,
    parse_years,
    record_year,
    resolve_overlaps,
)

REPO = Path(__file__).resolve().parents[2]
LEGEND = [LegendClass(id=1, name="wheat"), LegendClass(id=2, name="maize"), LegendClass(id=3, name="grass")]
EPSG = 32633


def _crosswalk(mapping: dict[str, str]) -> Crosswalk:
    cw = Crosswalk(Path("mem.csv"), [CrosswalkRow(k, v, None, None, i + 2) for i, (k, v) in enumerate(mapping.items())])
    cw.resolve(LEGEND)
    return cw


def _frame(codes: list[Any], geoms: list[Any], **extra: list[Any]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"code": codes, **extra}, geometry=geoms, crs=EPSG)


def _accounted(report: dict[str, Any]) -> bool:
    return bool(report["kept"] + sum(report["dropped"].values()) == report["read"])


# -- crosswalks -----------------------------------------------------------------------------------


def test_normalise_code_compares_numbers_as_text_and_keeps_leading_zeros() -> None:
    assert normalise_code(3) == normalise_code("3") == normalise_code("3.0") == normalise_code(3.0) == "3"
    assert normalise_code(" 3 ") == "3"
    assert normalise_code("005") == "005" and normalise_code("005") != normalise_code(5)
    assert normalise_code("005.0") == "005"
    assert normalise_code(None) == normalise_code(float("nan")) == normalise_code("  ") == "<null>"
    assert normalise_code("3.5") == "3.5"


def test_crosswalk_csv_with_year_and_source_scopes(tmp_path: Path) -> None:
    path = tmp_path / "cw.csv"
    path.write_text(
        "code,class,year,source,name\n"
        "005,maize,,,generic\n"
        "005,wheat,2020,,year scope\n"
        "005,grass,2020,lpis,year and source\n"
        "7,2,,,by id\n"
        "9,0,,,no label\n"
        "3.0,grass,,lpis,source only\n",
        encoding="utf-8",
    )
    cw = read_crosswalk(path)
    cw.resolve(LEGEND)
    hit = cw.lookup("005")
    assert hit is not None and (hit.id, hit.name) == (2, "maize")
    hit = cw.lookup("005", year=2020)
    assert hit is not None and hit.name == "wheat"
    hit = cw.lookup("005", year=2020, source=("lpis",))
    assert hit is not None and hit.name == "grass"
    assert cw.lookup("5") is None  # leading zeros are part of the code
    hit = cw.lookup("7")
    assert hit is not None and (hit.id, hit.name) == (2, "maize")
    hit = cw.lookup("9")
    assert hit is not None and hit.id == 0
    assert cw.lookup("3") is None  # only for source lpis
    hit = cw.lookup(normalise_code(3.0), source=("LPIS",))
    assert hit is not None and hit.name == "grass"


def test_crosswalk_semicolon_and_yaml_keep_codes_as_text(tmp_path: Path) -> None:
    semi = tmp_path / "cw_semi.csv"
    semi.write_text("Code;Class\n010;maize\n", encoding="utf-8")
    cw = read_crosswalk(semi)
    cw.resolve(LEGEND)
    assert cw.codes() == {"010"}
    yml = tmp_path / "cw.yaml"
    yml.write_text("010: maize\n3.0: wheat\n'7': 3\n", encoding="utf-8")
    cw = read_crosswalk(yml)
    cw.resolve(LEGEND)
    assert cw.codes() == {"010", "3", "7"}
    hit = cw.lookup("010")
    assert hit is not None and hit.id == 2


def test_crosswalk_errors_name_file_line_and_class(tmp_path: Path) -> None:
    bad = tmp_path / "nocols.csv"
    bad.write_text("gewascode,klasse\n1,maize\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"nocols\.csv.*no column\(s\) code, class"):
        read_crosswalk(bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("code,class\n1,maize\n2,wheat\n1,wheat\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"dup\.csv line 4: code '1'"):
        read_crosswalk(dup)
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("code,class\n1,maize\n2,barley\n3,barley\n4,99\n", encoding="utf-8")
    cw = read_crosswalk(unknown)
    with pytest.raises(ConfigError, match=r"unknown\.csv.*'99' \(line 5\).*'barley' \(line 3, 4\)"):
        cw.resolve(LEGEND, legend_name="crop_type")
    with pytest.raises(ConfigError, match="does not exist"):
        read_crosswalk(tmp_path / "absent.csv")


def test_crosswalk_without_legend_assigns_ids_by_name() -> None:
    cw = Crosswalk(Path("x.csv"), [CrosswalkRow("a", "zeta", None, None, 2), CrosswalkRow("b", "alpha", None, None, 3)])
    cw.resolve(None)
    a, b = cw.lookup("a"), cw.lookup("b")
    assert a is not None and b is not None and (b.id, a.id) == (1, 2)


# -- dates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "years"),
    [
        ("2016-2017", (2016, 2017)),
        ("2016/2017", (2016, 2017)),
        ("2018", (2018, 2018)),
        ("2018-08-11", (2018, 2018)),
        ("2018-08", (2018, 2018)),
        ("11.08.2018", (2018, 2018)),
        ("2018-08-11T10:00:00", (2018, 2018)),
        (2018, (2018, 2018)),
        (2018.0, (2018, 2018)),
        ("2018.0", (2018, 2018)),
        ("2018-02-30", None),
        ("2017-2016", None),
        ("summer", None),
        ("", None),
        (None, None),
        (float("nan"), None),
    ],
)
def test_parse_years_mixed_formats(value: Any, years: tuple[int, int] | None) -> None:
    assert parse_years(value) == years


def test_record_year_is_last_year_of_a_range_and_handles_timestamps() -> None:
    import pandas as pd

    assert record_year("2016-2017") == 2017
    assert record_year(pd.Timestamp("2019-05-01")) == 2019
    assert record_year(pd.NaT) is None


# -- cleaning reasons -----------------------------------------------------------------------------


def test_every_cleaning_reason_and_repair() -> None:
    bowtie = Polygon([(0, 0), (100, 100), (100, 0), (0, 100), (0, 0)])  # self-intersecting: repairable
    codes = ["1", None, "42", "9", "1", "1", "1", "1", "1", "2", "2", "3", "1", "1", "2"]
    geoms = [
        box(0, 0, 100, 100),  # kept
        box(200, 0, 300, 100),  # missing_code
        box(400, 0, 500, 100),  # unknown_code
        box(600, 0, 700, 100),  # excluded_code (class 0)
        Point(5, 5),  # not_polygon
        LineString([(0, 0), (1, 1)]),  # not_polygon
        None,  # invalid_geometry
        bowtie.buffer(0).difference(bowtie.buffer(0)),  # empty -> invalid_geometry
        box(0, 200, 2, 202),  # sliver (4 m²)
        box(1000, 0, 1100, 100),  # kept ...
        box(1000, 0, 1100, 100),  # ... and its exact duplicate
        box(1000, 0, 1100, 100),  # same geometry, other class: both lose -> overlap_conflict (with the one above)
        Polygon([(0, 300), (100, 400), (100, 300), (0, 400), (0, 300)]),  # repaired
        box(2000, 0, 2200, 200),  # large, wins the overlap
        box(2150, 0, 2210, 60),  # small, mostly inside the large one -> overlap_conflict
    ]
    frame = _frame(codes, geoms)
    result = ingest_frame(frame, _crosswalk({"1": "wheat", "2": "maize", "3": "grass", "9": "0"}), _opts(min_area=10))
    r = result.report
    assert _accounted(r) and r["read"] == len(codes)
    dropped = {k: v for k, v in r["dropped"].items() if v}
    assert dropped == {
        "missing_code": 1,
        "unknown_code": 1,
        "excluded_code": 1,
        "not_polygon": 2,
        "invalid_geometry": 2,
        "sliver": 1,
        "duplicate": 1,
        "overlap_conflict": 3,
    }
    assert r["unknown_codes"] == {"42": 1} and r["excluded_codes"] == {"9": 1}
    assert r["repaired"] == 1 and r["kept"] == 3
    assert sorted(result.frame["record_id"]) == [0, 12, 13]
    assert result.frame.geometry.is_valid.all()
    assert set(result.frame.geom_type) == {"MultiPolygon"}
    assert list(result.frame.columns) == [
        "class_id",
        "class_name",
        "source_code",
        "source_type",
        "year",
        "priority",
        "source_file",
        "record_id",
        "geometry",
    ]


def _opts(**kw: Any) -> IngestOptions:
    return IngestOptions(
        code_columns=kw.get("columns", ("code",)),
        source_type="lpis",
        source_file="mem.gpkg",
        year=kw.get("year"),
        date_column=kw.get("date_column"),
        min_area_m2=kw.get("min_area", 0.0),
    )


def test_small_overlap_trims_the_smaller_polygon() -> None:
    frame = _frame(["1", "2"], [box(0, 0, 100, 100), box(80, 0, 160, 100)])  # 20 % of the smaller overlaps
    result = ingest_frame(frame, _crosswalk({"1": "wheat", "2": "maize"}), _opts())
    assert result.report["kept"] == 2 and result.report["trimmed"] == 1
    small = result.frame[result.frame["class_name"] == "maize"].geometry.iloc[0]
    assert small.area == pytest.approx(60 * 100)
    # Same class: overlaps are not a conflict, nothing trimmed.
    same = ingest_frame(
        _frame(["1", "1"], [box(0, 0, 100, 100), box(80, 0, 160, 100)]), _crosswalk({"1": "wheat"}), _opts()
    )
    assert same.report["kept"] == 2 and same.report["trimmed"] == 0


def test_years_from_date_column_and_filter() -> None:
    frame = _frame(
        ["1", "1", "1", "1", "1"],
        [box(i * 200, 0, i * 200 + 100, 100) for i in range(5)],
        DATE=["2016-2017", "2018", "2018-08-11", "not a date", None],
    )
    cw = _crosswalk({"1": "wheat"})
    all_years = ingest_frame(frame, cw, _opts(date_column="DATE"))
    assert all_years.report["dropped"]["invalid_date"] == 2
    assert sorted(all_years.frame["year"]) == [2017, 2018, 2018]
    only_2018 = ingest_frame(frame, cw, _opts(date_column="DATE", year=2018))
    assert only_2018.report["kept"] == 2 and only_2018.report["dropped"]["other_year"] == 1
    labelled = ingest_frame(frame, cw, _opts(year=2020))  # no date column: --year labels every record
    assert set(labelled.frame["year"]) == {2020} and labelled.report["kept"] == 5


def test_several_code_columns_osm_style() -> None:
    frame = _frame(
        [None, None, None],
        [box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)],
        landuse=["farmland", None, None],
        natural=[None, "water", None],
    )
    cw = _crosswalk({"landuse=farmland": "wheat", "natural=water": "grass"})
    result = ingest_frame(frame, cw, _opts(columns=("landuse", "natural")))
    assert list(result.frame["source_code"]) == ["landuse=farmland", "natural=water"]
    assert result.report["dropped"]["missing_code"] == 1


# -- the accounting invariant ---------------------------------------------------------------------

_codes = st.sampled_from(["1", "2", "3", "9", "77", None, 1, 2.0, "", "3.0"])
_shape = st.tuples(
    st.integers(0, 8),
    st.integers(0, 8),
    st.integers(1, 4),
    st.integers(1, 4),
    st.sampled_from(["box", "bowtie", "point", "line", "none", "empty", "tiny"]),
)


def _geometry(x: int, y: int, w: int, h: int, kind: str) -> Any:
    x0, y0, s = x * 50.0, y * 50.0, 50.0
    if kind == "box":
        return box(x0, y0, x0 + w * s, y0 + h * s)
    if kind == "bowtie":
        return Polygon([(x0, y0), (x0 + w * s, y0 + h * s), (x0 + w * s, y0), (x0, y0 + h * s), (x0, y0)])
    if kind == "point":
        return Point(x0, y0)
    if kind == "line":
        return LineString([(x0, y0), (x0 + w * s, y0)])
    if kind == "empty":
        return Polygon()
    if kind == "tiny":
        return box(x0, y0, x0 + 1, y0 + 1)
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(st.tuples(_codes, _shape, st.sampled_from(["2019", "2020", "2019-2020", "x", None])), max_size=25),
    year=st.sampled_from([None, 2020]),
    min_area=st.sampled_from([0.0, 10.0, 5000.0]),
)
def test_accounting_invariant_on_random_inputs(records: list[Any], year: int | None, min_area: float) -> None:
    frame = _frame(
        [r[0] for r in records] or [],
        [_geometry(*r[1]) for r in records],
        DATE=[r[2] for r in records],
    )
    cw = _crosswalk({"1": "wheat", "2": "maize", "3": "grass", "9": "0"})
    result = ingest_frame(frame, cw, _opts(date_column="DATE", year=year, min_area=min_area))
    r = result.report
    assert r["read"] == len(records)
    assert r["kept"] + sum(r["dropped"].values()) == r["read"]
    assert set(r["dropped"]) == set(DROP_REASONS)
    assert sum(r["unknown_codes"].values()) == r["dropped"]["unknown_code"]
    assert len(result.frame) == r["kept"] == sum(c["count"] for c in r["classes"])
    assert result.frame.geometry.is_valid.all() and (result.frame.geometry.area > 0).all()
    if min_area:
        assert (result.frame.geometry.area >= min_area * 0.5 - 1e-6).all()  # trimmed ones keep >= half


def test_resolve_overlaps_priorities() -> None:
    big, small = box(0, 0, 100, 100), box(50, 0, 150, 100)
    res = resolve_overlaps([big, small], [1, 2], [(2.0,), (1.0,)])
    assert res.status == ["kept", "trimmed"] and res.geometries[1].area == pytest.approx(5000)
    res = resolve_overlaps([big, box(10, 10, 90, 90)], [1, 2], [(2.0,), (1.0,)])
    assert res.status == ["kept", "overridden"]
    res = resolve_overlaps([big, box(10, 10, 50, 50)], [1, 2], [(1.0,), (1.0,)])
    assert res.status == ["trimmed", "overlap_conflict"]  # equal rank: both lose the overlap
    assert res.geometries[0].area == pytest.approx(10000 - 1600)


# -- fusion ---------------------------------------------------------------------------------------


def _ingested(classes: list[tuple[int, str]], geoms: list[Any], priority: int, name: str) -> gpd.GeoDataFrame:
    n = len(geoms)
    return gpd.GeoDataFrame(
        {
            "class_id": [c[0] for c in classes],
            "class_name": [c[1] for c in classes],
            "source_code": ["x"] * n,
            "source_type": ["manual"] * n,
            "year": [2020] * n,
            "priority": [priority] * n,
            "source_file": [name] * n,
            "record_id": list(range(n)),
        },
        geometry=geoms,
        crs=EPSG,
    )


def test_fusion_priorities_duplicates_and_ties() -> None:
    high = _ingested([(1, "wheat"), (2, "maize")], [box(0, 0, 100, 100), box(500, 0, 600, 100)], 40, "manual.gpkg")
    low = _ingested(
        [(2, "maize"), (3, "grass"), (2, "maize")],
        [box(10, 10, 90, 90), box(80, 0, 180, 100), box(500, 0, 600, 100)],
        30,
        "lpis.gpkg",
    )
    result = fuse_frames([("manual.gpkg", high), ("lpis.gpkg", low)])
    r = result.report
    assert r["read"] == 5 and _accounted(r)
    assert r["dropped"]["overridden"] == 1 and r["dropped"]["duplicate"] == 1 and r["trimmed"] == 1
    assert [i["kept"] for i in r["inputs"]] == [2, 1]
    assert all(_accounted(i) for i in r["inputs"])
    grass = result.frame[result.frame["class_name"] == "grass"].geometry.iloc[0]
    assert grass.area == pytest.approx(80 * 100)  # lost the overlap with the higher-priority wheat
    # Equal priority, conflicting classes on the same ground: both lose it, both dropped.
    a = _ingested([(1, "wheat")], [box(0, 0, 100, 100)], 30, "a.gpkg")
    b = _ingested([(2, "maize")], [box(0, 0, 100, 100)], 30, "b.gpkg")
    tie = fuse_frames([("a.gpkg", a), ("b.gpkg", b)])
    assert tie.report["kept"] == 0 and tie.report["dropped"]["overlap_conflict"] == 2
    # The same class id with two names: inputs ingested against different legends.
    c = _ingested([(1, "barley")], [box(0, 0, 10, 10)], 10, "c.gpkg")
    with pytest.raises(ConfigError, match="class id 1"):
        fuse_frames([("a.gpkg", a), ("c.gpkg", c)])


# -- the CLI, file formats and bad inputs ------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    frame = _frame(["1", "2", "9"], [box(0, 0, 100, 100), box(200, 0, 300, 100), box(400, 0, 500, 100)])
    frame["crop"] = frame["code"]
    gpkg = tmp_path / "parcels.gpkg"
    frame.to_file(gpkg, driver="GPKG")
    cw = tmp_path / "cw.csv"
    cw.write_text("code,class\n1,wheat\n2,maize\n9,0\n", encoding="utf-8")
    cfg = tmp_path / "project.yaml"
    demo = (REPO / "configs" / "demo.yaml").read_text()
    cfg.write_text(demo.replace("demo_aoi.geojson", str(REPO / "configs" / "demo_aoi.geojson")), encoding="utf-8")
    return {"gpkg": gpkg, "cw": cw, "cfg": cfg, "frame": gpkg}


def _run(source: Path | str, cw: Path, tmp_path: Path, *extra: str, column: str = "code") -> tuple[int, Path, Path]:
    out, rep = tmp_path / "out" / "ref.gpkg", tmp_path / "out" / "ref.json"
    code = main(["reference", "ingest", str(source), "--crosswalk", str(cw), "--code-column", column,
                 "--out", str(out), "--report", str(rep), *extra])  # fmt: skip
    return code, out, rep


def test_cli_ingest_writes_gpkg_and_report(files: dict[str, Path], tmp_path: Path) -> None:
    cw = tmp_path / "cw_lc.csv"
    cw.write_text("code,class\n1,cropland\n2,forest\n9,0\n", encoding="utf-8")
    code, out, rep = _run(files["gpkg"], cw, tmp_path, "--config", str(files["cfg"]), "--to-crs", "EPSG:4326")
    assert code == 0
    report = json.loads(rep.read_text())
    assert (report["read"], report["kept"], report["dropped"]["excluded_code"]) == (3, 2, 1)
    written = gpd.read_file(out)
    assert written.crs.to_epsg() == 4326 and sorted(written["class_name"]) == ["cropland", "forest"]
    assert sorted(written["record_id"]) == [0, 1] and set(written["priority"]) == {40}  # manual default
    assert not list(out.parent.glob(".*"))  # no temporary files left


def test_cli_reads_zip_shapefile_geojson_and_osm(files: dict[str, Path], tmp_path: Path) -> None:
    frame = gpd.read_file(files["gpkg"])
    shp_dir = tmp_path / "shp"
    shp_dir.mkdir()
    frame.to_file(shp_dir / "parcels.shp")
    archive = tmp_path / "parcels.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in shp_dir.iterdir():
            zf.write(p, p.name)
    assert _run(archive, files["cw"], tmp_path / "z")[0] == 0
    geojson = tmp_path / "parcels.geojson"
    frame.to_crs(4326).to_file(geojson, driver="GeoJSON")
    code, _, rep = _run(geojson, files["cw"], tmp_path / "g", "--min-area-m2", "50")
    assert code == 0 and json.loads(rep.read_text())["kept"] == 2
    osm = tmp_path / "farm.osm"
    nodes = "".join(
        f'<node id="{i}" lat="{45 + dy * 0.001}" lon="{15 + dx * 0.001}" version="1"/>'
        for i, (dx, dy) in enumerate([(0, 0), (1, 0), (1, 1), (0, 1)], start=1)
    )
    way = '<way id="10" version="1"><nd ref="1"/><nd ref="2"/><nd ref="3"/><nd ref="4"/><nd ref="1"/>'
    osm.write_text(
        f'<?xml version="1.0"?><osm version="0.6">{nodes}{way}<tag k="landuse" v="farmland"/></way></osm>',
        encoding="utf-8",
    )
    osm_cw = tmp_path / "osm.csv"
    osm_cw.write_text("code,class\nlanduse=farmland,wheat\nnatural=water,grass\n", encoding="utf-8")
    code, out, rep = _run(osm, osm_cw, tmp_path / "o", column="landuse,natural")
    report = json.loads(rep.read_text())
    assert code == 0 and report["kept"] == 1 and report["source_type"] == "osm"
    assert gpd.read_file(out)["source_code"].tolist() == ["landuse=farmland"]


def _bad_cases(files: dict[str, Path], tmp_path: Path) -> list[tuple[str, list[str], str]]:
    empty = tmp_path / "empty.geojson"
    empty.write_bytes(b"")
    no_features = tmp_path / "none.geojson"
    no_features.write_text('{"type": "FeatureCollection", "features": []}', encoding="utf-8")
    corrupt = tmp_path / "corrupt.gpkg"
    corrupt.write_bytes(b"this is not a geopackage" * 10)
    shp = tmp_path / "nocrs.shp"
    gpd.read_file(files["gpkg"]).to_file(shp)
    shp.with_suffix(".prj").unlink()
    bad_cw = tmp_path / "bad_cw.csv"
    bad_cw.write_text("value,label\n1,wheat\n", encoding="utf-8")
    unknown_cw = tmp_path / "unknown_cw.csv"
    unknown_cw.write_text("code,class\n1,cropland\n2,rice paddy\n", encoding="utf-8")
    g, cw = str(files["gpkg"]), str(files["cw"])
    return [
        ("missing", [str(tmp_path / "absent.gpkg"), cw, "code"], r"absent\.gpkg does not exist"),
        ("empty", [str(empty), cw, "code"], r"empty\.geojson is empty"),
        ("no records", [str(no_features), cw, "code"], r"none\.geojson has no records"),
        ("corrupt", [str(corrupt), cw, "code"], r"cannot read reference file .*corrupt\.gpkg"),
        ("no crs", [str(shp), cw, "code"], r"nocrs\.shp has no CRS"),
        ("column", [g, cw, "SNAR_CODE"], r"parcels\.gpkg has no code column 'SNAR_CODE'; available columns: .*'crop'"),
        ("crosswalk columns", [g, str(bad_cw), "code"], r"bad_cw\.csv has no column\(s\) code, class"),
        ("legend", [g, str(unknown_cw), "code", "--config", str(files["cfg"])], r"unknown_cw\.csv.*'rice paddy'"),
    ]


def test_bad_inputs_exit_2_name_the_problem_and_write_nothing(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for label, (source, cw, column, *extra), pattern in _bad_cases(files, tmp_path):
        code, out, _rep = _run(source, Path(cw), tmp_path / label.replace(" ", "_"), *extra, column=column)
        err = capsys.readouterr().err
        assert code == 2, label
        assert re.search(pattern, err), f"{label}: {err}"
        assert not out.parent.exists() or not any(out.parent.iterdir()), label


def test_cli_fuse_and_quality(files: dict[str, Path], tmp_path: Path) -> None:
    demo_aoi = gpd.read_file(REPO / "configs" / "demo_aoi.geojson")
    x0, y0, _, _ = demo_aoi.total_bounds
    manual = _ingested([(1, "cropland")], [box(x0 + 100, y0 + 100, x0 + 600, y0 + 600)], 40, "m")
    lpis = _ingested(
        [(3, "grassland"), (1, "cropland")],
        [box(x0 + 500, y0 + 100, x0 + 900, y0 + 600), box(x0 + 3000, y0 + 3000, x0 + 3400, y0 + 3300)],
        30,
        "l",
    )
    for frame, name in ((manual, "m.gpkg"), (lpis, "l.gpkg")):
        frame.set_crs(32638, allow_override=True).to_file(tmp_path / name, driver="GPKG", layer="reference")
    fused, rep = tmp_path / "fused.gpkg", tmp_path / "fused.json"
    code = main(
        ["reference", "fuse", str(fused), str(tmp_path / "m.gpkg"), str(tmp_path / "l.gpkg"), "--report", str(rep)]
    )
    assert code == 0
    report = json.loads(rep.read_text())
    assert report["read"] == 3 and report["kept"] == 3 and report["trimmed"] == 1
    prev = tmp_path / "report.json"
    prev.write_text(
        json.dumps(
            {
                "total": {
                    "class_areas": [{"id": 0, "area_km2": 9.0}, {"id": 1, "area_km2": 1.0}, {"id": 2, "area_km2": 3.0}]
                }
            }
        ),
        encoding="utf-8",
    )
    out_dir = tmp_path / "quality"
    args = ["reference", "quality", str(fused), "--config", str(files["cfg"]), "--out-dir", str(out_dir)]
    assert main([*args, "--previous-map", str(prev)]) == 0
    q = json.loads((out_dir / "quality.json").read_text())
    for name in ("quality.html", "class_areas.png", "density.png"):
        assert (out_dir / name).stat().st_size > 0
    assert q["n_polygons"] == 3 == sum(c["count"] for c in q["classes"])
    assert q["under_represented"] == ["forest"]
    assert 0 < q["spread"]["tiles_with_reference"] <= 2
    total = sum(z["area_m2"] for z in [*q["regions"], q["outside_aoi"]])
    assert total == pytest.approx(q["area_m2"], rel=1e-6)
    for t in q["tiles"]:
        assert sum(t["classes"].values()) == pytest.approx(t["area_m2"])
    assert sum(t["area_m2"] for t in q["tiles"]) == pytest.approx(q["area_m2"], rel=1e-6)
    html = (out_dir / "quality.html").read_text()
    assert "density.png" in html and "<script" not in html


def test_quality_html_escapes_names(files: dict[str, Path], tmp_path: Path) -> None:
    from lcms_tasks.reference.quality import render_html

    report = {
        "source": "<b>x</b>",
        "project": "p",
        "legend": "land_cover",
        "n_polygons": 0,
        "area_m2": 0.0,
        "spread": {"tiles_with_reference": 0, "n_tiles": 1, "share_of_tiles_with_reference": 0.0},
        "classes": [{"class_id": 1, "class_name": "<script>", "count": 0, "area_m2": 0.0}],
        "tiles": [],
        "regions": [],
        "outside_aoi": {"name": "outside AOI", "n_polygons": 0, "area_m2": 0.0, "classes": {}},
        "years": {},
        "class_names": {"1": "<script>"},
    }
    page = render_html(report, {"class_areas": "a.png", "density": "d.png"})
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;" in page


def test_geometries_stay_in_source_crs_by_default() -> None:
    frame = gpd.GeoDataFrame({"code": ["1"]}, geometry=[box(15.0, 45.0, 15.001, 45.001)], crs=4326)
    result = ingest_frame(frame, _crosswalk({"1": "wheat"}), _opts(min_area=1000))
    assert result.frame.crs.to_epsg() == 4326 and result.report["kept"] == 1  # ~8,700 m², measured in UTM
    assert result.report["classes"][0]["area_m2"] == pytest.approx(8700, rel=0.05)
    assert shapely.equals(result.frame.geometry.iloc[0], shapely.MultiPolygon([box(15.0, 45.0, 15.001, 45.001)]))
    assert np.isfinite(result.report["kept_area_m2"])


def test_geoparquet_reads_in_its_crs_and_corrupt_files_fail_clearly(tmp_path: Path) -> None:
    from lcms_tasks.reference.ingest import read_vector

    frame = gpd.GeoDataFrame(
        {"code": ["1", "2"]},
        geometry=[box(500000, 5000000, 500100, 5000100), box(500200, 5000000, 500300, 5000100)],
        crs=32633,
    )
    parquet = tmp_path / "parcels.parquet"
    frame.to_parquet(parquet)
    read = read_vector(parquet)
    assert read.crs.to_epsg() == 32633 and list(read["code"]) == ["1", "2"]
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(ConfigError, match=r"broken\.parquet"):
        read_vector(broken)
