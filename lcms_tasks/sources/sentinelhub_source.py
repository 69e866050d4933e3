"""Sentinel-2 L2A from Sentinel Hub (or the Copernicus Data Space Ecosystem) through sentinelhub-py.

For one tile and season the source

1. searches the Catalog API (STAC, ``POST /api/v1/catalog/1.0.0/search``) for
   acquisitions over the tile's bbox with ``eo:cloud_cover <= max_cloud_coverage``;
2. merges acquisitions closer than ``time_difference_minutes`` to the previous
   one, or on the same UTC day (LCMS stores one image per date; adjacent orbits
   and tile overlaps give several "acquisitions" minutes apart), into one date;
3. requests each date from the Process API (``POST /api/v1/process``): the time
   window of the merged acquisitions, mosaicked by ``mosaicking_order``, over
   ``tile.bounds`` in the tile's CRS at ``tile.shape`` pixels. The evalscript
   returns one single-output UINT16 GeoTIFF with the 12 L2A bands as digital
   numbers (reflectance x 10000; L2A has no B10) followed by CLM, CLP, SCL and
   dataMask;
4. caches every date's response under ``$LCMS_CACHE_DIR`` (default
   ``<temp dir>/lcms-cache``) keyed by (tile, date, hash of the request URL and
   body), written atomically, so a retried task makes no Process API request for
   dates it already has.

Why one request per date rather than one multi-temporal evalscript: responses
stay small (16 bands x tile) whatever the season's length, a failed or throttled
request is retried alone, the cache works per date (a task that failed on date
40 of 60 resumes there), and requests run in parallel up to
``max_parallel_requests``.

Errors and retries are sentinelhub-py's own, configured from this config:
HTTP 429 is retried honouring ``Retry-After`` (sentinelhub-py reads it in
milliseconds, as Sentinel Hub sends it), at most ``max_retries + 1`` attempts;
5xx responses, connection errors and timeouts are retried with exponential
backoff (``backoff_seconds``, x3 per attempt) at most ``max_retries + 1``
attempts; other 4xx are never retried. A rejected client (HTTP 401 on the token
or on a request) raises :class:`SentinelHubAuthError` at once.

Credentials come from :func:`lcms_tasks.sources.credentials.get_credentials`
(an Airflow connection in DAGs, ``SH_CLIENT_ID``/``SH_CLIENT_SECRET`` elsewhere),
never from the config; the secret is redacted from library logs.

This module stays cheap to import (the config schema imports it): sentinelhub,
tifffile and numpy work happens inside functions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from lcms_tasks.bands import S2_L2A_BANDS
from lcms_tasks.errors import StageError
from lcms_tasks.schema import StrictModel

if TYPE_CHECKING:
    import numpy as np

    from lcms_tasks.config import ProjectConfig
    from lcms_tasks.grid import Tile
    from lcms_tasks.sources import StreamedAcquisitions
    from lcms_tasks.sources.credentials import Credentials

LOGGER = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://services.sentinel-hub.com"
TOKEN_PATH = "/auth/realms/main/protocol/openid-connect/token"
CACHE_ENV = "LCMS_CACHE_DIR"

#: Sentinel-2 L2A bands in LCMS order.
L2A_BANDS: tuple[str, ...] = S2_L2A_BANDS
#: Mask layers requested after the bands, in this order.
MASK_LAYERS: tuple[str, ...] = ("CLM", "CLP", "SCL", "dataMask")


class SentinelHubSourceConfig(StrictModel):
    """Sentinel-2 L2A from Sentinel Hub's Catalog and Process APIs (sentinelhub-py)."""

    type: Literal["sentinelhub"] = Field("sentinelhub", description="Selects this source.")
    base_url: str = Field(
        DEFAULT_BASE_URL,
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="Service deployment, e.g. https://services.sentinel-hub.com or, for the Copernicus Data Space "
        "Ecosystem, https://sh.dataspace.copernicus.eu.",
    )
    token_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="OAuth2 token endpoint; None: base_url + '/auth/realms/main/protocol/openid-connect/token'. "
        "CDSE: https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token.",
    )
    collection: Literal["sentinel-2-l2a"] = Field(
        "sentinel-2-l2a", description="Catalog/Process API collection (Sentinel-2 L2A, 12 bands: no B10)."
    )
    max_cloud_coverage: float = Field(
        0.8, ge=0.0, le=1.0, description="Skip acquisitions whose scene cloud cover (eo:cloud_cover) exceeds this."
    )
    time_difference_minutes: float = Field(
        120.0,
        ge=0.0,
        le=7 * 24 * 60,
        description="Acquisitions closer than this to the previous one (or on the same UTC day) are merged into "
        "one date, mosaicked by `mosaicking_order`.",
    )
    mosaicking_order: Literal["leastCC", "mostRecent", "leastRecent"] = Field(
        "leastCC", description="Which acquisition wins where merged acquisitions overlap."
    )
    scl_cloud_classes: tuple[int, ...] = Field(
        (3, 8, 9, 10),
        description="Scene classification (SCL) classes added to the cloud mask CLM: 3 cloud shadow, 8/9 cloud "
        "medium/high probability, 10 thin cirrus. Empty: CLM alone.",
    )
    max_retries: int = Field(
        5, ge=0, le=20, description="Retries of a request after HTTP 429, 5xx, connection errors or timeouts."
    )
    backoff_seconds: float = Field(
        2.0,
        ge=0.0,
        le=600.0,
        description="Wait before the first retry of a 5xx/timeout (x3 each further retry); also the wait after a "
        "429 without Retry-After.",
    )
    timeout_seconds: float = Field(120.0, gt=0.0, le=3600.0, description="Timeout of one HTTP request.")
    max_parallel_requests: int = Field(4, ge=1, le=32, description="Process API requests in flight per tile.")
    max_request_px: int = Field(
        2500, ge=8, le=2500, description="Largest tile side (pixels) requested at once (Process API limit: 2500)."
    )
    airflow_conn_id: str = Field(
        "sentinel_hub_default",
        min_length=1,
        description="Airflow connection holding the OAuth client (login = client id, password = client secret); "
        "outside Airflow SH_CLIENT_ID/SH_CLIENT_SECRET are used.",
    )
    use_cache: bool = Field(
        True, description="Cache each date's response under $LCMS_CACHE_DIR so a retried task does not download again."
    )

    def resolved_token_url(self) -> str:
        """The token endpoint: ``token_url`` or the default under ``base_url``."""
        return self.token_url or self.base_url.rstrip("/") + TOKEN_PATH


