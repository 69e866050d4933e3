"""The indices added for real data: red-edge and SWIR indices, bands as features, the tasselled cap from the bands
a source has (no B01/B09/B10, no B8A), and the features stage's ``features`` option."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lcms_tasks.bands import S2_BANDS
from lcms_tasks.features import indices
from lcms_tasks.features.indices import (
    FEATURE_NAMES,
    computable_features,
    compute_indices,
    required_bands,
    tasselled_cap_bands,
)
from lcms_tasks.stages import features as stage

#: The bands of the WorldCereal L2A extraction: no B01, B09, B10 and (empty) B8A.
EXTRACT_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]


def _pixels() -> tuple[np.ndarray, list[dict[str, float]]]:
    """Three pixels of the 9 extraction bands given by hand (reflectance)."""
    by_hand = [
        # green crop
        {"B02": 0.03, "B03": 0.06, "B04": 0.04, "B05": 0.10, "B06": 0.30, "B07": 0.40, "B08": 0.45, "B11": 0.20,
         "B12": 0.10},
        # bare soil
        {"B02": 0.12, "B03": 0.16, "B04": 0.22, "B05": 0.25, "B06": 0.27, "B07": 0.28, "B08": 0.30, "B11": 0.40,
         "B12": 0.35},
        # water
        {"B02": 0.08, "B03": 0.07, "B04": 0.05, "B05": 0.04, "B06": 0.03, "B07": 0.02, "B08": 0.02, "B11": 0.01,
         "B12": 0.005},
    ]  # fmt: skip
    return np.array([[p[b] for b in EXTRACT_BANDS] for p in by_hand], dtype=np.float32), by_hand


def test_red_edge_and_swir_indices_by_hand() -> None:
    x, px = _pixels()
    names = ["NDRE", "NDVI705", "NDMI", "NBR", "NDTI"]
    got = compute_indices(x, EXTRACT_BANDS, features=names)
    assert got.shape == (3, 5) and got.dtype == np.float32
    water = px[2]
    # green crop: NDRE = (0.45 - 0.10) / (0.45 + 0.10) = 0.63636...
    np.testing.assert_allclose(got[0], [0.35 / 0.55, 0.20 / 0.40, 0.25 / 0.65, 0.35 / 0.55, 0.10 / 0.30], rtol=1e-6)
    # bare soil: NDMI = (0.30 - 0.40) / 0.70 < 0, NDTI = (0.40 - 0.35) / 0.75
    np.testing.assert_allclose(got[1], [0.05 / 0.55, 0.02 / 0.52, -0.10 / 0.70, -0.05 / 0.65, 0.05 / 0.75], rtol=1e-6)
    np.testing.assert_allclose(got[2, 0], (water["B08"] - water["B05"]) / (water["B08"] + water["B05"]), rtol=1e-6)
    assert got[0, 0] > got[1, 0] and got[0, 3] > got[1, 3]  # the crop is greener (NDRE) and wetter (NBR) than soil
    # NDMI is NDBI with the sign flipped (documented: it adds nothing beside NDBI).
    np.testing.assert_allclose(got[:, 2], -compute_indices(x, EXTRACT_BANDS, features=["NDBI"])[:, 0], rtol=1e-6)


def test_bands_as_features_are_reflectance_from_digital_numbers() -> None:
    x, _ = _pixels()
    dn = np.round(x * 10000).astype(np.uint16)
    got = compute_indices(dn, EXTRACT_BANDS, quantification=10000.0, features=["B05", "NDVI", "B12"])
    np.testing.assert_allclose(got[:, 0], dn[:, EXTRACT_BANDS.index("B05")] / 10000.0, rtol=1e-6)
    np.testing.assert_allclose(got[:, 2], dn[:, EXTRACT_BANDS.index("B12")] / 10000.0, rtol=1e-6)
    np.testing.assert_allclose(got[:, 1], compute_indices(x, EXTRACT_BANDS, features=["NDVI"])[:, 0], rtol=1e-5)


def test_tasselled_cap_without_b01_b09_b10_and_with_b08_for_b8a_by_hand() -> None:
    x, px = _pixels()
    got = compute_indices(x, EXTRACT_BANDS, features=["TC_BRIGHTNESS", "TC_GREENNESS", "TC_WETNESS"])
    table = {row[0]: row[1:] for row in indices._TC_TABLE}
    for i, p in enumerate(px):
        # B8A's coefficients applied to B08; B01, B09, B10 left out.
        expected = [sum(table[b][c] * p[b] for b in EXTRACT_BANDS) + table["B8A"][c] * p["B08"] for c in range(3)]
        np.testing.assert_allclose(got[i], expected, rtol=1e-5, atol=1e-7)
    assert tasselled_cap_bands(EXTRACT_BANDS)["B8A"] == "B08"
    assert "B01" not in tasselled_cap_bands(EXTRACT_BANDS)
    # With B8A present, it stands for itself.
    assert tasselled_cap_bands([*EXTRACT_BANDS, "B8A"])["B8A"] == "B8A"


def test_tasselled_cap_from_13_bands_is_unchanged_and_any_order_works() -> None:
    rng = np.random.default_rng(7)
    refl = rng.uniform(0.0, 0.6, size=(40, 13)).astype(np.float32)
    full = compute_indices(refl, S2_BANDS)
    expected = refl.astype(np.float64) @ indices._TC_COEFFICIENTS.T.astype(np.float64)
    np.testing.assert_allclose(full[:, 3:], expected, rtol=1e-5, atol=1e-6)
    perm = rng.permutation(13)
    np.testing.assert_allclose(
        compute_indices(refl[:, perm], [S2_BANDS[i] for i in perm], features=["TC_WETNESS", "NDVI"]),
        full[:, [5, 0]],
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("missing", ["B02", "B05", "B11", "B12"])
def test_tasselled_cap_still_needs_its_core_bands(missing: str) -> None:
    names = [b for b in EXTRACT_BANDS if b != missing]
    with pytest.raises(ValueError, match=f"band '{missing}' is required for the tasselled cap"):
        compute_indices(np.zeros((2, len(names)), np.float32), names, features=["TC_GREENNESS"])


def test_requirements_and_computable_features() -> None:
    assert required_bands("NDRE") == ("B08", "B05")
    assert required_bands("B8A") == ("B8A",)
    assert "B01" not in required_bands("TC_BRIGHTNESS") and "B8A" not in required_bands("TC_BRIGHTNESS")
    kept, skipped = computable_features(["NDVI", "NDRE", "NBR", "TC_WETNESS"], ["B04", "B08", "B05"])
    assert kept == ["NDVI", "NDRE"]
    assert skipped == {"NBR": ["B12"], "TC_WETNESS": ["B02", "B03", "B06", "B07", "B11", "B12"]}
    with pytest.raises(ValueError, match="unknown feature"):
        required_bands("EVI")
    with pytest.raises(ValueError, match="unknown feature"):
        compute_indices(np.zeros((1, 13), np.float32), S2_BANDS, features=["NDVI", "EVI"])
    with pytest.raises(ValueError, match="more than once"):
        compute_indices(np.zeros((1, 13), np.float32), S2_BANDS, features=["NDVI", "NDVI"])


def test_missing_band_names_the_band_and_the_index() -> None:
    with pytest.raises(ValueError, match="band 'B05' is required for NDRE"):
        compute_indices(np.zeros((2, 3), np.float32), ["B04", "B08", "B11"], features=["NDVI", "NDRE"])


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float32, (9, 9), elements=st.floats(0.0, 1.0, width=32) | st.just(float("nan"))))
def test_new_normalized_differences_stay_in_range_or_nan(x: np.ndarray) -> None:
    got = compute_indices(x, EXTRACT_BANDS, features=["NDRE", "NDVI705", "NDMI", "NBR", "NDTI"])
    defined = ~np.isnan(got)
    assert np.all(np.abs(got[defined]) <= 1.0)


def test_feature_selection_in_blocks_matches_one_feature_at_a_time() -> None:
    """A many-feature request over several processing blocks equals each feature computed alone."""
    rng = np.random.default_rng(11)
    dn = rng.integers(1, 12000, size=(3, 130, 70, len(EXTRACT_BANDS)), dtype=np.uint16)
    names = ["B04", "TC_GREENNESS", "NDRE", "TC_BRIGHTNESS", "NBR", "B12", "NDVI"]
    together = compute_indices(dn, EXTRACT_BANDS, quantification=10000.0, features=names)
    for k, name in enumerate(names):
        alone = compute_indices(dn, EXTRACT_BANDS, quantification=10000.0, features=[name])[..., 0]
        np.testing.assert_array_equal(together[..., k], alone)


def test_features_stage_option_adds_features_and_checks_names() -> None:
    assert stage.Options().features == FEATURE_NAMES
    options = stage.Options(features=["NDVI", "NDRE", "B08"])  # type: ignore[arg-type]
    rng = np.random.default_rng(2)
    t, h, w = 6, 5, 4
    dn = rng.integers(100, 6000, size=(t, h, w, len(EXTRACT_BANDS)), dtype=np.uint16)
    valid = rng.random((t, h, w)) > 0.2
    dates = [dt.date(2023, 4, 1) + dt.timedelta(days=15 * i) for i in range(t)]
    feats, n_valid, grid, _ = stage.compute_features(
        dn, valid, dates, EXTRACT_BANDS, dt.date(2023, 4, 1), dt.date(2023, 6, 30), options, quantification=1e4
    )
    assert feats.shape == (len(grid), h, w, 3)
    # At an observation date the value is the observation's own (interpolation is exact there).
    k = grid.index(dates[2])
    ok = valid[2] & (n_valid > 0)
    np.testing.assert_allclose(feats[k, ..., 2][ok], (dn[2, ..., EXTRACT_BANDS.index("B08")] / 1e4)[ok], rtol=1e-5)
    with pytest.raises(ValueError, match="unknown feature"):
        stage.Options(features=["NDVI", "SAVI"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        stage.Options(features=[])  # type: ignore[arg-type]
