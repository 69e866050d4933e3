"""Stage training: one XGBoost classifier per season from the merged dataset.

Reads ``merge_features/_run/dataset`` (``dataset.npz``: X, y, split 0 train /
1 validation / 2 test, ...; marker meta ``feature_names``), encodes the legend
class ids present in the training split to 0..C-1 (rare classes, with fewer
than ``min_samples_per_class`` training samples, are dropped by default: named
in a warning and the metadata, their test samples still counted as errors),
trains gradient-boosted trees (``hist``) with optional inverse-frequency class
weights and early stopping on the validation split, evaluates on the test split
and stores ``training/_run/model``: ``model.ubj`` (the booster truncated to its
best iteration) and ``metadata.json`` (also the folder's marker meta).

XGBoost's native ``xgboost.train`` API is used rather than ``XGBClassifier``:
the scikit-learn wrapper refuses to work without scikit-learn installed, and
the native API trains the identical model from the same parameters.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import Field

from lcms_tasks.errors import StageError
from lcms_tasks.schema import StrictModel

if TYPE_CHECKING:
    import xgboost as xgb

    from lcms_tasks.config import LegendClass
    from lcms_tasks.context import RunContext
    from lcms_tasks.preflight import Need
    from lcms_tasks.storage import Storage

NAME = "training"
DATASET_FILE = "dataset.npz"
SPLIT_NAMES = {0: "train", 1: "validation", 2: "test"}

log = logging.getLogger(__name__)


#: ``learning_rate: auto``: 0.1 (AUTO_ETA_SMALL) below this many training samples, 0.3 (AUTO_ETA_LARGE) from it.
AUTO_ETA_SAMPLES = 10_000
AUTO_ETA_SMALL = 0.1
AUTO_ETA_LARGE = 0.3


class Options(StrictModel):
    """Options of the training stage."""

    n_estimators: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Maximum boosting rounds (trees per class); early stopping on the validation split ends "
        "training sooner (about 30 rounds on 420 real parcels, about 35 on the demo).",
    )
    max_depth: int = Field(
        5, ge=1, le=32, description="Maximum tree depth (5: faster maps than 6 at the same accuracy on the benchmarks)."
    )
    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] | Literal["auto"] = Field(
        "auto",
        description="Shrinkage of each boosting round (eta), or 'auto': 0.1 below "
        f"{AUTO_ETA_SAMPLES:,} training samples, 0.3 from there (see auto_learning_rate).",
    )
    subsample: float = Field(0.8, gt=0.0, le=1.0, description="Share of training rows sampled per tree.")
    colsample_bytree: float = Field(0.8, gt=0.0, le=1.0, description="Share of features sampled per tree.")
    early_stopping_rounds: int = Field(
        20, ge=1, description="Stop when the validation loss has not improved for this many rounds."
    )
    early_stopping_min_delta: float = Field(
        1e-3,
        ge=0.0,
        description="A round counts as an improvement only if it lowers the validation log-loss by at least "
        "this much. The last rounds' gains (< 0.001) do not change the map but double the trees (prediction "
        "time); 0 keeps every improvement.",
    )
    n_jobs: int = Field(0, ge=0, description="Training threads; 0 = all cores.")
    seed: int = Field(42, description="Seed of row/column subsampling; same seed and data, same model.")
    class_weighting: Literal["balanced", "none"] = Field(
        "balanced",
        description="'balanced': weight samples by inverse class frequency so rare classes count as much as "
        "common ones; 'none': every sample weighs 1.",
    )
    min_samples_per_class: int = Field(
        20, ge=1, description="A class with fewer training samples than this is rare: dropped, or an error (below)."
    )
    drop_rare_classes: bool = Field(
        True,
        description="Rare classes (fewer than min_samples_per_class training samples) are dropped: a warning names "
        "each, the metadata lists them (data.dropped_classes) and their test samples still count, as errors. "
        "False: a rare class is an error naming it.",
    )


@dataclass
class Dataset:
    """The merged, split sample dataset a model is trained on."""

    X: np.ndarray  # (n, n_features) float32
    y: np.ndarray  # (n,) int64 legend class ids
    split: np.ndarray  # (n,) uint8: 0 train, 1 validation, 2 test
    feature_names: list[str]
    uri: str = ""
    run_id: str | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # tile, row, col, polygon_id when present


@dataclass
class ClassSelection:
    """Which legend classes the model learns, and which were left out and why."""

    class_ids: list[int]  # encoded label i <-> class_ids[i], in legend order
    dropped: list[dict[str, Any]]  # rare classes dropped (id, name, train count)
    absent: list[int]  # legend classes with no training sample


def load_dataset(storage: Storage, uri: str) -> Dataset:
    """Read and check the dataset folder at ``uri``; ``StageError`` names the file and the problem."""
    marker = storage.read_marker(uri)
    with storage.reading_dir(uri) as path:
        file = path / DATASET_FILE
        if not file.is_file():
            raise StageError(f"{uri}: no {DATASET_FILE} in the dataset folder")
        with np.load(file, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    where = f"{uri}/{DATASET_FILE}"
    missing = [k for k in ("X", "y", "split") if k not in arrays]
    if missing:
        raise StageError(f"{where}: missing array(s) {missing} (has {sorted(arrays)})")
    X = arrays.pop("X")
    if X.ndim != 2:
        raise StageError(f"{where}: X must be 2-D (samples, features), got shape {X.shape}")
    y, split = arrays.pop("y").ravel(), arrays.pop("split").ravel()
    for name, arr in (("y", y), ("split", split), *arrays.items()):
        if len(arr) != X.shape[0]:
            raise StageError(f"{where}: {name} has {len(arr)} entries but X has {X.shape[0]} rows")
    bad_split = sorted(set(np.unique(split).tolist()) - set(SPLIT_NAMES))
    if bad_split:
        raise StageError(f"{where}: split values must be 0 (train), 1 (validation) or 2 (test); found {bad_split}")
    feature_names = [str(n) for n in marker.get("feature_names", [])]
    if len(feature_names) != X.shape[1]:
        raise StageError(
            f"{where}: marker meta lists {len(feature_names)} feature_names but X has {X.shape[1]} columns"
        )
    X = np.ascontiguousarray(X, dtype=np.float32)
    n_inf = int(np.isinf(X).sum())
    if n_inf:
        raise StageError(f"{where}: X has {n_inf} infinite value(s); missing values must be NaN")
    return Dataset(
        X=X,
        y=y.astype(np.int64),
        split=split.astype(np.uint8),
        feature_names=feature_names,
        uri=uri,
        run_id=marker.get("run_id"),
        extra=arrays,
    )


def class_counts(y: np.ndarray) -> dict[int, int]:
    """Samples per class id."""
    ids, counts = np.unique(y, return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts, strict=True)}


def select_classes(y_train: np.ndarray, legend: list[LegendClass], min_samples: int, drop_rare: bool) -> ClassSelection:
    """The classes to learn from the training labels; rare classes fail or are dropped.

    Raises ``StageError`` naming every rare class (id, legend name, count) unless ``drop_rare``.
    """
    counts = class_counts(y_train)
    rare = [
        {"id": c.id, "name": c.name, "train_samples": counts[c.id]}
        for c in legend
        if 0 < counts.get(c.id, 0) < min_samples
    ]
    if rare and not drop_rare:
        listed = "; ".join(f"class {r['id']} '{r['name']}' has {r['train_samples']} training samples" for r in rare)
        raise StageError(
            f"{listed} (fewer than min_samples_per_class={min_samples}). Add reference data, lower "
            "stages.training.min_samples_per_class, or set stages.training.drop_rare_classes: true"
        )
    dropped_ids = {r["id"] for r in rare}
    class_ids = [c.id for c in legend if counts.get(c.id, 0) > 0 and c.id not in dropped_ids]
    absent = [c.id for c in legend if counts.get(c.id, 0) == 0]
    if len(class_ids) < 2:
        raise StageError(
            f"training needs at least 2 classes with >= {min_samples} samples; usable: {class_ids}, "
            f"counts per class id: {counts}"
        )
    return ClassSelection(class_ids=class_ids, dropped=rare, absent=absent)


def encode_labels(y: np.ndarray, class_ids: list[int]) -> np.ndarray:
    """Class ids -> 0..C-1 (position in ``class_ids``); ids not in ``class_ids`` become -1."""
    lookup = np.full(max(max(class_ids), int(y.max(initial=0))) + 1, -1, dtype=np.int32)
    lookup[np.asarray(class_ids)] = np.arange(len(class_ids), dtype=np.int32)
    return lookup[y]


def balanced_weights(y_encoded: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-sample weights n / (C · n_c), so each present class carries the same total weight."""
    counts = np.bincount(y_encoded, minlength=n_classes).astype(np.float64)
    present = counts > 0
    per_class = np.zeros(n_classes, dtype=np.float64)
    per_class[present] = len(y_encoded) / (present.sum() * counts[present])
    return per_class[y_encoded].astype(np.float32)


