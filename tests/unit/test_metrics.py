"""Accuracy figures: a hand-computed example and invariants (hypothesis)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lcms_tasks.ml.metrics import classification_report, cohen_kappa, confusion_matrix, overall_accuracy

CLASS_IDS = [3, 1, 7]  # deliberately not sorted: the matrix follows the given order


def test_hand_computed_example() -> None:
    y_true = np.array([1, 1, 1, 3, 3, 7, 7, 7, 7, 1])
    y_pred = np.array([1, 1, 3, 3, 7, 7, 7, 1, 7, 1])
    cm = confusion_matrix(y_true, y_pred, CLASS_IDS)
    # rows truth (3, 1, 7), columns predicted (3, 1, 7)
    np.testing.assert_array_equal(cm, [[1, 0, 1], [1, 3, 0], [0, 1, 3]])
    report = classification_report(y_true, y_pred, CLASS_IDS, {1: "crop", 3: "forest", 7: "water"})
    assert report["n"] == 10
    assert report["overall_accuracy"] == pytest.approx(0.7)
    # p_o = 0.7; p_e = (2*2 + 4*4 + 4*4) / 100 = 0.36; kappa = 0.34 / 0.64
    assert report["kappa"] == pytest.approx(0.34 / 0.64)
    by_id = {c["id"]: c for c in report["per_class"]}
    assert by_id[1] == pytest.approx(
        {"id": 1, "name": "crop", "precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    )
    assert by_id[3]["precision"] == pytest.approx(0.5) and by_id[3]["recall"] == pytest.approx(0.5)
    assert by_id[7]["precision"] == pytest.approx(0.75) and by_id[7]["recall"] == pytest.approx(0.75)
    assert report["class_ids"] == CLASS_IDS
    assert report["confusion_matrix"] == cm.tolist()
    json.dumps(report, allow_nan=False)  # strict JSON


def test_unknown_label_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match=r"y_pred has label\(s\) \[9\]"):
        confusion_matrix(np.array([1, 3]), np.array([1, 9]), CLASS_IDS)
    with pytest.raises(ValueError, match="repeat"):
        confusion_matrix(np.array([1]), np.array([1]), [1, 1])


def test_empty_and_degenerate_cases() -> None:
    empty = classification_report(np.array([], int), np.array([], int), [1, 2])
    assert empty["n"] == 0 and empty["overall_accuracy"] is None and empty["kappa"] is None
    json.dumps(empty, allow_nan=False)
    # One class only, all correct: chance agreement is total, agreement is perfect.
    assert cohen_kappa(confusion_matrix(np.array([2, 2]), np.array([2, 2]), [1, 2])) == 1.0
    # Never predicted class: precision 0 (not NaN), recall 0.
    r = classification_report(np.array([1, 2]), np.array([1, 1]), [1, 2])
    assert r["per_class"][1]["precision"] == 0.0 and r["per_class"][1]["recall"] == 0.0
    assert r["kappa"] == pytest.approx(0.0)


labels = st.lists(st.sampled_from(CLASS_IDS), min_size=1, max_size=60)


@st.composite
def label_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    y_true = draw(labels)
    y_pred = draw(st.lists(st.sampled_from(CLASS_IDS), min_size=len(y_true), max_size=len(y_true)))
    return np.array(y_true), np.array(y_pred)


@settings(max_examples=200, deadline=None)
@given(label_pairs())
def test_invariants(pair: tuple[np.ndarray, np.ndarray]) -> None:
    y_true, y_pred = pair
    cm = confusion_matrix(y_true, y_pred, CLASS_IDS)
    assert cm.sum() == len(y_true)
    np.testing.assert_array_equal(cm.sum(axis=1), [(y_true == c).sum() for c in CLASS_IDS])
    np.testing.assert_array_equal(cm.sum(axis=0), [(y_pred == c).sum() for c in CLASS_IDS])
    report = classification_report(y_true, y_pred, CLASS_IDS)
    assert report["overall_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert report["overall_accuracy"] == pytest.approx(np.mean(y_true == y_pred))
    perfect = bool(np.all(y_true == y_pred))
    assert (report["kappa"] == 1.0) == perfect
    assert -1.0 <= report["kappa"] <= 1.0
    for c in report["per_class"]:
        assert 0.0 <= c["precision"] <= 1.0 and 0.0 <= c["recall"] <= 1.0 and 0.0 <= c["f1"] <= 1.0
        # F1 lies between min and max of precision and recall (harmonic mean).
        assert min(c["precision"], c["recall"]) - 1e-12 <= c["f1"] <= max(c["precision"], c["recall"]) + 1e-12
    json.dumps(report, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(label_pairs(), st.permutations(range(len(CLASS_IDS))))
def test_class_order_permutes_matrix_only(pair: tuple[np.ndarray, np.ndarray], perm: list[int]) -> None:
    y_true, y_pred = pair
    cm = confusion_matrix(y_true, y_pred, CLASS_IDS)
    reordered = [CLASS_IDS[i] for i in perm]
    cm2 = confusion_matrix(y_true, y_pred, reordered)
    np.testing.assert_array_equal(cm2, cm[np.ix_(perm, perm)])
    assert overall_accuracy(cm2) == overall_accuracy(cm)
    assert cohen_kappa(cm2) == pytest.approx(cohen_kappa(cm))
