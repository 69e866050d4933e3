"""Reading reference polygons: vector files (any CRS, cached, bbox-filtered), crosswalks, synthetic truth.

A national reference file (LPIS, a land cover survey) may hold millions of polygons
while a tile needs a few hundred, and a worker processes many tiles. So small files
are read once per process (``functools.lru_cache`` keyed on path and modification
time, so an updated file is re-read) and large ones are read per tile with a bbox
filter in the file's own CRS (GDAL then uses the file's spatial index).

Class codes go through a crosswalk to legend ids. Codes the crosswalk does not know
are counted, never silently dropped; a crosswalk may map a code to 0 to say "this code
means no label" on purpose.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lcms_tasks.errors import ConfigError
from lcms_tasks.reference.rasterize import LabelledPolygon

if TYPE_CHECKING:
    import geopandas as gpd

    from lcms_tasks.config import LegendClass

# Files up to this size are read whole once per process; larger ones per tile with a bbox filter.
WHOLE_FILE_MAX_BYTES = 64 * 1024 * 1024
NULL_CODE = "<null>"


@dataclass
class SourceStats:
    """What reading one source for one tile found (goes into the stage's metadata)."""

    polygons_read: int = 0  # features intersecting the tile's window
    polygons_used: int = 0  # labelled polygons passed on to rasterisation
    unknown_codes: Counter[str] = field(default_factory=Counter)  # code -> polygons (not in the crosswalk)
    unlabelled_codes: Counter[str] = field(default_factory=Counter)  # code -> polygons mapped to 0 on purpose
    non_polygon: int = 0  # points/lines/empty geometries skipped
    too_small: int = 0  # below min_polygon_area_m2
    # Crosswalk chains only: per step, {file, unknown: {code as looked up at that step: polygons}}.
    unknown_codes_by_step: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "polygons_read": self.polygons_read,
            "polygons_used": self.polygons_used,
            "unknown_codes": dict(sorted(self.unknown_codes.items())),
            "unlabelled_codes": dict(sorted(self.unlabelled_codes.items())),
            "non_polygon": self.non_polygon,
            "too_small": self.too_small,
        }
        if self.unknown_codes_by_step:
            out["unknown_codes_by_step"] = self.unknown_codes_by_step
        return out


def code_key(value: Any) -> str:
    """A class code as a comparable string: 3, 3.0, '3' and ' 3' are the same code; null is '<null>'."""
    if value is None:
        return NULL_CODE
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return NULL_CODE
        if float(value).is_integer():
            return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    text = str(value).strip()
    return text if text else NULL_CODE


def stable_key(*parts: str | bytes) -> int:
    """A positive 63-bit integer identifying ``parts`` (blake2b; the same in every process and run)."""
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\x1f")
    return (int.from_bytes(digest.digest(), "big") & ((1 << 63) - 1)) or 1


def stable_uniform(seed: int, *parts: str) -> float:
    """A uniform number in [0, 1) fixed by ``seed`` and ``parts``."""
    return stable_key(str(seed), *parts) / float(1 << 63)


# -- crosswalks -------------------------------------------------------------------------------------


def resolve_class(value: str | int, legend: list[LegendClass], *, where: str) -> int:
    """Legend id of ``value`` (a class name, or an id; 0 = no label). ``ConfigError`` names the legend."""
    ids = {c.id for c in legend}
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        cid = int(value)
        if cid == 0 or cid in ids:
            return cid
        raise ConfigError(f"{where}: class id {cid} is not in the legend (ids: {sorted(ids)}; 0 = no label)")
    by_name = {c.name: c.id for c in legend}
    by_lower = {c.name.lower(): c.id for c in legend}
    name = str(value).strip()
    if name in by_name:
        return by_name[name]
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    raise ConfigError(f"{where}: class {value!r} is not in the legend (classes: {', '.join(by_name)})")


