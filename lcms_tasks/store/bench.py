"""Bulk-load benchmark of the change store (``make bench-services`` calls :func:`bench_load`).

Makes ``n`` synthetic change polygons (L shapes of 10 m pixels, 7 vertices; 1 % touch their tile's
edge, so the dissolving step has candidates to test) on a grid of tiles in one UTM zone, then loads
them through the same path as
:func:`lcms_tasks.store.load.load_season`: validation, dissolving across tile edges, areas, spatial
order (``prepare``); ids, reprojection, binary encoding, COPY and the set-based SQL in one
transaction (``store``). Only these two steps are timed, not the making of the polygons.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import numpy as np

from lcms_tasks.store.db import connect, describe
from lcms_tasks.store.load import TileChanges, prepare_changes, store_changes

log = logging.getLogger(__name__)

BENCH_PROJECT = "lcms_bench"
TILE_SIDE_M = 10_240.0
EPSG = 32638


def synthetic_tiles(n: int, *, per_tile: int = 10_000, seed: int = 0) -> list[TileChanges]:
    """``n`` change polygons over ``ceil(n / per_tile)`` tiles (a square grid), in the read_changes schema."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    rng = np.random.default_rng(seed)
    n_tiles = max(1, -(-n // per_tile))
    side = int(np.ceil(np.sqrt(n_tiles)))
    col0, row0 = 40, 300
    out: list[TileChanges] = []
    left = n
    for k in range(n_tiles):
        m = min(per_tile, left)
        left -= m
        col, row = col0 + k % side, row0 + k // side
        x0, y0 = col * TILE_SIDE_M, row * TILE_SIDE_M
        # Non-overlapping cells of 100 m; an L of 3-8 x 3-8 pixels in each used cell.
        cells = rng.choice(int((TILE_SIDE_M // 100) ** 2), size=m, replace=False)
        cx = x0 + (cells % int(TILE_SIDE_M // 100)) * 100.0
        cy = y0 + (cells // int(TILE_SIDE_M // 100)) * 100.0
        w = rng.integers(3, 9, m) * 10.0
        h = rng.integers(3, 9, m) * 10.0
        notch = np.minimum(w, h) / 2
        xs = np.stack([cx, cx + w, cx + w, cx + notch, cx + notch, cx, cx], axis=1)
        ys = np.stack([cy, cy, cy + notch, cy + notch, cy + h, cy + h, cy], axis=1)
        coords = np.stack([xs, ys], axis=2)
        geoms = shapely.polygons(coords)
        from_class = rng.integers(1, 7, m)
        to_class = (from_class + rng.integers(1, 6, m)) % 7 + 1
        frame = gpd.GeoDataFrame(
            pd.DataFrame(
                {
                    "change_id": np.arange(1, m + 1),
                    "from_class": from_class,
                    "to_class": np.where(to_class == from_class, to_class % 7 + 1, to_class),
                    "from_name": [f"class {c}" for c in from_class],
                    "to_name": "",
                    "area_m2": shapely.area(geoms),
                    "confidence": rng.uniform(0.5, 1.0, m),
                    "tile": f"{EPSG}_{col}_{row}",
                    "season_before": "b0",
                    "season_after": "b1",
                }
            ),
            geometry=geoms,
            crs=f"EPSG:{EPSG}",
        )
        frame["to_name"] = [f"class {c}" for c in frame["to_class"]]
        bounds = (x0, y0, x0 + TILE_SIDE_M, y0 + TILE_SIDE_M)
        out.append(TileChanges(tile=f"{EPSG}_{col}_{row}", frame=frame, run_id="bench", bounds=bounds))
    return out


def _clear(url: str) -> None:
    conn = connect(url, application_name="lcms-bench")
    try:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM lcms.detection_links WHERE project = %s", (BENCH_PROJECT,))
            cur.execute("DELETE FROM lcms.changes WHERE project = %s AND status = 'detected'", (BENCH_PROJECT,))
            cur.execute("DELETE FROM lcms.loads WHERE project = %s", (BENCH_PROJECT,))
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:  # dead rows of an earlier run would slow the next one down
            cur.execute("VACUUM lcms.changes")
    finally:
        conn.close()


def bench_load(url: str, n: int, *, reload: bool = False, keep: bool = False, seed: int = 0) -> dict[str, Any]:
    """Bulk-load ``n`` synthetic change polygons into the (migrated) store at ``url``; polygons per second.

    Returns ``{"n", "polygons_per_s", "seconds", "prepare_s", "store_s", ...}``. With ``reload`` the
    same season is loaded a second time (every row replaced) and timed too. The benchmark's rows
    (project ``lcms_bench``) are deleted afterwards unless ``keep``.
    """
    parts = synthetic_tiles(n, seed=seed)
    _clear(url)
    start = dt.datetime(2024, 4, 1, tzinfo=dt.UTC)

    def once() -> tuple[float, float, dict[str, Any]]:
        t0 = time.perf_counter()
        rows = prepare_changes(parts, project=BENCH_PROJECT, season_before="b0", season_after="b1")
        t1 = time.perf_counter()
        stored = store_changes(
            url,
            rows,
            project=BENCH_PROJECT,
            season_before="b0",
            season_after="b1",
            datetime=start,
            load_run_id="bench",
            scope_tiles=[p.tile for p in parts],
        )
        return t1 - t0, time.perf_counter() - t1, {**rows.counts(), **stored}

    try:
        prep, store, counts = once()
        total = prep + store
        out: dict[str, Any] = {
            "database": describe(url),
            "n": n,
            "tiles": len(parts),
            "polygons_per_s": round(n / total, 1),
            "seconds": round(total, 3),
            "prepare_s": round(prep, 3),
            "store_s": round(store, 3),
            "counts": counts,
        }
        if reload:
            prep2, store2, counts2 = once()
            out["reload"] = {
                "polygons_per_s": round(n / (prep2 + store2), 1),
                "seconds": round(prep2 + store2, 3),
                "prepare_s": round(prep2, 3),
                "store_s": round(store2, 3),
                "counts": counts2,
            }
    finally:
        if not keep:
            _clear(url)
    log.info("bench_load: %d polygons in %.1f s: %.0f polygons/s", n, out["seconds"], out["polygons_per_s"])
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m lcms_tasks.store.bench URL N [--reload]``: print the figures as JSON."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m lcms_tasks.store.bench", description=__doc__)
    p.add_argument("url", help="the change store URL (migrated)")
    p.add_argument("n", type=int, nargs="?", default=1_000_000, help="polygons (default 1,000,000)")
    p.add_argument("--reload", action="store_true", help="also time a second load replacing every row")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(json.dumps(bench_load(args.url, args.n, reload=args.reload), indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
