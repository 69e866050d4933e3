"""Validated changes as reference: the feedback rule, per-tile polygons, lineage, geometry and decision checks.

Pure functions only (no database): :func:`lcms_tasks.reference.validated.apply_rule` and friends,
the Validation API's geometry check and request check, the report's section on validated polygons.
"""

from __future__ import annotations

from typing import Any

import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from lcms_service.validation_project import GeometryProblemError, ProjectInfo, check_geometry
from lcms_service.validation_store import Decision, DecisionProblemError, check_request
from lcms_tasks.errors import ConfigError
from lcms_tasks.reference import validated as v

ORDER = ["2022", "2023", "2024", "2025"]
SQUARE = shapely.box(47.0, 40.0, 47.01, 40.01)


def change(
    cid: str,
    status: str,
    after: str,
    *,
    geom: Any = SQUARE,
    from_class: int = 1,
    to_class: int = 2,
    corrected_to: int | None = None,
    decision: int | None = 7,
) -> v.StoreChange:
    before = ORDER[ORDER.index(after) - 1] if after in ORDER and ORDER.index(after) else "2021"
    return v.StoreChange(
        id=cid,
        status=status,
        season_before=before,
        season_after=after,
        from_class=from_class,
        to_class=to_class,
        geometry=geom,
        corrected_to_class=corrected_to,
        decision_id=decision,
    )


# -- classes and seasons ---------------------------------------------------------------------------


def test_reference_class_of_each_status() -> None:
    assert v.reference_class(change("a", "confirmed", "2023")) == 2  # the after class holds
    assert v.reference_class(change("a", "corrected", "2023", corrected_to=3)) == 3  # the corrected one
    assert v.reference_class(change("a", "corrected", "2023")) == 2  # geometry-only correction
    assert v.reference_class(change("a", "rejected", "2023")) == 1  # nothing changed: the before class
    assert v.reference_class(change("a", "detected", "2023")) == 2  # what the model claims


def test_serving_seasons() -> None:
    assert v.serving_seasons(ORDER, "2024") == ["2022", "2023", "2024"]
    assert v.serving_seasons(ORDER, "2024", 0) == ["2024"]
    assert v.serving_seasons(ORDER, "2024", 1) == ["2023", "2024"]
    assert v.serving_seasons(ORDER, "2022", 5) == ["2022"]
    with pytest.raises(ConfigError, match="unknown season '1999'"):
        v.serving_seasons(ORDER, "1999")


# -- the rule --------------------------------------------------------------------------------------


def test_own_season_decisions_are_reference_as_decided() -> None:
    cands = [
        change("c", "confirmed", "2024"),
        change("r", "rejected", "2024", decision=8),
        change("x", "corrected", "2024", corrected_to=4, decision=9),
    ]
    out, counts = v.apply_rule(cands, [], ORDER, "2024")
    assert [(p.change_id, p.class_id, p.kind, p.carried_forward) for p in out] == [
        ("c", 2, "validated", False),
        ("r", 1, "no_change", False),
        ("x", 4, "validated", False),
    ]
    assert [p.decision_id for p in out] == [7, 8, 9]
    assert counts.candidates == 3 and counts.carried_forward == 0 and counts.superseded == 0


def test_decisions_serve_later_seasons_never_earlier_ones() -> None:
    cands = [change("c", "confirmed", "2023")]
    out, counts = v.apply_rule(cands, [], ORDER, "2025")
    assert len(out) == 1 and out[0].carried_forward and out[0].serves_season == "2025"
    assert counts.carried_forward == 1
    assert v.apply_rule(cands, [], ORDER, "2022")[0] == []  # the past is not rewritten


def test_a_later_change_claiming_another_class_cuts_the_older_polygon() -> None:
    old = change("c", "confirmed", "2023", to_class=2)
    half = shapely.box(47.005, 40.0, 47.01, 40.01)
    later = [change("d", "detected", "2024", geom=half, from_class=2, to_class=5, decision=None)]
    out, counts = v.apply_rule([old], later, ORDER, "2025")
    assert len(out) == 1 and out[0].trimmed and counts.trimmed == 1
    assert out[0].geometry.area == pytest.approx(SQUARE.area / 2)
    assert not out[0].geometry.intersection(half).area > 1e-12


def test_a_later_change_covering_it_supersedes_the_older_polygon() -> None:
    old = change("c", "confirmed", "2023", to_class=2)
    later = [change("d", "confirmed", "2024", geom=SQUARE.buffer(0.001), from_class=2, to_class=3, decision=9)]
    out, counts = v.apply_rule([old, later[0]], later, ORDER, "2024")
    assert [p.change_id for p in out] == ["d"] and counts.superseded == 1  # the newer decision is the reference


