"""Training stage on small synthetic datasets written as the merge_features artefact."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from lcms_tasks.config import parse_config
from lcms_tasks.context import RunContext
from lcms_tasks.errors import ArtefactMissingError, StageError
from lcms_tasks.ml.matrix import flat_feature_names
from lcms_tasks.ml.model import LcmsModel
from lcms_tasks.stages import training

FEATURES = ["NDVI", "NDWI", "NDBI", "TC_BRIGHTNESS", "TC_GREENNESS", "TC_WETNESS"]
N_TIMES = 4
NAMES = flat_feature_names(FEATURES, N_TIMES)
# Small, fast models: the point is the stage's behaviour, not model quality.
FAST = {"n_estimators": 40, "early_stopping_rounds": 5, "max_depth": 4, "n_jobs": 2}


def make_ctx(
    project_dir: Path, *, season: str = "2023", run_id: str = "run-1", stages: dict[str, Any] | None = None
) -> RunContext:
    """A run context of the test project with stage options overridden."""
    data = yaml.safe_load((project_dir / "project.yaml").read_text())
    data["stages"] = stages or {"training": dict(FAST)}
    cfg = parse_config(data, base_dir=project_dir)
    return RunContext.create(cfg, season=season, run_id=run_id)


def synthetic_dataset(
    counts: dict[int, tuple[int, int, int]], *, seed: int = 0, nan_share: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Separable classes: X (n, K*F) float32 around class centres, y ids, split; some NaN."""
    rng = np.random.default_rng(seed)
    X_parts, y_parts, split_parts = [], [], []
    for cid, per_split in counts.items():
        centre = np.random.default_rng(1000 + cid).normal(0.0, 1.0, len(NAMES))
        for split, n in enumerate(per_split):
            X_parts.append(centre + rng.normal(0.0, 0.3, (n, len(NAMES))))
            y_parts.append(np.full(n, cid))
            split_parts.append(np.full(n, split))
    X = np.concatenate(X_parts).astype(np.float32)
    X[rng.random(X.shape) < nan_share] = np.nan
    return X, np.concatenate(y_parts).astype(np.uint8), np.concatenate(split_parts).astype(np.uint8)


def write_dataset(
    ctx: RunContext, X: np.ndarray, y: np.ndarray, split: np.ndarray, names: list[str] | None = None
) -> str:
    """Publish ``dataset.npz`` where merge_features would, with its marker meta."""
    names = NAMES if names is None else names
    uri = ctx.run_uri("merge_features", "dataset")
    n = len(y)
    meta = ctx.marker_meta("merge_features", None, {"feature_names": names, "tiles": ["t0"]})
    meta["run_id"] = "merge-run-7"
    with ctx.storage.writing_dir(uri, meta) as staging:
        np.savez(
            staging / "dataset.npz",
            X=X,
            y=y,
            tile=np.array(["t0"] * n),
            row=np.arange(n, dtype=np.int32),
            col=np.zeros(n, dtype=np.int32),
            polygon_id=np.arange(n, dtype=np.int64),
            split=split,
        )
    return uri


BALANCED = {1: (150, 40, 60), 2: (150, 40, 60), 4: (100, 30, 40), 5: (60, 20, 30)}


