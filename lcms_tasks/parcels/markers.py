"""Parcel markers from rasters: pure functions over a tile's parcel-id image and feature cube.

The raster path of the parcel markers (issue 12) works on what the pipeline already has per tile:
a parcel-id image (the declarations rasterised, e.g. ``POLYGON_ID`` of add_reference; 0 = no
parcel) and the features EOPatch's ``FEATURES`` (K, H, W, F). These functions are the steps, with
no I/O:

* :func:`inner_buffer`: each parcel shrunk by ``pixels`` so that edge pixels, which mix the parcel
  with its neighbours, do not enter its figures;
* :func:`aggregate`: per parcel, feature and date the mean and standard deviation over its clean
  pixels, and the pixel count;
* :func:`too_small`: parcels with fewer than ``min_pixels`` clean pixels, which get the flag
  ``too_small`` and never a predicted class;
* :func:`disagreements`: declared vs predicted class, flagged when they differ with at least a
  given probability, sorted by confidence.
"""

from __future__ import annotations

import numpy as np


def inner_buffer(parcel_ids: np.ndarray, pixels: int) -> np.ndarray:
    """``parcel_ids`` (H, W) with every pixel closer than ``pixels`` (chessboard distance) to another id set to 0.

    A pixel stays when its whole (2 * pixels + 1)² neighbourhood holds its own id; beyond the image edge
    the edge pixels are repeated (a parcel cut by the tile border is not eroded there: its other side
    is in the next tile). ``pixels = 0`` returns a copy.
    """
    from scipy import ndimage

    ids = np.asarray(parcel_ids)
    if ids.ndim != 2:
        raise ValueError(f"parcel_ids must be (H, W), got shape {ids.shape}")
    if pixels < 0:
        raise ValueError(f"pixels must be >= 0, got {pixels}")
    if pixels == 0 or ids.size == 0:
        return ids.copy()
    size = 2 * pixels + 1
    low = ndimage.minimum_filter(ids, size=size, mode="nearest")
    high = ndimage.maximum_filter(ids, size=size, mode="nearest")
    return np.where((low == ids) & (high == ids), ids, 0).astype(ids.dtype, copy=False)


def aggregate(
    features: np.ndarray, parcel_ids: np.ndarray, clean: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-parcel mean and standard deviation of every feature and date over its clean pixels.

    Args:
        features: ``(K, H, W, F)`` features (NaN pixels are not clean for that date and feature).
        parcel_ids: ``(H, W)`` integer parcel ids, 0 = no parcel.
        clean: optional ``(H, W)`` bool, the pixels that may be used (e.g. ``VALID_COUNT > 0``).

    Returns:
        ``(ids (P,), mean (P, K, F) float32, std (P, K, F) float32, count (P,) int64)``: the parcels present
        (sorted), the statistics (NaN where a parcel has no finite value for a date and feature; population
        standard deviation) and the clean pixels per parcel.
    """
    features = np.asarray(features)
    ids_image = np.asarray(parcel_ids)
    if features.ndim != 4 or features.shape[1:3] != ids_image.shape:
        raise ValueError(f"features {features.shape} must be (K, H, W, F) over parcel_ids {ids_image.shape}")
    use = ids_image != 0
    if clean is not None:
        if clean.shape != ids_image.shape:
            raise ValueError(f"clean {clean.shape} must match parcel_ids {ids_image.shape}")
        use &= np.asarray(clean, dtype=bool)
    ids, codes = np.unique(ids_image[use], return_inverse=True)
    n_parcels = ids.size
    count = np.bincount(codes, minlength=n_parcels).astype(np.int64)
    n_times, _, _, n_feat = features.shape
    mean = np.full((n_parcels, n_times, n_feat), np.nan, dtype=np.float32)
    std = np.full_like(mean, np.nan)
    pixels = features[:, use, :]  # (K, n_pixels, F)
    for k in range(n_times):
        for f in range(n_feat):
            values = pixels[k, :, f].astype(np.float64)
            finite = np.isfinite(values)
            n = np.bincount(codes[finite], minlength=n_parcels)
            total = np.bincount(codes[finite], weights=values[finite], minlength=n_parcels)
            with np.errstate(invalid="ignore", divide="ignore"):
                m = total / n
                centred = values[finite] - m[codes[finite]]
                var = np.bincount(codes[finite], weights=centred * centred, minlength=n_parcels) / n
            mean[:, k, f] = m
            std[:, k, f] = np.sqrt(var)
    return ids, mean, std, count


def too_small(count: np.ndarray, min_pixels: int) -> np.ndarray:
    """``(P,)`` bool: parcels with fewer than ``min_pixels`` clean pixels (flag ``too_small``, no guess)."""
    if min_pixels < 1:
        raise ValueError(f"min_pixels must be >= 1, got {min_pixels}")
    return np.asarray(count) < min_pixels


def disagreements(
    declared: np.ndarray, predicted: np.ndarray, probability: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(flag (P,) bool, order)``: declared != predicted with probability >= threshold; ``order`` lists the
    flagged parcels' positions by decreasing probability (ties in input order).

    A parcel without a prediction (predicted None / NaN probability, e.g. too small) is never flagged.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    declared = np.asarray(declared, dtype=object)
    predicted = np.asarray(predicted, dtype=object)
    probability = np.asarray(probability, dtype=np.float64)
    known = np.array([p is not None for p in predicted], dtype=bool) & np.isfinite(probability)
    known &= np.array([d is not None for d in declared], dtype=bool)
    differ = np.array([d != p for d, p in zip(declared, predicted, strict=True)], dtype=bool)
    with np.errstate(invalid="ignore"):
        flag = known & differ & (probability >= threshold)
    flagged = np.flatnonzero(flag)
    order = flagged[np.argsort(-probability[flagged], kind="stable")]
    return flag, order
