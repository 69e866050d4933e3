"""A fake Sentinel Hub: a real HTTP server on 127.0.0.1 answering like the service.

Only the server is fake: tests drive the real sentinelhub-py client against it. Shapes follow the
documented service and what sentinelhub-py 3.12 sends and expects (read from its source):

* ``POST /auth/realms/main/protocol/openid-connect/token`` — OAuth2 client credentials, form-encoded
  (``grant_type=client_credentials&client_id=..&client_secret=..``; requests_oauthlib sends the client
  id in the body). 200: ``{"access_token", "expires_in", "refresh_expires_in", "token_type": "Bearer",
  "not-before-policy", "scope"}``; the token is JWT-shaped (its payload carries ``azp`` = client id,
  which ``SentinelHubSession.info()`` decodes). Wrong credentials: 401 with Keycloak's JSON
  ``{"error": "unauthorized_client" | "invalid_client", "error_description": ...}`` — oauthlib turns
  that into an ``OAuth2Error`` (not retried by sentinelhub-py).
* ``POST /api/v1/catalog/1.0.0/search`` — STAC item search. Honours ``datetime`` ("start/end"),
  ``limit`` (capped at :attr:`FakeSentinelHub.max_page_size` to exercise paging), ``next`` (an integer
  offset, as the service returns it) and a CQL2-text ``filter`` on ``eo:cloud_cover`` (``<``/``<=``).
  Answers a FeatureCollection ``{"type", "features": [{"type": "Feature", "stac_version", "id",
  "geometry", "bbox", "properties": {"datetime", "eo:cloud_cover", ...}}], "links": [],
  "context": {"limit", "returned", "next"?}}`` (``next`` only when more results exist — the client stops
  when it is absent). ``fields`` is accepted and ignored (the real service trims properties).
* ``POST /api/v1/process`` — JSON body (``input.bounds``, ``input.data[0].dataFilter.timeRange``,
  ``output.width/height/responses``, ``evalscript``). ``Accept`` must be ``image/tiff`` when there is
  one response (the body is then a single GeoTIFF-like TIFF) and ``application/x-tar`` when there are
  several (a tar of ``<identifier>.tif``), as sentinelhub-py requests. The image has the request's
  width x height, the evalscript's output band count and sampleType, pixel-interleaved (axes YXS).
  When the evalscript returns its input bands in order (``bands: [...]`` and ``output.bands`` equal
  in count), each output band is that input band simulated; content is deterministic:

  - ``dataMask`` 0 on the left eighth of the columns (a swath edge), 1 elsewhere;
  - for acquisitions with cloud cover > 0 a cloud block (rows < H/4, columns >= W/2): ``CLM`` 1,
    ``CLP`` 220, ``SCL`` 9, bright bands (7000 + 10 x band index); the two rows below it are
    ``SCL`` 3 (cloud shadow) but ``CLM`` 0;
  - elsewhere ``CLM`` 0, ``CLP`` 12, ``SCL`` 4 and vegetation-like DN (``VEGETATION_DN``) plus the
    acquisition's index in :attr:`FakeSentinelHub.acquisitions` and ``(x + y) % 7``;
  - no-data pixels are 0 in every band, ``CLM`` 255.

  Of several acquisitions in the time range the mosaicking order picks one (leastCC: lowest cloud
  cover; mostRecent; leastRecent). No acquisition in range: everything 0.

Errors look like the service's: ``{"error": {"status", "reason", "message", "code"}}``. Scripted
failures (:meth:`FakeSentinelHub.fail`) answer the next N requests of an endpoint with 429 (header
``Retry-After: 0``, milliseconds as Sentinel Hub sends it), 500, 503 or 401 before serving normally;
:attr:`FakeSentinelHub.reject_credentials` makes the token endpoint answer 401. :attr:`counts` counts
the requests each endpoint received (failed ones included).
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import re
import secrets
import tarfile
import threading
import urllib.parse
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

LOGGER = logging.getLogger(__name__)

TOKEN_PATH = "/auth/realms/main/protocol/openid-connect/token"
CATALOG_PATH = "/api/v1/catalog/1.0.0/search"
PROCESS_PATH = "/api/v1/process"

#: Typical L2A digital numbers of green vegetation.
VEGETATION_DN: dict[str, int] = {
    "B01": 300,
    "B02": 350,
    "B03": 600,
    "B04": 400,
    "B05": 1100,
    "B06": 2400,
    "B07": 2900,
    "B08": 3100,
    "B8A": 3200,
    "B09": 3300,
    "B10": 20,
    "B11": 1800,
    "B12": 900,
}

_REASONS = {
    400: ("Bad Request", "COMMON_BAD_PAYLOAD"),
    401: ("Unauthorized", "COMMON_UNAUTHORIZED"),
    406: ("Not Acceptable", "COMMON_NOT_ACCEPTABLE"),
    429: ("Too Many Requests", "RATE_LIMIT_EXCEEDED"),
    500: ("Internal Server Error", "RENDERER_EXCEPTION"),
    503: ("Service Unavailable", "SERVICE_UNAVAILABLE"),
}
_DTYPES = {"UINT8": np.uint8, "UINT16": np.uint16, "FLOAT32": np.float32, "AUTO": np.float32}


@dataclass
class Acquisition:
    """One catalogued scene: its sensing time (UTC) and scene cloud cover (percent)."""

    datetime: dt.datetime
    cloud_cover: float
    id: str = ""


@dataclass
class RecordedRequest:
    """What the server received (the token request's secret is not kept)."""

    endpoint: str
    path: str
    headers: dict[str, str]
    body: Any = None


@dataclass
class FakeSentinelHub:
    """The server's state; use as a context manager (``with FakeSentinelHub(...) as sh:``)."""

    client_id: str = "lcms-test-client"
    client_secret: str = field(default_factory=lambda: "s3cr3t-" + secrets.token_hex(8))
    acquisitions: list[Acquisition] = field(default_factory=list)
    max_page_size: int = 100
    reject_credentials: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, deque[int]] = {}
        self._tokens: set[str] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Sentinel Hub is not running")
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    def start(self) -> FakeSentinelHub:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-sentinelhub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeSentinelHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------ scripting

    def fail(self, endpoint: str, *statuses: int, after: int = 0) -> None:
        """Answer requests to ``endpoint`` ('token', 'catalog', 'process') with these statuses, in order,
        once ``after`` more requests have been served normally."""
        with self._lock:
            self._failures.setdefault(endpoint, deque()).extend([0] * after + list(statuses))

    def revoke_tokens(self) -> None:
        """Forget every issued token (API requests then get 401 until a new token is fetched)."""
        with self._lock:
            self._tokens.clear()

    def _next_failure(self, endpoint: str) -> int | None:
        with self._lock:
            queue = self._failures.get(endpoint)
            status = queue.popleft() if queue else None
            return status or None  # 0: a normal answer scripted by ``after``

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.counts[request.endpoint] += 1
            self.requests.append(request)

    # ------------------------------------------------------------------------------------ endpoints

    def issue_token(self, form: dict[str, str], basic: tuple[str, str] | None) -> tuple[int, dict[str, Any]]:
        client_id = form.get("client_id") or (basic[0] if basic else "")
        secret = form.get("client_secret") or (basic[1] if basic else "")
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type", "error_description": "Unsupported grant_type"}
        if self.reject_credentials or client_id != self.client_id:
            return 401, {"error": "invalid_client", "error_description": "Invalid client or Invalid client credentials"}
        if secret != self.client_secret:
            return 401, {"error": "unauthorized_client", "error_description": "Invalid client secret"}
        now = int(dt.datetime.now(dt.UTC).timestamp())
        claims = {"azp": client_id, "sub": "fake-user", "iat": now, "exp": now + 3600, "iss": self.base_url}

        def b64(obj: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

        token = f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64(claims)}.{secrets.token_hex(16)}"
        with self._lock:
            self._tokens.add(token)
        return 200, {
            "access_token": token,
            "expires_in": 3600,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": "email profile",
        }

    def authorised(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        with self._lock:
            return auth.startswith("Bearer ") and auth[len("Bearer ") :] in self._tokens

    def search(self, body: dict[str, Any]) -> dict[str, Any]:
        t0, t1 = _interval(body.get("datetime"))
        max_cc = 100.0
        match = re.search(r"eo:cloud_cover\s*(<=|<)\s*([0-9.]+)", str(body.get("filter") or ""))
        strict = False
        if match:
            max_cc, strict = float(match.group(2)), match.group(1) == "<"
        hits = [
            (i, a)
            for i, a in enumerate(self.acquisitions)
            if t0 <= a.datetime <= t1 and (a.cloud_cover < max_cc if strict else a.cloud_cover <= max_cc)
        ]
        hits.sort(key=lambda item: item[1].datetime)
        limit = min(int(body.get("limit", 10)), self.max_page_size)
        start = int(body.get("next") or 0)
        page = hits[start : start + limit]
        bbox = body.get("bbox") or [0.0, 0.0, 1.0, 1.0]
        features = [
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "stac_extensions": [],
                "id": a.id or f"S2A_MSIL2A_{a.datetime:%Y%m%dT%H%M%S}_N0509_R{i:03d}_T38RQV",
                "collection": "sentinel-2-l2a",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [
                            [bbox[0], bbox[1]],
                            [bbox[2], bbox[1]],
                            [bbox[2], bbox[3]],
                            [bbox[0], bbox[3]],
                            [bbox[0], bbox[1]],
                        ]
                    ],
                },
                "bbox": bbox,
                "properties": {
                    "datetime": a.datetime.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "platform": "sentinel-2a",
                    "instruments": ["msi"],
                    "constellation": "sentinel-2",
                    "gsd": 10,
                    "eo:cloud_cover": a.cloud_cover,
                    "proj:epsg": 32638,
                },
                "assets": {},
                "links": [],
            }
            for i, a in page
        ]
        context: dict[str, Any] = {"limit": limit, "returned": len(features)}
        if start + limit < len(hits):
            context["next"] = start + limit
        return {"type": "FeatureCollection", "features": features, "links": [], "context": context}

    def render(self, body: dict[str, Any], accept: str) -> tuple[int, str, bytes | dict[str, Any]]:
        """(status, content type, body) of a Process API request."""
        try:
            output = body["output"]
            width, height = int(output["width"]), int(output["height"])
            responses = output["responses"]
            data = body["input"]["data"][0]
            script = body["evalscript"]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            return 400, "application/json", _error(400, f"invalid request: {exc!r}")
        expected = "image/tiff" if len(responses) == 1 else "application/x-tar"
        if accept != expected:
            return 406, "application/json", _error(406, f"Accept must be {expected}, got {accept!r}")
        time_range = data.get("dataFilter", {}).get("timeRange", {})
        t0, t1 = _interval(f"{time_range.get('from', '..')}/{time_range.get('to', '..')}")
        max_cc = float(data.get("dataFilter", {}).get("maxCloudCoverage", 100))
        order = data.get("dataFilter", {}).get("mosaickingOrder", "mostRecent")
        chosen = _mosaic(self.acquisitions, t0, t1, max_cc, order)
        inputs = _input_bands(script)
        outputs = _outputs(script)
        images = {}
        for identifier, n_bands, sample_type in outputs:
            names = inputs if len(inputs) == n_bands else [f"band{i}" for i in range(n_bands)]
            images[identifier] = _tiff(_scene(names, height, width, chosen), _DTYPES.get(sample_type, np.uint16))
        wanted = [r["identifier"] for r in responses]
        missing = [w for w in wanted if w not in images]
        if missing:
            return 400, "application/json", _error(400, f"evalscript has no output(s) {missing}")
        if len(wanted) == 1:
            return 200, "image/tiff", images[wanted[0]]
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name in wanted:
                info = tarfile.TarInfo(f"{name}.tif")
                info.size = len(images[name])
                tar.addfile(info, io.BytesIO(images[name]))
        return 200, "application/x-tar", buffer.getvalue()


