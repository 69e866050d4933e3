"""A fake Sentinel Hub BYOC API on 127.0.0.1, on top of :class:`~tests.fakes.sentinelhub_server.FakeSentinelHub`.

The token endpoint, Bearer checks, scripted failures (:meth:`FakeSentinelHub.fail`) and request counting are the
parent's; this adds the documented BYOC endpoints under ``/api/v1/byoc`` (the prefix sentinelhub-py 3.12's
``SentinelHubBYOC`` uses) with their shapes (``{"data": ...}`` envelopes, ``links`` with ``nextToken``/``next``
for paging, 201 on creation, 204 on updates and re-ingestion, Sentinel Hub's error JSON):

================================  ======  =====================  =========================================
path                              method  endpoint key           answer
================================  ======  =====================  =========================================
/collections                      GET     ``collections``        200 page (``count`` <= 100, ``viewtoken``,
                                                                 ``search``: substring of the name)
/collections                      POST    ``collection.create``  201 ``{"data": collection}``
/collections/{id}                 GET     ``collection``         200 / 404
/collections/{id}                 PUT     ``collection.update``  204 (``name`` and ``s3Bucket`` required)
/collections/{id}/tiles           GET     ``tiles``              200 page (``count``, ``viewtoken``,
                                                                 ``path``: exact match, ``sort``)
/collections/{id}/tiles           POST    ``tile.create``        201 ``{"data": tile}``, status WAITING
/collections/{id}/tiles/{tid}     GET     ``tile``               200 / 404
/collections/{id}/tiles/{tid}     PUT     ``tile.update``        204 (``coverGeometry``, ``sensingTime``)
/collections/{id}/tiles/{tid}     DELETE  ``tile.delete``        204
/collections/{id}/tiles/.../      POST    ``tile.reingest``      204, status back to WAITING
reingest
================================  ======  =====================  =========================================

Payloads are validated as the reference documents them (400 ``COMMON_BAD_PAYLOAD`` otherwise): a collection
needs ``name`` and ``s3Bucket``; each band ``bitDepth`` 8/16/32 and ``sampleFormat`` UINT/INT/FLOAT, no-data
per band or per collection but not both; a tile needs a ``path`` matching ``^([^/](/?[^/])*)?$``, an ISO 8601
``sensingTime`` without sub-millisecond digits and a Polygon/MultiPolygon ``coverGeometry``; unknown keys are
refused. With :attr:`FakeByoc.unique_paths` a second tile with a taken path gets 409
``COMMON_UNIQUE_KEY_VIOLATION``; otherwise it is stored (so a test sees duplicates a client made).

Ingestion moves on as tiles are read (listed or fetched): a tile is ``WAITING`` on its first read,
``INGESTING`` until it has been read :attr:`FakeByoc.ingest_after_reads` times, then ``INGESTED`` — or
``FAILED`` with ``additionalData.failedIngestionCause`` when its path contains a key of
:attr:`FakeByoc.fail_ingestion`. Re-ingestion starts over.

Faults: the parent's :meth:`fail` answers the next requests of an endpoint key with a status *before* doing
anything (429 with ``Retry-After`` :attr:`FakeByoc.retry_after_ms`, or none when that is None);
:meth:`FakeByoc.lose_response` does the work and then answers an error (a response lost on the way back).
Every BYOC request is recorded as a :class:`ByocRequest` (method, path, query, JSON body, monotonic time).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
import urllib.parse
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from tests.fakes.sentinelhub_server import FakeSentinelHub, RecordedRequest, _error, _Handler

BYOC_PREFIX = "/api/v1/byoc"
DEFAULT_PAGE = 100

_TILE_PATH = re.compile(r"^([^/](/?[^/])*)?$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?(Z|[+-]\d{2}:\d{2})$")
_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("GET", re.compile(r"^/collections$"), "collections"),
    ("POST", re.compile(r"^/collections$"), "collection.create"),
    ("GET", re.compile(r"^/collections/(?P<cid>[^/]+)$"), "collection"),
    ("PUT", re.compile(r"^/collections/(?P<cid>[^/]+)$"), "collection.update"),
    ("GET", re.compile(r"^/collections/(?P<cid>[^/]+)/tiles$"), "tiles"),
    ("POST", re.compile(r"^/collections/(?P<cid>[^/]+)/tiles$"), "tile.create"),
    ("GET", re.compile(r"^/collections/(?P<cid>[^/]+)/tiles/(?P<tid>[^/]+)$"), "tile"),
    ("PUT", re.compile(r"^/collections/(?P<cid>[^/]+)/tiles/(?P<tid>[^/]+)$"), "tile.update"),
    ("DELETE", re.compile(r"^/collections/(?P<cid>[^/]+)/tiles/(?P<tid>[^/]+)$"), "tile.delete"),
    ("POST", re.compile(r"^/collections/(?P<cid>[^/]+)/tiles/(?P<tid>[^/]+)/reingest$"), "tile.reingest"),
)


@dataclass
class ByocRequest(RecordedRequest):
    """A BYOC API request as received."""

    method: str = "GET"
    query: dict[str, str] = field(default_factory=dict)
    at: float = 0.0  # time.monotonic() on arrival


class BadPayloadError(ValueError):
    """A request body the real service would refuse with 400."""


@dataclass
class FakeByoc(FakeSentinelHub):
    """The fake service's state; ``collections`` maps id -> collection JSON, ``tiles`` id -> tiles (in order)."""

    collections: dict[str, dict[str, Any]] = field(default_factory=dict)
    tiles: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ingest_after_reads: int = 2
    fail_ingestion: dict[str, str] = field(default_factory=dict)
    unique_paths: bool = False
    retry_after_ms: int | None = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._lost: dict[str, deque[int]] = {}
        self._reads: dict[str, int] = {}
        self.reingested: list[str] = []

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> FakeByoc:
        handler = type("ByocHandler", (_ByocHandler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-byoc", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> FakeByoc:
        return self.start()

    # ------------------------------------------------------------------------------------ scripting & inspection

    def lose_response(self, endpoint: str, *statuses: int) -> None:
        """Serve the next requests of ``endpoint`` normally but answer them with these statuses."""
        with self._lock:
            self._lost.setdefault(endpoint, deque()).extend(statuses)

    def add_collection(self, name: str, s3_bucket: str, bands: dict[str, Any] | None = None) -> dict[str, Any]:
        """A collection created out of band (another user, an earlier run)."""
        collection = _new_collection({"name": name, "s3Bucket": s3_bucket, "additionalData": {"bands": bands or {}}})
        with self._lock:
            self.collections[collection["id"]] = collection
            self.tiles[collection["id"]] = []
        return collection

    def byoc_requests(self, endpoint: str | None = None) -> list[ByocRequest]:
        """The BYOC requests received (of one endpoint key), in order."""
        with self._lock:
            return [
                r for r in self.requests if isinstance(r, ByocRequest) and (endpoint is None or r.endpoint == endpoint)
            ]

    def collection_tiles(self, collection_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(t) for t in self.tiles.get(collection_id, [])]

    # ------------------------------------------------------------------------------------ behaviour

    def _lost_status(self, endpoint: str) -> int | None:
        with self._lock:
            queue = self._lost.get(endpoint)
            return queue.popleft() if queue else None

    def _observe(self, tile: dict[str, Any]) -> dict[str, Any]:
        """The tile as a reader sees it now; each read moves its ingestion on."""
        reads = self._reads.get(tile["id"], 0)
        if tile["status"] not in {"INGESTED", "FAILED"}:
            if reads == 0:
                tile["status"] = "WAITING"
            elif reads < self.ingest_after_reads:
                tile["status"] = "INGESTING"
                tile.setdefault("ingestionStart", _now())
            else:
                cause = next((c for key, c in self.fail_ingestion.items() if key in tile["path"]), None)
                tile["status"] = "FAILED" if cause else "INGESTED"
                tile["additionalData"] = {"failedIngestionCause": cause} if cause else {}
        self._reads[tile["id"]] = reads + 1
        return json.loads(json.dumps(tile))

    def handle(
        self, method: str, endpoint: str, ids: dict[str, str], query: dict[str, str], body: Any, url: str
    ) -> tuple[int, dict[str, Any] | None]:
        """(status, JSON answer or None for 204) of one authorised BYOC request."""
        with self._lock:
            cid = ids.get("cid")
            if cid is not None and cid not in self.collections:
                return 404, _err(404, f"Collection {cid} not found")
            if endpoint == "collections":
                items = [c for c in self.collections.values() if query.get("search", "") in c["name"]]
                return _page(items, query, url, self.max_page_size)
            if endpoint == "collection.create":
                collection = _new_collection(_collection_payload(body))
                self.collections[collection["id"]] = collection
                self.tiles[collection["id"]] = []
                return 201, {"data": collection}
            assert cid is not None
            collection = self.collections[cid]
            if endpoint == "collection":
                return 200, {"data": collection}
            if endpoint == "collection.update":
                payload = _collection_payload({k: v for k, v in body.items() if k != "id"})
                collection.update(payload)
                collection["isConfigured"] = bool((collection.get("additionalData") or {}).get("bands"))
                return 204, None
            tiles = self.tiles[cid]
            if endpoint == "tiles":
                items = [t for t in tiles if "path" not in query or t["path"] == query["path"]]
                if query.get("sort") == "created:desc":
                    items = items[::-1]
                status, page = _page(items, query, url, self.max_page_size)
                if status == 200:
                    page["data"] = [self._observe(t) for t in page["data"]]
                return status, page
            if endpoint == "tile.create":
                payload = _tile_payload(body, create=True)
                if self.unique_paths and any(t["path"] == payload["path"] for t in tiles):
                    return 409, _err(409, f"A tile with path {payload['path']} already exists")
                tile = {"id": str(uuid.uuid4()), "created": _now(), "status": "WAITING", **payload}
                tile.setdefault("additionalData", {})
                tiles.append(tile)
                return 201, {"data": json.loads(json.dumps(tile))}
            tile_found = next((t for t in tiles if t["id"] == ids["tid"]), None)
            if tile_found is None:
                return 404, _err(404, f"Tile {ids['tid']} not found in collection {cid}")
            if endpoint == "tile":
                return 200, {"data": self._observe(tile_found)}
            if endpoint == "tile.update":
                payload = _tile_payload(body, create=False)
                if "path" in payload and payload["path"] != tile_found["path"]:
                    raise BadPayloadError("the path of a tile cannot be changed")
                tile_found.update(payload)
                return 204, None
            if endpoint == "tile.delete":
                tiles.remove(tile_found)
                return 204, None
            # tile.reingest
            tile_found.update(status="WAITING", additionalData={})
            tile_found.pop("ingestionStart", None)
            self._reads[tile_found["id"]] = 0
            self.reingested.append(tile_found["id"])
            return 204, None


# ---------------------------------------------------------------------------------------- payloads


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _new_collection(payload: dict[str, Any]) -> dict[str, Any]:
    bands = (payload.get("additionalData") or {}).get("bands") or {}
    return {
        "id": str(uuid.uuid4()),
        "accountId": "00000000-0000-4000-8000-000000000001",
        "created": _now(),
        "isConfigured": bool(bands),
        "requiresMetadataUpdate": False,
        **payload,
    }


def _collection_payload(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadPayloadError("the body must be a JSON object")
    unknown = set(body) - {"name", "s3Bucket", "noData", "additionalData"}
    if unknown:
        raise BadPayloadError(f"unknown collection field(s) {sorted(unknown)}")
    if not isinstance(body.get("name"), str) or not body["name"]:
        raise BadPayloadError("name is required")
    if not isinstance(body.get("s3Bucket"), str) or not body["s3Bucket"]:
        raise BadPayloadError("s3Bucket is required")
    bands = (body.get("additionalData") or {}).get("bands") or {}
    if not isinstance(bands, dict):
        raise BadPayloadError("additionalData.bands must be an object")
    for name, band in bands.items():
        unknown = set(band) - {"source", "bandIndex", "bitDepth", "sampleFormat", "noData"}
        if unknown:
            raise BadPayloadError(f"band {name}: unknown field(s) {sorted(unknown)}")
        if band.get("bitDepth") not in (8, 16, 32):
            raise BadPayloadError(f"band {name}: bitDepth must be 8, 16 or 32")
        if band.get("sampleFormat") not in ("UINT", "INT", "FLOAT"):
            raise BadPayloadError(f"band {name}: sampleFormat must be UINT, INT or FLOAT")
        if "noData" in band and not isinstance(band["noData"], int | float):
            raise BadPayloadError(f"band {name}: noData must be a number")
        if "noData" in band and "noData" in body:
            raise BadPayloadError("noData can be defined per band or per collection, not both")
    return dict(body)


def _tile_payload(body: Any, *, create: bool) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadPayloadError("the body must be a JSON object")
    unknown = set(body) - {"path", "sensingTime", "coverGeometry"}
    if unknown:
        raise BadPayloadError(f"unknown or read-only tile field(s) {sorted(unknown)}")
    if create or "path" in body:
        path = body.get("path")
        if not isinstance(path, str) or not path or not _TILE_PATH.match(path):
            raise BadPayloadError(f"path {path!r} does not match ^([^/](/?[^/])*)?$")
    sensing = body.get("sensingTime")
    if sensing is not None and (not isinstance(sensing, str) or not _TIME.match(sensing)):
        raise BadPayloadError(f"sensingTime {sensing!r} is not ISO 8601 without sub-millisecond precision")
    geometry = body.get("coverGeometry")
    if geometry is not None and (
        not isinstance(geometry, dict)
        or geometry.get("type") not in ("Polygon", "MultiPolygon")
        or not isinstance(geometry.get("coordinates"), list)
    ):
        raise BadPayloadError("coverGeometry must be a GeoJSON Polygon or MultiPolygon")
    return dict(body)


def _err(status: int, message: str) -> dict[str, Any]:
    """Sentinel Hub's error JSON, with the BYOC reference's codes for the statuses the parent does not know."""
    error = _error(status, message)
    reason, code = {404: ("Not Found", "COMMON_NOT_FOUND"), 409: ("Conflict", "COMMON_UNIQUE_KEY_VIOLATION")}.get(
        status, (error["error"]["reason"], error["error"]["code"])
    )
    error["error"].update(reason=reason, code=code)
    return error


def _page(items: list[dict[str, Any]], query: dict[str, str], url: str, max_page: int) -> tuple[int, dict[str, Any]]:
    """One page of ``items`` per the query's ``count`` and ``viewtoken`` (an offset, opaque to clients)."""
    try:
        count = int(query.get("count", DEFAULT_PAGE))
        offset = int(query.get("viewtoken") or 0)
    except ValueError:
        return 400, _error(400, "count and viewtoken must be integers")
    if not 1 <= count <= 100:
        return 400, _error(400, "count must be between 1 and 100")
    limit = min(count, max_page)
    page = items[offset : offset + limit]
    links: dict[str, Any] = {"@id": url, "currentToken": str(offset)}
    if offset + limit < len(items):
        token = str(offset + limit)
        split = urllib.parse.urlsplit(url)
        params = {k: v for k, v in query.items() if k != "viewtoken"}
        params["viewtoken"] = token
        links["nextToken"] = token
        links["next"] = urllib.parse.urlunsplit(split._replace(query=urllib.parse.urlencode(params)))
    return 200, {"data": [json.loads(json.dumps(item)) for item in page], "links": links}


# ---------------------------------------------------------------------------------------- HTTP


class _ByocHandler(_Handler):
    """Routes ``/api/v1/byoc`` requests to :class:`FakeByoc`; everything else (the token) to the parent."""

    fake: FakeByoc

    def _send_failure(self, status: int) -> None:
        retry = self.fake.retry_after_ms
        extra = {"Retry-After": str(retry)} if status == 429 and retry is not None else None
        self._send(status, "application/json", _error(status, "scripted failure"), extra)

    def _route(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        rest = path[len(BYOC_PREFIX) :]
        for route_method, pattern, endpoint in _ROUTES:
            match = pattern.match(rest)
            if match and route_method == method:
                return endpoint, match.groupdict()
        return None

    def _byoc(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        split = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(split.query).items()}
        fake = self.fake
        routed = self._route(method, split.path)
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        endpoint = routed[0] if routed else "byoc.unknown"
        fake._record(ByocRequest(endpoint, split.path, headers, body, method, query, time.monotonic()))
        if routed is None:
            self._send(404, "application/json", _err(404, f"no endpoint {method} {split.path}"))
            return
        failure = fake._next_failure(endpoint)
        if failure is not None:
            self._send_failure(failure)
            return
        if not fake.authorised(headers):
            msg = "You are not authorized! Please provide a valid access token to send along with the request."
            self._send(401, "application/json", _error(401, msg))
            return
        url = fake.base_url + self.path
        try:
            status, answer = fake.handle(method, endpoint, routed[1], query, body, url)
        except BadPayloadError as exc:
            status, answer = 400, _err(400, str(exc))
        lost = fake._lost_status(endpoint)
        if lost is not None:
            self._send_failure(lost)
            return
        if answer is None:
            self._send(status, "application/json", b"")
        else:
            self._send(status, "application/json", answer)

    def do_GET(self) -> None:  # noqa: N802 -- http.server dispatches to do_<METHOD>
        self._byoc("GET")

    def do_PUT(self) -> None:  # noqa: N802 -- http.server dispatches to do_<METHOD>
        self._byoc("PUT")

    def do_DELETE(self) -> None:  # noqa: N802 -- http.server dispatches to do_<METHOD>
        self._byoc("DELETE")

    def do_POST(self) -> None:  # noqa: N802 -- http.server dispatches to do_<METHOD>
        if urllib.parse.urlsplit(self.path).path.startswith(BYOC_PREFIX + "/"):
            self._byoc("POST")
        else:
            super().do_POST()
