"""Parcel classification: which parcels and classes take part, stratified K-fold CV, fitting.

The classifier is the training stage's (:func:`lcms_tasks.stages.training.train_booster`: XGBoost
``hist`` with its default options, balanced class weights, early stopping). Rules:

* **Parcels**: a parcel without a label, or without any valid observation (its features are all
  NaN), takes no part in training or evaluation; the figures count them.
* **Rare classes**: a class with fewer than ``min_class_count`` usable parcels is left out of the
  cross-validation and of the model, and reported with its count (``excluded_classes``); it is not
  an error. ``min_class_count`` must be at least the number of folds, so that every class is in
  every test fold.
* **Folds**: stratified by class with a seeded shuffle: the parcels of each class, shuffled, are dealt
  to the folds in turn, so the class counts of two folds differ by at most one.
* **No tuning on a test fold**: early stopping watches an inner validation split of each training
  fold (stratified, ``validation_fraction`` of it); the model is then refitted on the whole training
  fold with the number of rounds early stopping chose. ``lcms parcels train`` does the same on all
  parcels, so the cross-validated figures describe the production procedure.
* **Metrics**: pooled over the out-of-fold predictions (each parcel predicted once, by the model that
  did not see it): overall accuracy, macro-F1 (mean over classes of F1), Cohen's kappa and per-class
  precision / recall / F1 / support; plus each fold's figures with their mean and standard deviation.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lcms_tasks.ml.metrics import classification_report
from lcms_tasks.stages import training

if TYPE_CHECKING:
    import xgboost as xgb

log = logging.getLogger(__name__)

#: Share of a training fold held out for early stopping.
VALIDATION_FRACTION = 0.2


@dataclasses.dataclass
class Selection:
    """The parcels and classes a model learns from."""

    rows: np.ndarray  # (n,) indices of the parcels used
    classes: list[str]  # the classes learnt; encoded label i <-> classes[i]
    y: np.ndarray  # (n,) encoded labels of the used parcels
    excluded_classes: dict[str, int]  # rare class -> usable parcels
    excluded_parcels: dict[str, int]  # reason -> count


def select(labels: np.ndarray | None, n_valid: np.ndarray, min_class_count: int) -> Selection:
    """Apply the parcel and rare-class rules (module docstring) to a table's labels."""
    if labels is None:
        raise ValueError("the table has no label column (--label-column)")
    labelled = np.array([label is not None for label in labels], dtype=bool)
    with_data = n_valid > 0
    usable = labelled & with_data
    values, counts = np.unique(labels[usable].astype(str), return_counts=True) if usable.any() else ([], [])
    kept = [str(v) for v, c in zip(values, counts, strict=True) if c >= min_class_count]
    excluded = {str(v): int(c) for v, c in zip(values, counts, strict=True) if c < min_class_count}
    in_kept = usable & np.isin(labels.astype(str), kept)
    rows = np.flatnonzero(in_kept)
    code = {label: i for i, label in enumerate(kept)}
    y = np.array([code[str(labels[r])] for r in rows], dtype=np.int64)
    return Selection(
        rows=rows,
        classes=kept,
        y=y,
        excluded_classes=excluded,
        excluded_parcels={
            "unlabelled": int((~labelled).sum()),
            "no_valid_observation": int((labelled & ~with_data).sum()),
            "rare_class": int((usable & ~in_kept).sum()),
        },
    )


def stratified_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number (0..k-1) of each sample: every class's samples, shuffled, dealt to the folds in turn."""
    if k < 2:
        raise ValueError(f"folds must be >= 2, got {k}")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]) if y.size else y
    folds = np.empty(y.size, dtype=np.int64)
    folds[order.astype(np.int64)] = np.arange(y.size) % k
    return folds


