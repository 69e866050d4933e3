"""Change accuracy with a temporal tolerance (lcms_tasks.accuracy.change), on boxes whose areas are known."""

from __future__ import annotations

import pytest
from shapely.geometry import box

from lcms_tasks.accuracy import change

SEASONS = ["2022", "2023", "2024"]
# Reference changes: A happened in 2023, B in 2024. Map: A detected one season late (2024), B on time,
# C (never a change) detected in 2024: false.
A = box(0, 0, 100, 100)  # 10,000 m²
B = box(1000, 0, 1100, 200)  # 20,000 m²
C = box(5000, 0, 5050, 100)  # 5,000 m²
TILE = change.TileChanges(detected={"2024": [A, B, C]}, reference={"2023": [A], "2024": [B]})


def test_a_late_detection_is_late_not_false() -> None:
    det, now, completed = change.tile_tallies(TILE, SEASONS, "2024", tolerance=1)
    assert det.total_m2 == pytest.approx(35_000)
    assert (det.on_time_m2, det.late_m2, det.rest_m2) == pytest.approx((20_000, 10_000, 5_000))
    scores = change.detection_scores(det)
    assert scores["precision"] == pytest.approx(20 / 35)
    assert scores["precision_with_tolerance"] == pytest.approx(30 / 35)
    # This season's own reference changes: B found on time.
    assert change.reference_scores(now)["recall"] == pytest.approx(1.0)
    # 2023's reference change A: missed in 2023, found late in 2024, so complete with the tolerance.
    assert completed is not None
    done = change.reference_scores(completed)
    assert done["recall"] == 0.0 and done["recall_with_tolerance"] == pytest.approx(1.0)
    assert done["missed_km2"] == 0.0 and done["late_km2"] == pytest.approx(0.01)


def test_without_tolerance_the_late_detection_is_false() -> None:
    det, _, completed = change.tile_tallies(TILE, SEASONS, "2024", tolerance=0)
    assert det.late_m2 == 0.0 and det.rest_m2 == pytest.approx(15_000)
    assert completed is None
    assert change.detection_scores(det)["precision_with_tolerance"] == pytest.approx(20 / 35)


def test_a_detection_two_seasons_late_is_late_only_with_tolerance_two() -> None:
    tile = change.TileChanges(detected={"2024": [A]}, reference={"2022": [A]})
    one, _, _ = change.tile_tallies(tile, SEASONS, "2024", tolerance=1)
    two, _, completed = change.tile_tallies(tile, SEASONS, "2024", tolerance=2)
    assert one.rest_m2 == pytest.approx(10_000) and two.late_m2 == pytest.approx(10_000)
    assert completed is not None and change.reference_scores(completed)["recall_with_tolerance"] == pytest.approx(1.0)


def test_on_time_wins_over_late_and_overlaps_count_once() -> None:
    # The same place changed in 2023 and again in 2024; detected in 2024 (twice, overlapping): on time.
    tile = change.TileChanges(detected={"2024": [A, box(50, 0, 100, 100)]}, reference={"2023": [A], "2024": [A]})
    det, _, _ = change.tile_tallies(tile, SEASONS, "2024", tolerance=1)
    assert det.total_m2 == pytest.approx(10_000)
    assert (det.on_time_m2, det.late_m2, det.rest_m2) == pytest.approx((10_000, 0, 0))


def test_tallies_sum_over_tiles_before_the_ratios() -> None:
    a, _, _ = change.tile_tallies(TILE, SEASONS, "2024", tolerance=1)
    empty = change.TileChanges(detected={"2024": [box(0, 0, 10, 10)]}, reference={})
    b, _, _ = change.tile_tallies(empty, SEASONS, "2024", tolerance=1)
    total = a + b
    assert total.total_m2 == pytest.approx(35_100) and total.rest_m2 == pytest.approx(5_100)


def test_edge_cases_and_summary() -> None:
    nothing = change.TileChanges(detected={}, reference={})
    det, now, completed = change.tile_tallies(nothing, SEASONS, "2022", tolerance=1)
    assert completed is None  # no season before the first
    assert change.detection_scores(det)["precision"] is None
    assert change.reference_scores(now)["recall"] is None
    det, now, completed = change.tile_tallies(TILE, SEASONS, "2024", tolerance=1)
    block = change.summarise(SEASONS, "2024", 1, det, now, completed)
    assert block["completed_reference"]["season"] == "2023"
    assert block["reference"]["pending"] is True and block["detections"]["false_km2"] == pytest.approx(0.005)
