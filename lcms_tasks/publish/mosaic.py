"""Per-season mosaics and styles of the published COGs, for QGIS and GDAL.

Everything here is built from the published tiles' markers (:class:`~lcms_tasks.publish.PublishedTile`),
as text, so the season folder can live on local disk or S3 alike:

* a GDAL VRT mosaic per band and UTM zone (``<BAND>_<epsg>.vrt``) whose sources are the tiles' COGs,
  referenced by paths *relative to the VRT* (``../../<tile>/CLASS.tiff``): the folder opens in QGIS
  from wherever the storage root is mounted or copied, and GDAL reads it through ``/vsis3/`` too.
  rasterio does not expose ``gdalbuildvrt``, so :func:`build_vrt` writes the same XML (one
  ``SimpleSource`` per tile; tiles of a zone sit on one grid and never overlap). The categorical
  mosaics carry the legend as a GDAL colour table and category names; the COGs themselves have no
  palette (BYOC needs photometric MINISBLACK);
* QGIS styles (``.qml``): a paletted (unique values) renderer with the legend's colours and class
  names for CLASS, the transitions' colours and names for CHANGE, a 0-100 grey stretch for
  CONFIDENCE. A copy named like each VRT (``CLASS_32638.qml``) is applied by QGIS when it opens the
  VRT; ``CLASS.qml`` etc. serve for the per-tile COGs;
* QGIS colour map files (``CLASS_colormap.txt``, ``CHANGE_colormap.txt``: "Export/Load color map"
  format, ``value,R,G,B,A,label``).
"""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from lcms_tasks.errors import StageError

if TYPE_CHECKING:
    from lcms_tasks.config import LegendClass
    from lcms_tasks.publish import PublishedTile
    from lcms_tasks.publish.tiles import TransitionCode

#: QGIS version the styles declare (QGIS 3.x reads styles of any 3.x version).
QGIS_VERSION = "3.34.0-Prizren"
_QGIS_DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


@dataclass(frozen=True)
class StyleEntry:
    """One value of a categorical band with its colour (``#rrggbb``) and label."""

    value: int
    color: str
    label: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        c = self.color.lstrip("#")
        return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def class_entries(legend: Iterable[LegendClass]) -> list[StyleEntry]:
    """The legend's classes as style entries, by id."""
    return sorted((StyleEntry(c.id, c.color, c.name) for c in legend), key=lambda e: e.value)


def change_entries(codes: Iterable[TransitionCode], legend: Iterable[LegendClass]) -> list[StyleEntry]:
    """The transition codes as style entries, each drawn in the colour of the class changed into."""
    colors = {c.id: c.color for c in legend}
    return [StyleEntry(t.code, colors.get(t.to_id, "#ff00ff"), t.label) for t in codes]


# -- VRT mosaics -----------------------------------------------------------------------------------


def relative_href(target_uri: str, from_folder_uri: str) -> str:
    """``target_uri`` relative to the folder ``from_folder_uri`` (both under one storage root)."""
    return posixpath.relpath(urlparse(target_uri).path, urlparse(from_folder_uri).path)


def _grid(tiles: Sequence[PublishedTile]) -> tuple[float, float, float, int, int]:
    """(resolution, min x, max y, width px, height px) of the zone mosaic of ``tiles``."""
    resolutions = {float(t.meta["resolution"]) for t in tiles}
    if len(resolutions) != 1:
        raise StageError(
            f"tiles of EPSG:{tiles[0].epsg} have different resolutions {sorted(resolutions)}: one mosaic needs one grid"
        )
    res = resolutions.pop()
    min_x = min(t.bounds[0] for t in tiles)
    min_y = min(t.bounds[1] for t in tiles)
    max_x = max(t.bounds[2] for t in tiles)
    max_y = max(t.bounds[3] for t in tiles)
    return res, min_x, max_y, round((max_x - min_x) / res), round((max_y - min_y) / res)


