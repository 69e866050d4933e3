"""AOI -> named tiles on a regular grid -> batches.

Tiles sit on a grid anchored at the origin of each projected CRS (UTM zones
by default), so a tile's id ``{epsg}_{column}_{row}`` depends only on the grid
(CRS, tile size, resolution), never on the AOI: the same ground always gets
the same id. An AOI spanning several UTM zones gets tiles in each zone for
the part of the AOI inside that zone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcms_tasks.errors import ConfigError

if TYPE_CHECKING:
    import geopandas as gpd
    from shapely.geometry.base import BaseGeometry

    from lcms_tasks.config import GridConfig, ProjectConfig


@dataclass(frozen=True, order=True)
class Tile:
    """One tile of the grid: ``size_px`` x ``size_px`` pixels of ``resolution`` metres in ``epsg``."""

    epsg: int
    row: int  # grid row: floor(min_y / tile side); rows grow northwards
    col: int  # grid column: floor(min_x / tile side)
    size_px: int
    resolution: float

    @property
    def id(self) -> str:
        return f"{self.epsg}_{self.col}_{self.row}"

    @property
    def side_m(self) -> float:
        return self.size_px * self.resolution

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(min_x, min_y, max_x, max_y) in the tile's CRS."""
        s = self.side_m
        return (self.col * s, self.row * s, (self.col + 1) * s, (self.row + 1) * s)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size_px, self.size_px)

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    def transform(self) -> Any:
        """Affine transform of the tile's raster (rasterio convention, north up)."""
        from affine import Affine

        min_x, _, _, max_y = self.bounds
        return Affine(self.resolution, 0.0, min_x, 0.0, -self.resolution, max_y)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "epsg": self.epsg,
            "row": self.row,
            "col": self.col,
            "size_px": self.size_px,
            "resolution": self.resolution,
            "bounds": list(self.bounds),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tile:
        return cls(int(d["epsg"]), int(d["row"]), int(d["col"]), int(d["size_px"]), float(d["resolution"]))

    @classmethod
    def from_id(cls, tile_id: str, size_px: int, resolution: float) -> Tile:
        """Parse ``{epsg}_{col}_{row}`` (``ValueError`` naming the id if malformed)."""
        try:
            epsg, col, row = (int(part) for part in tile_id.split("_"))
        except ValueError:
            raise ValueError(f"malformed tile id {tile_id!r}: expected '<epsg>_<column>_<row>'") from None
        return cls(epsg, row, col, size_px, resolution)


@dataclass(frozen=True)
class Batch:
    """A group of tiles processed by one mapped task instance."""

    id: str
    tile_ids: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "tile_ids": list(self.tile_ids)}