def test_later_changes_that_agree_or_come_after_the_season_cut_nothing() -> None:
    old = change("c", "confirmed", "2023", to_class=2)
    agreeing = change("r", "rejected", "2024", from_class=2, to_class=6)  # no change: class 2 still holds
    future = change("f", "detected", "2025", from_class=2, to_class=6)  # after the season processed
    same_season = change("s", "detected", "2023", from_class=4, to_class=5)  # not later than the decision
    out, _ = v.apply_rule([old], [agreeing, future, same_season], ORDER, "2024")
    assert len(out) == 1 and not out[0].trimmed and shapely.equals(out[0].geometry, SQUARE)


def test_unknown_seasons_and_statuses_are_ignored() -> None:
    cands = [change("a", "confirmed", "1990"), change("b", "detected", "2024")]
    assert v.apply_rule(cands, [], ORDER, "2024")[0] == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(ORDER[1:]), st.integers(1, 4), st.floats(0, 0.009), st.floats(0, 0.009)),
        min_size=0,
        max_size=6,
    )
)
def test_rule_never_grows_a_polygon_nor_keeps_contested_ground(later_spec: list[tuple[str, int, float, float]]) -> None:
    """Whatever later changes say, the reference polygon stays inside the decided one and off every later
    change that claims another class."""
    old = change("c", "confirmed", "2023", to_class=2)
    later = [
        change(
            f"l{i}", "detected", season, geom=shapely.box(47 + x, 40 + y, 47 + x + 0.003, 40 + y + 0.003), to_class=k
        )
        for i, (season, k, x, y) in enumerate(later_spec)
    ]
    out, counts = v.apply_rule([old], later, ORDER, "2025")
    assert counts.candidates == 1 and len(out) + counts.superseded == 1
    for p in out:
        assert p.geometry.difference(SQUARE).area < 1e-12
        for lc in later:
            if lc.claimed_class != 2 and lc.season_after > "2023":
                assert p.geometry.intersection(lc.geometry).area < 1e-12


# -- per tile --------------------------------------------------------------------------------------


def _tile_bounds_utm() -> tuple[tuple[float, float, float, float], str]:
    import geopandas as gpd

    utm = gpd.GeoSeries([SQUARE], crs=4326).to_crs(32638).iloc[0]
    x0, y0, x1, y1 = utm.bounds
    return (x0 - 100, y0 - 100, x1 + 100, y1 + 100), "EPSG:32638"


def test_tile_polygons_reproject_prioritise_and_key_by_change() -> None:
    bounds, crs = _tile_bounds_utm()
    polys, _ = v.apply_rule(
        [change("c", "confirmed", "2024"), change("r", "rejected", "2024", decision=8)], [], ORDER, "2024"
    )
    out = v.tile_polygons(polys, bounds=bounds, crs=crs, legend_ids={1, 2}, priority=50, rejected_priority=45)
    assert [(p.label, p.priority) for p in out.polygons] == [(2, 50), (1, 45)]
    assert out.polygons[0].key == v.polygon_key("c") != out.polygons[1].key
    assert out.polygons[0].geometry.area == pytest.approx(shapely.area(out.polygons[1].geometry))
    assert 1000 * 800 < out.polygons[0].geometry.area < 900 * 1200  # ~ 850 m x 1110 m in metres
    assert out.stats is not None and out.stats.polygons_read == 2 and out.stats.polygons_used == 2
    lineage = out.lineage([out.polygons[0].key])
    assert lineage["polygons_used"] == 2 and lineage["polygons_rasterised"] == 1
    assert lineage["decision_ids"] == [7, 8] and lineage["by_status"] == {"confirmed": 1, "corrected": 0, "rejected": 1}
    assert [p["rasterised"] for p in lineage["polygons"]] == [True, False]


def test_tile_polygons_count_classes_outside_the_legend_and_clip_to_the_tile() -> None:
    bounds, crs = _tile_bounds_utm()
    polys, _ = v.apply_rule([change("c", "confirmed", "2024", to_class=9)], [], ORDER, "2024")
    out = v.tile_polygons(polys, bounds=bounds, crs=crs, legend_ids={1, 2}, priority=50, rejected_priority=45)
    assert out.polygons == [] and out.stats is not None and dict(out.stats.unknown_codes) == {"9": 1}
    far = (0.0, 0.0, 1000.0, 1000.0)
    polys, _ = v.apply_rule([change("c", "confirmed", "2024")], [], ORDER, "2024")
    out = v.tile_polygons(polys, bounds=far, crs=crs, legend_ids={1, 2}, priority=50, rejected_priority=45)
    assert out.polygons == [] and out.used == []


