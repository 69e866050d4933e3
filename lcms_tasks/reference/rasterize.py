"""Reference polygons -> per-tile label rasters: overlap resolution and border erosion.

Pure functions over geometries and arrays (no storage, no config), so they can be
tested alone and reused on any grid (a project tile or a foreign EOPatch's bbox):

* :func:`rasterize_reference` burns labelled polygons onto a grid and resolves
  overlapping polygons with conflicting labels ('priority' or 'drop');
* :func:`samplable_mask` erodes every polygon region (and so every class region)
  so pixels on a border, which mix two covers, are not trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

OverlapRule = Literal["drop", "priority"]


@dataclass(frozen=True)
class LabelledPolygon:
    """One reference polygon ready to burn: geometry in the grid's CRS, legend id, priority, stable key."""

    geometry: Any  # shapely (Multi)Polygon
    label: int  # legend class id, 1..254
    priority: int = 0
    key: int = 0  # stable 63-bit identity of the polygon (same key in every tile it touches)


@dataclass
class RasterizedReference:
    """Result of :func:`rasterize_reference`."""

    labels: np.ndarray  # (H, W) uint8, 0 = unlabelled
    polygon_index: np.ndarray  # (H, W) int32, 1-based index into the input polygons, 0 = none
    stats: dict[str, int] = field(default_factory=dict)


def rasterize_reference(
    polygons: Sequence[LabelledPolygon],
    shape: tuple[int, int],
    transform: Any,
    overlap_rule: OverlapRule = "priority",
) -> RasterizedReference:
    """Burn ``polygons`` onto the (H, W) grid of ``transform`` (pixel centres, ``all_touched=False``).

    Overlaps: a pixel covered by polygons of one class keeps that class. With conflicting
    classes, 'priority' keeps the class of the highest-priority polygons if they agree (a tie
    between different classes at the top priority leaves the pixel unlabelled); 'drop' leaves
    every conflicting pixel unlabelled. ``polygon_index`` names the polygon a labelled pixel
    came from (the last-listed polygon of the winning priority).

    Stats: ``overlap_pixels`` (covered by 2+ polygons), ``conflict_pixels`` (2+ classes),
    ``conflict_resolved_pixels`` (kept by priority), ``conflict_dropped_pixels``.
    """
    from rasterio.features import rasterize

    h, w = shape
    labels = np.zeros((h, w), np.uint8)
    index = np.zeros((h, w), np.int32)
    stats = {"overlap_pixels": 0, "conflict_pixels": 0, "conflict_resolved_pixels": 0, "conflict_dropped_pixels": 0}
    if not polygons or h == 0 or w == 0:
        return RasterizedReference(labels, index, stats)
    for p in polygons:
        if not 1 <= p.label <= 254:
            raise ValueError(f"reference label {p.label} is outside the legend id range 1..254")

    def burn(items: list[tuple[Any, int]], dtype: Any, merge: str = "replace") -> np.ndarray:
        from rasterio.enums import MergeAlg

        alg = MergeAlg.add if merge == "add" else MergeAlg.replace
        out: np.ndarray = rasterize(
            items, out_shape=(h, w), transform=transform, fill=0, all_touched=False, dtype=dtype, merge_alg=alg
        )
        return out

    # Burn order: ascending priority, then input order, so the last writer is a top-priority polygon.
    order = sorted(range(len(polygons)), key=lambda i: (polygons[i].priority, i))
    index = burn([(polygons[i].geometry, i + 1) for i in order], "int32")
    coverage = burn([(p.geometry, 1) for p in polygons], "uint16", merge="add")
    stats["overlap_pixels"] = int((coverage >= 2).sum())

    priorities = sorted({p.priority for p in polygons}, reverse=True) if overlap_rule == "priority" else [None]
    undecided = coverage > 0  # pixels whose label is still open (covered, no higher level seen yet)
    n_classes_any = np.zeros((h, w), np.uint8)  # distinct classes over all levels (for conflict stats)
    classes = sorted({p.label for p in polygons})
    class_any = {c: np.zeros((h, w), bool) for c in classes}
    for level in priorities:
        members = [p for p in polygons if level is None or p.priority == level]
        n_here = np.zeros((h, w), np.uint8)
        label_here = np.zeros((h, w), np.uint8)
        for c in sorted({p.label for p in members}):
            present = burn([(p.geometry, 1) for p in members if p.label == c], "uint8").astype(bool)
            class_any[c] |= present
            n_here += present
            label_here[present] = c
        at_level = undecided & (n_here > 0)
        single = at_level & (n_here == 1)
        labels[single] = label_here[single]
        undecided &= ~at_level  # conflicting top-level pixels stay unlabelled (tie -> drop)
    for c in classes:
        n_classes_any += class_any[c]
    conflict = n_classes_any >= 2
    stats["conflict_pixels"] = int(conflict.sum())
    stats["conflict_resolved_pixels"] = int((conflict & (labels > 0)).sum())
    stats["conflict_dropped_pixels"] = int((conflict & (labels == 0)).sum())
    index[labels == 0] = 0
    return RasterizedReference(labels, index, stats)


def _diamond(radius: int) -> np.ndarray:
    """The L1 ball of ``radius`` pixels: what ``radius`` iterations of a 4-connected erosion remove."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    out: np.ndarray = (np.abs(yy) + np.abs(xx)) <= radius
    return out


def samplable_mask(
    labels: np.ndarray,
    polygon_index: np.ndarray,
    erosion_px: int,
    erosion_per_class: Mapping[int, int] | None = None,
    no_data: np.ndarray | None = None,
) -> np.ndarray:
    """Pixels a classifier may be trained on: labelled, not within the class's erosion radius of a border.

    A border is any change of polygon (another polygon, an unlabelled pixel or another
    class), so both class regions and the parcels inside them are eroded: the pixels along
    a field edge mix the field with the road or hedge beside it. The tile edge is not a
    border (the polygon goes on beyond it). ``erosion_per_class`` ({class id: px}) overrides
    ``erosion_px`` per class. ``no_data`` (H, W) bool pixels are never samplable.
    """
    from scipy import ndimage

    labelled = labels > 0
    result = labelled.copy()
    radii = {int(c): erosion_px for c in np.unique(labels[labelled])}
    for c, r in (erosion_per_class or {}).items():
        if int(c) in radii:
            radii[int(c)] = r
    for radius in sorted(set(radii.values())):
        if radius <= 0:
            continue
        foot = _diamond(radius)
        # A pixel is interior when every pixel within the radius carries its polygon index.
        lo = ndimage.minimum_filter(polygon_index, footprint=foot, mode="nearest")
        hi = ndimage.maximum_filter(polygon_index, footprint=foot, mode="nearest")
        interior = (lo == polygon_index) & (hi == polygon_index)
        in_classes = np.isin(labels, [c for c, r in radii.items() if r == radius])
        result &= ~in_classes | interior
    if no_data is not None:
        result &= ~no_data.astype(bool)
    return result
