"""What the map endpoints know of the project: its config, tile grid, published seasons and imagery.

One :class:`MapsCatalog` per app (``app.state.maps``, made on first use from the service settings'
``config``). It reads only what the pipeline stored, through :class:`lcms_tasks.storage.Storage`:

* a season's **published maps**: the publish markers of its tile folders
  (:func:`lcms_tasks.publish.tiles.tile_from_marker`: footprint, bands, legend, transition codes),
  turned into a :class:`~lcms_service.tiles.FootprintIndex`;
* a season's **imagery**: the imagery markers (:class:`lcms_tasks.publish.imagery.ImageryTile`),
  with the dates each tile has;
* a **pixel**: its tile from the grid (lon/lat converted to each zone's CRS), class and confidence
  from the published COGs, the NDVI series from the features EOPatch (read by byte ranges: one
  value per date, never the whole array).

Season indexes are cached per season and rebuilt when the season's folder changes: on local disk a
tile folder is published by renaming it into place, which changes the season folder's modification
time (one ``stat`` per request tells); on S3 they are re-read at most every ``remote_ttl_s`` seconds.
Errors: :class:`MapsNotFoundError` (the API's 404, naming what is unknown; also when the service has
no project config at all) and :class:`MapsUnavailableError` (503: a project config that does not load).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from lcms_service.tiles import GDAL_ENV, REMOTE_THREADS, FootprintIndex

if TYPE_CHECKING:
    from lcms_tasks.config import ProjectConfig, SeasonConfig
    from lcms_tasks.grid import Tile
    from lcms_tasks.publish import PublishedTile
    from lcms_tasks.publish.imagery import ImageryTile
    from lcms_tasks.publish.tiles import TransitionCode
    from lcms_tasks.storage import Storage

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The feature whose series the pixel endpoint returns.
NDVI = "NDVI"


class MapsError(LookupError):
    """Base of the map endpoints' errors; the message is the answer's ``detail``."""


class MapsNotFoundError(MapsError):
    """An unknown or unpublished season, band, date, or a point outside every tile (404)."""


class MapsUnavailableError(MapsError):
    """The service has no usable project config (503)."""


@dataclass(frozen=True)
class PublishedSeason:
    """The published tiles of a season and what their markers say they hold."""

    season: str
    tiles: dict[str, PublishedTile]
    index: FootprintIndex
    legend: list[dict[str, Any]]
    codes: list[TransitionCode]


@dataclass(frozen=True)
class ImagerySeason:
    """The imagery tiles of a season and the acquisition dates they have."""

    season: str
    tiles: dict[str, ImageryTile]
    index: FootprintIndex
    dates: list[str]


@dataclass
class _Entry:
    token: object
    value: Any


@dataclass
class _Grid:
    """The project's tiles by zone, for finding the tile under a point."""

    tiles: dict[str, Tile]
    by_epsg: dict[int, set[tuple[int, int]]] = field(default_factory=dict)
    side: dict[int, float] = field(default_factory=dict)