def read_crosswalk_csv(path: Path) -> dict[str | int, str | int]:
    """A crosswalk CSV with columns ``code,class`` as {code: class}."""
    if not path.is_file():
        raise ConfigError(f"crosswalk file {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "code" not in columns or "class" not in columns:
            raise ConfigError(f"crosswalk file {path} needs columns 'code' and 'class'; it has {columns}")
        table: dict[str | int, str | int] = {}
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): v for k, v in row.items() if k is not None}
            code = code_key(row["code"])
            if code in table and table[code] != row["class"]:
                raise ConfigError(f"crosswalk file {path} line {line}: code {code!r} is mapped twice")
            table[code] = row["class"]
    return table


def build_crosswalk(
    crosswalk: Mapping[str | int, str | int] | None, legend: list[LegendClass], *, where: str
) -> dict[str, int] | None:
    """{code key: legend id (0 = no label)} from a code -> class (name or id) mapping; None stays None."""
    if crosswalk is None:
        return None
    return {
        code_key(code): resolve_class(cls, legend, where=f"{where}, code {code!r}") for code, cls in crosswalk.items()
    }


def labels_for_codes(
    codes: Iterable[Any], crosswalk: Mapping[str, int] | None, legend_ids: set[int], stats: SourceStats
) -> np.ndarray:
    """Legend id per code (0 = none); unknown codes and deliberate no-label codes are counted in ``stats``."""
    out: list[int] = []
    for value in codes:
        key = code_key(value)
        if crosswalk is not None:
            cid = crosswalk.get(key)
        else:
            cid = int(key) if key.lstrip("-").isdigit() and (int(key) == 0 or int(key) in legend_ids) else None
        if cid is None:
            stats.unknown_codes[key] += 1
            cid = 0
        elif cid == 0:
            stats.unlabelled_codes[key] += 1
        out.append(cid)
    return np.asarray(out, dtype=np.int64)


# -- vector files -----------------------------------------------------------------------------------


def gdal_path(path: Path) -> str:
    """The name GDAL opens ``path`` by: a ``.zip`` (e.g. a zipped Shapefile) as the folder ``/vsizip/...``.

    Opened by its own name, GDAL recognises only ``.shz`` / ``.shp.zip`` archives and reports any
    other zip as "not recognized as being in a supported file format".
    """
    return f"/vsizip/{path.resolve()}" if path.name.lower().endswith(".zip") else str(path)


@dataclass(frozen=True)
class VectorInfo:
    """Cheap facts about a vector file: CRS (WKT or None) and attribute columns."""

    crs_wkt: str | None
    columns: tuple[str, ...]


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        raise ConfigError(f"reference file {path} does not exist") from None


@functools.lru_cache(maxsize=32)
def _vector_info(path: str, mtime_ns: int, layer: str | None) -> VectorInfo:
    import fiona

    del mtime_ns  # part of the cache key only: a changed file is inspected again
    try:
        with fiona.open(gdal_path(Path(path)), layer=layer) as src:
            crs = src.crs.to_wkt() if src.crs else None
            columns = tuple(src.schema["properties"])
    except Exception as err:  # fiona/GDAL raise many types; all mean "cannot read this file"
        raise ConfigError(f"cannot read reference file {path}{f' layer {layer!r}' if layer else ''}: {err}") from err
    return VectorInfo(crs or None, columns)


def vector_info(path: Path, layer: str | None) -> VectorInfo:
    """CRS and columns of ``path`` (``ConfigError`` naming the file if absent or unreadable)."""
    return _vector_info(str(path), _mtime(path), layer)


def _gpd_read(path: str, layer: str | None, columns: tuple[str, ...], bbox: tuple[float, ...] | None) -> Any:
    """Read only ``columns`` (+ geometry) where the driver can; some (GeoJSON) read everything."""
    import geopandas as gpd

    kwargs: dict[str, Any] = {}
    if layer:
        kwargs["layer"] = layer
    if bbox is not None:
        kwargs["bbox"] = bbox
    try:
        frame = gpd.read_file(path, include_fields=list(columns), **kwargs)
    except Exception as err:
        if "ignore_fields" not in str(err):
            raise
        frame = gpd.read_file(path, **kwargs)
    return frame[[*columns, frame.geometry.name]]


