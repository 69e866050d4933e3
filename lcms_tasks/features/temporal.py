"""Temporal harmonisation of irregular, cloudy time series onto a regular date grid.

Pure numpy, float32, vectorised over pixels (Python loops only run over dates,
targets or row chunks). Conventions shared by all functions:

* ``values`` is ``(T, H, W, F)`` float32, ``valid`` is ``(T, H, W)`` bool (a
  trailing singleton axis, as in eo-learn masks ``(T, H, W, 1)``, is accepted).
* ``times`` / ``target_times`` are float days on any common origin (see
  :func:`days_since`); ``times`` must be non-decreasing.
* An observation counts as valid only if ``valid`` is True AND all its F
  values are finite. Values at invalid observations are never read into the
  result, so they may hold anything (NaN, 1e9, ...).
* ``n_valid`` (H, W) uint16 is the number of valid observations used per pixel.
  A pixel with ``n_valid == 0`` has NaN for every target and feature; it is the
  only place NaN appears in the output, so ``n_valid == 0`` is the explicit
  "no data" mask downstream.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Literal

import numpy as np

#: Default number of pixels per chunk when ``chunk_rows`` is None: large enough that per-target numpy
#: calls are cheap, small enough that the gathers and temporaries stay close to cache.
_AUTO_CHUNK_PIXELS = 8192


def days_since(timestamps: Iterable[dt.date | dt.datetime], origin: dt.date | dt.datetime) -> np.ndarray:
    """Float64 days from ``origin`` to each timestamp (datetimes keep their time of day).

    Dates and datetimes may be mixed: a ``date`` is taken as midnight.
    """

    def as_datetime(value: dt.date | dt.datetime) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value.replace(tzinfo=None)
        return dt.datetime(value.year, value.month, value.day)

    base = as_datetime(origin)
    return np.array([(as_datetime(t) - base).total_seconds() / 86400.0 for t in timestamps], dtype=np.float64)


def valid_coverage(valid: np.ndarray) -> np.ndarray:
    """Share of valid pixels per date: ``(T, H, W)`` bool -> ``(T,)`` float64 in [0, 1].

    Dates of an empty image (H * W == 0) get coverage 0.
    """
    valid = np.asarray(valid, dtype=bool)
    if valid.ndim < 1:
        raise ValueError("valid must have a leading time axis")
    flat = valid.reshape(valid.shape[0], -1)
    if flat.shape[1] == 0:
        return np.zeros(valid.shape[0], dtype=np.float64)
    return np.count_nonzero(flat, axis=1) / flat.shape[1]


def select_dates(valid: np.ndarray, min_coverage: float) -> np.ndarray:
    """``(T,)`` bool: dates whose valid coverage is >= ``min_coverage`` (a fraction in [0, 1])."""
    if not 0.0 <= min_coverage <= 1.0:
        raise ValueError(f"min_coverage must be within [0, 1], got {min_coverage}")
    return valid_coverage(valid) >= min_coverage


def regular_dates(start: dt.date, end: dt.date, step_days: int) -> list[dt.date]:
    """``start, start + step, ...`` up to and including ``end`` (empty if ``end < start``)."""
    if step_days < 1:
        raise ValueError(f"step_days must be >= 1, got {step_days}")
    n = (end - start).days // step_days + 1 if end >= start else 0
    return [start + dt.timedelta(days=i * step_days) for i in range(n)]


def _check_inputs(
    values: np.ndarray, valid: np.ndarray, times: np.ndarray, target_times: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    values = np.asarray(values)
    valid = np.asarray(valid, dtype=bool)
    if valid.ndim == 4 and valid.shape[-1] == 1:
        valid = valid[..., 0]
    times = np.asarray(times, dtype=np.float64)
    target_times = np.asarray(target_times, dtype=np.float64)
    if values.ndim != 4:
        raise ValueError(f"values must be (T, H, W, F), got shape {values.shape}")
    if valid.shape != values.shape[:3]:
        raise ValueError(f"valid shape {valid.shape} does not match values shape {values.shape}")
    if times.shape != (values.shape[0],):
        raise ValueError(f"times shape {times.shape} does not match the {values.shape[0]} dates of values")
    if target_times.ndim != 1:
        raise ValueError(f"target_times must be 1-D, got shape {target_times.shape}")
    if not (np.all(np.isfinite(times)) and np.all(np.isfinite(target_times))):
        raise ValueError("times and target_times must be finite")
    if np.any(np.diff(times) < 0):
        raise ValueError("times must be non-decreasing")
    return values, valid, times, target_times


def row_chunks(height: int, width: int, chunk_rows: int | None = None) -> Iterator[slice]:
    """Slices of ``chunk_rows`` rows covering ``height`` rows (None: about 8k pixels per chunk)."""
    return _row_chunks(height, width, chunk_rows)


def _row_chunks(height: int, width: int, chunk_rows: int | None) -> Iterator[slice]:
    if chunk_rows is None:
        chunk_rows = max(1, _AUTO_CHUNK_PIXELS // max(width, 1))
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1 or None, got {chunk_rows}")
    for r0 in range(0, height, chunk_rows):
        yield slice(r0, min(r0 + chunk_rows, height))


def _effective_valid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``valid`` restricted to observations whose features are all finite: (T, P, F), (T, P) -> (T, P)."""
    # A valid-flagged NaN (e.g. a normalized difference with a zero denominator) would otherwise leak
    # into the output and break "NaN iff n_valid == 0"; dropping the observation is the safe reading.
    # One feature at a time: a reduction over a short inner axis (.all(axis=-1)) is several times slower.
    effective = np.array(valid, dtype=bool, copy=True)
    finite = np.empty(valid.shape, dtype=bool)
    for f in range(values.shape[-1]):
        np.isfinite(values[..., f], out=finite)
        effective &= finite
    return effective


def _interpolate_block(
    source: np.ndarray,
    date_stride: int,
    pixel_offset: int,
    valid: np.ndarray,
    times: np.ndarray,
    target_times: np.ndarray,
    out: np.ndarray,
) -> np.ndarray:
    """Core of :func:`interpolate_linear` on one block of P pixels.

    ``source`` is a 2-D ``(rows, F)`` view holding observation t of block pixel p at row
    ``t * date_stride + pixel_offset + p`` (so the whole input array can be used without copying a
    block). ``valid`` (T, P) must already exclude non-finite observations. Writes ``out`` (K, P, F)
    and returns n_valid (P,) int.
    """
    n_times, n_pix = valid.shape
    index_dtype = np.int16 if n_times < np.iinfo(np.int16).max else np.int32
    order = np.arange(n_times, dtype=index_dtype)[:, None]
    # prev[t, p]: last valid date index <= t (-1 if none); nxt[t, p]: first valid index >= t (T if none).
    prev = np.maximum.accumulate(np.where(valid, order, index_dtype(-1)), axis=0)
    nxt = np.minimum.accumulate(np.where(valid, order, index_dtype(n_times))[::-1], axis=0)[::-1]
    n_valid = np.count_nonzero(valid, axis=0)
    no_data = n_valid == 0
    any_no_data = bool(no_data.any())
    # Date index of the last acquisition at or before each target (-1: target before all of them).
    position = np.searchsorted(times, target_times, side="right") - 1
    pixel_rows = np.arange(pixel_offset, pixel_offset + n_pix, dtype=np.intp)
    none_before = np.full(n_pix, -1, index_dtype)
    none_after = np.full(n_pix, n_times, index_dtype)
    v0 = np.empty((n_pix, source.shape[1]), dtype=np.float32)
    v1 = np.empty_like(v0)
    for k, (j, target) in enumerate(zip(position, target_times, strict=True)):
        before = prev[j] if j >= 0 else none_before
        # First valid strictly after date j; times[j + 1] > target, so its time is > the target.
        after = nxt[j + 1] if j + 1 < n_times else none_after
        # Constant extrapolation: without a valid neighbour on one side use the other one.
        i0 = np.where(before < 0, after, before)
        i1 = np.where(after >= n_times, i0, after)
        # No-data pixels point at date 0 (any in-range row); they are overwritten with NaN below.
        if any_no_data:
            i0[no_data] = 0
            i1[no_data] = 0
        t0 = times[i0]
        span = times[i1] - t0
        with np.errstate(divide="ignore", invalid="ignore"):
            weight = np.where(span > 0, (target - t0) / span, 0.0).astype(np.float32)
        # Row gathers with np.take on a 2-D view copy F contiguous floats per pixel: several times
        # faster than fancy indexing with (date, pixel) index pairs.
        np.take(source, i0.astype(np.intp) * date_stride + pixel_rows, axis=0, out=v0)
        np.take(source, i1.astype(np.intp) * date_stride + pixel_rows, axis=0, out=v1)
        # v0 + w * (v1 - v0): exact at w == 0 (an observation itself), linear in between. No-data pixels
        # may have gathered garbage (e.g. inf - inf); they are overwritten, so silence those warnings.
        with np.errstate(invalid="ignore", over="ignore"):
            np.subtract(v1, v0, out=v1)
            np.multiply(v1, weight[:, None], out=v1)
            np.add(v0, v1, out=out[k])
        if any_no_data:
            out[k][no_data] = np.nan
    return n_valid


