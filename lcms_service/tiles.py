"""Raster tiles of the published maps and imagery: rio-tiler mosaics over a season's tile COGs, as PNGs.

A season is published as one folder per project tile (``publish/<tile>/CLASS.tiff`` ..., and
``imagery/<tile>/composite.tiff``, ``imagery/<tile>/dates/<date>.tiff``), each in its tile's UTM zone.
A web map tile (WebMercatorQuad) can cover several of them, in several zones: :class:`SeasonMosaic`
is a rio-tiler mosaic backend whose assets are those folders, found through a :class:`FootprintIndex`
(an STRtree of the tiles' WGS84 footprints, which the publish markers carry), read with rio-tiler's
``Reader`` (each COG warped to Web Mercator on the fly, overviews used at small zooms) and merged
with rio-tiler's mosaic reader (first asset with data wins).

Rendering (:func:`render_tile`): categorical bands with a 256-entry colour table (class colours of the
legend, transition colours for CHANGE; 0 and no-data transparent), the confidence as grey levels
(black 0 % to white 100 %), imagery as 8-bit RGB from a fixed rescale of the digital numbers (true colour
B04/B03/B02, false colour B08/B04/B03). Categorical bands and imagery are resampled with nearest
neighbour, so a rendered pixel is the value of the COG pixel its centre falls in.

A web tile whose bounds meet no published footprint, or meet footprints but no raster, is
:class:`NoDataError` (the API answers 204); one that meets the rasters is a PNG, transparent where they
hold no data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import attr
import morecantile
import numpy as np
from rasterio.crs import CRS
from rio_tiler.constants import WGS84_CRS
from rio_tiler.errors import EmptyMosaicError, NoAssetFoundError, TileOutsideBounds
from rio_tiler.io import Reader
from rio_tiler.models import ImageData
from rio_tiler.mosaic.backend import BaseBackend

log = logging.getLogger(__name__)

#: The one tile matrix set served.
WEB_MERCATOR = morecantile.tms.get("WebMercatorQuad")
TMS_ID = "WebMercatorQuad"
#: Side of a rendered tile, px.
TILE_PX = 256
#: Deepest zoom served (WebMercatorQuad goes to 24; 10 m pixels are ~40 screen pixels wide at 22).
MAX_ZOOM = 24
#: Threads reading the COGs of one tile from object storage (S3), where each read waits on the network. On
#: local disk the reads are a few ms of CPU each and one thread is fastest: a thread pool per request costs
#: more than it saves, and the mosaic stops reading as soon as the tile is full.
REMOTE_THREADS = 8
#: GDAL settings of every read: no directory listing on open (one request less per file on S3), a block cache.
GDAL_ENV: dict[str, Any] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_CACHEMAX": 256,
    "VSI_CACHE": "TRUE",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
}

Render = Literal["true_color", "false_color"]
#: Band indexes (1-based, in the imagery COGs' B02, B03, B04, B08 order) of each imagery rendering.
RENDER_BANDS: dict[str, tuple[int, int, int]] = {"true_color": (3, 2, 1), "false_color": (4, 3, 2)}
#: Fixed digital-number ranges mapped to 0..255, per rendered band (reflectance x 10000): 0..0.3 for the
#: visible bands, 0..0.5 for the near infrared, which vegetation makes much brighter.
RENDER_RANGES: dict[str, tuple[tuple[float, float], ...]] = {
    "true_color": ((0.0, 3000.0), (0.0, 3000.0), (0.0, 3000.0)),
    "false_color": ((0.0, 5000.0), (0.0, 3000.0), (0.0, 3000.0)),
}

RGBA = tuple[int, int, int, int]
ColorTable = dict[int, RGBA]
TRANSPARENT: RGBA = (0, 0, 0, 0)


class NoDataError(LookupError):
    """The web tile meets no published raster of the season (the API answers 204)."""


# -- colours -----------------------------------------------------------------------------------------


def hex_rgba(color: str, alpha: int = 255) -> RGBA:
    """``#rrggbb`` (or ``#rgb``) as an RGBA tuple (``ValueError`` naming the colour if it is not one)."""
    c = color.strip().lstrip("#")
    if len(c) == 3:
        c = "".join(ch * 2 for ch in c)
    if len(c) != 6:
        raise ValueError(f"colour {color!r} is not #rrggbb")
    try:
        return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), alpha
    except ValueError:
        raise ValueError(f"colour {color!r} is not #rrggbb") from None


