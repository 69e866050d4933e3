"""Preparing change polygons for the store (no database): validity, dissolving across tile edges, ids, COPY encoding."""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import LineString, MultiPolygon, Polygon, box

from lcms_tasks.store import pgcopy
from lcms_tasks.store.load import TileChanges, _Encoder, prepare_changes

SIDE = 1280.0
EPSG = 32638


def tile_bounds(col: int, row: int) -> tuple[float, float, float, float]:
    return (col * SIDE, row * SIDE, (col + 1) * SIDE, (row + 1) * SIDE)


def part(
    col: int,
    row: int,
    geoms: list[Any],
    *,
    transitions: list[tuple[int, int]] | None = None,
    confidence: list[float] | None = None,
    epsg: int = EPSG,
    run_id: str = "cd_run",
) -> TileChanges:
    tile = f"{epsg}_{col}_{row}"
    n = len(geoms)
    trans = transitions or [(2, 5)] * n
    frame = gpd.GeoDataFrame(
        {
            "change_id": np.arange(1, n + 1),
            "from_class": [f for f, _ in trans],
            "to_class": [t for _, t in trans],
            "from_name": [f"c{f}" for f, _ in trans],
            "to_name": [f"c{t}" for _, t in trans],
            "area_m2": [g.area if g is not None else 0.0 for g in geoms],
            "confidence": confidence or [0.8] * n,
            "tile": tile,
            "season_before": "2023",
            "season_after": "2024",
        },
        geometry=gpd.GeoSeries(geoms, crs=f"EPSG:{epsg}"),
        crs=f"EPSG:{epsg}",
    )
    return TileChanges(
        tile, frame, run_id=run_id, upstream_run_ids=("pp_before", "pp_after"), bounds=tile_bounds(col, row)
    )


def prepare(*parts: TileChanges) -> Any:
    return prepare_changes(list(parts), project="p", season_before="2023", season_after="2024")


def test_polygon_crossing_a_tile_edge_becomes_one_change() -> None:
    edge = SIDE * 11  # the border between tile columns 10 and 11
    y0 = SIDE * 300
    left = part(10, 300, [box(edge - 40, y0 + 100, edge, y0 + 160)], confidence=[0.6])
    right = part(11, 300, [box(edge, y0 + 100, edge + 120, y0 + 160)], confidence=[0.9], run_id="cd_run2")
    rows = prepare(left, right)
    assert len(rows) == 1
    assert rows.n_merged == 1 and rows.n_cross_tile == 1
    assert rows.tiles[0] == (left.tile, right.tile)
    assert rows.area_m2[0] == pytest.approx(160 * 60)
    # area-weighted: 40 m x 60 m at 0.6, 120 m x 60 m at 0.9
    assert rows.confidence[0] == pytest.approx((2400 * 0.6 + 7200 * 0.9) / 9600)
    assert rows.geom[0].geom_type == "Polygon"
    assert rows.run_id[0] == "cd_run2"  # the newest of its tiles' runs
    assert rows.model_run_ids[0] == ("pp_after", "pp_before")


def test_chain_across_four_tiles_is_one_change() -> None:
    x, y = SIDE * 11, SIDE * 301  # the corner shared by four tiles
    pieces = [
        part(10, 300, [box(x - 50, y - 50, x, y)]),
        part(11, 300, [box(x, y - 50, x + 50, y)]),
        part(10, 301, [box(x - 50, y, x, y + 50)]),
        part(11, 301, [box(x, y, x + 50, y + 50)]),
    ]
    rows = prepare(*pieces)
    assert len(rows) == 1 and rows.n_merged == 3
    assert rows.geom[0].equals(box(x - 50, y - 50, x + 50, y + 50))
    assert len(rows.tiles[0]) == 4