def test_trains_accurate_model_with_complete_metadata(project_dir: Path) -> None:
    ctx = make_ctx(project_dir)
    X, y, split = synthetic_dataset(BALANCED)
    dataset_uri = write_dataset(ctx, X, y, split)
    uris = training.run(ctx)
    assert uris == [ctx.run_uri("training", "model")]
    assert ctx.storage.is_complete(uris[0])
    folder = ctx.storage.local_path(uris[0])
    assert (folder / "model.ubj").stat().st_size > 0
    meta = json.loads((folder / "metadata.json").read_text())
    assert ctx.storage.read_marker(uris[0]) == meta  # marker meta = metadata

    assert meta["feature_names"] == NAMES
    assert meta["label_encoding"]["class_ids"] == [1, 2, 4, 5]
    assert meta["label_encoding"]["class_names"] == ["cropland", "forest", "water", "built-up"]
    assert [c["id"] for c in meta["legend"]] == list(range(1, 9)) and meta["legend"][0]["color"].startswith("#")
    assert meta["seed"] == 42 and meta["hyperparameters"]["n_estimators"] == FAST["n_estimators"]
    assert 0 <= meta["best_iteration"] < FAST["n_estimators"] and meta["early_stopping"] is True
    assert meta["n_rounds"] == meta["best_iteration"] + 1  # truncated to the best iteration
    assert set(meta["libraries"]) >= {"xgboost", "numpy", "lcms"}
    data = meta["data"]
    assert data["dataset_uri"] == dataset_uri and data["dataset_run_id"] == "merge-run-7"
    assert data["n_per_split"] == {"train": 460, "validation": 130, "test": 190}
    assert data["class_counts"]["test"] == {"1": 60, "2": 60, "4": 40, "5": 30}
    assert data["absent_classes"] == [3, 6, 7, 8] and data["dropped_classes"] == []

    m = meta["metrics"]
    assert m["n"] == 190 and m["class_ids"] == [1, 2, 4, 5]
    assert m["overall_accuracy"] > 0.95 and m["kappa"] > 0.9
    assert np.array(m["confusion_matrix"]).sum() == 190
    assert {c["id"]: c["support"] for c in m["per_class"]} == {1: 60, 2: 60, 4: 40, 5: 30}
    assert all(c["f1"] > 0.85 for c in m["per_class"])

    # The stored model reproduces the stored test accuracy.
    model = LcmsModel.load(ctx.storage, uris[0])
    assert model.run_id == "run-1"
    test = split == 2
    pred = model.predict(X[test])
    assert np.mean(pred == y[test]) == pytest.approx(m["overall_accuracy"])
    proba = model.predict_proba(X[test])
    assert proba.dtype == np.float32 and proba.shape == (190, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_training_is_deterministic(project_dir: Path) -> None:
    X, y, split = synthetic_dataset(BALANCED, seed=3, nan_share=0.2)
    probas = []
    for run_id in ("a", "b"):
        ctx = make_ctx(project_dir, run_id=run_id)
        write_dataset(ctx, X, y, split)
        uri = training.run(ctx)[0]
        probas.append(LcmsModel.load(ctx.storage, uri).predict_proba(X))
    np.testing.assert_array_equal(probas[0], probas[1])
    # A different seed gives a different model (the seed is really used).
    ctx = make_ctx(project_dir, run_id="c", stages={"training": {**FAST, "seed": 7}})
    uri = training.run(ctx)[0]
    assert not np.array_equal(LcmsModel.load(ctx.storage, uri).predict_proba(X), probas[0])


def test_rare_class_fails_naming_it_and_writes_nothing(project_dir: Path) -> None:
    # Rare classes are dropped by default (below); an error only when asked for.
    ctx = make_ctx(project_dir, stages={"training": {**FAST, "drop_rare_classes": False}})
    write_dataset(ctx, *synthetic_dataset({**BALANCED, 5: (7, 5, 5)}))
    with pytest.raises(StageError, match=r"class 5 'built-up' has 7 training samples.*min_samples_per_class=20"):
        training.run(ctx)
    assert not ctx.storage.exists(ctx.run_uri("training", "model"))


def test_drop_rare_classes(project_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    ctx = make_ctx(project_dir)  # the default rule: rare classes are dropped and reported
    assert ctx.config.stages.training.drop_rare_classes is True
    write_dataset(ctx, *synthetic_dataset({**BALANCED, 5: (7, 5, 5)}))
    with caplog.at_level(logging.WARNING, logger="lcms_tasks.stages.training"):
        uri = training.run(ctx)[0]
    assert "dropped class 5 'built-up'" in caplog.text
    meta = ctx.storage.read_marker(uri)
    assert meta["label_encoding"]["class_ids"] == [1, 2, 4]
    assert meta["data"]["dropped_classes"] == [{"id": 5, "name": "built-up", "train_samples": 7}]
    assert meta["data"]["validation_samples_excluded"] == 5
    # The dropped class's test samples still count (as errors), so the metrics are not flattered.
    per_class = {c["id"]: c for c in meta["metrics"]["per_class"]}
    assert per_class[5]["support"] == 5 and per_class[5]["recall"] == 0.0
    assert meta["metrics"]["n"] == 165


def test_binary_model_without_validation_split(project_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    ctx = make_ctx(project_dir, stages={"training": {**FAST, "class_weighting": "none"}})
    X, y, split = synthetic_dataset({2: (80, 0, 20), 4: (60, 0, 20)})
    write_dataset(ctx, X, y, split)
    with caplog.at_level(logging.WARNING, logger="lcms_tasks.stages.training"):
        uri = training.run(ctx)[0]
    assert "validation split is empty" in caplog.text
    meta = ctx.storage.read_marker(uri)
    assert meta["early_stopping"] is False and meta["n_rounds"] == FAST["n_estimators"]
    model = LcmsModel.load(ctx.storage, uri)
    proba = model.predict_proba(X)
    assert proba.shape == (len(y), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert set(np.unique(model.predict(X)).tolist()) <= {2, 4}
    assert meta["metrics"]["overall_accuracy"] > 0.95


def test_bad_datasets_are_clear_errors(project_dir: Path) -> None:
    ctx = make_ctx(project_dir)
    with pytest.raises(ArtefactMissingError, match="merge_features"):
        training.run(ctx)
    X, y, split = synthetic_dataset(BALANCED)
    y_bad = y.copy()
    y_bad[:3] = 0
    write_dataset(ctx, X, y_bad, split)
    with pytest.raises(StageError, match=r"labels \[0\].*not in the legend"):
        training.run(ctx)
    write_dataset(ctx, X, y, split, names=NAMES[:-1])
    with pytest.raises(StageError, match="lists 23 feature_names but X has 24 columns"):
        training.run(ctx)
    write_dataset(ctx, X, y, np.where(split == 2, 3, split).astype(np.uint8))
    with pytest.raises(StageError, match=r"found \[3\]"):
        training.run(ctx)


def test_pure_helpers() -> None:
    y = np.array([5, 1, 5, 5, 2])
    np.testing.assert_array_equal(training.encode_labels(y, [1, 5]), [1, 0, 1, 1, -1])
    enc = np.array([0, 0, 0, 1])
    w = training.balanced_weights(enc, 3)
    # Each present class carries the same total weight; the total equals the sample count.
    assert w[enc == 0].sum() == pytest.approx(w[enc == 1].sum())
    assert w.sum() == pytest.approx(len(enc))
    params = training.xgb_params(training.Options(), 5)
    assert params["tree_method"] == "hist" and params["num_class"] == 5 and "nthread" not in params


def test_auto_learning_rate_depends_on_the_training_set_size() -> None:
    auto = training.Options()
    assert auto.learning_rate == "auto"
    assert training.auto_learning_rate(auto, 340) == 0.1
    assert training.auto_learning_rate(auto, training.AUTO_ETA_SAMPLES - 1) == 0.1
    assert training.auto_learning_rate(auto, training.AUTO_ETA_SAMPLES) == 0.3
    assert training.xgb_params(auto, 3, 500)["eta"] == 0.1
    fixed = training.Options(learning_rate=0.25)
    assert training.auto_learning_rate(fixed, 340) == training.auto_learning_rate(fixed, 10**6) == 0.25
    with pytest.raises(ValueError):
        training.Options(learning_rate="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        training.Options(learning_rate=0.0)


def test_early_stopping_truncates_the_stored_model(project_dir: Path) -> None:
    # Overlapping classes and a high learning rate: the validation loss turns up after a few rounds.
    stages = {"training": {**FAST, "n_estimators": 200, "learning_rate": 0.5, "max_depth": 6}}
    ctx = make_ctx(project_dir, stages=stages)
    X, y, split = synthetic_dataset({1: (120, 60, 30), 2: (120, 60, 30)}, seed=5)
    X = X + np.random.default_rng(9).normal(0.0, 3.0, X.shape).astype(np.float32)
    write_dataset(ctx, X, y, split)
    uri = training.run(ctx)[0]
    meta = ctx.storage.read_marker(uri)
    assert meta["early_stopping"] is True
    assert meta["best_iteration"] + 1 < 200 - FAST["early_stopping_rounds"]
    # Only the rounds up to the best one are stored, so a plain Booster predicts with the selected model.
    assert meta["n_rounds"] == meta["best_iteration"] + 1
    assert LcmsModel.load(ctx.storage, uri).booster.num_boosted_rounds() == meta["n_rounds"]


def test_early_stopping_min_delta_drops_the_rounds_of_negligible_gain() -> None:
    """Separable classes: the loss keeps creeping down for many rounds after the map stopped changing."""
    X, y, split = synthetic_dataset({1: (150, 60, 60), 2: (150, 60, 60), 3: (150, 60, 60)}, seed=3)
    enc = training.encode_labels(y, [1, 2, 3])
    parts = [(X[split == s], enc[split == s]) for s in (0, 1, 2)]

    def fit(min_delta: float) -> tuple[int, np.ndarray]:
        options = training.Options(
            **{**FAST, "n_estimators": 300, "early_stopping_rounds": 10, "learning_rate": 0.1}
        ).model_copy(update={"early_stopping_min_delta": min_delta})
        booster, best, used = training.train_booster(*parts[0], *parts[1], 3, options)
        assert used and booster.num_boosted_rounds() == best + 1
        return best + 1, np.asarray(booster.inplace_predict(parts[2][0], missing=np.nan)).argmax(axis=1)

    every_gain, coarse = fit(0.0), fit(1e-2)
    assert coarse[0] < every_gain[0] * 0.75
    assert (coarse[1] == parts[2][1]).mean() >= (every_gain[1] == parts[2][1]).mean() - 0.01
