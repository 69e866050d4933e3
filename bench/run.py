"""``python -m bench.run``: per-stage speed and memory of LCMS, side by side with eo-learn's stock tasks.

What it does (see ``--help``):

1. writes a one-tile synthetic project (``--size`` px at 10 m, two seasons) in a scratch folder;
2. runs the chain of the measured season stage by stage through :func:`lcms_tasks.runner.run_tiles`
   (``run_stage`` for merge_features and training), each stage in a fresh subprocess
   (:mod:`bench.worker`), recording wall time, CPU time and peak RSS. The "before" season, which
   change detection compares with, is prepared in this process and not measured;
3. recomputes the features and the classifier the way eo-learn's land-cover example does
   (:mod:`bench.eolearn_ref`), each in its own subprocess, on the same stored inputs and samples;
4. checks that both paths agree (features within 1e-4 where eo-learn defines them, class maps of
   the same model >= 99.9 % identical) and fails (exit status 1) otherwise;
5. measures features and prediction on tiles of the ``--scaling`` sizes;
6. writes ``bench.json`` and ``bench.md`` into ``--out`` and prints the JSON's path last.

Timing targets are reported (met or missed, and by how much), never enforced: only the
correctness checks decide the exit status.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import worker
from bench.project import AFTER, BEFORE, FULL_SEASON, QUICK_SEASON, REPO, SeasonPlan, write_project

#: Correctness thresholds (the benchmark fails when they are not met).
FEATURES_TOLERANCE = 1e-4
MAP_AGREEMENT_MIN = 0.999
#: The eo-learn-features map comparison is only decisive with at least this many fully defined pixels.
MIN_COMPARABLE_PIXELS = 1000

#: Stages measured on the main tile, in run order (before ``BEFORE_SETUP`` runs).
CHAIN_HEAD = ("download", "features", "add_reference", "sampling", "merge_features", "training")
CHAIN_TAIL = ("prediction", "postprocessing", "change_detection")
#: Stages of the before season, prepared unmeasured so change detection has something to compare with.
BEFORE_SETUP = ("download", "features", "prediction", "postprocessing")
#: Stages profiled with ``--profile``.
PROFILED = ("features", "prediction", "postprocessing")


@dataclass
class Options:
    """Command-line options of a benchmark run."""

    size: int
    scaling: list[int]
    season: SeasonPlan
    out: Path
    seed: int = 7
    quick: bool = False
    isolation: str = "forkserver"  # see JobRunner
    profile: bool = False
    keep: Path | None = None
    repeats: int = 1  # timed comparison jobs run this many times: best time, largest peak RSS


@dataclass
class Measurement:
    """One measured job."""

    name: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    start_rss_mb: float
    extras: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The per-stage row of the report."""
        return {
            "stage": self.name,
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "added_rss_mb": round(max(self.peak_rss_mb - self.start_rss_mb, 0.0), 1),
        }


_T0 = time.perf_counter()


def _say(message: str) -> None:
    print(f"[bench {time.perf_counter() - _T0:6.1f} s] {message}", file=sys.stderr, flush=True)


ISOLATIONS = ("forkserver", "subprocess", "inprocess")


def _forked_job(spec: dict[str, Any], conn: Any) -> None:
    """Body of a fork-server child: run the job, send back the result or the error."""
    try:
        conn.send(("ok", worker.run_job(spec)))
    except BaseException as err:  # reported to the parent, which raises
        import traceback

        conn.send(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))
    finally:
        conn.close()


