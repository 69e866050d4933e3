"""Raster parcel markers' pieces (lcms_tasks.parcels.raster): rasterise, pool across tiles, split, table."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from shapely.geometry import box

from lcms_tasks.parcels import raster


def _cube(rng: np.random.Generator, h: int, w: int, k: int = 3, f: int = 2) -> np.ndarray:
    cube = rng.normal(size=(k, h, w, f)).astype(np.float32)
    cube[0, 1, 2, 0] = np.nan  # a missing value inside the parcel, one date and feature only
    return cube


def test_rasterise_burns_each_parcels_index_on_pixel_centres() -> None:
    transform = Affine(10.0, 0.0, 0.0, 0.0, -10.0, 80.0)  # 8 x 8 px of 10 m
    geoms = [box(0, 40, 40, 80), box(50, 0, 80, 30), None]
    image = raster.rasterise(geoms, np.array([1, 2, 3]), transform, (8, 8))
    assert image.dtype == np.int32
    assert (image[0:4, 0:4] == 1).all() and (image == 1).sum() == 16
    assert (image[5:8, 5:8] == 2).all() and (image == 2).sum() == 9
    assert not (image == 3).any()


@pytest.mark.parametrize("inner_px", [0, 1])
def test_a_parcel_cut_by_a_tile_border_is_pooled_exactly(inner_px: int) -> None:
    rng = np.random.default_rng(3)
    ids = np.zeros((6, 8), dtype=np.int32)
    ids[0:6, 1:7] = 1  # parcel 1 spans the border between the two 4-px-wide tiles
    ids[2:4, 0] = 2
    cube = _cube(rng, 6, 8)
    clean = np.ones((6, 8), dtype=bool)
    clean[5, 5] = False
    left_t = Affine(10.0, 0.0, 0.0, 0.0, -10.0, 60.0)
    right_t = Affine(10.0, 0.0, 40.0, 0.0, -10.0, 60.0)
    whole = raster.tile_pieces(cube, ids, clean, inner_px, left_t)
    left = raster.tile_pieces(cube[:, :, :4], ids[:, :4], clean[:, :4], inner_px, left_t)
    right = raster.tile_pieces(cube[:, :, 4:], ids[:, 4:], clean[:, 4:], inner_px, right_t)
    pooled = raster.combine([("a", left), ("a", right)], 2, 3, 2)
    alone = raster.combine([("a", whole)], 2, 3, 2)
    np.testing.assert_allclose(pooled.mean, alone.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled.std, alone.std, rtol=1e-5, atol=1e-6)
    assert (pooled.count == alone.count).all()
    # by hand: the pixels the buffered parcel keeps, clean ones only, NaN-safe
    from lcms_tasks.parcels.markers import inner_buffer

    # the whole image's buffer: the border between the tiles is not a parcel border
    keep = (inner_buffer(ids, inner_px) == 1) & clean
    values = cube[:, keep, :]
    np.testing.assert_allclose(pooled.mean[0], np.nanmean(values, axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled.std[0], np.nanstd(values, axis=1), rtol=1e-5, atol=1e-6)
    assert pooled.count[0] == keep.sum()
    # the centre lies in the tile holding most of the parcel (3 of 6 columns on each side: the first wins)
    assert pooled.home[0] == "a" and np.isfinite(pooled.centre[0]).all()


def test_the_home_tile_is_the_one_holding_most_of_the_parcel() -> None:
    cube = np.ones((1, 4, 4, 1), dtype=np.float32)
    small = np.zeros((4, 4), dtype=np.int32)
    small[0, 0] = 1
    large = np.ones((4, 4), dtype=np.int32)
    t = Affine(10.0, 0.0, 0.0, 0.0, -10.0, 40.0)
    pieces = [("A", raster.tile_pieces(cube, small, None, 0, t)), ("B", raster.tile_pieces(cube, large, None, 0, t))]
    combined = raster.combine(pieces, 1, 1, 1)
    assert combined.home == ["B"] and combined.count[0] == 17
    np.testing.assert_allclose(combined.centre[0], [20.0, 20.0])


def test_a_parcel_on_no_tile_has_no_figures_and_no_group() -> None:
    combined = raster.combine([], 2, 2, 1)
    assert (combined.count == 0).all() and np.isnan(combined.mean).all() and combined.home == [None, None]
    assert list(raster.group_cells(combined.centre, combined.home, 100.0)) == ["", ""]


def test_the_split_is_spatially_grouped_and_seeded() -> None:
    rng = np.random.default_rng(0)
    groups = np.array([f"g{i}" for i in rng.integers(0, 12, size=300)], dtype=object)
    usable = rng.random(300) > 0.1
    train = raster.grouped_split(groups, usable, 0.5, seed=4)
    for g in set(groups):
        sides = set(train[groups == g])
        assert len(sides) == 1, g  # no group on both sides
    share = train[usable].mean()
    assert 0.3 < share < 0.8 and train[usable].any() and (~train[usable]).any()
    assert (raster.grouped_split(groups, usable, 0.5, seed=4) == train).all()
    assert not (raster.grouped_split(groups, usable, 0.5, seed=5) == train).all()
    # two groups: one each side even with a large training share
    two = np.array(["a", "a", "b"], dtype=object)
    assert raster.grouped_split(two, np.ones(3, bool), 0.99, seed=0).sum() in (1, 2)


def _features(n: int, rng: np.random.Generator, classes: np.ndarray, counts: np.ndarray) -> raster.Features:
    k, f = 3, 2
    mean = (classes[:, None, None] * 1.0 + rng.normal(scale=0.1, size=(n, k, f))).astype(np.float32)
    std = np.full((n, k, f), 0.1, dtype=np.float32)
    centre = np.stack([np.arange(n) * 100.0 + 50.0, np.full(n, 50.0)], axis=1)
    combined = raster.Combined(mean=mean, std=std, count=counts, centre=centre, home=["k"] * n)
    return raster.Features(combined=combined, feature_names=["A", "B"], dates=["2023-01-01"] * k, tiles=1)


def test_markers_table_too_small_parcels_get_no_guess_and_flags_are_sorted() -> None:
    rng = np.random.default_rng(1)
    n = 90
    classes = np.arange(n) % 3
    names = np.array(["wheat", "maize", "beet"], dtype=object)
    declared = names[classes].copy()
    declared[[10, 40, 70, 85]] = ["maize", "beet", "wheat", "wheat"]  # misdeclared
    counts = np.full(n, 20, dtype=np.int64)
    counts[[5, 6]] = [3, 0]
    decl = gpd.GeoDataFrame(
        {"parcel_id": [f"p{i}" for i in range(n)], "declared": list(declared)},
        geometry=[box(i, 0, i + 1, 1) for i in range(n)],
        crs=32633,
    )
    options = raster.Options(block_m=500.0, min_pixels=4, min_class_count=3, threads=1)
    table, summary = raster.markers_table(decl, _features(n, rng, classes, counts), options)
    assert list(table["parcel_id"]) == list(decl["parcel_id"])
    assert list(table.loc[[5, 6], "status"]) == ["too_small", "too_small"]
    assert table.loc[[5, 6], "predicted"].isna().all() and table.loc[[5, 6], "probability"].isna().all()
    assert not table.loc[[5, 6], "disagreement"].any()
    assert (table.drop(index=[5, 6])["status"] == "ok").all() and table.drop(index=[5, 6])["predicted"].notna().all()
    assert summary["status_counts"] == {"ok": 88, "too_small": 2}
    # groups of 5 parcels (500 m cells, parcels 100 m apart), never on both sides; too small: in neither
    assert list(table.loc[[5, 6], "split"]) == ["none", "none"]
    ok = table[table["status"] == "ok"]
    assert ok.groupby("group")["split"].nunique().max() == 1 and set(ok["split"]) == {"train", "test"}
    order = summary["disagreement_order"]
    assert sorted(order) == sorted(np.flatnonzero(table["disagreement"].to_numpy()).tolist())
    probs = table["probability"].to_numpy()[order]
    assert (np.diff(probs) <= 0).all()
    # the misdeclared held-out parcels are flagged; held-out agreement is out of sample only
    held = [i for i in (10, 40, 70, 85) if table.loc[i, "split"] == "test"]
    assert held and all(table.loc[i, "disagreement"] for i in held)
    assert summary["held_out"]["n"] == int((table["split"] == "test").sum())
    assert summary["held_out"]["agreement"] > 0.85 > summary["held_out"]["majority_class_rate"]


def test_too_few_training_classes_is_a_value_error() -> None:
    rng = np.random.default_rng(1)
    n = 20
    classes = np.zeros(n, dtype=np.int64)
    decl = gpd.GeoDataFrame(
        {"parcel_id": [str(i) for i in range(n)], "declared": ["wheat"] * n},
        geometry=[box(i, 0, i + 1, 1) for i in range(n)],
        crs=32633,
    )
    with pytest.raises(ValueError, match="1 crop"):
        raster.markers_table(decl, _features(n, rng, classes, np.full(n, 9)), raster.Options(min_class_count=2))
