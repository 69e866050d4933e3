"""The benchmark harness (bench/): correctness checks, report keys, a tiny end-to-end run.

No timing thresholds here: speed is what the benchmark reports, not what the tests assert.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `bench` is a top-level folder of the repo, not an installed package
    sys.path.insert(0, str(REPO))

from bench import run as bench_run  # noqa: E402
from bench import worker  # noqa: E402
from bench.project import QUICK_SEASON  # noqa: E402

REQUIRED_KEYS = {
    "features_speedup_vs_eolearn",
    "features_max_abs_diff",
    "prediction_pixels_per_second_per_core",
    "prediction_speedup_vs_lightgbm_example",
    "peak_memory_ratio",
    "km2_per_core_hour",
    "scaling",
    "models",
    "stages",
    "targets",
    "checks",
    "passed",
}
STAGE_ROW_KEYS = {"stage", "wall_s", "cpu_s", "peak_rss_mb"}


def _reference_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("numba", "sklearn", "lightgbm"))


# -- features comparison ---------------------------------------------------------------------------


def _features_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ours = rng.normal(size=(5, 8, 9, 6)).astype(np.float32)
    theirs = ours.astype(np.float64) + rng.uniform(-5e-5, 5e-5, size=ours.shape)
    theirs[0, :3] = np.nan  # eo-learn does not extrapolate before the first valid observation
    return ours, theirs


def test_compare_features_passes_within_tolerance_and_counts_edges() -> None:
    ours, theirs = _features_pair()
    result = bench_run.compare_features(ours, theirs)
    assert result["passed"]
    assert 0 < result["max_abs_diff"] <= 1e-4
    assert result["cells_only_ours_defined"] == 3 * 9 * 6
    assert result["cells_compared"] == ours.size - 3 * 9 * 6


def test_compare_features_fails_on_a_difference_above_tolerance() -> None:
    ours, theirs = _features_pair()
    theirs[2, 4, 4, 1] += 2e-4
    result = bench_run.compare_features(ours, theirs)
    assert not result["passed"]
    assert result["max_abs_diff"] > 1e-4


def test_compare_features_fails_where_ours_is_nan_but_eolearn_defined() -> None:
    ours, theirs = _features_pair()
    ours[3, 1, 1, 0] = np.nan
    result = bench_run.compare_features(ours, theirs)
    assert not result["passed"]
    assert result["cells_ours_nan_where_eolearn_defined"] == 1


def test_compare_features_fails_on_shape_mismatch() -> None:
    ours, theirs = _features_pair()
    assert not bench_run.compare_features(ours, theirs[:4])["passed"]


# -- prediction comparison -------------------------------------------------------------------------


def _tiny_model() -> object:
    import xgboost as xgb

    from lcms_tasks.ml.model import LcmsModel

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 2 * 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + (X[:, 3] > 0.5).astype(int)
    booster = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "seed": 0, "nthread": 1},
        xgb.DMatrix(X, label=y),
        num_boost_round=10,
    )
    names = [f"F{f}_t{t:02d}" for t in range(2) for f in range(3)]
    return LcmsModel(booster, {"feature_names": names, "label_encoding": {"class_ids": [1, 2, 3]}})


def test_check_prediction_agrees_with_xgboost_and_detects_a_different_map() -> None:
    from lcms_tasks.ml.matrix import pixel_matrix

    model = _tiny_model()
    rng = np.random.default_rng(2)
    features = rng.normal(size=(2, 40, 50, 3)).astype(np.float32)
    no_data = np.zeros((40, 50), dtype=bool)
    no_data[:2] = True
    classes = model.predict(pixel_matrix(features)).reshape(40, 50).astype(np.uint8)  # type: ignore[attr-defined]
    classes[no_data] = 0
    eolearn_features = features.astype(np.float64)
    eolearn_features[0, :, :5] = np.nan  # undefined edges are left out of that comparison

    good = bench_run.check_prediction(features, eolearn_features, no_data, classes, model)
    assert good["passed"]
    assert good["agreement_xgboost_predict"] == 1.0
    assert good["eolearn_comparable_pixels"] == 38 * 45
    assert good["agreement_eolearn_features"] == 1.0

    changed = classes.copy()
    changed[10:12] = np.where(changed[10:12] == 1, 2, 1)  # 100 of 1900 pixels differ: 94.7 % agreement
    bad = bench_run.check_prediction(features, None, no_data, changed, model)
    assert not bad["passed"]
    assert bad["agreement_xgboost_predict"] == pytest.approx(1 - 100 / 1900)


def test_map_agreement_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        bench_run.map_agreement(np.zeros(3), np.zeros(4))


# -- targets and outputs ---------------------------------------------------------------------------


def test_target_rows_for_lower_and_upper_bounds() -> None:
    fast = bench_run.target("speed", 20.0, 10.0)
    assert fast["met"] and fast["ratio"] == pytest.approx(2.0)
    slow = bench_run.target("speed", 2.5, 10.0)
    assert not slow["met"] and slow["ratio"] == pytest.approx(0.25)
    lean = bench_run.target("memory", 3.0, 1.5, at_most=True)
    assert not lean["met"] and lean["ratio"] == pytest.approx(0.5)
    missing = bench_run.target("x", None, 1.0)
    assert not missing["met"] and missing["ratio"] is None


def test_forkserver_job_reports_measurements(tmp_path: Path) -> None:
    runner = bench_run.JobRunner(tmp_path, "forkserver")
    m = runner.measure("baseline", {"job": "baseline"})
    assert m.wall_s >= 0 and m.cpu_s >= 0
    # The child imported the preloaded libraries (xgboost, eo-learn, ...): well above a bare interpreter.
    assert m.peak_rss_mb >= m.start_rss_mb > 50


def test_peak_rss_is_at_least_the_current_rss() -> None:
    assert worker.peak_rss_mb() >= worker.current_rss_mb() * 0.99


def test_tiny_run_writes_json_and_markdown_with_the_required_keys(tmp_path: Path) -> None:
    if not _reference_available():
        pytest.skip(
            "the eo-learn reference path needs numba, scikit-learn and lightgbm (not in uv.lock); "
            "see bench/eolearn_ref.py:check_available"
        )
    out = tmp_path / "out"
    opts = bench_run.Options(
        size=64, scaling=[32, 64], season=QUICK_SEASON, out=out, seed=3, quick=True, isolation="inprocess"
    )
    report, passed = bench_run.run_benchmark(opts)
    path = bench_run.write_outputs(report, out)

    loaded = json.loads(path.read_text(encoding="utf-8"))
    assert set(loaded) >= REQUIRED_KEYS
    assert passed and loaded["passed"]
    assert loaded["checks"]["features"]["passed"] and loaded["checks"]["prediction"]["passed"]
    assert loaded["checks"]["features"]["same_dates_kept"] and loaded["checks"]["features"]["same_target_dates"]
    assert loaded["features_max_abs_diff"] <= 1e-4
    assert loaded["checks"]["prediction"]["agreement_xgboost_predict"] >= 0.999
    stages = {row["stage"] for row in loaded["stages"]}
    assert {"download", "features", "add_reference", "sampling", "prediction", "postprocessing"} <= stages
    assert {"change_detection", "training"} <= stages
    assert all(set(row) >= STAGE_ROW_KEYS for row in loaded["stages"])
    assert [row["size_px"] for row in loaded["scaling"]] == [32, 64]
    assert {"xgboost", "lightgbm_example"} <= set(loaded["models"])
    for model in loaded["models"].values():
        assert model["model_bytes"] > 0 and 0.0 <= model["test_accuracy"] <= 1.0
    assert all({"target", "goal", "value", "met"} <= set(t) for t in loaded["targets"])
    assert "| stage |" in (out / "bench.md").read_text(encoding="utf-8")


def test_repeated_measurement_keeps_the_best_time_and_the_largest_memory(tmp_path: Path) -> None:
    runner = bench_run.JobRunner(tmp_path, "inprocess")
    single = runner.measure("baseline", {"job": "baseline"})
    assert "repeats" not in single.extras and runner.count == 1
    best = runner.measure("baseline", {"job": "baseline"}, repeats=3)
    assert runner.count == 4 and best.extras["repeats"] == 3
    assert len(best.extras["wall_s_all"]) == 3
    assert round(best.wall_s, 3) == min(best.extras["wall_s_all"])
    assert best.peak_rss_mb >= single.peak_rss_mb * 0.99  # peak RSS only grows in one process


def test_full_runs_repeat_the_timed_jobs_and_quick_runs_do_not() -> None:
    assert bench_run.parse_args([]).repeats == 3
    assert bench_run.parse_args(["--quick"]).repeats == 1
    assert bench_run.parse_args(["--repeats", "5"]).repeats == 5
    opts = bench_run.parse_args([])
    assert [bench_run._repeats(opts, s) for s in ("download", "features", "training", "prediction")] == [1, 3, 1, 3]


def test_scale_country_has_the_asked_number_of_tiles(tmp_path) -> None:
    """`make bench-scale`'s synthetic country: exactly N grid tiles (a near-square block), the batch size asked."""
    from bench.scale import write_country
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import project_tiles
    from lcms_tasks.runner import plan_batches

    cfg = load_config(write_country(tmp_path, tiles=23, tile_px=32, batch_size=5, seed=1))
    tiles = project_tiles(cfg)
    assert len(tiles) == 23 and len({t.id for t in tiles}) == 23
    assert cfg.grid.tile_size_px == 32 and cfg.grid.batch_size == 5
    batches = plan_batches(RunContext.create(cfg, season="2023"))
    assert [len(b["tile_ids"]) for b in batches] == [5, 5, 5, 5, 3]