def fit(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    options: training.Options,
    *,
    validation_fraction: float = VALIDATION_FRACTION,
) -> tuple[xgb.Booster, dict[str, Any]]:
    """Early stopping on a stratified inner split of (X, y), then a refit on all of it with that many rounds.

    ``options.seed`` seeds both the inner split and XGBoost, so one seed reproduces the model.
    """
    k_inner = max(2, round(1.0 / validation_fraction))
    inner_val = stratified_folds(y, k_inner, options.seed) == 0
    # One learning rate for the early-stopping fit and the refit ('auto' resolves on the inner training part).
    eta = training.auto_learning_rate(options, int((~inner_val).sum()))
    options = options.model_copy(update={"learning_rate": eta})
    _, best, used = training.train_booster(X[~inner_val], y[~inner_val], X[inner_val], y[inner_val], n_classes, options)
    rounds = best + 1
    booster, _, _ = training.train_booster(
        X, y, None, None, n_classes, options.model_copy(update={"n_estimators": rounds})
    )
    info = {
        "best_iteration": best,
        "n_rounds": rounds,
        "early_stopping": used,
        "inner_validation": int(inner_val.sum()),
    }
    return booster, info


def predict_proba(booster: xgb.Booster, X: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, C) class probabilities (binary models give P(class 1) only)."""
    if X.shape[0] == 0:
        return np.zeros((0, n_classes), dtype=np.float32)
    out = np.asarray(booster.inplace_predict(np.ascontiguousarray(X, dtype=np.float32), missing=np.nan))
    if out.ndim == 1:
        out = np.stack([1.0 - out, out], axis=1)
    return out.astype(np.float32, copy=False)


def _summary(report: dict[str, Any]) -> dict[str, float | None]:
    return {k: report[k] for k in ("overall_accuracy", "macro_f1", "kappa")}


def cross_validate(
    X: np.ndarray,
    y: np.ndarray,
    classes: Sequence[str],
    options: training.Options,
    *,
    folds: int,
    seed: int,
    validation_fraction: float = VALIDATION_FRACTION,
) -> dict[str, Any]:
    """Stratified K-fold cross-validation of the parcel classifier on encoded labels ``y``.

    ``seed`` seeds the folds; fold k's model (inner split and XGBoost) is seeded with ``seed + k``.
    Returns the pooled figures (``overall_accuracy``, ``macro_f1``, ``kappa``, ``per_class``,
    ``confusion_matrix``), ``fold_of`` (the fold of each row) and ``per_fold`` / ``mean`` / ``sd``.
    """
    n_classes = len(classes)
    if n_classes < 2:
        raise ValueError(f"cross-validation needs at least 2 classes, got {list(classes)}")
    fold_of = stratified_folds(y, folds, seed)
    predicted = np.full(y.size, -1, dtype=np.int64)
    per_fold = []
    ids = list(range(n_classes))
    names = dict(enumerate(classes))
    for k in range(folds):
        test = fold_of == k
        # Fold k's model is seeded with seed + k: `lcms parcels train --seed S` on fold 0's training parcels
        # reproduces fold 0's model.
        fold_options = options.model_copy(update={"seed": seed + k})
        booster, info = fit(X[~test], y[~test], n_classes, fold_options, validation_fraction=validation_fraction)
        predicted[test] = np.argmax(predict_proba(booster, X[test], n_classes), axis=1)
        report = classification_report(y[test], predicted[test], ids, names)
        per_fold.append({"fold": k, "n_test": int(test.sum()), **_summary(report), **info})
        log.info(
            "parcels: fold %s/%s: %s test parcels, OA %.3f, macro-F1 %.3f, %s rounds",
            k + 1,
            folds,
            int(test.sum()),
            report["overall_accuracy"],
            report["macro_f1"],
            info["n_rounds"],
        )
    pooled = classification_report(y, predicted, ids, names)
    figures = ("overall_accuracy", "macro_f1", "kappa")
    table = np.array([[f[m] for m in figures] for f in per_fold], dtype=np.float64)
    return {
        **_summary(pooled),
        "per_class": {
            c["name"]: {m: c[m] for m in ("precision", "recall", "f1", "support")} for c in pooled["per_class"]
        },
        "confusion_matrix": {"labels": list(classes), "rows_truth_columns_predicted": pooled["confusion_matrix"]},
        "per_fold": per_fold,
        "mean": dict(zip(figures, table.mean(axis=0).tolist(), strict=True)),
        "sd": dict(zip(figures, table.std(axis=0, ddof=1).tolist(), strict=True)),
        "fold_of": fold_of,
        "predicted": predicted,
    }