@functools.lru_cache(maxsize=4)
def _read_whole(path: str, mtime_ns: int, layer: str | None, columns: tuple[str, ...]) -> gpd.GeoDataFrame:
    del mtime_ns  # part of the cache key only: a changed file is read again
    frame = _gpd_read(path, layer, columns, None)
    frame.sindex  # noqa: B018  -- build the spatial index once, shared by every tile of this process
    return frame


@functools.lru_cache(maxsize=16)
def _read_window(
    path: str, mtime_ns: int, layer: str | None, columns: tuple[str, ...], bbox: tuple[float, float, float, float]
) -> gpd.GeoDataFrame:
    del mtime_ns
    frame: gpd.GeoDataFrame = _gpd_read(path, layer, columns, bbox)
    return frame


def tile_window(bounds: tuple[float, float, float, float], tile_crs: str, file_crs: Any) -> Any:
    """The tile's box as a polygon in ``file_crs`` (edges densified so curved reprojections stay inside)."""
    import geopandas as gpd
    import shapely
    from shapely.geometry import box

    tile_box = box(*bounds)
    side = max(bounds[2] - bounds[0], bounds[3] - bounds[1])
    dense = shapely.segmentize(tile_box, max(side / 32.0, 1e-9))
    return gpd.GeoSeries([dense], crs=tile_crs).to_crs(file_crs).iloc[0]


def read_reference_file(
    path: Path,
    layer: str | None,
    class_column: str,
    bounds: tuple[float, float, float, float],
    tile_crs: str,
) -> gpd.GeoDataFrame:
    """Polygons of ``path`` touching the tile ``bounds`` (in ``tile_crs``), in the file's CRS.

    Columns: ``class_column`` and geometry. ``ConfigError`` names the file when it is
    missing, has no CRS or lacks the class column (listing the columns it has).
    """
    info = vector_info(path, layer)
    if info.crs_wkt is None:
        raise ConfigError(f"reference file {path} has no CRS; give it one (e.g. a .prj next to a Shapefile)")
    if class_column not in info.columns:
        raise ConfigError(f"reference file {path} has no class column {class_column!r}; columns: {list(info.columns)}")
    window = tile_window(bounds, tile_crs, info.crs_wkt)
    mtime = _mtime(path)
    name = gdal_path(path)
    try:
        if path.stat().st_size <= WHOLE_FILE_MAX_BYTES:
            whole = _read_whole(name, mtime, layer, (class_column,))
            hits = whole.sindex.query(window, predicate="intersects")
            frame = whole.iloc[np.sort(hits)]
        else:
            bbox = [float(v) for v in window.bounds]
            frame = _read_window(name, mtime, layer, (class_column,), (bbox[0], bbox[1], bbox[2], bbox[3]))
    except ConfigError:
        raise
    except Exception as err:  # GDAL errors of every kind: name the file
        raise ConfigError(f"cannot read reference file {path}: {err}") from err
    return frame.copy()  # callers must not modify the cached frame