class JobRunner:
    """Runs :mod:`bench.worker` jobs, each in a fresh process.

    ``forkserver`` (default): a server process imports the heavy libraries once
    (:mod:`bench.preloaded`); each job is a new process forked from it, with its own address
    space, so its peak RSS (VmHWM) is the job's own on top of those imports. ``subprocess``: a
    new interpreter per job (same figures, several seconds of start-up each). ``inprocess``: no
    isolation at all (tests only: peak RSS is then this process's).
    """

    def __init__(self, scratch: Path, isolation: str) -> None:
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        self.scratch = scratch
        self.isolation = isolation
        self.count = 0
        self._mp: Any = None
        if isolation == "forkserver":
            import multiprocessing

            self._mp = multiprocessing.get_context("forkserver")
            self._mp.set_forkserver_preload(["bench.preloaded"])

    def measure(self, name: str, spec: dict[str, Any], repeats: int = 1) -> Measurement:
        """Run the job of ``spec`` ``repeats`` times, each in a fresh process; the best run's times.

        Wall and CPU time are each the smallest over the runs (the run least disturbed by the rest of
        the machine), peak RSS the largest; extras come from the fastest run.
        """
        runs = [self._measure_once(name, spec) for _ in range(max(1, repeats))]
        if len(runs) == 1:
            return runs[0]
        fastest = min(runs, key=lambda m: m.wall_s)
        best = Measurement(
            name=name,
            wall_s=fastest.wall_s,
            cpu_s=min(m.cpu_s for m in runs),
            peak_rss_mb=max(m.peak_rss_mb for m in runs),
            start_rss_mb=fastest.start_rss_mb,
            extras={**fastest.extras, "repeats": len(runs), "wall_s_all": [round(m.wall_s, 3) for m in runs]},
        )
        _say(f"  {name}: best of {len(runs)}: {best.wall_s:.2f} s wall, {best.cpu_s:.2f} s CPU")
        return best

    def _measure_once(self, name: str, spec: dict[str, Any]) -> Measurement:
        self.count += 1
        _say(f"measuring {name} ...")
        if self.isolation == "inprocess":
            result = worker.run_job(spec)
        elif self.isolation == "forkserver":
            result = self._forked(spec)
        else:
            result = self._subprocess(spec)
        m = Measurement(
            name=name,
            wall_s=float(result["wall_s"]),
            cpu_s=float(result["cpu_s"]),
            peak_rss_mb=float(result["peak_rss_mb"]),
            start_rss_mb=float(result["start_rss_mb"]),
            extras=dict(result.get("extras") or {}),
        )
        _say(f"  {name}: {m.wall_s:.2f} s wall, {m.cpu_s:.2f} s CPU, peak RSS {m.peak_rss_mb:.0f} MiB")
        return m

    def _forked(self, spec: dict[str, Any]) -> dict[str, Any]:
        receiver, sender = self._mp.Pipe(duplex=False)
        process = self._mp.Process(target=_forked_job, args=(spec, sender))
        process.start()
        sender.close()
        try:
            status, payload = receiver.recv()
        except EOFError:
            status, payload = "error", "the job process died without a result"
        process.join()
        if status != "ok":
            raise RuntimeError(f"job {spec['job']} failed (exit code {process.exitcode}):\n{payload}")
        result: dict[str, Any] = payload
        return result

    def _subprocess(self, spec: dict[str, Any]) -> dict[str, Any]:
        spec_path = self.scratch / f"job{self.count:03d}.json"
        result_path = self.scratch / f"job{self.count:03d}.result.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        proc = subprocess.run(
            [sys.executable, "-m", "bench.worker", str(spec_path), str(result_path)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"job {spec['job']} ({spec_path}) failed:\n{proc.stderr[-4000:]}")
        loaded: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
        return loaded


# -- correctness checks (pure functions) ------------------------------------------------------------


def compare_features(ours: np.ndarray, theirs: np.ndarray, tolerance: float = FEATURES_TOLERANCE) -> dict[str, Any]:
    """Compare our (K, H, W, F) features with eo-learn's where eo-learn defines a value.

    eo-learn's linear interpolation leaves NaN before a pixel's first and after its last valid
    observation (and for pixels without any); ours extrapolates there. The comparison therefore
    covers every cell eo-learn defines, requires ours to be finite there too, and counts the cells
    only ours defines. Passes when shapes match, ours is defined wherever eo-learn is and the
    largest absolute difference is <= ``tolerance``.
    """
    if ours.shape != theirs.shape:
        return {"passed": False, "reason": f"shapes differ: ours {ours.shape}, eo-learn {theirs.shape}"}
    defined = np.isfinite(theirs)
    ours_finite = np.isfinite(ours)
    missing = int(np.count_nonzero(defined & ~ours_finite))
    both = defined & ours_finite
    diff = np.abs(ours[both].astype(np.float64) - theirs[both].astype(np.float64))
    max_diff = float(diff.max()) if diff.size else 0.0
    compared = int(both.sum())
    passed = missing == 0 and compared > 0 and max_diff <= tolerance
    return {
        "passed": passed,
        "max_abs_diff": max_diff,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "tolerance": tolerance,
        "cells_total": int(theirs.size),
        "cells_compared": compared,
        "fraction_compared": compared / max(theirs.size, 1),
        "cells_only_ours_defined": int(np.count_nonzero(ours_finite & ~defined)),
        "cells_ours_nan_where_eolearn_defined": missing,
        "compared_where": "cells where eo-learn's LinearInterpolationTask returns a finite value",
    }


