"""Unit tests of lcms_tasks.stages.features: the chunked, digital-number path against a reference."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from lcms_tasks.bands import S2_BANDS
from lcms_tasks.features import indices, temporal
from lcms_tasks.stages import features as stage

QUANT = 10000.0
START, END = dt.date(2023, 4, 1), dt.date(2023, 9, 30)


def _reference(
    reflectance: np.ndarray, valid: np.ndarray, dates: list[dt.date], options: stage.Options
) -> tuple[np.ndarray, np.ndarray, list[dt.date], list[int]]:
    """The straightforward whole-tile algorithm (the oracle): full float reflectance in, all kept dates'
    indices at once, then one call of the temporal harmonisation."""
    keep = temporal.select_dates(valid, options.min_valid_coverage)
    idx = np.flatnonzero(keep)
    target_dates = temporal.regular_dates(START, END, options.step_days)
    origin = dt.date(START.year, 1, 1)
    times = np.array([(dates[i] - origin).days for i in idx], dtype=np.float32)
    targets = np.array([(d - origin).days for d in target_dates], dtype=np.float32)
    values = indices.compute_indices(reflectance[idx], S2_BANDS)
    if options.temporal == "interpolate":
        feats, n_valid = temporal.interpolate_linear(values, valid[idx], times, targets)
    else:
        feats, n_valid = temporal.mosaic(
            values, valid[idx], times, targets, float(options.step_days), options.mosaic_method
        )
    return feats, n_valid, target_dates, [int(i) for i in np.flatnonzero(~keep)]


def _tile(seed: int, t: int = 24, h: int = 23, w: int = 17) -> tuple[np.ndarray, np.ndarray, list[dt.date]]:
    """A synthetic (T, H, W, 13) uint16 DN tile with clouds, no-data pixels and low-coverage dates."""
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.choice(np.arange(-10, 200), size=t, replace=False))
    dates = [START + dt.timedelta(days=int(o)) for o in offsets]
    base = rng.uniform(0.02, 0.6, size=(1, h, w, len(S2_BANDS)))
    season = np.sin(np.linspace(0, np.pi, t))[:, None, None, None] * rng.uniform(-0.2, 0.4, size=(1, h, w, 13))
    dn = np.clip((base + season + rng.normal(0, 0.02, size=(t, h, w, 13))) * QUANT, 1, 20000).astype(np.uint16)
    valid = rng.random((t, h, w)) > 0.3  # clouds
    valid[3] = rng.random((h, w)) > 0.97  # dates dropped by coverage
    valid[t // 2] = False
    # No-data: DN 0 in every band, flagged invalid; one such observation wrongly flagged valid.
    no_data = rng.random((t, h, w)) < 0.05
    dn[no_data] = 0
    valid[no_data] = False
    dn[5, 2, 3] = 0
    valid[5, 2, 3] = True
    # A pixel never valid (NaN output) and a pixel valid only once.
    valid[:, 0, 0] = False
    valid[:, 1, 1] = False
    valid[7, 1, 1] = True
    return dn, valid, dates


def _assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize(
    ("method", "mosaic_method"), [("interpolate", "median"), ("mosaic", "median"), ("mosaic", "mean")]
)
@pytest.mark.parametrize("chunk_rows", [None, 1, 4, 7, 23, 100])
def test_chunked_dn_path_matches_reference(
    method: Literal["interpolate", "mosaic"], mosaic_method: Literal["median", "mean"], chunk_rows: int | None
) -> None:
    dn, valid, dates = _tile(seed=11)
    options = stage.Options(temporal=method, mosaic_method=mosaic_method, step_days=15, min_valid_coverage=0.2)
    reflectance = np.empty(dn.shape, np.float32)
    np.multiply(dn, np.float32(1.0 / QUANT), out=reflectance, casting="unsafe")
    expected, n_expected, dates_expected, dropped = _reference(reflectance, valid, dates, options)
    assert len(dropped) >= 2  # the test exercises date dropping
    assert (n_expected == 0).any() and (n_expected > 0).any()

    feats, n_valid, target_dates, quality = stage.compute_features(
        dn, valid, dates, list(S2_BANDS), START, END, options, quantification=QUANT, chunk_rows=chunk_rows
    )
    assert feats.dtype == np.float32 and feats.shape == expected.shape
    assert target_dates == dates_expected
    np.testing.assert_array_equal(n_valid, n_expected)
    _assert_close(feats, expected)
    assert quality["dates_dropped"] == len(dropped)
    assert quality["dropped_dates"] == [dates[i].isoformat() for i in dropped]
    # NaN exactly where no valid observation.
    np.testing.assert_array_equal(np.isnan(feats).any(axis=(0, 3)), n_valid == 0)

    # The float-reflectance API, with the options' chunking, is the same algorithm: bit-identical.
    chunked_options = options.model_copy(update={"chunk_rows": chunk_rows})
    feats_r, n_r, dates_r, quality_r = stage.compute_tile_features(
        reflectance, valid, dates, list(S2_BANDS), START, END, chunked_options
    )
    np.testing.assert_array_equal(feats_r, expected)
    np.testing.assert_array_equal(n_r, n_expected)
    assert dates_r == dates_expected and quality_r == quality


def test_all_dates_kept_band_order_and_valid_axis() -> None:
    dn, valid, dates = _tile(seed=5, t=10, h=9, w=12)
    valid[3] = True
    valid[5] = True
    options = stage.Options(min_valid_coverage=0.0, chunk_rows=2)
    reflectance = dn.astype(np.float32) / np.float32(QUANT)
    expected, n_expected, _, dropped = _reference(reflectance, valid, dates, options)
    assert dropped == []
    perm = np.random.default_rng(0).permutation(len(S2_BANDS))
    feats, n_valid, _, _ = stage.compute_features(
        dn[..., perm], valid[..., None], dates, [S2_BANDS[i] for i in perm], START, END, options, quantification=QUANT
    )
    np.testing.assert_array_equal(n_valid, n_expected)
    _assert_close(feats, expected)


def test_no_kept_date_and_empty_inputs() -> None:
    dn, valid, dates = _tile(seed=3, t=8, h=5, w=4)
    options = stage.Options(min_valid_coverage=1.0)
    feats, n_valid, target_dates, quality = stage.compute_features(
        dn, valid, dates, list(S2_BANDS), START, END, options, quantification=QUANT
    )
    assert feats.shape == (len(target_dates), 5, 4, 6) and np.isnan(feats).all()
    assert not n_valid.any() and quality["dates_dropped"] == 8
    empty, n_empty, _, q_empty = stage.compute_features(
        np.zeros((0, 5, 4, 13), np.uint16), np.zeros((0, 5, 4), bool), [], list(S2_BANDS), START, END, options
    )
    assert np.isnan(empty).all() and not n_empty.any() and q_empty["dates_total"] == 0
    with pytest.raises(ValueError, match="must be"):
        stage.compute_features(dn, valid[:, :3], dates, list(S2_BANDS), START, END, options)


def test_stage_run_matches_reference(config_path: Path) -> None:
    """The stage end to end (download EOPatch in, features EOPatch out) against the oracle."""
    from lcms_tasks import eopatch, runner
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import project_tiles

    cfg = load_config(config_path)
    tile = project_tiles(cfg)[0]
    ctx = RunContext.create(cfg, season="2023", run_id="t")
    runner.run_tiles("download", [tile], ctx)
    runner.run_tiles("features", [tile], ctx)
    src, src_meta = eopatch.load(
        ctx.storage, ctx.tile_uri("download", tile.id), features=["data/BANDS", "mask/IS_VALID"]
    )
    out, meta = eopatch.load(ctx.storage, ctx.tile_uri("features", tile.id))
    bands = src.data["BANDS"]
    assert bands.dtype == np.uint16 and list(src_meta["band_names"]) == list(S2_BANDS)
    reflectance = np.empty(bands.shape, np.float32)
    np.multiply(bands, np.float32(1.0 / float(src_meta["quantification"])), out=reflectance, casting="unsafe")
    valid = src.mask["IS_VALID"][..., 0]
    dates = [t.date() for t in src.timestamps or []]
    season = cfg.season("2023")
    options = cfg.stages.features
    keep = temporal.select_dates(valid, options.min_valid_coverage)
    target_dates = temporal.regular_dates(season.start, season.end, options.step_days)
    origin = dt.date(season.start.year, 1, 1)
    times = np.array([(d - origin).days for d, k in zip(dates, keep, strict=True) if k], dtype=np.float32)
    targets = np.array([(d - origin).days for d in target_dates], dtype=np.float32)
    values = indices.compute_indices(reflectance[keep], S2_BANDS)
    if options.temporal == "interpolate":
        expected, n_expected = temporal.interpolate_linear(values, valid[keep], times, targets)
    else:
        expected, n_expected = temporal.mosaic(
            values, valid[keep], times, targets, float(options.step_days), options.mosaic_method
        )
    _assert_close(out.data["FEATURES"], expected)
    np.testing.assert_array_equal(out.mask_timeless["VALID_COUNT"][..., 0], n_expected)
    np.testing.assert_array_equal(out.mask_timeless["NO_DATA"][..., 0], n_expected == 0)
    assert [t.date() for t in out.timestamps or []] == target_dates
    assert meta["quality"]["dates_dropped"] == int((~keep).sum())
