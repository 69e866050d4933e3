"""Temporal statistics of feature series (lcms_tasks.features.statistics)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lcms_tasks.features.statistics import STATISTICS, statistic_names, temporal_statistics

TIMES = np.array([0.0, 30.0, 61.0, 91.0, 122.0])


def test_statistics_of_a_series_by_hand() -> None:
    # One item, two features: an NDVI-like bell and a flat line.
    values = np.array([[0.2, 1.0], [0.5, 1.0], [0.8, 1.0], [0.6, 1.0], [0.3, 1.0]], dtype=np.float32)[:, None, :]
    stats = ["mean", "std", "min", "p10", "p50", "p90", "max", "amplitude", "peak_day", "trough_day"]
    got = temporal_statistics(values, TIMES, stats)
    assert got.shape == (1, 2 * len(stats)) and got.dtype == np.float32
    ndvi = dict(zip(stats, got[0, : len(stats)], strict=True))
    # sorted: 0.2 0.3 0.5 0.6 0.8; p10 at position 0.4 -> 0.2 + 0.4 * 0.1; p90 at 3.6 -> 0.6 + 0.6 * 0.2
    assert ndvi["mean"] == pytest.approx(0.48, abs=1e-6)
    assert ndvi["std"] == pytest.approx(np.sqrt(((np.array([0.2, 0.5, 0.8, 0.6, 0.3]) - 0.48) ** 2).mean()), abs=1e-6)
    assert ndvi["min"] == pytest.approx(0.2) and ndvi["max"] == pytest.approx(0.8)
    assert ndvi["p10"] == pytest.approx(0.24, abs=1e-6)
    assert ndvi["p50"] == pytest.approx(0.5, abs=1e-6)
    assert ndvi["p90"] == pytest.approx(0.72, abs=1e-6)
    assert ndvi["amplitude"] == pytest.approx(0.6, abs=1e-6)
    assert ndvi["peak_day"] == 61.0 and ndvi["trough_day"] == 0.0
    flat = dict(zip(stats, got[0, len(stats) :], strict=True))
    assert flat["amplitude"] == 0.0 and flat["std"] == 0.0
    assert flat["peak_day"] == 0.0  # ties: the first date
    assert statistic_names(["NDVI", "B04"], ["p50", "peak_day"]) == [
        "NDVI_p50",
        "NDVI_peak_day",
        "B04_p50",
        "B04_peak_day",
    ]


def test_missing_values_are_ignored_and_an_empty_series_is_nan() -> None:
    values = np.array([[np.nan, np.nan], [0.4, np.nan], [np.nan, np.nan], [0.9, np.nan], [0.1, np.nan]], np.float32)
    got = temporal_statistics(values[:, :, None], TIMES, ["p50", "max", "peak_day", "mean"])
    np.testing.assert_allclose(got[0], [0.4, 0.9, 91.0, (0.4 + 0.9 + 0.1) / 3], rtol=1e-6)
    assert np.isnan(got[1]).all()


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, (7, 6, 3), elements=st.floats(-1.0, 1.0, width=32) | st.just(float("nan"))))
def test_agrees_with_numpy_nan_functions(values: np.ndarray) -> None:
    times = np.arange(7, dtype=np.float64) * 10.0
    got = temporal_statistics(values, times, STATISTICS).reshape(6, 3, len(STATISTICS))
    empty = np.isnan(values).all(axis=0)
    assert np.isnan(got[empty]).all()
    ok = ~empty
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = {
                "mean": np.nanmean(values, axis=0),
                "std": np.nanstd(values, axis=0),
                "min": np.nanmin(values, axis=0),
                "max": np.nanmax(values, axis=0),
                "p25": np.nanpercentile(values.astype(np.float64), 25, axis=0),
                "p75": np.nanpercentile(values.astype(np.float64), 75, axis=0),
                "amplitude": np.nanmax(values, axis=0) - np.nanmin(values, axis=0),
            }
    for name, ref in expected.items():
        np.testing.assert_allclose(got[..., STATISTICS.index(name)][ok], ref[ok], rtol=1e-5, atol=1e-6)
    peak = got[..., STATISTICS.index("peak_day")][ok]
    filled = np.where(np.isnan(values), -np.inf, values)
    np.testing.assert_array_equal(peak, times[np.argmax(filled, axis=0)][ok])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown temporal statistic"):
        temporal_statistics(np.zeros((3, 2, 1), np.float32), np.arange(3.0), ["median"])
    with pytest.raises(ValueError, match="more than once"):
        temporal_statistics(np.zeros((3, 2, 1), np.float32), np.arange(3.0), ["p50", "p50"])
    with pytest.raises(ValueError, match="times shape"):
        temporal_statistics(np.zeros((3, 2, 1), np.float32), np.arange(4.0), ["p50"])