def test_corner_touch_other_transition_and_other_zone_stay_apart() -> None:
    x, y = SIDE * 11, SIDE * 300 + 200
    corner = prepare(part(10, 300, [box(x - 30, y - 30, x, y)]), part(11, 300, [box(x, y, x + 30, y + 30)]))
    assert len(corner) == 2 and corner.n_merged == 0
    other = prepare(
        part(10, 300, [box(x - 30, y, x, y + 30)], transitions=[(2, 5)]),
        part(11, 300, [box(x, y, x + 30, y + 30)], transitions=[(3, 5)]),
    )
    assert len(other) == 2
    zones = prepare(part(10, 300, [box(x - 30, y, x, y + 30)]), part(11, 300, [box(x, y, x + 30, y + 30)], epsg=32639))
    assert len(zones) == 2 and sorted(zones.epsg.tolist()) == [32638, 32639]


def test_pieces_inside_one_tile_are_not_dissolved() -> None:
    # two regions of one transition touching along an edge inside a tile: the detector kept them apart
    x0, y0 = SIDE * 10 + 100, SIDE * 300 + 100
    rows = prepare(part(10, 300, [box(x0, y0, x0 + 20, y0 + 20), box(x0 + 20, y0, x0 + 40, y0 + 20)]))
    assert len(rows) == 2


def test_invalid_geometries_are_fixed_or_rejected_and_counted() -> None:
    x0, y0 = SIDE * 10 + 100, SIDE * 300 + 100
    bowtie = Polygon([(x0, y0), (x0 + 50, y0 + 50), (x0 + 50, y0), (x0, y0 + 50), (x0, y0)])
    flat = Polygon([(x0, y0), (x0 + 10, y0), (x0 + 20, y0), (x0, y0)])  # no area
    line = LineString([(x0, y0), (x0 + 5, y0 + 5)])
    good = box(x0 + 200, y0, x0 + 260, y0 + 60)
    assert not bowtie.is_valid and not flat.is_valid
    rows = prepare(
        part(
            10,
            300,
            [bowtie, flat, None, line, good, box(x0 + 400, y0, x0 + 420, y0 + 20)],
            confidence=[0.7, 0.7, 0.7, 0.7, 0.7, 1.5],
        )
    )
    assert rows.n_read == 6
    assert rows.n_fixed == 1
    assert rows.n_rejected == 4
    assert rows.rejected_reasons == {
        "empty geometry": 1,
        "not a polygon": 1,
        "invalid, no area left once made valid": 1,
        "confidence outside [0, 1]": 1,
    }
    assert len(rows) == 2
    assert shapely.is_valid(rows.geom).all()
    fixed = next(g for g in rows.geom if g.geom_type == "MultiPolygon")
    assert fixed.area == pytest.approx(1250.0)


def test_ids_are_stable_uuid5_and_depend_on_seasons_and_transition() -> None:
    g = box(SIDE * 10 + 100, SIDE * 300 + 100, SIDE * 10 + 150, SIDE * 300 + 150)
    a = prepare(part(10, 300, [g])).ids
    assert a == prepare(part(10, 300, [g])).ids
    assert uuid.UUID(a[0]).version == 5
    other_season = prepare_changes([part(10, 300, [g])], project="p", season_before="2022", season_after="2024").ids
    other_transition = prepare(part(10, 300, [g], transitions=[(3, 5)])).ids
    other_project = prepare_changes([part(10, 300, [g])], project="q", season_before="2023", season_after="2024").ids
    assert len({a[0], other_season[0], other_transition[0], other_project[0]}) == 4


def test_dissolved_id_does_not_depend_on_tile_order() -> None:
    edge, y0 = SIDE * 11, SIDE * 300
    left = part(10, 300, [box(edge - 40, y0 + 100, edge, y0 + 160)])
    right = part(11, 300, [box(edge, y0 + 100, edge + 120, y0 + 160)])
    assert prepare(left, right).ids == prepare(right, left).ids


def test_empty_input() -> None:
    rows = prepare(part(10, 300, []))
    assert len(rows) == 0 and rows.n_read == 0