class MapsCatalog:
    """The project of ``config_path`` as the map endpoints see it (thread-safe; caches per season)."""

    def __init__(self, config_path: Path | str | None, *, remote_ttl_s: float = 60.0) -> None:
        self.config_path = Path(config_path) if config_path else None
        self.remote_ttl_s = remote_ttl_s
        self._lock = threading.RLock()
        self._config: ProjectConfig | None = None
        self._storage: Storage | None = None
        self._cache: dict[tuple[str, str], _Entry] = {}
        self._grid: _Grid | None = None
        self._bounds: list[float] | None = None

    # -- config and storage --------------------------------------------------------------------------
    @property
    def configured(self) -> bool:
        return self.config_path is not None

    @property
    def config(self) -> ProjectConfig:
        """The project config (loaded once; ``MapsUnavailableError`` when there is none or it does not load)."""
        if self._config is None:
            from lcms_tasks.errors import ConfigError

            if self.config_path is None:  # no project: every season, band and place is unknown
                raise MapsNotFoundError("the service has no project (set LCMS_CONFIG to the project's config)")
            with self._lock:
                if self._config is None:
                    from lcms_tasks.config import load_config

                    try:
                        self._config = load_config(self.config_path, check_files=False)
                    except ConfigError as err:
                        raise MapsUnavailableError(f"the project config cannot be used: {err}") from err
        return self._config

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            from lcms_tasks.storage import Storage

            cfg = self.config
            self._storage = Storage(
                cfg.storage_root,
                s3_endpoint_url=cfg.storage.s3_endpoint_url,
                compress_arrays=cfg.storage.compress_arrays,
            )
        return self._storage

    @property
    def project(self) -> str:
        return self.config.project

    @property
    def remote(self) -> bool:
        return self.storage.scheme != "file"

    @property
    def threads(self) -> int:
        """COGs read at once for one web tile."""
        return REMOTE_THREADS if self.remote else 1

    @property
    def gdal_env(self) -> dict[str, Any]:
        """GDAL settings of every read (with the S3 endpoint, when one is configured)."""
        env = dict(GDAL_ENV)
        endpoint = self.config.storage.s3_endpoint_url if self.remote else None
        if endpoint:
            from urllib.parse import urlsplit

            parts = urlsplit(endpoint)
            env.update(
                AWS_S3_ENDPOINT=parts.netloc or parts.path,
                AWS_HTTPS="YES" if parts.scheme == "https" else "NO",
                AWS_VIRTUAL_HOSTING="FALSE",
            )
        return env

    def gdal_path(self, uri: str) -> str:
        """What GDAL opens for a storage URI: the local path, or ``/vsis3/bucket/key``."""
        if uri.startswith("s3://"):
            return "/vsis3/" + uri[len("s3://") :]
        return str(self.storage.local_path(uri))

    def season(self, season_id: str) -> SeasonConfig:
        """The season ``season_id`` of the project (``MapsNotFoundError`` naming it and the known ones)."""
        cfg = self.config
        if season_id not in cfg.seasons:
            raise MapsNotFoundError(
                f"unknown season {season_id!r}: project {cfg.project} has {', '.join(cfg.season_ids_ordered())}"
            )
        return cfg.seasons[season_id]

    # -- caching -------------------------------------------------------------------------------------
    def _token(self, uri: str) -> object:
        """Changes when the folder at ``uri`` gets or loses a tile folder (local), or every TTL (S3)."""
        if self.remote:
            return int(time.monotonic() // self.remote_ttl_s) if self.remote_ttl_s > 0 else 0
        try:
            return self.storage.local_path(uri).stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _cached(self, key: tuple[str, str], uri: str, build: Callable[[], T]) -> T:
        token = self._token(uri)
        entry = self._cache.get(key)
        if entry is not None and entry.token == token:
            return entry.value
        with self._lock:
            entry = self._cache.get(key)
            if entry is None or entry.token != token:
                entry = _Entry(token, build())
                self._cache[key] = entry
        return entry.value

    def _markers(self, stage_uri: str, tile_ids: Iterable[str]) -> list[tuple[str, dict[str, Any]]]:
        """(uri, marker) of each tile folder below ``stage_uri`` (in parallel on S3)."""
        uris = [f"{stage_uri}/{t}" for t in sorted(tile_ids)]
        if not self.remote:
            return [(u, self.storage.read_marker(u)) for u in uris]
        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(zip(uris, pool.map(self.storage.read_marker, uris), strict=True))

    # -- published maps and imagery ------------------------------------------------------------------
    def products(self) -> list[str]:
        """The project's map products; the first is the primary one (changes, validation)."""
        return self.config.product_names()

    def product_name(self, product: str | None) -> str:
        """``product``, or the primary product for None (``MapsNotFoundError`` naming the products if unknown)."""
        names = self.products()
        if product is None or product == "":
            return names[0]
        if product not in names:
            raise MapsNotFoundError(f"unknown product {product!r}: project {self.project} has {', '.join(names)}")
        return product

    def published(self, season_id: str, product: str | None = None) -> PublishedSeason:
        """The season's published tiles of ``product`` (default: the primary one); ``MapsNotFoundError`` for
        an unknown season or product; may hold no tile."""
        self.season(season_id)
        name = self.product_name(product)
        parts = ["publish"] if name == self.products()[0] else ["products", name, "publish"]
        uri = self.storage.uri(self.project, season_id, *parts)
        return self._cached((f"publish:{name}", season_id), uri, lambda: self._build_published(season_id, uri, name))

    def _build_published(self, season_id: str, uri: str, product: str | None = None) -> PublishedSeason:
        from lcms_tasks.publish.tiles import TransitionCode, tile_from_marker

        t0 = time.perf_counter()
        tiles = [tile_from_marker(u, m) for u, m in self._markers(uri, self.storage.complete_children(uri))]
        index = FootprintIndex.from_footprints((t.tile_id, self.gdal_path(t.uri), t.footprint_wgs84, ()) for t in tiles)
        first = tiles[0].meta if tiles else {}
        legend = list(
            first.get("legend") or [{"id": c.id, "name": c.name, "color": c.color} for c in self.legend(product)]
        )
        codes = [TransitionCode.from_dict(d) for d in first.get("transition_codes", [])] if tiles else []
        log.info(
            "maps: season %s: %d published tile(s) indexed in %.3f s", season_id, len(tiles), time.perf_counter() - t0
        )
        return PublishedSeason(season_id, {t.tile_id: t for t in tiles}, index, legend, codes)

    def published_season(self, season_id: str, product: str | None = None) -> PublishedSeason:
        """As :meth:`published`, ``MapsNotFoundError`` when no tile of the season is published."""
        season = self.published(season_id, product)
        if not season.tiles:
            which = "" if product in (None, "", self.products()[0]) else f" {product} map"
            raise MapsNotFoundError(
                f"season {season_id!r} of project {self.project} is not published{which} (no published tile)"
            )
        return season

    def imagery(self, season_id: str) -> ImagerySeason:
        """The season's imagery tiles (``MapsNotFoundError`` for an unknown season; may hold no tile)."""
        from lcms_tasks.publish.imagery import NAME

        self.season(season_id)
        uri = self.storage.stage_uri(self.project, season_id, NAME)
        return self._cached(("imagery", season_id), uri, lambda: self._build_imagery(season_id, uri))

    def _build_imagery(self, season_id: str, uri: str) -> ImagerySeason:
        from lcms_tasks.publish.imagery import ImageryTile

        tiles = [ImageryTile.from_marker(u, m) for u, m in self._markers(uri, self.storage.complete_children(uri))]
        index = FootprintIndex.from_footprints(
            (t.tile_id, self.gdal_path(t.uri), t.footprint_wgs84, t.dates) for t in tiles
        )
        return ImagerySeason(season_id, {t.tile_id: t for t in tiles}, index, index.dates())

    def imagery_season(self, season_id: str) -> ImagerySeason:
        """As :meth:`imagery`, ``MapsNotFoundError`` when the season has no imagery."""
        season = self.imagery(season_id)
        if not season.tiles:
            raise MapsNotFoundError(f"season {season_id!r} of project {self.project} has no published imagery")
        return season

    # -- project description -------------------------------------------------------------------------
    def legend(self, product: str | None = None) -> list[Any]:
        """The legend of ``product`` (default: the primary one)."""
        return list(self.config.for_product(self.product_name(product)).legend())

    def bounds(self) -> list[float]:
        """The AOI's bounds in EPSG:4326 ([west, south, east, north])."""
        if self._bounds is None:
            from lcms_tasks.grid import load_aoi

            cfg = self.config
            try:
                aoi = load_aoi(cfg, config_path=str(self.config_path))
            except Exception as err:  # an AOI that does not open must not take the other endpoints down
                log.warning(
                    "maps: the AOI of project %s cannot be read (%s); bounds of the published tiles", cfg.project, err
                )
                self._bounds = self._published_bounds()
            else:
                self._bounds = [round(float(v), 7) for v in aoi.to_crs(4326).total_bounds]
        return self._bounds

    def _published_bounds(self) -> list[float]:
        boxes = [self.published(s).index.bounds for s in self.config.seasons if self.published(s).tiles]
        if not boxes:
            return [-180.0, -90.0, 180.0, 90.0]
        return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]

    def transitions(self) -> list[TransitionCode]:
        """The CHANGE codes: as the latest published season has them, else as the config defines them."""
        for season_id in reversed(self.config.season_ids_ordered()):
            published = self.published(season_id)
            if published.codes:
                return published.codes
        from lcms_tasks.context import RunContext
        from lcms_tasks.stages.publish import transition_codes

        return transition_codes(RunContext.create(self.config, run_id="service"))

    # -- the tile under a point ----------------------------------------------------------------------
    def grid(self) -> _Grid:
        if self._grid is None:
            from lcms_tasks.errors import ConfigError
            from lcms_tasks.grid import project_tiles

            with self._lock:
                if self._grid is None:
                    try:
                        tiles = project_tiles(self.config)
                    except ConfigError as err:
                        raise MapsUnavailableError(f"the project's tile grid cannot be made: {err}") from err
                    grid = _Grid({t.id: t for t in tiles})
                    for t in tiles:
                        grid.by_epsg.setdefault(t.epsg, set()).add((t.col, t.row))
                        grid.side[t.epsg] = t.side_m
                    self._grid = grid
        return self._grid

    def locate(self, lon: float, lat: float) -> tuple[Tile, float, float]:
        """The project tile containing lon/lat and the point in its CRS (``MapsNotFoundError`` outside every tile).

        Near a zone boundary the tiles of two zones may both contain the point: the point's own UTM
        zone wins.
        """
        from lcms_tasks.grid import utm_epsg

        grid = self.grid()
        own = utm_epsg(lon, lat) if -180 <= lon <= 180 and -80 <= lat <= 84 else None
        for epsg in sorted(grid.by_epsg, key=lambda e: (e != own, e)):
            x, y = _transformer(epsg)(lon, lat)
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            side = grid.side[epsg]
            col, row = math.floor(x / side), math.floor(y / side)
            if (col, row) in grid.by_epsg[epsg]:
                return grid.tiles[f"{epsg}_{col}_{row}"], x, y
        raise MapsNotFoundError(f"lon {lon}, lat {lat} is outside every tile of project {self.project}")

    # -- pixel values --------------------------------------------------------------------------------
    def class_at(
        self, season_id: str, tile: Tile, x: float, y: float, product: str | None = None
    ) -> tuple[int | None, float | None] | None:
        """(class id, confidence 0..1) of the published map at x/y of ``tile`` (None: tile not published)."""
        import rasterio
        from rasterio.windows import Window

        published = self.published(season_id, product)
        pt = published.tiles.get(tile.id)
        if pt is None:
            return None
        row, col = _pixel(tile, x, y)
        values: dict[str, int | None] = {}
        with rasterio.Env(**self.gdal_env):
            for band in ("CLASS", "CONFIDENCE"):
                info = pt.bands.get(band)
                if info is None:
                    values[band] = None
                    continue
                with rasterio.open(self.gdal_path(f"{pt.uri}/{info.file}")) as src:
                    value = int(src.read(1, window=Window(col, row, 1, 1))[0, 0])
                values[band] = None if info.nodata is not None and value == info.nodata else value
        klass = values["CLASS"]
        confidence = values["CONFIDENCE"]
        if klass is None:
            return None, None
        return klass, (None if confidence is None else round(confidence / 100.0, 4))

    def ndvi_series(self, season_id: str, tile: Tile, x: float, y: float) -> list[tuple[str, float | None]]:
        """The NDVI of the pixel at each date of the features EOPatch ([] when there is none)."""
        uri = self.storage.tile_uri(self.project, season_id, "features", tile.id)
        if not self.storage.is_complete(uri):
            return []
        meta = self.storage.read_marker(uri)
        names = [str(n) for n in meta.get("feature_names", [])]
        if NDVI not in names:
            return []
        dates = self._timestamps(uri)
        row, col = _pixel(tile, x, y)
        values = self._npy_pixel(f"{uri}/data/FEATURES.npy", row, col, names.index(NDVI), len(names))
        if values is None:
            return []
        return [
            (d.date().isoformat(), None if not math.isfinite(float(v)) else round(float(v), 4))
            for d, v in zip(dates, values, strict=False)
        ]

    def _timestamps(self, uri: str) -> list[dt.datetime]:
        from lcms_tasks.errors import ArtefactMissingError

        try:
            raw = json.loads(self.storage.read_bytes(f"{uri}/timestamps.json"))
        except ArtefactMissingError:
            raw = json.loads(gzip.decompress(self.storage.read_bytes(f"{uri}/timestamps.json.gz")))
        return [dt.datetime.fromisoformat(str(s)) for s in raw]

    def _npy_pixel(self, uri: str, row: int, col: int, feature: int, n_features: int) -> np.ndarray | None:
        """``array[:, row, col, feature]`` of the (K, H, W, F) ``.npy`` at ``uri`` (None if absent)."""
        storage = self.storage
        if not self.remote:
            path = storage.local_path(uri)
            if path.is_file():
                array = np.load(path, mmap_mode="r")
                out = np.array(array[:, row, col, feature])
                del array
                return out
            packed = path.with_name(path.name + ".gz")
            if not packed.is_file():
                return None
            with gzip.open(packed, "rb") as fh:
                return np.asarray(np.load(fh, allow_pickle=False)[:, row, col, feature])
        return _s3_npy_pixel(storage, uri, row, col, feature)