def build_vrt(
    tiles: Sequence[PublishedTile],
    band: str,
    vrt_folder_uri: str,
    *,
    entries: Sequence[StyleEntry] | None = None,
    nodata_label: str = "no data",
) -> str:
    """GDAL VRT XML mosaicking ``band`` of ``tiles`` (one CRS); sources relative to ``vrt_folder_uri``.

    With ``entries`` the band gets a colour table (value -> colour, others transparent) and category names
    (``nodata_label`` for the no-data value).
    """
    from rasterio.crs import CRS

    if not tiles:
        raise ValueError(f"no tile to mosaic for band {band}")
    epsgs = {t.epsg for t in tiles}
    if len(epsgs) != 1:
        raise ValueError(f"one VRT mosaics one CRS, got EPSG {sorted(epsgs)}")
    res, min_x, max_y, width, height = _grid(tiles)
    info = tiles[0].bands[band]
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = CRS.from_epsg(tiles[0].epsg).to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(v) for v in (min_x, res, 0.0, max_y, 0.0, -res))
    vband = ET.SubElement(root, "VRTRasterBand", dataType="Byte", band="1")
    ET.SubElement(vband, "Description").text = band
    if info.nodata is not None:
        ET.SubElement(vband, "NoDataValue").text = str(info.nodata)
    if entries:
        ET.SubElement(vband, "ColorInterp").text = "Palette"
        by_value = {e.value: e for e in entries}
        table = ET.SubElement(vband, "ColorTable")
        names = ET.SubElement(vband, "CategoryNames")
        for value in range(max(by_value) + 1):
            entry = by_value.get(value)
            r, g, b = entry.rgb if entry else (0, 0, 0)
            ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4="255" if entry else "0")
            label = entry.label if entry else (nodata_label if value == info.nodata else "")
            ET.SubElement(names, "Category").text = label
    else:
        ET.SubElement(vband, "ColorInterp").text = "Gray"
    for tile in sorted(tiles, key=lambda t: t.tile_id):
        t_info = tile.bands[band]
        h, w = (int(v) for v in tile.meta["shape"])
        x_off = round((tile.bounds[0] - min_x) / res)
        y_off = round((max_y - tile.bounds[3]) / res)
        block = int(tile.meta.get("block_size", 1024))
        src = ET.SubElement(vband, "SimpleSource")
        ET.SubElement(src, "SourceFilename", relativeToVRT="1").text = relative_href(
            f"{tile.uri}/{t_info.file}", vrt_folder_uri
        )
        ET.SubElement(src, "SourceBand").text = "1"
        ET.SubElement(
            src,
            "SourceProperties",
            RasterXSize=str(w),
            RasterYSize=str(h),
            DataType="Byte",
            BlockXSize=str(block),
            BlockYSize=str(block),
        )
        ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
        ET.SubElement(src, "DstRect", xOff=str(x_off), yOff=str(y_off), xSize=str(w), ySize=str(h))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


# -- QGIS styles and colour maps -------------------------------------------------------------------


def _qgis_root() -> tuple[ET.Element, ET.Element]:
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="Symbology")
    pipe = ET.SubElement(root, "pipe")
    provider = ET.SubElement(pipe, "provider")
    # Categorical values must never be interpolated when QGIS zooms.
    ET.SubElement(
        provider,
        "resampling",
        enabled="false",
        zoomedInResamplingMethod="nearestNeighbour",
        zoomedOutResamplingMethod="nearestNeighbour",
        maxOversampling="2",
    )
    return root, pipe


def _min_max_origin(parent: ET.Element) -> None:
    origin = ET.SubElement(parent, "minMaxOrigin")
    for tag, text in (
        ("limits", "None"),
        ("extent", "WholeRaster"),
        ("statAccuracy", "Estimated"),
        ("cumulativeCutLower", "0.02"),
        ("cumulativeCutUpper", "0.98"),
        ("stdDevFactor", "2"),
    ):
        ET.SubElement(origin, tag).text = text


def _qgis_tail(root: ET.Element, pipe: ET.Element) -> str:
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(
        pipe,
        "huesaturation",
        saturation="0",
        grayscaleMode="0",
        colorizeOn="0",
        colorizeRed="255",
        colorizeGreen="128",
        colorizeBlue="128",
        colorizeStrength="100",
        invertColors="0",
    )
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(pipe, "resamplingStage").text = "resamplingFilter"
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    return _QGIS_DOCTYPE + ET.tostring(root, encoding="unicode") + "\n"


