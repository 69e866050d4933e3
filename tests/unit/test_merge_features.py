"""merge_features: spatial grouping and split; the download -> ... -> merge_features chain on the fixture project."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from lcms_tasks.stages.merge_features import (
    TEST,
    TRAIN,
    VALIDATION,
    Options,
    assign_splits,
    choose_grouping,
    link_groups,
    tile_blocks,
)


def test_tile_blocks_group_neighbouring_tiles() -> None:
    ids = ["32638_10_20", "32638_11_20", "32638_11_21", "32638_12_20", "32639_10_20"]
    np.testing.assert_array_equal(tile_blocks(ids, 1), [0, 1, 2, 3, 4])
    b = tile_blocks(ids, 2)
    assert b[0] == b[1] == b[2] and b[3] != b[0] and b[4] not in (b[0], b[3])  # other CRS, other block


def test_link_groups_joins_blocks_sharing_a_polygon() -> None:
    blocks = np.array([0, 0, 1, 1, 2, 2, 3])
    polygons = np.array([5, 6, 6, 7, 8, 8, 0])  # polygon 6 crosses blocks 0 and 1
    groups = link_groups(blocks, polygons)
    assert groups[0] == groups[1] == groups[2] == groups[3]
    assert groups[4] == groups[5] != groups[0] and groups[6] not in (groups[0], groups[4])


def test_auto_grouping_uses_blocks_only_when_there_are_enough() -> None:
    tiles = np.array([f"32638_{i}_0" for i in range(30) for _ in range(4)])
    polygons = np.arange(1, tiles.size + 1)
    _, mode = choose_grouping(tiles, polygons, Options(min_blocks=20))
    assert mode == "tile_block"
    groups, mode = choose_grouping(tiles, polygons, Options(min_blocks=31))
    assert mode == "polygon" and np.unique(groups).size == tiles.size


def test_split_fractions_are_near_the_target_with_many_groups() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(600), 20)
    y = np.repeat(rng.integers(1, 5, 600), 20)
    split = assign_splits(groups, y, (0.7, 0.15, 0.15), np.random.default_rng(1))
    shares = np.bincount(split, minlength=3) / split.size
    np.testing.assert_allclose(shares, [0.7, 0.15, 0.15], atol=0.03)
    for c in range(1, 5):  # per class too
        np.testing.assert_allclose(
            np.bincount(split[y == c], minlength=3) / (y == c).sum(), [0.7, 0.15, 0.15], atol=0.05
        )


def test_classes_with_few_groups() -> None:
    # class 1: one group -> train only; class 2: two groups -> train + test; class 3: three -> all splits.
    groups = np.array([1, 1, 2, 3, 4, 5, 6] + [10 + i for i in range(40)])
    y = np.array([1, 1, 2, 2, 3, 3, 3] + [4] * 40)
    split = assign_splits(groups, y, (0.7, 0.15, 0.15), np.random.default_rng(5))
    assert set(split[y == 1]) == {TRAIN}
    assert set(split[y == 2]) == {TRAIN, TEST}
    assert set(split[y == 3]) == {TRAIN, VALIDATION, TEST}


def test_split_fraction_options_are_validated() -> None:
    with pytest.raises(ValidationError, match="sum to 1"):
        Options(split_fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValidationError):
        Options(split_fractions=(0.0, 0.5, 0.5))


@settings(max_examples=80, deadline=None)
@given(
    samples=st.lists(st.tuples(st.integers(1, 25), st.integers(0, 5), st.integers(1, 6)), min_size=1, max_size=200),
    group_by=st.sampled_from(["tile_block", "polygon"]),
    block_tiles=st.integers(1, 3),
    seed=st.integers(0, 1000),
)
def test_no_polygon_on_two_sides_and_every_class_in_train(
    samples: list[tuple[int, int, int]], group_by: str, block_tiles: int, seed: int
) -> None:
    # A polygon may span tiles (a file source's polygon crossing a tile edge); its class is fixed.
    polygon = np.array([p for p, _, _ in samples], np.int64)
    tiles = np.array([f"32633_{t}_{t % 2}" for _, t, _ in samples])
    y = (polygon % 6 + 1).astype(np.uint8)
    groups, _ = choose_grouping(tiles, polygon, Options(group_by=group_by, block_tiles=block_tiles))
    split = assign_splits(groups, y, (0.7, 0.15, 0.15), np.random.default_rng(seed))
    assert ((split >= 0) & (split <= 2)).all()
    for p in np.unique(polygon):
        assert np.unique(split[polygon == p]).size == 1
    if group_by == "tile_block":
        blocks = tile_blocks(list(tiles), block_tiles)
        for b in np.unique(blocks):
            assert np.unique(split[blocks == b]).size == 1
    assert set(np.unique(y[split == TRAIN])) == set(np.unique(y))


# -- the chain on the 2 x 2-tile fixture project ----------------------------------------------------


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """download -> features -> add_reference -> sampling -> merge_features on the fixture project, once."""
    from lcms_tasks import runner
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import project_tiles
    from tests.conftest import base_config, write_aoi

    folder = tmp_path_factory.mktemp("chain")
    write_aoi(folder / "aoi.geojson")
    data = base_config("aoi.geojson", "data")
    data["stages"] = {"sampling": {"max_per_class": 150}}
    (folder / "project.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_config(folder / "project.yaml")
    tiles = project_tiles(cfg)
    ctx = RunContext.create(cfg, season="2023", run_id="chain")
    for stage in ("download", "features", "add_reference", "sampling"):
        runner.run_tiles(stage, tiles, ctx)
    uris = runner.run_stage("merge_features", ctx)
    return {"ctx": ctx, "tiles": tiles, "uris": uris, "folder": folder}


def test_samples_lie_on_samplable_reference_pixels(chain: dict[str, Any]) -> None:
    from lcms_tasks import eopatch
    from lcms_tasks.ml.matrix import sample_matrix

    ctx, tiles = chain["ctx"], chain["tiles"]
    with_samples = 0
    for tile in tiles:
        ref, ref_meta = eopatch.load(ctx.storage, ctx.tile_uri("add_reference", tile.id))
        labels = ref.mask_timeless["REFERENCE"][..., 0]
        samplable = ref.mask_timeless["REFERENCE_SAMPLABLE"][..., 0]
        meta = ctx.storage.read_marker(ctx.tile_uri("sampling", tile.id))
        with ctx.storage.reading_dir(ctx.tile_uri("sampling", tile.id)) as folder, np.load(folder / "samples.npz") as s:
            X, y, row, col, pid = s["X"], s["y"], s["row"], s["col"], s["polygon_id"]
        assert X.dtype == np.float32 and y.dtype == np.uint8 and row.dtype == np.int32 and pid.dtype == np.int64
        assert meta["n_samples"] == y.size and len(meta["feature_names"]) == X.shape[1]
        if labels.any():
            with_samples += 1
            assert samplable[row, col].all() and (labels[row, col] == y).all()
            counts = {str(c): min(150, int(((labels == c) & samplable).sum())) for c in np.unique(labels[samplable])}
            assert meta["per_class"] == counts
            assert (pid != 0).all() and set(pid.tolist()) <= set(ref_meta["polygon_keys"])
            feats, _ = eopatch.load(ctx.storage, ctx.tile_uri("features", tile.id), features=["data/FEATURES"])
            np.testing.assert_array_equal(X, sample_matrix(feats.data["FEATURES"], row, col))
            assert not np.isnan(X).any()
        else:  # a tile the synthetic truth left without reference
            assert y.size == 0 and meta["skipped_reason"] == "no reference pixels"
    assert 1 <= with_samples < len(tiles)  # tile_fraction 0.6 of 4 tiles


def test_dataset_is_split_by_polygon(chain: dict[str, Any]) -> None:
    ctx = chain["ctx"]
    (uri,) = chain["uris"]
    meta = ctx.storage.read_marker(uri)
    with ctx.storage.reading_dir(uri) as folder, np.load(folder / "dataset.npz") as d:
        data = {k: d[k] for k in d.files}
    assert set(data) == {"X", "y", "tile", "row", "col", "polygon_id", "split"}
    n = data["y"].size
    assert n == meta["n_samples"] > 0 and data["X"].shape == (n, len(meta["feature_names"]))
    assert meta["grouping"] == "polygon"  # 2 tiles with samples: too few blocks
    for p in np.unique(data["polygon_id"]):
        assert np.unique(data["split"][data["polygon_id"] == p]).size == 1
    assert set(np.unique(data["split"]).tolist()) == {0, 1, 2}
    for s, name in enumerate(("train", "validation", "test")):
        ids, counts = np.unique(data["y"][data["split"] == s], return_counts=True)
        assert meta["class_counts"][name] == {str(i): int(c) for i, c in zip(ids, counts, strict=True)}
    assert set(meta["class_counts"]["train"]) == {str(c) for c in np.unique(data["y"])}
    assert sorted(meta["tiles_used"] + list(meta["tiles_skipped"])) == sorted(t.id for t in chain["tiles"])
    assert set(np.unique(data["tile"]).tolist()) == set(meta["tiles_used"])
    assert all(reason == "no reference pixels" for reason in meta["tiles_skipped"].values())


def test_missing_sampling_output_is_an_error_unless_allowed(chain: dict[str, Any]) -> None:
    from lcms_tasks import runner
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.errors import StageError

    folder: Path = chain["folder"]
    ctx = RunContext.create(load_config(folder / "project.yaml"), season="2024", run_id="empty")
    with pytest.raises(StageError, match="no complete sampling output for 4 tile"):
        runner.run_stage("merge_features", ctx)


def test_landscape_scale_polygons_do_not_merge_all_blocks() -> None:
    """A field spanning two blocks links them; a forest spanning every block is cut at block edges instead."""
    from lcms_tasks.stages.merge_features import link_groups

    blocks = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    forest = 99
    polygons = np.array([forest, 7, forest, 7, forest, 5, forest, 6])  # field 7 spans blocks 0 and 1
    unlimited = link_groups(blocks, polygons)
    assert np.unique(unlimited).size == 1  # the forest merges everything
    limited = link_groups(blocks, polygons, max_span=2)
    assert limited[0] == limited[2]  # blocks 0 and 1 stay together (field 7)
    assert np.unique(limited).size == 3  # blocks 2 and 3 on their own
