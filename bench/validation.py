"""The Validation Tool's queue under load: its first page with 100,000 changes in the store, over HTTP.

:func:`bench_queue` (called by ``make bench-services``; ``python -m bench.validation`` runs it alone)
creates a scratch database on the server of ``url`` (migrated; dropped afterwards), COPYs ``n``
synthetic changes into it (:func:`lcms_service.testing.synthetic_changes`: 70 % detected, the rest
decided), adds a validator, starts the service under uvicorn in another process, logs in over HTTP and
times ``GET /api/changes`` — the first page of 50 in the default order (priority = area × (1 −
confidence), over the whole store, no filter) and, as the tool asks for it, of one project and
season pair still to decide — from this process with httpx (the whole body read). Target: median
<= 300 ms (reported, never enforced). The time of the same queries run straight on the database
(:func:`lcms_service.validation_store.queue` on an asyncpg connection, no HTTP, no login) is reported
beside it (``in_database_ms``), so a miss says which side is slow.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.validation")

TARGET_MS = 300.0
USER = "bench_validator"
PASSWORD = "bench-validator-password-0"


def _direct_ms(url: str, params: dict[str, Any]) -> float:
    """Best of 3 (ms): the queue's queries for ``params`` on a direct connection (as the service's sessions run)."""
    import asyncio

    import asyncpg

    from lcms_service import validation_store as vs

    async def go() -> float:
        conn = await asyncpg.connect(url, server_settings={"max_parallel_workers_per_gather": "0"})
        try:
            filters = vs.QueueFilter(
                project=params.get("project"),
                season_before=params.get("season_before"),
                season_after=params.get("season_after"),
                status=[params["status"]] if "status" in params else None,
            )
            t0 = time.perf_counter()
            await vs.queue(conn, filters)
            return (time.perf_counter() - t0) * 1000
        finally:
            await conn.close()

    return round(min(asyncio.run(go()) for _ in range(3)), 1)


def bench_queue(url: str, n: int = 100_000, *, requests: int = 30, seed: int = 0) -> dict[str, Any]:
    """The queue's first page with ``n`` changes in a scratch database on ``url``'s server, timed over HTTP.

    ``url``: any database URL of the PostgreSQL server (with PostGIS) to use. Returns the figures
    (``median_ms`` and ``p95_ms`` of the unfiltered first page, ``filtered``: the same for one project and
    season pair still to decide, ``in_database_ms``, ``target_ms``, ``ok``).
    """
    import httpx
    import numpy as np

    from lcms_service.auth import CSRF_HEADER
    from lcms_service.testing import ServiceProcess, copy_changes, scratch_database, synthetic_changes
    from lcms_tasks.users import add_user

    with scratch_database(url, prefix="lcms_bench_queue") as db:
        t0 = time.perf_counter()
        changes = synthetic_changes(n, (44.0, 27.5, 45.0, 28.5), seed=seed)
        copy_changes(db, changes)
        fill_s = time.perf_counter() - t0
        add_user(db, USER, "validator", PASSWORD)
        with ServiceProcess(db) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
            login = client.post("/api/auth/login", json={"name": USER, "password": PASSWORD})
            login.raise_for_status()
            client.headers[CSRF_HEADER] = login.json()["csrf_token"]
            variants = {
                "first_page": {},
                "filtered": {
                    "project": changes.project,
                    "season_before": changes.season_before,
                    "season_after": changes.season_after,
                    "status": "detected",
                },
            }
            out: dict[str, Any] = {}
            for name, params in variants.items():
                times: list[float] = []
                total = 0
                for k in range(requests + 3):
                    t = time.perf_counter()
                    resp = client.get("/api/changes", params=params)
                    body = resp.content
                    took = (time.perf_counter() - t) * 1000
                    if resp.status_code != 200:
                        raise RuntimeError(f"GET /api/changes -> {resp.status_code}: {body[:300]!r}")
                    if k >= 3:  # warm-up: connections, pools, the session lookup
                        times.append(took)
                    total = int(resp.json()["total"])
                out[name] = {
                    "params": params,
                    "total": total,
                    "items": len(resp.json()["items"]),
                    "median_ms": round(statistics.median(times), 1),
                    "p95_ms": round(float(np.percentile(times, 95)), 1),
                    "min_ms": round(min(times), 1),
                    "in_database_ms": _direct_ms(db, params),
                }
    first = out["first_page"]
    return {
        "n": n,
        "requests": requests,
        "fill_seconds": round(fill_s, 2),
        "median_ms": first["median_ms"],
        "p95_ms": first["p95_ms"],
        "in_database_ms": first["in_database_ms"],
        "filtered": out["filtered"],
        "target_ms": TARGET_MS,
        "ok": bool(first["median_ms"] <= TARGET_MS and out["filtered"]["median_ms"] <= TARGET_MS),
        "measured": "GET /api/changes (limit 50, order priority), logged in, from another process over HTTP",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.validation", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a database URL of the server to use (a scratch database is made beside it)",
    )
    parser.add_argument("--n", type=int, default=100_000, help="changes in the store")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per variant")
    parser.add_argument("--out", type=Path, help="folder for validation.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    result = bench_queue(args.database_url, args.n, requests=args.requests)
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "validation.json"
        path.write_text(json.dumps(result, indent=1))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
