"""Unit tests of lcms_tasks.features.indices (spectral indices on reflectance stacks)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lcms_tasks.bands import S2_BANDS
from lcms_tasks.features import indices
from lcms_tasks.features.indices import FEATURE_NAMES, compute_indices, normalized_difference

# Non-negative float32 reflectances over the whole finite range, with NaN mixed in.
_non_negative_or_nan = st.one_of(
    st.floats(min_value=0.0, max_value=float(np.finfo(np.float32).max), width=32),
    st.just(float("nan")),
)


def _pixel(**bands: float) -> np.ndarray:
    """One pixel of the 13 bands, 0.1 everywhere except the bands given."""
    values = np.full(len(S2_BANDS), 0.1, dtype=np.float32)
    for name, value in bands.items():
        values[S2_BANDS.index(name)] = value
    return values


def _reference(reflectance: np.ndarray) -> np.ndarray:
    """Straightforward float64 implementation to compare against (band names from S2_BANDS)."""
    x = reflectance.astype(np.float64)
    b = {name: x[..., i] for i, name in enumerate(S2_BANDS)}
    with np.errstate(divide="ignore", invalid="ignore"):
        nd = [(b["B08"] - b["B04"]) / (b["B08"] + b["B04"]),
              (b["B03"] - b["B08"]) / (b["B03"] + b["B08"]),
              (b["B11"] - b["B08"]) / (b["B11"] + b["B08"])]  # fmt: skip
    coefficients = indices._TC_COEFFICIENTS.astype(np.float64)
    tc = [sum(c * b[name] for c, name in zip(row, indices._TC_BANDS, strict=True)) for row in coefficients]
    return np.stack(nd + tc, axis=-1)


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 40), elements=_non_negative_or_nan),
       st.data())  # fmt: skip
def test_normalized_difference_range_and_nan(a: np.ndarray, data: st.DataObject) -> None:
    b = data.draw(hnp.arrays(np.float32, a.shape, elements=_non_negative_or_nan))
    result = normalized_difference(a, b)
    assert result.dtype == np.float32
    assert result.shape == a.shape
    defined = ~np.isnan(result)
    assert np.all(result[defined] >= -1.0)
    assert np.all(result[defined] <= 1.0)
    with np.errstate(over="ignore"):
        expected_nan = np.isnan(a) | np.isnan(b) | ((a + b) == 0)
    np.testing.assert_array_equal(np.isnan(result), expected_nan)


def test_normalized_difference_values() -> None:
    result = normalized_difference(np.array([3.0, 1.0, 0.0, 2.0]), np.array([1.0, 3.0, 0.0, 0.0]))
    np.testing.assert_allclose(result[[0, 1, 3]], [0.5, -0.5, 1.0])
    assert np.isnan(result[2])
    # Zero denominator from opposite signs is NaN too, not +-inf.
    assert np.isnan(normalized_difference(np.array([1.0]), np.array([-1.0]))[0])


def test_known_surfaces() -> None:
    vegetation = _pixel(B02=0.03, B03=0.06, B04=0.04, B05=0.1, B06=0.3, B07=0.4, B08=0.45, B8A=0.46,
                        B11=0.2, B12=0.1)  # fmt: skip
    water = _pixel(B01=0.09, B02=0.08, B03=0.07, B04=0.05, B05=0.04, B06=0.03, B07=0.02, B08=0.02,
                   B8A=0.02, B09=0.01, B10=0.001, B11=0.01, B12=0.005)  # fmt: skip
    bare_soil = _pixel(B02=0.12, B03=0.16, B04=0.22, B05=0.25, B06=0.27, B07=0.28, B08=0.3, B8A=0.31,
                       B11=0.4, B12=0.35)  # fmt: skip
    features = compute_indices(np.stack([vegetation, water, bare_soil]), S2_BANDS)
    assert features.shape == (3, 6) and features.dtype == np.float32
    f = {name: features[:, i] for i, name in enumerate(FEATURE_NAMES)}
    np.testing.assert_allclose(f["NDVI"][0], (0.45 - 0.04) / (0.45 + 0.04), rtol=1e-6)
    assert f["NDVI"][0] > 0.7
    assert f["NDWI"][1] > 0.0 > f["NDVI"][1]
    assert f["NDWI"][0] < 0.0
    assert f["NDBI"][2] > 0.0 > f["NDBI"][0]
    assert f["TC_GREENNESS"][0] > f["TC_GREENNESS"][2]
    assert f["TC_BRIGHTNESS"][2] > f["TC_BRIGHTNESS"][1]
    assert f["TC_WETNESS"][1] > f["TC_WETNESS"][2]
    np.testing.assert_allclose(features, _reference(np.stack([vegetation, water, bare_soil])), rtol=1e-5,
                               atol=1e-6)  # fmt: skip


def test_matches_reference_across_blocks_and_layouts() -> None:
    rng = np.random.default_rng(1)
    # More pixels than one processing block, an odd shape, NaN and zeros sprinkled in.
    x = rng.random((3, 97, 101, 13), dtype=np.float32) * 0.6
    x[0, 0, 0, S2_BANDS.index("B04")] = np.nan
    x[1, 2, 3, [S2_BANDS.index("B04"), S2_BANDS.index("B08")]] = 0.0
    expected = _reference(x)
    result = compute_indices(x, S2_BANDS)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
    assert np.isnan(result[0, 0, 0, 0]) and np.isnan(result[0, 0, 0, 3:]).all()
    assert not np.isnan(result[0, 0, 0, 1:3]).any()  # NDWI/NDBI do not use B04
    assert np.isnan(result[1, 2, 3, 0])

    # Non-contiguous input (13 of 14 bands), float64 input, permuted band order, out= into a view.
    wide = np.concatenate([x, np.zeros_like(x[..., :1])], axis=-1)
    np.testing.assert_array_equal(compute_indices(wide[..., :13], S2_BANDS), result)
    np.testing.assert_allclose(compute_indices(x.astype(np.float64), S2_BANDS), result, rtol=1e-6, atol=1e-7)
    perm = rng.permutation(13)
    np.testing.assert_allclose(compute_indices(x[..., perm], [S2_BANDS[i] for i in perm]), result,
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    target = np.full((3, 97, 101, 8), -5.0, dtype=np.float32)
    returned = compute_indices(x, S2_BANDS, out=target[..., 1:7])
    np.testing.assert_array_equal(target[..., 1:7], result)
    assert np.all(target[..., [0, 7]] == -5.0)
    assert returned.base is target or returned is target[..., 1:7] or np.shares_memory(returned, target)
    # A transposed (non-flattenable) stack takes the per-row path and must agree as well.
    transposed = np.ascontiguousarray(x.transpose(2, 1, 0, 3)).transpose(2, 1, 0, 3)
    np.testing.assert_array_equal(compute_indices(transposed, S2_BANDS), result)


def test_single_pixel_and_empty() -> None:
    pixel = _pixel(B04=0.1, B08=0.3)
    assert compute_indices(pixel, S2_BANDS).shape == (6,)
    assert compute_indices(np.zeros((0, 5, 13), np.float32), S2_BANDS).shape == (0, 5, 6)


@pytest.mark.parametrize("missing", ["B11", "B04", "B12"])
def test_missing_band_is_named(missing: str) -> None:
    names = [b for b in S2_BANDS if b != missing]
    with pytest.raises(ValueError, match=missing):
        compute_indices(np.zeros((2, len(names)), np.float32), names)


def test_shape_mismatches_raise() -> None:
    with pytest.raises(ValueError, match="band_names"):
        compute_indices(np.zeros((2, 12), np.float32), S2_BANDS)
    with pytest.raises(ValueError, match="out"):
        compute_indices(np.zeros((2, 13), np.float32), S2_BANDS, out=np.zeros((2, 5), np.float32))


def test_tasselled_cap_without_b10_for_l2a() -> None:
    """L2A has no B10: leaving it out changes the tasselled cap by less than 1e-4 (cirrus reflectance <= 0.05)."""
    from lcms_tasks.bands import S2_BANDS
    from lcms_tasks.features.indices import compute_indices

    rng = np.random.default_rng(3)
    refl = rng.uniform(0.0, 0.6, size=(50, len(S2_BANDS))).astype(np.float32)
    refl[:, S2_BANDS.index("B10")] = rng.uniform(0.0, 0.05, size=50)
    with_b10 = compute_indices(refl, S2_BANDS)
    l2a_bands = [b for b in S2_BANDS if b != "B10"]
    without = compute_indices(np.delete(refl, S2_BANDS.index("B10"), axis=1), l2a_bands)
    np.testing.assert_array_equal(with_b10[:, :3], without[:, :3])
    assert np.abs(with_b10[:, 3:] - without[:, 3:]).max() < 1e-4
    assert np.abs(with_b10[:, 3:] - without[:, 3:]).max() > 0  # B10 does contribute when present


@given(seed=st.integers(0, 2**32 - 1), quantification=st.sampled_from([10000.0, 4095.0, 1.0, 0.5]))
@settings(max_examples=30, deadline=None)
def test_digital_numbers_with_quantification_match_reflectance(seed: int, quantification: float) -> None:
    """Indices of DN with their quantification equal the indices of DN / quantification (DN 0 -> NaN NDs)."""
    rng = np.random.default_rng(seed)
    dn = rng.integers(0, 20001, size=(3, 7, len(S2_BANDS)), dtype=np.uint16)
    dn[0, 0] = 0  # no data: every band 0
    reflectance = (dn / quantification).astype(np.float32)
    expected = compute_indices(reflectance, S2_BANDS)
    result = compute_indices(dn, S2_BANDS, quantification=quantification)
    np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
    assert np.isnan(result[0, 0, :3]).all() and (result[0, 0, 3:] == 0).all()
    # Float32 rounding only: relative to the magnitude of the tasselled-cap sums.
    np.testing.assert_allclose(result, expected, rtol=2e-6, atol=1e-6 * max(1.0, 20000 / quantification))


def test_quantification_must_be_positive() -> None:
    with pytest.raises(ValueError, match="quantification"):
        compute_indices(np.zeros((2, 13), np.uint16), S2_BANDS, quantification=0.0)
    with pytest.raises(ValueError, match="quantification"):
        compute_indices(np.zeros((2, 13), np.uint16), S2_BANDS, quantification=float("nan"))
