"""Registering a published season in a Sentinel Hub "Bring Your Own COG" (BYOC) collection.

The publish stage writes one folder per tile and season holding one COG per band (``CLASS.tiff``,
``CONFIDENCE.tiff``, ``CHANGE.tiff``; see :class:`lcms_tasks.publish.PublishedTile`). Sentinel Hub reads
such folders straight from S3 once they are registered as *tiles* of a BYOC collection.
:func:`register_season` does that through sentinelhub-py's :class:`sentinelhub.SentinelHubBYOC` (its download
client, OAuth session and retries: the code path production uses):

1. the collection (by name, or by id when ``collection`` is a UUID) is looked up in the account's collections
   (``GET /api/v1/byoc/collections``, every page) and created when absent (``POST``), its bands declared
   explicitly — source name (the ``(BAND)`` placeholder value, i.e. the band file's name without ``.tiff``), bit
   depth, sample format and no-data per band — so Sentinel Hub never auto-detects them from the first tile. An
   existing collection must be in the same bucket and declare the same bands; one without bands gets them
   (``PUT``);
2. the collection's tiles are listed (``GET .../tiles``, following ``viewtoken`` pages) and matched by path. A
   tile folder not yet registered is created (``POST .../tiles`` with ``path``, ``sensingTime`` and
   ``coverGeometry``); one already registered is updated (``PUT``) when its sensing time or cover geometry
   changed and re-ingested (``POST .../reingest``), since re-publishing replaced its files. A tile is never
   registered twice: if a create's response is lost and the retry answers 409, the tile is found by path;
3. with ``wait_for_ingestion`` the collection's tiles are polled until each of ours is ``INGESTED`` or
   ``FAILED`` (``WAITING``/``QUEUED``/``INGESTING`` are still pending), or until the timeout; a failed tile is
   reported with ``additionalData.failedIngestionCause``.

Tile paths are S3 keys relative to the bucket, so the storage root must be ``s3://<bucket>/...`` and the
collection must point at that bucket (:func:`check_target`; a ``file://`` root is refused with a
:class:`~lcms_tasks.errors.ConfigError`). A tile's path is ``<key of its folder>/(BAND).tiff``.

Errors and retries are sentinelhub-py's own, configured from :class:`ByocOptions`: HTTP 429 is retried after
the ``Retry-After`` delay (milliseconds, as Sentinel Hub sends it; without the header after
``backoff_seconds``), at most ``max_retries + 1`` attempts; 5xx responses, connection errors and timeouts are
retried with exponential backoff (``backoff_seconds``, x3 per attempt); other 4xx are not retried. A rejected
client (HTTP 401 from the token endpoint or the API) raises :class:`ByocAuthError` at once, naming the client id,
never the secret.

Credentials come from :func:`lcms_tasks.sources.credentials.get_credentials` (an Airflow connection in DAGs,
``SH_CLIENT_ID``/``SH_CLIENT_SECRET`` elsewhere); without them the step is skipped and the summary says why.
sentinelhub-py is imported inside functions: the config schema imports this module.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from pydantic import Field

from lcms_tasks.errors import ConfigError
from lcms_tasks.publish import BAND_NAMES, BandInfo, PublishedTile
from lcms_tasks.schema import StrictModel
from lcms_tasks.sources.sentinelhub_source import (
    DEFAULT_BASE_URL,
    TOKEN_PATH,
    SentinelHubAuthError,
    SentinelHubError,
)

if TYPE_CHECKING:
    from lcms_tasks.config import ProjectConfig
    from lcms_tasks.context import RunContext
    from lcms_tasks.sources.credentials import Credentials

LOGGER = logging.getLogger(__name__)

#: sentinelhub-py's default token endpoint (``SHConfig.sh_token_url``), used for every sentinel-hub.com deployment.
DEFAULT_TOKEN_URL = "https://services.sentinel-hub.com/auth/realms/main/protocol/openid-connect/token"
#: The Copernicus Data Space Ecosystem's Sentinel Hub deployment and its token endpoint.
CDSE_BASE_URL = "https://sh.dataspace.copernicus.eu"
CDSE_TOKEN_URL = "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token"

#: Tile statuses after which Sentinel Hub does nothing more with a tile.
FINAL_STATUSES = frozenset({"INGESTED", "FAILED"})
#: Tiles per listing page (the API's maximum ``count``).
PAGE_SIZE = 100

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
#: The BYOC API's pattern for tile paths: no leading, trailing or doubled '/'.
_TILE_PATH = re.compile(r"^([^/](/?[^/])*)?$")
#: numpy dtype name -> (bitDepth, sampleFormat) of a BYOC band.
_SAMPLE_FORMATS: dict[str, tuple[int, str]] = {
    "uint8": (8, "UINT"),
    "uint16": (16, "UINT"),
    "uint32": (32, "UINT"),
    "int8": (8, "INT"),
    "int16": (16, "INT"),
    "int32": (32, "INT"),
    "float32": (32, "FLOAT"),
}
_URL = r"^https?://[^\s/]+(/[^\s]*)?$"


class ByocOptions(StrictModel):
    """Sentinel Hub BYOC registration of each published season (``publish.byoc`` in the config)."""

    collection: str = Field(
        min_length=1,
        max_length=256,
        description="BYOC collection: a name (looked up among the account's collections, created when absent) "
        "or the id (UUID) of an existing collection.",
    )
    bucket: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="S3 bucket of the collection. The tile paths are the S3 keys of the published tile folders "
        "under the storage root, so the storage root must be s3://<bucket>/<prefix>; None: that bucket. Set, it "
        "must equal the storage root's bucket (a check).",
    )
    sensing_time: Literal["season_start", "season_middle", "season_end"] = Field(
        "season_start",
        description="Sensing time of a season's tiles, at 00:00 UTC: the season's first day, middle day or last "
        "day (unless `sensing_times` names the season).",
    )
    sensing_times: dict[str, dt.datetime | dt.date] = Field(
        default_factory=dict,
        description="Configured sensing time per season id (a date means 00:00 UTC; a time without zone is UTC); "
        "overrides `sensing_time` for those seasons.",
    )
    base_url: str = Field(
        DEFAULT_BASE_URL,
        pattern=_URL,
        description="Sentinel Hub deployment holding the collection: https://services.sentinel-hub.com (AWS "
        "eu-central-1 buckets), https://services-uswest2.sentinel-hub.com (us-west-2), or the Copernicus Data "
        "Space Ecosystem: https://sh.dataspace.copernicus.eu.",
    )
    token_url: str | None = Field(
        None,
        pattern=_URL,
        description="OAuth2 token endpoint. None: sentinelhub-py's default "
        "(https://services.sentinel-hub.com/auth/realms/main/protocol/openid-connect/token) for sentinel-hub.com "
        "deployments, https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token for "
        "the Copernicus Data Space Ecosystem, else base_url + '/auth/realms/main/protocol/openid-connect/token'.",
    )
    airflow_conn_id: str = Field(
        "sentinel_hub_default",
        min_length=1,
        description="Airflow connection holding the OAuth client (login = client id, password = client secret); "
        "outside Airflow SH_CLIENT_ID/SH_CLIENT_SECRET are used. No credentials: registration is skipped.",
    )
    reingest_existing: bool = Field(
        True,
        description="Re-ingest tiles already registered (a re-publish replaced their files); False: only update "
        "their sensing time and cover geometry.",
    )
    wait_for_ingestion: bool = Field(
        True, description="Poll the tiles until each is INGESTED or FAILED (or the timeout passes)."
    )
    ingestion_timeout_seconds: float = Field(
        1800.0,
        ge=0.0,
        le=24 * 3600.0,
        description="Longest wait for ingestion; tiles still pending then are reported as pending, not failed.",
    )
    poll_interval_seconds: float = Field(15.0, gt=0.0, le=3600.0, description="Wait between two status polls.")
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
    timeout_seconds: float = Field(60.0, gt=0.0, le=3600.0, description="Timeout of one HTTP request.")

    def resolved_token_url(self) -> str:
        """The token endpoint: ``token_url``, or the default of the deployment ``base_url`` names."""
        if self.token_url:
            return self.token_url
        base = self.base_url.rstrip("/")
        host = urlparse(base).hostname or ""
        if host.endswith("sentinel-hub.com"):
            return DEFAULT_TOKEN_URL
        if base == CDSE_BASE_URL:
            return CDSE_TOKEN_URL
        return base + TOKEN_PATH

    def collection_id(self) -> str | None:
        """``collection`` when it is an id (a UUID), else None (it is a name)."""
        return self.collection.lower() if _UUID.match(self.collection) else None


class ByocError(SentinelHubError):
    """BYOC registration failed (the message names the collection, tile or request and the HTTP status)."""


class ByocAuthError(ByocError, SentinelHubAuthError):
    """Sentinel Hub rejected the OAuth client (HTTP 401): retrying with the same credentials cannot help."""

    permanent = True


class _ConflictError(ByocError):
    """HTTP 409 (e.g. a tile path already registered)."""


# ------------------------------------------------------------------------------------------------ pure helpers


def check_target(options: ByocOptions, storage_root: str) -> str:
    """The collection's bucket for ``storage_root``; :class:`ConfigError` unless the root is ``s3://`` in that bucket.

    Call it early (a run's preflight) to refuse a config that cannot work before anything is published.
    """
    parsed = urlparse(storage_root)
    if parsed.scheme != "s3":
        raise ConfigError(
            f"BYOC registration needs the COGs in S3, but the storage root is {storage_root!r}: Sentinel Hub reads "
            "BYOC tiles from an S3 bucket, so set storage.root to s3://<bucket>/<prefix> (or remove publish.byoc)",
            field="publish.byoc",
        )
    bucket = parsed.netloc
    if options.bucket is not None and options.bucket != bucket:
        raise ConfigError(
            f"{options.bucket!r} is not the bucket of the storage root {storage_root!r} ({bucket!r}): the tile "
            f"paths are keys in the storage root's bucket; set bucket to {bucket!r} or leave it unset",
            field="publish.byoc.bucket",
        )
    return bucket


def sensing_time(options: ByocOptions, config: ProjectConfig, season_id: str) -> dt.datetime:
    """The sensing time (UTC) of ``season_id``'s tiles: the configured one, else the rule's day at 00:00 UTC."""
    configured = options.sensing_times.get(season_id)
    if isinstance(configured, dt.datetime):
        return configured.replace(tzinfo=dt.UTC) if configured.tzinfo is None else configured.astimezone(dt.UTC)
    if isinstance(configured, dt.date):
        return dt.datetime.combine(configured, dt.time.min, tzinfo=dt.UTC)
    season = config.season(season_id)
    day = {
        "season_start": season.start,
        "season_middle": season.start + (season.end - season.start) / 2,
        "season_end": season.end,
    }[options.sensing_time]
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def format_time(t: dt.datetime) -> str:
    """ISO 8601 in UTC without sub-second digits (the API refuses sub-millisecond precision)."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def band_spec(band: BandInfo) -> dict[str, Any]:
    """The BYOC declaration of one band: source name, bit depth, sample format, no-data."""
    try:
        bit_depth, sample_format = _SAMPLE_FORMATS[band.dtype]
    except KeyError:
        raise ByocError(
            f"band {band.name} ({band.file}) has data type {band.dtype}, which BYOC cannot declare; "
            f"supported: {', '.join(_SAMPLE_FORMATS)}"
        ) from None
    source, _, _ = band.file.rpartition(".")
    spec: dict[str, Any] = {"source": source or band.file, "bitDepth": bit_depth, "sampleFormat": sample_format}
    if band.nodata is not None:
        spec["noData"] = band.nodata
    return spec


def collection_bands(tiles: list[PublishedTile]) -> tuple[dict[str, dict[str, Any]], str]:
    """The collection's band declarations and the band files' extension, checked to be the same in every tile."""
    first = tiles[0]
    order = {name: i for i, name in enumerate(BAND_NAMES)}
    names = sorted(first.bands, key=lambda n: (order.get(n, len(order)), n))
    if not names:
        raise ByocError(f"tile {first.tile_id} ({first.uri}) has no bands")
    bands = {name: band_spec(first.bands[name]) for name in names}
    extensions = {first.bands[name].file.rpartition(".")[2] for name in names}
    if len(extensions) != 1 or any("." not in first.bands[n].file for n in names):
        files = ", ".join(first.bands[n].file for n in names)
        raise ByocError(
            f"tile {first.tile_id}: band files {files} do not share one extension, so no BYOC path "
            "'<folder>/(BAND).<ext>' matches them all"
        )
    for tile in tiles[1:]:
        if set(tile.bands) != set(names):
            raise ByocError(
                f"tile {tile.tile_id} ({tile.uri}) has bands {sorted(tile.bands)} but tile {first.tile_id} has "
                f"{names}: every tile folder of a BYOC collection must hold the same files"
            )
        for name in names:
            if band_spec(tile.bands[name]) != bands[name] or tile.bands[name].file != first.bands[name].file:
                raise ByocError(
                    f"tile {tile.tile_id}: band {name} is {tile.bands[name]} but tile {first.tile_id} has "
                    f"{first.bands[name]}: bit depth, sample format and no-data are fixed per collection band"
                )
    return bands, extensions.pop()


def tile_path(tile: PublishedTile, bucket: str, extension: str) -> str:
    """The BYOC path of ``tile``: the S3 key of its folder followed by ``/(BAND).<extension>``."""
    parsed = urlparse(tile.uri)
    if parsed.scheme != "s3" or parsed.netloc != bucket:
        raise ByocError(f"tile {tile.tile_id}: its folder {tile.uri} is not in the collection's bucket s3://{bucket}")
    key = parsed.path.strip("/")
    path = f"{key}/(BAND).{extension}" if key else f"(BAND).{extension}"
    if not _TILE_PATH.match(path):
        raise ByocError(f"tile {tile.tile_id}: {path!r} is not a valid BYOC tile path (no empty path segments)")
    return path


def cover_geometry(tile: PublishedTile) -> dict[str, Any]:
    """The tile's footprint (WGS 84 GeoJSON geometry or Feature) as BYOC's ``coverGeometry``, with its CRS named.

    Serialised by sentinelhub-py's :class:`~sentinelhub.Geometry`, as its ``ByocTile`` would send it.
    """
    from sentinelhub import CRS, Geometry
    from shapely.geometry import shape

    geojson = tile.footprint_wgs84
    if geojson.get("type") == "Feature":
        geojson = geojson.get("geometry") or {}
    try:
        geometry = shape(geojson)
    except Exception as exc:  # shapely raises several types for malformed GeoJSON
        raise ByocError(f"tile {tile.tile_id}: footprint is not a GeoJSON geometry: {exc}") from exc
    if geometry.geom_type not in {"Polygon", "MultiPolygon"} or geometry.is_empty or not geometry.is_valid:
        raise ByocError(
            f"tile {tile.tile_id}: footprint must be a valid, non-empty Polygon or MultiPolygon, got "
            f"{geometry.geom_type}{' (invalid)' if not geometry.is_valid else ''}"
        )
    out: dict[str, Any] = json.loads(json.dumps(Geometry(geometry, CRS.WGS84).get_geojson()))
    return out


def _same_geometry(sent: dict[str, Any], stored: Any) -> bool:
    """True when ``stored`` (the service's coverGeometry, in any CRS it names) is ``sent`` (WGS 84) within ~1 cm."""
    if not isinstance(stored, dict):
        return False
    try:
        import pyproj
        from shapely.geometry import shape
        from shapely.ops import transform

        name = ((stored.get("crs") or {}).get("properties") or {}).get("name") or "OGC:CRS84"
        geometry = shape(stored)
        source = pyproj.CRS.from_user_input(name)
        if not source.equals(pyproj.CRS.from_epsg(4326), ignore_axis_order=True):
            geometry = transform(pyproj.Transformer.from_crs(source, 4326, always_xy=True).transform, geometry)
        return bool(geometry.equals_exact(shape(sent), 1e-7))
    except Exception:  # a geometry we cannot read: treat as changed (an update is harmless)
        return False


def _same_time(sent: str, stored: Any) -> bool:
    if not isinstance(stored, str):
        return False
    try:
        parsed = dt.datetime.fromisoformat(stored.replace("Z", "+00:00"))
    except ValueError:
        return False
    parsed = parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed
    return format_time(parsed) == sent


# ------------------------------------------------------------------------------------------------ the client


class _Client:
    """sentinelhub-py's BYOC client with LCMS errors: every call names what it did, never the secret."""

    def __init__(self, options: ByocOptions, creds: Credentials) -> None:
        self.options = options
        self.creds = creds
        self.api: Any = None

    def connect(self) -> None:
        """Fetch a token (a rejected client fails here) and set up the BYOC client on it."""
        from sentinelhub import SentinelHubBYOC, SHConfig
        from sentinelhub.download.sentinelhub_client import SentinelHubDownloadClient
        from sentinelhub.download.session import SentinelHubSession

        o = self.options
        config = SHConfig(
            use_defaults=True,  # never read or write ~/.config/sentinelhub/config.toml
            sh_client_id=self.creds.client_id,
            sh_client_secret=self.creds.client_secret,
            sh_base_url=o.base_url.rstrip("/"),
            sh_token_url=o.resolved_token_url(),
            max_download_attempts=o.max_retries + 1,
            download_sleep_time=o.backoff_seconds,
            download_timeout_seconds=o.timeout_seconds,
            max_retries=o.max_retries + 1,  # attempts allowed while the service answers 429
        )
        with self.errors(f"token request to {o.resolved_token_url()}"):
            # An explicit session, not sentinelhub-py's process-wide cache keyed by client id and URL: the
            # token is fetched here, from these credentials, and refreshed before it expires during long waits.
            session = SentinelHubSession(config=config)
        api = SentinelHubBYOC(config=config)
        # SentinelHubBYOC waits 30 s after a 429 without Retry-After; use the configured backoff instead.
        api.client = SentinelHubDownloadClient(session=session, config=config, default_retry_time=o.backoff_seconds)
        self.api = api

    def _auth_error(self, what: str) -> ByocAuthError:
        return ByocAuthError(
            f"Sentinel Hub rejected the credentials (HTTP 401) for client id {self.creds.client_id} ({what}); "
            f"check SH_CLIENT_ID/SH_CLIENT_SECRET or the Airflow connection {self.options.airflow_conn_id} "
            f"(credentials came from the {self.creds.origin})"
        )

    def errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Translate sentinelhub-py/oauthlib failures of ``what`` into :class:`ByocError` (secrets redacted)."""
        from lcms_tasks.sources.sh_errors import sentinelhub_errors

        o = self.options

        def by_status(status: int | None, detail: str) -> Exception | None:
            if status == 403:
                return ByocError(f"{what}: client id {self.creds.client_id} may not do this (HTTP 403): {detail}")
            if status == 409:
                return _ConflictError(f"{what}: HTTP 409: {detail}")
            if status is None:
                return ByocError(
                    f"{what}: Sentinel Hub could not be reached after {o.max_retries + 1} attempts: {detail}"
                )
            return None

        return sentinelhub_errors(
            what,
            error=ByocError,
            auth_error=self._auth_error,
            token_url=o.resolved_token_url(),
            max_retries=o.max_retries,
            base_url=o.base_url,
            by_status=by_status,
        )

    # -- collections ----------------------------------------------------------------------------------------

    def list_collections(self) -> list[dict[str, Any]]:
        with self.errors(f"listing BYOC collections at {self.options.base_url}"):
            return list(self.api.iter_collections(count=PAGE_SIZE))

    def get_collection(self, collection_id: str) -> dict[str, Any]:
        with self.errors(f"reading BYOC collection {collection_id}"):
            return dict(self.api.get_collection(collection_id))

    def create_collection(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.errors(f"creating BYOC collection {body['name']!r}"):
            return dict(self.api.create_collection(body))

    def update_collection(self, body: dict[str, Any]) -> None:
        with self.errors(f"declaring the bands of BYOC collection {body['name']!r} ({body['id']})"):
            self.api.update_collection(body)

    # -- tiles ----------------------------------------------------------------------------------------------

    def list_tiles(self, collection_id: str, path: str | None = None) -> list[dict[str, Any]]:
        what = f"listing the tiles of BYOC collection {collection_id}" + (f" with path {path}" if path else "")
        with self.errors(what):
            return list(self.api.iter_tiles(collection_id, path=path, count=PAGE_SIZE))

    def create_tile(self, collection_id: str, body: dict[str, Any], tile_id: str) -> dict[str, Any]:
        with self.errors(f"registering tile {tile_id} ({body['path']}) in BYOC collection {collection_id}"):
            return dict(self.api.create_tile(collection_id, body))

    def update_tile(self, collection_id: str, body: dict[str, Any], tile_id: str) -> None:
        with self.errors(f"updating tile {tile_id} ({body['path']}) of BYOC collection {collection_id}"):
            self.api.update_tile(collection_id, body)

    def reingest_tile(self, collection_id: str, byoc_id: str, tile_id: str) -> None:
        with self.errors(f"re-ingesting tile {tile_id} (BYOC tile {byoc_id}) of BYOC collection {collection_id}"):
            self.api.reingest_tile(collection_id, byoc_id)


# ------------------------------------------------------------------------------------------------ registration


@dataclass
class _Registration:
    """One tile folder on its way into the collection."""

    tile: PublishedTile
    body: dict[str, Any]  # path, sensingTime, coverGeometry
    action: str = ""  # created | updated | reingested | unchanged
    reingested: bool = False
    byoc_id: str | None = None
    status: str | None = None
    cause: str | None = None

    @property
    def path(self) -> str:
        return str(self.body["path"])


def _summary(options: ByocOptions) -> dict[str, Any]:
    return {
        "skipped": None,
        "base_url": options.base_url,
        "collection": options.collection,
        "collection_id": None,
        "collection_created": False,
        "bucket": None,
        "tiles_created": [],
        "tiles_updated": [],
        "tiles_reingested": [],
        "tiles_ingested": [],
        "tiles_failed": {},
        "tiles_pending": [],
        "duplicate_paths": [],
        "waited_for_ingestion": False,
        "wait_seconds": None,
        "timed_out": False,
        "tiles": {},
    }


def _ensure_collection(
    client: _Client, options: ByocOptions, bucket: str, bands: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """The collection (found or created) and whether it was created; checks its bucket and bands."""
    wanted_id = options.collection_id()
    if wanted_id is not None:
        try:
            collection = client.get_collection(wanted_id)
        except ByocError as exc:
            raise ByocError(
                f"BYOC collection {wanted_id} (publish.byoc.collection) cannot be read at {options.base_url} with "
                f"client id {client.creds.client_id}: {exc}"
            ) from exc
    else:
        matches = [c for c in client.list_collections() if c.get("name") == options.collection]
        if len(matches) > 1:
            ids = ", ".join(str(c.get("id")) for c in matches)
            raise ByocError(
                f"{len(matches)} BYOC collections are named {options.collection!r} ({ids}): set "
                "publish.byoc.collection to the id of the one to use"
            )
        if not matches:
            body: dict[str, Any] = {"name": options.collection, "s3Bucket": bucket, "additionalData": {"bands": bands}}
            created = client.create_collection(body)
            LOGGER.info("created BYOC collection %r (%s) on bucket %s", options.collection, created.get("id"), bucket)
            return created, True
        collection = matches[0]
    name = collection.get("name")
    if collection.get("s3Bucket") != bucket:
        raise ByocError(
            f"BYOC collection {name!r} ({collection.get('id')}) reads bucket {collection.get('s3Bucket')!r}, but the "
            f"tiles are published in bucket {bucket!r}: use another collection or storage root"
        )
    declared = (collection.get("additionalData") or {}).get("bands") or {}
    if not declared:
        # The update payload replaces the collection: a collection-wide noData is dropped, as BYOC allows
        # noData per band or per collection, not both.
        body = {
            "id": collection["id"],
            "name": name,
            "s3Bucket": bucket,
            "additionalData": {"bands": bands},
        }
        client.update_collection(body)
        LOGGER.info("declared the bands %s of BYOC collection %r (%s)", list(bands), name, collection["id"])
    else:
        problems = _band_differences(declared, bands)
        if problems:
            raise ByocError(
                f"BYOC collection {name!r} ({collection.get('id')}) declares other bands than LCMS publishes: "
                f"{'; '.join(problems)}. Bands cannot change once a collection has tiles: use another collection"
            )
    return collection, False


def _band_differences(declared: dict[str, Any], wanted: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for name in sorted(set(declared) - set(wanted)):
        problems.append(f"band {name} is declared but not published")
    for name, spec in wanted.items():
        have = declared.get(name)
        if not isinstance(have, dict):
            problems.append(f"band {name} is not declared")
            continue
        for key, value in spec.items():
            other = have.get(key, name if key == "source" else None)  # an unset source defaults to the band name
            if not _same_value(other, value):
                problems.append(f"band {name} {key} is {other!r}, LCMS publishes {value!r}")
        if "noData" not in spec and have.get("noData") is not None:
            problems.append(f"band {name} declares noData {have['noData']!r}, LCMS publishes none")
    return problems


def _same_value(declared: Any, published: Any) -> bool:
    """Equal, numbers compared as numbers (the service may answer 0.0 for 0)."""
    if isinstance(published, int | float) and not isinstance(published, bool):
        return isinstance(declared, int | float) and not isinstance(declared, bool) and declared == published
    return bool(declared == published)


def _by_path(tiles: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The collection's tiles by path (the first of several with one path; those paths are reported)."""
    out: dict[str, dict[str, Any]] = {}
    for tile in tiles:
        path = str(tile.get("path"))
        if path in out:
            if path not in summary["duplicate_paths"]:
                summary["duplicate_paths"].append(path)
                LOGGER.warning("BYOC path %s is registered more than once; using tile %s", path, out[path].get("id"))
            continue
        out[path] = tile
    return out


def _register(client: _Client, collection_id: str, item: _Registration, existing: dict[str, Any] | None) -> None:
    """Create ``item``'s tile, or update and re-ingest the one already at its path."""
    tile_id = item.tile.tile_id
    if existing is None:
        try:
            created = client.create_tile(collection_id, item.body, tile_id)
        except _ConflictError:
            # The path is taken: typically our own create, whose response was lost and which the client retried.
            found = client.list_tiles(collection_id, path=item.path)
            if not found:
                raise
            tile = found[0]
            if _same_time(item.body["sensingTime"], tile.get("sensingTime")) and _same_geometry(
                item.body["coverGeometry"], tile.get("coverGeometry")
            ):
                LOGGER.info("tile %s: %s was registered by a create whose answer was lost", tile_id, item.path)
                item.action, item.byoc_id, item.status = "created", str(tile.get("id")), tile.get("status")
                return
            LOGGER.info("tile %s: %s is already registered (HTTP 409); updating it", tile_id, item.path)
            _register(client, collection_id, item, tile)
            return
        item.action, item.byoc_id, item.status = "created", str(created.get("id")), created.get("status")
        return
    item.byoc_id = str(existing.get("id"))
    item.status = existing.get("status")
    item.action = "unchanged"
    if not (
        _same_time(item.body["sensingTime"], existing.get("sensingTime"))
        and _same_geometry(item.body["coverGeometry"], existing.get("coverGeometry"))
    ):
        client.update_tile(collection_id, {"id": item.byoc_id, **item.body}, tile_id)
        item.action = "updated"
    if client.options.reingest_existing:
        client.reingest_tile(collection_id, item.byoc_id, tile_id)
        item.action = "reingested" if item.action == "unchanged" else item.action
        item.status = "WAITING"
        item.reingested = True


def _wait(client: _Client, collection_id: str, items: list[_Registration], summary: dict[str, Any]) -> None:
    """Poll the collection's tiles until each of ``items`` reaches a final status or the timeout passes."""
    o = client.options
    pending = {item.byoc_id: item for item in items if item.status not in FINAL_STATUSES}
    deadline = time.monotonic() + o.ingestion_timeout_seconds
    start = time.monotonic()
    summary["waited_for_ingestion"] = True
    while pending:
        listing = {str(t.get("id")): t for t in client.list_tiles(collection_id)}
        for byoc_id, item in list(pending.items()):
            tile = listing.get(str(byoc_id))
            if tile is None:
                item.status, item.cause = "FAILED", "the tile is no longer in the collection"
            else:
                item.status = tile.get("status")
                if item.status == "FAILED":
                    data = tile.get("additionalData") or {}
                    item.cause = data.get("failedIngestionCause") or "Sentinel Hub gave no cause"
            if item.status in FINAL_STATUSES:
                del pending[byoc_id]
        if not pending:
            break
        if time.monotonic() + o.poll_interval_seconds > deadline:
            summary["timed_out"] = True
            LOGGER.warning(
                "BYOC collection %s: %d tile(s) still pending after %.0f s: %s",
                collection_id,
                len(pending),
                time.monotonic() - start,
                ", ".join(sorted(item.tile.tile_id for item in pending.values())),
            )
            break
        LOGGER.info("BYOC collection %s: %d tile(s) still ingesting", collection_id, len(pending))
        time.sleep(o.poll_interval_seconds)
    summary["wait_seconds"] = round(time.monotonic() - start, 3)


def register_season(ctx: RunContext, options: ByocOptions, tiles: list[PublishedTile]) -> dict[str, Any]:
    """Register ``tiles`` (a published season's tile folders) as tiles of the BYOC collection ``options`` names.

    Idempotent: tiles already registered (matched by path) are updated and re-ingested, never duplicated.
    Returns a JSON-serialisable summary: ``skipped`` (the reason, or None), ``collection_id``,
    ``collection_created``, ``bucket``, the LCMS tile ids ``tiles_created`` / ``tiles_updated`` /
    ``tiles_reingested`` / ``tiles_ingested`` / ``tiles_pending``, ``tiles_failed`` (tile id -> ``{"path",
    "cause"}``), ``duplicate_paths`` found in the collection, ``timed_out`` and ``tiles`` (per tile: BYOC id,
    path, action, final status, cause).

    Raises :class:`~lcms_tasks.errors.ConfigError` for a storage root BYOC cannot read, :class:`ByocAuthError`
    for rejected credentials and :class:`ByocError` for other service failures (after sentinelhub-py's retries).
    """
    from lcms_tasks.sources.credentials import CredentialsError, get_credentials

    summary = _summary(options)
    bucket = check_target(options, ctx.storage.root)
    summary["bucket"] = bucket
    if not tiles:
        summary["skipped"] = "no published tiles to register"
        return summary
    bands, extension = collection_bands(tiles)
    items: list[_Registration] = []
    for tile in sorted(tiles, key=lambda t: t.tile_id):
        body: dict[str, Any] = {
            "path": tile_path(tile, bucket, extension),
            "sensingTime": format_time(sensing_time(options, ctx.config, tile.season)),
            "coverGeometry": cover_geometry(tile),
        }
        items.append(_Registration(tile, body))
    paths = [item.path for item in items]
    if len(set(paths)) != len(paths):
        raise ByocError(f"several tiles share one BYOC path: {sorted(p for p in set(paths) if paths.count(p) > 1)}")

    try:
        creds = get_credentials(options.airflow_conn_id)
    except CredentialsError as exc:
        summary["skipped"] = f"BYOC registration skipped: {exc}"
        LOGGER.warning("%s", summary["skipped"])
        return summary
    if ctx.config.storage.s3_endpoint_url:
        LOGGER.warning(
            "storage uses the S3 endpoint %s: Sentinel Hub reads BYOC tiles from AWS S3 bucket %s, not from there",
            ctx.config.storage.s3_endpoint_url,
            bucket,
        )

    client = _Client(options, creds)
    client.connect()
    collection, created = _ensure_collection(client, options, bucket, bands)
    collection_id = str(collection["id"])
    summary.update(collection_id=collection_id, collection_created=created, collection=collection.get("name"))
    existing = {} if created else _by_path(client.list_tiles(collection_id), summary)
    for item in items:
        _register(client, collection_id, item, existing.get(item.path))
    if options.wait_for_ingestion:
        _wait(client, collection_id, items, summary)

    for item in items:
        tile_id = item.tile.tile_id
        if item.action == "created":
            summary["tiles_created"].append(tile_id)
        if item.action == "updated":
            summary["tiles_updated"].append(tile_id)
        if item.reingested:
            summary["tiles_reingested"].append(tile_id)
        if item.status == "INGESTED":
            summary["tiles_ingested"].append(tile_id)
        elif item.status == "FAILED":
            summary["tiles_failed"][tile_id] = {"path": item.path, "cause": item.cause}
        else:
            summary["tiles_pending"].append(tile_id)
        summary["tiles"][tile_id] = {
            "byoc_id": item.byoc_id,
            "path": item.path,
            "action": item.action,
            "status": item.status,
            "cause": item.cause,
        }
    for tile_id, failure in summary["tiles_failed"].items():
        LOGGER.error("BYOC ingestion of tile %s (%s) failed: %s", tile_id, failure["path"], failure["cause"])
    LOGGER.info(
        "BYOC collection %r (%s)%s: %d tile(s) created, %d updated, %d re-ingested; %d ingested, %d failed, %d pending",
        summary["collection"],
        collection_id,
        " created" if created else "",
        len(summary["tiles_created"]),
        len(summary["tiles_updated"]),
        len(summary["tiles_reingested"]),
        len(summary["tiles_ingested"]),
        len(summary["tiles_failed"]),
        len(summary["tiles_pending"]),
    )
    return summary
