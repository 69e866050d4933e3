"""EOPatch persistence through storage: arrays, timestamps and vector features (with text columns) round-trip.

Guards the dependency trap of eo-learn 1.5 (geopandas < 1) with pandas: vector features must save and load.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from lcms_tasks import eopatch
from lcms_tasks.errors import ArtefactMissingError
from lcms_tasks.grid import Tile
from lcms_tasks.storage import Storage


@pytest.mark.parametrize("compress", [False, True])
def test_eopatch_with_vectors_roundtrips(tmp_path: Path, compress: bool) -> None:
    from eolearn.core import EOPatch

    store = Storage(f"file://{tmp_path}", compress_arrays=compress)
    tile = Tile(32633, 5000, 500, 16, 10.0)
    dates = [dt.date(2023, 5, 1), dt.date(2023, 5, 6)]
    patch = eopatch.new_patch(tile, dates)
    patch.data["BANDS"] = np.arange(2 * 16 * 16 * 3, dtype=np.uint16).reshape(2, 16, 16, 3)
    patch.mask_timeless["LABELS"] = np.ones((16, 16, 1), dtype=np.uint8)
    x0, y0, _, _ = tile.bounds
    patch.vector_timeless["POLYS"] = gpd.GeoDataFrame(
        {"name": ["crop field", "forêt"], "class_id": [1, 2]},
        geometry=[box(x0, y0, x0 + 50, y0 + 50), box(x0 + 60, y0, x0 + 100, y0 + 40)],
        crs=tile.crs,
    )
    uri = store.uri("p", "s", "stage", tile.id)
    eopatch.save(store, uri, patch, meta={"band_names": ["B02", "B03", "B04"]})

    loaded, meta = eopatch.load(store, uri)
    assert meta["band_names"] == ["B02", "B03", "B04"]
    assert [t.date() for t in loaded.timestamps] == dates
    np.testing.assert_array_equal(loaded.data["BANDS"], patch.data["BANDS"])
    vec = loaded.vector_timeless["POLYS"]
    assert list(vec["name"]) == ["crop field", "forêt"] and list(vec["class_id"]) == [1, 2]
    assert vec.crs.to_epsg() == 32633
    assert vec.geometry.area.tolist() == pytest.approx([2500.0, 1600.0])
    only, _ = eopatch.load(store, uri, features=["mask_timeless/LABELS"])
    assert "BANDS" not in only.data and only.mask_timeless["LABELS"].sum() == 256
    suffix = ".npy.gz" if compress else ".npy"
    assert (store.local_path(uri) / "data" / f"BANDS{suffix}").is_file()
    # The layout stays eo-learn's own: EOPatch.load reads it directly.
    plain = EOPatch.load(str(store.local_path(uri)))
    np.testing.assert_array_equal(plain.data["BANDS"], patch.data["BANDS"])


def test_loading_an_incomplete_patch_fails(tmp_path: Path) -> None:
    store = Storage(f"file://{tmp_path}")
    with pytest.raises(ArtefactMissingError, match="absent or incomplete"):
        eopatch.load(store, store.uri("p", "s", "stage", "32633_1_1"))


@pytest.mark.parametrize("compress", [False, True])
def test_open_rows_reads_blocks_of_rows(tmp_path: Path, compress: bool) -> None:
    store = Storage(f"file://{tmp_path}", compress_arrays=compress)
    tile = Tile(32633, 5000, 500, 12, 10.0)
    patch = eopatch.new_patch(tile, [dt.date(2023, 5, d) for d in (1, 6, 11, 16)])
    cube = np.random.default_rng(1).integers(0, 10000, size=(4, 12, 12, 5), dtype=np.uint16)
    patch.data["BANDS"] = cube
    patch.mask["IS_VALID"] = np.ones((4, 12, 12, 1), dtype=bool)
    uri = store.uri("p", "s", "download", tile.id)
    eopatch.save(store, uri, patch, meta={"band_names": list("ABCDE")})
    with eopatch.open_rows(store, uri, features=["mask/IS_VALID"], by_rows=["data/BANDS"]) as (src, meta, arrays):
        bands = arrays["data/BANDS"]
        assert isinstance(bands, eopatch.StoredArray) != compress  # compressed arrays are loaded whole
        assert bands.shape == cube.shape and meta["band_names"] == list("ABCDE")
        np.testing.assert_array_equal(bands[:, slice(3, 8)], cube[:, 3:8])
        np.testing.assert_array_equal(bands[np.array([0, 2]), slice(10, 12)], cube[[0, 2], 10:12])
        assert src.mask["IS_VALID"].all() and "BANDS" not in src.data


def test_stored_array_rejects_truncated_files(tmp_path: Path) -> None:
    path = tmp_path / "a.npy"
    np.save(path, np.zeros((2, 4, 4, 3), dtype=np.uint16))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(OSError, match="short read"):
        eopatch.StoredArray(path)[:, slice(0, 4)]
