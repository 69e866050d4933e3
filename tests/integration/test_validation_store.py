"""Decisions and validated reference on a real change store (PostgreSQL + PostGIS, a fresh migrated database).

* :func:`lcms_service.validation_store.decide`: each action's state, optimistic locking (a stale version
  is refused with the current state and nothing written, also under two concurrent decisions), the
  audit trail (who, when, previous and new state, comment; append-only), the checks that need the change.
* :func:`lcms_tasks.reference.validated.read_validated`: lineage, carried forward to later seasons,
  cut where later changes say otherwise; ``lcms reference export-validated``.
* :func:`lcms_service.validation_store.queue` and ``stats`` on hand-made rows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import geopandas as gpd
import psycopg2
import pytest
import shapely
import yaml

from lcms_service import validation_store as vs
from lcms_tasks.cli import main
from lcms_tasks.config import load_config
from lcms_tasks.reference import validated
from tests.store_fixtures import query_rows as rows
from tests.store_fixtures import run_async

NAMES = {1: "cropland", 2: "forest", 3: "grassland", 4: "water"}
LEGENDS = {"proj": NAMES}
SQUARE = shapely.box(47.0, 40.0, 47.002, 40.002)


def insert_change(
    url: str,
    *,
    geom: Any = SQUARE,
    project: str = "proj",
    before: str = "2023",
    after: str = "2024",
    from_class: int = 1,
    to_class: int = 2,
    confidence: float | None = 0.8,
    area_m2: float = 1000.0,
    status: str = "detected",
) -> uuid.UUID:
    """One row of ``lcms.changes`` (geometry in EPSG:4326); its id."""
    cid = uuid.uuid4()
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                """INSERT INTO lcms.changes (id, project, season_before, season_after, from_class, from_name,
                       to_class, to_name, area_m2, confidence, geom, run_id, status, datetime)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                       ST_Multi(ST_GeomFromText(%s, 4326)), 'run', %s, %s)""",
                (
                    str(cid),
                    project,
                    before,
                    after,
                    from_class,
                    NAMES.get(from_class, "?"),
                    to_class,
                    NAMES.get(to_class, "?"),
                    area_m2,
                    confidence,
                    geom.wkt,
                    status,
                    dt.datetime(int(after) if after.isdigit() else 2000, 4, 1, tzinfo=dt.UTC),
                ),
            )
    finally:
        conn.close()
    return cid


def decide(url: str, cid: uuid.UUID, action: str, version: int, **kw: Any) -> tuple[vs.ChangeDetail, int]:
    decision = vs.Decision(action=action, version=version, decided_by=kw.pop("by", "alice"), **kw)
    return run_async(url, lambda c: vs.decide(c, cid, decision, legends=LEGENDS))


# -- decisions -------------------------------------------------------------------------------------


def test_confirm_appends_the_decision_with_previous_and_new_state(store_url: str) -> None:
    cid = insert_change(store_url)
    detail, did = decide(store_url, cid, "confirm", 1, comment="clear in the imagery")
    assert detail.status == "confirmed" and detail.version == 2
    assert [d.id for d in detail.decisions] == [did]
    d = detail.decisions[0]
    assert d.action == "confirm" and d.decided_by == "alice" and d.comment == "clear in the imagery"
    assert d.previous == {
        "status": "detected",
        "corrected_from_class": None,
        "corrected_to_class": None,
        "corrected_geometry": None,
        "version": 1,
    }
    assert d.new["status"] == "confirmed" and d.new["version"] == 2
    assert abs((d.decided_at - dt.datetime.now(dt.UTC)).total_seconds()) < 60
    with pytest.raises(psycopg2.Error, match="append-only"):
        rows(store_url, "DELETE FROM lcms.decisions RETURNING id")


def test_stale_version_is_refused_with_the_current_state_and_nothing_written(store_url: str) -> None:
    cid = insert_change(store_url)
    decide(store_url, cid, "reject", 1, by="bob")
    before = rows(store_url, "SELECT status, version, updated_at FROM lcms.changes WHERE id = %s", str(cid))
    with pytest.raises(vs.StaleVersionError) as err:
        decide(store_url, cid, "confirm", 1, by="alice")
    assert err.value.current.status == "rejected" and err.value.current.version == 2
    assert err.value.current.decisions[-1].decided_by == "bob"
    assert "version 2" in str(err.value) and "version 1" in str(err.value)
    assert rows(store_url, "SELECT status, version, updated_at FROM lcms.changes WHERE id = %s", str(cid)) == before
    assert rows(store_url, "SELECT count(*) FROM lcms.decisions")[0][0] == 1


def test_two_operators_on_the_same_version_one_wins(store_url: str) -> None:
    cid = insert_change(store_url)

    async def both() -> list[Any]:
        conns = [await asyncpg.connect(store_url) for _ in range(2)]
        try:
            tasks = [
                vs.decide(c, cid, vs.Decision(action=a, version=1, decided_by=who), legends=LEGENDS)
                for c, a, who in zip(conns, ("confirm", "reject"), ("alice", "bob"), strict=True)
            ]
            return await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for c in conns:
                await c.close()

    results = asyncio.run(both())
    stale = [r for r in results if isinstance(r, vs.StaleVersionError)]
    won = [r for r in results if isinstance(r, tuple)]
    assert len(stale) == 1 and len(won) == 1
    assert stale[0].current.status == won[0][0].status and stale[0].current.version == 2
    assert rows(store_url, "SELECT count(*) FROM lcms.decisions")[0][0] == 1


def test_correct_classes_and_geometry_then_supersede(store_url: str) -> None:
    cid = insert_change(store_url)
    edited = shapely.box(47.0, 40.0, 47.001, 40.002)
    detail, _ = decide(store_url, cid, "correct", 1, to_class=3, geometry=edited, comment="grass, smaller")
    assert detail.status == "corrected" and detail.corrected_to_class == 3 and detail.corrected_to_name == "grassland"
    assert detail.corrected_from_class is None  # not corrected
    assert detail.corrected_geometry is not None and detail.corrected_geometry.type == "MultiPolygon"
    assert shapely.geometry.shape(detail.corrected_geometry.model_dump()).equals(shapely.MultiPolygon([edited]))
    assert detail.bbox == pytest.approx([47.0, 40.0, 47.002, 40.002])
    # A second correction of the class only keeps the edited geometry; the trail holds both states.
    detail, _ = decide(store_url, cid, "correct", 2, to_class=4)
    assert detail.corrected_to_class == 4 and detail.corrected_geometry is not None
    assert (
        detail.decisions[-1].previous["corrected_to_class"] == 3 and detail.decisions[-1].new["corrected_to_class"] == 4
    )
    # Confirming supersedes the correction: the detected change holds after all.
    detail, _ = decide(store_url, cid, "confirm", 3)
    assert detail.corrected_to_class is None and detail.corrected_geometry is None and detail.version == 4
    assert [d.action for d in detail.decisions] == ["correct", "correct", "confirm"]
    # A comment adds to the trail without changing the state or the version; reopen goes back to detected.
    detail, _ = decide(store_url, cid, "comment", 4, comment="checked again")
    assert detail.version == 4 and detail.status == "confirmed"
    detail, _ = decide(store_url, cid, "reopen", 4)
    assert detail.status == "detected" and detail.version == 5


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"to_class": 9}, "to_class 9 is not in the legend of project 'proj'"),
        ({"from_class": 0}, "from_class 0 is not in the legend"),
        ({"to_class": 1}, "would both be 1: that is no change; reject it instead"),
        ({"to_class": 2, "from_class": 1}, "nothing corrected"),
    ],
)
def test_corrections_that_cannot_apply(store_url: str, kw: dict[str, Any], message: str) -> None:
    cid = insert_change(store_url)
    with pytest.raises(vs.DecisionProblemError, match=message):
        decide(store_url, cid, "correct", 1, **kw)
    assert rows(store_url, "SELECT status, version FROM lcms.changes WHERE id = %s", str(cid)) == [("detected", 1)]
    assert rows(store_url, "SELECT count(*) FROM lcms.decisions")[0][0] == 0


def test_unknown_change(store_url: str) -> None:
    with pytest.raises(vs.ChangeNotFoundError):
        decide(store_url, uuid.uuid4(), "confirm", 1)


def test_a_project_without_a_config_legend_uses_its_changes_classes(store_url: str) -> None:
    cid = insert_change(store_url, project="other", from_class=1, to_class=2)
    insert_change(store_url, project="other", from_class=3, to_class=4)
    detail, _ = decide(store_url, cid, "correct", 1, to_class=4)  # 4 is a class of the project's changes
    assert detail.corrected_to_name == "water"
    with pytest.raises(vs.DecisionProblemError, match="not in the legend of project 'other' \\(1 cropland"):
        decide(store_url, cid, "correct", 2, to_class=7)


# -- queue and stats -------------------------------------------------------------------------------


def test_queue_orders_filters_and_counts(store_url: str) -> None:
    a = insert_change(store_url, area_m2=1000, confidence=0.9)  # priority 100
    b = insert_change(store_url, area_m2=500, confidence=0.5)  # 250
    c = insert_change(store_url, area_m2=200, confidence=None)  # 200: unknown confidence counts as 0
    d = insert_change(store_url, area_m2=5000, confidence=0.99, from_class=3, to_class=4)  # 50
    insert_change(store_url, project="other")
    decide(store_url, d, "confirm", 1)

    def page(**kw: Any) -> vs.ChangePage:
        order = kw.pop("order", "priority")
        return run_async(store_url, lambda conn: vs.queue(conn, vs.QueueFilter(project="proj", **kw), order=order))

    p = page()
    assert [i.id for i in p.items] == [b, c, a, d] and p.total == 4
    assert p.counts.done == 1 and p.counts.left == 3
    assert p.items[0].priority == pytest.approx(250) and p.items[0].bbox == pytest.approx([47, 40, 47.002, 40.002])
    assert [i.id for i in page(order="area").items] == [d, a, b, c]
    assert [i.id for i in page(order="confidence").items][:2] == [c, b]
    p = page(status=["detected"])
    assert p.total == 3 and p.counts.done == 1 and p.counts.left == 3  # counts ignore the status filter
    assert [i.id for i in page(from_class=3, to_class=4).items] == [d]
    assert [i.id for i in page(min_confidence=0.6, max_confidence=0.95).items] == [a]
    assert [i.id for i in page(min_area_m2=400, max_area_m2=1000).items] == [b, a]
    region = shapely.to_wkb(shapely.box(46, 39, 46.5, 39.5))
    assert page(region_wkb=region).total == 0
    assert page(region_wkb=shapely.to_wkb(SQUARE.buffer(0.01))).total == 4


def test_stats_per_operator_and_transition(store_url: str) -> None:
    ids = [insert_change(store_url) for _ in range(3)] + [insert_change(store_url, from_class=3, to_class=4)]
    decide(store_url, ids[0], "confirm", 1, by="alice")
    decide(store_url, ids[1], "reject", 1, by="alice")
    decide(store_url, ids[2], "confirm", 1, by="bob")
    decide(store_url, ids[3], "correct", 1, by="bob", to_class=2)
    s = run_async(store_url, lambda c: vs.stats(c, project="proj"))
    ops = {o.operator: o for o in s.operators}
    assert ops["alice"].decided == 2 and ops["alice"].confirmed_share == 0.5
    assert ops["bob"].corrected == 1 and ops["bob"].confirmed == 1
    assert ops["alice"].median_seconds_per_decision is not None and ops["alice"].median_seconds_per_decision < 60
    tr = {(t.from_class, t.to_class): t for t in s.transitions}
    assert tr[(1, 2)].changes == 3 and tr[(1, 2)].decided == 3 and tr[(1, 2)].confirmed_share == pytest.approx(2 / 3)
    assert tr[(3, 4)].corrected == 1 and tr[(3, 4)].confirmed_share == 0.0
    assert s.decided == 4 and s.changes == 4 and "30 minutes" in s.timing
    assert run_async(store_url, lambda c: vs.stats(c, project="nobody")).operators == []


# -- validated reference ---------------------------------------------------------------------------


@pytest.fixture
def cfg_path(tmp_path: Path, store_url: str) -> Path:
    from tests.conftest import base_config, write_aoi

    write_aoi(tmp_path / "aoi.geojson")
    cfg = base_config("aoi.geojson", "data")
    cfg["project"] = "proj"
    cfg["seasons"]["2025"] = {"start": "2025-04-01", "end": "2025-09-30"}
    cfg["database"] = {"url": store_url}
    path = tmp_path / "project.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_read_validated_lineage_carry_forward_and_later_changes(store_url: str, cfg_path: Path) -> None:
    cfg = load_config(cfg_path)
    order = validated.season_order(cfg)
    confirmed = insert_change(store_url, from_class=1, to_class=2)
    rejected = insert_change(store_url, geom=shapely.box(47.01, 40.0, 47.012, 40.002), from_class=3, to_class=4)
    corrected = insert_change(store_url, geom=shapely.box(47.02, 40.0, 47.022, 40.002))
    insert_change(store_url, geom=shapely.box(47.03, 40.0, 47.032, 40.002))  # undecided: no reference
    insert_change(store_url, project="other", status="confirmed")  # another project
    _, d1 = decide(store_url, confirmed, "confirm", 1)
    _, d2 = decide(store_url, rejected, "reject", 1)
    _, d3 = decide(store_url, corrected, "correct", 1, to_class=3, geometry=shapely.box(47.02, 40.0, 47.021, 40.002))

    found, counts = validated.read_validated(store_url, project="proj", season="2024", order=order)
    by = {p.change_id: p for p in found}
    assert set(by) == {str(confirmed), str(rejected), str(corrected)} and counts.carried_forward == 0
    assert (by[str(confirmed)].class_id, by[str(confirmed)].decision_id) == (2, d1)
    assert (by[str(rejected)].class_id, by[str(rejected)].kind, by[str(rejected)].decision_id) == (3, "no_change", d2)
    assert by[str(corrected)].class_id == 3 and by[str(corrected)].decision_id == d3
    assert by[str(corrected)].geometry.area == pytest.approx(0.001 * 0.002)  # the edited geometry
    assert validated.read_validated(store_url, project="proj", season="2023", order=order)[0] == []
    only = validated.read_validated(store_url, project="proj", season="2024", order=order, statuses=["rejected"])[0]
    assert [p.change_id for p in only] == [str(rejected)]

    # 2025: carried forward, except where a 2024 -> 2025 detection says the confirmed forest became water.
    insert_change(
        store_url, geom=shapely.box(47.0, 40.0, 47.001, 40.002), before="2024", after="2025", from_class=2, to_class=4
    )
    found, counts = validated.read_validated(store_url, project="proj", season="2025", order=order)
    by = {p.change_id: p for p in found}
    assert len(found) == 3 and counts.carried_forward == 3 and counts.trimmed == 1
    assert by[str(confirmed)].trimmed and by[str(confirmed)].geometry.area == pytest.approx(0.001 * 0.002)
    assert not by[str(rejected)].trimmed
    assert validated.read_validated(store_url, project="proj", season="2025", order=order, max_seasons_later=0)[0] == []

    # Per tile: an envelope far away reads nothing.
    far = validated.tile_envelope((0.0, 0.0, 1000.0, 1000.0), "EPSG:32638")
    assert validated.read_validated(store_url, project="proj", season="2024", order=order, envelope=far)[0] == []


def test_export_validated_cli(
    store_url: str, cfg_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    confirmed = insert_change(store_url)
    rejected = insert_change(store_url, geom=shapely.box(47.01, 40.0, 47.012, 40.002))
    _, d1 = decide(store_url, confirmed, "confirm", 1)
    _, d2 = decide(store_url, rejected, "reject", 1)
    out = tmp_path / "out" / "validated.gpkg"
    assert main(["reference", "export-validated", "--config", str(cfg_path), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["polygons"] == 2 and summary["decision_ids"] == [d1, d2] and summary["rule"] is None
    frame = gpd.read_file(out, layer="validated")
    assert frame.crs.to_epsg() == 4326 and set(frame.geom_type) == {"MultiPolygon"}
    assert sorted(frame["status"]) == ["confirmed", "rejected"]
    assert set(validated.EXPORT_COLUMNS) <= set(frame.columns)
    row = frame.set_index("change_id").loc[str(rejected)]
    assert row["class_id"] == 1 and row["class_name"] == "cropland" and row["kind"] == "no_change"
    assert int(row["decision_id"]) == d2 and row["decided_by"] == "alice"

    # --season: what add_reference of that season reads (2025: carried forward from 2024).
    argv = ["reference", "export-validated", "--config", str(cfg_path), "--season", "2025", "--out", str(out)]
    assert main([*argv, "--status", "confirmed"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["polygons"] == 1 and summary["rule"]["carried_forward"] == 1
    assert gpd.read_file(out)["serves_season"].tolist() == ["2025"]
    assert main([*argv[:-4], "--season", "1999", "--out", str(out)]) == 2
    assert "unknown season '1999'" in capsys.readouterr().err
