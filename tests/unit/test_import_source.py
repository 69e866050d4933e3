"""The import source: EOPatches and GeoTIFFs (small files written here) resampled onto tile grids."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lcms_tasks.config import parse_config
from lcms_tasks.errors import ConfigError, StageError
from lcms_tasks.grid import Tile
from lcms_tasks.sources import get_source
from lcms_tasks.sources.import_source import (
    ImportSource,
    ImportSourceConfig,
    SourceBlock,
    cloud_from_mask,
    mosaic_blocks,
    parse_tiff_date,
    to_dn,
)

EPSG = 32633
# A 16 px tile of 10 m at column 2000, row 30000: x 320000..320160, y 4800000..4800160.
TILE = Tile(EPSG, 30000, 2000, 16, 10.0)
X0, Y1 = TILE.bounds[0], TILE.bounds[3]
BANDS3 = ("B02", "B04", "B08")
SEASON = (dt.date(2023, 4, 1), dt.date(2023, 9, 30))


def make_project(base: Path, source: dict[str, Any]) -> Any:
    """A project config with ``source`` and a small AOI over TILE; relative paths resolve against ``base``."""
    x0, y0, x1, y1 = TILE.bounds
    aoi = {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}
    data = {
        "project": "imp",
        "aoi": {"geojson": aoi, "crs": f"EPSG:{EPSG}"},
        "grid": {"tile_size_px": 16, "resolution_m": 10.0, "crs": EPSG},
        "seasons": {"2023": {"start": SEASON[0].isoformat(), "end": SEASON[1].isoformat()}},
        "legends": {"land_cover": [{"id": 1, "name": "forest"}, {"id": 2, "name": "grassland"}]},
        "source": {"type": "import", **source},
        "storage": {"root": str(base / "store")},
    }
    return parse_config(data, base_dir=base)


def write_eopatch(
    path: Path,
    bounds: tuple[float, float, float, float],
    values: np.ndarray,
    dates: list[dt.date],
    *,
    is_data: np.ndarray | None = None,
    clm: np.ndarray | None = None,
    clp: np.ndarray | None = None,
    epsg: int = EPSG,
) -> None:
    """An EOPatch with data/BANDS-S2-L1C, mask/IS_DATA, mask/CLM and data/CLP (0..1)."""
    from eolearn.core import EOPatch
    from sentinelhub import CRS, BBox

    t, h, w, _ = values.shape
    patch = EOPatch(
        bbox=BBox(bounds, crs=CRS(epsg)), timestamps=[dt.datetime(d.year, d.month, d.day, 10) for d in dates]
    )
    patch.data["BANDS-S2-L1C"] = values.astype(np.float32)
    patch.mask["IS_DATA"] = (np.ones((t, h, w)) if is_data is None else is_data).astype(np.uint8)[..., None]
    patch.mask["CLM"] = (np.zeros((t, h, w)) if clm is None else clm).astype(np.uint8)[..., None]
    patch.data["CLP"] = (np.zeros((t, h, w)) if clp is None else clp).astype(np.float32)[..., None]
    patch.save(str(path))


def write_tif(
    path: Path,
    array: np.ndarray,
    transform: Any,
    *,
    crs: str = f"EPSG:{EPSG}",
    descriptions: tuple[str, ...] | None = None,
    tags: dict[str, str] | None = None,
    nodata: float | None = None,
) -> None:
    """A GeoTIFF of ``array`` (bands, rows, cols)."""
    import rasterio

    count, h, w = array.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=count,
        dtype=array.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as ds:
        ds.write(array)
        if descriptions:
            for i, name in enumerate(descriptions, start=1):
                ds.set_band_description(i, name)
        if tags:
            ds.update_tags(**tags)


def reflectance(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(0.01, 0.6, size=shape).astype(np.float32)


# -- config ----------------------------------------------------------------------------------------


def test_config_defaults_and_validation(tmp_path: Path) -> None:
    cfg = make_project(tmp_path, {"path": "imagery"})
    src = cfg.source
    assert isinstance(src, ImportSourceConfig)
    assert src.format == "eopatch" and src.bands_feature == "BANDS-S2-L1C" and src.data_mask_feature == "IS_DATA"
    assert src.cloud_mask_feature == "CLM" and src.reflectance_scale == 10000.0 and len(src.band_names) == 13
    assert isinstance(get_source(cfg), ImportSource)
    with pytest.raises(ConfigError, match="named group 'date'"):
        make_project(tmp_path, {"path": "x", "format": "geotiff", "date_pattern": r"\d{8}"})
    with pytest.raises(ConfigError, match="needs `dates`"):
        make_project(tmp_path, {"path": "x", "format": "geotiff", "layout": "time_stack"})
    with pytest.raises(ConfigError, match="only for format 'geotiff'"):
        make_project(tmp_path, {"path": "x", "dates": ["2023-05-01"]})
    with pytest.raises(ConfigError, match="repeats"):
        make_project(tmp_path, {"path": "x", "band_names": ["B02", "B02"]})
    with pytest.raises(ConfigError, match="unknown key"):
        make_project(tmp_path, {"path": "x", "bandz": 1})


def test_missing_folder_names_path(tmp_path: Path) -> None:
    source = ImportSource(make_project(tmp_path, {"path": "nowhere/{season}"}))
    with pytest.raises(ConfigError, match=r"nowhere/2023.*does not exist"):
        source.fetch(TILE, "2023", *SEASON)


# -- pure helpers ----------------------------------------------------------------------------------


def test_to_dn_rounds_and_clips() -> None:
    values = np.array([0.12345, 0.5, 7.0, -0.1, np.nan, 0.00001], np.float32)
    dn = to_dn(values, 10000.0, 0.0)
    assert dn.dtype == np.uint16
    np.testing.assert_array_equal(dn[:4], np.rint(values[:4].astype(np.float64) * 10000).clip(1, 65535))
    assert dn[4] == 1 and dn[5] == 1  # NaN and tiny values clip to 1; the caller zeroes no-data pixels
    np.testing.assert_array_equal(to_dn(np.array([2000.0, 3000.0]), 1.0, -1000.0), [1000, 2000])


def test_parse_tiff_date_formats() -> None:
    assert parse_tiff_date({"TIFFTAG_DATETIME": "2023:05:12 10:20:30"}) == dt.date(2023, 5, 12)
    assert parse_tiff_date({"ACQUISITION_DATE": "2023-06-01T10:00:00Z"}) == dt.date(2023, 6, 1)
    assert parse_tiff_date({"ACQUISITION_DATE": "2023-06-02"}) == dt.date(2023, 6, 2)
    assert parse_tiff_date({"OTHER": "2023-06-02"}) is None
    assert parse_tiff_date({"TIFFTAG_DATETIME": "not a date"}) is None


def test_cloud_from_mask_values() -> None:
    scl = np.array([0, 3, 4, 8, 9, 10])
    np.testing.assert_array_equal(cloud_from_mask(scl, None), scl != 0)
    np.testing.assert_array_equal(cloud_from_mask(scl, [3, 8, 9, 10]), [False, True, False, True, True, True])


def _block(name: str, dates: list[dt.date], value: float, data: np.ndarray) -> SourceBlock:
    t = len(dates)
    return SourceBlock(
        name=name,
        dates=dates,
        values=np.where(data[..., None], np.float32(value), np.float32(np.nan)) * np.ones((t, 2, 2, 1), np.float32),
        data_mask=data,
        cloud_mask=np.zeros_like(data),
        cloud_probability=np.zeros(data.shape, np.float32),
    )


def test_mosaic_first_source_wins_and_empty_dates_drop() -> None:
    d1, d2, d3 = dt.date(2023, 5, 1), dt.date(2023, 5, 11), dt.date(2023, 5, 21)
    left = np.array([[[True, False], [True, False]], [[False, False], [False, False]]])
    everywhere = np.ones((2, 2, 2), bool)
    nothing = np.zeros((1, 2, 2), bool)
    blocks = [_block("a", [d1, d3], 1.0, left), _block("b", [d1, d2], 2.0, everywhere), _block("c", [d3], 3.0, nothing)]
    dates, values, data, _, _ = mosaic_blocks(blocks, (2, 2), 1)
    assert dates == [d1, d2]  # d3: block a has no data then, block c none at all
    np.testing.assert_array_equal(values[0, ..., 0], [[1.0, 2.0], [1.0, 2.0]])
    np.testing.assert_array_equal(values[1, ..., 0], np.full((2, 2), 2.0))
    assert data.all()


# -- EOPatches -------------------------------------------------------------------------------------


def test_eopatch_on_tile_grid_values_masks_dates(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    dates = [dt.date(2023, 3, 20), dt.date(2023, 5, 1), dt.date(2023, 6, 10), dt.date(2023, 10, 5)]
    # The patch covers the tile's west 10 columns and all 16 rows, on the tile's own pixel grid.
    values = reflectance(rng, (4, 16, 10, 13))
    is_data = np.ones((4, 16, 10), bool)
    is_data[1, :3, :4] = False
    clm = np.zeros((4, 16, 10), bool)
    clm[2, 8:, :] = True
    clp = rng.uniform(0, 1, (4, 16, 10)).astype(np.float32)
    write_eopatch(tmp_path / "patch", (X0, Y1 - 160, X0 + 100, Y1), values, dates, is_data=is_data, clm=clm, clp=clp)
    cfg = make_project(tmp_path, {"path": "patch", "resampling": "nearest"})
    acq = ImportSource(cfg).fetch(TILE, "2023", *SEASON)

    assert acq.dates == dates[1:3]  # 20 March and 5 October are outside the season
    assert acq.bands.shape == (2, 16, 16, 13) and acq.bands.dtype == np.uint16
    assert acq.quantification == 10000.0 and acq.band_names[7] == "B08"
    expected = np.rint(values[1:3].astype(np.float64) * 10000).astype(np.uint16)
    data = acq.data_mask
    np.testing.assert_array_equal(data[:, :, 10:], False)  # east of the patch: no coverage
    np.testing.assert_array_equal(data[:, :, :10], is_data[1:3])
    np.testing.assert_array_equal(acq.bands[:, :, :10][data[:, :, :10]], expected[data[:, :, :10]])
    assert (acq.bands[~data] == 0).all()
    np.testing.assert_array_equal(acq.cloud_mask[:, :, :10], clm[1:3] & is_data[1:3])
    assert not acq.cloud_mask[:, :, 10:].any()
    np.testing.assert_array_equal(
        acq.cloud_probability[:, :, :10][data[:, :, :10]], np.rint(clp[1:3] * 100).astype(np.uint8)[is_data[1:3]]
    )


def test_eopatch_folder_is_mosaicked(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    d1, d2, d3 = dt.date(2023, 5, 1), dt.date(2023, 5, 11), dt.date(2023, 5, 21)
    north = reflectance(rng, (2, 8, 16, 13))
    south = reflectance(rng, (2, 10, 16, 13))  # overlaps the north patch by two rows
    folder = tmp_path / "patches"
    folder.mkdir()
    write_eopatch(folder / "a_north", (X0, Y1 - 80, X0 + 160, Y1), north, [d1, d2])
    write_eopatch(folder / "b_south", (X0, Y1 - 160, X0 + 160, Y1 - 60), south, [d1, d3])
    write_eopatch(folder / "c_elsewhere", (X0 + 5000, Y1, X0 + 5160, Y1 + 160), north, [d1, d2])
    (folder / "notes").mkdir()  # not an EOPatch: ignored
    cfg = make_project(tmp_path, {"path": "patches", "resampling": "nearest"})
    acq = ImportSource(cfg).fetch(TILE, "2023", *SEASON)
    assert acq.dates == [d1, d2, d3]
    dn_n = np.rint(north.astype(np.float64) * 10000).astype(np.uint16)
    dn_s = np.rint(south.astype(np.float64) * 10000).astype(np.uint16)
    # d1: north rows 0..7 from a_north (sorted first, it wins the overlap), rows 8..15 from b_south.
    np.testing.assert_array_equal(acq.bands[0, :8], dn_n[0])
    np.testing.assert_array_equal(acq.bands[0, 8:], dn_s[0, 2:])
    assert acq.data_mask[0].all()
    # d2: only the north patch; d3: only the south one.
    np.testing.assert_array_equal(acq.data_mask[1], np.arange(16)[:, None] < 8 * np.ones((1, 16), bool))
    np.testing.assert_array_equal(acq.bands[2, 6:], dn_s[1])
    assert not acq.data_mask[2, :6].any() and (acq.bands[2, :6] == 0).all()


def test_eopatch_missing_tile_error_or_empty(tmp_path: Path) -> None:
    values = reflectance(np.random.default_rng(3), (1, 4, 4, 13))
    write_eopatch(tmp_path / "far", (X0 + 9000, Y1, X0 + 9040, Y1 + 40), values, [dt.date(2023, 5, 1)])
    with pytest.raises(StageError, match=rf"tile {TILE.id}: no acquisition .* in {tmp_path / 'far'}"):
        ImportSource(make_project(tmp_path, {"path": "far"})).fetch(TILE, "2023", *SEASON)
    acq = ImportSource(make_project(tmp_path, {"path": "far", "allow_empty": True})).fetch(TILE, "2023", *SEASON)
    assert acq.dates == [] and acq.bands.shape == (0, 16, 16, 13) and acq.data_mask.shape == (0, 16, 16)


def test_eopatch_bad_features_are_named(tmp_path: Path) -> None:
    values = reflectance(np.random.default_rng(4), (1, 16, 16, 13))
    write_eopatch(tmp_path / "p", (X0, Y1 - 160, X0 + 160, Y1), values, [dt.date(2023, 5, 1)])
    with pytest.raises(StageError, match="no data/L2A_BANDS"):
        ImportSource(make_project(tmp_path, {"path": "p", "bands_feature": "L2A_BANDS"})).fetch(TILE, "2023", *SEASON)
    with pytest.raises(StageError, match="no mask/SCL"):
        ImportSource(make_project(tmp_path, {"path": "p", "cloud_mask_feature": "SCL"})).fetch(TILE, "2023", *SEASON)
    with pytest.raises(StageError, match=r"13 bands but source\.band_names lists 3"):
        ImportSource(make_project(tmp_path, {"path": "p", "band_names": list(BANDS3)})).fetch(TILE, "2023", *SEASON)
    with pytest.raises(ConfigError, match="holds no EOPatch"):
        (tmp_path / "empty").mkdir()
        ImportSource(make_project(tmp_path, {"path": "empty"})).fetch(TILE, "2023", *SEASON)


def test_eopatch_bilinear_keeps_smooth_fields_and_nearest_masks(tmp_path: Path) -> None:
    # 5 m source pixels, offset by half a pixel: a linear ramp in x resamples to the ramp at tile pixel centres.
    h, w = 40, 40
    x = X0 - 20 + 5 * (np.arange(w) + 0.5)  # source pixel centres
    ramp = (0.1 + (x - X0) / 2000.0).astype(np.float32)
    values = np.broadcast_to(ramp[None, None, :, None], (1, h, w, 13)).copy()
    clm = np.zeros((1, h, w), bool)
    clm[0, :, 20:] = True
    write_eopatch(tmp_path / "p", (X0 - 20, Y1 - 180, X0 + 180, Y1 + 20), values, [dt.date(2023, 5, 1)], clm=clm)
    cfg = make_project(tmp_path, {"path": "p", "cloud_probability_feature": None})
    acq = ImportSource(cfg).fetch(TILE, "2023", *SEASON)
    assert cfg.source.resampling == "bilinear" and acq.data_mask.all()
    centres = TILE.transform() * (np.arange(16) + 0.5, np.full(16, 0.5))
    expected = np.rint((0.1 + (centres[0] - X0) / 2000.0) * 10000)
    np.testing.assert_allclose(acq.bands[0, 5, :, 3].astype(float), expected, atol=1)
    # Cloud mask by nearest: exactly the tile columns whose centre lies east of x = X0 + 80.
    np.testing.assert_array_equal(acq.cloud_mask[0], np.broadcast_to(centres[0] > X0 + 80, (16, 16)))
    # Without a cloud probability feature: 100 % where the cloud mask says cloud, else 0.
    np.testing.assert_array_equal(acq.cloud_probability, acq.cloud_mask.astype(np.uint8) * 100)


# -- GeoTIFFs --------------------------------------------------------------------------------------


def test_geotiff_per_date_pattern_descriptions_and_masks(tmp_path: Path) -> None:
    from affine import Affine

    rng = np.random.default_rng(5)
    folder = tmp_path / "tifs"
    folder.mkdir()
    transform = Affine(10.0, 0, X0, 0, -10.0, Y1)
    dns = {}
    for date in ("20230512", "20230601", "20221201"):
        dn = rng.integers(100, 5000, size=(3, 16, 16)).astype(np.uint16)
        # Bands stored in another order than band_names, named by their descriptions.
        write_tif(folder / f"S2A_{date}_T33.tif", dn[[2, 0, 1]], transform, descriptions=("B08", "B02", "B04"))
        cloud = np.zeros((1, 16, 16), np.uint8)
        cloud[0, :4] = 9  # SCL 'cloud high probability'
        cloud[0, 4:6] = 4  # SCL 'vegetation'
        write_tif(folder / f"S2A_{date}_T33_SCL.tif", cloud, transform)
        dns[date] = dn
    cfg = make_project(
        tmp_path,
        {
            "path": "tifs",
            "format": "geotiff",
            "band_names": list(BANDS3),
            "reflectance_scale": 1.0,
            "date_pattern": r"S2[AB]_(?P<date>\d{8})",
            "cloud_mask_suffix": "_SCL",
            "cloud_mask_values": [3, 8, 9, 10],
            "resampling": "nearest",
        },
    )
    acq = ImportSource(cfg).fetch(TILE, "2023", *SEASON)
    assert acq.dates == [dt.date(2023, 5, 12), dt.date(2023, 6, 1)]
    assert acq.band_names == BANDS3
    np.testing.assert_array_equal(acq.bands[0], dns["20230512"].transpose(1, 2, 0))
    np.testing.assert_array_equal(acq.bands[1], dns["20230601"].transpose(1, 2, 0))
    assert acq.data_mask.all()
    assert acq.cloud_mask[:, :4].all() and not acq.cloud_mask[:, 4:].any()
    assert (acq.cloud_probability[:, :4] == 100).all() and (acq.cloud_probability[:, 4:] == 0).all()

    # A file whose name does not carry a date is an error naming it.
    write_tif(folder / "mosaic.tif", dns["20230512"], transform, descriptions=("B02", "B04", "B08"))
    (folder / "mosaic_SCL.tif").write_bytes((folder / "S2A_20230512_T33_SCL.tif").read_bytes())
    with pytest.raises(StageError, match=r"mosaic\.tif: file name does not match"):
        ImportSource(cfg).fetch(TILE, "2023", *SEASON)


def test_geotiff_reprojected_from_wgs84(tmp_path: Path) -> None:
    """A lon/lat raster with one id per pixel lands, by nearest, on the tile pixels whose centres it contains."""
    from affine import Affine
    from pyproj import Transformer

    to_wgs = Transformer.from_crs(f"EPSG:{EPSG}", "EPSG:4326", always_xy=True)
    lon0, lat0, lon1, lat1 = (
        *to_wgs.transform(TILE.bounds[0] - 60, TILE.bounds[1] - 60),
        *to_wgs.transform(TILE.bounds[2] + 60, TILE.bounds[3] + 60),
    )
    w, h = 37, 41  # pixels of about 7 m: not aligned with the tile grid
    transform = Affine((lon1 - lon0) / w, 0, lon0, 0, -(lat1 - lat0) / h, lat1)
    ids = np.arange(1, h * w + 1, dtype=np.float32).reshape(1, h, w)
    folder = tmp_path / "wgs"
    folder.mkdir()
    write_tif(folder / "scene.tif", ids, transform, crs="EPSG:4326", tags={"TIFFTAG_DATETIME": "2023:07:04 10:00:00"})
    cfg = make_project(
        tmp_path,
        {"path": "wgs", "format": "geotiff", "band_names": ["B04"], "reflectance_scale": 1.0, "resampling": "nearest"},
    )
    acq = ImportSource(cfg).fetch(TILE, "2023", *SEASON)
    assert acq.dates == [dt.date(2023, 7, 4)]  # from the TIFF tag
    rows, cols = np.mgrid[0:16, 0:16]
    xs, ys = TILE.transform() * (cols + 0.5, rows + 0.5)
    lon, lat = to_wgs.transform(xs, ys)
    src_col, src_row = ~transform * (lon, lat)
    expected = np.floor(src_row).astype(int) * w + np.floor(src_col).astype(int) + 1
    # Away from source pixel edges (GDAL's transformer approximates to a fraction of a pixel) it is exact.
    clear = (np.abs(src_col % 1 - 0.5) < 0.35) & (np.abs(src_row % 1 - 0.5) < 0.35)
    assert clear.sum() > 100
    np.testing.assert_array_equal(acq.bands[0, ..., 0][clear], expected[clear])
    assert acq.data_mask.all()


def test_geotiff_time_stack_orders_and_nodata(tmp_path: Path) -> None:
    from affine import Affine

    rng = np.random.default_rng(6)
    dates = ["2023-05-01", "2023-06-01", "2023-11-01"]
    cube = rng.integers(1, 3000, size=(3, 3, 16, 16)).astype(np.uint16)  # (date, band, rows, cols)
    cube[1, :, :2, :] = 65535  # no data on date 2 in the two north rows (every band)
    cube[0, 0, 5, 5] = 65535  # one band only: still data
    transform = Affine(10.0, 0, X0, 0, -10.0, Y1)
    for order, stack in (("date_major", cube.reshape(9, 16, 16)), ("band_major", cube.transpose(1, 0, 2, 3))):
        folder = tmp_path / order
        folder.mkdir()
        write_tif(folder / "stack.tif", np.ascontiguousarray(stack).reshape(9, 16, 16), transform, nodata=65535)
        cfg = make_project(
            tmp_path,
            {
                "path": order,
                "format": "geotiff",
                "layout": "time_stack",
                "stack_order": order,
                "dates": dates,
                "band_names": list(BANDS3),
                "reflectance_scale": 1.0,
                "resampling": "nearest",
            },
        )
        acq = ImportSource(cfg).fetch(TILE, "2023", *SEASON)
        assert acq.dates == [dt.date(2023, 5, 1), dt.date(2023, 6, 1)], order
        np.testing.assert_array_equal(acq.bands[0], cube[0].transpose(1, 2, 0))
        np.testing.assert_array_equal(acq.data_mask[1, :2], False)
        np.testing.assert_array_equal(acq.bands[1, 2:], cube[1, :, 2:].transpose(1, 2, 0))
        assert (acq.bands[1, :2] == 0).all() and acq.data_mask[0].all()
    bad = tmp_path / "bad"
    bad.mkdir()
    write_tif(bad / "stack.tif", cube.reshape(9, 16, 16)[:8], transform)
    cfg = make_project(
        tmp_path,
        {"path": "bad", "format": "geotiff", "layout": "time_stack", "dates": dates, "band_names": list(BANDS3)},
    )
    with pytest.raises(StageError, match=r"stack.tif: 8 band\(s\); a time stack of 3 date\(s\) x 3 band\(s\) needs 9"):
        ImportSource(cfg).fetch(TILE, "2023", *SEASON)


def test_geotiff_data_mask_file_and_missing_mask(tmp_path: Path) -> None:
    from affine import Affine

    folder = tmp_path / "t"
    folder.mkdir()
    transform = Affine(10.0, 0, X0, 0, -10.0, Y1)
    dn = np.full((3, 16, 16), 1234, np.uint16)
    write_tif(folder / "S2B_20230701.tif", dn, transform)
    valid = np.ones((1, 16, 16), np.uint8)
    valid[0, :, :3] = 0
    write_tif(folder / "S2B_20230701_valid.tif", valid, transform)
    write_tif(folder / "S2B_20230711.tif", dn, transform)  # its mask file is missing
    cfg = make_project(
        tmp_path,
        {
            "path": "t",
            "format": "geotiff",
            "band_names": list(BANDS3),
            "reflectance_scale": 1.0,
            "date_pattern": r"_(?P<date>\d{8})",
            "data_mask_suffix": "_valid",
        },
    )
    with pytest.raises(StageError, match=r"S2B_20230711.tif: mask file S2B_20230711_valid.tif"):
        ImportSource(cfg).fetch(TILE, "2023", *SEASON)
    (folder / "S2B_20230711.tif").unlink()
    acq = ImportSource(cfg).fetch(TILE, "2023", *SEASON)
    np.testing.assert_array_equal(acq.data_mask[0], valid[0].astype(bool))
    assert (acq.bands[0][valid[0] == 1] == 1234).all() and (acq.bands[0][valid[0] == 0] == 0).all()