def map_agreement(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Share of equal entries of two class arrays of the same shape (1.0 for empty arrays)."""
    if predicted.shape != reference.shape:
        raise ValueError(f"class arrays differ in shape: {predicted.shape} vs {reference.shape}")
    return float(np.mean(predicted == reference)) if predicted.size else 1.0


def check_prediction(
    features: np.ndarray,
    eolearn_features: np.ndarray | None,
    no_data: np.ndarray,
    classes: np.ndarray,
    model: Any,
) -> dict[str, Any]:
    """Our prediction stage's class map vs the same model applied (a) by xgboost's own ``Booster.predict``
    to our features and (b) to eo-learn's features on the pixels where those are fully defined."""
    import xgboost as xgb

    from lcms_tasks.ml.matrix import pixel_matrix

    valid = ~no_data.ravel()
    X = pixel_matrix(features)[valid]
    proba = np.asarray(model.booster.predict(xgb.DMatrix(X, missing=np.nan)))
    own = model.class_ids[np.argmax(proba.reshape(X.shape[0], -1), axis=1)]
    stage = classes.ravel()[valid]
    result: dict[str, Any] = {
        "pixels": int(valid.sum()),
        "agreement_xgboost_predict": map_agreement(own.astype(np.int64), stage.astype(np.int64)),
        "minimum": MAP_AGREEMENT_MIN,
    }
    passed = result["agreement_xgboost_predict"] >= MAP_AGREEMENT_MIN
    if eolearn_features is not None:
        Xe = pixel_matrix(eolearn_features.astype(np.float32))
        full = np.isfinite(Xe).all(axis=1) & valid
        result["eolearn_comparable_pixels"] = int(full.sum())
        if full.any():
            theirs = model.predict(Xe[full])
            result["agreement_eolearn_features"] = map_agreement(
                theirs.astype(np.int64), classes.ravel()[full].astype(np.int64)
            )
        else:
            result["agreement_eolearn_features"] = None
        decisive = result["eolearn_comparable_pixels"] >= MIN_COMPARABLE_PIXELS
        result["eolearn_check_decisive"] = decisive
        if decisive:
            passed = passed and result["agreement_eolearn_features"] >= MAP_AGREEMENT_MIN
    result["passed"] = bool(passed)
    return result


# -- targets ----------------------------------------------------------------------------------------


def target(name: str, value: float | None, goal: float, *, at_most: bool = False, note: str = "") -> dict[str, Any]:
    """A target row: met or missed, and ``ratio`` = how far from the goal (> 1 means met, for both senses)."""
    if value is None or not math.isfinite(value):
        return {"target": name, "goal": goal, "value": value, "met": False, "ratio": None, "note": note or "n/a"}
    if at_most:
        met = value <= goal
        ratio = goal / value if value > 0 else math.inf
    else:
        met = value >= goal
        ratio = value / goal
    return {"target": name, "goal": goal, "value": value, "met": bool(met), "ratio": ratio, "note": note}


# -- the run ----------------------------------------------------------------------------------------


def _stage_spec(config: Path, stage: str, season: str, run_id: str = "bench") -> dict[str, Any]:
    return {"job": "stage", "config": str(config), "stage": stage, "season": season, "run_id": run_id}


def _ctx(config: Path, season: str) -> Any:
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext

    return RunContext.create(load_config(config), season=season, run_id="bench")


def _copy_model(src_config: Path, dst_config: Path) -> None:
    """Publish the trained model of one benchmark project into another's storage (same feature grid)."""
    src, dst = _ctx(src_config, AFTER), _ctx(dst_config, AFTER)
    src_uri, dst_uri = src.run_uri("training", "model"), dst.run_uri("training", "model")
    marker = src.storage.read_marker(src_uri)
    with src.storage.reading_dir(src_uri) as folder, dst.storage.writing_dir(dst_uri, marker) as staging:
        for name in ("model.ubj", "metadata.json"):
            shutil.copy2(folder / name, staging / name)


def _raw_input_bytes(config: Path) -> tuple[int, dict[str, Any]]:
    """Bytes of the tile's source arrays (BANDS uint16, CLP, IS_DATA, CLM) and a description."""
    from lcms_tasks import eopatch
    from lcms_tasks.grid import project_tiles

    ctx = _ctx(config, AFTER)
    tile = project_tiles(ctx.config)[0]
    names = ["data/BANDS", "data/CLP", "mask/IS_DATA", "mask/CLM"]
    patch, meta = eopatch.load(ctx.storage, ctx.tile_uri("download", tile.id), features=names)
    from eolearn.core import FeatureType

    arrays = {n: np.asarray(patch[FeatureType(n.split("/")[0]), n.split("/")[1]]) for n in names}
    info = {n: {"shape": list(a.shape), "dtype": str(a.dtype), "bytes": int(a.nbytes)} for n, a in arrays.items()}
    return sum(int(a.nbytes) for a in arrays.values()), {"arrays": info, "n_dates": int(meta.get("n_dates", 0))}


def _setup(config: Path, stage: str, season: str) -> None:
    """Run a stage in this process, unmeasured (preparation only)."""
    _say(f"preparing {stage} ({season}) ...")
    worker.run_job(_stage_spec(config, stage, season, run_id="bench-setup"))


def run_benchmark(opts: Options) -> tuple[dict[str, Any], bool]:
    """Run the whole benchmark; returns (report, all correctness checks passed)."""
    worker.preload()
    opts.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lcms-bench-")) if opts.keep is None else opts.keep
    work.mkdir(parents=True, exist_ok=True)
    scratch = work / "jobs"
    scratch.mkdir(exist_ok=True)
    runner = JobRunner(scratch, opts.isolation)
    t_start = time.perf_counter()
    try:
        report, passed = _run(opts, work, runner)
    finally:
        if opts.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    report["benchmark_seconds"] = round(time.perf_counter() - t_start, 1)
    return report, passed


#: Stages whose times the targets compare; they are measured ``Options.repeats`` times.
TIMED_STAGES = ("features", "prediction", "postprocessing")


def _repeats(opts: Options, stage: str) -> int:
    return opts.repeats if stage in TIMED_STAGES else 1


def _run(opts: Options, work: Path, runner: JobRunner) -> tuple[dict[str, Any], bool]:
    from bench import eolearn_ref
    from lcms_tasks import eopatch
    from lcms_tasks.grid import project_tiles
    from lcms_tasks.ml.model import LcmsModel

    eolearn_ref.check_available()
    config = write_project(work / f"tile{opts.size}", opts.size, opts.season, opts.seed)
    stages: dict[str, Measurement] = {}
    for stage in CHAIN_HEAD:
        stages[stage] = runner.measure(stage, _stage_spec(config, stage, AFTER), _repeats(opts, stage))
    for stage in BEFORE_SETUP:
        _setup(config, stage, BEFORE)
    for stage in CHAIN_TAIL:
        stages[stage] = runner.measure(stage, _stage_spec(config, stage, AFTER), _repeats(opts, stage))

    ctx = _ctx(config, AFTER)
    tile = project_tiles(ctx.config)[0]
    storage = ctx.storage
    features_uri = ctx.tile_uri("features", tile.id)
    feats_patch, feats_meta = eopatch.load(storage, features_uri, features=["data/FEATURES", "mask_timeless/NO_DATA"])
    target_dates = [t.date().isoformat() for t in feats_patch.timestamps or []]
    download_patch, download_meta = eopatch.load(storage, ctx.tile_uri("download", tile.id), features=["mask/IS_DATA"])
    all_dates = [t.date().isoformat() for t in download_patch.timestamps or []]
    raw_bytes, raw_info = _raw_input_bytes(config)

    # Reference path: eo-learn's stock tasks and the example's LightGBM model, same inputs and samples.
    ref_dir = work / "eolearn"
    ref_dir.mkdir(exist_ok=True)
    ours_compute = runner.measure(
        "features (ours, compute only)",
        {"job": "features_compute_ours", "config": str(config), "season": AFTER},
        opts.repeats,
    )
    eol = runner.measure(
        "features (eo-learn)",
        {
            "job": "features_eolearn",
            "download_dir": str(storage.local_path(ctx.tile_uri("download", tile.id))),
            "out_dir": str(ref_dir / "features"),
            "band_names": list(download_meta["band_names"]),
            "quantification": float(download_meta["quantification"]),
            "target_dates": target_dates,
            "min_coverage": ctx.config.stages.features.min_valid_coverage,
        },
        opts.repeats,
    )
    dataset_path = storage.local_path(ctx.run_uri("merge_features", "dataset")) / "dataset.npz"
    lgb_train = runner.measure(
        "training (LightGBM example)",
        {
            "job": "lightgbm_train",
            "dataset": str(dataset_path),
            "model_out": str(ref_dir / "lgbm.pkl"),
            "seed": opts.seed,
        },
    )
    lgb_pred = runner.measure(
        "prediction (LightGBM example)",
        {
            "job": "lightgbm_predict",
            "model": str(ref_dir / "lgbm.pkl"),
            "features_dir": str(storage.local_path(features_uri)),
            "out_dir": str(ref_dir / "prediction"),
        },
        opts.repeats,
    )
    baseline = runner.measure("baseline (imports only)", {"job": "baseline"})

    # Correctness checks.
    from eolearn.core import EOPatch, FeatureType

    theirs = EOPatch.load(str(ref_dir / "features"), features=[(FeatureType.DATA, "FEATURES")], lazy_loading=False)
    ours = np.asarray(feats_patch.data["FEATURES"])
    their_features = np.asarray(theirs[FeatureType.DATA, "FEATURES"])
    features_check = compare_features(ours, their_features)
    our_kept = [d for d in all_dates if d not in set(feats_meta["quality"]["dropped_dates"])]
    features_check["same_dates_kept"] = our_kept == eol.extras["kept_dates"]
    features_check["same_target_dates"] = [t.date().isoformat() for t in theirs.timestamps or []] == target_dates
    features_check["dates_kept"] = len(our_kept)
    features_check["passed"] = bool(
        features_check["passed"] and features_check["same_dates_kept"] and features_check["same_target_dates"]
    )

    model_uri = ctx.run_uri("training", "model")
    model = LcmsModel.load(storage, model_uri)
    pred_patch, _ = eopatch.load(storage, ctx.tile_uri("prediction", tile.id), features=["mask_timeless/CLASS"])
    no_data = np.asarray(feats_patch.mask_timeless["NO_DATA"])[..., 0]
    prediction_check = check_prediction(
        ours, their_features, no_data, np.asarray(pred_patch.mask_timeless["CLASS"])[..., 0], model
    )
    with np.load(dataset_path, allow_pickle=False) as npz:
        X, y, split = npz["X"], npz["y"].astype(np.int64), npz["split"]
    test = split == 2
    xgb_accuracy = float(np.mean(model.predict(X[test]) == y[test])) if test.any() else None
    with storage.reading_dir(model_uri) as folder:
        xgb_bytes = (folder / "model.ubj").stat().st_size
    del ours, their_features, theirs, X

    scaling = _scaling(opts, work, runner, config, stages, raw_bytes)
    profiles = _profiles(opts, config, runner) if opts.profile else {}

    report = _report(
        opts,
        runner,
        stages=stages,
        references={"ours_compute": ours_compute, "eolearn": eol, "lgb_train": lgb_train, "lgb_pred": lgb_pred},
        baseline=baseline,
        checks={"features": features_check, "prediction": prediction_check},
        models={
            "xgboost": {
                "model_bytes": xgb_bytes,
                "test_accuracy": xgb_accuracy,
                "train_wall_s": round(stages["training"].wall_s, 3),
                "n_rounds": int(model.booster.num_boosted_rounds()),
                "n_test": int(test.sum()),
            },
            "lightgbm_example": {
                "model_bytes": lgb_train.extras["model_bytes"],
                "test_accuracy": lgb_train.extras["test_accuracy"],
                "train_wall_s": round(lgb_train.extras["train_wall_s"], 3),
                "n_trees": lgb_train.extras["n_trees"],
                "n_test": lgb_train.extras["n_test"],
            },
        },
        tile={
            "size_px": opts.size,
            "resolution_m": 10.0,
            "km2": (opts.size * 10.0 / 1000.0) ** 2,
            "dates": raw_info["n_dates"],
            "regular_dates": len(target_dates),
            "features": list(feats_meta["feature_names"]),
            "raw_input_bytes": raw_bytes,
            "raw_input": raw_info["arrays"],
        },
        scaling=scaling,
        profiles=profiles,
    )
    passed = bool(features_check["passed"] and prediction_check["passed"])
    report["passed"] = passed
    return report, passed


def _scaling(
    opts: Options, work: Path, runner: JobRunner, config: Path, stages: dict[str, Measurement], raw_bytes: int
) -> list[dict[str, Any]]:
    """Features and prediction on tiles of each ``--scaling`` size (the main tile's rows are reused)."""
    rows = []
    for size in opts.scaling:
        if size == opts.size:
            feat, pred, raw = stages["features"], stages["prediction"], raw_bytes
        else:
            cfg = write_project(work / f"scale{size}", size, opts.season, opts.seed)
            _setup(cfg, "download", AFTER)
            _copy_model(config, cfg)
            feat = runner.measure(f"features {size} px", _stage_spec(cfg, "features", AFTER))
            pred = runner.measure(f"prediction {size} px", _stage_spec(cfg, "prediction", AFTER))
            raw, _ = _raw_input_bytes(cfg)
            shutil.rmtree(work / f"scale{size}", ignore_errors=True)
        rows.append(
            {
                "size_px": size,
                "pixels": size * size,
                "raw_input_mb": round(raw / 2**20, 1),
                "features_wall_s": round(feat.wall_s, 3),
                "features_cpu_s": round(feat.cpu_s, 3),
                "features_peak_rss_mb": round(feat.peak_rss_mb, 1),
                "prediction_wall_s": round(pred.wall_s, 3),
                "prediction_cpu_s": round(pred.cpu_s, 3),
                "prediction_peak_rss_mb": round(pred.peak_rss_mb, 1),
                "peak_rss_mb": round(max(feat.peak_rss_mb, pred.peak_rss_mb), 1),
                "us_per_pixel_cpu": round(1e6 * (feat.cpu_s + pred.cpu_s) / (size * size), 3),
            }
        )
    return rows


def _profiles(opts: Options, config: Path, runner: JobRunner) -> dict[str, str]:
    """cProfile summaries of the profiled stages, re-run on the main tile (written next to the report)."""
    paths = {}
    for stage in PROFILED:
        path = opts.out / f"profile_{stage}.txt"
        spec = _stage_spec(config, stage, AFTER, run_id="bench-profile")
        spec.update(profile=str(path), profile_top=25)
        runner.measure(f"{stage} (profiled)", spec)
        paths[stage] = str(path)
    return paths


def _doubling_memory_ratios(scaling: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_size = {r["size_px"]: r for r in scaling}
    pairs = []
    for size in sorted(by_size):
        if size * 2 in by_size:
            small, big = by_size[size], by_size[size * 2]
            pairs.append(
                {
                    "from_px": size,
                    "to_px": size * 2,
                    "peak_rss_ratio": big["peak_rss_mb"] / small["peak_rss_mb"],
                    "cpu_ratio": (big["features_cpu_s"] + big["prediction_cpu_s"])
                    / max(small["features_cpu_s"] + small["prediction_cpu_s"], 1e-9),
                }
            )
    return pairs


def _report(
    opts: Options,
    runner: JobRunner,
    *,
    stages: dict[str, Measurement],
    references: dict[str, Measurement],
    baseline: Measurement,
    checks: dict[str, dict[str, Any]],
    models: dict[str, dict[str, Any]],
    tile: dict[str, Any],
    scaling: list[dict[str, Any]],
    profiles: dict[str, str],
) -> dict[str, Any]:
    pixels = opts.size * opts.size
    eol, ours_compute = references["eolearn"], references["ours_compute"]
    lgb_pred = references["lgb_pred"]
    feat, pred, post = stages["features"], stages["prediction"], stages["postprocessing"]

    speedup = eol.wall_s / feat.wall_s
    compute_speedup = eol.extras["compute_wall_s"] / ours_compute.wall_s
    px_core = pixels / pred.cpu_s
    lgb_px_core = lgb_pred.extras["pixels"] / lgb_pred.cpu_s
    pred_speedup = px_core / lgb_px_core
    mapped = [m for name, m in stages.items() if name not in ("merge_features", "training")]
    heaviest = max(mapped, key=lambda m: m.peak_rss_mb)
    raw = tile["raw_input_bytes"]
    mem_ratio = heaviest.peak_rss_mb * 2**20 / raw
    not_download = [m for m in mapped if m.name != "download"]
    heaviest_nd = max(not_download, key=lambda m: m.peak_rss_mb)
    chain_cpu = feat.cpu_s + pred.cpu_s + post.cpu_s
    km2_core_hour = tile["km2"] / (chain_cpu / 3600.0)
    doubling = _doubling_memory_ratios(scaling)
    largest = doubling[-1] if doubling else None
    xgb_acc = models["xgboost"]["test_accuracy"]
    lgb_acc = models["lightgbm_example"]["test_accuracy"]
    acc_ok = xgb_acc is not None and lgb_acc is not None and xgb_acc >= lgb_acc

    targets = [
        target("features >= 10x faster than eo-learn (stage wall time)", speedup, 10.0),
        target("prediction >= 150,000 px/s/core", px_core, 150_000.0),
        target(
            "prediction >= 5x LightGBM-example throughput per core, at equal or better test accuracy",
            pred_speedup if acc_ok else None,
            5.0,
            note=f"speedup {pred_speedup:.2f}x; test accuracy XGBoost {xgb_acc} vs LightGBM {lgb_acc}"
            + ("" if acc_ok else " (accuracy condition not met)"),
        ),
        target(
            "peak RSS of any stage <= 1.5 x raw input bytes",
            mem_ratio,
            1.5,
            at_most=True,
            note=f"heaviest stage: {heaviest.name}",
        ),
        target(
            f"{largest['to_px'] if largest else '?'} px tile needs < 4x the memory of the "
            f"{largest['from_px'] if largest else '?'} px one",
            largest["peak_rss_ratio"] if largest else None,
            4.0,
            at_most=True,
            note="peak RSS of features/prediction; 4x the pixels",
        ),
        target("features + prediction + postprocessing >= 20,000 km²/core-hour", km2_core_hour, 20_000.0),
    ]
    for t in targets:
        if t["target"].startswith("prediction >= 5x") and not acc_ok:
            t["value"] = pred_speedup

    import eolearn
    import lightgbm
    import xgboost

    return {
        "mode": "quick" if opts.quick else "full",
        "repeats": opts.repeats,
        "isolation": opts.isolation,
        "seed": opts.seed,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tile": tile,
        "stages": [m.row() for m in stages.values()],
        "reference": [m.row() for m in references.values()],
        "baseline_rss_mb": round(baseline.peak_rss_mb, 1),
        "features_speedup_vs_eolearn": speedup,
        "features_speedup_vs_eolearn_cpu": eol.cpu_s / feat.cpu_s,
        "features_compute_speedup_vs_eolearn": compute_speedup,
        "features_compute_s": {"ours": ours_compute.wall_s, "eolearn": eol.extras["compute_wall_s"]},
        "eolearn_features_breakdown_s": {k: eol.extras[k] for k in ("load_s", "compute_wall_s", "save_s")},
        "features_max_abs_diff": checks["features"]["max_abs_diff"],
        "prediction_pixels_per_second_per_core": px_core,
        "prediction_pixels_per_second_wall": pixels / pred.wall_s,
        "lightgbm_example_pixels_per_second_per_core": lgb_px_core,
        "prediction_speedup_vs_lightgbm_example": pred_speedup,
        "prediction_speedup_vs_lightgbm_example_compute_only": (
            lgb_pred.extras["compute_cpu_s"] / lgb_pred.extras["pixels"]
        )
        / (pred.cpu_s / pixels),
        "peak_memory_ratio": mem_ratio,
        "peak_memory_stage": heaviest.name,
        "peak_memory_ratio_excluding_download": heaviest_nd.peak_rss_mb * 2**20 / raw,
        "peak_memory_stage_excluding_download": heaviest_nd.name,
        "peak_memory_ratio_net_of_baseline": max(heaviest.peak_rss_mb - baseline.peak_rss_mb, 0.0) * 2**20 / raw,
        "km2_per_core_hour": km2_core_hour,
        "chain_cpu_s": chain_cpu,
        "scaling": scaling,
        "scaling_doubling": doubling,
        "models": models,
        "checks": checks,
        "targets": targets,
        "targets_met": sum(t["met"] for t in targets),
        "targets_total": len(targets),
        "profiles": profiles,
        "jobs_run": runner.count,
        "environment": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "xgboost": xgboost.__version__,
            "lightgbm": lightgbm.__version__,
            "eolearn": getattr(eolearn, "__version__", "?"),
            "machine": platform.machine(),
        },
    }


# -- output -----------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:,.{digits}f}"
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report as a markdown document."""
    t = report["tile"]
    lines = [
        f"# LCMS benchmark ({report['mode']}, {report['created']})",
        "",
        f"Tile: {t['size_px']} x {t['size_px']} px at {t['resolution_m']:g} m ({t['km2']:g} km²), "
        f"{t['dates']} acquisitions, 13 bands -> {t['regular_dates']} regular dates x {len(t['features'])} features; "
        f"raw input {t['raw_input_bytes'] / 2**20:.0f} MiB. Isolation: {report['isolation']}; "
        f"{report['environment']['cpus']} CPUs. Baseline RSS after imports: {report['baseline_rss_mb']} MiB. "
        f"Timed comparison jobs (features, prediction, post-processing, eo-learn, LightGBM) ran "
        f"{report['repeats']} time(s) each: best time, largest peak RSS.",
        "",
        "## Stages (one fresh process each)",
        "",
        *_table(report["stages"], ["stage", "wall_s", "cpu_s", "peak_rss_mb", "added_rss_mb"]),
        "",
        "## eo-learn / LightGBM reference path",
        "",
        *_table(report["reference"], ["stage", "wall_s", "cpu_s", "peak_rss_mb", "added_rss_mb"]),
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for key in (
        "features_speedup_vs_eolearn",
        "features_speedup_vs_eolearn_cpu",
        "features_compute_speedup_vs_eolearn",
        "features_max_abs_diff",
        "prediction_pixels_per_second_per_core",
        "prediction_pixels_per_second_wall",
        "lightgbm_example_pixels_per_second_per_core",
        "prediction_speedup_vs_lightgbm_example",
        "prediction_speedup_vs_lightgbm_example_compute_only",
        "peak_memory_ratio",
        "peak_memory_stage",
        "peak_memory_ratio_excluding_download",
        "peak_memory_ratio_net_of_baseline",
        "km2_per_core_hour",
    ):
        lines.append(f"| {key} | {_fmt(report[key])} |")
    lines += ["", "## Models (same training samples, same test split)", ""]
    model_rows = [{"model": k, **v} for k, v in report["models"].items()]
    lines += _table(model_rows, ["model", "test_accuracy", "model_bytes", "train_wall_s", "n_test"])
    lines += ["", "## Scaling (features + prediction)", ""]
    lines += _table(
        report["scaling"],
        [
            "size_px",
            "raw_input_mb",
            "features_wall_s",
            "features_peak_rss_mb",
            "prediction_wall_s",
            "prediction_peak_rss_mb",
            "us_per_pixel_cpu",
        ],
    )
    lines += ["", "## Targets", ""]
    lines += _table(report["targets"], ["target", "goal", "value", "met", "ratio", "note"])
    lines += ["", "(ratio: value/goal, or goal/value for upper bounds; >= 1 means met)", "", "## Checks", ""]
    for name, check in report["checks"].items():
        lines.append(f"- **{name}**: {'PASSED' if check['passed'] else 'FAILED'} — " + json.dumps(check, default=str))
    if report["profiles"]:
        lines += ["", "## Profiles", ""] + [f"- {k}: `{v}`" for k, v in report["profiles"].items()]
    lines.append("")
    return "\n".join(lines)


def write_outputs(report: dict[str, Any], out: Path) -> Path:
    """Write ``bench.json`` and ``bench.md`` into ``out``; returns the JSON's path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench.json"
    path.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (out / "bench.md").write_text(markdown(report), encoding="utf-8")
    return path


def parse_args(argv: list[str] | None = None) -> Options:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=None, help="tile side in pixels (default 500; --quick: 128)")
    parser.add_argument(
        "--scaling", default=None, help="comma-separated tile sides (default: none; --quick: 64,128,256)"
    )
    parser.add_argument("--quick", action="store_true", help="small tile, ~30 dates (under a minute)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="output folder")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic data and every model")
    parser.add_argument("--profile", action="store_true", help="also write cProfile summaries of the hot stages")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: temp)")
    parser.add_argument(
        "--isolation",
        choices=ISOLATIONS,
        default="forkserver",
        help="how each job gets a fresh process (default: forked from a preloaded server)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs of each timed comparison job (features, prediction, post-processing, eo-learn, LightGBM); "
        "best time reported (default 3; --quick: 1)",
    )
    parser.add_argument("--dates", choices=("full", "quick"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = args.size or (128 if args.quick else 500)
    if args.scaling is not None:
        scaling = [int(s) for s in args.scaling.split(",") if s.strip()]
    else:
        scaling = [64, 128, 256] if args.quick else []
    dates = args.dates or ("quick" if args.quick else "full")
    return Options(
        size=size,
        scaling=scaling,
        season=QUICK_SEASON if dates == "quick" else FULL_SEASON,
        out=args.out,
        seed=args.seed,
        quick=args.quick,
        repeats=max(1, args.repeats if args.repeats is not None else (1 if args.quick else 3)),
        isolation=args.isolation,
        profile=args.profile,
        keep=args.keep,
    )


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; the last line printed is the JSON report's path."""
    opts = parse_args(argv)
    report, passed = run_benchmark(opts)
    path = write_outputs(report, opts.out)
    print((opts.out / "bench.md").read_text(encoding="utf-8"))
    for t in report["targets"]:
        print(f"{'MET   ' if t['met'] else 'MISSED'} {t['target']}: {_fmt(t['value'])} (goal {_fmt(t['goal'])})")
    print("correctness checks: " + ("passed" if passed else "FAILED"))
    print(path.resolve())
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
