"""Parcel checks: the season's parcel disagreements in the Validation Tool's queue, and back as crop reference.

A 4 x 4-tile synthetic project (64 px tiles) with a land cover and a crop type product runs download and
features for real; ``lcms parcels markers`` then flags the parcels whose predicted crop differs from the
declared one (15 % of the synthetic declarations name another crop; flagged from a probability of 0.5).
``lcms db load-parcel-checks`` puts them into a fresh change store; they are decided through the
Validation API's store functions; a reload keeps the decisions; and add_reference of the crop product
reads the decided checks as reference of their season (and of no other season, and not as land cover
reference).
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
import yaml

from lcms_service import validation_store as vs
from lcms_tasks.cli import main
from lcms_tasks.config import load_config
from lcms_tasks.reference import validated
from tests.chain_helpers import run_chain
from tests.store_fixtures import query_rows, run_async

SEASON = "2023"
PRODUCT = "crop_type"
MARKERS = Path(f"data/testproj/{SEASON}/products/{PRODUCT}/parcel_markers/_run")
CROPS = {"winter cereal": 1, "maize": 2, "cotton": 3, "sunflower": 4, "vineyard": 5, "sugar beet": 6}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, store_db: str) -> Path:
    from tests.conftest import base_config, write_aoi

    folder = tmp_path_factory.mktemp("parcel-checks")
    write_aoi(folder / "aoi.geojson", ncols=4, nrows=4)
    cfg = base_config("aoi.geojson", "data", batch_size=16)
    cfg["products"] = {
        "land_cover": {"legend": "land_cover"},
        PRODUCT: {"legend": "crop_type", "mask": {"product": "land_cover", "classes": ["cropland"]}},
    }
    cfg["database"] = {"url": store_db}
    path = folder / "project.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_chain(path, SEASON, ("download", "features"), "chain")
    args = ["--block-m", "640", "--min-class-count", "3", "--threads", "2", "--misdeclared-fraction", "0.15"]
    args += ["--disagreement-threshold", "0.5"]
    assert main(["parcels", "markers", "--config", str(path), "--season", SEASON, *args]) == 0
    return path


def flagged(project: Path) -> gpd.GeoDataFrame:
    parcels = gpd.read_file(project.parent / MARKERS / "parcels.gpkg", layer="parcels")
    return parcels[parcels["disagreement"].astype(bool)].set_index("parcel_id")


def load(project: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any] | str]:
    capsys.readouterr()
    code = main(["db", "load-parcel-checks", "--config", str(project), "--season", SEASON, *extra])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 else out.err)


def legends(project: Path) -> dict[str, dict[int, str]]:
    cfg = load_config(project)
    return {
        vs.legend_key(cfg.project, p): {c.id: c.name for c in cfg.for_product(p).legend()} for p in cfg.product_names()
    }


def decide(url: str, project: Path, cid: uuid.UUID, action: str, **kw: Any) -> vs.ChangeDetail:
    version = kw.pop("version", 1)
    decision = vs.Decision(action=action, version=version, decided_by="ana", **kw)
    detail, _ = run_async(url, lambda c: vs.decide(c, cid, decision, legends=legends(project)))
    return detail


def checks(url: str) -> dict[str, tuple[Any, ...]]:
    """parcel id -> (id, status, from_name, to_name, confidence, season_before, season_after, product, area_m2)."""
    rows = query_rows(
        url,
        "SELECT parcel_id, id::text, status, from_name, to_name, confidence, season_before, season_after, product,"
        " area_m2, ST_IsValid(geom), ST_SRID(geom) FROM lcms.changes WHERE kind = 'parcel_check'",
    )
    return {r[0]: r[1:] for r in rows}


def test_the_cli_loads_every_flagged_parcel(project: Path, store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    expected = flagged(project)
    assert len(expected) >= 5, "too few disagreements to check"
    code, out = load(project, capsys)
    assert code == 0 and isinstance(out, dict), out
    assert (out["read"], out["checks"], out["inserted"], out["replaced"], out["kept"]) == (
        len(expected),
        len(expected),
        len(expected),
        0,
        0,
    )
    assert out["product"] == PRODUCT and out["season"] == SEASON
    stored = checks(store_url)
    assert set(stored) == set(expected.index)
    for pid, (_, status, declared, predicted, confidence, before, after, product, area, valid, srid) in stored.items():
        row = expected.loc[pid]
        assert (status, declared, predicted, before, after, product) == (
            "detected",
            row["declared"],
            row["predicted"],
            SEASON,
            SEASON,
            PRODUCT,
        )
        assert confidence == pytest.approx(row["probability"]) and confidence >= 0.5
        assert valid and srid == 4326
        assert area == pytest.approx(row.geometry.area, rel=1e-6)  # the markers' CRS is the tiles' UTM zone
    # parcel checks are not changes: the change queue and the OGC API's default kind leave them out
    changes = run_async(store_url, lambda c: vs.queue(c, vs.QueueFilter(project="testproj")))
    parcel_page = run_async(store_url, lambda c: vs.queue(c, vs.QueueFilter(project="testproj", kind="parcel_check")))
    assert changes.total == 0
    assert parcel_page.total == len(expected) and parcel_page.counts.left == len(expected)
    first = parcel_page.items[0]
    assert first.kind == "parcel_check" and first.product == PRODUCT and first.parcel_id in expected.index


def test_a_reload_keeps_the_decided_checks(project: Path, store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert load(project, capsys)[0] == 0
    stored = checks(store_url)
    (pid_a, a), (pid_b, b) = sorted(stored.items())[:2]
    confirmed = decide(store_url, project, uuid.UUID(a[0]), "confirm")
    third = next(c for name, c in CROPS.items() if name not in (b[2], b[3]))
    corrected = decide(store_url, project, uuid.UUID(b[0]), "correct", to_class=third)
    assert confirmed.status == "confirmed" and corrected.status == "corrected"
    assert corrected.corrected_to_class == third and corrected.corrected_to_name in CROPS

    code, out = load(project, capsys)
    assert code == 0 and isinstance(out, dict), out
    n = len(stored)
    assert (out["kept"], out["replaced"], out["inserted"]) == (2, n - 2, n - 2)
    again = checks(store_url)
    assert set(again) == set(stored)  # the same ids: uuid5 of project, product, season, parcel
    assert {k: v[0] for k, v in again.items()} == {k: v[0] for k, v in stored.items()}
    assert again[pid_a][1] == "confirmed" and again[pid_b][1] == "corrected"
    assert query_rows(store_url, "SELECT count(*) FROM lcms.decisions")[0][0] == 2


def test_a_parcel_check_is_corrected_with_the_true_crop_only(
    project: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert load(project, capsys)[0] == 0
    _, row = sorted(checks(store_url).items())[0]
    cid = uuid.UUID(row[0])
    declared = CROPS[row[2]]
    with pytest.raises(vs.DecisionProblemError, match="to_class only"):
        decide(store_url, project, cid, "correct", from_class=declared, to_class=declared)
    with pytest.raises(vs.DecisionProblemError, match="is the declared crop: the declaration holds"):
        decide(store_url, project, cid, "correct", to_class=declared)
    with pytest.raises(vs.DecisionProblemError, match="not in the legend of project 'testproj', product 'crop_type'"):
        decide(store_url, project, cid, "correct", to_class=99)
    assert query_rows(store_url, "SELECT count(*) FROM lcms.decisions")[0][0] == 0


def test_decided_checks_are_crop_reference_of_their_season_only(
    project: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert load(project, capsys)[0] == 0
    stored = sorted(checks(store_url).items())
    (_, a), (_, b), (_, c) = stored[:3]
    third = next(v for name, v in CROPS.items() if name not in (c[2], c[3]))
    decide(store_url, project, uuid.UUID(a[0]), "confirm")
    decide(store_url, project, uuid.UUID(b[0]), "reject", comment="the declaration holds")
    decide(store_url, project, uuid.UUID(c[0]), "correct", to_class=third)
    want = {a[0]: CROPS[a[3]], b[0]: CROPS[b[2]], c[0]: third}  # predicted, declared, the true crop

    cfg = load_config(project)
    order = validated.season_order(cfg)
    found, _ = validated.read_validated(
        store_url, project="testproj", season=SEASON, order=order, changes=False, parcel_checks_of=PRODUCT
    )
    assert {p.change_id: p.class_id for p in found} == want
    later, _ = validated.read_validated(
        store_url, project="testproj", season="2024", order=order, changes=False, parcel_checks_of=PRODUCT
    )
    assert later == []  # crops rotate: nothing carried forward
    land_cover, _ = validated.read_validated(store_url, project="testproj", season=SEASON, order=order)
    assert land_cover == []

    # add_reference of the crop product rasterises them (above the synthetic truth); land cover does not.
    ctx = run_chain(project, SEASON, ("add_reference",), "reference-with-checks")
    crop = ctx.for_product(PRODUCT)
    used = {
        cid
        for t in crop.tiles()
        for cid in crop.storage.read_marker(crop.tile_uri("add_reference", t.id))["validated"]["change_ids"]
    }
    assert used == set(want)
    lc = ctx.for_product("land_cover")
    assert not any(
        lc.storage.read_marker(lc.tile_uri("add_reference", t.id))["validated"]["change_ids"] for t in lc.tiles()
    )


def test_bad_markers_exit_2_and_store_nothing(
    project: Path, store_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from lcms_tasks.errors import StageError
    from lcms_tasks.store.parcel_checks import prepare

    code, err = load(project, capsys, "--season", "2024")
    assert code == 2 and isinstance(err, str)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "parcel markers of season 2024 (product crop_type) are missing" in lines[0], lines
    code, err = load(project, capsys, "--product", "land_cover")
    assert code == 2 and "missing" in str(err)
    assert checks(store_url) == {}

    frame = gpd.read_file(project.parent / MARKERS / "parcels.gpkg", layer="parcels")
    bad = frame.copy()
    row = bad.index[bad["disagreement"].astype(bool)][0]
    bad.loc[row, "declared"] = "rice"
    with pytest.raises(
        StageError,
        match=re.escape(f"markers.gpkg: parcel {bad.loc[row, 'parcel_id']!r} (flagged row 1): declared crop 'rice' ")
        + "is not in the legend of product 'crop_type'",
    ):
        prepare(bad, where="markers.gpkg", project="p", product=PRODUCT, season=SEASON, legend=CROPS)
    no_column = frame.drop(columns="probability")
    with pytest.raises(StageError, match=r"markers\.gpkg: no column probability"):
        prepare(no_column, where="markers.gpkg", project="p", product=PRODUCT, season=SEASON, legend=CROPS)
