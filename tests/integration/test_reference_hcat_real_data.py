"""The EuroCrops HCAT3 crosswalk and crosswalk chains on the real LPIS samples (../shared/data, see its README).

* ``configs/crosswalks/hcat3_to_crop_legend.csv`` covers every HCAT3 code of the Austrian national
  table (all its rows, also the second crops listed without a national code) and of the Slovenian
  EuroCrops sample, plus every parent code they imply; an aggregate whose codes below fall into
  different classes maps to 0; no code comes from anywhere else.
* The chain Austrian code -> HCAT3 -> crop legend maps every national code to a class or 0, and
  ingests the Austrian INVEKOS sample (``SNAR_CODE``) like the shipped direct crosswalk does.
* The add_reference stage reads the same chain from a project config (``crosswalk_chain``).

Expected figures are recomputed from the data (csv, geopandas), not hard-coded.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import geopandas as gpd
import pytest

from lcms_tasks.cli import main
from lcms_tasks.config import load_config, parse_config
from lcms_tasks.reference.crosswalk import CrosswalkChain, CrosswalkSpec, normalise_code, read_chain, read_crosswalk

pytestmark = pytest.mark.realdata

REPO = Path(__file__).resolve().parents[2]
LPIS = REPO.parent / "shared" / "data" / "lpis_samples"
AT_TABLE = LPIS / "austria_crop_codes_hcat.csv"
AT_INVEKOS = LPIS / "austria_invekos_2025.gpkg"
SI_SAMPLE = LPIS / "slovenia_eurocrops_2021" / "SI_2021_EC21.shp"
CROSSWALKS = REPO / "configs" / "crosswalks"
HCAT_TABLE = CROSSWALKS / "hcat3_to_crop_legend.csv"
CROP_CONFIG = REPO / "configs" / "crop_legend_example.yaml"


def _need(*paths: Path) -> None:
    for path in paths:
        if not path.exists():
            pytest.skip(f"real data {path} is absent (expected next to the repository as shared/data)")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def _crop_classes() -> set[str]:
    return {c.name for c in load_config(CROP_CONFIG, check_files=False).legend("crop_type")}


def _at_chain() -> CrosswalkChain:
    chain = read_chain([CrosswalkSpec(AT_TABLE, "original_code", "HCAT3_code"), CrosswalkSpec(HCAT_TABLE)])
    chain.resolve(load_config(CROP_CONFIG, check_files=False).legend("crop_type"), legend_name="crop_type")
    return chain


def _parents(code: str) -> list[str]:
    """The aggregates above ``code``: its trailing two-digit groups zeroed one by one.

    ``3301010401`` (winter barley) -> ``3301010400`` (barley), ``3301010000``, ``3301000000``, ``3300000000``.
    """
    groups = [code[i : i + 2] for i in range(0, 10, 2)]
    out = []
    for keep in range(4, 0, -1):
        if any(g != "00" for g in groups[keep:]):
            parent = "".join(groups[:keep]) + "00" * (5 - keep)
            if parent != code:
                out.append(parent)
    return out


def _data_hcat_codes() -> dict[str, str]:
    """{HCAT3 code: HCAT3 name} of the Austrian table (every row) and the Slovenian sample."""
    codes = {r["HCAT3_code"]: r["HCAT3_name"] for r in _rows(AT_TABLE)}
    si = gpd.read_file(SI_SAMPLE, ignore_geometry=True)
    codes.update(zip(si["EC_hcat_c"].astype(str), si["EC_hcat_n"].astype(str), strict=True))
    return codes


def test_hcat_table_covers_the_data_and_their_parents_and_nothing_else() -> None:
    _need(AT_TABLE, SI_SAMPLE)
    table = {r["code"]: r for r in _rows(HCAT_TABLE)}
    data = _data_hcat_codes()
    implied = {p for c in data for p in _parents(c)}
    assert set(data) <= set(table), f"HCAT3 codes of the data missing: {sorted(set(data) - set(table))}"
    assert implied <= set(table), f"parent codes missing: {sorted(implied - set(table))}"
    assert set(table) <= set(data) | implied, f"codes from nowhere: {sorted(set(table) - set(data) - implied)}"
    for code, name in data.items():
        assert table[code]["hcat3_name"] == name, code  # the data's own names
    assert all(len(c) == 10 and c.isdigit() for c in table)
    classes = _crop_classes()
    assert {r["class"] for r in table.values()} <= classes | {"0"}
    # The aggregates the issue found missing are there, as 0: their codes below are in several classes.
    assert table["3301010000"]["class"] == table["3301090000"]["class"] == "0"


def test_hcat_aggregates_are_not_guessed() -> None:
    """A code maps to a class only if every code below it in the table has that class; mixed -> 0."""
    table = {r["code"]: r["class"] for r in _rows(HCAT_TABLE)}
    mixed = []
    for code, cls in sorted(table.items()):
        below = {table[c] for c in table if c != code and code in _parents(c)}
        if len(below) > 1 and cls != "0":
            mixed.append(f"{code} -> {cls!r}, codes below: {sorted(below)}")
        if len(below) == 1 and cls not in below | {"0"}:
            mixed.append(f"{code} -> {cls!r}, but every code below is {below}")
    assert mixed == []
    assert table["3301010300"] == "0"  # rye: winter rye and spring rye are different classes
    assert table["3301060400"] == "oilseed"  # rapeseed of any season is an oilseed


def test_every_austrian_national_code_reaches_a_class_or_0() -> None:
    _need(AT_TABLE)
    chain = _at_chain()
    hcat = chain.steps[-1]
    rows = _rows(AT_TABLE)
    classes = _crop_classes()
    unknown, mapped, checked = [], Counter(), 0
    for line, row in enumerate(rows, start=2):
        checked += 1
        step_hit = hcat.lookup(normalise_code(row["HCAT3_code"]))  # every row, also those without a national code
        if step_hit is None:
            unknown.append(f"line {line}: HCAT3 {row['HCAT3_code']}")
        if row["original_code"].strip():
            hit = chain.trace(normalise_code(row["original_code"]))
            if hit.cls is None:
                unknown.append(f"line {line}: national code {row['original_code']} unknown at step {hit.step}")
            else:
                assert hit.cls.id == 0 or hit.cls.name in classes
                mapped[hit.cls.name or "0"] += 1
    assert unknown == []
    assert checked == len(rows) > 250  # the whole table, not a sample
    national = [r for r in rows if r["original_code"].strip()]
    assert sum(mapped.values()) == len(national) == len({r["original_code"] for r in national})
    assert chain.steps[0].skipped_lines == [i for i, r in enumerate(rows, start=2) if not r["original_code"].strip()]
    print(f"\nAustrian national codes through HCAT3: {dict(mapped)}")


def test_every_slovenian_record_reaches_a_class_or_0(tmp_path: Path) -> None:
    _need(SI_SAMPLE)
    raw = gpd.read_file(SI_SAMPLE)
    hcat = read_crosswalk(HCAT_TABLE)
    hcat.resolve(load_config(CROP_CONFIG, check_files=False).legend("crop_type"))
    assert all(hcat.lookup(normalise_code(c)) is not None for c in raw["EC_hcat_c"])
    out, rep = tmp_path / "si.gpkg", tmp_path / "si.json"
    argv = ["reference", "ingest", str(SI_SAMPLE), "--crosswalk", str(HCAT_TABLE), "--code-column", "EC_hcat_c"]
    argv += ["--config", str(CROP_CONFIG), "--legend", "crop_type", "--out", str(out), "--report", str(rep)]
    assert main(argv) == 0
    report = json.loads(rep.read_text())
    assert report["read"] == len(raw) and report["unknown_codes"] == {} and report["dropped"]["unknown_code"] == 0


def test_austrian_invekos_through_the_chain(tmp_path: Path) -> None:
    _need(AT_TABLE, AT_INVEKOS)
    out, rep = tmp_path / "at.gpkg", tmp_path / "at.json"
    code = main(
        ["reference", "ingest", str(AT_INVEKOS), "--code-column", "SNAR_CODE",
         "--crosswalk", str(AT_TABLE), "--crosswalk-columns", "original_code,HCAT3_code",
         "--crosswalk", str(HCAT_TABLE),
         "--config", str(CROP_CONFIG), "--legend", "crop_type", "--year", "2025", "--source-type", "lpis",
         "--out", str(out), "--report", str(rep)]
    )  # fmt: skip
    assert code == 0
    report = json.loads(rep.read_text())
    raw = gpd.read_file(AT_INVEKOS, ignore_geometry=True)
    assert report["read"] == len(raw) == 100
    assert report["kept"] + sum(report["dropped"].values()) == report["read"]
    assert report["kept"] > 0
    # Independently: the national codes the EuroCrops table lacks are unknown at step 1, none at step 2.
    national = {r["original_code"] for r in _rows(AT_TABLE)}
    absent = Counter(str(c) for c in raw["SNAR_CODE"] if str(c) not in national)
    steps = report["crosswalk_steps"]
    assert steps[0]["unknown_codes"] == dict(absent) and steps[1]["unknown_codes"] == {}
    assert report["dropped"]["unknown_code"] == sum(absent.values())
    # The kept parcels and their classes are those of the shipped direct crosswalk (derived from the same chain).
    direct_out, direct_rep = tmp_path / "direct.gpkg", tmp_path / "direct.json"
    code = main(
        ["reference", "ingest", str(AT_INVEKOS), "--code-column", "SNAR_CODE",
         "--crosswalk", str(CROSSWALKS / "austria_invekos_snar.csv"),
         "--config", str(CROP_CONFIG), "--legend", "crop_type", "--year", "2025", "--source-type", "lpis",
         "--out", str(direct_out), "--report", str(direct_rep)]
    )  # fmt: skip
    assert code == 0
    chained, direct = gpd.read_file(out), gpd.read_file(direct_out)
    assert list(chained["record_id"]) == list(direct["record_id"])
    assert list(chained["class_name"]) == list(direct["class_name"])


def test_stage_reads_the_chain_from_the_project_config(tmp_path: Path) -> None:
    _need(AT_TABLE, AT_INVEKOS)
    import yaml

    from lcms_tasks.grid import Tile
    from lcms_tasks.stages import add_reference

    data = yaml.safe_load(CROP_CONFIG.read_text().replace("${LCMS_STORAGE_ROOT:-../lcms-data}", str(tmp_path)))
    data["stages"] = {
        "add_reference": {
            "sources": [
                {
                    "type": "file",
                    "path": str(AT_INVEKOS),
                    "class_column": "SNAR_CODE",
                    "crosswalk_chain": [
                        {"path": str(AT_TABLE), "code_column": "original_code", "target_column": "HCAT3_code"},
                        str(HCAT_TABLE),
                    ],
                }
            ]
        }
    }
    cfg = parse_config(data, base_dir=CROP_CONFIG.parent)
    parcels = gpd.read_file(AT_INVEKOS).to_crs(32633)
    x0, y0, x1, y1 = parcels.total_bounds
    size, res = 500, 10.0
    side = size * res
    tiles = [
        Tile(32633, row, col, size, res)
        for row in range(int(y0 // side), int(y1 // side) + 1)
        for col in range(int(x0 // side), int(x1 // side) + 1)
    ]
    options = cfg.stages.add_reference
    source = options.sources[0]
    assert isinstance(source, add_reference.FileSource)
    first_step: Counter[str] = Counter()
    labels: set[int] = set()
    for tile in tiles:
        polygons, stats = add_reference._file_source_polygons(source, cfg, "2025", tile, options)
        labels |= {p.label for p in polygons}
        steps = stats.to_dict()["unknown_codes_by_step"]
        assert steps[1]["unknown_codes"] == {}
        first_step.update(steps[0]["unknown_codes"])
    national = {r["original_code"] for r in _rows(AT_TABLE)}
    assert set(first_step) == {str(c) for c in parcels["SNAR_CODE"] if str(c) not in national}
    grassland = {c.name: c.id for c in cfg.legend()}["grassland"]
    assert grassland in labels  # most of the sample is meadows and pastures
