"""sampling: stratified, capped, seeded pixel sampling (pure function and invariants)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lcms_tasks.stages.sampling import class_quota, sample_pixels, tile_rng


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.choice(np.array([0, 1, 2, 3], np.uint8), size=(40, 50), p=[0.3, 0.5, 0.19, 0.01])
    samplable = (labels > 0) & (rng.random((40, 50)) > 0.2)
    return labels, samplable


def test_cap_per_class_and_all_of_a_rare_class() -> None:
    labels, samplable = _scene()
    rows, cols = sample_pixels(labels, samplable, 100, None, np.random.default_rng(1))
    y = labels[rows, cols]
    available = {c: int(((labels == c) & samplable).sum()) for c in (1, 2, 3)}
    assert available[3] < 100 < available[2]
    assert (y == 1).sum() == 100 and (y == 2).sum() == 100
    assert (y == 3).sum() == available[3]  # fewer than the cap: every one of them
    assert samplable[rows, cols].all() and (y > 0).all()
    flat = rows.astype(np.int64) * labels.shape[1] + cols
    assert np.unique(flat).size == flat.size and (np.diff(flat) > 0).all()  # no duplicates, row-major order
    assert rows.dtype == np.int32 and cols.dtype == np.int32


def test_fraction_mode_with_a_floor_and_per_class_caps() -> None:
    labels, samplable = _scene()
    available = {c: int(((labels == c) & samplable).sum()) for c in (1, 2, 3)}
    rows, cols = sample_pixels(labels, samplable, 10_000, 0.1, np.random.default_rng(1), min_per_class=30)
    y = labels[rows, cols]
    assert (y == 1).sum() == max(int(np.ceil(0.1 * available[1])), 30)
    assert (y == 3).sum() == available[3]  # below the floor: all
    rows, cols = sample_pixels(labels, samplable, {1: 5, 2: 7}, None, np.random.default_rng(1))
    counts = np.bincount(labels[rows, cols], minlength=4)
    assert counts.tolist() == [0, 5, 7, 0]  # class 3 is absent from the mapping: not sampled


def test_quota() -> None:
    assert class_quota(50, 100, None, 0) == 50
    assert class_quota(500, 100, None, 0) == 100
    assert class_quota(1000, 5000, 0.05, 10) == 50
    assert class_quota(1000, 5000, 0.001, 10) == 10
    assert class_quota(1000, 20, 0.5, 10) == 20


def test_seeded_and_tile_dependent() -> None:
    labels, samplable = _scene()
    a = sample_pixels(labels, samplable, 50, None, tile_rng(42, "32638_498_3440"))
    b = sample_pixels(labels, samplable, 50, None, tile_rng(42, "32638_498_3440"))
    c = sample_pixels(labels, samplable, 50, None, tile_rng(42, "32638_499_3440"))
    d = sample_pixels(labels, samplable, 50, None, tile_rng(43, "32638_498_3440"))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])


def test_empty_and_shape_errors() -> None:
    labels = np.zeros((5, 5), np.uint8)
    rows, cols = sample_pixels(labels, np.ones((5, 5), bool), 10, None, np.random.default_rng(0))
    assert rows.size == 0 and cols.size == 0
    labels[2, 2] = 4  # labelled but not samplable (eroded)
    rows, _ = sample_pixels(labels, np.zeros((5, 5), bool), 10, None, np.random.default_rng(0))
    assert rows.size == 0
    with pytest.raises(ValueError, match="same"):
        sample_pixels(labels, np.ones((4, 5), bool), 10, None, np.random.default_rng(0))


@settings(max_examples=60, deadline=None)
@given(
    labels=hnp.arrays(np.uint8, st.tuples(st.integers(1, 30), st.integers(1, 30)), elements=st.integers(0, 5)),
    data=st.data(),
    cap=st.integers(1, 40),
    fraction=st.one_of(st.none(), st.floats(0.01, 1.0)),
    seed=st.integers(0, 2**32),
)
def test_samples_only_labelled_samplable_pixels_without_duplicates(
    labels: np.ndarray, data: st.DataObject, cap: int, fraction: float | None, seed: int
) -> None:
    samplable = data.draw(hnp.arrays(bool, labels.shape))
    rows, cols = sample_pixels(labels, samplable, cap, fraction, np.random.default_rng(seed), min_per_class=3)
    assert samplable[rows, cols].all()
    assert (labels[rows, cols] > 0).all()
    flat = rows.astype(np.int64) * labels.shape[1] + cols
    assert np.unique(flat).size == flat.size
    y = labels[rows, cols]
    for c in range(1, 6):
        available = int(((labels == c) & samplable).sum())
        taken = int((y == c).sum())
        assert taken <= cap
        if fraction is None:
            assert taken == min(available, cap)  # a class below the cap is taken whole
        else:
            assert taken >= min(available, cap, 3)
