"""The country-scale rehearsal: thousands of small tiles through the real scheduler (``make bench-scale``).

A synthetic country of ``--tiles`` tiles (default 5,000 tiles of 32 px at 10 m, in one UTM zone) runs one
mapped stage (``--stage``, default ``download``), or with ``--chain`` the whole chain from download to
reporting (each stage's DAG triggered by the previous one's asset), through a real Airflow: the API
server, scheduler and DAG processor as child processes, first with the LocalExecutor on SQLite, then
with the CeleryExecutor (two workers, Redis broker, a fresh PostgreSQL database for metadata and
results). Per executor:

* ``stage_wall_seconds``: the DAG run's start to end (resolve, plan, every batch, publish);
* ``compute_seconds``: the stage's own work, the sum of the per-tile durations the batches record;
* ``overhead_seconds_per_tile``: ``(wall - compute / slots) / tiles``, where ``slots`` is the number of
  task slots (parallelism, or workers x concurrency): what orchestration adds per tile beyond perfectly
  parallel compute (task start-up, DAG parsing, scheduling latency, API calls, XCom);
* ``mapped_task_instances``: the ``run_batch`` task instances (tiles / ``grid.batch_size``);
* ``scheduler_peak_rss_mib``: the scheduler process's peak resident memory (sampled every 0.5 s; the
  LocalExecutor's worker processes, which it forks, are reported apart as ``executor_workers_peak_rss_mib``);
* ``max_xcom_bytes``: the largest XCom value of the run, read from the metadata database.

With ``--chain``, each executor's object holds the chain's figures (wall time from the download run's
start to the reporting run's end, waits between stages included; overhead per tile: that wall time less
each stage's compute over its slots, per tile) and, under ``per_stage``, each stage's (a per-season
stage's compute is its one task's duration, on one slot).

The last line printed is the path of the JSON file (one object per executor under ``runs``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("LCMS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("LCMS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def write_country(folder: Path, tiles: int, tile_px: int, batch_size: int, seed: int) -> Path:
    """An AOI of ``tiles`` grid tiles (a near-square block, the last row partial) and its config.

    The AOI is one polygon, as a country's is (full rows, plus the partial last row), inset from the tile
    edges so that it covers exactly ``tiles`` grid tiles.
    """
    import geopandas as gpd
    from shapely.geometry import box
    from shapely.ops import unary_union

    side = tile_px * 10.0
    ncols = math.ceil(math.sqrt(tiles))
    full_rows, rest = divmod(tiles, ncols)
    x0, y0 = (round(500_000 / side) - ncols // 2) * side, round(4_400_000 / side) * side
    inset = side / 8
    parts = []
    if full_rows:
        parts.append(box(x0 + inset, y0 + inset, x0 + ncols * side - inset, y0 + full_rows * side - inset))
    if rest:
        top = y0 + full_rows * side
        bottom = top - 2 * inset if full_rows else top + inset  # overlaps the full rows: one polygon
        parts.append(box(x0 + inset, bottom, x0 + rest * side - inset, top + side - inset))
    gdf = gpd.GeoDataFrame({"region": ["country"]}, geometry=[unary_union(parts)], crs=32638)
    folder.mkdir(parents=True, exist_ok=True)
    gdf.to_file(folder / "aoi.geojson", driver="GeoJSON")
    demo = yaml.safe_load(
        (REPO / "configs" / "demo.yaml").read_text().replace("${LCMS_STORAGE_ROOT:-../lcms-data}", "x")
    )
    cfg = {
        "project": "country",
        "aoi": {"file": "aoi.geojson", "region_column": "region"},
        "grid": {"tile_size_px": tile_px, "resolution_m": 10.0, "crs": "utm", "batch_size": batch_size},
        "seasons": {"2023": {"start": "2023-06-01", "end": "2023-06-30"}},
        "legends": demo["legends"],
        "source": {"type": "synthetic", "seed": seed},
        "storage": {"root": "data"},
    }
    path = folder / "project.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class _RssSampler:
    """Peak RSS of the scheduler process and, apart, of its child processes (executor workers, tasks)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.scheduler_peak = 0
        self.children_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        proc = psutil.Process(self.pid)
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.scheduler_peak = max(self.scheduler_peak, proc.memory_info().rss)
                kids = 0
                for child in proc.children(recursive=False):
                    with contextlib.suppress(psutil.Error):
                        kids += child.memory_info().rss
                self.children_peak = max(self.children_peak, kids)
            self._stop.wait(0.5)


