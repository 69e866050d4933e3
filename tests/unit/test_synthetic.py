"""Unit tests of the deterministic synthetic Sentinel-2 generator (lcms_tasks.sources.synthetic)."""

from __future__ import annotations

import datetime
import hashlib
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from lcms_tasks.bands import S2_BANDS, band_index
from lcms_tasks.sources.synthetic import (
    CROP_KINDS,
    KINDS,
    Acquisitions,
    Scene,
    SyntheticParams,
    generate_changes,
    generate_scene,
    scene_for_season,
    scene_from_labels,
    simulate_acquisitions,
)

PARAMS = SyntheticParams()
SEASON = (datetime.date(2023, 3, 1), datetime.date(2023, 10, 31))
YEAR = (datetime.date(2023, 1, 1), datetime.date(2023, 12, 31))


def kind_code(kind: str) -> int:
    return KINDS.index(kind) + 1


def crop_code(crop: str) -> int:
    return CROP_KINDS.index(crop) + 1


def ndvi(acq: Acquisitions) -> np.ndarray:
    """(T, H, W) NDVI, NaN where there is no data or a cloud / shadow is flagged."""
    nir = acq.bands[..., band_index("B08")].astype(np.float32)
    red = acq.bands[..., band_index("B04")].astype(np.float32)
    value = (nir - red) / np.maximum(nir + red, 1.0)
    return np.where(acq.data_mask & ~acq.cloud_mask, value, np.nan)


@pytest.fixture(scope="module")
def scene() -> Scene:
    return generate_scene((96, 96), PARAMS, "tile-A")


@pytest.fixture(scope="module")
def year_acq(scene: Scene) -> Acquisitions:
    """A whole year: long enough for fully cloudy dates and swath edges to occur."""
    return simulate_acquisitions(scene, *YEAR, PARAMS, "tile-A/2023")


@pytest.fixture(scope="module")
def crop_stripes() -> tuple[Scene, Acquisitions]:
    """Alternating winter cereal / maize strips plus a water block, from reference labels."""
    lc = np.full((64, 64), kind_code("cropland"), dtype=np.uint8)
    crop = np.zeros((64, 64), dtype=np.uint8)
    for i, x0 in enumerate(range(0, 48, 8)):
        crop[:, x0 : x0 + 8] = crop_code("winter_cereal") if i % 2 == 0 else crop_code("maize")
    lc[:, 48:] = kind_code("water")
    sc = scene_from_labels(lc, crop, PARAMS, "stripes")
    return sc, simulate_acquisitions(sc, *SEASON, PARAMS, "stripes/2023")


# ---------------------------------------------------------------------------------------------- determinism


