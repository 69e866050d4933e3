"""Tiling: tiles cover the AOI exactly once, ids are stable, batches partition the tiles."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon, box

from lcms_tasks.config import GridConfig, load_config
from lcms_tasks.grid import Tile, make_batches, project_tiles, select_tiles, tiles_for_aoi, tiles_geojson, utm_epsg


def _aoi(geom, crs=4326) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(geometry=[geom], crs=crs)


def _coverage_ok(aoi: gpd.GeoDataFrame, tiles: list[Tile]) -> None:
    ids = [t.id for t in tiles]
    assert len(ids) == len(set(ids)), "duplicate tile ids"
    unions_wgs = []
    for epsg in {t.epsg for t in tiles}:
        boxes = [box(*t.bounds) for t in tiles if t.epsg == epsg]
        aoi_here = aoi.to_crs(epsg).geometry.unary_union
        # Interiors pairwise disjoint: the summed area equals the union's area.
        union = shapely.union_all(boxes)
        assert sum(b.area for b in boxes) == pytest.approx(union.area, rel=1e-9)
        # Every tile shares area with the AOI.
        assert min(shapely.area(shapely.intersection(aoi_here, boxes))) > 0
        unions_wgs.append(gpd.GeoSeries([union], crs=epsg).to_crs(4326).iloc[0])
    # Every part of the AOI lies in some tile of its zone: nothing is left uncovered.
    aoi_wgs = aoi.to_crs(4326).geometry.unary_union
    uncovered = aoi_wgs.difference(shapely.union_all(unions_wgs))
    assert uncovered.area <= 1e-6 * aoi_wgs.area


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lon=st.floats(-170, 170),
    lat=st.floats(-60, 60),
    w=st.floats(0.005, 0.08),
    h=st.floats(0.005, 0.08),
    tile_px=st.sampled_from([32, 100, 256]),
    res=st.sampled_from([10.0, 20.0]),
)
def test_tiles_cover_aoi_exactly_once(lon: float, lat: float, w: float, h: float, tile_px: int, res: float) -> None:
    ring = [(lon, lat), (lon + w, lat + h * 0.3), (lon + w * 0.8, lat + h), (lon - w * 0.1, lat + h * 0.7)]
    aoi = _aoi(Polygon(ring))
    grid = GridConfig(tile_size_px=tile_px, resolution_m=res)
    tiles = tiles_for_aoi(aoi, grid)
    assert tiles
    _coverage_ok(aoi, tiles)
    # Stable: same AOI and grid give the same ids, whatever the AOI's CRS.
    again = tiles_for_aoi(aoi.to_crs(3857), grid)
    assert [t.id for t in again] == [t.id for t in tiles]


def test_aoi_across_utm_zones_gets_tiles_in_each_zone() -> None:
    # 11.9E..12.1E straddles the zone 32/33 boundary at 12E.
    aoi = _aoi(box(11.95, 46.0, 12.05, 46.03))
    tiles = tiles_for_aoi(aoi, GridConfig(tile_size_px=100, resolution_m=10))
    assert {t.epsg for t in tiles} == {32632, 32633}
    _coverage_ok(aoi, tiles)


def test_fixed_epsg_grid() -> None:
    aoi = _aoi(box(500000, 5000000, 502000, 5001000), crs=32633)
    tiles = tiles_for_aoi(aoi, GridConfig(tile_size_px=100, resolution_m=10, crs=32633))
    assert [t.id for t in tiles] == ["32633_500_5000", "32633_501_5000"]


def test_tile_edge_touch_is_not_a_hit() -> None:
    aoi = _aoi(box(1000, 1000, 2000, 2000), crs=32633)
    tiles = tiles_for_aoi(aoi, GridConfig(tile_size_px=100, resolution_m=10, crs=32633))
    assert [t.id for t in tiles] == ["32633_1_1"]


def test_utm_epsg() -> None:
    assert utm_epsg(14.5, 46.0) == 32633
    assert utm_epsg(47.6, 39.8) == 32638
    assert utm_epsg(-70.0, -33.0) == 32719


def test_tile_roundtrip_and_transform() -> None:
    t = Tile(32638, 3440, 498, 128, 10.0)
    assert Tile.from_dict(t.to_dict()) == t
    assert Tile.from_id(t.id, 128, 10.0) == t
    a = t.transform()
    assert (a.c, a.f, a.a, a.e) == (637440.0, 3440 * 1280.0 + 1280.0, 10.0, -10.0)
    with pytest.raises(ValueError, match="malformed tile id 'x_y'"):
        Tile.from_id("x_y", 128, 10.0)


@given(n=st.integers(0, 60), size=st.integers(1, 17))
def test_batches_partition_tiles(n: int, size: int) -> None:
    tiles = [Tile(32633, 0, i, 10, 10.0) for i in range(n)]
    batches = make_batches(tiles, size)
    flat = [t for b in batches for t in b.tile_ids]
    assert flat == [t.id for t in tiles]
    assert all(1 <= len(b.tile_ids) <= size for b in batches)
    assert len({b.id for b in batches}) == len(batches)


def test_demo_grid_and_subset(config_path: Path) -> None:
    cfg = load_config(config_path)
    tiles = project_tiles(cfg)
    assert len(tiles) == 4
    assert select_tiles(tiles, [tiles[1].id]) == [tiles[1]]
    with pytest.raises(ValueError, match="not in this project's grid: 1_2_3"):
        select_tiles(tiles, ["1_2_3"])
    fc = tiles_geojson(tiles)
    assert len(fc["features"]) == 4
    assert json.loads(fc["features"][0]["properties"]["bounds"]) == list(tiles[0].bounds)


def test_cli_tiles_list_writes_geojson(config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lcms_tasks.cli import main

    out = tmp_path / "grid.geojson"
    assert main(["tiles", "list", str(config_path), "--geojson", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("tile\tbatch")
    assert len(lines) == 5
    assert len(json.loads(out.read_text())["features"]) == 4
