"""Pure functions that clean a predicted class map (no I/O; unit-tested alone).

A class map is an (H, W) uint8 array of legend ids; 0 means no data. Every
function here keeps two promises the stage and its tests rely on:

* no-data pixels (0) stay exactly where they were: 0 never spreads into a data
  pixel and a data pixel never becomes 0;
* a pixel only ever takes a class already present in the input map.

The steps are superpixel majority vote (:func:`segment_majority`), modal filter
(:func:`modal_filter`), minimum mapping unit (:func:`minimum_mapping_unit`) and
morphological opening (:func:`open_classes`); :func:`postprocess_class_map`
chains them as configured.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

# Features of the compact image segmentation works on: (feature name, temporal statistic).
# All are normalised differences in [-1, 1], so one fixed scaling suits every tile and a
# Felzenszwalb scale means the same thing on every tile.
SEGMENTATION_CHANNELS: tuple[tuple[str, str], ...] = (
    ("NDVI", "median"),
    ("NDVI", "max"),
    ("NDWI", "median"),
    ("NDBI", "median"),
)

# Default SLIC segment size: small enough that segments rarely straddle two fields at 10 m.
SLIC_PIXELS_PER_SEGMENT = 40

Segmentation = Literal["felzenszwalb", "slic", "none"]
ConfidenceRule = Literal["segment_mean", "class_probability", "carry"]


# -- helpers ---------------------------------------------------------------------------------------
def _dense_classes(cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(present data class ids sorted, map of dense indices 1..k with 0 for no data).

    Working on dense indices keeps per-class count tables k wide instead of 256.
    """
    present = np.unique(cls)
    present = present[present != 0]
    dense = np.zeros(cls.shape, dtype=np.int32)
    data = cls != 0
    dense[data] = np.searchsorted(present, cls[data]) + 1
    return present, dense


def _from_dense(dense: np.ndarray, present: np.ndarray) -> np.ndarray:
    lut = np.concatenate([np.zeros(1, dtype=np.uint8), present.astype(np.uint8)])
    return lut[dense]


