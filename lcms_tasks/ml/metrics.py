"""Classification accuracy figures (pure numpy, no scikit-learn).

Everything is computed from one confusion matrix whose rows are the true
classes and whose columns are the predicted classes, both in a given class-id
order, so the figures in a report always refer to explicit class ids.

Conventions where a ratio is undefined (no sample, no prediction of a class):
precision, recall and F1 are 0.0, as a class the model never gets right should
not look perfect; overall accuracy and kappa of an empty sample are ``None``
(JSON ``null``), since there is nothing to measure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, class_ids: Sequence[int]) -> np.ndarray:
    """(C, C) int64 counts: row i = true class ``class_ids[i]``, column j = predicted ``class_ids[j]``.

    Raises ``ValueError`` naming any label of ``y_true`` or ``y_pred`` not in ``class_ids``
    (silently ignoring them would inflate accuracy).
    """
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    ids = np.asarray(list(class_ids), dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"class_ids repeat an id: {ids.tolist()}")
    n_classes = len(ids)
    if y_true.size == 0:
        return np.zeros((n_classes, n_classes), dtype=np.int64)
    # Map ids to matrix positions through a sorted lookup (vectorised, no per-sample Python).
    order = np.argsort(ids)
    sorted_ids = ids[order]
    positions = []
    for name, labels in (("y_true", y_true), ("y_pred", y_pred)):
        labels = labels.astype(np.int64)
        known = np.isin(labels, ids)
        if not known.all():
            unknown = np.unique(labels[~known]).tolist()
            raise ValueError(f"{name} has label(s) {unknown} not among class_ids {ids.tolist()}")
        positions.append(order[np.searchsorted(sorted_ids, labels)])
    flat = positions[0] * n_classes + positions[1]
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes).astype(np.int64)


def overall_accuracy(cm: np.ndarray) -> float | None:
    """Share of correctly classified samples: trace / total (``None`` if there are none)."""
    total = int(cm.sum())
    return None if total == 0 else int(np.trace(cm)) / total


def cohen_kappa(cm: np.ndarray) -> float | None:
    """Cohen's kappa of a confusion matrix (``None`` if empty).

    Computed with exact integers, (n·trace − Σ row·col) / (n² − Σ row·col), so it is exactly 1.0
    if and only if every sample lies on the diagonal. When chance agreement is total (truth and
    prediction are one and the same single class) the denominator is 0; that case is perfect
    agreement and reported as 1.0.
    """
    n = int(cm.sum())
    if n == 0:
        return None
    trace = int(np.trace(cm))
    chance = sum(int(r) * int(c) for r, c in zip(cm.sum(axis=1), cm.sum(axis=0), strict=True))
    denominator = n * n - chance
    if denominator == 0:
        return 1.0
    return (n * trace - chance) / denominator


def per_class_scores(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, f1, support) per class of a confusion matrix; undefined ratios are 0.0."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support.astype(np.float64), out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1, support


def classification_report(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_ids: Sequence[int],
    class_names: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """All figures as a JSON-able dict.

    Keys: ``n``, ``overall_accuracy``, ``kappa``, ``macro_f1`` (over classes with support),
    ``class_ids`` (the order of the matrix), ``per_class`` (list of dicts: id, name, precision,
    recall, f1, support), ``confusion_matrix`` (list of rows; rows = truth, columns = predicted).
    """
    ids = [int(c) for c in class_ids]
    cm = confusion_matrix(y_true, y_pred, ids)
    precision, recall, f1, support = per_class_scores(cm)
    names = dict(class_names or {})
    per_class = [
        {
            "id": cid,
            "name": names.get(cid, str(cid)),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, cid in enumerate(ids)
    ]
    present = support > 0
    return {
        "n": int(cm.sum()),
        "overall_accuracy": overall_accuracy(cm),
        "kappa": cohen_kappa(cm),
        "macro_f1": float(f1[present].mean()) if present.any() else None,
        "class_ids": ids,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }
