"""Unit tests of lcms_tasks.features.temporal (date selection, interpolation, mosaics)."""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lcms_tasks.features.temporal import (
    days_since,
    interpolate_linear,
    mosaic,
    regular_dates,
    select_dates,
    valid_coverage,
)

# ---------------------------------------------------------------------------------------------------------
# coverage, date selection, regular grid


def test_valid_coverage_and_select_dates_thresholds() -> None:
    valid = np.zeros((4, 2, 5), dtype=bool)
    valid[0] = True  # 1.0
    valid[1, 0] = True  # 0.5
    valid[2, 0, :2] = True  # 0.2
    np.testing.assert_allclose(valid_coverage(valid), [1.0, 0.5, 0.2, 0.0])
    np.testing.assert_array_equal(select_dates(valid, 0.5), [True, True, False, False])  # >= keeps 0.5
    np.testing.assert_array_equal(select_dates(valid, 0.51), [True, False, False, False])
    np.testing.assert_array_equal(select_dates(valid, 0.0), [True] * 4)
    np.testing.assert_array_equal(select_dates(valid, 1.0), [True, False, False, False])
    # eo-learn style masks with a trailing axis give the same coverage.
    np.testing.assert_allclose(valid_coverage(valid[..., None]), valid_coverage(valid))
    with pytest.raises(ValueError):
        select_dates(valid, 1.5)
    assert valid_coverage(np.zeros((3, 0, 4), bool)).tolist() == [0.0, 0.0, 0.0]


def test_regular_dates() -> None:
    start = dt.date(2021, 1, 1)
    assert regular_dates(start, dt.date(2021, 1, 21), 10) == [
        start,
        dt.date(2021, 1, 11),
        dt.date(2021, 1, 21),
    ]
    assert regular_dates(start, dt.date(2021, 1, 20), 10) == [start, dt.date(2021, 1, 11)]
    assert regular_dates(start, start, 5) == [start]
    assert regular_dates(start, dt.date(2020, 12, 31), 5) == []
    assert len(regular_dates(start, dt.date(2021, 12, 31), 10)) == 37
    with pytest.raises(ValueError):
        regular_dates(start, start, 0)


def test_days_since() -> None:
    origin = dt.date(2021, 1, 1)
    got = days_since([dt.date(2021, 1, 1), dt.datetime(2021, 1, 11, 12), dt.date(2020, 12, 31)], origin)
    np.testing.assert_allclose(got, [0.0, 10.5, -1.0])


# ---------------------------------------------------------------------------------------------------------
# interpolate_linear


@st.composite
def _linear_series(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    """Random per-pixel linear signals, random valid masks (>= 1 valid per pixel) and garbage elsewhere."""
    n_times = draw(st.integers(1, 12))
    height, width, n_feat = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Strictly increasing times with irregular gaps (whole or fractional days).
    times = np.cumsum(rng.uniform(0.5, 30.0, n_times)) + draw(st.floats(-100, 100))
    valid = rng.random((n_times, height, width)) < draw(st.floats(0.1, 0.9))
    # Guarantee at least one (and usually two) valid observations per pixel.
    first = rng.integers(0, n_times, (height, width))
    second = rng.integers(0, n_times, (height, width))
    np.put_along_axis(valid, first[None], True, axis=0)
    np.put_along_axis(valid, second[None], True, axis=0)
    intercept = rng.uniform(-1, 1, (height, width, n_feat))
    slope = rng.uniform(-0.02, 0.02, (height, width, n_feat))
    values = (intercept + slope * times[:, None, None, None]).astype(np.float32)
    garbage = draw(st.sampled_from([np.nan, 1e9, -1e9, np.inf]))
    values[~valid] = garbage
    span = times[-1] - times[0]
    targets = np.sort(rng.uniform(times[0] - 0.3 * span - 5, times[-1] + 0.3 * span + 5, draw(st.integers(1, 15))))
    if draw(st.booleans()):
        targets = np.concatenate([targets, times])  # also exactly at the acquisitions, unsorted
    return values, valid, times, targets, intercept, slope


@settings(max_examples=150, deadline=None)
@given(_linear_series(), st.sampled_from([None, 1, 2]))
def test_interpolation_exact_on_linear_signals(series: tuple[np.ndarray, ...], chunk_rows: int | None) -> None:
    values, valid, times, targets, intercept, slope = series
    out, n_valid = interpolate_linear(values, valid, times, targets, chunk_rows=chunk_rows)
    assert out.dtype == np.float32 and out.shape == (targets.size, *values.shape[1:])
    assert n_valid.dtype == np.uint16
    np.testing.assert_array_equal(n_valid, valid.sum(axis=0))
    # Inside a pixel's valid range the signal is reproduced; outside it the nearest valid value is held.
    t_valid = np.where(valid, times[:, None, None], np.nan)
    first, last = np.nanmin(t_valid, axis=0), np.nanmax(t_valid, axis=0)
    effective_t = np.clip(targets[:, None, None], first[None], last[None])
    expected = intercept[None] + slope[None] * effective_t[..., None]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=2e-5)


def test_constant_extrapolation_and_exact_at_observations() -> None:
    times = np.array([0.0, 10.0, 20.0, 30.0])
    values = np.array([5.0, 1.0, 3.0, 8.0], dtype=np.float32).reshape(4, 1, 1, 1)
    valid = np.array([False, True, True, False]).reshape(4, 1, 1)
    targets = np.array([-5.0, 0.0, 10.0, 15.0, 20.0, 25.0, 40.0])
    out, n_valid = interpolate_linear(values, valid, times, targets)
    np.testing.assert_allclose(out[:, 0, 0, 0], [1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0])
    assert n_valid[0, 0] == 2
    # A single valid observation is held everywhere.
    out, _ = interpolate_linear(values, np.array([0, 0, 1, 0], bool).reshape(4, 1, 1), times, targets)
    np.testing.assert_array_equal(out[:, 0, 0, 0], 3.0)


def test_no_data_pixels_and_garbage_never_leak() -> None:
    rng = np.random.default_rng(3)
    n_times, height, width, n_feat = 9, 6, 7, 4
    times = np.sort(rng.choice(200, n_times, replace=False)).astype(np.float64)
    valid = rng.random((n_times, height, width)) < 0.5
    valid[:, 0, 0] = False  # no valid observation at all
    valid[:, 2, :] = False  # a whole row without data
    clean = rng.uniform(-1, 1, (n_times, height, width, n_feat)).astype(np.float32)
    targets = np.linspace(-10, 210, 23)
    reference, n_ref = interpolate_linear(np.where(valid[..., None], clean, 0.0), valid, times, targets)
    for garbage in (np.nan, 1e9, -np.inf):
        dirty = clean.copy()
        dirty[~valid] = garbage
        out, n_valid = interpolate_linear(dirty, valid, times, targets, chunk_rows=2)
        np.testing.assert_array_equal(n_valid, n_ref)
        np.testing.assert_array_equal(out, reference)  # bit-identical: invalid values are never read
        no_data = n_valid == 0
        assert no_data[0, 0] and no_data[2].all()
        np.testing.assert_array_equal(np.isnan(out), np.broadcast_to(no_data[None, ..., None], out.shape))


def test_valid_flagged_nan_counts_as_invalid() -> None:
    times = np.array([0.0, 10.0, 20.0])
    values = np.array([[1.0, 1.0], [np.nan, 7.0], [3.0, 3.0]], dtype=np.float32).reshape(3, 1, 1, 2)
    valid = np.ones((3, 1, 1), bool)
    out, n_valid = interpolate_linear(values, valid, times, np.array([10.0]))
    assert n_valid[0, 0] == 2
    np.testing.assert_allclose(out[0, 0, 0], [2.0, 2.0])  # the NaN observation drops as a whole


def test_layouts_and_chunking_agree() -> None:
    rng = np.random.default_rng(5)
    values = rng.random((8, 13, 11, 3), dtype=np.float32)
    valid = rng.random((8, 13, 11)) < 0.6
    times = np.cumsum(rng.uniform(1, 9, 8))
    targets = np.linspace(times[0] - 3, times[-1] + 3, 17)
    expected, n_expected = interpolate_linear(values, valid, times, targets)
    variants = [
        interpolate_linear(values, valid, times, targets, chunk_rows=1),
        interpolate_linear(values, valid, times, targets, chunk_rows=5),
        interpolate_linear(values, valid[..., None], times.astype(np.float32), targets),
        interpolate_linear(values.astype(np.float64), valid, times, targets),
        interpolate_linear(np.asfortranarray(values), valid, times, targets, chunk_rows=4),
    ]
    for out, n_valid in variants:
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(n_valid, n_expected)


def test_duplicate_times_and_input_checks() -> None:
    times = np.array([0.0, 10.0, 10.0, 20.0])
    values = np.array([0.0, 1.0, 3.0, 2.0], dtype=np.float32).reshape(4, 1, 1, 1)
    valid = np.array([True, False, True, True]).reshape(4, 1, 1)
    out, _ = interpolate_linear(values, valid, times, np.array([5.0, 10.0, 15.0]))
    np.testing.assert_allclose(out[:, 0, 0, 0], [1.5, 3.0, 2.5])
    with pytest.raises(ValueError, match="non-decreasing"):
        interpolate_linear(values, valid, times[::-1], np.array([5.0]))
    with pytest.raises(ValueError):
        interpolate_linear(values[..., 0], valid, times, np.array([5.0]))
    with pytest.raises(ValueError):
        interpolate_linear(values, valid[:3], times, np.array([5.0]))


def test_no_dates_and_no_targets() -> None:
    out, n_valid = interpolate_linear(np.zeros((0, 2, 3, 2), np.float32), np.zeros((0, 2, 3), bool),
                                      np.zeros(0), np.array([1.0, 2.0]))  # fmt: skip
    assert out.shape == (2, 2, 3, 2) and np.isnan(out).all() and (n_valid == 0).all()
    out, _ = interpolate_linear(np.ones((2, 2, 3, 2), np.float32), np.ones((2, 2, 3), bool),
                                np.array([0.0, 1.0]), np.zeros(0))  # fmt: skip
    assert out.shape == (0, 2, 3, 2)


def test_interpolation_chunked_equals_whole() -> None:
    # Speed is measured by `make bench`; here: chunking must not change the result.
    rng = np.random.default_rng(0)
    values = rng.random((30, 60, 50, 6), dtype=np.float32)
    valid = rng.random((30, 60, 50)) < 0.6
    times = np.sort(rng.uniform(0, 365, 30))
    targets = np.arange(0.0, 365.0, 9.2)[:40]
    whole, n_whole = interpolate_linear(values, valid, times, targets, chunk_rows=60)
    chunked, n_chunked = interpolate_linear(values, valid, times, targets, chunk_rows=7)
    np.testing.assert_array_equal(whole, chunked)
    np.testing.assert_array_equal(n_whole, n_chunked)


# ---------------------------------------------------------------------------------------------------------
# mosaic


def _series(pixel_values: list[list[float]], pixel_valid: list[list[bool]]) -> tuple[np.ndarray, np.ndarray]:
    """(T, 1, P, 1) values and (T, 1, P) valid from per-pixel lists."""
    values = np.array(pixel_values, dtype=np.float32).T[:, None, :, None]
    valid = np.array(pixel_valid, dtype=bool).T[:, None, :]
    return values, valid


@pytest.mark.parametrize("method", ["median", "mean"])
def test_mosaic_hand_made(method: str) -> None:
    times = np.array([0.0, 2.0, 5.0, 9.9, 25.0, 27.0, 41.0])
    targets = np.array([0.0, 10.0, 20.0, 30.0])  # periods [0,10) [10,20) [20,30) [30,40); 41 is outside
    values, valid = _series(
        [
            [1.0, 5.0, 2.0, 1e9, 4.0, 6.0, 99.0],  # garbage at an invalid date
            [7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0],  # all invalid -> no data
            [np.nan, 2.0, 4.0, 3.0, 8.0, np.nan, 5.0],  # NaN at invalid dates
        ],
        [
            [True, True, True, False, True, True, True],
            [False] * 7,
            [False, True, True, True, True, False, False],
        ],
    )
    out, n_valid = mosaic(values, valid, times, targets, 10.0, method)  # type: ignore[arg-type]
    assert out.shape == (4, 1, 3, 1) and out.dtype == np.float32
    got = out[:, 0, :, 0]
    if method == "median":
        first = [2.0, 3.0]  # median(1, 5, 2); median(2, 4, 3)
        third = [5.0, 8.0]  # median of an even count: mean of the middle two (4, 6)
    else:
        first = [8.0 / 3.0, 3.0]
        third = [5.0, 8.0]
    np.testing.assert_allclose(got[0, [0, 2]], first, rtol=1e-6)
    np.testing.assert_allclose(got[2, [0, 2]], third, rtol=1e-6)
    # Empty period [10, 20): linear between composites placed at 0 and 20 -> midpoint.
    np.testing.assert_allclose(got[1, [0, 2]], [(first[0] + third[0]) / 2, (first[1] + third[1]) / 2], rtol=1e-6)
    # Empty trailing period [30, 40): the last composite is held (41 is outside every period).
    np.testing.assert_allclose(got[3, [0, 2]], third, rtol=1e-6)
    assert np.isnan(got[:, 1]).all()
    assert not np.isnan(got[:, [0, 2]]).any()
    np.testing.assert_array_equal(n_valid[0], [5, 0, 4])


def test_mosaic_agrees_with_numpy_and_across_chunks() -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(size=(15, 9, 8, 2)).astype(np.float32)
    valid = rng.random((15, 9, 8)) < 0.5
    values[~valid] = np.nan
    times = np.sort(rng.uniform(0, 60, 15))
    targets = np.arange(0.0, 60.0, 10.0)
    for method, reducer in (("median", np.nanmedian), ("mean", np.nanmean)):
        out, n_valid = mosaic(values, valid, times, targets, 10.0, method)  # type: ignore[arg-type]
        out2, _ = mosaic(values, valid, times, targets, 10.0, method, chunk_rows=2)  # type: ignore[arg-type]
        np.testing.assert_allclose(out2, out, rtol=1e-6)
        for k, t in enumerate(targets):
            sel = (times >= t) & (times < t + 10.0)
            has = valid[sel].any(axis=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns of empty periods
                expected = reducer(values[sel], axis=0)
            np.testing.assert_allclose(out[k][has], expected[has], rtol=1e-5, atol=1e-6)
        assert not np.isnan(out[:, n_valid > 0]).any()


def test_mosaic_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="method"):
        mosaic(np.zeros((1, 1, 1, 1), np.float32), np.ones((1, 1, 1), bool), np.zeros(1), np.zeros(1), 10.0,
               "max")  # type: ignore[arg-type]  # fmt: skip
