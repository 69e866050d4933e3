"""``python -m bench.services`` (``make bench-services``): the change store and its OGC API on 1,000,000 polygons.

What it measures (targets from issue 10; reported, never enforced):

1. **bulk load** of ``--n`` synthetic change polygons into a freshly migrated store, through the
   change store's own path (:func:`lcms_tasks.store.bench.bench_load`: validation, dissolving,
   reprojection, ids, COPY and the set-based SQL in one transaction) — target >= 50,000 polygons/s;
2. a **bbox query** returning about 1,000 features through the HTTP API (``/ogc/collections/
   lcms.changes/items?bbox=...``), ``--requests`` requests at random places, from this process with
   httpx while the service runs under uvicorn in another — median <= 100 ms, p95 <= 250 ms;
3. a **vector tile** (``.../tiles/WebMercatorQuad/{z}/{x}/{y}``) at the zoom whose tiles hold about
   5,000 polygons — median <= 150 ms;
4. **COG writing** of a 1000 px tile, 3 bands with overviews (:func:`lcms_tasks.publish.cog.bench_cog_write`)
   — <= 1 s;
5. a **map tile** (PNG rendered from the published COGs with rio-tiler, logged in, over HTTP from this
   process; :func:`bench.maps.bench_map_tile`) — median <= 50 ms (issue 11);
6. the Validation Tool's **queue**: its first page with ``--queue-n`` (100,000) changes in the store,
   over HTTP (:func:`bench.validation.bench_queue`) — median <= 300 ms (issue 11).

The database is created for the run (``lcms_bench_<random>``) on the server of ``--database-url``
(any database URL of it: a new one is created beside it), else on the project-local embedded
cluster (started, and stopped again, if it is not running), and dropped afterwards. For each HTTP
figure the same query's time inside PostgreSQL (``EXPLAIN ANALYZE`` of the SQL tipg runs) is
reported beside it, so a miss says whether the database or the HTTP/serialisation side is slow.
Figures go to stdout and ``<out>/services.json``; the last line printed is that file's path.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench.services")

TARGETS = {
    "load_polygons_per_s": 50_000,
    "bbox_median_ms": 100.0,
    "bbox_p95_ms": 250.0,
    "tile_median_ms": 150.0,
    "cog_seconds": 1.0,
    "map_tile_median_ms": 50.0,
    "queue_first_page_median_ms": 300.0,
}
COLLECTION = "lcms.changes"
BBOX_FEATURES = 1_000
TILE_FEATURES = 5_000


# -- database ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def bench_server(database_url: str | None) -> Iterator[tuple[str, str]]:
    """(a URL of the server's maintenance database, what it is); the embedded cluster when no URL is given."""
    if database_url:
        yield database_url, "the server of --database-url"
        return
    from lcms_tasks.store import EmbeddedPostgres

    embedded = EmbeddedPostgres()
    was_running = embedded.is_running()
    embedded.start(migrate=False)
    try:
        yield embedded.admin_url(), f"the embedded cluster ({embedded.data_dir})"
    finally:
        if not was_running:
            embedded.stop()


def load(url: str, n: int) -> dict[str, Any]:
    """Bulk-load ``n`` polygons: the store's benchmark (its load path) if it has one, else a plain COPY."""
    try:
        from lcms_tasks.store.bench import bench_load
    except ImportError:
        pass
    else:
        out = bench_load(url, n, keep=True)
        out["path"] = "lcms_tasks.store.bench.bench_load (prepare + store, one transaction)"
        return out
    from lcms_service.testing import copy_changes, synthetic_changes

    changes = synthetic_changes(n, (44.0, 27.5, 45.0, 28.5), seed=0)
    seconds = copy_changes(url, changes)
    return {"n": n, "polygons_per_s": round(n / seconds, 1), "seconds": round(seconds, 3), "path": "plain COPY"}


def _sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(query, args or None)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def prepare_for_queries(url: str) -> dict[str, Any]:
    """VACUUM ANALYZE (visibility map and statistics, as autovacuum would have by then); the data's extent."""
    t0 = time.perf_counter()
    _sql(url, "VACUUM ANALYZE lcms.changes")
    ((count, west, south, east, north),) = _sql(
        url,
        "WITH e AS (SELECT count(*) AS n, ST_Extent(geom) AS b FROM lcms.changes) "
        "SELECT n, ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) FROM e",
    )
    size = _sql(url, "SELECT pg_total_relation_size('lcms.changes')")[0][0]
    return {
        "rows": int(count),
        "extent": [west, south, east, north],
        "table_bytes": int(size),
        "vacuum_analyze_s": round(time.perf_counter() - t0, 2),
    }


# -- HTTP ----------------------------------------------------------------------------------------------
def percentiles(ms: list[float]) -> dict[str, float]:
    """Median, p95, min and max of request times (ms), rounded to 0.1 ms."""
    return {
        "median_ms": round(statistics.median(ms), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "min_ms": round(min(ms), 1),
        "max_ms": round(max(ms), 1),
    }


def _timed_get(client: Any, url: str, params: dict[str, Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    resp = client.get(url, params=params)
    body = resp.content  # the whole body is part of the request's time
    took = (time.perf_counter() - t0) * 1000
    if resp.status_code != 200:
        raise RuntimeError(f"GET {resp.url} -> {resp.status_code}: {body[:300]!r}")
    return took, resp


def _bbox_side(url: str, extent: list[float], rows: int, rng: np.random.Generator) -> float:
    """A square bbox side (degrees) that holds about BBOX_FEATURES polygons where the data are."""
    west, south, east, north = extent
    side = math.sqrt((east - west) * (north - south) * BBOX_FEATURES / rows)
    for _ in range(3):  # correct the density estimate on the real data
        counts = []
        for _ in range(10):
            x = rng.uniform(west, east - side)
            y = rng.uniform(south, north - side)
            counts.append(
                _sql(
                    url,
                    "SELECT count(*) FROM lcms.changes WHERE geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326)",
                    x,
                    y,
                    x + side,
                    y + side,
                )[0][0]
            )
        mean = max(statistics.mean(counts), 1.0)
        side *= math.sqrt(BBOX_FEATURES / mean)
    return side


def bench_bbox(base: str, url: str, prep: dict[str, Any], requests: int, rng: np.random.Generator) -> dict[str, Any]:
    import httpx

    west, south, east, north = prep["extent"]
    side = _bbox_side(url, prep["extent"], prep["rows"], rng)
    boxes = []
    for _ in range(requests + 5):
        x = rng.uniform(west, east - side)
        y = rng.uniform(south, north - side)
        boxes.append((x, y, x + side, y + side))
    times: list[float] = []
    returned: list[int] = []
    sizes: list[int] = []
    items = f"{base}/ogc/collections/{COLLECTION}/items"
    with httpx.Client(timeout=60) as client:
        for k, box in enumerate(boxes):
            params = {"bbox": ",".join(f"{v:.6f}" for v in box), "limit": 5000}
            took, resp = _timed_get(client, items, params)
            if k < 5:
                continue  # warm-up: connections, the pool, the catalog
            times.append(took)
            returned.append(int(resp.json()["numberReturned"]))
            sizes.append(len(resp.content))
    # PostgreSQL's share, on the box whose answer is the median one
    median_box = boxes[5:][int(np.argsort(returned)[len(returned) // 2])]
    db_ms = _explain_bbox(url, median_box)
    return {
        "requests": len(times),
        "bbox_side_deg": round(side, 5),
        "features_median": int(statistics.median(returned)),
        "features_range": [min(returned), max(returned)],
        "response_kib_median": round(statistics.median(sizes) / 1024, 1),
        **percentiles(times),
        "in_database_ms": db_ms,
    }


def _explain_bbox(url: str, box: tuple[float, float, float, float]) -> dict[str, float]:
    """PostgreSQL's own execution time of tipg's two queries for ``box`` (count, then the page of features)."""
    env = "ST_SetSRID(ST_GeomFromGeoJSON('{}'), 4326)".format(
        json.dumps(
            {
                "type": "Polygon",
                "coordinates": [
                    [[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]], [box[0], box[1]]]
                ],
            }
        )
    )
    where = f"WHERE st_intersects(geom, {env})"
    columns = (
        "area_m2, confidence, corrected_from_class, corrected_to_class, datetime, detected_at, from_class, "
        "from_name, id, model_run_ids, project, run_id, season_after, season_before, status, tiles, to_class, "
        "to_name, updated_at, version, id AS tipg_id, CAST(ST_AsGeoJSON(CAST(geom AS geometry)) AS json) AS tipg_geom"
    )
    out = {}
    for name, query in (
        ("count", f"SELECT COUNT(*) FROM lcms.changes {where}"),
        ("features", f"SELECT {columns} FROM lcms.changes {where} ORDER BY id LIMIT 5000 OFFSET 0"),
    ):
        # in a session set up as the service's are (no parallel workers: see lcms_service.database)
        plan = _sql(url, f"SET max_parallel_workers_per_gather = 0; EXPLAIN (ANALYZE, FORMAT JSON) {query}")[0][0]
        out[f"{name}_ms"] = round(float(plan[0]["Execution Time"]), 1)
    return out


def _tile_count(url: str, bounds: Any) -> int:
    """Polygons intersecting ``bounds`` (west, south, east, north in lon/lat)."""
    return int(
        _sql(
            url,
            "SELECT count(*) FROM lcms.changes WHERE ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326))",
            *bounds,
        )[0][0]
    )


def bench_tiles(base: str, url: str, prep: dict[str, Any], requests: int, rng: np.random.Generator) -> dict[str, Any]:
    import httpx
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    west, south, east, north = prep["extent"]
    cx, cy = (west + east) / 2, (south + north) / 2
    # The zoom whose tile at the centre of the data holds closest to TILE_FEATURES polygons.
    by_zoom = {z: _tile_count(url, tuple(tms.bounds(tms.tile(cx, cy, z)))) for z in range(8, 16)}
    zoom = min(by_zoom, key=lambda z: abs(math.log(max(by_zoom[z], 1) / TILE_FEATURES)))
    inner = [
        t
        for t in tms.tiles(west, south, east, north, [zoom])
        if (b := tms.bounds(t)).left >= west and b.right <= east and b.bottom >= south and b.top <= north
    ]
    if not inner:
        raise RuntimeError(f"no tile of zoom {zoom} lies inside the data's extent {prep['extent']}")
    picks = [inner[i] for i in rng.integers(0, len(inner), requests + 5)]
    times: list[float] = []
    sizes: list[int] = []
    with httpx.Client(timeout=60) as client:
        for k, t in enumerate(picks):
            took, resp = _timed_get(
                client, f"{base}/ogc/collections/{COLLECTION}/tiles/WebMercatorQuad/{t.z}/{t.x}/{t.y}", {}
            )
            if k >= 5:
                times.append(took)
                sizes.append(len(resp.content))
    counts = [_tile_count(url, tuple(tms.bounds(t))) for t in picks[5:15]]
    return {
        "zoom": zoom,
        "polygons_per_tile_by_zoom": by_zoom,
        "tiles_inside_extent": len(inner),
        "requests": len(times),
        "polygons_median": int(statistics.median(counts)),
        "tile_kib_median": round(statistics.median(sizes) / 1024, 1),
        **percentiles(times),
    }


# -- COG -----------------------------------------------------------------------------------------------
def bench_cog() -> dict[str, Any]:
    try:
        from lcms_tasks.publish.cog import bench_cog_write
    except ImportError:
        return {"skipped": "lcms_tasks.publish.cog.bench_cog_write is not there"}
    out = bench_cog_write(1000)
    out["path"] = "lcms_tasks.publish.cog.bench_cog_write"
    return out


# -- report --------------------------------------------------------------------------------------------
def verdicts(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each figure against its target: value, target, met, and by how much it is missed."""
    figures = {
        "load_polygons_per_s": (result["load"].get("polygons_per_s"), "min"),
        "bbox_median_ms": (result["bbox"].get("median_ms"), "max"),
        "bbox_p95_ms": (result["bbox"].get("p95_ms"), "max"),
        "tile_median_ms": (result["tile"].get("median_ms"), "max"),
        "cog_seconds": (result["cog"].get("seconds"), "max"),
        "map_tile_median_ms": (result.get("map_tile", {}).get("map", {}).get("median_ms"), "max"),
        "queue_first_page_median_ms": (result.get("queue", {}).get("median_ms"), "max"),
    }
    out = {}
    for name, (value, kind) in figures.items():
        target = TARGETS[name]
        if value is None:
            out[name] = {"value": None, "target": target, "met": None}
            continue
        met = value >= target if kind == "min" else value <= target
        entry: dict[str, Any] = {"value": value, "target": target, "met": met}
        if not met:
            entry["missed_by"] = f"{abs(value - target) / target:.0%}"
        out[name] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.services", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        help="a database URL of the PostgreSQL + PostGIS server to use (a new database is created on it and "
        "dropped afterwards); default: the project-local embedded cluster",
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="change polygons (default %(default)s)")
    parser.add_argument("--requests", type=int, default=60, help="timed HTTP requests per figure (>= 50)")
    parser.add_argument("--queue-n", type=int, default=100_000, help="changes in the store for the queue figure")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="folder of services.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per timed request otherwise
    from lcms_service.settings import redact_url
    from lcms_service.testing import ServiceProcess, scratch_database

    rng = np.random.default_rng(args.seed)
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "n": args.n,
    }
    with bench_server(args.database_url) as (server, where):
        result["server"] = f"{redact_url(server)} ({where})"
        with scratch_database(server, prefix="lcms_bench") as url:
            log.info("loading %d polygons into %s", args.n, redact_url(url))
            result["load"] = load(url, args.n)
            print(f"bulk load: {result['load']['polygons_per_s']:,.0f} polygons/s ({result['load']['seconds']} s)")
            result["store"] = prepare_for_queries(url)
            with ServiceProcess(url, env={"LCMS_SERVICE_CATALOG_TTL_S": "0"}) as service:
                result["bbox"] = bench_bbox(service.url, url, result["store"], args.requests, rng)
                b = result["bbox"]
                print(
                    f"bbox query: {b['features_median']} features, median {b['median_ms']} ms, p95 {b['p95_ms']} ms "
                    f"over {b['requests']} requests (in PostgreSQL: {b['in_database_ms']})"
                )
                result["tile"] = bench_tiles(service.url, url, result["store"], args.requests, rng)
                t = result["tile"]
                print(
                    f"vector tile: zoom {t['zoom']}, {t['polygons_median']} polygons, median {t['median_ms']} ms, "
                    f"p95 {t['p95_ms']} ms over {t['requests']} requests"
                )
        from bench.maps import bench_map_tile
        from bench.validation import bench_queue

        result["map_tile"] = bench_map_tile(server, requests=args.requests, seed=args.seed)
        m = result["map_tile"]["map"]
        print(f"map tile (PNG from the COGs): median {m['median_ms']} ms, p95 {m['p95_ms']} ms over {m['requests']}")
        result["queue"] = bench_queue(server, args.queue_n, requests=max(args.requests // 2, 30), seed=args.seed)
        q = result["queue"]
        print(
            f"validation queue, first page with {q['n']:,} changes: median {q['median_ms']} ms, p95 {q['p95_ms']} ms "
            f"(in PostgreSQL: {q['in_database_ms']} ms)"
        )
    result["cog"] = bench_cog()
    if "seconds" in result["cog"]:
        print(f"COG writing: 1000 px, 3 bands with overviews: {result['cog']['seconds']} s")
    result["verdicts"] = verdicts(result)
    for name, v in result["verdicts"].items():
        state = "met" if v["met"] else ("n/a" if v["met"] is None else f"MISSED by {v['missed_by']}")
        print(f"  {name:22s} {v['value']!s:>12} (target {v['target']}): {state}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "services.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(path.resolve())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