def decode_copy(stream: bytes, n_fields: int) -> list[list[bytes | None]]:
    """Rows of a binary COPY stream as raw field bytes (None for NULL)."""
    assert stream.startswith(pgcopy.HEADER) and stream.endswith(pgcopy.TRAILER)
    pos, rows = len(pgcopy.HEADER), []
    while True:
        (count,) = struct.unpack_from(">h", stream, pos)
        pos += 2
        if count == -1:
            break
        assert count == n_fields
        row: list[bytes | None] = []
        for _ in range(count):
            (length,) = struct.unpack_from(">i", stream, pos)
            pos += 4
            if length == -1:
                row.append(None)
            else:
                row.append(stream[pos : pos + length])
                pos += length
        rows.append(row)
    assert pos == len(stream)
    return rows


def test_binary_copy_rows_round_trip() -> None:
    from lcms_tasks.store.load import COPY_COLUMNS

    x0, y0 = SIDE * 10 + 100, SIDE * 300 + 100
    multi = MultiPolygon([box(x0, y0, x0 + 10, y0 + 10), box(x0 + 30, y0, x0 + 40, y0 + 10)])
    rows = prepare(part(10, 300, [box(x0 + 100, y0, x0 + 150, y0 + 50), multi], confidence=[0.75, float("nan")]))
    constants = b"".join(
        [
            pgcopy.text("p"),
            pgcopy.text("2023"),
            pgcopy.text("2024"),
            pgcopy.timestamptz(dt.datetime(2024, 4, 1, tzinfo=dt.UTC)),
        ]
    )
    stream, n = _Encoder(rows, constants).encode(0, len(rows))
    assert n == 2
    decoded = decode_copy(stream, len(COPY_COLUMNS))
    col = {name: i for i, name in enumerate(COPY_COLUMNS)}
    for k, row in enumerate(decoded):
        assert row[col["id"]] == uuid.UUID(rows.ids[k]).bytes
        assert row[col["project"]] == b"p" and row[col["season_after"]] == b"2024"
        since_2000 = dt.datetime(2024, 4, 1, tzinfo=dt.UTC) - dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
        assert struct.unpack(">q", row[col["datetime"]])[0] == int(since_2000.total_seconds()) * 1_000_000
        assert struct.unpack(">i", row[col["from_class"]])[0] == 2
        assert struct.unpack(">d", row[col["area_m2"]])[0] == pytest.approx(rows.area_m2[k])
        geom = shapely.from_wkb(row[col["geom"]])
        assert geom.geom_type == "MultiPolygon" and shapely.get_srid(geom) == 4326
        lon, lat = Transformer.from_crs(EPSG, 4326, always_xy=True).transform(*rows.geom[k].centroid.coords[0])
        assert geom.centroid.x == pytest.approx(lon, abs=1e-6) and geom.centroid.y == pytest.approx(lat, abs=1e-6)
        assert geom.is_valid
        if np.isnan(rows.confidence[k]):  # the MultiPolygon (rows are in spatial order)
            assert row[col["confidence"]] is None
            assert len(shapely.get_parts(geom)) == 2
        else:
            assert struct.unpack(">d", row[col["confidence"]])[0] == 0.75
    assert sorted(np.isnan(rows.confidence).tolist()) == [False, True]


def test_duplicate_rows_are_encoded_once() -> None:
    g = box(SIDE * 10 + 100, SIDE * 300 + 100, SIDE * 10 + 150, SIDE * 300 + 150)
    rows = prepare(part(10, 300, [g]), part(10, 300, [g]))
    encoder = _Encoder(rows, b"")
    _, n = encoder.encode(0, len(rows))
    assert n == 1 and encoder.n_duplicates == 1


def test_text_array_and_timestamp_encoding() -> None:
    assert pgcopy.text_array([]) == struct.pack(">i", 12) + struct.pack(">iiI", 0, 0, 25)
    enc = pgcopy.text_array(["a", "bc"])
    assert enc[4:24] == struct.pack(">iiIii", 1, 0, 25, 2, 1)
    assert enc[24:] == struct.pack(">i", 1) + b"a" + struct.pack(">i", 2) + b"bc"
    assert pgcopy.timestamptz(dt.datetime(2000, 1, 1, 0, 0, 1, tzinfo=dt.UTC)) == struct.pack(">iq", 8, 1_000_000)
    with pytest.raises(ValueError, match="aware"):
        pgcopy.timestamptz(dt.datetime(2000, 1, 1))