def color_table(colors: Mapping[int, str]) -> ColorTable:
    """A full 256-entry table (rio-tiler's fast lookup path): ``colors`` opaque, every other value transparent."""
    table: ColorTable = dict.fromkeys(range(256), TRANSPARENT)
    for value, color in colors.items():
        if 0 < int(value) < 256:  # 0 is no data / no change in every categorical band
            table[int(value)] = hex_rgba(color)
    return table


def confidence_table() -> ColorTable:
    """Percent 0..100 as grey levels, black (0 %) to white (100 %); 101..255 (no data) transparent.

    The viewer's legend draws the same ramp (a #000 -> #fff gradient).
    """
    table: ColorTable = dict.fromkeys(range(256), TRANSPARENT)
    for pct in range(101):
        grey = round(pct * 255 / 100)
        table[pct] = (grey, grey, grey, 255)
    return table


# -- the footprint index -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Asset:
    """One tile folder of a season: where its COGs are (a path GDAL opens) and where it lies."""

    tile_id: str
    folder: str
    footprint: Any  # shapely Polygon in WGS84
    dates: frozenset[str] = field(default_factory=frozenset)


class FootprintIndex:
    """The tile folders of a season, queried by WGS84 bounding box through an STRtree of their footprints."""

    def __init__(self, assets: Iterable[Asset]) -> None:
        from shapely import STRtree

        self.assets: list[Asset] = sorted(assets, key=lambda a: a.tile_id)
        self._tree = STRtree([a.footprint for a in self.assets])
        if self.assets:
            bounds = np.array([a.footprint.bounds for a in self.assets])
            self.bounds = (
                float(bounds[:, 0].min()),
                float(bounds[:, 1].min()),
                float(bounds[:, 2].max()),
                float(bounds[:, 3].max()),
            )
        else:
            self.bounds = (-180.0, -90.0, 180.0, 90.0)

    def __len__(self) -> int:
        return len(self.assets)

    @classmethod
    def from_footprints(cls, rows: Iterable[tuple[str, str, Mapping[str, Any], Iterable[str]]]) -> FootprintIndex:
        """From (tile id, folder, GeoJSON footprint in WGS84, dates) rows."""
        from shapely.geometry import shape

        return cls(Asset(tile_id, folder, shape(fp), frozenset(dates)) for tile_id, folder, fp, dates in rows)

    def query(self, west: float, south: float, east: float, north: float, *, date: str | None = None) -> list[Asset]:
        """The assets whose footprint meets the box (and that have ``date``, when given), in tile id order."""
        from shapely.geometry import box

        hits = self._tree.query(box(west, south, east, north), predicate="intersects")
        found = [self.assets[int(i)] for i in sorted(hits)]
        return [a for a in found if date is None or date in a.dates]

    def dates(self) -> list[str]:
        """Every date any asset has, sorted."""
        return sorted({d for a in self.assets for d in a.dates})