def test_scene_is_deterministic_and_keyed() -> None:
    a = generate_scene((64, 80), PARAMS, "tile-1")
    b = generate_scene((64, 80), PARAMS, "tile-1")
    for name in ("land_cover", "crop", "parcel_id"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = generate_scene((64, 80), PARAMS, "tile-2")
    d = generate_scene((64, 80), SyntheticParams(seed=7), "tile-1")
    assert not np.array_equal(a.land_cover, c.land_cover)
    assert not np.array_equal(a.land_cover, d.land_cover)


def test_acquisitions_are_deterministic_and_keyed() -> None:
    sc = generate_scene((40, 40), PARAMS, "small")
    start, end = datetime.date(2023, 5, 1), datetime.date(2023, 7, 31)
    a = simulate_acquisitions(sc, start, end, PARAMS, "small/2023")
    b = simulate_acquisitions(sc, start, end, PARAMS, "small/2023")
    assert a.dates == b.dates
    for name in ("bands", "data_mask", "cloud_mask", "cloud_probability"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = simulate_acquisitions(sc, start, end, PARAMS, "small/2024")
    assert a.dates != c.dates or not np.array_equal(a.bands, c.bands)


def test_output_does_not_depend_on_python_hash_seed() -> None:
    """Seeds must come from a stable hash: a fresh interpreter with another PYTHONHASHSEED agrees."""
    code = (
        "import datetime, hashlib\n"
        "from lcms_tasks.sources.synthetic import SyntheticParams, generate_scene, simulate_acquisitions\n"
        "s = generate_scene((24, 24), SyntheticParams(), 'hash-check')\n"
        "a = simulate_acquisitions(s, datetime.date(2023, 6, 1), datetime.date(2023, 6, 30),"
        " SyntheticParams(), 'hash-check')\n"
        "print(hashlib.sha256(s.land_cover.tobytes() + a.bands.tobytes()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    s = generate_scene((24, 24), SyntheticParams(), "hash-check")
    june = (datetime.date(2023, 6, 1), datetime.date(2023, 6, 30))
    a = simulate_acquisitions(s, *june, SyntheticParams(), "hash-check")
    assert out.stdout.strip() == hashlib.sha256(s.land_cover.tobytes() + a.bands.tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------- scenes


def test_scene_shapes_and_consistency(scene: Scene) -> None:
    assert scene.land_cover.shape == scene.crop.shape == scene.parcel_id.shape == (96, 96)
    assert scene.land_cover.dtype == np.uint8 and scene.crop.dtype == np.uint8
    assert scene.parcel_id.dtype == np.int32
    assert scene.land_cover.min() >= 1 and scene.land_cover.max() <= len(KINDS)
    assert scene.parcel_id.min() > 0
    cropland = scene.land_cover == kind_code("cropland")
    assert (scene.crop[cropland] > 0).all() and (scene.crop[~cropland] == 0).all()
    assert scene.crop.max() <= len(CROP_KINDS)
    # each parcel is a single kind and a single crop
    for raster in (scene.land_cover, scene.crop):
        lo = np.full(scene.parcel_id.max() + 1, 255)
        hi = np.zeros(scene.parcel_id.max() + 1, dtype=int)
        np.minimum.at(lo, scene.parcel_id, raster)
        np.maximum.at(hi, scene.parcel_id, raster)
        assert (lo[np.unique(scene.parcel_id)] == hi[np.unique(scene.parcel_id)]).all()


def test_scenes_have_several_classes_in_realistic_proportions() -> None:
    shares = []
    for i in range(6):
        sc = generate_scene((96, 96), PARAMS, f"prop-{i}")
        counts = np.bincount(sc.land_cover.ravel(), minlength=len(KINDS) + 1)[1:]
        assert (counts > 0).sum() >= 4, "every tile should contain several classes"
        shares.append(counts / counts.sum())
    mean = np.mean(shares, axis=0)
    assert 0.25 <= mean[KINDS.index("cropland")] <= 0.55
    assert 0.08 <= mean[KINDS.index("forest")] <= 0.35
    assert 0.05 <= mean[KINDS.index("grassland")] <= 0.30
    assert 0.01 <= mean[KINDS.index("water")] <= 0.12
    # fields are rectangles 5-40 px wide: many parcels, but not pixel noise
    sc = generate_scene((128, 128), PARAMS, "fields")
    n_parcels = sc.parcel_id.max()
    assert 15 <= n_parcels <= 400


def test_scene_from_labels_follows_reference() -> None:
    lc = np.zeros((48, 48), dtype=np.uint8)
    lc[:20, :20] = kind_code("forest")
    lc[30:, 30:] = kind_code("cropland")
    crop = np.zeros_like(lc)
    crop[30:, 30:40] = crop_code("maize")
    crop[5:10, 30:40] = crop_code("sunflower")  # crop on an unlabelled pixel: becomes cropland
    sc = scene_from_labels(lc, crop, PARAMS, "ref")
    assert (sc.land_cover[:20, :20] == kind_code("forest")).all()
    assert (sc.land_cover[30:, 30:] == kind_code("cropland")).all()
    assert (sc.crop[30:, 30:40] == crop_code("maize")).all()
    assert (sc.crop[30:, 40:] > 0).all()  # cropland without a crop type gets one
    assert (sc.land_cover[5:10, 30:40] == kind_code("cropland")).all()
    assert (sc.land_cover > 0).all() and (sc.parcel_id > 0).all()
    # parcels follow the labels: the two crops of the cropland polygon are two parcels
    assert sc.parcel_id[35, 35] != sc.parcel_id[35, 45]
    assert np.unique(sc.parcel_id[:20, :20]).size == 1
    with pytest.raises(ValueError):
        scene_from_labels(np.full((16, 16), 99, dtype=np.uint8), None, PARAMS, "bad")


# ---------------------------------------------------------------------------------------------- acquisitions


def test_acquisition_shapes_dtypes_and_dates(year_acq: Acquisitions) -> None:
    t = len(year_acq.dates)
    assert year_acq.bands.shape == (t, 96, 96, len(S2_BANDS)) and year_acq.bands.dtype == np.uint16
    assert year_acq.data_mask.shape == year_acq.cloud_mask.shape == (t, 96, 96)
    assert year_acq.data_mask.dtype == bool and year_acq.cloud_mask.dtype == bool
    assert year_acq.cloud_probability.shape == (t, 96, 96) and year_acq.cloud_probability.dtype == np.uint8
    assert year_acq.cloud_probability.max() <= 100
    assert all(a < b for a, b in zip(year_acq.dates, year_acq.dates[1:], strict=False))
    assert YEAR[0] <= year_acq.dates[0] and year_acq.dates[-1] <= YEAR[1]
    nominal = (YEAR[1] - YEAR[0]).days // PARAMS.revisit_days + 1
    assert t == nominal - round(PARAMS.missing_date_fraction * nominal)
    # very short season: at least 3 dates survive
    short = simulate_acquisitions(
        generate_scene((16, 16), PARAMS, "s"),
        datetime.date(2023, 6, 1),
        datetime.date(2023, 6, 11),
        SyntheticParams(missing_date_fraction=0.9),
        "s",
    )
    assert len(short.dates) == 3


def test_digital_numbers_and_no_data(year_acq: Acquisitions) -> None:
    bands, data = year_acq.bands, year_acq.data_mask
    assert (bands[data] > 0).all(), "0 is reserved for no data"
    assert (bands[~data] == 0).all()
    assert bands.max() <= 12000
    # swath edges: some dates lose a part (not all) of the tile, with DN 0 in every band there
    partial = [t for t in range(len(year_acq.dates)) if 0 < (~data[t]).sum() < data[t].size]
    assert partial
    for t in partial:
        assert not year_acq.cloud_mask[t][~data[t]].any()
    # clear-sky surface reflectance is plausible
    clear = data & ~year_acq.cloud_mask
    assert 0.0 < np.median(bands[clear][:, band_index("B04")]) / 1e4 < 0.3
    assert np.median(bands[clear][:, band_index("B10")]) < 300  # cirrus band: dark unless clouds


def test_cloud_cover_and_fully_cloudy_dates(year_acq: Acquisitions) -> None:
    data = year_acq.data_mask
    cloud = year_acq.cloud_probability >= 50
    per_date = np.array([cloud[t][data[t]].mean() for t in range(len(year_acq.dates))])
    assert abs(per_date.mean() - PARAMS.cloud_cover) < 0.1
    assert (per_date > 0.999).sum() >= 1, "a long season has fully cloudy dates"
    assert (per_date < 0.05).sum() >= 3, "and some (nearly) clear ones"
    # flagged clouds cover the cloudy pixels and are much brighter than the clear surface
    assert (year_acq.cloud_mask | ~cloud).all()
    blue = year_acq.bands[..., band_index("B02")]
    clear = data & ~year_acq.cloud_mask
    assert np.median(blue[cloud & data]) > 2.5 * np.median(blue[clear])
    # shadows: flagged, not cloud, darker than the clear surface
    shadow = year_acq.cloud_mask & ~cloud & data
    assert shadow.any()
    nir = year_acq.bands[..., band_index("B08")]
    assert np.median(nir[shadow]) < np.median(nir[clear])


def test_no_clouds_when_disabled() -> None:
    params = SyntheticParams(cloud_cover=0.0, fully_cloudy_fraction=0.0, nodata_edge_fraction=0.0)
    acq = simulate_acquisitions(generate_scene((32, 32), params, "clear"), *SEASON, params, "clear/2023")
    assert not acq.cloud_mask.any() and acq.data_mask.all()
    assert acq.cloud_probability.max() < 50


# ---------------------------------------------------------------------------------------------- changes


def test_changes_between_seasons(scene: Scene) -> None:
    before, none = scene_for_season((96, 96), PARAMS, "tile-A", 0)
    assert none == []
    np.testing.assert_array_equal(before.land_cover, scene.land_cover)
    after, changes = scene_for_season((96, 96), PARAMS, "tile-A", 1)
    assert changes
    union = np.zeros(before.land_cover.shape, dtype=bool)
    for ch in changes:
        assert ch.from_kind in KINDS and ch.to_kind in KINDS and ch.from_kind != ch.to_kind
        assert ch.geometry_pixels.dtype == bool and ch.geometry_pixels.sum() >= 100
        assert not (union & ch.geometry_pixels).any(), "changes do not overlap"
        assert (before.land_cover[ch.geometry_pixels] == kind_code(ch.from_kind)).all()
        assert (after.land_cover[ch.geometry_pixels] == kind_code(ch.to_kind)).all()
        union |= ch.geometry_pixels
    assert len({ch.change_id for ch in changes}) == len(changes)
    assert 0.02 <= union.mean() <= 0.12
    for name in ("land_cover", "crop", "parcel_id"):
        np.testing.assert_array_equal(getattr(after, name)[~union], getattr(before, name)[~union])
    assert (after.crop[after.land_cover != kind_code("cropland")] == 0).all()
    # the input scene is left untouched and season 2 builds on season 1
    np.testing.assert_array_equal(scene.land_cover, before.land_cover)
    season2, changes2 = scene_for_season((96, 96), PARAMS, "tile-A", 2)
    again, _ = generate_changes(after, PARAMS, "tile-A/season-2")
    np.testing.assert_array_equal(season2.land_cover, again.land_cover)
    assert changes2


def test_change_fraction_zero_gives_no_change(scene: Scene) -> None:
    after, changes = generate_changes(scene, SyntheticParams(change_fraction=0.0), "k")
    assert changes == []
    np.testing.assert_array_equal(after.land_cover, scene.land_cover)


# ---------------------------------------------------------------------------------------------- spectra


def test_winter_cereal_peaks_before_maize_and_water_is_dark(crop_stripes: tuple[Scene, Acquisitions]) -> None:
    sc, acq = crop_stripes
    values = ndvi(acq)

    def peak_date(mask: np.ndarray) -> datetime.date:
        series = np.array([np.nanmean(v[mask]) if np.isfinite(v[mask]).sum() > 20 else np.nan for v in values])
        return acq.dates[int(np.nanargmax(series))]

    cereal = peak_date(sc.crop == crop_code("winter_cereal"))
    maize = peak_date(sc.crop == crop_code("maize"))
    assert cereal.month in (4, 5, 6) and maize.month in (7, 8, 9)
    assert (maize - cereal).days > 45
    water = sc.land_cover == kind_code("water")
    assert np.nanmedian(values[:, water]) < 0.0


def _monthly_ndvi(acq: Acquisitions) -> np.ndarray:
    """(H*W, months) median NDVI of cloud-free observations per month; gaps get the pixel's median."""
    values = ndvi(acq)
    months = np.array([d.month for d in acq.dates])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-cloudy months give all-NaN slices
        per_month = np.stack([np.nanmedian(values[months == m], axis=0) for m in np.unique(months)], axis=-1)
    flat = per_month.reshape(-1, per_month.shape[-1])
    fill = np.nan_to_num(np.nanmedian(flat, axis=1, keepdims=True))
    return np.where(np.isnan(flat), fill, flat)


def test_kinds_are_separable_by_ndvi_phenology() -> None:
    """Sanity check, not a target: nearest centroid on monthly NDVI medians, trained on another tile."""
    train_scene = generate_scene((96, 96), PARAMS, "sep-train")
    test_scene = generate_scene((96, 96), PARAMS, "sep-test")
    x_train = _monthly_ndvi(simulate_acquisitions(train_scene, *SEASON, PARAMS, "sep-train/2023"))
    x_test = _monthly_ndvi(simulate_acquisitions(test_scene, *SEASON, PARAMS, "sep-test/2023"))
    # one centroid per (kind, crop): cropland is a mixture of very different crop calendars
    cls_train = train_scene.land_cover.ravel().astype(int) * 10 + train_scene.crop.ravel()
    classes = np.unique(cls_train)
    centroids = np.stack([x_train[cls_train == c].mean(axis=0) for c in classes])
    distance = ((x_test[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
    predicted_kind = classes[np.argmin(distance, axis=1)] // 10
    accuracy = (predicted_kind == test_scene.land_cover.ravel()).mean()
    assert accuracy > 0.6
