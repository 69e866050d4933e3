"""Features EOPatch arrays <-> the per-pixel feature matrix a model sees.

The model input of a pixel is its whole time series of features, time-major:
``[NDVI_t00, NDWI_t00, ..., TC_WETNESS_t00, NDVI_t01, ...]``. Names carry the
date index, not the date, so a model trained on one season can be applied to
another season with the same date grid length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def flat_feature_names(feature_names: Sequence[str], n_times: int) -> list[str]:
    """Column names of the matrix from :func:`pixel_matrix`."""
    return [f"{name}_t{k:02d}" for k in range(n_times) for name in feature_names]


def pixel_matrix(features: np.ndarray, rows: slice | None = None) -> np.ndarray:
    """(K, H, W, F) features -> (H*W, K*F) float32 matrix (optionally only ``rows`` of the image).

    Row order is the image's row-major pixel order, so ``result.reshape(H, W, -1)`` maps back.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (times, height, width, features), got shape {features.shape}")
    block = features if rows is None else features[:, rows]
    k, h, w, f = block.shape
    return np.ascontiguousarray(block.transpose(1, 2, 0, 3), dtype=np.float32).reshape(h * w, k * f)


def sample_matrix(features: np.ndarray, row_idx: np.ndarray, col_idx: np.ndarray) -> np.ndarray:
    """Feature vectors (n, K*F) of the pixels at (row_idx, col_idx)."""
    k, _, _, f = features.shape
    picked = features[:, row_idx, col_idx, :]  # (K, n, F)
    return np.ascontiguousarray(picked.transpose(1, 0, 2), dtype=np.float32).reshape(len(row_idx), k * f)