def _blocks(
    values: np.ndarray, valid: np.ndarray, chunk_rows: int | None
) -> Iterator[tuple[slice, np.ndarray, np.ndarray, int, int, np.ndarray]]:
    """Row chunks of a (T, H, W, F) stack as ``(rows, block, source, date_stride, pixel_offset, valid)``.

    ``block`` is the chunk's (T, P, F) float32 observations; ``source``/``date_stride``/``pixel_offset``
    address the same observations as expected by :func:`_interpolate_block`; ``valid`` is the chunk's
    (T, P) effective validity. A C-contiguous float32 input is addressed in place; anything else is
    copied one chunk at a time.
    """
    n_times, height, width, n_feat = values.shape
    in_place = values.dtype == np.float32 and values.flags.c_contiguous
    for rows in _row_chunks(height, width, chunk_rows):
        n_pix = (rows.stop - rows.start) * width
        if in_place:
            source = values.reshape(-1, n_feat)
            date_stride, offset = height * width, rows.start * width
            block = values[:, rows].reshape(n_times, n_pix, n_feat)
        else:
            block = np.ascontiguousarray(values[:, rows], dtype=np.float32).reshape(n_times, n_pix, n_feat)
            source = block.reshape(-1, n_feat)
            date_stride, offset = n_pix, 0
        yield (
            rows,
            block,
            source,
            date_stride,
            offset,
            _effective_valid(block, valid[:, rows].reshape(n_times, n_pix)),
        )


