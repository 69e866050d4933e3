"""Raster parcel markers as pure functions (lcms_tasks.parcels.markers): inner buffer, aggregation, flags."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lcms_tasks.parcels.markers import aggregate, disagreements, inner_buffer, too_small


def _two_fields() -> np.ndarray:
    """A 6 x 9 image: parcel 1 (6 x 4) on the left, parcel 2 (4 x 4) on the right, background column between."""
    ids = np.zeros((6, 9), dtype=np.int64)
    ids[:, 0:4] = 1
    ids[1:5, 5:9] = 2
    return ids


def test_inner_buffer_by_hand() -> None:
    ids = _two_fields()
    one = inner_buffer(ids, 1)
    # Parcel 1 loses its column next to the background, not the image border (repeated at the edge).
    assert (one[:, 0:3] == 1).all() and (one[:, 3] == 0).all()
    # Parcel 2 touches background on three sides (top, bottom, left): 2 x 3 interior pixels left.
    assert (one == 2).sum() == 2 * 3 and (one[2:4, 6:9] == 2).all()
    assert (inner_buffer(ids, 0) == ids).all()
    two = inner_buffer(ids, 2)
    assert (two == 1).sum() == 6 * 2 and (two == 2).sum() == 0


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.int64, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 3)),
       st.integers(0, 3))  # fmt: skip
def test_inner_buffer_only_removes_pixels_and_shrinks_with_the_width(ids: np.ndarray, pixels: int) -> None:
    kept = inner_buffer(ids, pixels)
    assert ((kept == ids) | (kept == 0)).all()
    assert ((inner_buffer(ids, pixels + 1) != 0) <= (kept != 0)).all()


def test_aggregate_mean_std_and_count_by_hand() -> None:
    ids = np.array([[1, 1, 0], [2, 2, 2]])
    feats = np.zeros((2, 2, 3, 2), dtype=np.float32)
    feats[0, ..., 0] = [[0.2, 0.4, 9.0], [1.0, 2.0, 3.0]]
    feats[1, ..., 0] = [[np.nan, 0.6, 9.0], [1.0, 1.0, 1.0]]
    feats[..., 1] = 5.0
    out_ids, mean, std, count = aggregate(feats, ids)
    assert out_ids.tolist() == [1, 2] and count.tolist() == [2, 3]
    np.testing.assert_allclose(mean[:, 0, 0], [0.3, 2.0], rtol=1e-6)
    np.testing.assert_allclose(std[:, 0, 0], [0.1, np.sqrt(2 / 3)], rtol=1e-5)
    # A NaN pixel is left out of that date only; the background value 9 never enters.
    assert mean[0, 1, 0] == pytest.approx(0.6) and std[0, 1, 0] == 0.0
    assert (mean[..., 1] == 5.0).all() and (std[..., 1] == 0.0).all()
    # Pixels outside `clean` are not counted at all.
    clean = np.array([[True, False, True], [True, True, True]])
    _, mean_c, _, count_c = aggregate(feats, ids, clean)
    assert count_c.tolist() == [1, 3] and mean_c[0, 0, 0] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="must be"):
        aggregate(feats[:, :1], ids)


def test_too_small_and_disagreements() -> None:
    assert too_small(np.array([0, 3, 4, 10]), 4).tolist() == [True, True, False, False]
    declared = np.array(["wheat", "maize", "wheat", "vine", None, "wheat"], dtype=object)
    predicted = np.array(["maize", "maize", "vine", "vine", "wheat", None], dtype=object)
    probability = np.array([0.95, 0.99, 0.85, 0.7, 0.99, np.nan])
    flag, order = disagreements(declared, predicted, probability, threshold=0.8)
    assert flag.tolist() == [True, False, True, False, False, False]
    assert order.tolist() == [0, 2]
    with pytest.raises(ValueError, match="threshold"):
        disagreements(declared, predicted, probability, threshold=1.5)
