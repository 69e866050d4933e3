"""Pure functions for change detection between two class maps (no storage I/O).

A change is a 4-connected region of pixels that all went from one class to one
other class, where that (from, to) transition is relevant. Pixels with no data
(0) in either map are never changes. Regions are filtered by size and by their
mean change confidence, then turned into polygons in the tile's CRS.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import geopandas as gpd

log = logging.getLogger(__name__)

WILDCARD = "*"
ConfidenceRule = Literal["product", "min", "mean"]

# Output columns of changes.gpkg and their GPKG field types (the schema is given explicitly so
# an empty layer keeps its columns, and reading back can restore the dtypes).
CHANGE_COLUMNS: dict[str, str] = {
    "change_id": "int",
    "from_class": "int",
    "to_class": "int",
    "from_name": "str",
    "to_name": "str",
    "area_m2": "float",
    "confidence": "float",
    "tile": "str",
    "season_before": "str",
    "season_after": "str",
}
_DTYPES = {"int": "int64", "float": "float64", "str": "object"}
LAYER = "changes"


# -- transitions -----------------------------------------------------------------------------------
def resolve_transitions(
    transitions: Iterable[Mapping[str, str]],
    classes: Mapping[int, str],
    *,
    strict: bool = True,
    where: str = "transitions",
) -> set[tuple[int, int]]:
    """Transitions given by class names (``{"from": name, "to": name}``) as a set of (from_id, to_id).

    ``classes`` maps legend id to name. ``"*"`` stands for any class other than the
    other side ("*" -> "*" is every change). With ``strict`` an unknown name raises
    ``ValueError`` naming it and the known names; otherwise such pairs are skipped.
    A class never "changes" into itself, so (c, c) pairs are never returned.
    """
    by_name = {name: cid for cid, name in classes.items()}
    ids = sorted(classes)
    out: set[tuple[int, int]] = set()
    for i, tr in enumerate(transitions):
        ends: list[list[int]] = []
        skip = False
        for side in ("from", "to"):
            name = tr[side]
            if name == WILDCARD:
                ends.append(ids)
            elif name in by_name:
                ends.append([by_name[name]])
            elif strict:
                raise ValueError(
                    f"{where}[{i}].{side}: unknown class name {name!r}; the legend has "
                    f"{', '.join(repr(n) for n in by_name)} (or '*' for any class)"
                )
            else:
                skip = True
        if skip:
            continue
        out.update((a, b) for a in ends[0] for b in ends[1] if a != b)
    return out


# -- detection -------------------------------------------------------------------------------------
def change_confidence(conf_before: np.ndarray, conf_after: np.ndarray, rule: ConfidenceRule = "product") -> np.ndarray:
    """Per-pixel confidence that a change is real, from both maps' confidences (NaN counts as 0)."""
    a = np.nan_to_num(conf_before.astype(np.float32), nan=0.0)
    b = np.nan_to_num(conf_after.astype(np.float32), nan=0.0)
    if rule == "product":
        return a * b
    if rule == "min":
        return np.minimum(a, b)
    if rule == "mean":
        return (a + b) / 2.0
    raise ValueError(f"unknown confidence rule {rule!r}: use 'product', 'min' or 'mean'")