# -- the API's checks ------------------------------------------------------------------------------


def _poly(coords: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [coords]}


RING = [[47.0, 40.0], [47.01, 40.0], [47.01, 40.01], [47.0, 40.01], [47.0, 40.0]]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "Point", "coordinates": [47.0, 40.0]}, "a 'Point' is not a Polygon or MultiPolygon"),
        ({"type": "Polygon"}, "coordinates are missing"),
        (_poly([[47.0, 40.0], [47.01, "x"], [47.0, 40.0], [47.0, 40.0]]), "is not a number"),
        (_poly([[47.0, 40.0], [47.01, float("nan")], [47.0, 40.01], [47.0, 40.0]]), "not finite"),
        ({"type": "Polygon", "coordinates": [[1, 2]]}, "is not [longitude, latitude]"),
        ({"type": "Polygon", "coordinates": []}, "empty"),
        (
            _poly([[498000.0, 4400000.0], [499000.0, 4400000.0], [499000.0, 4401000.0], [498000.0, 4400000.0]]),
            "not projected (e.g. UTM) coordinates",
        ),
        (
            _poly([[47.0, 40.0], [47.01, 40.01], [47.01, 40.0], [47.0, 40.01], [47.0, 40.0]]),
            "invalid: Self-intersection",
        ),
        (_poly([[47.0, 40.0], [47.01, 40.0], [47.0, 40.0]]), "invalid: Too few points"),
        (_poly([[47.0, 40.0], [47.01, 40.0], [47.01, 40.01], [47.0, 40.01]]), "do not form a closed linestring"),
        (_poly([[47.0, 40.0], [47.01, 40.0], [47.02, 40.0], [47.0, 40.0]]), "invalid"),
        ({**_poly(RING), "crs": {"type": "name", "properties": {"name": "EPSG:32638"}}}, "must be in EPSG:4326"),
    ],
)
def test_geometry_problems_are_named(data: dict[str, Any], message: str) -> None:
    with pytest.raises(GeometryProblemError, match="geometry: ") as err:
        check_geometry(data)
    assert message in str(err.value)


def test_good_geometries_pass() -> None:
    assert check_geometry(_poly(RING)).geom_type == "Polygon"
    multi = {
        "type": "MultiPolygon",
        "coordinates": [[RING]],
        "crs": {"properties": {"name": "urn:ogc:def:crs:OGC::CRS84"}},
    }
    assert check_geometry(multi).geom_type == "MultiPolygon"


def test_aoi_check() -> None:
    info = ProjectInfo(project="p", aoi=shapely.box(47.0, 40.0, 47.1, 40.1))
    info.check_in_aoi(shapely.box(47.05, 40.05, 47.06, 40.06), "p")
    info.check_in_aoi(shapely.box(10, 10, 11, 11), "another project")  # not the config's project: not checked
    with pytest.raises(GeometryProblemError, match="outside the AOI of project 'p'"):
        info.check_in_aoi(shapely.box(10, 10, 11, 11), "p")


def test_regions() -> None:
    info = ProjectInfo(project="p", regions={"north": shapely.box(0, 1, 1, 2)}, region_column="region")
    assert shapely.from_wkb(info.region_wkb("north")).equals(shapely.box(0, 1, 1, 2))
    with pytest.raises(LookupError, match="unknown region 'south'; the regions of 'p': north"):
        info.region_wkb("south")
    with pytest.raises(LookupError, match="has no regions"):
        ProjectInfo(project="p").region_wkb("north")


@pytest.mark.parametrize(
    ("decision", "message"),
    [
        (Decision("confirm", 1, "op", to_class=2), "only a 'correct' decision sets classes"),
        (Decision("reject", 1, "op", geometry=SQUARE), "geometry: only a 'correct'"),
        (Decision("correct", 1, "op"), "nothing corrected"),
        (Decision("comment", 1, "op", comment="  "), "needs a non-empty comment"),
    ],
)
def test_malformed_decisions(decision: Decision, message: str) -> None:
    with pytest.raises(DecisionProblemError, match=message):
        check_request(decision)
    check_request(Decision("correct", 1, "op", to_class=3))


# -- the report ------------------------------------------------------------------------------------


