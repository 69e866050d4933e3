"""The download stage streams a source's dates into the tile EOPatch: stored arrays equal the source's.

Also the pieces it is built from: the ``.npy`` appender, the EOPatch writer's streamed features and
the streamed acquisitions' own checks.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lcms_tasks import eopatch
from lcms_tasks.eopatch import NpyAppender, StoredArray
from lcms_tasks.grid import Tile
from lcms_tasks.sources import DateSlab, StreamedAcquisitions
from lcms_tasks.sources import synthetic as gen
from lcms_tasks.stages import download
from lcms_tasks.storage import Storage

# ----------------------------------------------------------------------------------------- appender


@settings(max_examples=40, deadline=None)
@given(
    count=st.integers(0, 6),
    item_shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    dtype=st.sampled_from(["uint16", "uint8", "bool", "float32", "int64"]),
)
def test_appender_writes_a_standard_npy(
    tmp_path_factory: pytest.TempPathFactory, count: int, item_shape: list[int], dtype: str
) -> None:
    path = tmp_path_factory.mktemp("npy") / "a.npy"
    rng = np.random.default_rng(count)
    expected = (rng.random((count, *item_shape)) * 1000).astype(dtype)
    appender = NpyAppender(path, item_shape, dtype)
    for item in expected:
        appender.append(item)
    appender.close()
    loaded = np.load(path)
    assert loaded.dtype == np.dtype(dtype) and loaded.shape == expected.shape
    np.testing.assert_array_equal(loaded, expected)
    if len(item_shape) == 3:  # the features stage's row-block reader reads it too
        np.testing.assert_array_equal(StoredArray(path)[:, 0:1], expected[:, 0:1])


def test_appender_rejects_an_item_of_another_shape(tmp_path: Path) -> None:
    appender = NpyAppender(tmp_path / "BANDS.npy", (4, 4, 13), np.uint16)
    appender.append(np.zeros((4, 4, 13), np.uint16))
    with pytest.raises(ValueError, match=r"BANDS\.npy: item 1 has shape \(4, 4, 12\), expected \(4, 4, 13\)"):
        appender.append(np.zeros((4, 4, 12), np.uint16))
    with pytest.raises(ValueError, match=r"item 1 is float32, which does not fit uint16"):
        appender.append(np.full((4, 4, 13), -1.5, np.float32))  # would wrap around silently
    appender.close()
    assert np.load(tmp_path / "BANDS.npy").shape == (1, 4, 4, 13)  # what was appended before stays valid


# ------------------------------------------------------------------------------------- patch writer

TILE = Tile(32633, 5000, 500, 8, 10.0)


@pytest.mark.parametrize("compress", [False, True])
def test_a_file_backed_array_is_published_with_its_content(tmp_path: Path, compress: bool) -> None:
    store = Storage(f"file://{tmp_path}", compress_arrays=compress)
    uri = store.uri("p", "s", "features", TILE.id)
    expected = np.random.default_rng(1).random((3, 8, 8, 6)).astype(np.float32)
    with eopatch.writing(store, uri, {}) as writer:
        out = writer.array("data/FEATURES", expected.shape, np.float32)
        assert not out.any()  # starts as zeros
        for r0 in range(0, 8, 3):  # filled block of rows by block of rows
            out[:, r0 : r0 + 3] = expected[:, r0 : r0 + 3]
        writer.save(eopatch.new_patch(TILE, [dt.date(2023, 5, d) for d in (1, 6, 11)]))
        with pytest.raises(ValueError, match="already being written"):
            writer.array("data/FEATURES", expected.shape, np.float32)
    loaded, _ = eopatch.load(store, uri)
    np.testing.assert_array_equal(loaded.data["FEATURES"], expected)
    assert not list(store.local_path(uri).rglob(".streams"))


@pytest.mark.parametrize("compress", [False, True])
def test_streamed_and_in_memory_features_load_together(tmp_path: Path, compress: bool) -> None:
    from eolearn.core import EOPatch

    store = Storage(f"file://{tmp_path}", compress_arrays=compress)
    uri = store.uri("p", "s", "download", TILE.id)
    dates = [dt.date(2023, 5, 1), dt.date(2023, 5, 6), dt.date(2023, 5, 11)]
    cube = np.arange(3 * 8 * 8 * 2, dtype=np.uint16).reshape(3, 8, 8, 2)
    meta: dict[str, object] = {"note": "before"}
    with eopatch.writing(store, uri, meta) as writer:
        stream = writer.stream("data/BANDS", (8, 8, 2), np.uint16)
        for item in cube:
            stream.append(item)
        patch = eopatch.new_patch(TILE, dates)
        patch.mask_timeless["LABELS"] = np.ones((8, 8, 1), np.uint8)
        writer.save(patch)
        meta["n_dates"] = 3  # known only at the end: still written
    loaded, marker = eopatch.load(store, uri)
    np.testing.assert_array_equal(loaded.data["BANDS"], cube)
    assert loaded.mask_timeless["LABELS"].sum() == 64 and marker["n_dates"] == 3
    files = sorted(p.relative_to(store.local_path(uri)).as_posix() for p in store.local_path(uri).rglob("*.npy*"))
    suffix = ".npy.gz" if compress else ".npy"
    assert files == [f"data/BANDS{suffix}", f"mask_timeless/LABELS{suffix}"]  # no staging leftovers
    np.testing.assert_array_equal(EOPatch.load(str(store.local_path(uri))).data["BANDS"], cube)


def test_writer_refuses_a_feature_both_streamed_and_in_the_patch(tmp_path: Path) -> None:
    store = Storage(f"file://{tmp_path}")
    uri = store.uri("p", "s", "download", TILE.id)
    with pytest.raises(ValueError, match=r"data/BANDS.*streamed"), eopatch.writing(store, uri, {}) as writer:
        writer.stream("data/BANDS", (8, 8, 2), np.uint16)
        patch = eopatch.new_patch(TILE, [dt.date(2023, 5, 1)])
        patch.data["BANDS"] = np.zeros((1, 8, 8, 2), np.uint16)
        writer.save(patch)
    assert not store.is_complete(uri) and not list(tmp_path.rglob("*.npy"))  # nothing half-written
    with pytest.raises(ValueError, match="already being written"), eopatch.writing(store, uri, {}) as writer:
        writer.save(patch)
        writer.stream("data/BANDS", (8, 8, 2), np.uint16)
    with pytest.raises(ValueError, match="only temporal array features"), eopatch.writing(store, uri, {}) as writer:
        writer.stream("mask_timeless/LABELS", (8, 8, 1), np.uint8)


# ---------------------------------------------------------------------------- streamed acquisitions


def _streamed(slabs: list[DateSlab], n_dates: int) -> StreamedAcquisitions:
    dates = [dt.date(2023, 5, 1) + dt.timedelta(days=5 * i) for i in range(n_dates)]
    return StreamedAcquisitions(dates, (4, 4), iter(slabs), ("B02", "B03"), 10000.0, "test source")


def _slab(bands: int = 2) -> DateSlab:
    return DateSlab(
        np.ones((4, 4, bands), np.uint16), np.ones((4, 4), bool), np.zeros((4, 4), bool), np.zeros((4, 4), np.uint8)
    )


def test_streamed_acquisitions_check_what_the_source_delivers() -> None:
    acq = _streamed([_slab(), _slab()], 2)
    assert acq.stacked().bands.shape == (2, 4, 4, 2)
    with pytest.raises(RuntimeError, match="already read"):
        list(acq.iter_dates())
    with pytest.raises(RuntimeError, match="test source delivered 1 of its 2 dates"):
        list(_streamed([_slab()], 2).iter_dates())
    with pytest.raises(RuntimeError, match="more than its 1 dates"):
        list(_streamed([_slab(), _slab()], 1).iter_dates())
    with pytest.raises(RuntimeError, match=r"date 2023-05-06: bands has shape \(4, 4, 3\), expected \(4, 4, 2\)"):
        list(_streamed([_slab(), _slab(3)], 2).iter_dates())


def test_synthetic_stream_yields_independent_arrays_equal_to_the_stack() -> None:
    """A renderer reusing its buffers would make every kept date equal the last one."""
    params = gen.SyntheticParams(seed=3)
    scene, _ = gen.scene_for_season((40, 48), params, "t", 0)
    start, end = dt.date(2023, 4, 1), dt.date(2023, 6, 30)
    stacked = gen.simulate_acquisitions(scene, start, end, params, "t/2023")
    dates, rendered = gen.stream_acquisitions(scene, start, end, params, "t/2023")
    kept = list(rendered)
    assert dates == stacked.dates and len(kept) == len(dates) > 5
    for field, arrays in zip(
        ("bands", "data_mask", "cloud_mask", "cloud_probability"), zip(*kept, strict=True), strict=True
    ):
        np.testing.assert_array_equal(np.stack(arrays), getattr(stacked, field), err_msg=field)
    assert not np.array_equal(kept[0][0], kept[-1][0])


# ----------------------------------------------------------------------------------------- the stage


@pytest.mark.parametrize("compress", [False, True])
def test_stage_stores_the_source_dates_and_masks(project_dir: Path, compress: bool) -> None:
    from lcms_tasks import runner
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import project_tiles
    from lcms_tasks.sources import get_source

    raw = yaml.safe_load((project_dir / "project.yaml").read_text())
    raw["storage"]["compress_arrays"] = compress
    raw["stages"] = {"download": {"max_cloud_coverage": 0.6, "cloud_dilation_px": 1}}
    (project_dir / "project.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(project_dir / "project.yaml")
    tile = project_tiles(cfg)[0]
    ctx = RunContext.create(cfg, season="2023", run_id="t")
    runner.run_tiles("download", [tile], ctx)

    season = cfg.season("2023")
    source = get_source(cfg).fetch(tile, "2023", season.start, season.end).stacked()
    share = source.cloud_mask.reshape(len(source.dates), -1).mean(axis=1)
    keep = share <= 0.6
    assert 0 < keep.sum() < keep.size  # the season has dates on both sides of the threshold
    expected = source.subset(keep)
    patch, meta = eopatch.load(ctx.storage, ctx.tile_uri("download", tile.id))
    assert [t.date() for t in patch.timestamps or []] == expected.dates
    assert meta["n_dates"] == keep.sum() and meta["n_dates_dropped_cloudy"] == (~keep).sum()
    assert meta["dates_dropped_cloudy"] == [d.isoformat() for d, k in zip(source.dates, keep, strict=True) if not k]
    np.testing.assert_array_equal(patch.data["BANDS"], expected.bands)
    np.testing.assert_array_equal(patch.data["CLP"][..., 0], expected.cloud_probability)
    np.testing.assert_array_equal(patch.mask["IS_DATA"][..., 0], expected.data_mask)
    np.testing.assert_array_equal(patch.mask["CLM"][..., 0], expected.cloud_mask)
    valid = download.valid_mask(expected.data_mask, expected.cloud_mask, 1)
    np.testing.assert_array_equal(patch.mask["IS_VALID"][..., 0], valid)
    assert set(patch.mask_timeless) == set(source.truth_rasters)


def test_stage_names_the_source_and_date_of_a_malformed_delivery(
    config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.errors import StageError
    from lcms_tasks.grid import project_tiles
    from lcms_tasks.sources import SourceAcquisitions

    cfg = load_config(config_path)
    tile = project_tiles(cfg)[0]
    h, w = tile.shape
    dates = [dt.date(2023, 5, 1), dt.date(2023, 5, 6)]
    bands = np.ones((2, h, w, 13), np.int32)  # a source bug: signed 32-bit digital numbers
    masks = np.zeros((2, h, w), bool)

    class BadSource:
        def fetch(self, *_: object) -> SourceAcquisitions:
            return SourceAcquisitions(
                dates, bands, ~masks, masks, masks.astype(np.uint8), tuple(f"B{i}" for i in range(13)), 1e4, "bad"
            )

    monkeypatch.setattr("lcms_tasks.sources.get_source", lambda _config: BadSource())
    ctx = RunContext.create(cfg, season="2023", run_id="t")
    with pytest.raises(
        StageError, match=rf"tile {tile.id}: bad source, date 2023-05-01: .*int32, which does not fit uint16"
    ):
        download.run(tile, ctx)
    assert not ctx.storage.is_complete(ctx.tile_uri("download", tile.id))
