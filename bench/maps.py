"""Map tile latency: a PNG rendered from the published COGs, measured over HTTP from another process.

:func:`bench_map_tile` (called by ``make bench-services``; also ``python -m bench.maps``):

1. writes a published season of 2 x 2 tiles of ``tile_px`` px at 10 m (1024 px: 10.24 km, the size of
   production tiles) with :func:`lcms_service.maps_testing.make_project` — CLASS, CONFIDENCE and
   CHANGE COGs (with overviews) and the imagery (composite and dates);
2. starts the service under uvicorn in a child process on that project
   (:class:`lcms_service.testing.ServiceProcess`) with a scratch change store for the users and
   sessions (on the server of ``server_url``, else on the project-local embedded cluster), adds a
   viewer and logs in over HTTP;
3. requests ``requests`` map tiles (after 5 warm-up ones) at random places inside the data, at
   zooms 12..16 (one web tile meeting up to four project tiles at 12, one at 16), cycling through
   CLASS, CONFIDENCE and CHANGE, then as many imagery tiles (composite, true colour).

Target (issue 11): median <= 50 ms per map tile. Figures are reported, never enforced.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.services import bench_server, percentiles

log = logging.getLogger("bench.maps")

TARGET_MEDIAN_MS = 50.0
ZOOMS = (12, 13, 14, 15, 16)
BANDS = ("CLASS", "CONFIDENCE", "CHANGE")
#: Where the benchmark's tiles are: UTM 38N, near the demo's country.
EPSG, COL0, ROW0 = 32638, 62, 430


@contextlib.contextmanager
def _users_database(server_url: str | None) -> Iterator[str]:
    """A scratch, migrated change store for the service's users and sessions."""
    from lcms_service.testing import scratch_database

    with bench_server(server_url) as (server, _), scratch_database(server, prefix="lcms_bench_maps") as url:
        yield url


def _tiles_inside(bounds: list[float], zoom: int) -> list[Any]:
    """The web tiles of ``zoom`` inside ``bounds`` (those meeting it, when none is inside: small data)."""
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    west, south, east, north = bounds
    meeting = list(tms.tiles(west, south, east, north, [zoom]))
    inside = [
        t
        for t in meeting
        if (b := tms.bounds(t)).left >= west and b.right <= east and b.bottom >= south and b.top <= north
    ]
    return inside or meeting


def _measure(client: Any, urls: list[str], warmup: int = 5) -> dict[str, Any]:
    times: list[float] = []
    sizes: list[int] = []
    statuses: dict[int, int] = {}
    for k, url in enumerate(urls):
        t0 = time.perf_counter()
        resp = client.get(url)
        body = resp.content  # the whole body is part of the request's time
        took = (time.perf_counter() - t0) * 1000
        if resp.status_code not in (200, 204):
            raise RuntimeError(f"GET {url} -> {resp.status_code}: {body[:300]!r}")
        if k < warmup:
            continue
        times.append(took)
        sizes.append(len(body))
        statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
    return {
        "requests": len(times),
        "statuses": statuses,
        "png_kib_median": round(statistics.median(sizes) / 1024, 1),
        **percentiles(times),
    }


def bench_map_tile(
    server_url: str | None = None, *, requests: int = 60, tile_px: int = 1024, seed: int = 0
) -> dict[str, Any]:
    """Median (and p95) ms of a map tile and of an imagery tile over HTTP; see the module docstring.

    ``server_url``: a database URL of the PostgreSQL + PostGIS server for the scratch user store
    (None: the embedded cluster). Returns ``{"map": {...median_ms...}, "imagery": {...}, "target_ms",
    "met", ...}``.
    """
    import httpx

    from lcms_service.maps_testing import make_project, utm_block
    from lcms_service.testing import ServiceProcess
    from lcms_tasks.users import add_user

    rng = np.random.default_rng(seed)
    side = tile_px * 10.0
    with tempfile.TemporaryDirectory(prefix="lcms-bench-maps-") as tmp:
        t0 = time.perf_counter()
        project = make_project(
            Path(tmp),
            aoi=utm_block(EPSG, COL0 * 1024 // tile_px, ROW0 * 1024 // tile_px, 2, 2, side),
            aoi_crs=EPSG,
            tile_px=tile_px,
            resolution=10.0,
            seasons=("2024",),
            n_dates=3,
            seed=seed,
            features=False,
        )
        made_s = time.perf_counter() - t0
        log.info("published %d tiles of %d px in %.1f s", len(project.tiles), tile_px, made_s)
        password = "bench maps viewer password"
        with (
            _users_database(server_url) as url,
            ServiceProcess(url, env={"LCMS_CONFIG": str(project.config_path)}) as service,
            httpx.Client(base_url=service.url, timeout=60) as client,
        ):
            add_user(url, "bench_viewer", "viewer", password)
            login = client.post("/api/auth/login", json={"name": "bench_viewer", "password": password})
            if login.status_code != 200:
                raise RuntimeError(f"login failed: {login.status_code} {login.text[:300]}")
            bounds = client.get("/api/projects").json()[0]["bounds"]
            picks = []
            for k in range(requests + 5):
                zoom = ZOOMS[k % len(ZOOMS)]
                inside = _tiles_inside(bounds, zoom)
                picks.append((zoom, inside[int(rng.integers(0, len(inside)))]))
            map_urls = [
                f"/api/maps/2024/{BANDS[k % len(BANDS)]}/tiles/{t.z}/{t.x}/{t.y}.png" for k, (_, t) in enumerate(picks)
            ]
            imagery_urls = [f"/api/imagery/2024/tiles/{t.z}/{t.x}/{t.y}.png" for _, t in picks]
            maps = _measure(client, map_urls)
            imagery = _measure(client, imagery_urls)
            for figures, urls in ((maps, map_urls), (imagery, imagery_urls)):
                figures["median_ms_by_zoom"] = {
                    zoom: _measure(client, [u for u, (z, _) in zip(urls, picks, strict=True) if z == zoom], warmup=0)[
                        "median_ms"
                    ]
                    for zoom in ZOOMS
                }
    return {
        "tiles": len(project.tiles),
        "tile_px": tile_px,
        "zooms": list(ZOOMS),
        "publish_seconds": round(made_s, 1),
        "map": maps,
        "imagery": imagery,
        "target_ms": TARGET_MEDIAN_MS,
        "met": maps["median_ms"] <= TARGET_MEDIAN_MS,
        "path": "bench.maps.bench_map_tile (uvicorn child process, httpx, logged-in viewer)",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.maps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="a database URL of the server for the scratch user store")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--tile-px", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures to <out>/maps.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    result = bench_map_tile(args.database_url, requests=args.requests, tile_px=args.tile_px)
    m, i = result["map"], result["imagery"]
    print(f"map tile: median {m['median_ms']} ms, p95 {m['p95_ms']} ms over {m['requests']} requests")
    print(f"  median ms by zoom: {m['median_ms_by_zoom']}")
    print(f"imagery tile: median {i['median_ms']} ms, p95 {i['p95_ms']} ms")
    print(f"  median ms by zoom: {i['median_ms_by_zoom']}")
    print(f"target {result['target_ms']} ms median: {'met' if result['met'] else 'MISSED'}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "maps.json"
        path.write_text(json.dumps(result, indent=1))
        print(path.resolve())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