class SentinelHubError(StageError):
    """Sentinel Hub refused or failed a request (the message names the tile and the HTTP status)."""


class SentinelHubAuthError(SentinelHubError):
    """Sentinel Hub rejected the OAuth client (HTTP 401)."""


# ------------------------------------------------------------------------------------------------ pure helpers


def merge_acquisitions(times: list[dt.datetime], max_gap: dt.timedelta) -> list[list[dt.datetime]]:
    """Group sorted acquisition times: a time joins the current group if it is at most ``max_gap`` after the
    previous one or on the group's first UTC day. Returns the groups in time order."""
    groups: list[list[dt.datetime]] = []
    for t in sorted(set(times)):
        if groups and (t - groups[-1][-1] <= max_gap or t.date() == groups[-1][0].date()):
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


def evalscript(bands: tuple[str, ...] = L2A_BANDS) -> str:
    """Evalscript returning ``bands`` as digital numbers then CLM, CLP, SCL, dataMask, all UINT16, one output."""
    layers = [*bands, *MASK_LAYERS]
    return (
        "//VERSION=3\n"
        "function setup() {\n"
        "  return {\n"
        f"    input: [{{bands: {json.dumps(layers)}, units: {json.dumps(['DN'] * len(layers))}}}],\n"
        f'    output: {{id: "default", bands: {len(layers)}, sampleType: "UINT16"}},\n'
        '    mosaicking: "SIMPLE"\n'
        "  };\n"
        "}\n"
        "function evaluatePixel(s) {\n"
        f"  return [{', '.join('s.' + name for name in layers)}];\n"
        "}\n"
    )