def auto_learning_rate(options: Options, n_train: int) -> float:
    """The learning rate (eta) used for ``n_train`` training samples.

    ``'auto'`` is 0.1 below :data:`AUTO_ETA_SAMPLES` training samples and 0.3 from there. Measured: on 420
    real crop parcels (about 340 training samples per fold; 5-fold CV, 6 repeats) eta 0.3 reaches the
    validation optimum after about 9 rounds and loses 0.016-0.020 macro-F1 against 0.1; on the demo and the
    benchmark tile (tens of thousands of pixels) both reach the same test accuracy (0.994), 0.3 with a third
    of the trees, so maps are predicted about three times faster.
    """
    if options.learning_rate != "auto":
        return float(options.learning_rate)
    return AUTO_ETA_SMALL if n_train < AUTO_ETA_SAMPLES else AUTO_ETA_LARGE


def xgb_params(options: Options, n_classes: int, n_train: int = AUTO_ETA_SAMPLES) -> dict[str, Any]:
    """Native XGBoost parameters equivalent to ``XGBClassifier(tree_method="hist", ...)`` with ``options``."""
    params: dict[str, Any] = {
        "tree_method": "hist",
        "max_depth": options.max_depth,
        "eta": auto_learning_rate(options, n_train),
        "subsample": options.subsample,
        "colsample_bytree": options.colsample_bytree,
        "seed": options.seed,
        "verbosity": 1,
    }
    if n_classes == 2:
        params.update(objective="binary:logistic", eval_metric="logloss")
    else:
        params.update(objective="multi:softprob", num_class=n_classes, eval_metric="mlogloss")
    if options.n_jobs > 0:
        params["nthread"] = options.n_jobs
    return params