# ---------------------------------------------------------------------------------------- helpers


def _error(status: int, message: str) -> dict[str, Any]:
    reason, code = _REASONS.get(status, ("Error", "COMMON_EXCEPTION"))
    return {"error": {"status": status, "reason": reason, "message": message, "code": code}}


def _parse_time(text: str, default: dt.datetime) -> dt.datetime:
    if not text or text == "..":
        return default
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _interval(value: str | None) -> tuple[dt.datetime, dt.datetime]:
    lo = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    hi = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
    if not value:
        return lo, hi
    start, _, end = value.partition("/")
    return _parse_time(start, lo), _parse_time(end or start, hi)


def _mosaic(
    acquisitions: list[Acquisition], t0: dt.datetime, t1: dt.datetime, max_cc: float, order: str
) -> tuple[int, Acquisition] | None:
    hits = [(i, a) for i, a in enumerate(acquisitions) if t0 <= a.datetime <= t1 and a.cloud_cover <= max_cc]
    if not hits:
        return None
    if order == "leastCC":
        return min(hits, key=lambda h: (h[1].cloud_cover, h[1].datetime))
    if order == "leastRecent":
        return min(hits, key=lambda h: h[1].datetime)
    return max(hits, key=lambda h: h[1].datetime)


def _input_bands(script: str) -> list[str]:
    match = re.search(r"input\s*:\s*\[\s*\{\s*bands\s*:\s*(\[[^\]]*\])", script)
    return list(json.loads(match.group(1))) if match else []


