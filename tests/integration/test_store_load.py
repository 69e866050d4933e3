"""Loading a season's change polygons into the change store (the machine's PostgreSQL + PostGIS).

The change tables are written the way change_detection writes them (``changes.gpkg`` with a marker in
each tile's folder) for a 2 x 2-tile project; :func:`load_season` reads them through the run context.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import geopandas as gpd
import numpy as np
import psycopg2
import pytest
from shapely.geometry import Polygon, box

from lcms_tasks.changes import write_changes
from lcms_tasks.config import load_config
from lcms_tasks.context import RunContext
from lcms_tasks.errors import UpstreamMissingError
from lcms_tasks.grid import Tile
from lcms_tasks.store import load as store_load
from lcms_tasks.store import load_season
from tests.store_fixtures import query_rows as query

FOREST, CROPLAND, BUILT = 2, 4, 5  # ids in the demo legend are irrelevant here: names travel with the rows


def context(config_path: Path, *, season: str = "2024", run_id: str = "publish_1", **kw: Any) -> RunContext:
    return RunContext.create(load_config(config_path), season=season, run_id=run_id, **kw)


def write_tile(
    ctx: RunContext,
    tile: Tile,
    polygons: list[tuple[Any, int, int, float]],
    *,
    run_id: str,
    before: str | None = "2023",
) -> None:
    """Write ``tile``'s change table: (geometry in tile CRS, from, to, confidence) per change."""
    names = {FOREST: "forest", CROPLAND: "cropland", BUILT: "built-up"}
    frame = gpd.GeoDataFrame(
        {
            "change_id": np.arange(1, len(polygons) + 1, dtype=np.int64),
            "from_class": np.asarray([p[1] for p in polygons], dtype=np.int64),
            "to_class": np.asarray([p[2] for p in polygons], dtype=np.int64),
            "from_name": [names[p[1]] for p in polygons],
            "to_name": [names[p[2]] for p in polygons],
            "area_m2": np.asarray([p[0].area for p in polygons], dtype=np.float64),
            "confidence": np.asarray([p[3] for p in polygons], dtype=np.float64),
            "tile": tile.id,
            "season_before": before or "",
            "season_after": ctx.season,
        },
        geometry=gpd.GeoSeries([p[0] for p in polygons], crs=tile.crs),
        crs=tile.crs,
    )
    meta = ctx.marker_meta(
        "change_detection",
        tile.id,
        {"season_before": before, "season_after": ctx.season, "upstream": {"before": "pp_2023", "after": "pp_2024"}},
    )
    meta["run_id"] = run_id
    with ctx.storage.writing_dir(ctx.tile_uri("change_detection", tile.id), meta) as staging:
        write_changes(frame, staging / "changes.gpkg")


def write_season(ctx: RunContext, per_tile: dict[int, list[tuple[Any, int, int, float]]], *, run_id: str) -> None:
    for k, tile in enumerate(ctx.tiles()):
        write_tile(ctx, tile, per_tile.get(k, []), run_id=run_id)


def square(tile: Tile, dx: float, dy: float, w: float = 100.0, h: float | None = None) -> Polygon:
    x0, y0, _, _ = tile.bounds
    return box(x0 + dx, y0 + dy, x0 + dx + w, y0 + dy + (h if h is not None else w))


def execute(url: str, sql: str, *args: object) -> None:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
        conn.commit()
    finally:
        conn.close()