def detect_changes(
    before: np.ndarray,
    after: np.ndarray,
    conf_before: np.ndarray,
    conf_after: np.ndarray,
    transitions: set[tuple[int, int]],
    min_pixels: int,
    min_confidence: float,
    *,
    rule: ConfidenceRule = "product",
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Change regions between two (H, W) uint8 class maps.

    Returns (labels (H, W) int32 with 0 = no change and k = region k, regions) where
    ``regions[k - 1]`` is ``{"from", "to", "n_pixels", "confidence"}`` (confidence:
    the region's mean per-pixel change confidence under ``rule``). A region is a
    4-connected set of pixels sharing one relevant (from, to) transition; regions
    under ``min_pixels`` or under ``min_confidence`` are dropped.
    """
    from skimage.measure import label

    shapes = {before.shape, after.shape, conf_before.shape, conf_after.shape}
    if len(shapes) != 1 or before.ndim != 2:
        raise ValueError(f"maps and confidences must share one 2-D shape, got {sorted(shapes)}")
    empty = np.zeros(before.shape, dtype=np.int32)
    if not transitions:
        return empty, []
    b = before.astype(np.int32)
    a = after.astype(np.int32)
    # One code per (from, to) pair; 256 * from + to fits every uint8 pair.
    relevant = np.zeros(256 * 256, dtype=bool)
    raw = np.array(sorted(transitions), dtype=np.int64).reshape(-1, 2)
    pairs = raw[(raw >= 0).all(axis=1) & (raw <= 255).all(axis=1)]  # ids outside uint8 cannot occur in a map
    relevant[pairs[:, 0] * 256 + pairs[:, 1]] = True
    code = b * 256 + a
    is_change = (b != a) & (b != 0) & (a != 0) & relevant[code]
    if not is_change.any():
        return empty, []
    # +1 so no change pair (not even 0 -> 1, code 1) collides with the background 0.
    coded = np.where(is_change, code + 1, 0)
    lab, n = label(coded, background=0, connectivity=1, return_num=True)
    lab = lab.astype(np.int64, copy=False)
    conf = change_confidence(conf_before, conf_after, rule)
    flat = lab.ravel()
    n_pixels = np.bincount(flat, minlength=n + 1)
    conf_mean = np.bincount(flat, weights=conf.ravel().astype(np.float64), minlength=n + 1) / np.maximum(n_pixels, 1)
    region_code = np.zeros(n + 1, dtype=np.int64)
    region_code[flat] = code.ravel()
    keep = (n_pixels >= max(min_pixels, 1)) & (conf_mean >= min_confidence)
    keep[0] = False
    kept = np.flatnonzero(keep)
    new_id = np.zeros(n + 1, dtype=np.int32)
    new_id[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    regions = [
        {
            "from": int(region_code[k] // 256),
            "to": int(region_code[k] % 256),
            "n_pixels": int(n_pixels[k]),
            "confidence": float(conf_mean[k]),
        }
        for k in kept
    ]
    return new_id[lab], regions


# -- vectorisation ---------------------------------------------------------------------------------
def empty_changes(crs: Any) -> gpd.GeoDataFrame:
    """A change table with no rows, the output columns and ``crs``."""
    import geopandas as gpd
    import pandas as pd

    columns = {name: pd.Series([], dtype=_DTYPES[kind]) for name, kind in CHANGE_COLUMNS.items()}
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def vectorise_changes(
    labels: np.ndarray,
    regions: Sequence[Mapping[str, Any]],
    transform: Any,
    crs: Any,
    *,
    class_names: Mapping[int, str],
    tile_id: str,
    season_before: str,
    season_after: str,
    min_area_m2: float = 0.0,
) -> gpd.GeoDataFrame:
    """Polygons of the change regions of :func:`detect_changes` on the tile grid ``transform``.

    One row per region (its pixels dissolved into one geometry), ``area_m2`` from the
    geometry, rows under ``min_area_m2`` dropped, ``change_id`` numbered 1.. in order.
    """
    import geopandas as gpd
    from rasterio import features
    from shapely.geometry import shape
    from shapely.ops import unary_union

    if not regions:
        return empty_changes(crs)
    parts: dict[int, list[Any]] = {}
    mask = labels > 0
    for geom, value in features.shapes(labels.astype(np.int32), mask=mask, connectivity=4, transform=transform):
        parts.setdefault(int(value), []).append(shape(geom))
    rows: list[dict[str, Any]] = []
    for k, region in enumerate(regions, start=1):
        if k not in parts:
            continue
        geom = parts[k][0] if len(parts[k]) == 1 else unary_union(parts[k])
        area = float(geom.area)
        if area < min_area_m2:
            continue
        f, t = int(region["from"]), int(region["to"])
        rows.append(
            {
                "change_id": 0,
                "from_class": f,
                "to_class": t,
                "from_name": class_names.get(f, str(f)),
                "to_name": class_names.get(t, str(t)),
                "area_m2": area,
                "confidence": float(region["confidence"]),
                "tile": tile_id,
                "season_before": season_before,
                "season_after": season_after,
                "geometry": geom,
            }
        )
    if not rows:
        return empty_changes(crs)
    frame = gpd.GeoDataFrame(rows, columns=[*CHANGE_COLUMNS, "geometry"], geometry="geometry", crs=crs)
    frame["change_id"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame.astype({name: _DTYPES[kind] for name, kind in CHANGE_COLUMNS.items()})


def area_by_transition(frame: gpd.GeoDataFrame) -> dict[str, float]:
    """Total change area (m²) per ``"from_name -> to_name"``."""
    if frame.empty:
        return {}
    keys = frame["from_name"].astype(str) + " -> " + frame["to_name"].astype(str)
    sums = frame["area_m2"].groupby(keys).sum()
    return {str(k): float(v) for k, v in sums.items()}


# -- files -----------------------------------------------------------------------------------------
def write_changes(frame: gpd.GeoDataFrame, path: Path) -> None:
    """Write a change table to a GeoPackage (layer ``changes``), empty or not, with the fixed schema."""
    if frame.crs is None:
        raise ValueError(f"change table for {path} has no CRS")
    schema = {"geometry": ["Polygon", "MultiPolygon"], "properties": dict(CHANGE_COLUMNS)}
    frame[[*CHANGE_COLUMNS, "geometry"]].to_file(path, driver="GPKG", layer=LAYER, schema=schema, index=False)


def read_changes(path: Path) -> gpd.GeoDataFrame:
    """Read a change table written by :func:`write_changes`, with the output dtypes restored.

    (GDAL returns an empty layer's columns as object dtype; this puts them right.)
    """
    import geopandas as gpd

    frame = gpd.read_file(path, layer=LAYER)
    missing = [c for c in CHANGE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} is not a change table: columns {missing} are missing")
    if frame.empty:
        return empty_changes(frame.crs)
    return frame.astype({name: _DTYPES[kind] for name, kind in CHANGE_COLUMNS.items()})


def min_pixels_for_area(min_area_m2: float, resolution_m: float) -> int:
    """Smallest pixel count whose area reaches ``min_area_m2`` (at least 1)."""
    return max(1, math.ceil(min_area_m2 / (resolution_m * resolution_m) - 1e-9))
