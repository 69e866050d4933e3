"""The COG writer and the BYOC check: valid files pass, files breaking one rule each are rejected by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import rasterio
import tifffile
from affine import Affine
from rasterio.io import MemoryFile
from rio_cogeo.cogeo import cog_translate

from lcms_tasks.publish import BAND_NAMES
from lcms_tasks.publish.cog import (
    BAND_SPECS,
    CONFIDENCE_NODATA,
    HEADER_LIMIT_BYTES,
    TILE_SIZE,
    CogCheckError,
    bench_cog_write,
    byoc_accepts_epsg,
    check_byoc,
    check_tile_folders,
    confidence_percent,
    overview_levels,
    write_band,
    write_cog,
)

TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4400000.0)


def _classes(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(1, 9, size=(size // 16 + 1, size // 16 + 1), dtype=np.uint8)
    return np.kron(coarse, np.ones((16, 16), dtype=np.uint8))[:size, :size]


def _rules(problems: list[str]) -> set[str]:
    return {p.split(": ")[1] for p in problems}


def _translate(
    path: Path,
    array: np.ndarray,
    *,
    crs: str = "EPSG:32638",
    config: dict[str, str] | None = None,
    resampling: Literal["mode", "average"] = "mode",
    nodata: int | None = 0,
    block: int = TILE_SIZE,
    **kw: Any,
) -> Path:
    """A COG written by rio-cogeo with settings chosen by the test (to break one rule at a time)."""
    h, w = array.shape
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": 1,
        "dtype": str(array.dtype),
        "crs": crs,
        "transform": TRANSFORM,
        "nodata": nodata,
    }
    dst = {"driver": "GTiff", "tiled": True, "blockxsize": block, "blockysize": block, "compress": "DEFLATE"}
    with MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(array, 1)
        with mem.open() as src:
            cog_translate(
                src,
                str(path),
                dst,
                overview_level=overview_levels(w, h, block),
                overview_resampling=resampling,
                in_memory=True,
                quiet=True,
                config=config if config is not None else {"GDAL_TIFF_OVR_BLOCKSIZE": str(block)},
                **kw,
            )
    return path


# -- the writer ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 700, 2500])
def test_written_bands_pass_every_rule(tmp_path: Path, size: int) -> None:
    classes = _classes(size)
    arrays = {
        "CLASS": classes,
        "CONFIDENCE": confidence_percent(np.full(classes.shape, 0.8, np.float32), classes > 0),
        "CHANGE": np.where(classes == 3, 7, 0).astype(np.uint8),
    }
    for name in BAND_NAMES:
        path = write_band(BAND_SPECS[name], arrays[name], tmp_path, crs="EPSG:32638", transform=TRANSFORM)
        assert path.name == f"{name}.tiff"
        assert check_byoc(path) == []
        with rasterio.open(path) as src:
            assert src.nodata == BAND_SPECS[name].nodata
            assert src.tags()["OVERVIEW_RESAMPLING"] == BAND_SPECS[name].resampling.upper()
            assert src.colorinterp[0] == rasterio.enums.ColorInterp.gray
            assert src.crs.to_epsg() == 32638 and src.transform == TRANSFORM
            np.testing.assert_array_equal(src.read(1), arrays[name])


def test_overviews_go_down_to_one_tile_with_the_same_tile_size_on_every_level(tmp_path: Path) -> None:
    path = write_cog(
        _classes(4100), tmp_path / "CLASS.tiff", crs="EPSG:32638", transform=TRANSFORM, nodata=0, resampling="mode"
    )
    with tifffile.TiffFile(path) as tif:
        pages = [p.aspage() for p in tif.pages]
        shapes = [p.shape for p in pages]
        tiles = {(p.tilewidth, p.tilelength) for p in pages}
        header = min(int(o) for p in pages for o in p.dataoffsets if o)
    assert shapes == [(4100, 4100), (2050, 2050), (1025, 1025), (513, 513)]  # GDAL rounds up; 513 <= one tile
    assert tiles == {(TILE_SIZE, TILE_SIZE)}
    assert header < HEADER_LIMIT_BYTES
    assert check_byoc(path) == []


def test_overview_levels() -> None:
    assert overview_levels(64, 64) == 0  # smaller than cog_validate's 512 px: no overview needed
    assert overview_levels(600, 300) == 1  # cog_validate wants overviews above 512 px
    assert overview_levels(1024, 1024) == 1
    assert overview_levels(1025, 10) == 1
    assert overview_levels(10980, 10980) == 4  # 10980 / 16 = 686 <= 1024


def test_overview_resampling_is_mode_for_classes_and_average_for_confidence(tmp_path: Path) -> None:
    size = 2048  # two overview levels; check the first (2 x 2 blocks)
    block = np.array([[1, 1], [1, 9]], np.uint8)  # mode 1, average 3 (GDAL's default CUBIC would give neither)
    classes = np.tile(block, (size // 2, size // 2))
    conf = np.tile(np.array([[0, 0], [100, 100]], np.uint8), (size // 2, size // 2))  # average 50
    write_band(BAND_SPECS["CLASS"], classes, tmp_path, crs="EPSG:32638", transform=TRANSFORM)
    write_band(BAND_SPECS["CONFIDENCE"], conf, tmp_path, crs="EPSG:32638", transform=TRANSFORM)
    with rasterio.open(tmp_path / "CLASS.tiff", OVERVIEW_LEVEL=0) as ovr:
        assert ovr.shape == (1024, 1024)
        assert set(np.unique(ovr.read(1)).tolist()) == {1}
    with rasterio.open(tmp_path / "CONFIDENCE.tiff", OVERVIEW_LEVEL=0) as ovr:
        assert set(np.unique(ovr.read(1)).tolist()) == {50}


def test_no_data_is_left_out_of_the_overviews(tmp_path: Path) -> None:
    conf = np.tile(np.array([[CONFIDENCE_NODATA, 40], [60, CONFIDENCE_NODATA]], np.uint8), (600, 600))
    write_band(BAND_SPECS["CONFIDENCE"], conf, tmp_path, crs="EPSG:32638", transform=TRANSFORM)
    with rasterio.open(tmp_path / "CONFIDENCE.tiff", OVERVIEW_LEVEL=0) as ovr:
        assert set(np.unique(ovr.read(1)).tolist()) == {50}  # (40 + 60) / 2, the no-data pixels ignored


def test_confidence_percent() -> None:
    conf = np.array([[0.0, 0.004, 0.006, 1.0], [1.7, -0.2, np.nan, 0.5]], np.float32)
    valid = np.array([[True, True, True, True], [True, True, True, False]])
    out = confidence_percent(conf, valid)
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 0, 1, 100], [100, 0, CONFIDENCE_NODATA, CONFIDENCE_NODATA]]


def test_write_cog_refuses_what_is_not_one_uint8_band(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_cog(
            np.zeros((8, 8), np.uint16),
            tmp_path / "x.tiff",
            crs="EPSG:32638",
            transform=TRANSFORM,
            nodata=0,
            resampling="mode",
        )
    with pytest.raises(ValueError, match="2-D"):
        write_cog(
            np.zeros((2, 8, 8), np.uint8),
            tmp_path / "x.tiff",
            crs="EPSG:32638",
            transform=TRANSFORM,
            nodata=0,
            resampling="mode",
        )


def test_zstd_compression(tmp_path: Path) -> None:
    path = write_cog(
        _classes(600),
        tmp_path / "CLASS.tiff",
        crs="EPSG:32638",
        transform=TRANSFORM,
        nodata=0,
        resampling="mode",
        compression="ZSTD",
    )
    with rasterio.open(path) as src:
        assert src.compression.name == "zstd"
    assert check_byoc(path) == []


def test_byoc_crs_list() -> None:
    assert all(byoc_accepts_epsg(e) for e in (4326, 3857, 3035, 32601, 32638, 32660, 32701, 32760))
    assert not any(byoc_accepts_epsg(e) for e in (None, 2154, 32600, 32661, 32700, 32761, 25833))


# -- deliberately bad COGs -------------------------------------------------------------------------


def test_a_palette_cog_is_rejected(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="Palette"):  # rio-cogeo says it switches the file to a palette
        path = _translate(tmp_path / "CLASS.tiff", _classes(600), colormap={1: (255, 0, 0, 255), 2: (0, 255, 0, 255)})
    problems = check_byoc(path)
    assert {"photometric", "colormap"} <= _rules(problems)
    assert all(p.startswith(f"{path}: ") for p in problems)


def test_a_stripped_tiff_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "CLASS.tiff"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=700,
        height=700,
        count=1,
        dtype="uint8",
        crs="EPSG:32638",
        transform=TRANSFORM,
        nodata=0,
        tiled=False,
    ) as dst:
        dst.write(_classes(700), 1)
    rules = _rules(check_byoc(path))
    assert {"cog_validate", "tile_size"} <= rules
    assert any("strips" in p for p in check_byoc(path))


def test_a_wrong_tile_size_is_rejected(tmp_path: Path) -> None:
    path = _translate(tmp_path / "CLASS.tiff", _classes(600), block=512)
    problems = check_byoc(path)
    assert _rules(problems) == {"tile_size"}
    assert "512x512" in problems[0] and "full resolution" in problems[0]


def test_overviews_tiled_at_another_size_are_rejected(tmp_path: Path) -> None:
    path = _translate(tmp_path / "CLASS.tiff", _classes(2100), config={"GDAL_TIFF_OVR_BLOCKSIZE": "256"})
    problems = check_byoc(path)
    assert _rules(problems) == {"tile_size"}
    assert len(problems) == 2 and all("overview" in p and "256x256" in p for p in problems)


def test_missing_overviews_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "CLASS.tiff"
    h = w = 2100
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": 1,
        "dtype": "uint8",
        "crs": "EPSG:32638",
        "transform": TRANSFORM,
        "nodata": 0,
    }
    with MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(_classes(w), 1)
        with mem.open() as src:
            cog_translate(
                src,
                str(path),
                {"driver": "GTiff", "tiled": True, "blockxsize": 1024, "blockysize": 1024, "compress": "DEFLATE"},
                overview_level=0,
                overview_resampling="mode",
                in_memory=True,
                quiet=True,
            )
    assert "overviews" in _rules(check_byoc(path))


def test_a_crs_byoc_does_not_accept_is_rejected(tmp_path: Path) -> None:
    path = _translate(tmp_path / "CLASS.tiff", _classes(64), crs="EPSG:2154")
    problems = check_byoc(path)
    assert _rules(problems) == {"crs"}
    assert "EPSG:2154" in problems[0]


def test_wrong_nodata_and_resampling_for_the_band_are_rejected(tmp_path: Path) -> None:
    conf = np.full((64, 64), 50, np.uint8)
    path = _translate(tmp_path / "CONFIDENCE.tiff", conf, nodata=0, resampling="mode")
    problems = check_byoc(path)
    assert _rules(problems) == {"nodata", "overview_resampling"}
    assert any("needs AVERAGE" in p for p in problems)
    assert check_byoc(path, band="CLASS") == []  # the same file is a fine CLASS band
    undeclared = _translate(tmp_path / "OTHER.tiff", conf, nodata=None)
    assert _rules(check_byoc(undeclared)) == {"nodata"}


def test_a_16_bit_band_is_rejected(tmp_path: Path) -> None:
    path = _translate(tmp_path / "CLASS.tiff", _classes(64).astype(np.uint16))
    assert {"dtype", "bands"} <= _rules(check_byoc(path))


def test_not_a_tiff_and_missing_files(tmp_path: Path) -> None:
    text = tmp_path / "CLASS.tiff"
    text.write_text("not a tiff")
    assert _rules(check_byoc(text)) == {"cog_validate"}
    assert _rules(check_byoc(tmp_path / "nope.tiff")) == {"exists"}


def test_check_error_names_file_and_rule() -> None:
    err = CogCheckError(["/a/CLASS.tiff: colormap: the file carries a colour map"], where="publish tile T")
    assert err.permanent
    assert "publish tile T" in str(err) and "/a/CLASS.tiff: colormap" in str(err)


# -- across tile folders ---------------------------------------------------------------------------


def test_tile_folders_need_the_same_files_and_bit_depths() -> None:
    good = {"CLASS.tiff": "uint8", "CONFIDENCE.tiff": "uint8", "CHANGE.tiff": "uint8"}
    assert check_tile_folders({"t1": good, "t2": dict(good)}) == []
    missing = check_tile_folders({"t1": good, "t2": {"CLASS.tiff": "uint8", "CONFIDENCE.tiff": "uint8"}})
    assert len(missing) == 1 and missing[0].startswith("t2: file_names: missing ['CHANGE.tiff']")
    depth = check_tile_folders({"t1": good, "t2": {**good, "CONFIDENCE.tiff": "uint16"}})
    assert len(depth) == 1 and depth[0].startswith("CONFIDENCE.tiff: bit_depth:")
    assert check_tile_folders({}) == []


# -- benchmark -------------------------------------------------------------------------------------


def test_bench_cog_write_reports_seconds_and_checks_its_files() -> None:
    result = bench_cog_write(600, repeats=1)
    assert result["bands"] == list(BAND_NAMES) and result["byoc_problems"] == []
    assert result["seconds"] > 0 and result["overview_levels"] == 1 and set(result["bytes"]) == set(BAND_NAMES)