def decide(
    url: str, change_id: str, action: str, status: str, *, extra_sql: str = "", extra: tuple[Any, ...] = ()
) -> None:
    """What the operator application does: update with optimistic locking and append a decision, in one go."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"UPDATE lcms.changes SET status = %s, version = version + 1{extra_sql} WHERE id = %s AND version = 1",
                (status, *extra, change_id),
            )
            assert cur.rowcount == 1
            cur.execute(
                "INSERT INTO lcms.decisions (change_id, decided_by, action, previous, new) "
                "VALUES (%s, 'operator', %s, '{\"status\": \"detected\"}', json_build_object('status', %s::text))",
                (change_id, action, status),
            )
        conn.commit()
    finally:
        conn.close()


def id_at(url: str, lon_lat_of: Polygon, tile: Tile) -> str:
    """The id of the stored change containing the centre of ``lon_lat_of`` (a polygon in the tile's CRS)."""
    from pyproj import Transformer

    x, y = lon_lat_of.centroid.coords[0]
    lon, lat = Transformer.from_crs(tile.epsg, 4326, always_xy=True).transform(x, y)
    found = query(
        url, "SELECT id FROM lcms.changes WHERE ST_Contains(geom, ST_SetSRID(ST_Point(%s, %s), 4326))", lon, lat
    )
    assert len(found) == 1, found
    return str(found[0][0])


def test_load_then_reload_keeps_decided_changes_and_links_new_detections(store_url: str, config_path: Path) -> None:
    ctx = context(config_path, run_id="publish_1")
    t0 = ctx.tiles()[0]
    confirm, reject, correct, stays = (square(t0, 100 + 200 * i, 100) for i in range(4))
    write_season(
        ctx,
        {0: [(confirm, FOREST, BUILT, 0.9), (reject, FOREST, CROPLAND, 0.8), (correct, FOREST, BUILT, 0.7),
             (stays, FOREST, CROPLAND, 0.6)]},
        run_id="cd_1",
    )  # fmt: skip
    first = load_season(store_url, ctx)
    assert (first["read"], first["inserted"], first["replaced"], first["linked"], first["kept"]) == (4, 4, 0, 0, 0)
    assert first["season_before"] == "2023" and first["season_after"] == "2024"
    ids = {
        name: id_at(store_url, g, t0) for name, g in (("confirm", confirm), ("reject", reject), ("correct", correct))
    }
    decide(store_url, ids["confirm"], "confirm", "confirmed")
    decide(store_url, ids["reject"], "reject", "rejected")
    decide(
        store_url,
        ids["correct"],
        "correct",
        "corrected",
        extra_sql=", corrected_to_class = %s, corrected_geom = ST_Multi(ST_Buffer(geom, 0.0001))",
        extra=(CROPLAND,),
    )
    decided_sql = "SELECT row_to_json(c)::text FROM lcms.changes c WHERE status <> 'detected' ORDER BY id"
    before = query(store_url, decided_sql)
    assert len(before) == 3

    # change_detection runs again: the confirmed change is seen again (shifted), the rejected one exactly as
    # before, a new one appears, the undecided one is gone
    again = context(config_path, run_id="publish_2")
    write_season(
        again,
        {0: [(square(t0, 130, 120), FOREST, BUILT, 0.95), (reject, FOREST, CROPLAND, 0.85),
             (square(t0, 100, 600), FOREST, BUILT, 0.7)]},
        run_id="cd_2",
    )  # fmt: skip
    second = load_season(store_url, again)
    assert (second["read"], second["inserted"], second["replaced"], second["linked"], second["kept"]) == (3, 1, 1, 2, 3)
    assert query(store_url, decided_sql) == before  # decided changes untouched, to the byte
    statuses = sorted(r[0] for r in query(store_url, "SELECT status FROM lcms.changes"))
    assert statuses == ["confirmed", "corrected", "detected", "rejected"]
    links = query(
        store_url,
        "SELECT change_id::text, run_id, season_before, season_after, to_class, round(area_m2), overlap_m2 > 0, "
        "ST_IsValid(geom) FROM lcms.detection_links ORDER BY run_id, change_id",
    )
    assert sorted(r[0] for r in links) == sorted([ids["confirm"], ids["reject"]])
    assert all(r[1] == "cd_2" and r[2:4] == ("2023", "2024") and r[6] and r[7] for r in links)
    # nothing duplicated where a decided change is
    near = "ST_Intersects(geom, (SELECT geom FROM lcms.changes WHERE id = %s))"
    assert query(store_url, f"SELECT count(*) FROM lcms.changes WHERE {near}", ids["confirm"]) == [(1,)]

    # the same run loaded twice: links are not duplicated
    third = load_season(store_url, again)
    assert (third["inserted"], third["replaced"], third["linked"]) == (1, 1, 2)
    assert query(store_url, "SELECT count(*) FROM lcms.detection_links") == [(2,)]
    loads = query(
        store_url, "SELECT run_id, n_read, n_inserted, n_replaced, n_linked, n_kept FROM lcms.loads ORDER BY id"
    )
    assert loads == [("publish_1", 4, 4, 0, 0, 0), ("publish_2", 3, 1, 1, 2, 3), ("publish_2", 3, 1, 1, 2, 3)]


def test_change_crossing_a_tile_edge_is_one_polygon(store_url: str, config_path: Path) -> None:
    ctx = context(config_path)
    tiles = ctx.tiles()
    left = next(t for t in tiles if t.col == min(t.col for t in tiles) and t.row == tiles[0].row)
    right = next(t for t in tiles if t.col == left.col + 1 and t.row == left.row)
    side = left.side_m
    for tile in tiles:
        polygons: list[tuple[Any, int, int, float]] = []
        if tile is left:
            polygons = [(square(left, side - 60, 300, 60, 80), FOREST, BUILT, 0.6)]
        elif tile is right:
            polygons = [(square(right, 0, 300, 140, 80), FOREST, BUILT, 0.9)]
        write_tile(ctx, tile, polygons, run_id="cd_1")
    out = load_season(store_url, ctx)
    assert (out["read"], out["merged"], out["cross_tile_changes"], out["inserted"]) == (2, 1, 1, 1)
    (row,) = query(
        store_url,
        "SELECT tiles, area_m2, confidence, ST_NumGeometries(geom), ST_IsValid(geom), ST_SRID(geom), "
        "ST_Area(geom::geography) FROM lcms.changes",
    )
    tiles_of, area, confidence, parts, valid, srid, geodesic = row
    assert sorted(tiles_of) == sorted([left.id, right.id])
    assert area == pytest.approx(200 * 80)  # measured in the UTM zone
    assert confidence == pytest.approx((60 * 0.6 + 140 * 0.9) / 200)
    assert (parts, valid, srid) == (1, True, 4326)
    assert geodesic == pytest.approx(area, rel=0.01)


def test_invalid_geometries_are_fixed_or_rejected_and_counted(store_url: str, config_path: Path) -> None:
    ctx = context(config_path)
    t0 = ctx.tiles()[0]
    x0, y0, _, _ = t0.bounds
    bowtie = Polygon([(x0 + 100, y0 + 100), (x0 + 200, y0 + 200), (x0 + 200, y0 + 100), (x0 + 100, y0 + 200)])
    spike = Polygon([(x0 + 400, y0 + 400), (x0 + 500, y0 + 400), (x0 + 450, y0 + 400), (x0 + 400, y0 + 400)])
    assert not bowtie.is_valid and not spike.is_valid
    write_season(
        ctx,
        {0: [(bowtie, FOREST, BUILT, 0.9), (spike, FOREST, BUILT, 0.9), (square(t0, 600, 600), FOREST, BUILT, 0.9)]},
        run_id="cd_1",
    )
    out = load_season(store_url, ctx)
    assert (out["read"], out["fixed"], out["rejected"], out["inserted"]) == (3, 1, 1, 2)
    assert out["rejected_reasons"] == {"invalid, no area left once made valid": 1}
    stored = query(store_url, "SELECT bool_and(ST_IsValid(geom)), count(*), sum(area_m2) FROM lcms.changes")
    assert stored == [(True, 2, pytest.approx(100 * 100 + 2 * 2500))]
    assert query(store_url, "SELECT n_fixed, n_rejected FROM lcms.loads") == [(1, 1)]


class SpyCursor(psycopg2.extensions.cursor):
    """Records every statement and every COPY a load sends."""

    log: ClassVar[list[tuple[str, str]]] = []

    def execute(self, query: Any, vars: Any = None) -> Any:
        SpyCursor.log.append(("execute", str(query)))
        return super().execute(query, vars)

    def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> Any:
        SpyCursor.log.append(("copy", str(sql)))
        return super().copy_expert(sql, file, size)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    real_connect = store_load.connect

    def connect(url: str, **kw: Any) -> Any:
        conn = real_connect(url, **kw)
        conn.cursor_factory = SpyCursor
        return conn

    SpyCursor.log = []
    monkeypatch.setattr(store_load, "connect", connect)
    return SpyCursor.log


def test_bulk_load_uses_copy_not_row_by_row_inserts(store_url: str, spy: list[tuple[str, str]]) -> None:
    import datetime as dt

    from lcms_tasks.store.bench import synthetic_tiles
    from lcms_tasks.store.load import prepare_changes, store_changes

    def load(n: int, project: str) -> list[tuple[str, str]]:
        spy.clear()
        parts = synthetic_tiles(n, per_tile=500)
        rows = prepare_changes(parts, project=project, season_before="b0", season_after="b1")
        store_changes(
            store_url, rows, project=project, season_before="b0", season_after="b1",
            datetime=dt.datetime(2024, 4, 1, tzinfo=dt.UTC), load_run_id="r", scope_tiles=[p.tile for p in parts],
            chunk_rows=1000,
        )  # fmt: skip
        return list(spy)

    small, large = load(10, "small"), load(3000, "large")
    assert query(store_url, "SELECT project, count(*) FROM lcms.changes GROUP BY 1 ORDER BY 1") == [
        ("large", 3000),
        ("small", 10),
    ]
    for log in (small, large):
        copies = [sql for kind, sql in log if kind == "copy"]
        assert copies and all(sql.startswith("COPY lcms.changes (") and "FORMAT binary" in sql for sql in copies)
        assert not any("VALUES" in sql and "lcms.changes" in sql.split("VALUES")[0] for kind, sql in log)
    # statements do not grow with the rows: 3000 rows are 3 COPY chunks, the SQL around them is the same
    assert [s for k, s in small if k == "execute"] == [s for k, s in large if k == "execute"]
    assert len([1 for k, _ in large if k == "copy"]) == 3

    # with a decided change in the season pair: COPY into the temporary table, then set-based SQL
    execute(store_url, "UPDATE lcms.changes SET status = 'confirmed' WHERE id = (SELECT id FROM lcms.changes LIMIT 1)")
    project = query(store_url, "SELECT project FROM lcms.changes WHERE status = 'confirmed'")[0][0]
    log = load(10 if project == "small" else 3000, project)
    assert all(sql.startswith("COPY _lcms_load (") for kind, sql in log if kind == "copy")
    assert any(sql.startswith("INSERT INTO lcms.changes") and "SELECT" in sql for kind, sql in log if kind == "execute")


def test_first_season_has_nothing_to_load(store_url: str, config_path: Path) -> None:
    ctx = context(config_path, season="2023")
    for tile in ctx.tiles():
        write_tile(ctx, tile, [], run_id="cd_1", before=None)
    out = load_season(store_url, ctx)
    assert out["read"] == 0 and "no before season" in out["note"]
    assert query(store_url, "SELECT count(*) FROM lcms.loads") == [(0,)]


def test_missing_tile_output_is_named(store_url: str, config_path: Path) -> None:
    ctx = context(config_path)
    write_tile(ctx, ctx.tiles()[0], [], run_id="cd_1")
    with pytest.raises(UpstreamMissingError) as err:
        load_season(store_url, ctx)
    missing = [t.id for t in ctx.tiles()[1:]]
    assert err.value.tiles == missing and all(t in str(err.value) for t in missing)
    assert "lcms run change_detection" in str(err.value)


def test_subset_reload_replaces_only_its_tiles(store_url: str, config_path: Path) -> None:
    ctx = context(config_path)
    tiles = ctx.tiles()
    write_season(ctx, {k: [(square(t, 300, 300), FOREST, BUILT, 0.9)] for k, t in enumerate(tiles)}, run_id="cd_1")
    assert load_season(store_url, ctx)["inserted"] == 4
    sub = context(config_path, subset=[tiles[0].id])
    write_tile(sub, tiles[0], [(square(tiles[0], 500, 500), FOREST, BUILT, 0.9)], run_id="cd_2")
    out = load_season(store_url, sub)
    assert (out["tiles"], out["replaced"], out["inserted"]) == (1, 1, 1)
    by_tile = query(store_url, "SELECT tiles[1], run_id FROM lcms.changes ORDER BY 1")
    assert by_tile == sorted([(tiles[0].id, "cd_2")] + [(t.id, "cd_1") for t in tiles[1:]])


def test_cli_db_load(
    store_url: str, config_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from lcms_tasks.cli import main

    ctx = context(config_path)
    write_season(ctx, {1: [(square(ctx.tiles()[1], 200, 200), FOREST, CROPLAND, 0.8)]}, run_id="cd_1")
    monkeypatch.setenv("LCMS_DATABASE_URL", store_url)
    assert main(["db", "load", "--config", str(config_path), "--season", "2024", "--run-id", "cli_load"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["read"], out["inserted"], out["season_before"]) == (1, 1, "2023")
    assert query(store_url, "SELECT run_id FROM lcms.loads") == [("cli_load",)]


def test_change_detection_output_crossing_a_tile_edge_is_one_change(store_url: str, config_path: Path) -> None:
    """The stage's own output: a region of new built-up land across the border of two tiles is one change."""
    from lcms_tasks import eopatch
    from lcms_tasks.runner import run_tiles

    ctx = context(config_path, run_id="cd_real")
    tiles = ctx.tiles()
    left = min((t for t in tiles if t.row == tiles[0].row), key=lambda t: t.col)
    right = next(t for t in tiles if t.row == left.row and t.col == left.col + 1)
    n = left.size_px
    for tile in tiles:
        before = np.ones((n, n), dtype=np.uint8)  # cropland
        after = before.copy()
        if tile is left:
            after[20:30, n - 6 :] = 5  # built-up up to the right edge
        elif tile is right:
            after[20:30, :8] = 5  # and on from the left edge
        for season, cls in (("2023", before), ("2024", after)):
            pp = RunContext.create(ctx.config, season=season, run_id=f"pp-{season}")
            patch = eopatch.new_patch(tile, [])
            patch.mask_timeless["CLASS"] = cls[..., None]
            patch.data_timeless["CONFIDENCE"] = np.full((n, n, 1), 0.9, dtype=np.float32)
            uri = pp.tile_uri("postprocessing", tile.id)
            eopatch.save(pp.storage, uri, patch, meta=pp.marker_meta("postprocessing", tile.id, {"steps_applied": []}))
    result = run_tiles("change_detection", tiles, ctx)
    assert not result.failed and len(result.written) == len(tiles)
    out = load_season(store_url, ctx)
    assert (out["read"], out["merged"], out["inserted"]) == (2, 1, 1)
    (row,) = query(
        store_url,
        "SELECT from_name, to_name, tiles, area_m2, confidence, run_id, model_run_ids, ST_NumGeometries(geom), "
        "ST_IsValid(geom) FROM lcms.changes",
    )
    pixel = left.resolution**2
    assert row[:2] == ("cropland", "built-up")
    assert sorted(row[2]) == sorted([left.id, right.id])
    assert row[3] == pytest.approx(10 * 14 * pixel)
    assert row[4] == pytest.approx(0.81)
    assert row[5] == "cd_real" and set(row[6]) == {"pp-2023", "pp-2024"}
    assert row[7:] == (1, True)