def _max_xcom_bytes(sql_url: str, dag_id: str, run_id: str) -> int:
    query = "SELECT max(length(CAST(value AS TEXT))) FROM xcom WHERE dag_id = ? AND run_id = ?"
    if sql_url.startswith("sqlite"):
        path = sql_url.split("///", 1)[1]
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return int(db.execute(query, (dag_id, run_id)).fetchone()[0] or 0)
    import psycopg2

    url = sql_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    with contextlib.closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute(query.replace("?", "%s").replace("length(", "octet_length("), (dag_id, run_id))
        return int(cur.fetchone()[0] or 0)


@contextlib.contextmanager
def _pg_database() -> Iterator[str]:
    import psycopg2

    admin = psycopg2.connect(PG_ADMIN_URL, connect_timeout=5)
    admin.autocommit = True
    name = f"lcms_bench_scale_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def chain_stages() -> tuple[str, ...]:
    """The chain the rehearsal runs: the registry's stages from download to reporting (publish needs a store)."""
    from lcms_tasks.stages import stage_names

    names = stage_names()
    return tuple(names[: names.index("reporting") + 1])


def chain_figures(stages: tuple[str, ...], figures: list[dict[str, Any]], runs: list[dict[str, Any]]) -> dict:
    """The chain's figures from its stages' (``figures``, as :func:`_stage_figures` gives them) and their finished
    DAG runs (``runs``, same order; fewer than ``stages`` when one failed)."""
    complete = len(figures) == len(stages) and all(f["state"] == "success" for f in figures)
    tiles = figures[0]["tiles"] if figures else 0
    wall = 0.0
    if figures:  # first stage's start to the last stage's end: with the waits between stages (asset events)
        end = dt.datetime.fromisoformat(runs[len(figures) - 1]["end_date"])
        wall = (end - dt.datetime.fromisoformat(runs[0]["start_date"])).total_seconds()
    busy = sum(f["compute_seconds"] / f["task_slots"] for f in figures)
    return {
        "stage": "chain",
        "stages": list(stages),
        "state": "success" if complete else "failed",
        "tiles": tiles,
        "batch_size": figures[0]["batch_size"] if figures else None,
        "mapped_task_instances": sum(f["mapped_task_instances"] for f in figures),
        "stage_wall_seconds": round(wall, 1),
        "compute_seconds": round(sum(f["compute_seconds"] for f in figures), 1),
        "overhead_seconds_per_tile": round((wall - busy) / tiles, 4) if tiles else None,
        "max_xcom_bytes": max((f["max_xcom_bytes"] for f in figures), default=0),
        "per_stage": figures,
    }


def _stage_figures(airflow: Any, sql_url: str, config: Path, stage: str, run: dict[str, Any], slots: int) -> dict:
    """One stage run's figures (see the module docstring); ``run`` is its finished DAG run."""
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.tolerance import durations

    dag_id, run_id = f"lcms_{stage}", run["run_id"]
    states = airflow.task_states(dag_id, run_id)
    cfg = load_config(config)
    ctx = RunContext.create(cfg, season="2023", run_id=run_id)
    tiles = len(ctx.tiles())
    wall = (dt.datetime.fromisoformat(run["end_date"]) - dt.datetime.fromisoformat(run["start_date"])).total_seconds()
    batches = [s for s in states if s["task_id"] == "run_batch"]
    if batches:  # per-tile stage: its compute is the sum of the tiles' own durations, over `slots` slots
        timing = durations(ctx, stage)
        compute, parallel = float(timing.get("total_s", 0.0)), slots
        tiles_done, tile_median = timing.get("n_tiles", 0), timing.get("median_s")
    else:  # per-season stage: one task, whose duration is its compute
        season_task = [float(s["duration"] or 0.0) for s in states if s["task_id"] == "run_season"]
        compute, parallel = sum(season_task), 1
        tiles_done, tile_median = None, None
    batch_seconds = [float(s["duration"]) for s in batches if s.get("duration") is not None]
    return {
        "stage": stage,
        "run_id": run_id,
        "state": run["state"],
        "tiles": tiles,
        "tiles_done": tiles_done,
        "batch_size": cfg.grid.batch_size,
        "task_slots": parallel,
        "mapped_task_instances": len(batches),
        "stage_wall_seconds": round(wall, 1),
        "compute_seconds": round(compute, 1),
        "overhead_seconds_per_tile": round((wall - compute / parallel) / tiles, 4),
        "batch_seconds_median": round(statistics.median(batch_seconds), 2) if batch_seconds else None,
        "tile_seconds_median": tile_median,
        "max_xcom_bytes": _max_xcom_bytes(sql_url, dag_id, run_id),
    }


