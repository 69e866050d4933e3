"""Unit tests of lcms_tasks.report.evaluate: map accuracy and change precision/recall against truth."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon, box

from lcms_tasks.report.evaluate import (
    ChangeOverlap,
    change_overlap,
    change_scores,
    map_confusion,
    summarise,
    used_for_training,
)


def scores(pred: list[Polygon], true: list[Polygon]) -> dict[str, float | None]:
    return change_scores(change_overlap(pred, true))


def test_identical_changes_are_perfect() -> None:
    sq = box(0, 0, 100, 100)
    assert scores([sq], [sq]) == {"change_precision": 1.0, "change_recall": 1.0}


def test_disjoint_changes_score_zero() -> None:
    assert scores([box(0, 0, 10, 10)], [box(20, 20, 30, 30)]) == {"change_precision": 0.0, "change_recall": 0.0}


def test_partial_overlap_by_area() -> None:
    # Predicted 10x10 (100 m²) overlaps the true 10x20 (200 m²) over 5x10 = 50 m².
    out = scores([box(0, 0, 10, 10)], [box(5, 0, 15, 20)])
    assert out["change_precision"] == pytest.approx(0.5)
    assert out["change_recall"] == pytest.approx(0.25)


def test_overlapping_predictions_are_not_double_counted() -> None:
    pred = [box(0, 0, 10, 10), box(0, 0, 10, 10), box(5, 0, 10, 10)]
    ov = change_overlap(pred, [box(0, 0, 10, 10)])
    assert ov.predicted_m2 == pytest.approx(100.0)
    assert change_scores(ov) == {"change_precision": 1.0, "change_recall": 1.0}


def test_no_predicted_change_precision_undefined_recall_zero() -> None:
    out = scores([], [box(0, 0, 10, 10)])
    assert out["change_precision"] is None
    assert out["change_recall"] == 0.0


def test_no_true_change_recall_undefined() -> None:
    out = scores([box(0, 0, 10, 10)], [])
    assert out["change_recall"] is None
    assert out["change_precision"] == 0.0  # everything predicted is a false alarm


def test_nothing_anywhere_both_undefined() -> None:
    assert scores([], [Polygon()]) == {"change_precision": None, "change_recall": None}


def test_invalid_and_multi_geometries_are_accepted() -> None:
    bowtie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # self-intersecting: made valid, area 50
    multi = MultiPolygon([box(0, 0, 10, 10), box(20, 0, 30, 10)])
    ov = change_overlap([bowtie], [multi])
    assert ov.predicted_m2 == pytest.approx(50.0)
    assert ov.true_m2 == pytest.approx(200.0)
    assert ov.intersection_m2 == pytest.approx(50.0)


def test_tiles_are_summed_before_dividing() -> None:
    # Tile A: perfect small change; tile B: big miss. Ratio of sums, not mean of ratios.
    a = change_overlap([box(0, 0, 10, 10)], [box(0, 0, 10, 10)])
    b = change_overlap([box(0, 0, 10, 10)], [box(50, 50, 80, 80)])
    out = change_scores(a + b)
    assert out["change_precision"] == pytest.approx(100 / 200)
    assert out["change_recall"] == pytest.approx(100 / (100 + 900))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(1, 30), st.integers(1, 30)), max_size=5),
    st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(1, 30), st.integers(1, 30)), max_size=5),
)
def test_precision_recall_bounds_and_symmetry(
    pred_boxes: list[tuple[int, ...]], true_boxes: list[tuple[int, ...]]
) -> None:
    pred = [box(x, y, x + w, y + h) for x, y, w, h in pred_boxes]
    true = [box(x, y, x + w, y + h) for x, y, w, h in true_boxes]
    ov = change_overlap(pred, true)
    out = change_scores(ov)
    assert ov.intersection_m2 <= min(ov.predicted_m2, ov.true_m2) + 1e-9
    for key in ("change_precision", "change_recall"):
        value = out[key]
        assert value is None or 0.0 <= value <= 1.0 + 1e-12
    # Swapping prediction and truth swaps precision and recall.
    swapped = change_scores(change_overlap(true, pred))
    assert swapped["change_precision"] == out["change_recall"]
    assert swapped["change_recall"] == out["change_precision"]


def test_map_confusion_ignores_zero_in_truth_and_map() -> None:
    truth = np.array([[1, 1, 2, 0], [2, 2, 3, 3]])
    pred = np.array([[1, 2, 2, 1], [0, 2, 3, 1]])
    cm = map_confusion(truth, pred, [1, 2, 3])
    # pixels kept: (1,1) (1,2) (2,2) (2,2) (3,3) (3,1); dropped: truth 0 and map 0
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert cm.sum() == 6


def test_map_confusion_shape_mismatch_names_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        map_confusion(np.ones((2, 2)), np.ones((3, 3)), [1])


def test_used_for_training() -> None:
    assert used_for_training({"n_samples": 12}) is True
    assert used_for_training({"n_samples": 0, "skipped_reason": "no reference pixels"}) is False
    assert used_for_training({}) is False
    assert used_for_training(None) is None


def test_summarise_keys_and_nulls() -> None:
    cm = np.array([[8, 2], [0, 10]])
    out = summarise(cm, [1, 2], 3, ChangeOverlap(2e6, 4e6, 1e6))
    assert out["overall_accuracy"] == pytest.approx(18 / 20)
    assert out["n_eval_tiles"] == 3
    assert out["change_precision"] == pytest.approx(0.5)
    assert out["change_recall"] == pytest.approx(0.25)
    assert out["true_change_area_km2"] == pytest.approx(4.0)
    assert out["predicted_change_area_km2"] == pytest.approx(2.0)
    assert out["per_class"]["1"]["recall"] == pytest.approx(0.8)
    empty = summarise(None, [1, 2], 0, None)
    assert empty["overall_accuracy"] is None
    assert empty["n_eval_tiles"] == 0
    assert empty["change_precision"] is None and empty["change_recall"] is None
    assert summarise(np.zeros((2, 2), int), [1, 2], 1, None)["overall_accuracy"] is None