def train_booster(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray | None,
    y_val: np.ndarray | None,
    n_classes: int,
    options: Options,
) -> tuple[xgb.Booster, int, bool]:
    """Train on encoded labels; early stopping on the validation set when it has samples.

    Returns (booster truncated to the best iteration, best iteration, early stopping used).
    """
    import xgboost as xgb

    weighted = options.class_weighting == "balanced"
    w_train = balanced_weights(y_train, n_classes) if weighted else None
    dtrain = xgb.QuantileDMatrix(X_train, label=y_train, weight=w_train, missing=np.nan)
    params = xgb_params(options, n_classes, len(y_train))
    use_validation = X_val is not None and y_val is not None and len(y_val) > 0
    if use_validation:
        assert X_val is not None and y_val is not None
        # The validation loss uses the validation split's own class balance, the same objective as training.
        w_val = balanced_weights(y_val, n_classes) if weighted else None
        dval = xgb.QuantileDMatrix(X_val, label=y_val, weight=w_val, missing=np.nan, ref=dtrain)
        booster = xgb.train(
            params,
            dtrain,
            num_boost_round=options.n_estimators,
            evals=[(dval, "validation")],
            callbacks=[
                xgb.callback.EarlyStopping(
                    rounds=options.early_stopping_rounds, min_delta=options.early_stopping_min_delta, save_best=False
                )
            ],
            verbose_eval=False,
        )
        best = int(booster.best_iteration)
        # Keep only the trees up to the best round: smaller file, faster prediction, and a plain
        # Booster predicts with exactly the model that early stopping selected.
        booster = booster[: best + 1]
    else:
        booster = xgb.train(params, dtrain, num_boost_round=options.n_estimators, verbose_eval=False)
        best = options.n_estimators - 1
    return booster, best, use_validation


def library_versions() -> dict[str, str]:
    """Versions that determine whether a stored model can be reproduced."""
    import xgboost as xgb

    try:
        lcms_version = importlib.metadata.version("lcms")
    except importlib.metadata.PackageNotFoundError:
        from lcms_tasks import __version__ as lcms_version
    return {
        "xgboost": xgb.__version__,
        "numpy": np.__version__,
        "lcms": lcms_version,
        "python": platform.python_version(),
    }


