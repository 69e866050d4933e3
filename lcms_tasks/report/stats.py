"""Pure statistics of the report: pixel counts, class areas, transitions, metrics, data quality.

Everything here works on numpy arrays and plain Python values (no storage, no
plotting), so the invariants the report promises are unit-tested alone:

* class counts are tallied per *zone* (0 = outside every region, i = region i)
  with one ``bincount``; a pixel belongs to exactly one zone and one class, so
  the class areas of a tile add up to the tile's area and the zones of a tile
  add up to the tile;
* tallies are additive (numpy arrays of counts, confusion matrices,
  histograms), so per-tile results merge into regions and totals by summing,
  never by averaging averages;
* percentiles of valid observations come from an exact histogram, so they are
  the same whether computed per tile or over the whole project.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Class maps are uint8: ids 0..255. 0 = no data / unlabelled.
N_IDS = 256
NO_DATA_NAME = "no data"
PERCENTILES = (5, 25, 50, 75, 95)


@dataclass(frozen=True)
class ClassInfo:
    """A legend class as the report shows it."""

    id: int
    name: str
    color: str


def zone_class_counts(
    class_map: np.ndarray, zones: np.ndarray, n_zones: int, confidence: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts (and confidence sums) per (zone, class id).

    ``class_map`` (H, W) integer ids 0..255, ``zones`` (H, W) integers 0..n_zones-1,
    ``confidence`` (H, W) float or None (NaN confidences count as 0).
    Returns (counts (n_zones, 256) int64, confidence sums (n_zones, 256) float64).
    """
    cls = np.asarray(class_map)
    zon = np.asarray(zones)
    if cls.shape != zon.shape:
        raise ValueError(f"class map shape {cls.shape} differs from zone raster shape {zon.shape}")
    if cls.size and (int(cls.min()) < 0 or int(cls.max()) >= N_IDS):
        raise ValueError(f"class ids must be 0..{N_IDS - 1}, found {int(cls.min())}..{int(cls.max())}")
    if zon.size and (int(zon.min()) < 0 or int(zon.max()) >= n_zones):
        raise ValueError(f"zone ids must be 0..{n_zones - 1}, found {int(zon.min())}..{int(zon.max())}")
    flat = zon.astype(np.int64).ravel() * N_IDS + cls.astype(np.int64).ravel()
    counts = np.bincount(flat, minlength=n_zones * N_IDS).reshape(n_zones, N_IDS)
    conf_sums: np.ndarray
    if confidence is None:
        conf_sums = np.zeros((n_zones, N_IDS), np.float64)
    else:
        weights = np.nan_to_num(np.asarray(confidence, dtype=np.float64).ravel(), nan=0.0)
        conf_sums = np.bincount(flat, weights=weights, minlength=n_zones * N_IDS).reshape(n_zones, N_IDS)
    return counts.astype(np.int64), conf_sums


