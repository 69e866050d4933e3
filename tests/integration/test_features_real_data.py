"""Spectral indices and temporal harmonisation on real Sentinel-2 patches (../shared/data, see its README)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from lcms_tasks.bands import S2_BANDS
from lcms_tasks.features.indices import FEATURE_NAMES, compute_indices
from lcms_tasks.features.temporal import days_since, interpolate_linear, regular_dates, select_dates

pytestmark = pytest.mark.realdata

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FIVE_DATES = DATA_DIR / "slovenia_2015_s2l1c_5dates"
SERIES = DATA_DIR / "slovenia_2015_ndvi_68dates"

# LULC_ID of the reference (README): 1 cultivated land, 2 forest, 8 artificial surface.
CULTIVATED, FOREST, ARTIFICIAL = 1, 2, 8


def _load(path: Path):  # -> EOPatch (eo-learn is only a test dependency of this module)
    if not DATA_DIR.is_dir():
        pytest.skip(f"real data folder {DATA_DIR} is absent (expected next to the repository as shared/data)")
    from eolearn.core import EOPatch

    return EOPatch.load(str(path))


@pytest.fixture(scope="module")
def five_dates():
    return _load(FIVE_DATES)


@pytest.fixture(scope="module")
def series():
    return _load(SERIES)


def test_indices_match_shipped_ndvi(five_dates) -> None:
    bands = five_dates.data["BANDS-S2-L1C"]
    assert bands.shape == (5, 101, 100, 13) and bands.dtype == np.float32
    features = compute_indices(bands, S2_BANDS)
    assert features.shape == (5, 101, 100, len(FEATURE_NAMES))
    ndvi = features[..., FEATURE_NAMES.index("NDVI")]
    shipped = five_dates.data["NDVI"][..., 0]
    defined = ~np.isnan(shipped)
    assert defined.all()  # no zero denominators on this patch
    np.testing.assert_array_equal(np.isnan(ndvi), ~defined)
    # The shipped NDVI is (B08 - B04) / (B08 + B04) of the same stack: agreement to float32 rounding.
    np.testing.assert_allclose(ndvi[defined], shipped[defined], rtol=0, atol=1e-3)
    assert np.abs(ndvi - shipped).max() < 1e-6

    # All normalized differences in range, tasselled cap finite, brightness positive on reflectance.
    assert np.all(np.abs(features[..., :3]) <= 1.0)
    assert np.isfinite(features).all()
    assert (features[..., FEATURE_NAMES.index("TC_BRIGHTNESS")] > 0).all()

    # On the clear dates, forest is greener than artificial surfaces.
    lulc = five_dates.mask_timeless["LULC"][..., 0]
    clear = select_dates(five_dates.mask["IS_VALID"][..., 0], 0.5)
    for name in ("NDVI", "TC_GREENNESS"):
        feature = features[clear][..., FEATURE_NAMES.index(name)]
        assert np.median(feature[:, lulc == FOREST]) > np.median(feature[:, lulc == ARTIFICIAL])


def test_cloudy_dates_dropped_and_interpolated(five_dates) -> None:
    valid = five_dates.mask["IS_VALID"][..., 0].astype(bool)
    clouds = five_dates.mask["CLM"][..., 0].astype(bool)
    keep = select_dates(valid, 0.5)
    # Two of five dates are fully cloudy (CLM everywhere) and must go.
    np.testing.assert_array_equal(keep, [True, False, False, True, True])
    assert clouds[~keep].all()
    assert not (valid & clouds).any()

    features = compute_indices(five_dates.data["BANDS-S2-L1C"], S2_BANDS)
    times = days_since(five_dates.timestamps, dt.date(2015, 1, 1))
    all_times = times.copy()
    out, n_valid = interpolate_linear(features[keep], valid[keep], times[keep], all_times, chunk_rows=17)
    assert (n_valid == 3).all()
    assert not np.isnan(out[:, n_valid > 0]).any()
    # Kept dates are reproduced exactly; the dropped ones lie between their clear neighbours (0 and 3).
    np.testing.assert_array_equal(out[keep], features[keep])
    lo = np.minimum(features[0], features[3])
    hi = np.maximum(features[0], features[3])
    for k in np.flatnonzero(~keep):
        assert np.all((out[k] >= lo - 1e-6) & (out[k] <= hi + 1e-6))


def test_ndvi_series_on_regular_grid(series) -> None:
    ndvi = series.data["NDVI"]  # (68, H, W, 1)
    valid = series.mask["IS_VALID"][..., 0].astype(bool)
    assert ndvi.shape[0] == 68 and valid.shape == ndvi.shape[:3]
    origin = dt.date(2015, 1, 1)
    times = days_since(series.timestamps, origin)
    assert np.all(np.diff(times) > 0)
    years = sorted({t.year for t in series.timestamps})
    grid = [d for y in years for d in regular_dates(dt.date(y, 1, 1), dt.date(y, 12, 31), 10)]
    targets = days_since(grid, origin)

    out, n_valid = interpolate_linear(ndvi, valid, times, targets)
    assert out.shape == (len(grid), *ndvi.shape[1:]) and out.dtype == np.float32
    np.testing.assert_array_equal(n_valid, valid.sum(axis=0))
    # NaN exactly where a pixel never had a valid observation (none on this patch).
    np.testing.assert_array_equal(np.isnan(out), np.broadcast_to((n_valid == 0)[None, ..., None], out.shape))
    defined = out[:, n_valid > 0]
    assert defined.min() >= -1.0 and defined.max() <= 1.0
    # Output range stays within the range of the valid observations (interpolation is convex).
    assert defined.min() >= ndvi[valid].min() and defined.max() <= ndvi[valid].max()

    # At the original acquisition times every valid observation is reproduced exactly.
    at_obs, _ = interpolate_linear(ndvi, valid, times, times, chunk_rows=10)
    np.testing.assert_array_equal(at_obs[valid], ndvi[valid])

    # Seasonal sanity: in 2016 (a full year of data) summer NDVI of vegetated land exceeds winter NDVI.
    lulc = series.mask_timeless["LULC"][..., 0]
    months = np.array([d.month for d in grid])
    in_2016 = np.array([d.year == 2016 for d in grid])
    summer = in_2016 & np.isin(months, [6, 7, 8])
    winter = in_2016 & np.isin(months, [1, 2, 12])
    for cls in (CULTIVATED, FOREST):
        pixels = lulc == cls
        assert pixels.any()
        summer_median = np.median(out[summer][:, pixels])
        winter_median = np.median(out[winter][:, pixels])
        assert summer_median > winter_median + 0.1, (cls, summer_median, winter_median)