def qml_paletted(entries: Sequence[StyleEntry]) -> str:
    """A QGIS style drawing band 1 with a paletted (unique values) renderer of ``entries``."""
    root, pipe = _qgis_root()
    renderer = ET.SubElement(
        pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1", nodataColor=""
    )
    ET.SubElement(renderer, "rasterTransparency")
    _min_max_origin(renderer)
    palette = ET.SubElement(renderer, "colorPalette")
    for e in entries:
        ET.SubElement(palette, "paletteEntry", value=str(e.value), color=e.color.lower(), alpha="255", label=e.label)
    return _qgis_tail(root, pipe)


def qml_gray(minimum: float, maximum: float) -> str:
    """A QGIS style stretching band 1 in grey from ``minimum`` (black) to ``maximum`` (white)."""
    root, pipe = _qgis_root()
    renderer = ET.SubElement(
        pipe,
        "rasterrenderer",
        type="singlebandgray",
        grayBand="1",
        gradient="BlackToWhite",
        opacity="1",
        alphaBand="-1",
        nodataColor="",
    )
    ET.SubElement(renderer, "rasterTransparency")
    _min_max_origin(renderer)
    enhancement = ET.SubElement(renderer, "contrastEnhancement")
    ET.SubElement(enhancement, "minValue").text = f"{minimum:g}"
    ET.SubElement(enhancement, "maxValue").text = f"{maximum:g}"
    ET.SubElement(enhancement, "algorithm").text = "StretchToMinimumMaximum"
    return _qgis_tail(root, pipe)


def qgis_colormap(entries: Sequence[StyleEntry]) -> str:
    """A QGIS colour map file (paletted renderer, "Load color map from file"): ``value,R,G,B,A,label``."""
    lines = ["# QGIS Generated Color Map Export File", "INTERPOLATION:EXACT"]
    for e in entries:
        r, g, b = e.rgb
        lines.append(f"{e.value},{r},{g},{b},255,{e.label}")
    return "\n".join(lines) + "\n"


def write_season_mosaic(
    folder: Path,
    tiles: Sequence[PublishedTile],
    *,
    mosaic_uri: str,
    styles: Mapping[str, Sequence[StyleEntry] | None],
    confidence_range: tuple[float, float] = (0.0, 100.0),
    nodata_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write the VRTs (per band and zone), styles and colour maps into ``folder`` (which becomes ``mosaic_uri``).

    ``styles`` maps each band to its categorical entries (None: a continuous band, styled in grey over
    ``confidence_range``); ``nodata_labels`` names each band's no-data value in the VRT's categories
    (default "no data"). Returns ``{"vrt": {band: {epsg: file}}, "styles": [...], "colormaps": [...]}``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    nodata_labels = nodata_labels or {}
    by_zone: dict[int, list[PublishedTile]] = {}
    for tile in tiles:
        by_zone.setdefault(tile.epsg, []).append(tile)
    written: dict[str, Any] = {"vrt": {}, "styles": [], "colormaps": []}
    for band, entries in styles.items():
        qml = qml_paletted(entries) if entries else qml_gray(*confidence_range)
        (folder / f"{band}.qml").write_text(qml, encoding="utf-8")
        written["styles"].append(f"{band}.qml")
        if entries:
            (folder / f"{band}_colormap.txt").write_text(qgis_colormap(entries), encoding="utf-8")
            written["colormaps"].append(f"{band}_colormap.txt")
        for epsg, zone_tiles in sorted(by_zone.items()):
            name = f"{band}_{epsg}"
            (folder / f"{name}.vrt").write_text(
                build_vrt(
                    zone_tiles,
                    band,
                    mosaic_uri,
                    entries=entries or None,
                    nodata_label=nodata_labels.get(band, "no data"),
                ),
                encoding="utf-8",
            )
            (folder / f"{name}.qml").write_text(qml, encoding="utf-8")  # QGIS applies it when opening the VRT
            written["vrt"].setdefault(band, {})[str(epsg)] = f"{name}.vrt"
            written["styles"].append(f"{name}.qml")
    return written
