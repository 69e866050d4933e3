"""Crosswalk chains (national code -> HCAT3 code -> class) and empty results of ``lcms reference ingest/quality``.

* reading a crosswalk by other column names, rows without a code, errors naming file, line, column;
* :class:`CrosswalkChain`: lookups step by step, year scopes at each step, only the last step's
  targets checked against the legend;
* ingestion through a chain: unknown codes counted per step, ``kept + sum(dropped) == read``
  (also on random inputs);
* the CLI: ``--crosswalk`` repeated with ``--crosswalk-columns``; ``--allow-empty`` of ingest and
  quality (non-zero exit and nothing written without it, outputs and exit 0 with it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from lcms_tasks.cli import main
from lcms_tasks.config import LegendClass
from lcms_tasks.errors import ConfigError, EmptyResultError
from lcms_tasks.reference.crosswalk import ChainHit, CrosswalkChain, CrosswalkSpec, read_chain, read_crosswalk
from lcms_tasks.reference.ingest import DROP_REASONS, IngestOptions, ingest_frame

REPO = Path(__file__).resolve().parents[2]
LEGEND = [LegendClass(id=1, name="wheat"), LegendClass(id=2, name="maize"), LegendClass(id=3, name="grass")]
EPSG = 32633

NATIONAL = (
    "original_code,original_name,HCAT3_code\n"
    "110,WINTERGERSTE,3301010401\n"
    ",second crop of the row above,3301070000\n"  # EuroCrops: a mixed declaration's second crop, no code
    "109,SILOMAIS,3301090400\n"
    "350,HECKE,3306000000\n"
    "900,SONDERKULTUR,3399999999\n"  # an HCAT code the HCAT table below does not know
    "005,LEADING ZERO,3301090400\n"
)
HCAT = "code,class,hcat3_name\n3301010401,wheat,winter_barley\n3301090400,maize,green_silo_maize\n3306000000,0,wood\n"


@pytest.fixture
def chain_files(tmp_path: Path) -> dict[str, Path]:
    national = tmp_path / "national.csv"
    national.write_text(NATIONAL, encoding="utf-8")
    hcat = tmp_path / "hcat.csv"
    hcat.write_text(HCAT, encoding="utf-8")
    return {"national": national, "hcat": hcat}


def _chain(files: dict[str, Path]) -> CrosswalkChain:
    chain = read_chain([CrosswalkSpec(files["national"], "original_code", "HCAT3_code"), CrosswalkSpec(files["hcat"])])
    chain.resolve(LEGEND)
    return chain


# -- reading crosswalks by other column names ------------------------------------------------------


def test_crosswalk_by_named_columns_skips_rows_without_code(chain_files: dict[str, Path]) -> None:
    cw = read_crosswalk(chain_files["national"], code_column="ORIGINAL_CODE", target_column="hcat3_code")
    assert cw.codes() == {"110", "109", "350", "900", "005"}
    assert cw.skipped_lines == [3]
    assert cw.target("110") == "3301010401" and cw.target("5") is None  # leading zeros are part of the code
    assert cw.spec.describe().endswith("national.csv [ORIGINAL_CODE -> hcat3_code]")


@pytest.mark.parametrize(
    ("text", "columns", "pattern"),
    [
        (
            NATIONAL,
            ("original_code", "HCAT4_code"),
            r"national\.csv has no column\(s\) HCAT4_code; its header \(line 1\)",
        ),
        (NATIONAL, ("code", "class"), r"national\.csv has no column\(s\) code, class; .*--crosswalk-columns"),
        (
            "original_code,HCAT3_code\n110,3301010401\n111,3301010402\n110,3301010402\n",
            ("original_code", "HCAT3_code"),
            r"national\.csv line 4: code '110' is mapped to '3301010402', but line 2 maps it to '3301010401'",
        ),
        (
            "original_code,HCAT3_code\n110,\n",
            ("original_code", "HCAT3_code"),
            r"national\.csv line 2: .*empty 'HCAT3_code'",
        ),
        ("original_code,HCAT3_code\n,3301010401\n", ("original_code", "HCAT3_code"), r"national\.csv has no rows"),
    ],
)
def test_crosswalk_errors_name_file_line_and_column(
    tmp_path: Path, text: str, columns: tuple[str, str], pattern: str
) -> None:
    path = tmp_path / "national.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=pattern):
        read_crosswalk(path, code_column=columns[0], target_column=columns[1])


def test_yaml_crosswalk_has_no_columns_to_name(tmp_path: Path) -> None:
    path = tmp_path / "cw.yaml"
    path.write_text("110: wheat\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"cw\.yaml is a YAML mapping"):
        read_crosswalk(path, code_column="original_code", target_column="HCAT3_code")


# -- chains ----------------------------------------------------------------------------------------


def test_chain_traces_codes_step_by_step(chain_files: dict[str, Path]) -> None:
    chain = _chain(chain_files)
    hit = chain.trace("110")
    assert hit.cls is not None and (hit.cls.id, hit.cls.name) == (1, "wheat") and hit.step is None
    assert hit.code == "3301010401"
    hit = chain.trace("350")
    assert hit.cls is not None and hit.cls.id == 0  # no label on purpose, through the chain
    assert chain.trace("555") == ChainHit(None, 0, "555")  # unknown national code: lost at step 0
    assert chain.trace("900") == ChainHit(None, 1, "3399999999")  # its HCAT code is unknown: lost at step 1
    found, lost = chain.flatten()
    assert {c: r.name for c, r in found.items()} == {"110": "wheat", "109": "maize", "005": "maize", "350": ""}
    assert set(lost) == {"900"}
    assert chain.describe().count(" -> ") == 2  # 'national.csv [original_code -> HCAT3_code] -> hcat.csv'


def test_chain_checks_only_the_last_steps_classes(chain_files: dict[str, Path], tmp_path: Path) -> None:
    # The national table's targets (HCAT codes) are no classes of the legend: that is fine.
    _chain(chain_files)
    bad = tmp_path / "bad_hcat.csv"
    bad.write_text("code,class\n3301010401,barley\n3301090400,maize\n", encoding="utf-8")
    chain = read_chain([CrosswalkSpec(chain_files["national"], "original_code", "HCAT3_code"), CrosswalkSpec(bad)])
    with pytest.raises(
        ConfigError, match=r"bad_hcat\.csv: class\(es\) not in the crop_type legend: 'barley' \(line 2\)"
    ):
        chain.resolve(LEGEND, legend_name="crop_type")


def test_year_scopes_apply_at_every_step(tmp_path: Path) -> None:
    national = tmp_path / "nat.csv"
    national.write_text("kod,hcat,year\n7,A,2020\n7,B,2021\n", encoding="utf-8")
    hcat = tmp_path / "hcat.csv"
    hcat.write_text("code,class,year\nA,wheat,\nB,maize,\nB,grass,2022\n", encoding="utf-8")
    chain = read_chain([CrosswalkSpec(national, "kod", "hcat"), CrosswalkSpec(hcat)])
    chain.resolve(LEGEND)
    names = {y: getattr(chain.lookup("7", year=y), "name", None) for y in (2020, 2021, 2022)}
    assert names == {2020: "wheat", 2021: "maize", 2022: None}  # 2022: no national row for that year


# -- ingestion through a chain ----------------------------------------------------------------------


def _opts(**kw: Any) -> IngestOptions:
    return IngestOptions(code_columns=("code",), source_type="lpis", source_file="mem.gpkg", **kw)


def test_ingest_counts_unknown_codes_per_step(chain_files: dict[str, Path]) -> None:
    codes = ["110", "109", "350", "900", "900", "555", None, "005"]
    frame = gpd.GeoDataFrame(
        {"code": codes}, geometry=[box(i * 200, 0, i * 200 + 100, 100) for i in range(len(codes))], crs=EPSG
    )
    result = ingest_frame(frame, _chain(chain_files), _opts())
    r = result.report
    assert r["kept"] + sum(r["dropped"].values()) == r["read"] == len(codes)
    assert (r["kept"], r["dropped"]["unknown_code"], r["dropped"]["excluded_code"]) == (3, 3, 1)
    assert r["unknown_codes"] == {"900": 2, "555": 1}  # the records' own codes
    steps = r["crosswalk_steps"]
    assert [s["unknown_codes"] for s in steps] == [{"555": 1}, {"3399999999": 2}]
    assert [s["unknown"] for s in steps] == [1, 2] and sum(s["unknown"] for s in steps) == 3
    assert [(s["code_column"], s["target_column"], s["target"]) for s in steps] == [
        ("original_code", "HCAT3_code", "code"),
        ("code", "class", "class"),
    ]
    assert steps[0]["rows_without_code_skipped"] == 1
    assert sorted(result.frame["class_name"]) == ["maize", "maize", "wheat"]
    assert " -> " in r["crosswalk"]


_codes = st.sampled_from(["110", "109", "350", "900", "555", "005", "5", None, 110, 109.0])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(codes=st.lists(_codes, max_size=20))
def test_chain_accounting_invariant(chain_files: dict[str, Path], codes: list[Any]) -> None:
    frame = gpd.GeoDataFrame(
        {"code": codes}, geometry=[box(i * 200, 0, i * 200 + 100, 100) for i in range(len(codes))], crs=EPSG
    )
    r = ingest_frame(frame, _chain(chain_files), _opts()).report
    assert r["kept"] + sum(r["dropped"].values()) == r["read"] == len(codes)
    assert set(r["dropped"]) == set(DROP_REASONS)
    assert sum(s["unknown"] for s in r["crosswalk_steps"]) == r["dropped"]["unknown_code"]
    assert sum(r["unknown_codes"].values()) == r["dropped"]["unknown_code"]


# -- the CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def parcels(tmp_path: Path) -> Path:
    frame = gpd.GeoDataFrame(
        {"SNAR_CODE": ["110", "109", "350", "900"]},
        geometry=[box(500000 + i * 200, 5000000, 500100 + i * 200, 5000100) for i in range(4)],
        crs=EPSG,
    )
    path = tmp_path / "parcels.gpkg"
    frame.to_file(path, driver="GPKG")
    return path


def _ingest(parcels: Path, out_dir: Path, *crosswalk_args: str, extra: tuple[str, ...] = ()) -> tuple[int, Path, Path]:
    out, rep = out_dir / "ref.gpkg", out_dir / "ref.json"
    argv = ["reference", "ingest", str(parcels), *crosswalk_args, "--code-column", "SNAR_CODE"]
    return main([*argv, "--out", str(out), "--report", str(rep), *extra]), out, rep


def test_cli_chains_repeated_crosswalks(parcels: Path, chain_files: dict[str, Path], tmp_path: Path) -> None:
    code, out, rep = _ingest(
        parcels,
        tmp_path / "out",
        "--crosswalk", str(chain_files["national"]), "--crosswalk-columns", "original_code,HCAT3_code",
        "--crosswalk", str(chain_files["hcat"]),
    )  # fmt: skip
    assert code == 0
    report = json.loads(rep.read_text())
    assert (report["read"], report["kept"]) == (4, 2)
    assert [s["unknown_codes"] for s in report["crosswalk_steps"]] == [{}, {"3399999999": 1}]
    assert sorted(gpd.read_file(out)["class_name"]) == ["maize", "wheat"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--crosswalk-columns", "original_code,HCAT3_code", "--crosswalk", "x.csv"], "must follow the --crosswalk"),
        (["--crosswalk", "x.csv", "--crosswalk-columns", "original_code"], "takes CODE,TARGET"),
        (["--crosswalk", "x.csv", "--crosswalk-columns", "a,b", "--crosswalk-columns", "c,d"], "given twice"),
    ],
)
def test_cli_crosswalk_columns_usage_errors(
    parcels: Path, tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        _ingest(parcels, tmp_path / "out", *args)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_cli_ingest_keeping_nothing_fails_unless_allow_empty(
    parcels: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    nothing = tmp_path / "nothing.csv"
    nothing.write_text("code,class\n777,wheat\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        code, out, rep = _ingest(parcels, tmp_path / "strict", "--crosswalk", str(nothing))
    assert code != 0
    err = capsys.readouterr().err
    assert "kept 0 of 4" in err and "'110' x1" in err and "nothing written" in err
    assert not out.exists() and not rep.exists()
    assert any("kept 0 of 4" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        code, out, rep = _ingest(parcels, tmp_path / "lenient", "--crosswalk", str(nothing), extra=("--allow-empty",))
    assert code == 0
    assert any("kept 0 of 4" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    report = json.loads(rep.read_text())
    assert report["kept"] == 0 and report["dropped"]["unknown_code"] == 4
    assert len(gpd.read_file(out)) == 0


def test_empty_ingest_raises_empty_result_error(parcels: Path, tmp_path: Path) -> None:
    from lcms_tasks.cli import build_parser

    nothing = tmp_path / "nothing.csv"
    nothing.write_text("code,class\n777,wheat\n", encoding="utf-8")
    args = build_parser().parse_args(
        ["reference", "ingest", str(parcels), "--crosswalk", str(nothing), "--code-column", "SNAR_CODE",
         "--out", str(tmp_path / "o.gpkg"), "--report", str(tmp_path / "o.json")]
    )  # fmt: skip
    with pytest.raises(EmptyResultError, match="kept 0 of 4"):
        args.func(args)


def _project(tmp_path: Path) -> Path:
    cfg = tmp_path / "project.yaml"
    demo = (REPO / "configs" / "demo.yaml").read_text()
    cfg.write_text(demo.replace("demo_aoi.geojson", str(REPO / "configs" / "demo_aoi.geojson")), encoding="utf-8")
    return cfg


def _ingested(path: Path, geoms: list[Any], crs: int) -> Path:
    n = len(geoms)
    frame = gpd.GeoDataFrame(
        {
            "class_id": [1] * n,
            "class_name": ["cropland"] * n,
            "source_code": ["x"] * n,
            "source_type": ["manual"] * n,
            "year": [2023] * n,
            "priority": [40] * n,
            "source_file": ["m"] * n,
            "record_id": list(range(n)),
        },
        geometry=geoms,
        crs=crs,
    )
    frame.to_file(path, driver="GPKG", layer="reference")
    return path


def test_cli_quality_outside_the_aoi_fails_unless_allow_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _project(tmp_path)
    far = _ingested(tmp_path / "far.gpkg", [box(15.0, 46.0, 15.01, 46.01)], 4326)  # Slovenia; the AOI is in Azerbaijan
    out_dir = tmp_path / "quality"
    args = ["reference", "quality", str(far), "--config", str(cfg), "--out-dir", str(out_dir)]
    with caplog.at_level(logging.WARNING):
        assert main(args) != 0
    err = capsys.readouterr().err
    assert "none of its 1 polygon(s) falls inside the AOI" in err and "longitude 15.0000..15.0100" in err
    assert not out_dir.exists() or not any(out_dir.iterdir())
    assert any("falls inside the AOI" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert main([*args, "--allow-empty"]) == 0
    report = json.loads((out_dir / "quality.json").read_text())
    assert report["n_polygons"] == 1 and report["n_polygons_inside_aoi"] == 0
    assert (out_dir / "quality.html").is_file()


def test_quality_of_an_empty_ingest_with_allow_empty(parcels: Path, tmp_path: Path) -> None:
    nothing = tmp_path / "nothing.csv"
    nothing.write_text("code,class\n777,wheat\n", encoding="utf-8")
    code, out, _ = _ingest(parcels, tmp_path / "e", "--crosswalk", str(nothing), extra=("--allow-empty",))
    assert code == 0
    cfg = _project(tmp_path)
    args = ["reference", "quality", str(out), "--config", str(cfg), "--out-dir", str(tmp_path / "q")]
    assert main(args) != 0
    assert main([*args, "--allow-empty"]) == 0
    report = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert report["n_polygons"] == 0 and report["spread"]["tiles_with_reference"] == 0


def test_quality_inside_the_aoi_still_passes(tmp_path: Path) -> None:
    cfg = _project(tmp_path)
    aoi = gpd.read_file(REPO / "configs" / "demo_aoi.geojson")
    x0, y0, _, _ = aoi.to_crs(32638).total_bounds
    inside = _ingested(tmp_path / "in.gpkg", [box(x0 + 100, y0 + 100, x0 + 600, y0 + 600)], 32638)
    out_dir = tmp_path / "quality"
    assert main(["reference", "quality", str(inside), "--config", str(cfg), "--out-dir", str(out_dir)]) == 0
    assert json.loads((out_dir / "quality.json").read_text())["n_polygons_inside_aoi"] == 1
