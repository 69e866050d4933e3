"""Season mosaics (VRT), QGIS styles and colour maps: GDAL reads them, QGIS's XML holds every class."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio

from lcms_tasks.config import LegendClass
from lcms_tasks.errors import StageError
from lcms_tasks.publish import BAND_NAMES, BandInfo, PublishedTile
from lcms_tasks.publish.cog import BAND_SPECS, write_band
from lcms_tasks.publish.mosaic import (
    build_vrt,
    change_entries,
    class_entries,
    qgis_colormap,
    qml_gray,
    qml_paletted,
    relative_href,
    write_season_mosaic,
)
from lcms_tasks.publish.tiles import transition_code_table

LEGEND = [
    LegendClass(id=1, name="cropland", color="#F4D03F"),
    LegendClass(id=2, name="forest", color="#1e8449"),
    LegendClass(id=4, name="bare land", color="#d7bde2"),
]
CODES = transition_code_table([(2, 1), (2, 4), (1, 4)], {c.id: c.name for c in LEGEND})
SIDE = 32
RES = 10.0


def _tile(root: Path, season_dir: str, epsg: int, col: int, row: int, seed: int) -> tuple[PublishedTile, dict]:
    """A published tile folder with real COGs (CLASS, CONFIDENCE, CHANGE) on the grid."""
    from affine import Affine

    tile_id = f"{epsg}_{col}_{row}"
    folder = root / season_dir / "publish" / tile_id
    x0, y1 = col * SIDE * RES, (row + 1) * SIDE * RES
    transform = Affine(RES, 0.0, x0, 0.0, -RES, y1)
    rng = np.random.default_rng(seed)
    arrays = {
        "CLASS": rng.choice([0, 1, 2, 4], size=(SIDE, SIDE)).astype(np.uint8),
        "CONFIDENCE": rng.integers(0, 101, size=(SIDE, SIDE)).astype(np.uint8),
        "CHANGE": rng.choice([0, 0, 0, 1, 2, 3], size=(SIDE, SIDE)).astype(np.uint8),
    }
    bands = {}
    for name in BAND_NAMES:
        spec = BAND_SPECS[name]
        write_band(spec, arrays[name], folder, crs=f"EPSG:{epsg}", transform=transform)
        bands[name] = BandInfo(name, spec.file, "uint8", spec.nodata, spec.description)
    tile = PublishedTile(
        tile_id=tile_id,
        season="2024",
        uri=f"file://{folder}",
        epsg=epsg,
        bounds=(x0, y1 - SIDE * RES, x0 + SIDE * RES, y1),
        footprint_wgs84={},
        bands=bands,
        meta={"shape": [SIDE, SIDE], "resolution": RES, "block_size": 1024},
    )
    return tile, arrays


@pytest.fixture
def season(tmp_path: Path) -> tuple[Path, list[PublishedTile], dict[str, dict]]:
    tiles, arrays = [], {}
    for k, (epsg, col, row) in enumerate([(32638, 10, 20), (32638, 11, 20), (32638, 10, 21), (32639, 3, 20)]):
        tile, arr = _tile(tmp_path, "2024", epsg, col, row, k)
        tiles.append(tile)
        arrays[tile.tile_id] = arr
    return tmp_path, tiles, arrays


def test_vrt_mosaics_open_in_gdal_and_match_the_tiles(season: tuple[Path, list[PublishedTile], dict]) -> None:
    root, tiles, arrays = season
    mosaic = root / "2024" / "publish" / "_run" / "mosaic"
    styles = {"CLASS": class_entries(LEGEND), "CONFIDENCE": None, "CHANGE": change_entries(CODES, LEGEND)}
    written = write_season_mosaic(mosaic, tiles, mosaic_uri=f"file://{mosaic}", styles=styles)
    assert written["vrt"] == {band: {"32638": f"{band}_32638.vrt", "32639": f"{band}_32639.vrt"} for band in BAND_NAMES}
    for band in BAND_NAMES:
        vrt = mosaic / f"{band}_32638.vrt"
        sources = [e.text or "" for e in ET.parse(vrt).iter("SourceFilename")]
        assert sorted(sources) == sorted(f"../../{t.tile_id}/{band}.tiff" for t in tiles if t.epsg == 32638)
        assert all(e.get("relativeToVRT") == "1" for e in ET.parse(vrt).iter("SourceFilename"))
        with rasterio.open(vrt) as src:
            assert src.crs.to_epsg() == 32638 and src.shape == (2 * SIDE, 2 * SIDE) and src.res == (RES, RES)
            assert src.nodata == BAND_SPECS[band].nodata
            for tile in (t for t in tiles if t.epsg == 32638):
                window = src.window(*tile.bounds)
                np.testing.assert_array_equal(src.read(1, window=window), arrays[tile.tile_id][band])
            missing = src.window(11 * SIDE * RES, 21 * SIDE * RES, 12 * SIDE * RES, 22 * SIDE * RES)
            assert (src.read(1, window=missing) == BAND_SPECS[band].nodata).all()  # no tile there
            if band == "CLASS":
                assert src.colorinterp[0] == rasterio.enums.ColorInterp.palette
                assert src.colormap(1)[1] == (244, 208, 63, 255) and src.colormap(1)[0][3] == 0
            if band == "CONFIDENCE":
                assert src.colorinterp[0] == rasterio.enums.ColorInterp.gray
    # The folder moves as a whole: the VRTs keep working from a copy elsewhere.
    import shutil

    copy = root / "copied"
    shutil.copytree(root / "2024", copy / "2024")
    with rasterio.open(copy / "2024" / "publish" / "_run" / "mosaic" / "CLASS_32639.vrt") as src:
        np.testing.assert_array_equal(src.read(1), arrays[tiles[3].tile_id]["CLASS"])


def test_a_zone_needs_one_resolution(season: tuple[Path, list[PublishedTile], dict]) -> None:
    root, tiles, _ = season
    odd = dataclasses.replace(tiles[1], meta={**tiles[1].meta, "resolution": 20.0})
    with pytest.raises(StageError, match="different resolutions"):
        build_vrt([tiles[0], odd], "CLASS", f"file://{root}")
    with pytest.raises(ValueError, match="one CRS"):
        build_vrt(tiles, "CLASS", f"file://{root}")


def _palette(qml: str) -> list[dict[str, str]]:
    root = ET.fromstring(qml.split("\n", 1)[1])  # after the DOCTYPE line
    renderer = root.find("pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "paletted" and renderer.get("band") == "1"
    return [e.attrib for e in renderer.iter("paletteEntry")]


def test_qml_has_every_legend_class_with_its_colour_and_name() -> None:
    qml = qml_paletted(class_entries(LEGEND))
    assert qml.startswith("<!DOCTYPE qgis")
    entries = _palette(qml)
    assert [(e["value"], e["color"], e["label"]) for e in entries] == [
        (str(c.id), c.color.lower(), c.name) for c in LEGEND
    ]
    change = _palette(qml_paletted(change_entries(CODES, LEGEND)))
    colors = {c.id: c.color.lower() for c in LEGEND}
    assert [(int(e["value"]), e["label"], e["color"]) for e in change] == [
        (c.code, c.label, colors[c.to_id]) for c in CODES
    ]


def test_confidence_style_is_a_grey_stretch() -> None:
    root = ET.fromstring(qml_gray(0, 100).split("\n", 1)[1])
    renderer = root.find("pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "singlebandgray"
    assert renderer.findtext("contrastEnhancement/minValue") == "0"
    assert renderer.findtext("contrastEnhancement/maxValue") == "100"


def test_colour_map_file() -> None:
    lines = qgis_colormap(class_entries(LEGEND)).splitlines()
    assert lines == [
        "# QGIS Generated Color Map Export File",
        "INTERPOLATION:EXACT",
        "1,244,208,63,255,cropland",
        "2,30,132,73,255,forest",
        "4,215,189,226,255,bare land",
    ]


def test_styles_are_written_beside_each_vrt(season: tuple[Path, list[PublishedTile], dict]) -> None:
    root, tiles, _ = season
    styles = {"CLASS": class_entries(LEGEND), "CONFIDENCE": None, "CHANGE": change_entries(CODES, LEGEND)}
    written = write_season_mosaic(root / "m", tiles, mosaic_uri=f"file://{root}/m", styles=styles)
    for band in BAND_NAMES:
        for epsg in ("32638", "32639"):
            assert (root / "m" / f"{band}_{epsg}.qml").read_text() == (root / "m" / f"{band}.qml").read_text()
    assert written["colormaps"] == ["CLASS_colormap.txt", "CHANGE_colormap.txt"]
    assert relative_href("s3://b/p/2024/publish/T/CLASS.tiff", "s3://b/p/2024/publish/_run/mosaic") == (
        "../../T/CLASS.tiff"
    )
