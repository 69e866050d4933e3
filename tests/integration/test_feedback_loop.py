"""The feedback loop end to end: operators' decisions on season 2's changes become season 2's (and 3's) reference.

A 2 x 2-tile synthetic project (64 px tiles) is processed for real: 2023 from download to
change_detection, 2024 from download to change_detection (mapped with the 2023 model, its
add_reference reading an empty change store). 2024's changes are loaded into a fresh change store;
the first three of the Validation Tool's queue are decided through the API by two logged-in
validators (one confirmed, one rejected, one corrected with a new class and an edited outline; a
decision on a stale version refused). add_reference for 2024 runs again: its markers name exactly
those changes and decisions, the reference rasters hold the decided classes inside the polygons,
and the 2024 report says how many validated polygons it used and from which decisions. A third
season's add_reference gets the same polygons, carried forward.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio.features
import shapely
import yaml
from fastapi.testclient import TestClient
from pydantic import SecretStr

from lcms_service.app import create_app
from lcms_service.auth import AuthSettings, configure_auth
from lcms_service.settings import ServiceSettings
from lcms_tasks import eopatch
from lcms_tasks.config import load_config
from lcms_tasks.context import RunContext
from lcms_tasks.reference.validated import polygon_key
from lcms_tasks.store import load_season
from tests.auth_helpers import clean_users, login, make_user, sibling
from tests.chain_helpers import FIRST, MAPS, run_chain
from tests.store_fixtures import clean_store


@dataclass
class Loop:
    """The processed project, its store and the decisions made."""

    config: Path
    url: str
    decided: dict[str, dict[str, Any]]  # change id -> {"decision_id", "class", "geometry" (EPSG:4326)}


def _markers(ctx: RunContext) -> list[dict[str, Any]]:
    return [ctx.storage.read_marker(ctx.tile_uri("add_reference", t.id)) for t in ctx.tiles()]


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, store_db: str) -> Iterator[Loop]:
    from tests.conftest import base_config, write_aoi

    clean_store(store_db)
    clean_users(store_db)
    folder = tmp_path_factory.mktemp("feedback-loop")
    write_aoi(folder / "aoi.geojson")
    cfg = base_config("aoi.geojson", "data")
    cfg["seasons"]["2025"] = {"start": "2025-04-01", "end": "2025-09-30"}
    cfg["database"] = {"url": store_db}
    cfg["stages"] = {
        "add_reference": {"sources": [{"type": "synthetic_truth", "tile_fraction": 1.0}, {"type": "change_store"}]},
        "training": {"drop_rare_classes": True, "min_samples_per_class": 5},
        "prediction": {"model_season": "2023"},  # one model maps both seasons
    }
    path = folder / "project.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_chain(path, "2023", FIRST + MAPS, "chain-2023")
    ctx = run_chain(path, "2024", ("download", "features", "add_reference", *MAPS), "chain-2024")
    # Before any decision: the change store source reads nothing.
    for meta in _markers(ctx):
        assert meta["validated"]["polygons_used"] == 0 and "skipped" not in meta["validated"]
    loaded = load_season(store_db, ctx)
    assert loaded["inserted"] >= 3, loaded

    decided = _decide_through_the_api(path, store_db)
    yield Loop(path, store_db, decided)


def _decide_through_the_api(config: Path, url: str) -> dict[str, dict[str, Any]]:
    """Two validators decide the queue's first three changes of 2024 through the Validation API."""
    app = create_app(
        ServiceSettings(
            database_url=SecretStr(url), config=config, embedded_database=False, freeze_gc=False, retry_interval_s=0
        )
    )
    configure_auth(app, AuthSettings())
    make_user(url, "alice", "validator")
    make_user(url, "bob", "validator")
    legend = {c.id: c.name for c in load_config(config).legend()}
    decided: dict[str, dict[str, Any]] = {}
    with TestClient(app) as anonymous:
        alice, bob = sibling(anonymous), sibling(anonymous)
        login(alice, "alice")
        login(bob, "bob")
        page = alice.get("/api/changes", params={"project": "testproj", "season_after": "2024"}).json()
        assert page["counts"] == {"done": 0, "left": page["total"]}
        first, second, third = (alice.get(f"/api/changes/{i['id']}").json() for i in page["items"][:3])

        def post(client: TestClient, change: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
            r = client.post(f"/api/changes/{change['id']}/decisions", json={"version": change["version"], **payload})
            assert r.status_code == 200, r.text
            return dict(r.json())

        done = post(alice, first, {"action": "confirm"})
        decided[first["id"]] = {"class": first["to_class"], "geometry": shapely.geometry.shape(first["geometry"])}
        decided[first["id"]]["decision_id"] = done["decisions"][-1]["id"]
        # Bob, on the version he saw before Alice decided, is refused; he looks again and rejects.
        assert (
            bob.post(f"/api/changes/{first['id']}/decisions", json={"action": "reject", "version": 1}).status_code
            == 409
        )
        done = post(bob, second, {"action": "reject", "comment": "shadow"})
        decided[second["id"]] = {"class": second["from_class"], "geometry": shapely.geometry.shape(second["geometry"])}
        decided[second["id"]]["decision_id"] = done["decisions"][-1]["id"]
        new_class = next(c for c in sorted(legend) if c not in (third["from_class"], third["to_class"]))
        outline = shapely.geometry.shape(third["geometry"])
        w, s, e, n = outline.bounds
        edited = _largest_part(outline.intersection(shapely.box(w, s, (w + e) / 2, n)))  # the western half
        payload = {"action": "correct", "to_class": new_class, "geometry": shapely.geometry.mapping(edited)}
        done = post(alice, third, payload)
        assert done["status"] == "corrected" and done["version"] == 2
        decided[third["id"]] = {"class": new_class, "geometry": edited, "decision_id": done["decisions"][-1]["id"]}
        assert alice.get("/api/changes", params={"project": "testproj"}).json()["counts"]["done"] == 3
    return decided


def _largest_part(geom: Any) -> Any:
    parts = [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon"]
    return max(parts, key=lambda p: p.area)


def test_rerun_uses_exactly_the_decisions(loop: Loop) -> None:
    ctx = run_chain(loop.config, "2024", ("add_reference",), "rerun-2024")
    markers = _markers(ctx)
    used = {c for m in markers for c in m["validated"]["change_ids"]}
    decisions = {d for m in markers for d in m["validated"]["decision_ids"]}
    assert used == set(loop.decided)
    assert decisions == {d["decision_id"] for d in loop.decided.values()}
    assert not any(m["validated"]["carried_forward"] for m in markers)
    for m in markers:  # the source's own figures count the same polygons (once per tile they touch)
        assert m["sources"]["sources[1] change_store"]["polygons_used"] == m["validated"]["polygons_used"]

    # Inside each decided polygon the reference is the decided class: the change store outranks the truth.
    checked: set[str] = set()
    for tile in ctx.tiles():
        patch, meta = eopatch.load(ctx.storage, ctx.tile_uri("add_reference", tile.id))
        ref = patch.mask_timeless["REFERENCE"][..., 0]
        ids = patch.mask_timeless["POLYGON_ID"][..., 0]
        keys = meta["polygon_keys"]
        for cid, d in loop.decided.items():
            inner = gpd.GeoSeries([d["geometry"]], crs=4326).to_crs(tile.crs).buffer(-tile.resolution).iloc[0]
            if inner.is_empty:
                continue
            inside = rasterio.features.geometry_mask([inner], ref.shape, tile.transform(), invert=True)
            if not inside.any():
                continue
            assert np.all(ref[inside] == d["class"]), (cid, np.unique(ref[inside]))
            assert {keys[i - 1] for i in np.unique(ids[inside]).tolist()} == {polygon_key(cid)}
            checked.add(cid)
    assert checked == set(loop.decided)


def test_report_says_how_many_validated_polygons_and_which_decisions(loop: Loop) -> None:
    ctx = run_chain(loop.config, "2024", ("add_reference", "reporting"), "report-2024")
    folder = ctx.storage.local_path(ctx.run_uri("reporting", "report"))
    report = json.loads((folder / "report.json").read_text())
    v = report["total"]["reference"]["validated"]
    ids = sorted(d["decision_id"] for d in loop.decided.values())
    assert v["polygons_used"] == 3 and v["decision_ids"] == ids
    assert v["by_status"] == {"confirmed": 1, "corrected": 1, "rejected": 1}
    assert {p["change_id"] for p in v["polygons"]} == set(loop.decided)
    assert v["n_tiles_read"] == 4 and v["n_tiles_skipped"] == 0 and v["polygons_rasterised"] == 3
    html = (folder / "report.html").read_text()
    assert "Validated changes used as reference" in html
    assert "3 validated polygon(s)</strong> used (confirmed 1, corrected 1, rejected as no change 1" in html
    assert ", ".join(f"#{i}" for i in ids) in html
    for cid in loop.decided:
        assert cid in html


def test_a_later_season_gets_them_carried_forward(loop: Loop) -> None:
    ctx = run_chain(loop.config, "2025", ("download", "features", "add_reference"), "chain-2025")
    markers = _markers(ctx)
    carried = {p["change_id"] for m in markers for p in m["validated"]["polygons"] if p["carried_forward"]}
    assert carried == set(loop.decided)
    assert {d for m in markers for d in m["validated"]["decision_ids"]} == {
        d["decision_id"] for d in loop.decided.values()
    }
