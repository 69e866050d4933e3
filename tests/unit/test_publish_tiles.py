"""The CHANGE band's code table and the rasterisation of change polygons; reading published markers."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from lcms_tasks.changes import detect_changes, empty_changes, vectorise_changes
from lcms_tasks.errors import CorruptArtefactError, StageError
from lcms_tasks.publish.tiles import (
    MAX_TRANSITION_CODES,
    TransitionCode,
    rasterise_changes,
    tile_from_marker,
    transition_code_table,
)

NAMES = {1: "cropland", 2: "forest", 3: "grassland", 4: "water"}
TRANSFORM = Affine(10.0, 0.0, 1000.0, 0.0, -10.0, 2000.0)


def test_code_table_is_sorted_numbered_and_independent_of_input_order() -> None:
    pairs = [(2, 1), (1, 4), (3, 1), (2, 4)]
    table = transition_code_table(pairs, NAMES)
    assert [(c.code, c.from_id, c.to_id) for c in table] == [(1, 1, 4), (2, 2, 1), (3, 2, 4), (4, 3, 1)]
    assert table == transition_code_table(reversed(pairs), NAMES) == transition_code_table(set(pairs), NAMES)
    assert table[1].label == "forest -> cropland"
    assert [TransitionCode.from_dict(c.to_dict()) for c in table] == table


def test_code_table_fits_uint8() -> None:
    many = [(a, b) for a in range(1, 20) for b in range(1, 20) if a != b]  # 342 pairs
    with pytest.raises(ValueError, match="do not fit the uint8 CHANGE band"):
        transition_code_table(many, {})
    assert len(transition_code_table(many[:MAX_TRANSITION_CODES], {})) == MAX_TRANSITION_CODES


def test_polygons_are_burnt_in_as_their_codes() -> None:
    table = transition_code_table([(2, 1), (1, 4)], NAMES)
    frame = gpd.GeoDataFrame(
        {"from_class": [2, 1], "to_class": [1, 4]},
        geometry=[box(1000, 1900, 1050, 2000), box(1100, 1800, 1200, 1850)],  # 5x10 px and 10x5 px
        crs="EPSG:32638",
    )
    out = rasterise_changes(frame, table, (20, 30), TRANSFORM)
    assert out.dtype == np.uint8 and out.shape == (20, 30)
    assert (out[0:10, 0:5] == 2).all() and (out[15:20, 10:20] == 1).all()
    assert int((out > 0).sum()) == 100
    assert not rasterise_changes(empty_changes("EPSG:32638"), table, (20, 30), TRANSFORM).any()


def test_a_transition_without_code_is_named() -> None:
    frame = gpd.GeoDataFrame({"from_class": [3], "to_class": [2]}, geometry=[box(1000, 1900, 1050, 2000)], crs=3857)
    with pytest.raises(StageError, match=r"tile T: transition\(s\) \[\(3, 2\)\]"):
        rasterise_changes(frame, transition_code_table([(2, 1)], NAMES), (20, 30), TRANSFORM, where="tile T")


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_rasterised_polygons_give_back_the_detected_pixels(seed: int) -> None:
    """Detect -> vectorise (the change stage's functions) -> rasterise is the identity on change pixels."""
    rng = np.random.default_rng(seed)
    before = rng.integers(0, 5, size=(24, 24)).astype(np.uint8)
    after = before.copy()
    for _ in range(4):
        r, c, h, w = rng.integers(0, 20), rng.integers(0, 20), rng.integers(1, 6), rng.integers(1, 6)
        after[r : r + h, c : c + w] = rng.integers(0, 5)
    conf = np.ones(before.shape, np.float32)
    pairs = {(a, b) for a in range(1, 5) for b in range(1, 5) if a != b}
    labels, regions = detect_changes(before, after, conf, conf, pairs, 1, 0.0)
    frame = vectorise_changes(
        labels, regions, TRANSFORM, "EPSG:32638", class_names=NAMES, tile_id="t", season_before="a", season_after="b"
    )
    table = transition_code_table(pairs, NAMES)
    out = rasterise_changes(frame, table, (24, 24), TRANSFORM)
    codes = {(c.from_id, c.to_id): c.code for c in table}
    expected = np.zeros(before.shape, np.uint8)
    for k, region in enumerate(regions, start=1):
        expected[labels == k] = codes[(region["from"], region["to"])]
    np.testing.assert_array_equal(out, expected)


def test_a_marker_that_describes_no_tile_is_corrupt() -> None:
    with pytest.raises(CorruptArtefactError, match="uri-x: the publish marker does not describe a published tile"):
        tile_from_marker("uri-x", {"tile": "t", "season": "2024", "epsg": 32638, "bounds": [0, 0, 1]})