def run_once(executor: str, config: Path, stages: tuple[str, ...], work: Path, timeout: float) -> dict[str, Any]:
    """One run of ``stages`` (one stage, or the chain, each triggered by the previous one's asset) with
    ``executor``; the figures: per stage, and for the chain as a whole."""
    from lcms_airflow.local_stack import LocalAirflow

    dags = work / f"dags-{executor}"
    dags.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        shutil.copy(REPO / "dags" / f"lcms_{stage}.py", dags)
    slots = 2
    with contextlib.ExitStack() as stack:
        extra = {"LCMS_RETRY_DELAY_SECONDS": "5"}
        workers: dict[str, str] = {}
        if executor == "celery":
            pg = stack.enter_context(_pg_database())
            tag = uuid.uuid4().hex[:8]
            extra |= {
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.replace("postgresql://", "postgresql+psycopg2://", 1),
                "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + pg.replace("postgresql://", "postgresql+psycopg2://", 1),
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"lcms_bench_{tag}",
            }
            workers = {"bench-a": f"lcms_bench_{tag}", "bench-b": f"lcms_bench_{tag}"}
        airflow = LocalAirflow(
            home=work / f"airflow-{executor}", dags_folder=dags, celery_workers=workers, extra_env=extra
        )
        sql_url = airflow.env().get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or f"sqlite:///{airflow.home}/airflow.db"
        figures: list[dict[str, Any]] = []
        try:
            airflow.start()
            airflow.wait_for_dags([f"lcms_{s}" for s in stages])
            deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=timeout)
            with _RssSampler(airflow.procs["scheduler"].pid) as rss:
                first = airflow.trigger(f"lcms_{stages[0]}", {"config": str(config), "season": "2023"})
                finished: list[dict[str, Any]] = []
                for stage in stages:  # a fresh metadata database: each later stage's first run is the chain's
                    left = (deadline - dt.datetime.now(dt.UTC)).total_seconds()
                    run = airflow.wait_for_run(
                        f"lcms_{stage}", run_id=first if stage == stages[0] else None, timeout=max(left, 1), poll=5
                    )
                    finished.append(run)
                    print(f"  {stage}: {run['state']} ({run['run_id']})", flush=True)
                    if run["state"] != "success":
                        break
            for stage, run in zip(stages, finished, strict=False):
                figures.append(_stage_figures(airflow, sql_url, config, stage, run, slots))
        finally:
            airflow.stop()
    result: dict[str, Any] = {
        "executor": "CeleryExecutor" if executor == "celery" else "LocalExecutor",
        "metadata_database": "PostgreSQL" if executor == "celery" else "SQLite",
        "scheduler_peak_rss_mib": round(rss.scheduler_peak / 2**20, 1),
        "executor_workers_peak_rss_mib": round(rss.children_peak / 2**20, 1) if executor == "local" else None,
    }
    if len(stages) == 1:
        return {**figures[0], **result} if figures else {"stage": stages[0], "state": "failed", **result}
    return {**chain_figures(stages, figures, finished), "task_slots": slots, **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=5000)
    parser.add_argument("--tile-px", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=None, help="tiles per task (default: the grid's)")
    parser.add_argument("--stage", default="download", help="the mapped stage to run (its inputs must exist)")
    parser.add_argument(
        "--chain", action="store_true", help="run the whole chain, download to reporting, instead of one stage"
    )
    parser.add_argument("--executors", default="local,celery", help="comma-separated: local, celery")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one run may take")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=REPO / "bench-results")
    args = parser.parse_args(argv)

    from lcms_tasks.config import GridConfig

    batch_size = args.batch_size or GridConfig().batch_size
    results = []
    with tempfile.TemporaryDirectory(prefix="lcms-bench-scale-") as tmp:
        for executor in [e.strip() for e in args.executors.split(",") if e.strip()]:
            if executor not in ("local", "celery"):
                parser.error(f"--executors: {executor!r} is not local or celery")
            work = Path(tmp) / executor
            config = write_country(work / "project", args.tiles, args.tile_px, batch_size, args.seed)
            stages = chain_stages() if args.chain else (args.stage,)
            what = "the chain" if args.chain else args.stage
            print(f"{executor}: {args.tiles} tiles of {args.tile_px} px, batch size {batch_size}: running {what}")
            figures = run_once(executor, config, stages, work, args.timeout)
            print(json.dumps(figures))
            results.append(figures)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out / f"scale-{stamp}.json"
    doc = {
        "benchmark": "scale",
        "tiles": args.tiles,
        "tile_px": args.tile_px,
        "python": sys.version.split()[0],
        "runs": results,
    }
    out.write_text(json.dumps(doc, indent=2))
    print(out)
    return 0 if all(r["state"] == "success" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
