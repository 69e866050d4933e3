"""Temporal statistics of harmonised feature time series: pure numpy, float32.

:func:`temporal_statistics` summarises each feature's series over the dates of a
regular grid (the output of :mod:`lcms_tasks.features.temporal`) into timeless
figures a classifier can use whatever the season's length or a crop's shift in
time:

* ``mean``, ``std`` (population, ddof 0), ``min``, ``max``;
* percentiles ``p10``, ``p25``, ``p50``, ``p75``, ``p90`` (linear interpolation
  between order statistics, numpy's default ``method="linear"``);
* ``amplitude`` = max - min;
* ``peak_day`` / ``trough_day``: the time of the maximum / minimum (the first
  one on ties), in the unit and origin of ``times`` (callers pass days since the
  grid's first date).

NaN values are missing and ignored; a series without any finite value gives NaN
for every statistic (after the temporal interpolation this happens only for a
pixel or parcel with no valid observation at all).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Every statistic :func:`temporal_statistics` computes, in a fixed order.
STATISTICS: tuple[str, ...] = (
    "mean",
    "std",
    "min",
    "p10",
    "p25",
    "p50",
    "p75",
    "p90",
    "max",
    "amplitude",
    "peak_day",
    "trough_day",
)

_PERCENTILES = {"p10": 10.0, "p25": 25.0, "p50": 50.0, "p75": 75.0, "p90": 90.0}


def check_statistics(statistics: Sequence[str]) -> tuple[str, ...]:
    """``statistics`` as a tuple, or ``ValueError`` naming an unknown or repeated one."""
    unknown = [s for s in statistics if s not in STATISTICS]
    if unknown:
        raise ValueError(f"unknown temporal statistic(s) {unknown}; known: {', '.join(STATISTICS)}")
    repeated = sorted({s for s in statistics if list(statistics).count(s) > 1})
    if repeated:
        raise ValueError(f"temporal statistic(s) {repeated} listed more than once")
    return tuple(statistics)


def statistic_names(feature_names: Sequence[str], statistics: Sequence[str]) -> list[str]:
    """Column names of :func:`temporal_statistics`' output: feature-major, ``{feature}_{statistic}``."""
    return [f"{feature}_{stat}" for feature in feature_names for stat in statistics]


def temporal_statistics(values: np.ndarray, times: np.ndarray, statistics: Sequence[str]) -> np.ndarray:
    """Per-feature statistics over the leading (time) axis.

    Args:
        values: ``(K, ..., F)`` series of F features at K times; NaN = missing.
        times: ``(K,)`` times of the K values (e.g. days since the grid's first date), for the
            ``peak_day`` / ``trough_day`` statistics.
        statistics: names from :data:`STATISTICS`, in output order within each feature.

    Returns:
        ``(..., F * len(statistics))`` float32, feature-major (the order of :func:`statistic_names`).
    """
    statistics = check_statistics(statistics)
    values = np.asarray(values, dtype=np.float32)
    times = np.asarray(times, dtype=np.float64)
    if values.ndim < 2:
        raise ValueError(f"values must be (K, ..., F), got shape {values.shape}")
    if times.shape != (values.shape[0],):
        raise ValueError(f"times shape {times.shape} does not match the {values.shape[0]} dates of values")
    n_times, *rest, n_feat = values.shape
    flat = values.reshape(n_times, -1)  # (K, N * F): one column per (item, feature)
    out = np.empty((flat.shape[1], len(statistics)), dtype=np.float32)
    if flat.shape[1] == 0 or not statistics:
        return out.reshape(*rest, n_feat * len(statistics))
    finite = np.isfinite(flat)
    count = finite.sum(axis=0)
    empty = count == 0
    # NaN sort last, so the first `count` rows of a column are its finite values in order.
    ordered = np.sort(np.where(finite, flat, np.float32(np.nan)), axis=0)
    columns = np.arange(flat.shape[1])
    last = np.maximum(count - 1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.where(finite, flat, np.float32(0)).sum(axis=0, dtype=np.float64)
        mean = total / count
    for j, stat in enumerate(statistics):
        if stat == "mean":
            result = mean
        elif stat == "std":
            deviation = np.where(finite, flat - mean[None, :], 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                result = np.sqrt((deviation * deviation).sum(axis=0) / count)
        elif stat == "min":
            result = ordered[0]
        elif stat == "max":
            result = ordered[last, columns]
        elif stat == "amplitude":
            result = ordered[last, columns].astype(np.float64) - ordered[0]
        elif stat in _PERCENTILES:
            position = _PERCENTILES[stat] / 100.0 * last
            lo = np.floor(position).astype(np.intp)
            hi = np.minimum(lo + 1, last)
            low = ordered[lo, columns].astype(np.float64)
            result = low + (position - lo) * (ordered[hi, columns] - low)
        else:  # peak_day / trough_day
            if stat == "peak_day":
                index = np.argmax(np.where(finite, flat, -np.inf), axis=0)
            else:
                index = np.argmin(np.where(finite, flat, np.inf), axis=0)
            result = times[index]
        out[:, j] = result
        out[empty, j] = np.nan
    return out.reshape(*rest, n_feat * len(statistics))