def train_and_evaluate(
    data: Dataset, legend: list[LegendClass], options: Options
) -> tuple[xgb.Booster, dict[str, Any]]:
    """Train on ``data`` and evaluate on its test split; returns (booster, metadata without run fields)."""
    from lcms_tasks.ml.metrics import classification_report
    from lcms_tasks.ml.model import LcmsModel

    legend_ids = {c.id for c in legend}
    names = {c.id: c.name for c in legend}
    unknown = {cid: n for cid, n in class_counts(data.y).items() if cid not in legend_ids}
    if unknown:
        raise StageError(
            f"{data.uri}: labels {sorted(unknown)} (samples per id: {unknown}) are not in the legend "
            f"(ids {sorted(legend_ids)}); 0 means unlabelled and must not be sampled"
        )
    train, val, test = (data.split == s for s in (0, 1, 2))
    if not train.any():
        raise StageError(f"{data.uri}: the training split (split == 0) is empty")
    selection = select_classes(data.y[train], legend, options.min_samples_per_class, options.drop_rare_classes)
    for r in selection.dropped:
        log.warning(
            "training: dropped class %s '%s' (%s training samples < min_samples_per_class=%s)",
            r["id"],
            r["name"],
            r["train_samples"],
            options.min_samples_per_class,
        )
    if selection.absent:
        names = {c.id: c.name for c in legend}
        log.info(
            "training: legend classes without training samples: %s",
            ", ".join(f"{names.get(i, i)} ({i})" for i in selection.absent),
        )
    class_ids = selection.class_ids
    n_classes = len(class_ids)

    y_enc = encode_labels(data.y, class_ids)
    train_rows = train & (y_enc >= 0)
    # Validation samples of classes the model does not learn cannot enter the loss; they are counted.
    val_rows = val & (y_enc >= 0)
    t0 = time.perf_counter()
    booster, best, early = train_booster(
        data.X[train_rows], y_enc[train_rows], data.X[val_rows], y_enc[val_rows], n_classes, options
    )
    seconds = time.perf_counter() - t0
    if not early:
        log.warning(
            "training: the validation split is empty; trained %s rounds without early stopping", options.n_estimators
        )
    log.info("training: %s classes, best iteration %s, %.1f s", n_classes, best, seconds)

    metadata: dict[str, Any] = {
        "format_version": 1,
        "model_file": "model.ubj",
        "feature_names": list(data.feature_names),
        "legend": [{"id": c.id, "name": c.name, "color": c.color} for c in legend],
        "label_encoding": {"class_ids": class_ids, "class_names": [names[c] for c in class_ids]},
        "seed": options.seed,
        "hyperparameters": options.model_dump(),
        "xgboost_params": xgb_params(options, n_classes, int(train_rows.sum())),
        "best_iteration": best,
        "n_rounds": int(booster.num_boosted_rounds()),
        "early_stopping": early,
        "training_seconds": round(seconds, 3),
        "libraries": library_versions(),
        "data": {
            "dataset_uri": data.uri,
            "dataset_run_id": data.run_id,
            "n_per_split": {SPLIT_NAMES[s]: int((data.split == s).sum()) for s in SPLIT_NAMES},
            "class_counts": {SPLIT_NAMES[s]: class_counts(data.y[data.split == s]) for s in SPLIT_NAMES},
            "dropped_classes": selection.dropped,
            "absent_classes": selection.absent,
            "validation_samples_excluded": int((val & (y_enc < 0)).sum()),
        },
    }
    model = LcmsModel(booster, metadata)
    if test.any():
        # Test samples of classes the model cannot predict stay in (as errors): leaving them out would
        # flatter the model. The matrix covers the model's classes plus any such truth classes.
        truth_ids = set(class_counts(data.y[test]))
        order = [c.id for c in legend if c.id in set(class_ids) | truth_ids]
        report = classification_report(data.y[test], model.predict(data.X[test]), order, names)
        log.info(
            "training: test overall accuracy %.3f, kappa %.3f on %s samples",
            report["overall_accuracy"],
            report["kappa"],
            report["n"],
        )
        metrics: dict[str, Any] | None = report
    else:
        metrics = None
        log.warning("training: the test split is empty; no metrics")
    metadata["metrics"] = metrics
    return booster, metadata


def needs(ctx: RunContext) -> list[Need]:
    """The season's merged dataset."""
    from lcms_tasks.preflight import Need

    return [Need("merge_features", ctx.season, artefact="dataset", what="the merged sample dataset")]


def run(ctx: RunContext) -> list[str]:
    """Train the season's model from the merged dataset and store it with its metadata."""
    options: Options = ctx.config.stages.training
    dataset_uri = ctx.run_uri("merge_features", "dataset")
    coverage = ctx.coverage()
    dataset_subset = ctx.storage.read_marker(dataset_uri).get("tile_subset")
    if sorted(dataset_subset or []) != sorted(coverage["tile_subset"] or []):
        from lcms_tasks.errors import ConfigError

        def said(subset: list[str] | None) -> str:
            return f"the tile subset {', '.join(subset)}" if subset else "every tile"

        raise ConfigError(
            f"the dataset of season {ctx.season} ({dataset_uri}) covers {said(dataset_subset)}, but this training "
            f"run covers {said(coverage['tile_subset'])}: run merge_features with the same tiles first",
            field="tiles",
        )
    data = load_dataset(ctx.storage, dataset_uri)
    booster, metadata = train_and_evaluate(data, ctx.config.legend(), options)
    metadata["legend_name"] = ctx.config.classification.legend
    metadata.update(coverage)
    uri = ctx.run_uri(NAME, "model")
    full = ctx.marker_meta(NAME, None, metadata)
    with ctx.storage.writing_dir(uri, full) as staging:
        booster.save_model(str(staging / "model.ubj"))
        (staging / "metadata.json").write_text(json.dumps(full, indent=2, sort_keys=True, default=str))
    log.info("training: model written to %s", uri)
    return [uri]
