"""EOPatch persistence through storage: arrays, timestamps and vector features (with text columns) round-trip.

Guards the dependency trap of eo-learn 1.5 (geopandas < 1) with pandas: vector features must save and load.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from lcms_tasks import eopatch
from lcms_tasks.errors import ArtefactMissingError, CorruptArtefactError
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
    # Caught on opening, from the header and the file size, before any block is read.
    with pytest.raises(CorruptArtefactError, match=r"a.npy: truncated: header says \(2, 4, 4, 3\) uint16 = 192 "):
        eopatch.StoredArray(path)


def test_stored_array_notices_a_file_cut_after_opening(tmp_path: Path) -> None:
    path = tmp_path / "a.npy"
    np.save(path, np.zeros((2, 4, 4, 3), dtype=np.uint16))
    reader = eopatch.StoredArray(path, where="s3://b/p/features/T", file="data/A.npy")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CorruptArtefactError, match=r"s3://b/p/features/T/data/A.npy: truncated: short read at date 1"):
        reader[:, slice(0, 4)]


def _features_patch(store: Storage) -> tuple[str, Path]:
    """A complete features EOPatch: FEATURES (12, 16, 16, 6) float32 and a timeless mask; (uri, folder)."""
    tile = Tile(32633, 5000, 500, 16, 10.0)
    patch = eopatch.new_patch(tile, [dt.date(2023, 5, 1) + dt.timedelta(days=5 * i) for i in range(12)])
    patch.data["FEATURES"] = np.random.default_rng(0).random((12, 16, 16, 6), dtype=np.float32)
    patch.mask_timeless["VALID_COUNT"] = np.full((16, 16, 1), 12, np.uint16)
    uri = store.uri("p", "s", "features", tile.id)
    eopatch.save(store, uri, patch, meta={"feature_names": ["NDVI"]})
    return uri, store.local_path(uri)


def test_truncated_npy_is_a_corrupt_artefact_naming_file_and_sizes(tmp_path: Path) -> None:
    store = Storage(f"file://{tmp_path}")
    uri, folder = _features_patch(store)
    path = folder / "data" / "FEATURES.npy"
    data = path.read_bytes()
    path.write_bytes(data[:5000])
    nbytes = 12 * 16 * 16 * 6 * 4
    expected = (
        f"{uri}/data/FEATURES.npy: truncated: header says (12, 16, 16, 6) float32 = {nbytes} bytes of data, "
        f"the file holds {5000 - (len(data) - nbytes)}"
    )
    for features in (["data/FEATURES"], None):
        with pytest.raises(CorruptArtefactError) as caught:
            eopatch.load(store, uri, features=features)
        assert str(caught.value) == expected
        assert not isinstance(caught.value, ArtefactMissingError)  # there, but broken: not "run its stage first"
        assert caught.value.permanent
    # Other features of the same patch still load.
    ok, _ = eopatch.load(store, uri, features=["mask_timeless/VALID_COUNT"])
    assert ok.mask_timeless["VALID_COUNT"].shape == (16, 16, 1)
    rows = eopatch.open_rows(store, uri, features=["mask_timeless/VALID_COUNT"], by_rows=["data/FEATURES"])
    with pytest.raises(CorruptArtefactError, match=r"/data/FEATURES\.npy: truncated"), rows:
        pass
    # A file longer than its header says is as wrong as a short one.
    path.write_bytes(data + b"\0" * 64)
    with pytest.raises(CorruptArtefactError, match=r"FEATURES.npy: header does not match the file size: .* holds "):
        eopatch.load(store, uri, features=["data/FEATURES"])
    # Not even a header.
    path.write_bytes(data[:20])
    with pytest.raises(CorruptArtefactError, match=r"FEATURES.npy: not a readable .npy file \(20 bytes\)"):
        eopatch.load(store, uri, features=["data/FEATURES"])


def test_truncated_npy_gz_is_a_corrupt_artefact(tmp_path: Path) -> None:
    store = Storage(f"file://{tmp_path}", compress_arrays=True)
    uri, folder = _features_patch(store)
    path = folder / "data" / "FEATURES.npy.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for features in (["data/FEATURES"], None):
        with pytest.raises(
            CorruptArtefactError,
            match=r"/data/FEATURES.npy.gz: gzip cut short or corrupt: header "
            r"says \(12, 16, 16, 6\) float32 = 73728 bytes of data",
        ):
            eopatch.load(store, uri, features=features)
    rows = eopatch.open_rows(store, uri, features=[], by_rows=["data/FEATURES"])
    with pytest.raises(CorruptArtefactError, match=r"FEATURES\.npy\.gz: gzip cut short"), rows:
        pass
    # Damage inside the compressed stream (the trailer intact) is still reported as corrupt, not as missing.
    middle = bytearray(data)
    for i in range(len(data) // 3, len(data) // 3 + 64):
        middle[i] ^= 0xFF
    path.write_bytes(bytes(middle))
    with pytest.raises(CorruptArtefactError, match=r"cannot read data/FEATURES.npy.gz"):
        eopatch.load(store, uri, features=["data/FEATURES"])


def test_header_checks_read_no_array_data(tmp_path: Path) -> None:
    """The size check reads the header only: a 2 GiB array (a sparse file) is checked at once."""
    path = tmp_path / "big.npy"
    shape = (32, 1024, 1024, 16)
    with path.open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
        header = fh.tell()
        fh.truncate(header + 32 * 1024 * 1024 * 16 * 4)
    reads: list[int] = []
    real_open = Path.open

    def counting_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        fh = real_open(self, *args, **kwargs)
        real_read = fh.read
        fh.read = lambda n=-1: reads.append(n) or real_read(n)  # type: ignore[method-assign]
        return fh

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "open", counting_open)
        arr = eopatch.StoredArray(path)
    assert arr.shape == shape and arr.offset == header
    assert reads and all(0 <= n <= 4096 for n in reads), reads  # no whole-file read (n = -1)