def interpolate_linear(
    values: np.ndarray,
    valid: np.ndarray,
    times: np.ndarray,
    target_times: np.ndarray,
    chunk_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel linear interpolation of valid observations to ``target_times``.

    For each pixel and target time, the result interpolates linearly between the
    pixel's nearest valid observation at or before the target and the nearest
    valid observation after it, so it is exact for signals linear in time and
    reproduces an observation at its own time. Before the first / after the last
    valid observation of a pixel, the nearest valid value is held (constant
    extrapolation). A pixel with no valid observation gets NaN for all targets
    and ``n_valid == 0``; no other NaN is produced. An observation flagged valid
    but with a non-finite value in any feature is treated as invalid.

    Args:
        values: ``(T, H, W, F)`` float32 features per acquisition.
        valid: ``(T, H, W)`` bool (``(T, H, W, 1)`` accepted).
        times: ``(T,)`` non-decreasing acquisition times in float days.
        target_times: ``(K,)`` output times in float days (any order).
        chunk_rows: rows per processing chunk, bounding temporary memory to
            ~``T * chunk_rows * W * (F + 6)`` bytes; None picks ~8k pixels per chunk
            (which is also the fastest setting).

    Returns:
        ``(out (K, H, W, F) float32, n_valid (H, W) uint16)``.
    """
    values, valid, times, target_times = _check_inputs(values, valid, times, target_times)
    n_times, height, width, n_feat = values.shape
    out = np.empty((target_times.size, height, width, n_feat), dtype=np.float32)
    n_valid = np.zeros((height, width), dtype=np.uint16)
    if n_times == 0:
        out.fill(np.nan)
        return out, n_valid
    for rows, _, source, date_stride, offset, block_valid in _blocks(values, valid, chunk_rows):
        block_out = np.empty((target_times.size, block_valid.shape[1], n_feat), dtype=np.float32)
        counts = _interpolate_block(source, date_stride, offset, block_valid, times, target_times, block_out)
        out[:, rows] = block_out.reshape(target_times.size, rows.stop - rows.start, width, n_feat)
        n_valid[rows] = np.minimum(counts, np.iinfo(np.uint16).max).reshape(-1, width)
    return out, n_valid


def _composite(values: np.ndarray, valid: np.ndarray, method: Literal["median", "mean"]) -> np.ndarray:
    """Composite over axis 0 of the valid observations: (m, P, F), (m, P) -> (P, F); NaN where none valid."""
    count = np.count_nonzero(valid, axis=0)
    if method == "mean":
        total = np.where(valid[..., None], values, np.float32(0)).sum(axis=0, dtype=np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            return total / count[:, None].astype(np.float32)
    # Median: invalid values become NaN, which np.sort puts last; the median of the first `count`
    # sorted values is read by index. Avoids np.nanmedian, which is slow on many small columns.
    ordered = np.sort(np.where(valid[..., None], values, np.float32(np.nan)), axis=0)
    low = np.clip((count - 1) // 2, 0, None)[None, :, None]
    high = np.clip(count // 2, 0, None)[None, :, None]
    low = np.broadcast_to(low, (1, *values.shape[1:]))
    high = np.broadcast_to(high, (1, *values.shape[1:]))
    median = np.take_along_axis(ordered, low, axis=0)[0]
    median += np.take_along_axis(ordered, high, axis=0)[0]
    median *= np.float32(0.5)
    median[count == 0] = np.nan
    return median


def mosaic(
    values: np.ndarray,
    valid: np.ndarray,
    times: np.ndarray,
    target_times: np.ndarray,
    step_days: float,
    method: Literal["median", "mean"],
    chunk_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-period composites of the valid observations, gaps filled by linear interpolation.

    Period k is the half-open interval ``[target_times[k], target_times[k] + step_days)``;
    its composite is the per-pixel median or mean of the valid observations acquired in it
    (median of an even count: mean of the two middle values). A period without a valid
    observation for a pixel is filled by linear interpolation between the neighbouring
    non-empty composites, placed at their ``target_times``, and by the nearest one before
    the first / after the last (constant extrapolation), as in :func:`interpolate_linear`.
    Observations outside every period are ignored. Periods may overlap (then an
    observation contributes to each).

    Returns ``(out (K, H, W, F) float32, n_valid (H, W) uint16)`` where ``n_valid`` counts
    the valid observations that fall in at least one period; pixels with ``n_valid == 0``
    are NaN for all targets and are the only NaN in ``out``. Non-finite values of
    valid-flagged observations are treated as invalid.
    """
    values, valid, times, target_times = _check_inputs(values, valid, times, target_times)
    if method not in ("median", "mean"):
        raise ValueError(f"method must be 'median' or 'mean', got {method!r}")
    if not step_days > 0:
        raise ValueError(f"step_days must be > 0, got {step_days}")
    n_times, height, width, n_feat = values.shape
    n_targets = target_times.size
    out = np.empty((n_targets, height, width, n_feat), dtype=np.float32)
    n_valid = np.zeros((height, width), dtype=np.uint16)
    # Date index range [lo_k, hi_k) of each period (times are sorted).
    lo = np.searchsorted(times, target_times, side="left")
    hi = np.searchsorted(times, target_times + step_days, side="left")
    in_any_period = np.zeros(n_times, dtype=bool)
    for a, b in zip(lo, hi, strict=True):
        in_any_period[a:b] = True
    order = np.argsort(target_times, kind="stable")
    for rows, block, _, _, _, block_valid in _blocks(values, valid, chunk_rows):
        n_pix = block_valid.shape[1]
        composites = np.empty((n_targets, n_pix, n_feat), dtype=np.float32)
        has_obs = np.zeros((n_targets, n_pix), dtype=bool)
        for k, (a, b) in enumerate(zip(lo, hi, strict=True)):
            if b > a:
                composites[k] = _composite(block[a:b], block_valid[a:b], method)
                has_obs[k] = block_valid[a:b].any(axis=0)
            else:
                composites[k] = np.nan
        # Fill empty periods from neighbouring composites: the interpolation core on the composites,
        # sorted by their times (it requires non-decreasing times), evaluated back at every target.
        block_out = np.empty_like(composites)
        sorted_composites = composites[order].reshape(-1, n_feat)
        _interpolate_block(sorted_composites, n_pix, 0, has_obs[order], target_times[order], target_times, block_out)
        out[:, rows] = block_out.reshape(n_targets, rows.stop - rows.start, width, n_feat)
        counts = np.count_nonzero(block_valid[in_any_period], axis=0)
        n_valid[rows] = np.minimum(counts, np.iinfo(np.uint16).max).reshape(-1, width)
    return out, n_valid