def _label_patches(dense: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected patches of equal class (no-data pixels are label 0)."""
    from skimage.measure import label

    lab, n = label(dense, background=0, connectivity=1, return_num=True)
    return lab.astype(np.int32, copy=False), int(n)


# -- segmentation ----------------------------------------------------------------------------------
def segmentation_image(features: np.ndarray, feature_names: list[str]) -> np.ndarray:
    """Compact (H, W, B) float32 image in [0, 1] from features (K, H, W, F) for segmentation.

    Channels are :data:`SEGMENTATION_CHANNELS`; each index is mapped from [-1, 1]
    to [0, 1]. Pixels with no valid value get 0.5 (mid-range), which matters little
    because their class is 0 and no-data pixels never vote.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (K, H, W, F), got shape {features.shape}")
    missing = sorted({n for n, _ in SEGMENTATION_CHANNELS} - set(feature_names))
    if missing:
        raise ValueError(f"segmentation needs features {missing}, which are not among {feature_names}")
    channels = []
    for name, stat in SEGMENTATION_CHANNELS:
        series = features[..., feature_names.index(name)].astype(np.float32, copy=True)
        # All-NaN series would make nan-reductions warn; give them a neutral value first.
        all_nan = np.isnan(series).all(axis=0)
        series[:, all_nan] = 0.0
        # np.median is several times faster than np.nanmedian; NaNs usually sit only on no-data pixels.
        has_nan = bool(np.isnan(series).any())
        if stat == "median":
            value = np.nanmedian(series, axis=0) if has_nan else np.median(series, axis=0)
        else:
            value = np.nanmax(series, axis=0) if has_nan else np.max(series, axis=0)
        channels.append(value)
    image = np.stack(channels, axis=-1)
    image = np.clip((image + 1.0) / 2.0, 0.0, 1.0)
    image[~np.isfinite(image)] = 0.5
    return image.astype(np.float32)


def segment(
    image: np.ndarray,
    method: Segmentation,
    *,
    felzenszwalb_scale: float = 10.0,
    felzenszwalb_sigma: float = 0.5,
    felzenszwalb_min_size: int = 5,
    slic_n_segments: int | None = None,
    slic_compactness: float = 0.1,
) -> np.ndarray:
    """Superpixel labels (H, W) int32, numbered from 0, of an (H, W, B) image in [0, 1]."""
    from skimage import segmentation as skseg

    if method == "felzenszwalb":
        with warnings.catch_warnings():
            # skimage warns for any image with more than 3 channels in case a 3-D volume was meant;
            # ours is a deliberate 4-channel 2-D image (channel_axis=-1 says so).
            warnings.filterwarnings("ignore", message="Got image with third dimension", category=RuntimeWarning)
            labels = skseg.felzenszwalb(
                image,
                scale=felzenszwalb_scale,
                sigma=felzenszwalb_sigma,
                min_size=felzenszwalb_min_size,
                channel_axis=-1,
            )
    elif method == "slic":
        h, w = image.shape[:2]
        n_segments = slic_n_segments or max(1, (h * w) // SLIC_PIXELS_PER_SEGMENT)
        labels = skseg.slic(
            image,
            n_segments=n_segments,
            compactness=slic_compactness,
            start_label=0,
            channel_axis=-1,
            convert2lab=False,
        )
    else:
        raise ValueError(f"unknown segmentation method {method!r}: use 'felzenszwalb', 'slic' or 'none'")
    # Relabel densely: bincount tables below are sized by the largest label.
    _, dense = np.unique(labels, return_inverse=True)
    return dense.reshape(labels.shape).astype(np.int32)


def segment_majority(cls: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Each data pixel takes the most frequent data class of its segment.

    No-data pixels neither vote nor change. On a tie a pixel whose own class is
    among the most frequent keeps it (so ties never flip pixels arbitrarily).
    """
    _check_map(cls)
    if segments.shape != cls.shape:
        raise ValueError(f"segments shape {segments.shape} differs from the class map's {cls.shape}")
    present, dense = _dense_classes(cls)
    if present.size <= 1:
        return cls.copy()
    k1 = present.size + 1
    seg = segments.astype(np.int64).ravel()
    n_seg = int(seg.max()) + 1
    d = dense.ravel()
    counts = np.bincount(seg * k1 + d, minlength=n_seg * k1).reshape(n_seg, k1)
    counts[:, 0] = 0  # no data never wins
    best = counts.argmax(axis=1)
    best_count = counts[np.arange(n_seg), best]
    own_count = counts[seg, d]
    keep = (d == 0) | (own_count == best_count[seg])
    out = np.where(keep, d, best[seg]).reshape(cls.shape)
    return _from_dense(out, present)


# -- modal filter ----------------------------------------------------------------------------------
def modal_filter(cls: np.ndarray, size: int) -> np.ndarray:
    """Each data pixel takes the most frequent data class in its ``size`` x ``size`` window.

    No-data pixels are not counted and stay 0; on a tie a pixel keeps its class
    when it is among the most frequent. ``size`` < 2 returns a copy.
    """
    _check_map(cls)
    if size < 2:
        return cls.copy()
    present, dense = _dense_classes(cls)
    if present.size <= 1:
        return cls.copy()
    kernel = np.ones((size, size), dtype=np.int32)
    # Integer window counts per class (exact, so ties are real ties, not float noise).
    counts = np.stack(
        [
            ndimage.correlate((dense == i).astype(np.int32), kernel, mode="constant", cval=0)
            for i in range(1, present.size + 1)
        ]
    )
    best = counts.argmax(axis=0) + 1
    best_count = counts.max(axis=0)
    rows, cols = np.indices(cls.shape)
    own_count = counts[np.maximum(dense, 1) - 1, rows, cols]
    keep = (dense == 0) | (own_count == best_count)
    return _from_dense(np.where(keep, dense, best), present)


# -- minimum mapping unit --------------------------------------------------------------------------
def minimum_mapping_unit(cls: np.ndarray, min_pixels: int, *, max_iterations: int = 20) -> tuple[np.ndarray, int]:
    """Merge 4-connected data patches smaller than ``min_pixels`` into a neighbouring class.

    A small patch takes the data class with which it shares the longest border,
    counting only neighbour patches "bigger" than itself (larger, or as large with a
    higher label). That direction rule makes merges acyclic, so two small
    neighbours can never swap classes forever; a small patch whose neighbours are
    all smaller waits for them to merge into it. Patches touching only no data
    (or alone on the tile) stay. Returns (map, iterations used).
    """
    _check_map(cls)
    if min_pixels < 2:
        return cls.copy(), 0
    present, dense = _dense_classes(cls)
    if present.size <= 1:
        return cls.copy(), 0
    k1 = present.size + 1
    # Ties between classes sharing equally long borders go to the class covering more of the tile.
    tile_share = np.bincount(dense.ravel(), minlength=k1).astype(np.float64)
    tile_share[0] = 0.0
    tiebreak = tile_share / (tile_share.sum() + 1.0) * 0.5  # < 1: never beats one more border pixel
    iteration = 0
    while iteration < max_iterations:
        lab, n = _label_patches(dense)
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        small = sizes < min_pixels
        small[0] = False
        if not small.any():
            break
        iteration += 1
        # Class of each patch label.
        patch_class = np.zeros(n + 1, dtype=np.int64)
        patch_class[lab.ravel()] = dense.ravel()
        # Adjacent pixel pairs (right and down neighbours), both directions.
        a = np.concatenate([lab[:, :-1].ravel(), lab[:-1, :].ravel()])
        b = np.concatenate([lab[:, 1:].ravel(), lab[1:, :].ravel()])
        edge = (a != b) & (a > 0) & (b > 0)
        a, b = a[edge], b[edge]
        src = np.concatenate([a, b])
        dst = np.concatenate([b, a])
        bigger = (sizes[dst] > sizes[src]) | ((sizes[dst] == sizes[src]) & (dst > src))
        use = small[src] & bigger
        src, dst = src[use], dst[use]
        if src.size == 0:
            break  # the remaining small patches have nowhere to go
        small_ids = np.flatnonzero(small)
        rank = np.full(n + 1, -1, dtype=np.int64)
        rank[small_ids] = np.arange(small_ids.size)
        border = np.bincount(rank[src] * k1 + patch_class[dst], minlength=small_ids.size * k1)
        border = border.reshape(small_ids.size, k1).astype(np.float64)
        has_target = border.sum(axis=1) > 0
        border[:, 1:] += np.where(border[:, 1:] > 0, tiebreak[1:], 0.0)
        target = border.argmax(axis=1)
        new_class = patch_class.copy()
        new_class[small_ids[has_target]] = target[has_target]
        dense = new_class[lab]
    else:
        lab, n = _label_patches(dense)
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        left = int((sizes[1:] < min_pixels).sum())
        if left:
            log.warning("minimum mapping unit: %d small patch(es) left after %d iterations", left, max_iterations)
    return _from_dense(dense, present), iteration


# -- morphological opening -------------------------------------------------------------------------
def open_classes(cls: np.ndarray, radius: int) -> np.ndarray:
    """Opening of each class by a (2 radius + 1) square; removed pixels refilled from the nearest kept one.

    Erosion treats outside the tile as the same class, so tile edges do not erode.
    Holes are refilled from the nearest kept data pixel (Euclidean), never from no
    data; if opening would remove every data pixel the map is returned unchanged.
    """
    _check_map(cls)
    if radius < 1:
        return cls.copy()
    # A square (8-connected) element: openings keep the corners of rectangular fields.
    structure = ndimage.generate_binary_structure(2, 2)
    data = cls != 0
    kept = np.zeros(cls.shape, dtype=bool)
    for c in np.unique(cls[data]):
        mask = cls == c
        eroded = ndimage.binary_erosion(mask, structure, iterations=radius, border_value=1)
        kept |= ndimage.binary_dilation(eroded, structure, iterations=radius) & mask
    if not kept.any():
        return cls.copy()
    holes = data & ~kept
    if not holes.any():
        return cls.copy()
    # Distance transform of "not a kept data pixel": indices point to the nearest kept data pixel.
    _, (ri, ci) = ndimage.distance_transform_edt(~kept, return_indices=True)
    out = cls.copy()
    out[holes] = cls[ri[holes], ci[holes]]
    return out


# -- confidence ------------------------------------------------------------------------------------
def class_confidence(
    cls: np.ndarray,
    probabilities: np.ndarray,
    class_ids: list[int],
    fallback: np.ndarray,
    segments: np.ndarray | None = None,
) -> np.ndarray:
    """Confidence of the final class: its probability per pixel, averaged per segment if given.

    ``probabilities`` is (H, W, C) uint8 percent in the order of ``class_ids``.
    With ``segments``, pixels of one class inside one segment share the mean of their
    probabilities (the segment's support for the class it was given). No-data pixels
    and classes without a probability channel keep ``fallback``.
    """
    h, w = cls.shape
    if probabilities.shape[:2] != (h, w) or probabilities.shape[2] != len(class_ids):
        raise ValueError(
            f"probabilities shape {probabilities.shape} does not fit the class map {cls.shape} "
            f"and {len(class_ids)} class ids"
        )
    channel = np.full(256, -1, dtype=np.int64)
    channel[np.asarray(class_ids, dtype=np.int64)] = np.arange(len(class_ids))
    ch = channel[cls]
    known = (cls != 0) & (ch >= 0)
    rows, cols = np.indices(cls.shape)
    prob = probabilities[rows, cols, np.maximum(ch, 0)].astype(np.float64) / 100.0
    if segments is not None:
        key = segments.astype(np.int64) * 256 + cls
        _, inverse = np.unique(key[known], return_inverse=True)
        sums = np.bincount(inverse, weights=prob[known])
        n = np.bincount(inverse)
        prob[known] = (sums / n)[inverse]
    out = fallback.astype(np.float32, copy=True)
    out[known] = prob[known]
    return out


# -- the chain -------------------------------------------------------------------------------------
@dataclass
class PostprocessSettings:
    """What :func:`postprocess_class_map` does (mirrors the stage options)."""

    segmentation: Segmentation = "felzenszwalb"
    felzenszwalb_scale: float = 10.0
    felzenszwalb_sigma: float = 0.5
    felzenszwalb_min_size: int = 5
    slic_n_segments: int | None = None
    slic_compactness: float = 0.1
    modal_size: int = 3
    min_mapping_unit_px: int = 16
    mmu_max_iterations: int = 20
    erosion_dilation_px: int = 0
    confidence: ConfidenceRule = "segment_mean"


@dataclass
class PostprocessResult:
    """The cleaned map, its confidence and what each step did."""

    classes: np.ndarray
    confidence: np.ndarray
    steps: list[dict[str, Any]] = field(default_factory=list)


def _changed(before: np.ndarray, after: np.ndarray) -> dict[str, Any]:
    diff = before != after
    pairs: dict[str, int] = {}
    if diff.any():
        key = before[diff].astype(np.int64) * 256 + after[diff]
        values, counts = np.unique(key, return_counts=True)
        pairs = {f"{v // 256}->{v % 256}": int(c) for v, c in zip(values, counts, strict=True)}
    return {"pixels_changed": int(diff.sum()), "changes_by_class": pairs}


def postprocess_class_map(
    cls: np.ndarray,
    confidence: np.ndarray,
    settings: PostprocessSettings,
    *,
    seg_image: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
    class_ids: list[int] | None = None,
) -> PostprocessResult:
    """Apply the configured steps in order: segment majority, modal, MMU, opening.

    ``seg_image`` (H, W, B) is needed when ``settings.segmentation`` is not "none";
    ``probabilities`` and ``class_ids`` when ``settings.confidence`` is not "carry".
    Each step's entry in ``steps`` records its parameters, pixels changed, changes
    per "from->to" class pair and seconds.
    """
    _check_map(cls)
    if confidence.shape != cls.shape:
        raise ValueError(f"confidence shape {confidence.shape} differs from the class map's {cls.shape}")
    current = cls.copy()
    steps: list[dict[str, Any]] = []
    segments: np.ndarray | None = None

    def record(name: str, params: dict[str, Any], new: np.ndarray, t0: float, **extra: Any) -> np.ndarray:
        steps.append(
            {"step": name, **params, **_changed(current, new), **extra, "seconds": round(time.perf_counter() - t0, 4)}
        )
        return new

    if settings.segmentation != "none":
        if seg_image is None:
            raise ValueError(f"segmentation {settings.segmentation!r} needs a segmentation image")
        t0 = time.perf_counter()
        segments = segment(
            seg_image,
            settings.segmentation,
            felzenszwalb_scale=settings.felzenszwalb_scale,
            felzenszwalb_sigma=settings.felzenszwalb_sigma,
            felzenszwalb_min_size=settings.felzenszwalb_min_size,
            slic_n_segments=settings.slic_n_segments,
            slic_compactness=settings.slic_compactness,
        )
        current = record(
            "segment_majority",
            {"method": settings.segmentation},
            segment_majority(current, segments),
            t0,
            n_segments=int(segments.max()) + 1,
        )
    if settings.modal_size >= 2:
        t0 = time.perf_counter()
        current = record("modal_filter", {"size": settings.modal_size}, modal_filter(current, settings.modal_size), t0)
    if settings.min_mapping_unit_px >= 2:
        t0 = time.perf_counter()
        new, iterations = minimum_mapping_unit(
            current, settings.min_mapping_unit_px, max_iterations=settings.mmu_max_iterations
        )
        current = record(
            "minimum_mapping_unit", {"min_pixels": settings.min_mapping_unit_px}, new, t0, iterations=iterations
        )
    if settings.erosion_dilation_px >= 1:
        t0 = time.perf_counter()
        current = record(
            "opening",
            {"radius_px": settings.erosion_dilation_px},
            open_classes(current, settings.erosion_dilation_px),
            t0,
        )

    conf = confidence.astype(np.float32, copy=True)
    if settings.confidence != "carry":
        if probabilities is None or class_ids is None:
            raise ValueError(f"confidence rule {settings.confidence!r} needs class probabilities and class ids")
        conf = class_confidence(
            current,
            probabilities,
            class_ids,
            conf,
            segments if settings.confidence == "segment_mean" else None,
        )
    return PostprocessResult(classes=current, confidence=conf, steps=steps)


def _check_map(cls: np.ndarray) -> None:
    if cls.ndim != 2 or cls.dtype != np.uint8:
        raise ValueError(f"a class map must be a 2-D uint8 array, got {cls.dtype} with shape {cls.shape}")