def test_scale_chain_is_download_to_reporting_and_its_figures_add_up() -> None:
    """`make bench-scale-chain`: the registry's stages up to reporting; wall from the first start to the last end,
    overhead = wall less each stage's compute over its slots, per tile; a failed stage fails the chain."""
    from bench.scale import chain_figures, chain_stages

    stages = chain_stages()
    assert stages[0] == "download" and stages[-1] == "reporting" and "publish" not in stages and len(stages) == 10

    def stage(name: str, compute: float, slots: int, tis: int, xcom: int, state: str = "success") -> dict:
        return {
            "stage": name,
            "state": state,
            "tiles": 100,
            "batch_size": 32,
            "task_slots": slots,
            "mapped_task_instances": tis,
            "compute_seconds": compute,
            "max_xcom_bytes": xcom,
        }

    runs = [
        {"start_date": "2026-01-01T00:00:00+00:00", "end_date": "2026-01-01T00:01:00+00:00"},
        {"start_date": "2026-01-01T00:01:10+00:00", "end_date": "2026-01-01T00:02:40+00:00"},
    ]
    figures = [stage("download", 80.0, 2, 4, 5000), stage("training", 30.0, 1, 0, 300)]
    out = chain_figures(("download", "training"), figures, runs)
    assert out["stage_wall_seconds"] == 160.0  # 00:00:00 to 00:02:40, the 10 s wait included
    assert out["compute_seconds"] == 110.0 and out["mapped_task_instances"] == 4 and out["max_xcom_bytes"] == 5000
    assert out["overhead_seconds_per_tile"] == round((160.0 - 80.0 / 2 - 30.0) / 100, 4)
    assert out["state"] == "success" and out["per_stage"] == figures
    # the second stage failed, or never ran: the chain failed, its figures are those of what ran
    assert (
        chain_figures(("download", "training"), [figures[0], {**figures[1], "state": "failed"}], runs)["state"]
        == "failed"
    )
    partial = chain_figures(("download", "training"), figures[:1], runs[:1])
    assert partial["state"] == "failed" and partial["stage_wall_seconds"] == 60.0