def _s3_npy_pixel(storage: Storage, uri: str, row: int, col: int, feature: int) -> np.ndarray | None:
    """One value per date of a (K, H, W, F) ``.npy`` on S3, by byte ranges (None if the object is absent)."""
    key = uri[len(f"s3://{storage.bucket}/") :]

    def get(start: int, length: int) -> bytes:
        body = storage.s3.get_object(Bucket=storage.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}")
        return bytes(body["Body"].read())

    try:
        head = io.BytesIO(get(0, 4096))
    except Exception as err:
        if type(err).__name__ in ("NoSuchKey", "ClientError"):
            return None
        raise
    version = np.lib.format.read_magic(head)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = reader(head)
    offset = head.tell()
    k, h, w, f = (int(s) for s in shape)
    itemsize = np.dtype(dtype).itemsize
    starts = [offset + (((i * h + row) * w + col) * f + feature) * itemsize for i in range(k)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        chunks = list(pool.map(lambda s: get(s, itemsize), starts))
    return np.frombuffer(b"".join(chunks), dtype=dtype)


def _pixel(tile: Tile, x: float, y: float) -> tuple[int, int]:
    """(row, col) of the tile pixel containing x/y (in the tile's CRS), clipped into the tile."""
    min_x, _, _, max_y = tile.bounds
    row = min(max(math.floor((max_y - y) / tile.resolution), 0), tile.size_px - 1)
    col = min(max(math.floor((x - min_x) / tile.resolution), 0), tile.size_px - 1)
    return row, col


_TRANSFORMERS = threading.local()


def _transformer(epsg: int) -> Any:
    """lon/lat -> ``epsg``, cached per thread (pyproj transformers are costly to make, and not shared)."""
    cache: dict[int, Any] = getattr(_TRANSFORMERS, "by_epsg", None) or {}
    _TRANSFORMERS.by_epsg = cache
    if epsg not in cache:
        from pyproj import Transformer

        cache[epsg] = Transformer.from_crs(4326, epsg, always_xy=True).transform
    return cache[epsg]