def file_polygons(
    frame: gpd.GeoDataFrame,
    class_column: str,
    crosswalk: Mapping[str, int] | None,
    legend_ids: set[int],
    *,
    source_name: str,
    bounds: tuple[float, float, float, float],
    tile_crs: str,
    priority: int,
    min_area_m2: float,
) -> tuple[list[LabelledPolygon], SourceStats]:
    """Labelled polygons (in ``tile_crs``, clipped to ``bounds``) from a file's window ``frame``.

    A polygon's key hashes ``source_name`` and its original geometry, so the same polygon
    has the same key in every tile it crosses (merge_features keeps it on one side of the split).
    """
    import shapely

    stats = SourceStats(polygons_read=len(frame))
    if frame.empty:
        return [], stats
    geoms = frame.geometry.to_numpy()
    keys = [stable_key(source_name, shapely.to_wkb(g) if g is not None else b"") for g in geoms]
    same_crs = frame.crs is not None and frame.crs.equals(tile_crs)
    projected = (frame.geometry if same_crs else frame.geometry.to_crs(tile_crs)).make_valid()
    polygonal = projected.notna() & ~projected.is_empty
    polygonal &= projected.geom_type.isin(["Polygon", "MultiPolygon", "GeometryCollection"])
    labels = labels_for_codes(frame[class_column].to_numpy(), crosswalk, legend_ids, stats)
    tile_box = shapely.box(*bounds)
    out: list[LabelledPolygon] = []
    for geom, label, key, ok in zip(projected.to_numpy(), labels, keys, polygonal.to_numpy(), strict=True):
        if not ok:
            stats.non_polygon += 1
            continue
        if geom.geom_type == "GeometryCollection":  # make_valid may return these: keep the areal parts
            parts = [g for g in geom.geoms if g.geom_type in ("Polygon", "MultiPolygon")]
            if not parts:
                stats.non_polygon += 1
                continue
            geom = shapely.union_all(parts)
        if label == 0:
            continue
        if min_area_m2 > 0 and geom.area < min_area_m2:
            stats.too_small += 1
            continue
        clipped = shapely.intersection(geom, tile_box)
        if clipped.is_empty or clipped.area == 0:
            continue
        out.append(LabelledPolygon(clipped, int(label), priority, key))
    stats.polygons_used = len(out)
    return out, stats


# -- synthetic truth --------------------------------------------------------------------------------


def synthetic_tiles(tile_ids: Iterable[str], fraction: float, seed: int) -> set[str]:
    """The tiles that get synthetic reference: a seeded ``fraction`` of the sorted tile ids.

    Depends only on the tile ids and the seed (not on the season), so a tile keeps or
    lacks reference in every season. At least one tile when ``fraction`` > 0.
    """
    ids = sorted(set(tile_ids))
    if not ids or fraction <= 0:
        return set()
    n = min(len(ids), max(1, round(fraction * len(ids))))
    rng = np.random.default_rng(stable_key("synthetic_truth_tiles", str(seed)))
    return {ids[i] for i in rng.permutation(len(ids))[:n]}


def synthetic_polygons(
    parcels: gpd.GeoDataFrame,
    class_column: str,
    legend_ids: set[int],
    *,
    tile_id: str,
    parcel_fraction: float,
    seed: int,
    priority: int,
    min_area_m2: float,
) -> tuple[list[LabelledPolygon], SourceStats]:
    """A seeded ``parcel_fraction`` of the tile's truth parcels as labelled polygons.

    Each parcel is kept or not by a hash of (seed, tile, parcel id): the choice does not
    depend on the other parcels, so it is stable when parcels change between seasons.
    """
    stats = SourceStats(polygons_read=len(parcels))
    if class_column not in parcels.columns:
        raise ConfigError(
            f"synthetic truth parcels of tile {tile_id} have no column {class_column!r}; "
            f"columns: {list(parcels.columns)}"
        )
    labels = labels_for_codes(parcels[class_column].to_numpy(), None, legend_ids, stats)
    out: list[LabelledPolygon] = []
    for pid, geom, label in zip(parcels["parcel_id"].to_numpy(), parcels.geometry.to_numpy(), labels, strict=True):
        if label == 0 or geom is None or geom.is_empty:
            continue
        if stable_uniform(seed, "synthetic_truth_parcel", tile_id, str(int(pid))) >= parcel_fraction:
            continue
        if min_area_m2 > 0 and geom.area < min_area_m2:
            stats.too_small += 1
            continue
        out.append(LabelledPolygon(geom, int(label), priority, stable_key("synthetic", tile_id, str(int(pid)))))
    stats.polygons_used = len(out)
    return out, stats