@attr.s
class SeasonMosaic(BaseBackend):
    """rio-tiler mosaic backend over a :class:`FootprintIndex`: the file ``filename`` of each tile folder.

    ``date`` restricts the assets to the folders that have that date (imagery).
    """

    # ``input`` (BaseBackend's first attribute) is the FootprintIndex.
    filename: str = attr.ib(default="")
    date: str | None = attr.ib(default=None)

    def __attrs_post_init__(self) -> None:
        index: FootprintIndex = self.input
        self.bounds = index.bounds
        self.crs = WGS84_CRS
        self.minzoom = 0
        self.maxzoom = MAX_ZOOM

    def _query(self, west: float, south: float, east: float, north: float) -> list[str]:
        index: FootprintIndex = self.input
        return [f"{a.folder}/{self.filename}" for a in index.query(west, south, east, north, date=self.date)]

    def assets_for_tile(self, x: int, y: int, z: int, **kwargs: Any) -> list[str]:
        b = self.tms.bounds(morecantile.Tile(x, y, z))
        return self._query(b.left, b.bottom, b.right, b.top)

    def assets_for_point(self, lng: float, lat: float, coord_crs: CRS | None = None, **kwargs: Any) -> list[str]:
        return self._query(lng, lat, lng, lat)

    def assets_for_bbox(
        self,
        xmin: float,
        ymin: float,
        xmax: float,
        ymax: float,
        coord_crs: CRS | None = None,
        **kwargs: Any,
    ) -> list[str]:
        return self._query(xmin, ymin, xmax, ymax)


# -- rendering ---------------------------------------------------------------------------------------


def read_tile(
    index: FootprintIndex,
    filename: str,
    x: int,
    y: int,
    z: int,
    *,
    indexes: Sequence[int] | int = 1,
    date: str | None = None,
    threads: int = 1,
    env: Mapping[str, Any] | None = None,
) -> ImageData:
    """The mosaic of ``filename`` over the season's tile folders for web tile z/x/y (``NoDataError`` outside them).

    ``threads``: COGs read at once (1 on local disk, :data:`REMOTE_THREADS` on object storage); ``env``:
    GDAL settings (default :data:`GDAL_ENV`).
    """
    import rasterio

    mosaic = SeasonMosaic(index, tms=WEB_MERCATOR, reader=Reader, filename=filename, date=date)
    try:
        with rasterio.Env(**(GDAL_ENV if env is None else env)):
            img, _ = mosaic.tile(
                x,
                y,
                z,
                tilesize=TILE_PX,
                indexes=indexes,
                resampling_method="nearest",
                reproject_method="nearest",
                threads=threads,
                allowed_exceptions=(TileOutsideBounds,),
            )
    except (NoAssetFoundError, EmptyMosaicError) as err:
        raise NoDataError(f"tile {z}/{x}/{y}: no published raster ({filename}) there") from err
    return img


def render_png(img: ImageData, *, colormap: ColorTable | None = None) -> bytes:
    """``img`` as a PNG (RGBA with a colour table; RGB + alpha from the mask otherwise)."""
    return bytes(img.render(img_format="PNG", colormap=colormap, ZLEVEL=3))


def render_categorical(
    index: FootprintIndex,
    filename: str,
    x: int,
    y: int,
    z: int,
    *,
    colormap: ColorTable,
    threads: int = 1,
    env: Mapping[str, Any] | None = None,
) -> bytes:
    """A PNG of a single-band uint8 map (``CLASS.tiff``, ``CHANGE.tiff``, ``CONFIDENCE.tiff``) through ``colormap``."""
    img = read_tile(index, filename, x, y, z, indexes=1, threads=threads, env=env)
    return render_png(img, colormap=colormap)


def render_imagery(
    index: FootprintIndex,
    filename: str,
    x: int,
    y: int,
    z: int,
    *,
    render: str,
    date: str | None = None,
    threads: int = 1,
    env: Mapping[str, Any] | None = None,
) -> bytes:
    """A PNG of imagery (``composite.tiff`` or ``dates/<date>.tiff``) as ``render`` (true or false colour)."""
    img = read_tile(index, filename, x, y, z, indexes=RENDER_BANDS[render], date=date, threads=threads, env=env)
    img.rescale(in_range=RENDER_RANGES[render])
    return render_png(img)


def tile_in_matrix(x: int, y: int, z: int) -> bool:
    """Whether z/x/y is a tile of WebMercatorQuad (``0 <= x, y < 2**z``, ``0 <= z <= MAX_ZOOM``)."""
    return 0 <= z <= MAX_ZOOM and 0 <= x < 2**z and 0 <= y < 2**z
