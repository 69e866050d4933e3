"""Reference ingestion of the real data sets (../shared/data, see its README) through ``lcms reference ingest``.

* Three national LPIS samples of 100 parcels each (Austria INVEKOS SNAR_CODE via the EuroCrops HCAT
  table, Netherlands BRP gewascode via a hand-made crosswalk, Slovenia EuroCrops EC_hcat_c) to the
  crop legend of ``configs/crop_legend_example.yaml``: every parcel accounted for.
* Azerbaijan land cover polygons (LULC_ID and LULC names) to the demo land cover legend, and the
  crop survey (CROP_TYPE, mixed-format DATE) to the demo crop legend, filtered to one year.
* The quality report of the Azerbaijan reference over a project on its AOI (three regions).

Expected figures are recomputed from the data independently (pandas/shapely), not hard-coded.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
import shapely
import yaml

from lcms_tasks.cli import main
from lcms_tasks.config import load_config
from lcms_tasks.reference.crosswalk import derive_crosswalk_rows, normalise_code, read_crosswalk

pytestmark = pytest.mark.realdata

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = REPO.parent / "shared" / "data"
LPIS = DATA_DIR / "lpis_samples"
AZE = DATA_DIR / "azerbaijan_reference"
CROSSWALKS = REPO / "configs" / "crosswalks"
CROP_CONFIG = REPO / "configs" / "crop_legend_example.yaml"


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"real data {path} is absent (expected next to the repository as shared/data)")


def _ingest(tmp_path: Path, source: Path, crosswalk: str, column: str, *extra: str) -> tuple[dict[str, Any], Path]:
    _need(source)
    out, rep = tmp_path / f"{source.stem}.gpkg", tmp_path / f"{source.stem}.json"
    args = ["reference", "ingest", str(source), "--crosswalk", str(CROSSWALKS / crosswalk), "--code-column", column]
    assert main([*args, "--out", str(out), "--report", str(rep), *extra]) == 0
    report = json.loads(rep.read_text())
    assert report["kept"] + sum(report["dropped"].values()) == report["read"]
    frame = gpd.read_file(out)
    assert len(frame) == report["kept"] and frame.geometry.is_valid.all()
    return report, out


def _record(record_property: Callable[[str, object], None], name: str, report: dict[str, Any]) -> None:
    figures = {
        "read": report["read"],
        "kept": report["kept"],
        "dropped": {k: v for k, v in report["dropped"].items() if v},
        "repaired": report["repaired"],
        "trimmed": report["trimmed"],
    }
    print(f"\n{name}: {figures}")
    record_property(name, json.dumps(figures))


def _crop_names() -> dict[int, str]:
    return {c.id: c.name for c in load_config(CROP_CONFIG, check_files=False).legend("crop_type")}


def _hcat_class() -> dict[str, str]:
    with open(CROSSWALKS / "hcat3_to_crop_legend.csv", encoding="utf-8") as fh:
        return {r["code"]: r["class"] for r in csv.DictReader(fh)}


def test_austria_invekos_via_hcat(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    source = LPIS / "austria_invekos_2025.gpkg"
    report, out = _ingest(
        tmp_path, source, "austria_invekos_snar.csv", "SNAR_CODE",
        "--config", str(CROP_CONFIG), "--legend", "crop_type", "--year", "2025", "--source-type", "lpis",
    )  # fmt: skip
    _record(record_property, "austria_invekos_2025", report)
    raw = gpd.read_file(source)
    assert report["read"] == len(raw) == 100
    # Independent expectation: national code -> HCAT3 (EuroCrops table) -> legend class.
    with open(LPIS / "austria_crop_codes_hcat.csv", encoding="utf-8") as fh:
        hcat_of = {r["original_code"]: r["HCAT3_code"] for r in csv.DictReader(fh) if r["original_code"]}
    hcat_class = _hcat_class()
    expected = [hcat_class.get(hcat_of.get(str(c), ""), "0") for c in raw["SNAR_CODE"]]
    assert report["dropped"]["excluded_code"] == sum(e == "0" for e in expected)
    assert report["unknown_codes"] == {}
    written = gpd.read_file(out)
    assert list(written["class_name"]) == [expected[i] for i in written["record_id"]]
    assert set(written["year"]) == {2025} and written.crs.equals(raw.crs)


def test_shipped_austrian_crosswalk_is_the_hcat_derivation() -> None:
    _need(LPIS / "austria_crop_codes_hcat.csv")
    cfg = load_config(CROP_CONFIG, check_files=False)
    hcat = read_crosswalk(CROSSWALKS / "hcat3_to_crop_legend.csv")
    hcat.resolve(cfg.legend("crop_type"))
    derived = derive_crosswalk_rows(
        LPIS / "austria_crop_codes_hcat.csv", code_column="original_code", via_column="HCAT3_code", via=hcat
    )
    with open(CROSSWALKS / "austria_invekos_snar.csv", encoding="utf-8") as fh:
        shipped = {r["code"]: r["class"] for r in csv.DictReader(fh) if r["origin"] == "hcat"}
    assert shipped == {r["code"]: r["class"] for r in derived}


def test_netherlands_brp_hand_made_crosswalk(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    source = LPIS / "netherlands_brp_2023.gpkg"
    report, out = _ingest(
        tmp_path, source, "netherlands_brp_gewascode.csv", "gewascode",
        "--config", str(CROP_CONFIG), "--legend", "crop_type", "--year", "2023", "--date-column", "jaar",
        "--source-type", "lpis",
    )  # fmt: skip
    _record(record_property, "netherlands_brp_2023", report)
    raw = gpd.read_file(source)
    assert report["read"] == len(raw) == 100
    # Landscape elements (ditches, hedges, wooded banks) carry no crop: excluded on purpose.
    assert report["dropped"]["excluded_code"] == int((raw["category"] == "Landschapselement").sum())
    assert report["unknown_codes"] == {} and report["dropped"]["other_year"] == 0
    written = gpd.read_file(out)
    gras = raw.loc[written["record_id"], "category"].to_numpy() == "Grasland"
    assert set(written.loc[gras, "class_name"]) <= {"grassland", "other crop"}
    assert set(written["class_name"]) <= set(_crop_names().values())


def test_slovenia_eurocrops_hcat(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    source = LPIS / "slovenia_eurocrops_2021" / "SI_2021_EC21.shp"
    report, out = _ingest(
        tmp_path, source, "hcat3_to_crop_legend.csv", "EC_hcat_c",
        "--config", str(CROP_CONFIG), "--legend", "crop_type", "--year", "2021", "--source-type", "lpis",
    )  # fmt: skip
    _record(record_property, "slovenia_eurocrops_2021", report)
    raw = gpd.read_file(source)
    assert report["read"] == len(raw) == 100
    hcat_class = _hcat_class()
    expected = [hcat_class.get(normalise_code(c), "?") for c in raw["EC_hcat_c"]]
    written = gpd.read_file(out)
    assert report["kept"] == sum(e not in ("0", "?") for e in expected)
    assert list(written["class_name"]) == [expected[i] for i in written["record_id"]]
    maize = raw["EC_hcat_n"].str.contains("maize").sum()
    assert (written["class_name"] == "maize").sum() == maize


def test_azerbaijan_land_cover(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    source = AZE / "land_cover_polygons.geojson"
    report, out = _ingest(
        tmp_path, source, "azerbaijan_lulc.csv", "LULC_ID",
        "--config", str(REPO / "configs" / "demo.yaml"), "--legend", "land_cover", "--min-area-m2", "1",
    )  # fmt: skip
    _record(record_property, "azerbaijan_land_cover", report)
    raw = gpd.read_file(source)
    assert report["read"] == len(raw)
    assert report["excluded_codes"] == {"0": int((raw["LULC_ID"] == 0).sum())}
    assert report["repaired_total"] == int((~raw.geometry.is_valid & (raw["LULC_ID"] != 0)).sum())
    written = gpd.read_file(out)
    # No two kept polygons of different classes overlap by more than the tolerance (1 % of the smaller).
    geoms = written.geometry.to_numpy()
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    for a, b in zip(left, right, strict=True):
        if a < b and written["class_id"].iat[a] != written["class_id"].iat[b]:
            inter = shapely.intersection(geoms[a], geoms[b]).area
            assert inter <= 0.0101 * min(geoms[a].area, geoms[b].area) + 1e-6
    # The same crosswalk file maps the LULC names: the same classes per record.
    by_name, out2 = _ingest(
        tmp_path / "names", source, "azerbaijan_lulc.csv", "LULC",
        "--config", str(REPO / "configs" / "demo.yaml"), "--legend", "land_cover", "--min-area-m2", "1",
    )  # fmt: skip
    assert by_name["kept"] == report["kept"] and by_name["dropped"] == report["dropped"]
    assert list(gpd.read_file(out2)["class_id"]) == list(written["class_id"])


def test_azerbaijan_crop_survey_mixed_dates(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    source = AZE / "crop_survey_polygons.geojson"
    report, out = _ingest(
        tmp_path, source, "azerbaijan_crop_survey.csv", "CROP_TYPE",
        "--date-column", "DATE", "--year", "2017",
        "--config", str(REPO / "configs" / "demo.yaml"), "--legend", "crop_type",
    )  # fmt: skip
    _record(record_property, "azerbaijan_crop_survey_2017", report)
    raw = gpd.read_file(source)
    serves_2017 = raw["DATE"].astype(str).str.strip().str.endswith("2017")  # '2016-2017': harvest year 2017
    assert report["read"] == len(raw) and report["kept"] == int(serves_2017.sum())
    assert report["dropped"]["other_year"] == int((~serves_2017).sum()) and report["dropped"]["invalid_date"] == 0
    written = gpd.read_file(out)
    assert set(written["year"]) == {2017}
    assert set(written["class_name"]) <= {"winter cereal", "cotton", "sugar beet"}
    report18, _ = _ingest(
        tmp_path / "y2018", source, "azerbaijan_crop_survey.csv", "CROP_TYPE",
        "--date-column", "DATE", "--year", "2018",
        "--config", str(REPO / "configs" / "demo.yaml"), "--legend", "crop_type",
    )  # fmt: skip
    _record(record_property, "azerbaijan_crop_survey_2018", report18)
    assert report18["kept"] == len(raw) - report["kept"]


def test_quality_report_over_azerbaijan(tmp_path: Path) -> None:
    source = AZE / "land_cover_polygons.geojson"
    _, ref = _ingest(
        tmp_path, source, "azerbaijan_lulc.csv", "LULC_ID",
        "--config", str(REPO / "configs" / "demo.yaml"), "--legend", "land_cover",
    )  # fmt: skip
    demo = yaml.safe_load(
        (REPO / "configs" / "demo.yaml").read_text().replace("${LCMS_STORAGE_ROOT:-../lcms-data}", "x")
    )
    project = {
        "project": "aze",
        "aoi": {"file": str(AZE / "area_of_interest.geojson"), "region_column": "Regions"},
        "grid": {"tile_size_px": 50, "resolution_m": 10.0},
        "seasons": {"2018": {"start": "2018-03-01", "end": "2018-10-31"}},
        "legends": demo["legends"],
        "storage": {"root": str(tmp_path / "store")},
    }
    cfg_path = tmp_path / "aze.yaml"
    cfg_path.write_text(yaml.safe_dump(project), encoding="utf-8")
    out_dir = tmp_path / "quality"
    args = ["reference", "quality", str(ref), "--config", str(cfg_path), "--out-dir", str(out_dir)]
    assert main([*args, "--legend", "land_cover"]) == 0
    for name in ("quality.json", "quality.html", "class_areas.png", "density.png"):
        assert (out_dir / name).stat().st_size > 0
    q = json.loads((out_dir / "quality.json").read_text())
    written = gpd.read_file(ref)
    assert q["n_polygons"] == len(written) == sum(c["count"] for c in q["classes"])
    assert sum(c["area_m2"] for c in q["classes"]) == pytest.approx(q["area_m2"])
    assert [r["name"] for r in q["regions"]] == ["Region A", "Region B", "Region C"]
    zones = [*q["regions"], q["outside_aoi"]]
    assert sum(z["area_m2"] for z in zones) == pytest.approx(q["area_m2"], rel=1e-6)
    for cls in q["classes"]:
        in_zones = sum(z["classes"].get(str(cls["class_id"]), {}).get("area_m2", 0.0) for z in zones)
        assert in_zones == pytest.approx(cls["area_m2"], rel=1e-6, abs=1e-6)
    for t in q["tiles"]:
        assert sum(t["classes"].values()) == pytest.approx(t["area_m2"])
        assert 0.0 <= t["share"] <= 1.0 + 1e-9 or t["n_polygons"] > 1  # overlapping polygons count twice
    spread = q["spread"]
    assert spread["tiles_with_reference"] == sum(t["area_m2"] > 0 for t in q["tiles"])
    assert 0 < spread["share_of_tiles_with_reference"] <= 1