def test_report_counts_each_validated_polygon_once_and_names_its_decision() -> None:
    from lcms_tasks.report.html import _validated_section
    from lcms_tasks.stages.reporting import _Acc, _validated_totals

    def block(*polys: dict[str, Any]) -> dict[str, Any]:
        return {"polygons_used": len(polys), "polygons": list(polys)}

    a = {"change_id": "c1", "decision_id": 11, "status": "confirmed", "class": 2, "season_after": "2024"}
    b = {"change_id": "c2", "decision_id": 12, "status": "rejected", "class": 1, "season_after": "2024"}
    acc = _Acc(zones=[])
    acc.validated = [("t1", block(a | {"rasterised": True}, b)), ("t2", block(a)), ("t3", {"skipped": "no store"})]
    totals = _validated_totals(acc)
    assert totals is not None
    assert totals["polygons_used"] == 2 and totals["decision_ids"] == [11, 12]  # c1 crosses two tiles: once
    assert totals["by_status"] == {"confirmed": 1, "corrected": 0, "rejected": 1}
    assert totals["polygons_rasterised"] == 1 and totals["n_tiles_skipped"] == 1
    assert totals["polygons"][0]["tiles"] == ["t1", "t2"]
    html = "".join(_validated_section(totals, {1: "cropland", 2: "forest"}))
    assert "2 validated polygon(s)</strong> used (confirmed 1, corrected 0, rejected as no change 1" in html
    assert "#11, #12" in html and "forest" in html and "not read on some tiles: no store (1 tile(s))" in html
    acc.validated = [("t3", {"skipped": "no store"})]
    assert "<p>The change store was not read: no store (1 tile(s)).</p>" in "".join(
        _validated_section(_validated_totals(acc), {})
    )
    assert _validated_totals(_Acc(zones=[])) is None


# -- the add_reference source ----------------------------------------------------------------------


def test_change_store_source_options() -> None:
    from pydantic import ValidationError

    from lcms_tasks.stages import add_reference as ar

    default = ar.Options().sources
    assert [s.type for s in default] == ["synthetic_truth", "change_store"]
    store = default[1]
    assert isinstance(store, ar.ChangeStoreSource)
    assert store.statuses == ["confirmed", "corrected", "rejected"] and store.priority > store.rejected_priority > 0
    opts = ar.Options.model_validate(
        {"sources": [{"type": "change_store", "statuses": ["confirmed"], "seasons": ["x"]}]}
    )
    assert ar.source_name(0, opts.sources[0]) == "sources[0] change_store"
    assert ar.source_active(opts.sources[0], "x") and not ar.source_active(opts.sources[0], "y")
    for bad in ({"statuses": ["detected"]}, {"max_seasons_later": -1}, {"colour": "red"}):
        with pytest.raises(ValidationError):
            ar.Options.model_validate({"sources": [{"type": "change_store", **bad}]})


def test_change_store_source_without_a_database(config_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import lcms_tasks.store
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.errors import ChangeStoreError
    from lcms_tasks.stages import add_reference as ar

    monkeypatch.setattr(lcms_tasks.store, "database_url", lambda cfg=None: None)
    ctx = RunContext.create(load_config(config_path), season="2024")
    tile = ctx.tiles()[0]
    out = ar._change_store_polygons(ar.ChangeStoreSource(), ctx, tile, ar.Options())
    assert out.polygons == [] and out.skipped is not None and "no change store configured" in out.skipped
    assert out.lineage()["skipped"] == out.skipped
    with pytest.raises(ChangeStoreError, match="reference source 'change_store': no change store") as err:
        ar._change_store_polygons(ar.ChangeStoreSource(required=True), ctx, tile, ar.Options())
    assert err.value.permanent


def test_lineage_of_two_change_store_sources_is_merged() -> None:
    from lcms_tasks.stages.add_reference import _merge_lineage

    a = {
        "polygons_used": 1,
        "by_status": {"confirmed": 1},
        "change_ids": ["c"],
        "decision_ids": [3],
        "rule": {"trimmed": 1},
    }
    b = {"polygons_used": 2, "by_status": {"rejected": 2}, "change_ids": ["r", "s"], "decision_ids": [1, 2]}
    merged = _merge_lineage([a, b])
    assert merged["polygons_used"] == 3 and merged["by_status"] == {"confirmed": 1, "rejected": 2}
    assert merged["change_ids"] == ["c", "r", "s"] and merged["decision_ids"] == [1, 2, 3]
    assert merged["rule"] == {"trimmed": 1} and _merge_lineage([a]) is a
