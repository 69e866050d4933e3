"""Evaluation of the maps against the synthetic source's truth (demo and tests).

Pure functions over arrays and geometries; the reporting stage loads the
artefacts and calls them tile by tile, then sums the tallies.

Definitions:

* map accuracy is measured only on tiles *not used for training* (a tile is used
  when its sampling metadata says ``n_samples > 0``), pixel by pixel, ignoring
  pixels whose truth or map value is 0 (no data);
* change precision and recall are *area* ratios between the union of the
  predicted change polygons and the union of the true change polygons, per tile
  in the tile's CRS, summed over tiles before dividing:
  precision = area(P ∩ T) / area(P), recall = area(P ∩ T) / area(T).
  No predicted change (area(P) = 0): precision is undefined (None) and recall is
  0 when there are true changes. No true change (area(T) = 0): recall is undefined
  (None); precision is then 0 when something was predicted (all of it is false).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lcms_tasks.report.stats import confusion_counts, scores_from_confusion


@dataclass(frozen=True)
class ChangeOverlap:
    """Areas (m²) of predicted changes, true changes and their intersection (unions, no double counting)."""

    predicted_m2: float
    true_m2: float
    intersection_m2: float

    def __add__(self, other: ChangeOverlap) -> ChangeOverlap:
        return ChangeOverlap(
            self.predicted_m2 + other.predicted_m2,
            self.true_m2 + other.true_m2,
            self.intersection_m2 + other.intersection_m2,
        )


def used_for_training(sampling_meta: Mapping[str, Any] | None) -> bool | None:
    """True if the tile gave training samples, False if not, None if unknown (no sampling metadata)."""
    if sampling_meta is None:
        return None
    return int(sampling_meta.get("n_samples") or 0) > 0


def change_overlap(predicted: Iterable[Any], true: Iterable[Any]) -> ChangeOverlap:
    """Overlap of two sets of polygons in the same projected CRS (metres).

    Each set is dissolved first, so overlapping polygons of one set count once.
    Empty or missing geometries are ignored.
    """
    import shapely

    def union(geoms: Iterable[Any]) -> Any:
        valid = [shapely.make_valid(g) for g in geoms if g is not None and not g.is_empty]
        return shapely.union_all(valid) if valid else shapely.Polygon()

    p, t = union(predicted), union(true)
    inter = shapely.intersection(p, t)
    return ChangeOverlap(float(p.area), float(t.area), float(inter.area))


def change_scores(overlap: ChangeOverlap) -> dict[str, float | None]:
    """Precision and recall by area (edge cases in the module docstring)."""
    precision = overlap.intersection_m2 / overlap.predicted_m2 if overlap.predicted_m2 > 0 else None
    recall = overlap.intersection_m2 / overlap.true_m2 if overlap.true_m2 > 0 else None
    return {"change_precision": precision, "change_recall": recall}


def map_confusion(truth: np.ndarray, predicted: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """Confusion matrix (rows truth, columns map) ignoring 0 in either; see :func:`stats.confusion_counts`."""
    t, p = np.asarray(truth), np.asarray(predicted)
    if t.shape != p.shape:
        raise ValueError(f"truth raster shape {t.shape} differs from map shape {p.shape}")
    return confusion_counts(t, p, class_ids)


def summarise(
    confusion: np.ndarray | None,
    class_ids: Sequence[int],
    n_eval_tiles: int,
    overlap: ChangeOverlap | None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``evaluation`` section of report.json.

    ``confusion`` None (or empty) gives a null accuracy; ``overlap`` None (no change
    artefacts to compare) gives null precision, recall and areas.
    """
    out: dict[str, Any] = {"n_eval_tiles": int(n_eval_tiles)}
    if confusion is not None and int(np.asarray(confusion).sum()) > 0:
        scores = scores_from_confusion(confusion, class_ids)
        out.update(
            {
                "overall_accuracy": scores["overall_accuracy"],
                "kappa": scores["kappa"],
                "n_pixels": scores["n_pixels"],
                "per_class": scores["per_class"],
                "confusion_matrix": scores["confusion_matrix"],
            }
        )
    else:
        out.update({"overall_accuracy": None, "kappa": None, "n_pixels": 0, "per_class": {}, "confusion_matrix": None})
    if overlap is not None:
        out.update(change_scores(overlap))
        out["true_change_area_km2"] = overlap.true_m2 / 1e6
        out["predicted_change_area_km2"] = overlap.predicted_m2 / 1e6
        out["intersection_change_area_km2"] = overlap.intersection_m2 / 1e6
    else:
        out.update(
            {
                "change_precision": None,
                "change_recall": None,
                "true_change_area_km2": None,
                "predicted_change_area_km2": None,
                "intersection_change_area_km2": None,
            }
        )
    out.update(extra)
    return out
