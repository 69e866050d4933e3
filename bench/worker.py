"""Measured jobs: one stage (or one reference computation) per fresh process.

``python -m bench.worker SPEC.json RESULT.json`` runs the job described by the spec and writes
its wall time, CPU time (all threads of the process) and peak RSS. Heavy libraries are imported
and the config is loaded *before* the clock starts, so a figure covers the job's own work
(reading inputs, computing, writing outputs), not interpreter start-up. The peak RSS
(``VmHWM``) is the process's high-water mark, imports included; ``start_rss_mb`` is the
resident size when the clock started, so ``peak_rss_mb - start_rss_mb`` is what the job added.
"""

from __future__ import annotations

import cProfile
import importlib
import io
import json
import pstats
import resource
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Imported before timing in every job (the stages import these lazily inside ``run``).
PRELOAD: tuple[str, ...] = (
    "numpy",
    "scipy.ndimage",
    "sentinelhub",
    "eolearn.core",
    "geopandas",
    "rasterio",
    "rasterio.features",
    "xgboost",
    "skimage.segmentation",
    "lcms_tasks.config",
    "lcms_tasks.runner",
    "lcms_tasks.eopatch",
    "lcms_tasks.postprocess",
    "lcms_tasks.changes",
    "lcms_tasks.features.indices",
    "lcms_tasks.features.temporal",
    "lcms_tasks.ml.model",
    "lcms_tasks.ml.matrix",
)

Job = Callable[[], dict[str, Any]]


def quiet_third_party_warnings() -> None:
    """Silence import-time noise of third-party packages (pkg_resources, numba absent...)."""
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def preload() -> None:
    """Import the heavy libraries the jobs use (outside the timed region)."""
    quiet_third_party_warnings()
    for name in PRELOAD:
        importlib.import_module(name)


def current_rss_mb() -> float:
    """Resident set size of this process now, MiB."""
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def peak_rss_mb() -> float:
    """High-water mark of this process's resident set size, MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``, the peak of this process's own address space.
    ``ru_maxrss`` is not used there because it carries over the parent's resident size at fork
    time across ``execve``, so a child started by a large parent would report the parent's size.
    Elsewhere: ``ru_maxrss`` (KiB on Linux-likes, bytes on macOS).
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def _stage_job(spec: dict[str, Any]) -> Job:
    """Run one stage of the LCMS chain on the project's tiles through the real runner."""
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import project_tiles
    from lcms_tasks.runner import run_stage, run_tiles
    from lcms_tasks.stages import stage_info

    cfg = load_config(spec["config"])
    ctx = RunContext.create(cfg, season=spec["season"], run_id=spec.get("run_id", "bench"), config_path=spec["config"])
    stage = spec["stage"]
    tiles = project_tiles(cfg)

    def job() -> dict[str, Any]:
        if stage_info(stage).mapped:
            result = run_tiles(stage, tiles, ctx)
            return {"tiles": len(result.written)}
        return {"uris": run_stage(stage, ctx)}

    return job


def _features_compute_ours(spec: dict[str, Any]) -> Job:
    """Our features computation alone, on arrays already in memory (no loading, no saving)."""

    from lcms_tasks import eopatch
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import project_tiles
    from lcms_tasks.stages.features import compute_features

    cfg = load_config(spec["config"])
    ctx = RunContext.create(cfg, season=spec["season"], run_id="bench-compute")
    tile = project_tiles(cfg)[0]
    src, meta = eopatch.load(ctx.storage, ctx.tile_uri("download", tile.id), features=["data/BANDS", "mask/IS_VALID"])
    season = cfg.season(ctx.season)
    options = cfg.stages.features

    def job() -> dict[str, Any]:
        # The stage's own path: indices straight from the stored digital numbers, chunk by chunk.
        dates = [t.date() for t in src.timestamps or []]
        feats, _, target_dates, _ = compute_features(
            src.data["BANDS"],
            src.mask["IS_VALID"][..., 0],
            dates,
            list(meta["band_names"]),
            season.start,
            season.end,
            options,
            quantification=float(meta["quantification"]),
        )
        return {"shape": list(feats.shape), "targets": len(target_dates)}

    return job


def _features_eolearn(spec: dict[str, Any]) -> Job:
    from bench import eolearn_ref

    return eolearn_ref.features_job(spec)


def _lightgbm_train(spec: dict[str, Any]) -> Job:
    from bench import eolearn_ref

    return eolearn_ref.lightgbm_train_job(spec)


def _lightgbm_predict(spec: dict[str, Any]) -> Job:
    from bench import eolearn_ref

    return eolearn_ref.lightgbm_predict_job(spec)


def _baseline(spec: dict[str, Any]) -> Job:
    """Nothing: the process's footprint after the imports every job does."""
    return dict


JOBS: dict[str, Callable[[dict[str, Any]], Job]] = {
    "stage": _stage_job,
    "features_compute_ours": _features_compute_ours,
    "features_eolearn": _features_eolearn,
    "lightgbm_train": _lightgbm_train,
    "lightgbm_predict": _lightgbm_predict,
    "baseline": _baseline,
}


def _profile_text(profiler: cProfile.Profile, top: int) -> str:
    out = io.StringIO()
    for key in ("tottime", "cumulative"):
        out.write(f"==== top {top} by {key} ====\n")
        stats = pstats.Stats(profiler, stream=out)
        stats.strip_dirs().sort_stats(key).print_stats(top)
    return out.getvalue()


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Prepare the job of ``spec`` (untimed), then time it; returns the measurements and the job's extras.

    ``spec["profile"]``, if set, is a path where a cProfile summary of the timed region is written.
    """
    preload()
    job = JOBS[spec["job"]](spec)
    profiler = cProfile.Profile() if spec.get("profile") else None
    start_rss = current_rss_mb()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    extras = job()
    if profiler is not None:
        profiler.disable()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if profiler is not None:
        Path(spec["profile"]).write_text(_profile_text(profiler, int(spec.get("profile_top", 30))), encoding="utf-8")
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": peak_rss_mb(),
        "start_rss_mb": start_rss,
        "extras": extras,
    }


def main(argv: list[str]) -> int:
    """CLI: ``SPEC.json RESULT.json``."""
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result = run_job(spec)
    Path(argv[1]).write_text(json.dumps(result, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