def class_area_rows(
    counts: np.ndarray,
    legend: Sequence[ClassInfo],
    pixel_area_m2: float,
    confidence_sums: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Rows (one per legend class, plus 'no data' and any id outside the legend) of pixel count, km² and share.

    ``counts`` (256,) pixel counts per class id. Every pixel lands in exactly one row,
    so the rows' areas add up to ``counts.sum() * pixel_area_m2``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    known = {c.id for c in legend}
    entries: list[tuple[int, str, str | None]] = [(0, NO_DATA_NAME, None)]
    entries += [(c.id, c.name, c.color) for c in legend]
    # Ids a map holds that the legend does not know still cover ground: listed, never dropped.
    entries += [(int(i), f"unknown class {int(i)}", None) for i in np.flatnonzero(counts) if i != 0 and i not in known]
    rows = []
    for cid, name, color in entries:
        n = int(counts[cid])
        conf = None
        if confidence_sums is not None and n > 0 and cid != 0:
            conf = float(confidence_sums[cid]) / n
        rows.append(
            {
                "id": cid,
                "name": name,
                "color": color,
                "pixels": n,
                "area_km2": n * pixel_area_m2 / 1e6,
                "share": n / total if total else 0.0,
                "mean_confidence": conf,
            }
        )
    return rows


def transition_rows(
    from_ids: Sequence[int] | np.ndarray,
    to_ids: Sequence[int] | np.ndarray,
    areas_m2: Sequence[float] | np.ndarray,
    names: Mapping[int, str],
) -> list[dict[str, Any]]:
    """Change polygons aggregated by transition (from → to): count and km², largest area first."""
    if not (len(from_ids) == len(to_ids) == len(areas_m2)):
        raise ValueError(f"from/to/area lengths differ: {len(from_ids)}, {len(to_ids)}, {len(areas_m2)}")
    agg: dict[tuple[int, int], list[float]] = {}
    for f, t, a in zip(from_ids, to_ids, areas_m2, strict=True):
        slot = agg.setdefault((int(f), int(t)), [0, 0.0])
        slot[0] += 1
        slot[1] += float(a)
    return _transition_table(agg, names)


def merge_transition_rows(
    tables: Iterable[Sequence[Mapping[str, Any]]], names: Mapping[int, str]
) -> list[dict[str, Any]]:
    """Transition tables of several tiles/regions merged (counts and areas summed per transition)."""
    agg: dict[tuple[int, int], list[float]] = {}
    for table in tables:
        for row in table:
            slot = agg.setdefault((int(row["from_id"]), int(row["to_id"])), [0, 0.0])
            slot[0] += int(row["count"])
            slot[1] += float(row["area_km2"]) * 1e6
    return _transition_table(agg, names)


def _transition_table(agg: Mapping[tuple[int, int], Sequence[float]], names: Mapping[int, str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {
            "from_id": f,
            "from_name": names.get(f, f"class {f}"),
            "to_id": t,
            "to_name": names.get(t, f"class {t}"),
            "count": int(v[0]),
            "area_km2": float(v[1]) / 1e6,
        }
        for (f, t), v in agg.items()
    ]
    rows.sort(key=lambda r: (-float(r["area_km2"]), int(r["from_id"]), int(r["to_id"])))
    return rows


# -- accuracy ---------------------------------------------------------------------------------------


def confusion_counts(truth: np.ndarray, predicted: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """Confusion matrix (rows truth, columns predicted) over ``class_ids``.

    Pixels whose truth or prediction is 0 (no data) are ignored; so are pixels whose
    truth or prediction is an id outside ``class_ids``.
    """
    t = np.asarray(truth).ravel().astype(np.int64)
    p = np.asarray(predicted).ravel().astype(np.int64)
    if t.shape != p.shape:
        raise ValueError(f"truth has {t.size} pixels, prediction {p.size}")
    lut = np.full(N_IDS, -1, np.int64)
    for k, cid in enumerate(class_ids):
        lut[int(cid)] = k
    ti, pi = lut[np.clip(t, 0, N_IDS - 1)], lut[np.clip(p, 0, N_IDS - 1)]
    keep = (t > 0) & (p > 0) & (ti >= 0) & (pi >= 0)
    n = len(class_ids)
    return np.bincount(ti[keep] * n + pi[keep], minlength=n * n).reshape(n, n).astype(np.int64)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def scores_from_confusion(matrix: np.ndarray | Sequence[Sequence[float]], class_ids: Sequence[int]) -> dict[str, Any]:
    """Overall accuracy, Cohen's kappa and per-class precision/recall/F1 from a confusion matrix.

    Rows are truth, columns predictions. Undefined figures (no pixels) are None.
    """
    cm = np.asarray(matrix, dtype=np.float64)
    n = len(class_ids)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {n} class ids")
    total = float(cm.sum())
    diag = np.diag(cm)
    oa = _ratio(float(diag.sum()), total)
    kappa: float | None = None
    if total > 0:
        expected = float((cm.sum(axis=0) * cm.sum(axis=1)).sum()) / total**2
        kappa = (oa - expected) / (1 - expected) if oa is not None and expected < 1 else None
    per_class = {}
    for k, cid in enumerate(class_ids):
        precision = _ratio(float(diag[k]), float(cm[:, k].sum()))
        recall = _ratio(float(diag[k]), float(cm[k, :].sum()))
        f1 = None
        if precision is not None and recall is not None:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        per_class[str(int(cid))] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(cm[k, :].sum()),
        }
    return {
        "overall_accuracy": oa,
        "kappa": kappa,
        "n_pixels": int(total),
        "per_class": per_class,
        "confusion_matrix": {"class_ids": [int(c) for c in class_ids], "matrix": cm.astype(np.int64).tolist()},
    }


def normalise_metrics(metadata: Mapping[str, Any], legend: Sequence[ClassInfo]) -> dict[str, Any] | None:
    """The training metadata's test metrics in the report's shape (None if it has none).

    The confusion matrix and the figures the trainer computed are passed through
    unchanged; what is missing (e.g. kappa) is derived from the matrix. Accepted shapes:
    ``metrics`` or ``metrics.test`` holding ``overall_accuracy``, ``kappa``, ``per_class``
    ({id: {precision, recall, f1}} or a list of such dicts with ``id``), and
    ``confusion_matrix`` as a list of rows (class ids in ``class_ids``/``labels``, else the
    metadata's legend order) or as ``{"class_ids"|"labels": [...], "matrix": [[...]]}``.
    """
    metrics = metadata.get("metrics")
    if not isinstance(metrics, Mapping):
        return None
    if isinstance(metrics.get("test"), Mapping):
        metrics = metrics["test"]
    raw_cm = metrics.get("confusion_matrix")
    class_ids: list[int] | None = None
    matrix: list[list[float]] | None = None
    if isinstance(raw_cm, Mapping):
        ids = raw_cm.get("class_ids", raw_cm.get("labels"))
        class_ids = [int(i) for i in ids] if ids is not None else None
        matrix = raw_cm.get("matrix")
    elif isinstance(raw_cm, list):
        matrix = raw_cm
    if class_ids is None:
        ids = metrics.get("class_ids", metrics.get("labels"))
        if ids is None and isinstance(metadata.get("legend"), list):
            ids = [c["id"] for c in metadata["legend"] if isinstance(c, Mapping) and "id" in c]
        if ids is None:
            ids = [c.id for c in legend]
        class_ids = [int(i) for i in ids]
    out: dict[str, Any] = {}
    if matrix is not None:
        if len(matrix) != len(class_ids):
            raise ValueError(f"confusion matrix has {len(matrix)} rows but {len(class_ids)} class ids {class_ids}")
        out = scores_from_confusion(matrix, class_ids)
        # The trainer's own matrix, verbatim (integers stay integers, floats stay floats).
        out["confusion_matrix"] = {"class_ids": class_ids, "matrix": [list(row) for row in matrix]}
    for key in ("overall_accuracy", "kappa"):
        if metrics.get(key) is not None:
            out[key] = float(metrics[key])
    per_class = metrics.get("per_class")
    if isinstance(per_class, list):
        per_class = {str(r.get("id", r.get("class_id"))): r for r in per_class if isinstance(r, Mapping)}
    if isinstance(per_class, Mapping):
        merged = dict(out.get("per_class", {}))
        for cid, figures in per_class.items():
            if isinstance(figures, Mapping):
                row = dict(merged.get(str(cid), {}))
                for key in ("precision", "recall", "f1", "support"):
                    alias = {"f1": ("f1", "f1_score", "f1-score")}.get(key, (key,))
                    value = next((figures[a] for a in alias if figures.get(a) is not None), None)
                    if value is not None:
                        row[key] = value
                merged[str(cid)] = row
        out["per_class"] = merged
    if not out:
        return None
    names = {c.id: c.name for c in legend}
    for cid, row in out.get("per_class", {}).items():
        row["name"] = names.get(int(cid), f"class {cid}") if str(cid).lstrip("-").isdigit() else str(cid)
    return out


# -- data quality -----------------------------------------------------------------------------------


def histogram(values: np.ndarray, length: int | None = None) -> np.ndarray:
    """Counts of each non-negative integer value (exact and additive, unlike percentiles)."""
    v = np.asarray(values).ravel().astype(np.int64)
    if v.size and int(v.min()) < 0:
        raise ValueError(f"histogram of negative values ({int(v.min())})")
    hist = np.bincount(v, minlength=length or 0)
    return hist.astype(np.int64)


def add_histograms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum of two histograms of different lengths."""
    n = max(len(a), len(b))
    return np.pad(a, (0, n - len(a))) + np.pad(b, (0, n - len(b)))


def histogram_stats(hist: np.ndarray) -> dict[str, Any]:
    """Mean, min, max and percentiles of the values a histogram counts.

    Percentile q is the smallest value v whose cumulative share reaches q % (numpy's
    ``inverted_cdf`` method), so the figures are actual observed values.
    """
    h = np.asarray(hist, dtype=np.int64)
    n = int(h.sum())
    if n == 0:
        return {
            "n_pixels": 0,
            "mean": None,
            "min": None,
            "max": None,
            "percentiles": {f"p{q}": None for q in PERCENTILES},
        }
    values = np.arange(len(h))
    nz = np.flatnonzero(h)
    cum = np.cumsum(h)
    pct = {}
    for q in PERCENTILES:
        # Smallest value whose cumulative count reaches ceil(q/100 * n); integer ceil avoids float ties.
        target = -(-q * n // 100)
        pct[f"p{q}"] = int(np.searchsorted(cum, max(target, 1)))
    return {
        "n_pixels": n,
        "mean": float((values * h).sum()) / n,
        "min": int(nz[0]),
        "max": int(nz[-1]),
        "percentiles": pct,
    }


#: Figures of the per-tile completion markers that are quantities and add up over tiles, per stage, as
#: dotted paths ("*": every key of a map keyed by class id, code or source name). Nothing else in a
#: marker is ever summed: options (erosion_px, seed, max_per_class, ...) are the same on every tile and
#: their sum means nothing, so a figure a stage adds is only totalled once it is declared here.
ADDITIVE_FIGURES: Mapping[str, tuple[str, ...]] = {
    "add_reference": (
        "labelled_pixels",
        "samplable_total",
        "no_data_labelled_pixels",
        "class_pixels.*",
        "samplable_pixels.*",
        "overlap.overlap_pixels",
        "overlap.conflict_pixels",
        "overlap.conflict_resolved_pixels",
        "overlap.conflict_dropped_pixels",
        "unknown_codes.*",
        "polygons_read",
        "polygons_used",
        "polygons_rasterised",
        "sources.*.polygons_read",
        "sources.*.polygons_used",
        "sources.*.non_polygon",
        "sources.*.too_small",
        "sources.*.unknown_codes.*",
        "sources.*.unlabelled_codes.*",
    ),
    "sampling": ("n_samples", "per_class.*"),
    "features": ("dates_total", "dates_dropped", "no_data_pixels"),
}

#: Marker figures that echo a stage option (marker path -> option name in the stage's config section):
#: the report shows the configured value and lists the tiles whose marker says otherwise.
MARKER_OPTIONS: Mapping[str, Mapping[str, str]] = {
    "add_reference": {"erosion_px": "erosion_px", "overlap.rule": "overlap_rule"},
    "sampling": {
        "max_per_class": "max_per_class",
        "fraction": "fraction",
        "min_per_class": "min_per_class",
        "seed": "seed",
    },
}


def _values_at(obj: Any, parts: Sequence[str], prefix: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], Any]]:
    """(concrete key path, value) of every value of ``obj`` at the dotted path ``parts`` ("*": any key)."""
    if not parts:
        yield prefix, obj
        return
    if not isinstance(obj, Mapping):
        return
    head, rest = parts[0], parts[1:]
    keys = list(obj) if head == "*" else [head] if head in obj else []
    for key in keys:
        yield from _values_at(obj[key], rest, (*prefix, str(key)))


def value_at(obj: Mapping[str, Any], path: str, default: Any = None) -> Any:
    """The value at dotted ``path`` of ``obj`` (no wildcards), or ``default`` where there is none."""
    found = [v for _, v in _values_at(obj, path.split("."))]
    return found[0] if found else default


def sum_figures(items: Iterable[Mapping[str, Any]], paths: Sequence[str]) -> dict[str, Any]:
    """Sums over ``items`` (per-tile marker figures) of the numbers at the declared ``paths`` only.

    ``paths`` are dotted (see :data:`ADDITIVE_FIGURES`); the result nests like the markers
    (``{"overlap": {"conflict_pixels": 12}, "class_pixels": {"1": 300}}``). A declared figure a
    marker lacks, or holds as a non-number (booleans included), is skipped.
    """
    out: dict[str, Any] = {}
    for item in items:
        for path in paths:
            for keys, value in _values_at(item, path.split(".")):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                slot = out
                for key in keys[:-1]:
                    nxt = slot.setdefault(key, {})
                    if not isinstance(nxt, dict):  # a path declared both as a number and as a map
                        break
                    slot = nxt
                else:
                    slot[keys[-1]] = slot.get(keys[-1], 0) + value
    return out


# -- regions ----------------------------------------------------------------------------------------


def disjoint(geoms: Sequence[Any]) -> list[Any]:
    """The geometries made disjoint: where they overlap, the earlier one keeps the area.

    Regions must not overlap, or areas would be counted twice; 'first listed wins' is
    the rule both for pixels (rasterised zones) and for change polygons (clipping).
    """
    import shapely

    out: list[Any] = []
    taken = shapely.Polygon()
    for g in geoms:
        piece = shapely.difference(shapely.make_valid(g), taken) if not taken.is_empty else shapely.make_valid(g)
        out.append(piece)
        taken = shapely.union(taken, piece)
    return out


def zone_raster(geoms: Sequence[Any], transform: Any, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) int32 raster: i + 1 where a pixel's centre lies in ``geoms[i]``, 0 elsewhere.

    The pixel-centre rule (GDAL's default) assigns every pixel to at most one zone
    for disjoint geometries, so zone areas add up to the tile's area exactly, and a
    zone's pixel area differs from its polygon area by at most about half a pixel
    along its boundary.
    """
    from rasterio import features

    shapes = [(g, i + 1) for i, g in enumerate(geoms) if g is not None and not g.is_empty]
    if not shapes:
        return np.zeros(shape, np.int32)
    raster: np.ndarray = features.rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="int32")
    return raster


def zone_change_pieces(geoms: Sequence[Any], region_geoms: Sequence[Any]) -> list[list[tuple[int, float]]]:
    """For each change polygon, its (zone, area m²) pieces: zone i + 1 = ``region_geoms[i]``, 0 = outside.

    Pieces of a polygon add up to its area (up to floating point); ``region_geoms``
    must be disjoint (see :func:`disjoint`).
    """
    import shapely

    regions = list(region_geoms)
    union = shapely.union_all([r for r in regions if r is not None and not r.is_empty]) if regions else None
    out: list[list[tuple[int, float]]] = []
    for g in geoms:
        pieces: list[tuple[int, float]] = []
        if g is None or g.is_empty:
            out.append(pieces)
            continue
        for i, r in enumerate(regions):
            if r is None or r.is_empty or not g.intersects(r):
                continue
            a = float(shapely.intersection(g, r).area)
            if a > 0:
                pieces.append((i + 1, a))
        outside = float(g.area) if union is None or union.is_empty else float(shapely.difference(g, union).area)
        if outside > 0:
            pieces.append((0, outside))
        out.append(pieces)
    return out