def load_aoi(cfg: ProjectConfig, *, config_path: str | None = None) -> gpd.GeoDataFrame:
    """Read the AOI as a GeoDataFrame with a CRS and at least one non-empty polygon.

    ``ConfigError`` names the config file, the field and the AOI file.
    """
    import geopandas as gpd

    aoi = cfg.aoi
    if aoi.file is not None:
        path = cfg.resolve_path(aoi.file)
        field = "aoi.file"
        if not path.exists():
            raise ConfigError(f"AOI file {path} does not exist", path=config_path, field=field)
        try:
            frame = gpd.read_file(path, layer=aoi.layer) if aoi.layer else gpd.read_file(path)
        except Exception as err:  # GDAL raises many types; all mean "cannot read this file"
            raise ConfigError(f"cannot read AOI file {path}: {err}", path=config_path, field=field) from err
        where = str(path)
    else:
        field = "aoi.geojson"
        gj = aoi.geojson or {}
        features = gj.get("features") if gj.get("type") == "FeatureCollection" else None
        try:
            if features is not None:
                frame = gpd.GeoDataFrame.from_features(features, crs=aoi.crs)
            elif gj.get("type") == "Feature":
                frame = gpd.GeoDataFrame.from_features([gj], crs=aoi.crs)
            else:
                from shapely.geometry import shape

                frame = gpd.GeoDataFrame(geometry=[shape(gj)], crs=aoi.crs)
        except Exception as err:  # malformed GeoJSON of any sort
            raise ConfigError(f"invalid inline GeoJSON: {err}", path=config_path, field=field) from err
        where = "inline GeoJSON"
    if frame.crs is None:
        raise ConfigError(f"AOI ({where}) has no CRS; give the file a CRS (e.g. a .prj)", path=config_path, field=field)
    polygonal = frame[~frame.geometry.is_empty & frame.geometry.notna()]
    polygonal = polygonal[polygonal.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    if not polygonal.empty:
        from lcms_tasks.checks import coordinates_problem

        problem = coordinates_problem(polygonal, f"AOI ({where})")
        if problem:
            raise ConfigError(problem, path=config_path, field=field)
    if polygonal.empty or float(polygonal.to_crs(polygonal.estimate_utm_crs()).area.sum()) <= 0:
        raise ConfigError(f"AOI ({where}) has no polygon with a non-zero area", path=config_path, field=field)
    if aoi.region_column and aoi.region_column not in polygonal.columns:
        raise ConfigError(
            f"AOI ({where}) has no column {aoi.region_column!r}; columns: {list(polygonal.columns)}",
            path=config_path,
            field="aoi.region_column",
        )
    polygonal = polygonal.copy()
    polygonal["geometry"] = polygonal.geometry.make_valid()
    return polygonal


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 UTM zone containing (lon, lat)."""
    zone = min(max(math.floor((lon + 180.0) / 6.0) + 1, 1), 60)
    return (32600 if lat >= 0 else 32700) + zone


def _parts_by_crs(aoi: gpd.GeoDataFrame, grid: GridConfig) -> dict[int, BaseGeometry]:
    """The AOI's union split by target CRS: {epsg: geometry in that CRS}."""
    from shapely.geometry import box

    wgs = aoi.to_crs(4326).geometry.unary_union
    if grid.crs != "utm":
        epsg = int(grid.crs)
        return {epsg: aoi.to_crs(epsg).geometry.unary_union}
    import geopandas as gpd

    parts: dict[int, BaseGeometry] = {}
    min_lon, _, max_lon, _ = wgs.bounds
    for zone_idx in range(math.floor((min_lon + 180) / 6), math.floor((max_lon + 180) / 6) + 1):
        west = -180.0 + 6.0 * zone_idx
        for south, north, base in ((0.0, 84.0, 32600), (-80.0, 0.0, 32700)):
            piece = wgs.intersection(box(west, south, west + 6.0, north))
            if piece.is_empty or piece.area == 0:
                continue
            epsg = base + zone_idx + 1
            projected = gpd.GeoSeries([piece], crs=4326).to_crs(epsg).iloc[0]
            parts[epsg] = projected if epsg not in parts else parts[epsg].union(projected)
    return parts


def tiles_for_aoi(aoi: gpd.GeoDataFrame, grid: GridConfig) -> list[Tile]:
    """All grid tiles whose interior intersects the AOI, sorted (CRS, row, column)."""
    import numpy as np
    import shapely

    tiles: list[Tile] = []
    side = grid.tile_size_px * grid.resolution_m
    for epsg, geom in sorted(_parts_by_crs(aoi, grid).items()):
        min_x, min_y, max_x, max_y = geom.bounds
        cols = np.arange(math.floor(min_x / side), math.ceil(max_x / side))
        rows = np.arange(math.floor(min_y / side), math.ceil(max_y / side))
        cc, rr = np.meshgrid(cols, rows)
        cc, rr = cc.ravel(), rr.ravel()
        boxes = shapely.box(cc * side, rr * side, (cc + 1) * side, (rr + 1) * side)
        shapely.prepare(geom)
        hit = shapely.intersects(geom, boxes)
        # Touching along an edge is not enough: the tile must share area with the AOI.
        areas = shapely.area(shapely.intersection(geom, boxes[hit]))
        keep = np.flatnonzero(hit)[areas > 0]
        tiles.extend(Tile(epsg, int(rr[i]), int(cc[i]), grid.tile_size_px, grid.resolution_m) for i in keep)
    return sorted(tiles)


def project_tiles(cfg: ProjectConfig) -> list[Tile]:
    """The project's tiles (reads the AOI)."""
    return tiles_for_aoi(load_aoi(cfg), cfg.grid)


def select_tiles(tiles: list[Tile], subset: list[str] | None) -> list[Tile]:
    """Tiles restricted to ``subset`` ids (``ConfigError`` naming ids not in the project)."""
    if not subset:
        return tiles
    by_id = {t.id: t for t in tiles}
    unknown = [t for t in subset if t not in by_id]
    if unknown:
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise ConfigError(
            f"{len(unknown)} tile id(s) not in this project's grid: {shown} (`lcms tiles list CONFIG` lists them)",
            field="tiles",
        )
    return [by_id[t] for t in dict.fromkeys(subset)]


def make_batches(tiles: list[Tile], batch_size: int) -> list[Batch]:
    """Consecutive groups of ``batch_size`` tiles, ids ``b0000``, ``b0001``, ..."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [
        Batch(f"b{i // batch_size:04d}", tuple(t.id for t in tiles[i : i + batch_size]))
        for i in range(0, len(tiles), batch_size)
    ]


def tiles_geojson(tiles: list[Tile]) -> dict[str, Any]:
    """Tiles as a GeoJSON FeatureCollection in WGS84 (with id, epsg, row, col, native bounds)."""
    import geopandas as gpd
    from shapely.geometry import box

    features: list[dict[str, Any]] = []
    for epsg in sorted({t.epsg for t in tiles}):
        group = [t for t in tiles if t.epsg == epsg]
        frame = gpd.GeoDataFrame(
            {
                "id": [t.id for t in group],
                "epsg": epsg,
                "row": [t.row for t in group],
                "col": [t.col for t in group],
                "bounds": [json.dumps(list(t.bounds)) for t in group],
            },
            geometry=[box(*t.bounds) for t in group],
            crs=epsg,
        ).to_crs(4326)
        features.extend(json.loads(frame.to_json())["features"])
    return {"type": "FeatureCollection", "features": features}


def write_tiles_geojson(tiles: list[Tile], path: Path) -> None:
    """Write :func:`tiles_geojson` atomically to ``path``."""
    from lcms_tasks.storage import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(tiles_geojson(tiles)).encode())