def request_hash(url: str, payload: dict[str, Any]) -> str:
    """Stable hash of a request (URL and JSON body): the cache key of its response."""
    text = json.dumps({"url": url, "payload": payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def decode_tiff(content: bytes, height: int, width: int, n_layers: int) -> np.ndarray:
    """A Process API GeoTIFF as (height, width, n_layers); ``ValueError`` if it has another shape."""
    import numpy as np
    import tifffile

    with tifffile.TiffFile(io.BytesIO(content)) as tif:
        series = tif.series[0]
        array = series.asarray()
        axes = series.axes
    if array.ndim == 2:
        array = array[..., None]
    elif array.ndim == 3 and not axes.endswith("S"):  # planar (band-sequential) layout
        array = np.moveaxis(array, 0, -1)
    if array.shape != (height, width, n_layers):
        raise ValueError(f"expected a ({height}, {width}, {n_layers}) image, got shape {array.shape} (axes {axes})")
    return array


def split_layers(
    stack: np.ndarray, scl_cloud_classes: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(T, H, W, 12 + 4) UINT16 stacks -> bands uint16, data mask, cloud mask, cloud probability (0..100 uint8).

    No-data pixels (dataMask 0) get DN 0, no cloud and probability 0; the cloud mask is CLM == 1, plus the
    SCL classes given, inside the data.
    """
    import numpy as np

    n_bands = stack.shape[-1] - len(MASK_LAYERS)
    bands = stack[..., :n_bands].astype(np.uint16, copy=True)
    clm, clp, scl, data = (stack[..., n_bands + i] for i in range(len(MASK_LAYERS)))
    data_mask = data == 1
    cloud = clm == 1
    if scl_cloud_classes:
        cloud |= np.isin(scl, np.asarray(scl_cloud_classes, dtype=scl.dtype))
    cloud &= data_mask
    probability = np.rint(np.minimum(clp, 255).astype(np.float32) * (100.0 / 255.0)).astype(np.uint8)
    probability[~data_mask] = 0
    bands[~data_mask] = 0
    return bands, data_mask, cloud, probability


def cache_root() -> Path:
    """``$LCMS_CACHE_DIR`` or ``<system temp dir>/lcms-cache``."""
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "lcms-cache")


def _write_atomic(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------- the source


@dataclass
class _DateRequest:
    """One merged date: its Process API download request and cache file."""

    date: dt.date
    times: list[dt.datetime]
    download: Any  # sentinelhub.DownloadRequest
    cache_path: Path


class SentinelHubSource:
    """Downloads a tile's season of Sentinel-2 L2A from Sentinel Hub."""

    source_name = "sentinelhub"

    def __init__(self, config: ProjectConfig | SentinelHubSourceConfig) -> None:
        src = config if isinstance(config, SentinelHubSourceConfig) else config.source
        if not isinstance(src, SentinelHubSourceConfig):
            raise TypeError(f"SentinelHubSource needs a sentinelhub source config, got {src.type!r}")
        self.options = src

    # -- credentials and errors -------------------------------------------------------------------------

    def _credentials(self) -> Credentials:
        from lcms_tasks.sources.credentials import get_credentials

        return get_credentials(self.options.airflow_conn_id)

    def _sh_config(self, creds: Credentials) -> Any:
        from sentinelhub import SHConfig

        o = self.options
        return SHConfig(
            use_defaults=True,  # never read or write ~/.config/sentinelhub/config.toml
            sh_client_id=creds.client_id,
            sh_client_secret=creds.client_secret,
            sh_base_url=o.base_url.rstrip("/"),
            sh_token_url=o.resolved_token_url(),
            max_download_attempts=o.max_retries + 1,
            download_sleep_time=o.backoff_seconds,
            download_timeout_seconds=o.timeout_seconds,
            max_retries=o.max_retries + 1,  # attempts allowed while the service answers 429
        )

    def _auth_error(self, creds: Credentials, where: str) -> SentinelHubAuthError:
        return SentinelHubAuthError(
            f"Sentinel Hub rejected the credentials (HTTP 401) for client id {creds.client_id} ({where}); "
            f"check SH_CLIENT_ID/SH_CLIENT_SECRET or the Airflow connection {self.options.airflow_conn_id} "
            f"(credentials came from the {creds.origin})"
        )

    def _service_errors(self, creds: Credentials, what: str) -> contextlib.AbstractContextManager[None]:
        """Translate sentinelhub-py/oauthlib failures into LCMS errors naming ``what`` (never the secret)."""
        from lcms_tasks.sources.sh_errors import sentinelhub_errors

        return sentinelhub_errors(
            what,
            error=SentinelHubError,
            auth_error=lambda doing: self._auth_error(creds, doing),
            token_url=self.options.resolved_token_url(),
            max_retries=self.options.max_retries,
        )

    # -- catalog ------------------------------------------------------------------------------------------

    def search(self, sh_config: Any, tile: Tile, start: dt.date, end: dt.date) -> list[dt.datetime]:
        """UTC acquisition times over ``tile`` from ``start`` to ``end`` (inclusive) below the cloud cover limit."""
        from pyproj import Transformer
        from sentinelhub import CRS, BBox, SentinelHubCatalog
        from sentinelhub.time_utils import parse_time

        catalog = SentinelHubCatalog(config=sh_config)
        # The catalog wants WGS 84; transform here (densified edges) rather than through sentinelhub's
        # BBox.transform_bounds, which uses the deprecated shapely.ops.transform.
        to_wgs84 = Transformer.from_crs(tile.epsg, 4326, always_xy=True)
        bbox = BBox(to_wgs84.transform_bounds(*tile.bounds, densify_pts=21), crs=CRS.WGS84)
        t0 = dt.datetime.combine(start, dt.time.min, tzinfo=dt.UTC)
        t1 = dt.datetime.combine(end, dt.time.max, tzinfo=dt.UTC)
        results = catalog.search(
            self.options.collection,
            bbox=bbox,
            time=(t0, t1),
            filter=f"eo:cloud_cover <= {self.options.max_cloud_coverage * 100:g}",
            fields={"include": ["id", "properties.datetime", "properties.eo:cloud_cover"], "exclude": []},
        )
        times: list[dt.datetime] = []
        for feature in results:
            t = parse_time(feature["properties"]["datetime"], force_datetime=True)
            t = t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)
            times.append(t)
        return sorted(times)

    # -- process ------------------------------------------------------------------------------------------

    def _date_requests(self, sh_config: Any, tile: Tile, groups: list[list[dt.datetime]]) -> list[_DateRequest]:
        from sentinelhub import CRS, BBox, DataCollection, MimeType, MosaickingOrder, SentinelHubRequest

        o = self.options
        script = evalscript()
        bbox = BBox(tile.bounds, crs=CRS(tile.epsg))
        height, width = tile.shape
        pad = dt.timedelta(minutes=1)
        root = cache_root() / "sentinelhub" / tile.id
        out = []
        for times in groups:
            # A plain dict, not sentinelhub's InputDataDict: that one carries the collection's default service URL
            # (services.sentinel-hub.com) which would override base_url.
            data = dict(
                SentinelHubRequest.input_data(
                    DataCollection.SENTINEL2_L2A,
                    time_interval=(times[0] - pad, times[-1] + pad),
                    maxcc=o.max_cloud_coverage,
                    mosaicking_order=MosaickingOrder(o.mosaicking_order),
                    other_args={"processing": {"harmonizeValues": True}},
                )
            )
            request = SentinelHubRequest(
                evalscript=script,
                input_data=[data],
                responses=[SentinelHubRequest.output_response("default", MimeType.TIFF)],
                bbox=bbox,
                size=(width, height),
                config=sh_config,
            )
            download = request.download_list[0]
            digest = request_hash(str(download.url), download.post_values or {})
            date = times[0].date()
            out.append(_DateRequest(date, times, download, root / f"{date.isoformat()}_{digest[:20]}.tif"))
        return out

    def _download(self, sh_config: Any, item: _DateRequest) -> bytes | Path:
        """The response of one date: its cache file when caching (memory holds one date at a time), else bytes."""
        from sentinelhub import SentinelHubDownloadClient

        client = SentinelHubDownloadClient(config=sh_config, default_retry_time=self.options.backoff_seconds)
        (response,) = client.download([item.download], max_threads=1, decode_data=False)
        content: bytes = response.content
        if self.options.use_cache:
            _write_atomic(item.cache_path, content)
            return item.cache_path
        return content

    def _download_all(self, sh_config: Any, items: list[_DateRequest], indices: list[int]) -> dict[int, bytes | Path]:
        """Download ``items[indices]`` in parallel; on the first failure cancel what has not started and raise it."""
        pool = ThreadPoolExecutor(max_workers=min(self.options.max_parallel_requests, len(indices)))
        futures = {pool.submit(self._download, sh_config, items[i]): i for i in indices}
        out: dict[int, bytes | Path] = {}
        try:
            for future in as_completed(futures):
                out[futures[future]] = future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # running downloads finish and are cached
            raise
        pool.shutdown(wait=True)
        return out

    def _cached(self, item: _DateRequest, height: int, width: int) -> Path | None:
        """The date's cache file if it holds a readable response of the expected shape."""
        if not (self.options.use_cache and item.cache_path.is_file()):
            return None
        content = item.cache_path.read_bytes()
        # Decoded once here to validate it (a corrupt entry is downloaded again) and again when streamed:
        # decoding is cheap next to a download, and holding every decoded date would cost the season's cube.
        try:
            decode_tiff(content, height, width, len(L2A_BANDS) + len(MASK_LAYERS))
        except Exception as exc:
            LOGGER.warning("ignoring unreadable cached response %s (%s)", item.cache_path, exc)
            with contextlib.suppress(OSError):
                item.cache_path.unlink()
            return None
        return item.cache_path

    def fetch(self, tile: Tile, season_id: str, start: dt.date, end: dt.date) -> StreamedAcquisitions:
        """The season's L2A acquisitions of ``tile``, date by date: bands (H, W, 12) uint16 DN and masks (H, W).

        Every date is downloaded (or found in the cache) before this returns, so service errors surface
        here; the responses are decoded one date at a time while the caller reads them.
        """
        from lcms_tasks.bands import S2_QUANTIFICATION
        from lcms_tasks.sources import StreamedAcquisitions

        o = self.options
        height, width = tile.shape
        if max(height, width) > o.max_request_px:
            raise SentinelHubError(
                f"tile {tile.id}: {width}x{height} px exceeds the Process API request limit of {o.max_request_px} px "
                "per side; use a smaller grid.tile_size_px"
            )
        creds = self._credentials()
        sh_config = self._sh_config(creds)
        where = f"tile {tile.id}, season {season_id}"
        with self._service_errors(creds, f"catalog search ({where})"):
            times = self.search(sh_config, tile, start, end)
        groups = merge_acquisitions(times, dt.timedelta(minutes=o.time_difference_minutes))
        items = self._date_requests(sh_config, tile, groups)
        contents: dict[int, bytes | Path] = {}
        for i, item in enumerate(items):
            cached = self._cached(item, height, width)
            if cached is not None:
                contents[i] = cached
        missing = [i for i in range(len(items)) if i not in contents]
        LOGGER.info(
            "%s: %d acquisitions (cloud cover <= %g%%) -> %d dates; %d cached, %d to download from %s",
            where,
            len(times),
            o.max_cloud_coverage * 100,
            len(items),
            len(contents),
            len(missing),
            o.base_url,
        )
        if missing:
            with self._service_errors(creds, f"process request ({where})"):
                contents.update(self._download_all(sh_config, items, missing))
        return StreamedAcquisitions(
            dates=[item.date for item in items],
            shape=(height, width),
            slabs=self._decoded(contents, items, (height, width), where),
            band_names=L2A_BANDS,
            quantification=S2_QUANTIFICATION,
            source_name=self.source_name,
        )

    def _decoded(
        self, contents: dict[int, bytes | Path], items: list[_DateRequest], shape: tuple[int, int], where: str
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Decode the responses (bytes or cache files) in date order, releasing each one once decoded."""
        n_layers = len(L2A_BANDS) + len(MASK_LAYERS)
        for i, item in enumerate(items):
            content = contents.pop(i)
            try:
                if isinstance(content, Path):
                    content = content.read_bytes()
            except OSError as exc:
                raise SentinelHubError(f"{where}, date {item.date}: cached response is gone: {exc}") from exc
            try:
                layers = decode_tiff(content, *shape, n_layers)
            except ValueError as exc:
                raise SentinelHubError(f"{where}, date {item.date}: unexpected Process API response: {exc}") from exc
            bands, data_mask, cloud, probability = split_layers(layers[None], self.options.scl_cloud_classes)
            yield bands[0], data_mask[0], cloud[0], probability[0]
