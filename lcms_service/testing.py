"""Helpers for the service's tests and benchmark: scratch databases, synthetic changes, a server in a thread.

* :func:`scratch_database` creates a uniquely named database on a server (the one at
  ``127.0.0.1:5432`` or the embedded cluster), migrates it with the change store's migrations and
  drops it afterwards.
* :func:`synthetic_changes` draws change polygons (star-shaped, hence valid, MultiPolygons in
  EPSG:4326) with every column of ``lcms.changes``; :func:`copy_changes` bulk-loads them with COPY.
* :class:`ServiceProcess` runs the app under uvicorn on a free port in a child process, so real
  HTTP clients (GDAL, httpx, schemathesis) talk to it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

STATUSES = ("detected", "confirmed", "rejected", "corrected")
CLASS_NAMES = {1: "cropland", 2: "forest", 3: "grassland", 4: "water", 5: "built-up", 6: "bare land"}
COPY_COLUMNS = (
    "id",
    "project",
    "season_before",
    "season_after",
    "from_class",
    "from_name",
    "to_class",
    "to_name",
    "area_m2",
    "confidence",
    "geom",
    "tiles",
    "run_id",
    "model_run_ids",
    "status",
    "datetime",
)
_M_PER_DEG = 111_320.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` on the same server."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the change store's newest schema."""
    from lcms_tasks.store import upgrade

    upgrade(url)


@contextlib.contextmanager
def scratch_database(server_url: str, *, prefix: str = "lcms_service", migrated: bool = True) -> Iterator[str]:
    """A new database on ``server_url``'s server (migrated), dropped (connections and all) afterwards."""
    import psycopg2

    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        url = with_database(server_url, name)
        try:
            if migrated:
                migrate(url)
            yield url
        finally:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@dataclass
class SyntheticChanges:
    """Columns of ``n`` synthetic changes (numpy arrays / lists) and their shapely geometries."""

    ids: list[str]
    geoms: Any  # numpy array of shapely MultiPolygons
    from_class: np.ndarray
    to_class: np.ndarray
    area_m2: np.ndarray
    confidence: np.ndarray
    status: list[str]
    project: str
    season_before: str
    season_after: str
    datetime: dt.datetime
    run_id: str

    def __len__(self) -> int:
        return len(self.ids)


def synthetic_changes(
    n: int,
    bounds: tuple[float, float, float, float],
    *,
    seed: int = 0,
    radius_m: tuple[float, float] = (40.0, 120.0),
    vertices: int = 8,
    project: str = "synthetic",
    season_before: str = "2023",
    season_after: str = "2024",
    season_start: dt.datetime = dt.datetime(2024, 3, 1, tzinfo=dt.UTC),
    run_id: str = "synthetic_run",
) -> SyntheticChanges:
    """``n`` change polygons spread uniformly over ``bounds`` (lon/lat), with every column of the store."""
    import shapely

    rng = np.random.default_rng(seed)
    west, south, east, north = bounds
    cx = rng.uniform(west, east, n)
    cy = rng.uniform(south, north, n)
    # Star-shaped around the centre (increasing angles less than pi apart, positive radii): always a
    # simple, valid polygon.
    step = 2 * np.pi / vertices
    angles = np.arange(vertices) * step + rng.uniform(-0.4, 0.4, (n, vertices)) * step
    radius = rng.uniform(*radius_m, (n, 1)) * rng.uniform(0.6, 1.0, (n, vertices))
    dy = radius * np.sin(angles) / _M_PER_DEG
    dx = radius * np.cos(angles) / (_M_PER_DEG * np.cos(np.radians(cy))[:, None])
    ring = np.stack([cx[:, None] + dx, cy[:, None] + dy], axis=-1)
    ring = np.concatenate([ring, ring[:, :1]], axis=1)
    polygons = shapely.polygons(ring)
    geoms = shapely.multipolygons(polygons[:, None])
    area = shapely.area(polygons) * _M_PER_DEG**2 * np.cos(np.radians(cy))
    from_class = rng.integers(1, 7, n)
    to_class = (from_class + rng.integers(1, 6, n) - 1) % 6 + 1  # never equal to from_class
    statuses = rng.choice(len(STATUSES), n, p=[0.7, 0.15, 0.1, 0.05])
    raw = rng.bytes(16 * n)
    ids = [str(uuid.UUID(bytes=raw[16 * i : 16 * i + 16], version=4)) for i in range(n)]
    return SyntheticChanges(
        ids=ids,
        geoms=geoms,
        from_class=from_class,
        to_class=to_class,
        area_m2=area,
        confidence=rng.uniform(0.3, 1.0, n).round(4),
        status=[STATUSES[s] for s in statuses],
        project=project,
        season_before=season_before,
        season_after=season_after,
        datetime=season_start,
        run_id=run_id,
    )


def _copy_text(changes: SyntheticChanges, start: int, stop: int) -> str:
    import shapely

    geoms = shapely.set_srid(changes.geoms[start:stop], 4326)
    wkb = shapely.to_wkb(geoms, hex=True, include_srid=True)
    when = changes.datetime.isoformat()
    c = changes
    lines = [
        "\t".join(
            (
                c.ids[i],
                c.project,
                c.season_before,
                c.season_after,
                str(c.from_class[i]),
                CLASS_NAMES[int(c.from_class[i])],
                str(c.to_class[i]),
                CLASS_NAMES[int(c.to_class[i])],
                repr(float(c.area_m2[i])),
                repr(float(c.confidence[i])),
                wkb[i - start],
                "{synthetic_tile}",
                c.run_id,
                "{synthetic_model}",
                c.status[i],
                when,
            )
        )
        for i in range(start, stop)
    ]
    return "\n".join(lines) + "\n"


def copy_changes(url: str, changes: SyntheticChanges, *, chunk: int = 100_000) -> float:
    """COPY ``changes`` into ``lcms.changes`` in one transaction; the seconds the COPY took."""
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        took = 0.0
        with conn, conn.cursor() as cur:
            for start in range(0, len(changes), chunk):
                text = _copy_text(changes, start, min(start + chunk, len(changes)))
                t0 = time.perf_counter()
                cur.copy_expert(f"COPY lcms.changes ({', '.join(COPY_COLUMNS)}) FROM STDIN", io.StringIO(text))
                took += time.perf_counter() - t0
        with conn.cursor() as cur:
            conn.autocommit = True
            cur.execute("ANALYZE lcms.changes")
        return took
    finally:
        conn.close()


class ServiceProcess:
    """The service under uvicorn in a child process on ``127.0.0.1:<free port>`` (``with`` starts and stops it).

    A separate process, not a thread: GDAL (through fiona) holds the GIL while it waits for the server's
    answer, so a server thread in the same interpreter could never answer it.
    """

    def __init__(self, database_url: str, *, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.database_url = database_url
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="lcms-service-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def __enter__(self) -> ServiceProcess:
        env = {**os.environ, **self.extra_env, "LCMS_SERVICE_DATABASE_URL": self.database_url}
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "lcms_service.app:create_app"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--no-access-log", "--log-level", "warning"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return self
            time.sleep(0.2)
        self.__exit__()
        raise TimeoutError(f"the service did not answer on port {self.port} within 60 s:\n{self.log_tail()}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