def _outputs(script: str) -> list[tuple[str, int, str]]:
    found = re.findall(r'id\s*:\s*"(\w+)"\s*,\s*bands\s*:\s*(\d+)(?:\s*,\s*sampleType\s*:\s*"(\w+)")?', script)
    return [(ident, int(n), st or "AUTO") for ident, n, st in found] or [("default", 1, "AUTO")]


def _scene(names: list[str], h: int, w: int, chosen: tuple[int, Acquisition] | None) -> np.ndarray:
    out = np.zeros((h, w, len(names)), dtype=np.float64)
    if chosen is None:
        return out
    index, acq = chosen
    yy, xx = np.mgrid[0:h, 0:w]
    data = xx >= w // 8
    cloud = (yy < h // 4) & (xx >= w // 2) & (acq.cloud_cover > 0) & data
    shadow = (yy >= h // 4) & (yy < h // 4 + 2) & (xx >= w // 2) & (acq.cloud_cover > 0) & data
    for k, name in enumerate(names):
        if name == "dataMask":
            layer = data.astype(float)
        elif name == "CLM":
            layer = np.where(data, cloud.astype(float), 255.0)
        elif name == "CLP":
            layer = np.where(cloud, 220.0, 12.0)
        elif name == "SCL":
            layer = np.where(cloud, 9.0, np.where(shadow, 3.0, 4.0))
        else:
            base = VEGETATION_DN.get(name, 1000 + 10 * k)
            layer = np.where(cloud, 7000.0 + 10 * k, base + index + (xx + yy) % 7)
        out[..., k] = np.where(data, layer, 0.0) if name != "CLM" else layer
    return out


def _tiff(scene: np.ndarray, dtype: type) -> bytes:
    import tifffile

    array: np.ndarray = scene.astype(dtype)
    if array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    planar = "contig" if array.ndim == 3 else None
    tifffile.imwrite(buffer, array, photometric="minisblack", planarconfig=planar)
    return buffer.getvalue()


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the :class:`FakeSentinelHub` set as the class attribute ``fake``."""

    fake: FakeSentinelHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        LOGGER.debug("fake sentinelhub: " + format, *args)

    def _send(
        self, status: int, content_type: str, payload: bytes | dict[str, Any], extra: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_failure(self, status: int) -> None:
        extra = {"Retry-After": "0"} if status == 429 else None
        self._send(status, "application/json", _error(status, "scripted failure"), extra)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = urllib.parse.urlsplit(self.path).path
        endpoint = {TOKEN_PATH: "token", CATALOG_PATH: "catalog", PROCESS_PATH: "process"}.get(path)
        if endpoint is None:
            self._send(404, "application/json", _error(400, f"no endpoint {path}"))
            return
        fake = self.fake
        if endpoint == "token":
            form = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()}
            fake._record(
                RecordedRequest(endpoint, path, headers, {k: v for k, v in form.items() if k != "client_secret"})
            )
            failure = fake._next_failure(endpoint)
            if failure is not None:
                self._send_failure(failure)
                return
            basic = None
            if headers.get("authorization", "").startswith("Basic "):
                user, _, pw = base64.b64decode(headers["authorization"][6:]).decode().partition(":")
                basic = (urllib.parse.unquote(user), urllib.parse.unquote(pw))
            status, payload = fake.issue_token(form, basic)
            self._send(status, "application/json", payload)
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = None
        fake._record(RecordedRequest(endpoint, path, headers, body))
        failure = fake._next_failure(endpoint)
        if failure is not None:
            self._send_failure(failure)
            return
        if not fake.authorised(headers):
            msg = "You are not authorized! Please provide a valid access token to send along with the request."
            self._send(401, "application/json", _error(401, msg))
            return
        if not isinstance(body, dict):
            self._send(400, "application/json", _error(400, "request body is not a JSON object"))
            return
        if endpoint == "catalog":
            self._send(200, "application/geo+json", fake.search(body))
            return
        status, content_type, answer = fake.render(body, headers.get("accept", ""))
        self._send(status, content_type, answer)
