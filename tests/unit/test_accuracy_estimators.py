"""The area and accuracy estimators against worked examples from the literature, edge cases and invariants.

Sources of the expected numbers (each worked by hand in the test's comments):

* Olofsson et al. (2014), RSE 148, section 5 (the forest change example): the sample counts of
  their table 8 and the mapped areas in 30 m pixels (Deforestation 200,000; Forest gain 150,000;
  Stable forest 3,200,000; Stable non-forest 6,450,000; 1 pixel = 0.09 ha). Published: OA 0.947
  (0.95 ± 0.02), area of deforestation 21,158 ha, user's accuracies 0.88 / 0.73 / 0.93 / 0.96.
  The same counts and areas are the worked example of the R package mapaccuracy (H. Costa), whose
  documented values agree with the arithmetic below.
* Olofsson et al. (2013), RSE 129, example 1: three classes, counts (97 0 3 / 3 279 18 / 2 1 97),
  mapped areas 22,353 / 1,122,543 / 610,228 pixels. Published: p̂_1 = 0.0257, Â_1 = 45,112 pixels,
  SE 10,752 pixels, U_1 = 0.97, P_1 = 0.48, O = 0.944 (eq. 9-16).
* Stehman (2014), IJRS 35, section 3: 40 sample pixels in 4 strata of 40,000 / 30,000 / 20,000 /
  10,000 pixels, 10 per stratum, classes A-D (the strata are named after map classes but the
  sample units' map classes differ from their strata); the units as transcribed in the R package
  mapaccuracy's example of ``stehman2014``, which points to the paper's pages 4932-4936 for
  p̂_A = 0.35, p̂_C = 0.20, O = 0.63, U_B = 0.574, P_B = 0.794 and p̂_BC = 0.08. The standard errors
  (with the finite population correction, as in the paper) are derived here by hand:
  SE(p̂_A) = 0.0822, SE(p̂_C) = 0.0643, SE(O) = 0.0846, SE(U_B) = 0.1248, SE(P_B) = 0.1165; the
  values that package computes are the same to the 6th decimal.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lcms_tasks.accuracy import AccuracyInputError, olofsson_estimates, stehman_estimates
from lcms_tasks.accuracy.estimate import Z95

# -- Olofsson et al. 2014, section 5 -------------------------------------------------------------------

OLOFSSON_2014_CLASSES = ["Deforestation", "Forest gain", "Stable forest", "Stable non-forest"]
OLOFSSON_2014_COUNTS = np.array(
    [
        [66, 0, 5, 4],  # n_1. = 75
        [0, 55, 8, 12],  # n_2. = 75
        [1, 0, 153, 11],  # n_3. = 165
        [2, 1, 9, 313],  # n_4. = 325
    ]
)
OLOFSSON_2014_PIXELS = np.array([200_000, 150_000, 3_200_000, 6_450_000])
PIXEL_HA = 0.09  # a 30 m Landsat pixel


def test_olofsson_2014_forest_change_example() -> None:
    est = olofsson_estimates(OLOFSSON_2014_COUNTS, OLOFSSON_2014_PIXELS * PIXEL_HA, OLOFSSON_2014_CLASSES)
    # A_tot = 10,000,000 px = 900,000 ha; W = (0.020, 0.015, 0.320, 0.645).
    assert est.total_area == pytest.approx(900_000)
    assert est.map_proportion == pytest.approx([0.020, 0.015, 0.320, 0.645])

    # Area of deforestation (reference class 1): p_.1 = Σ_i W_i n_i1 / n_i.
    #   = 0.020·66/75 + 0.015·0/75 + 0.320·1/165 + 0.645·2/325
    #   = 0.0176 + 0 + 0.0019394 + 0.0039692 = 0.0235086  → 0.0235086 · 900,000 ha = 21,157.8 ha
    assert est.area_proportion[0] == pytest.approx(0.0235086, abs=1e-7)
    assert est.area[0] == pytest.approx(21_157.76, abs=0.01)
    assert round(est.area[0]) == 21_158  # published
    # SE(p_.1)² = Σ_i W_i² (n_i1/n_i.)(1 − n_i1/n_i.)/(n_i. − 1)
    #   = 0.0004·(0.88·0.12)/74 + 0 + 0.1024·(1/165·164/165)/164 + 0.416025·(2/325·323/325)/324
    #   = 5.7081e-7 + 3.7613e-6 + 7.8531e-6 = 1.21852e-5  → SE = 0.0034907, 3,141.6 ha
    #   95 % CI half-width = 1.96 · 3,141.6 = 6,157.6 ha.
    assert est.area_proportion_se[0] == pytest.approx(0.0034907, abs=1e-7)
    assert est.area_se[0] == pytest.approx(3_141.65, abs=0.1)
    assert est.area_ci95[0] == pytest.approx(6_157.6, abs=0.1)
    # (The brief quotes ± 6,161 ha for the paper; the arithmetic on table 8 gives 6,157.6, i.e. 6,158 —
    # the same as the R package mapaccuracy's worked example; the paper rounds intermediate values.)
    assert abs(est.area_ci95[0] - 6_161) < 5

    # The other classes, same formula: forest gain p_.2 = 0.015·55/75 + 0.645·1/325 = 0.011 + 0.0019846
    #   = 0.0129846 → 11,686 ha; stable forest p_.3 = 0.02·5/75 + 0.015·8/75 + 0.32·153/165 + 0.645·9/325
    #   = 0.0013333 + 0.0016 + 0.2967273 + 0.0178615 = 0.3175221 → 285,770 ha; stable non-forest
    #   p_.4 = 1 − the others = 0.6459847 → 581,386 ha.
    assert est.area == pytest.approx([21_157.76, 11_686.15, 285_769.93, 581_386.15], abs=0.01)
    assert est.area.sum() == pytest.approx(900_000)
    assert est.area_ci95 == pytest.approx([6_157.6, 3_755.8, 15_509.8, 16_281.7], abs=0.1)

    # Overall accuracy O = Σ_i W_i n_ii/n_i. = 0.0176 + 0.011 + 0.2967273 + 0.6211846 = 0.9465119 (published 0.947)
    #   V(O) = Σ W_i² U_i(1 − U_i)/(n_i. − 1) = 0.0004·0.88·0.12/74 + 0.000225·0.73333·0.26667/74
    #        + 0.1024·0.92727·0.07273/164 + 0.416025·0.96308·0.03692/324 = 8.893e-5 → SE 0.00943, CI ± 0.018
    assert est.overall_accuracy == pytest.approx(0.9465119, abs=1e-7)
    assert round(est.overall_accuracy, 3) == 0.947  # published
    assert est.overall_accuracy_se == pytest.approx(0.009430, abs=1e-6)
    assert round(Z95 * est.overall_accuracy_se, 3) == 0.018

    # User's accuracy U_i = n_ii / n_i.: 66/75 = 0.88, 55/75 = 0.7333, 153/165 = 0.9273, 313/325 = 0.9631
    #   SE(U_1) = sqrt(0.88·0.12/74) = 0.037776 → ± 0.074
    assert est.users_accuracy == pytest.approx([0.88, 0.733333, 0.927273, 0.963077], abs=1e-6)
    assert est.users_accuracy_se[0] == pytest.approx(math.sqrt(0.88 * 0.12 / 74))
    assert Z95 * est.users_accuracy_se == pytest.approx([0.0740, 0.1008, 0.0397, 0.0205], abs=1e-4)

    # Producer's accuracy P_j = p_jj / p_.j: P_1 = 0.0176 / 0.0235086 = 0.74866
    #   V(P_1) = [W_1²(1 − P_1)² U_1(1 − U_1)/(n_1. − 1)
    #             + P_1² Σ_{i≠1} W_i²(n_i1/n_i.)(1 − n_i1/n_i.)/(n_i. − 1)] / p_.1²
    #          = [0.0004·0.063169·0.0014270 + 0.560502·(3.7613e-6 + 7.8531e-6)] / 5.52654e-4
    #          = [3.6057e-8 + 6.5099e-6] / 5.52654e-4 = 0.011845 → SE 0.10883, CI ± 0.213
    assert est.producers_accuracy == pytest.approx([0.748661, 0.847156, 0.934509, 0.961609], abs=1e-6)
    assert est.producers_accuracy_se[0] == pytest.approx(0.10883, abs=1e-5)
    assert Z95 * est.producers_accuracy_se == pytest.approx([0.2133, 0.2544, 0.0343, 0.0184], abs=1e-4)
    assert est.notes == ()


def test_olofsson_2013_example_1() -> None:
    counts = np.array([[97, 0, 3], [3, 279, 18], [2, 1, 97]])
    pixels = np.array([22_353, 1_122_543, 610_228])
    est = olofsson_estimates(counts, pixels, ["1", "2", "3"])
    # A = 1,755,124 px; W = (0.012736, 0.639578, 0.347686)
    # p_.1 = 0.012736·0.97 + 0.639578·0.01 + 0.347686·0.02 = 0.012354 + 0.006396 + 0.006954 = 0.025703 (eq. 9)
    assert est.area_proportion[0] == pytest.approx(0.025703, abs=1e-6)
    assert est.area[0] == pytest.approx(45_112, abs=1)  # eq. 10: 0.025703 · 1,755,124
    # SE(p_.1)² = 0.012736²·0.97·0.03/99 + 0.639578²·0.01·0.99/299 + 0.347686²·0.02·0.98/99
    #           = 4.915e-8 + 1.3544e-5 + 2.3932e-5 = 3.7526e-5 → SE 0.0061259 → 10,752 px (eq. 12)
    assert est.area_se[0] == pytest.approx(10_752, abs=1)
    assert est.area_ci95[0] == pytest.approx(21_074, abs=2)  # ± 1.96 SE
    assert est.users_accuracy[0] == pytest.approx(0.97)  # eq. 14: 97/100
    assert est.producers_accuracy[0] == pytest.approx(0.4806, abs=1e-4)  # eq. 15: 0.012354/0.025703
    # eq. 16: O = 0.012736·0.97 + 0.639578·0.93 + 0.347686·0.97 = 0.944417
    assert est.overall_accuracy == pytest.approx(0.944417, abs=1e-6)


# -- Stehman 2014, section 3 ----------------------------------------------------------------------------

# Stratum, map class and reference class of the 40 sample pixels (Stehman 2014, table 2).
#                        stratum A     stratum B     stratum C     stratum D
STEHMAN_STRATA = list("".join(["AAAAAAAAAA", "BBBBBBBBBB", "CCCCCCCCCC", "DDDDDDDDDD"]))
STEHMAN_MAP = list("".join(["AAAAAAABBB", "ABBBBBBBBB", "BBCCCCCCBB", "DDDDDDDDDD"]))
STEHMAN_REF = list("".join(["AAAAACBABC", "ABBBBBAABB", "CCCCCDDBBA", "DDDDDDDCCB"]))
STEHMAN_SIZES = {"A": 40_000, "B": 30_000, "C": 20_000, "D": 10_000}


def test_stehman_2014_numerical_example() -> None:
    est = stehman_estimates(
        STEHMAN_STRATA, STEHMAN_MAP, STEHMAN_REF, STEHMAN_SIZES, classes="ABCD", finite_population_correction=True
    )
    a, b, c = 0, 1, 2
    # Area proportion of A: y_u = 1[r_u = A]; stratum means 6/10, 3/10, 1/10, 0
    #   p̂_A = (40,000·0.6 + 30,000·0.3 + 20,000·0.1 + 0) / 100,000 = 0.35
    assert est.area_proportion[a] == pytest.approx(0.35)
    # p̂_C: means 2/10, 0, 5/10, 2/10 → (8,000 + 0 + 10,000 + 2,000) / 100,000 = 0.20
    assert est.area_proportion[c] == pytest.approx(0.20)
    # O: y_u = 1[m_u = r_u]; means 6/10, 8/10, 4/10, 7/10 → (24,000 + 24,000 + 8,000 + 7,000)/100,000 = 0.63
    assert est.overall_accuracy == pytest.approx(0.63)
    # U_B = Ŷ/X̂, y = 1[m = B, r = B] (means .1 .7 .1 0), x = 1[m = B] (means .3 .9 .4 0)
    #   = (4,000 + 21,000 + 2,000) / (12,000 + 27,000 + 8,000) = 27,000 / 47,000 = 0.5745
    assert est.users_accuracy[b] == pytest.approx(27 / 47)
    assert round(est.users_accuracy[b], 3) == 0.574  # published
    # P_B: x = 1[r = B] (means .2 .7 .2 .1): 27,000 / (8,000 + 21,000 + 4,000 + 1,000) = 27/34 = 0.7941
    assert est.producers_accuracy[b] == pytest.approx(27 / 34)
    # p̂_BC: y = 1[m = B, r = C], means .1 0 .2 0 → (4,000 + 4,000)/100,000 = 0.08
    assert est.error_matrix[b, c] == pytest.approx(0.08)

    # V(p̂_A) = Σ_h (N_h/N)² (1 − n_h/N_h) s²_yh / n_h with s² = n/(n − 1) ȳ(1 − ȳ) for a 0/1 variable:
    #   s² = 0.26667, 0.23333, 0.1, 0 → 0.16·0.99975·0.026667 + 0.09·0.99967·0.023333 + 0.04·0.9995·0.01
    #   = 0.0042656 + 0.0020993 + 0.0003998 = 0.0067647 → SE 0.08225
    assert est.area_proportion_se[a] == pytest.approx(0.082248, abs=1e-6)
    # V(p̂_C): s² = 0.17778, 0, 0.27778, 0.17778 → 0.16·0.99975·0.017778 + 0.04·0.9995·0.027778 + 0.01·0.999·0.017778
    #   = 0.0028437 + 0.0011106 + 0.0001776 = 0.0041319 → SE 0.06428
    assert est.area_proportion_se[c] == pytest.approx(0.064280, abs=1e-6)
    # V(O): s² = 0.26667, 0.17778, 0.26667, 0.23333 → 0.16·0.99975·0.026667 + 0.09·0.99967·0.017778
    #   + 0.04·0.9995·0.026667 + 0.01·0.999·0.023333 = 0.0042656 + 0.0015995 + 0.0010661 + 0.0002331
    #   = 0.0071643 → SE 0.08464
    assert est.overall_accuracy_se == pytest.approx(0.084642, abs=1e-6)
    # V(U_B) = (1/X̂²) Σ_h N_h² (1 − n_h/N_h)(s²_yh + R² s²_xh − 2R s_xyh)/n_h with R = 27/47 = 0.574468
    # (R² = 0.330014, 2R = 1.148936) and X̂ = 47,000; y = 1[m = B, r = B], x = 1[m = B]:
    #   stratum A: y = 1 at unit 9, x = 1 at units 8-10: s²_y = 0.9/9 = 0.1, s²_x = 2.1/9 = 0.233333,
    #     s_xy = (0.9·0.7 − 2·0.1·0.7 + 7·0.1·0.3)/9 = 0.7/9 = 0.077778
    #     → 0.1 + 0.330014·0.233333 − 1.148936·0.077778 = 0.087641
    #   stratum B: y = 1 at 7 units, x = 1 at 9: s²_y = 0.233333, s²_x = 0.1, s_xy = 0.7/9 = 0.077778 → 0.176973
    #   stratum C: y = 1 at unit 29, x = 1 at 4 units: s²_y = 0.1, s²_x = 0.266667, s_xy = 0.6/9 = 0.066667
    #     → 0.111408;   stratum D: y = x = 0 → 0
    #   Σ = 1.6e9·0.99975·0.087641/10 + 9e8·0.999667·0.176973/10 + 4e8·0.9995·0.111408/10
    #     = 1.40191e7 + 1.59223e7 + 4.4541e6 = 3.43955e7;  V = 3.43955e7 / 47,000² = 0.015571 → SE 0.12478
    assert est.users_accuracy_se[b] == pytest.approx(0.124782, abs=1e-6)
    # V(P_B): R = 27/34 = 0.794118 (R² = 0.630623, 2R = 1.588235), X̂ = 34,000, x = 1[r = B]:
    #   stratum A: s²_y = 0.1, s²_x = 0.177778, s_xy = 0.8/9 → 0.1 + 0.112111 − 0.141176 = 0.070935
    #   stratum B: y = x (every unit with r = B is mapped B): 0.233333·(1 + R² − 2R) = 0.0098905
    #   stratum C: as A, 0.070935;  stratum D: y = 0, s²_x = 0.1 → R²·0.1 = 0.0630623
    #   Σ = 1.5996e8·0.070935 + 8.997e7·0.0098905 + 3.998e7·0.070935 + 9.99e6·0.0630623
    #     = 1.13468e7 + 8.8985e5 + 2.83598e6 + 6.29992e5 = 1.57026e7;  V = 1.57026e7 / 34,000² = 0.013584
    #   → SE 0.11655
    assert est.producers_accuracy_se[b] == pytest.approx(0.116548, abs=1e-6)


def test_stehman_2014_example_without_the_finite_population_correction_is_barely_different() -> None:
    with_fpc = stehman_estimates(
        STEHMAN_STRATA, STEHMAN_MAP, STEHMAN_REF, STEHMAN_SIZES, classes="ABCD", finite_population_correction=True
    )
    without = stehman_estimates(STEHMAN_STRATA, STEHMAN_MAP, STEHMAN_REF, STEHMAN_SIZES, classes="ABCD")
    assert without.area_proportion == pytest.approx(with_fpc.area_proportion)
    # 1 − n_h/N_h ≥ 0.999 here: the SEs grow by at most 1/sqrt(0.999) − 1 = 0.05 %.
    ratio = without.area_proportion_se / with_fpc.area_proportion_se
    assert np.all(ratio > 1.0) and np.all(ratio < 1.0005)
    # V(p̂_A) without: 0.16·0.026667 + 0.09·0.023333 + 0.04·0.01 = 0.0067667 → 0.082260
    assert without.area_proportion_se[0] == pytest.approx(0.0822598, abs=1e-7)


# -- Olofsson as a special case of Stehman --------------------------------------------------------------


def _units(counts: np.ndarray, classes: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(strata, map, reference) of one sample unit per count, the strata being the map classes."""
    strata: list[str] = []
    ref: list[str] = []
    for i, row in enumerate(np.asarray(counts)):
        for j, k in enumerate(row):
            strata += [classes[i]] * int(k)
            ref += [classes[j]] * int(k)
    return strata, list(strata), ref


FIELDS = (
    "error_matrix",
    "map_proportion",
    "area_proportion",
    "area_proportion_se",
    "users_accuracy",
    "users_accuracy_se",
    "producers_accuracy",
    "producers_accuracy_se",
    "n_map",
    "n_reference",
)


def _assert_same(a: object, b: object) -> None:
    # Equal up to floating-point rounding: Stehman's variances sum squared deviations, Olofsson's
    # multiply proportions. The rounding is on the variance (about 1e-16 of the largest term), so a tiny
    # SE (its square root) can differ in its 5th significant digit: SEs are compared as variances.
    for name in FIELDS:
        x, y = np.asarray(getattr(a, name), float), np.asarray(getattr(b, name), float)
        if name.endswith("_se"):
            x, y = x**2, y**2
        np.testing.assert_allclose(x, y, rtol=1e-7, atol=1e-13, err_msg=name)
    for name in ("overall_accuracy", "overall_accuracy_se", "total_area"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-9, abs=1e-12), name


def test_stehman_equals_olofsson_when_strata_are_the_map_classes() -> None:
    strata, mapped, ref = _units(OLOFSSON_2014_COUNTS, OLOFSSON_2014_CLASSES)
    areas = OLOFSSON_2014_PIXELS * PIXEL_HA
    olofsson = olofsson_estimates(OLOFSSON_2014_COUNTS, areas, OLOFSSON_2014_CLASSES)
    stehman = stehman_estimates(
        strata, mapped, ref, dict(zip(OLOFSSON_2014_CLASSES, areas, strict=True)), classes=OLOFSSON_2014_CLASSES
    )
    assert stehman.estimator == "stehman2014" and olofsson.estimator == "olofsson2014"
    _assert_same(olofsson, stehman)
    assert stehman.area[0] == pytest.approx(21_157.76, abs=0.01)


@st.composite
def samples(draw: st.DrawFn, min_per_row: int = 2) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(counts, mapped areas, classes): 2-5 classes, each row with at least ``min_per_row`` units."""
    size = draw(st.integers(2, 5))
    counts = np.array(
        [draw(st.lists(st.integers(0, 40), min_size=size, max_size=size)) for _ in range(size)], dtype=np.int64
    )
    for i in range(size):
        if counts[i].sum() < min_per_row:
            counts[i, draw(st.integers(0, size - 1))] += min_per_row
    areas = np.array(draw(st.lists(st.floats(0.5, 1e6), min_size=size, max_size=size)))
    return counts, areas, [f"class {k}" for k in range(size)]


@settings(max_examples=60, deadline=None)
@given(samples())
def test_stehman_equals_olofsson_for_any_sample(sample: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    counts, areas, classes = sample
    strata, mapped, ref = _units(counts, classes)
    sizes = dict(zip(classes, areas, strict=True))
    _assert_same(
        olofsson_estimates(counts, areas, classes), stehman_estimates(strata, mapped, ref, sizes, classes=classes)
    )


# -- invariants ------------------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(samples())
def test_estimated_areas_sum_to_the_mapped_total(sample: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    counts, areas, classes = sample
    est = olofsson_estimates(counts, areas, classes)
    assert est.area.sum() == pytest.approx(areas.sum(), rel=1e-9)
    assert est.error_matrix.sum() == pytest.approx(1.0)
    assert est.mapped_area == pytest.approx(areas)


@settings(max_examples=80, deadline=None)
@given(samples())
def test_proportions_and_accuracies_lie_in_0_1(sample: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    counts, areas, classes = sample
    est = olofsson_estimates(counts, areas, classes)
    for values in (est.area_proportion, est.users_accuracy, est.error_matrix.ravel()):
        assert np.all((values >= 0) & (values <= 1 + 1e-12))
    defined = np.isfinite(est.producers_accuracy)
    assert np.all((est.producers_accuracy[defined] >= 0) & (est.producers_accuracy[defined] <= 1 + 1e-12))
    # A class is undefined for PA exactly when no unit has it as reference.
    assert np.array_equal(~defined, counts.sum(axis=0) == 0)
    assert 0 <= est.overall_accuracy <= 1 + 1e-12
    for se in (est.area_proportion_se, est.users_accuracy_se, est.producers_accuracy_se[defined]):
        assert np.all(se >= 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(2, 60), min_size=2, max_size=6), st.data())
def test_a_perfect_matrix_gives_the_mapped_areas_with_zero_error(diagonal: list[int], data: st.DataObject) -> None:
    size = len(diagonal)
    areas = np.array(data.draw(st.lists(st.floats(0.5, 1e6), min_size=size, max_size=size)))
    est = olofsson_estimates(np.diag(diagonal), areas, [str(k) for k in range(size)])
    assert est.area == pytest.approx(areas, rel=1e-12)
    assert np.all(est.area_se == 0) and np.all(est.area_ci95 == 0)
    assert est.overall_accuracy == pytest.approx(1.0) and est.overall_accuracy_se == 0
    assert np.all(est.users_accuracy == 1) and np.all(est.users_accuracy_se == 0)
    assert est.producers_accuracy == pytest.approx(np.ones(size)) and np.all(est.producers_accuracy_se == 0)


@settings(max_examples=60, deadline=None)
@given(samples(), st.randoms(use_true_random=False))
def test_permuting_the_classes_permutes_the_results(
    sample: tuple[np.ndarray, np.ndarray, list[str]], rnd: random.Random
) -> None:
    counts, areas, classes = sample
    order = list(range(len(classes)))
    rnd.shuffle(order)
    base = olofsson_estimates(counts, areas, classes)
    permuted = olofsson_estimates(counts[np.ix_(order, order)], areas[order], [classes[k] for k in order])
    assert permuted.classes == tuple(classes[k] for k in order)
    for name in FIELDS:
        value = getattr(base, name)
        expected = value[np.ix_(order, order)] if value.ndim == 2 else value[order]
        np.testing.assert_allclose(getattr(permuted, name), expected, rtol=1e-9, atol=1e-12, err_msg=name)
    assert permuted.overall_accuracy == pytest.approx(base.overall_accuracy)


@settings(max_examples=60, deadline=None)
@given(samples(), st.integers(2, 9), st.data())
def test_scaling_a_row_leaves_the_point_estimates_unchanged(
    sample: tuple[np.ndarray, np.ndarray, list[str]], k: int, data: st.DataObject
) -> None:
    counts, areas, classes = sample
    row = data.draw(st.integers(0, len(classes) - 1))
    scaled = counts.copy()
    scaled[row] *= k
    a, b = olofsson_estimates(counts, areas, classes), olofsson_estimates(scaled, areas, classes)
    for name in ("error_matrix", "area_proportion", "users_accuracy", "producers_accuracy"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-15, err_msg=name)
    assert a.overall_accuracy == pytest.approx(b.overall_accuracy, rel=1e-12)
    # ... while the stratum's variance shrinks: its user's accuracy SE scales by sqrt((n − 1)/(kn − 1)).
    n = counts[row].sum()
    np.testing.assert_allclose(b.users_accuracy_se[row], a.users_accuracy_se[row] * math.sqrt((n - 1) / (k * n - 1)))


# -- the variance formulas against simulation ------------------------------------------------------------


def test_stehman_standard_errors_match_the_spread_of_repeated_samples() -> None:
    """Draw many stratified samples from one known population: the estimates are centred on the truth
    (areas, OA: unbiased) and the mean estimated variance matches the variance across samples."""
    rng = np.random.default_rng(12)
    sizes = np.array([6000, 3000, 1000])  # strata that are not the map classes (e.g. regions)
    n_h = np.array([25, 25, 30])
    population = []
    for h, size in enumerate(sizes):
        ref = rng.choice(3, size=size, p=[[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7]][h])
        wrong = rng.random(size) < 0.25
        mapped = np.where(wrong, (ref + rng.integers(1, 3, size=size)) % 3, ref)
        population.append((ref, mapped))
    all_ref = np.concatenate([p[0] for p in population])
    all_map = np.concatenate([p[1] for p in population])
    true_area = np.bincount(all_ref, minlength=3) / all_ref.size
    true_oa = float(np.mean(all_ref == all_map))
    classes = ["0", "1", "2"]
    estimates, variances = [], []
    for _ in range(1500):
        s_lab, m_lab, r_lab = [], [], []
        for h, (ref, mapped) in enumerate(population):
            pick = rng.choice(sizes[h], size=n_h[h], replace=False)
            s_lab += [f"s{h}"] * n_h[h]
            m_lab += [str(v) for v in mapped[pick]]
            r_lab += [str(v) for v in ref[pick]]
        est = stehman_estimates(
            s_lab,
            m_lab,
            r_lab,
            {f"s{h}": sizes[h] for h in range(3)},
            classes=classes,
            finite_population_correction=True,
        )
        estimates.append([*est.area_proportion, est.overall_accuracy, *est.users_accuracy])
        variances.append([*est.area_proportion_se**2, est.overall_accuracy_se**2, *est.users_accuracy_se**2])
    values, var = np.array(estimates), np.array(variances)
    spread = values.std(axis=0, ddof=1)
    # Unbiased: within 4 Monte Carlo standard errors of the truth.
    truth = np.array([*true_area, true_oa])
    assert np.all(np.abs(values[:, :4].mean(axis=0) - truth) < 4 * spread[:4] / math.sqrt(len(values)))
    # The SE formulas: mean estimated variance within 12 % of the variance across the samples
    # (area, OA and the ratio estimators of user's accuracy).
    ratio = var.mean(axis=0) / spread**2
    assert np.all((ratio > 0.88) & (ratio < 1.12)), ratio


# -- edge cases ------------------------------------------------------------------------------------------


def test_an_empty_row_with_mapped_area_is_an_error_naming_the_class() -> None:
    with pytest.raises(AccuracyInputError, match=r"map class 'water' has mapped area 5 but no sample unit"):
        olofsson_estimates([[10, 2], [0, 0]], [100, 5], ["forest", "water"])


def test_samples_in_a_class_without_mapped_area_are_an_error() -> None:
    with pytest.raises(AccuracyInputError, match=r"map class 'water' has 3 sample unit\(s\) but mapped area 0"):
        olofsson_estimates([[10, 2], [1, 2]], [100, 0], ["forest", "water"])


def test_a_class_neither_mapped_nor_sampled_has_undefined_users_accuracy() -> None:
    est = olofsson_estimates([[10, 2, 1], [1, 8, 0], [0, 0, 0]], [100, 50, 0], ["forest", "crop", "wetland"])
    assert math.isnan(est.users_accuracy[2]) and math.isnan(est.users_accuracy_se[2])
    # wetland is in the reference (1 unit mapped forest): W_forest · 1/13 of the area.
    assert est.area_proportion[2] == pytest.approx((100 / 150) * (1 / 13))
    assert est.producers_accuracy[2] == 0
    assert any("users_accuracy['wetland']" in note for note in est.notes)
    assert est.to_dict()["users_accuracy"]["wetland"] is None


def test_reference_only_columns_are_classes_of_the_result() -> None:
    """A class found only in the reference: no row, no area; it gets an estimated area and PA, no UA."""
    est = olofsson_estimates([[10, 2, 1], [1, 8, 0]], [100, 50], ["forest", "crop"], ["forest", "crop", "wetland"])
    same = olofsson_estimates([[10, 2, 1], [1, 8, 0], [0, 0, 0]], [100, 50, 0], ["forest", "crop", "wetland"])
    assert est.classes == ("forest", "crop", "wetland")
    _assert_same(est, same)
    # A map class absent from the reference columns: its column is zeros.
    est = olofsson_estimates([[10, 2], [1, 8]], [100, 50], ["forest", "crop"], ["crop", "forest"])
    assert est.users_accuracy == pytest.approx([2 / 12, 1 / 9])  # forest row: 10 labelled crop, 2 forest


def test_a_class_never_in_the_reference_has_zero_area_and_undefined_producers_accuracy() -> None:
    est = olofsson_estimates([[10, 2], [0, 8]], [100, 50], ["forest", "crop"], ["crop", "water"])
    # forest is mapped but never a reference class; water is the reverse.
    assert est.classes == ("forest", "crop", "water")
    assert est.area[0] == 0 and est.area_se[0] == 0
    assert math.isnan(est.producers_accuracy[0])
    assert any("producers_accuracy['forest']" in note for note in est.notes)


def test_a_stratum_of_one_unit_leaves_estimates_but_not_their_variances() -> None:
    est = olofsson_estimates([[10, 2], [0, 1]], [100, 50], ["forest", "crop"])
    assert est.users_accuracy == pytest.approx([10 / 12, 1.0])
    assert est.area_proportion == pytest.approx([(2 / 3) * (10 / 12), (2 / 3) * (2 / 12) + 1 / 3])
    # The forest stratum (12 units) still has a defined user's accuracy SE ...
    assert est.users_accuracy_se[0] == pytest.approx(math.sqrt((10 / 12) * (2 / 12) / 11))
    # ... everything the one-unit stratum enters is undefined, and said so.
    assert math.isnan(est.users_accuracy_se[1])
    assert np.all(np.isnan(est.area_proportion_se)) and math.isnan(est.overall_accuracy_se)
    assert np.all(np.isnan(est.producers_accuracy_se))
    assert any("stratum 'crop' has 1 sample unit" in note for note in est.notes)
    out = est.to_dict()
    assert out["area_se"] == {"forest": None, "crop": None} and out["overall_accuracy_se"] is None
    st1 = stehman_estimates(
        *_units(np.array([[10, 2], [0, 1]]), ["forest", "crop"]),
        {"forest": 100, "crop": 50},
        classes=["forest", "crop"],
    )
    assert st1.area_proportion == pytest.approx(est.area_proportion)
    assert np.all(np.isnan(st1.area_proportion_se)) and any("'crop' has 1 sample unit" in n for n in st1.notes)


@pytest.mark.parametrize(
    ("counts", "areas", "message"),
    [
        ([[1, -2], [0, 3]], [1, 1], r"count of map class 'a', reference class 'b' is -2: counts"),
        ([[1, 2.5], [0, 3]], [1, 1], r"is 2.5: counts are whole numbers"),
        ([[1, 2], [0, 3]], [1, -1], r"mapped area of class 'b' is -1: areas"),
        ([[1, 2], [0, 3]], [0, 0], r"the mapped areas sum to 0"),
        ([[1, 2, 3], [0, 3, 1]], [1, 1], r"the counts have shape \(2, 3\), but there are 2 map and 2 reference"),
        ([[1, 2], [0, 3]], [1, 1, 1], r"3 mapped areas for 2 map classes"),
    ],
)
def test_bad_inputs_are_errors_naming_the_problem(counts: list[list[float]], areas: list[float], message: str) -> None:
    with pytest.raises(AccuracyInputError, match=message):
        olofsson_estimates(counts, areas, ["a", "b"])


def test_repeated_class_names_are_errors() -> None:
    with pytest.raises(AccuracyInputError, match=r"map classes: class 'a' appears twice"):
        olofsson_estimates([[1, 2], [0, 3]], [1, 1], ["a", "a"])


@pytest.mark.parametrize(
    ("strata", "sizes", "kwargs", "message"),
    [
        (["x", "x", "y"], {"x": 10, "y": 5, "z": 4}, {}, r"stratum 'z' has size 4 but no sample unit"),
        (["x", "x", "q"], {"x": 10, "y": 0}, {}, r"sample units in stratum/strata 'q', which have no size"),
        (["x", "x", "y"], {"x": 10, "y": 0}, {}, r"stratum 'y' has 1 sample unit\(s\) but size 0"),
        (["x", "x", "y"], {"x": 1, "y": 5}, {"finite_population_correction": True}, r"stratum 'x' has 2 sample units"),
        (["x", "x", "y"], {"x": 10, "y": 5}, {"classes": ["a"]}, r"label\(s\) 'b' are not among the classes"),
    ],
)
def test_stehman_bad_inputs_name_the_stratum(
    strata: list[str], sizes: dict[str, float], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(AccuracyInputError, match=message):
        stehman_estimates(strata, ["a", "b", "a"], ["a", "a", "b"], sizes, **kwargs)


def test_stehman_needs_one_label_of_each_kind_per_unit() -> None:
    with pytest.raises(AccuracyInputError, match=r"3 strata, 2 map classes and 3 reference classes"):
        stehman_estimates(["x"] * 3, ["a", "b"], ["a"] * 3, {"x": 10})
    with pytest.raises(AccuracyInputError, match=r"the sample is empty"):
        stehman_estimates([], [], [], {"x": 10})


def test_to_dict_is_json_with_every_figure_per_class() -> None:
    import json

    est = olofsson_estimates(OLOFSSON_2014_COUNTS, OLOFSSON_2014_PIXELS * PIXEL_HA, OLOFSSON_2014_CLASSES)
    out = json.loads(json.dumps(est.to_dict(), allow_nan=False))
    assert out["area"]["Deforestation"] == pytest.approx(21_157.76, abs=0.01)
    assert out["area_ci95"]["Deforestation"] == pytest.approx(6_157.6, abs=0.1)
    assert out["n_map"] == {"Deforestation": 75, "Forest gain": 75, "Stable forest": 165, "Stable non-forest": 325}
    assert out["n_total"] == 640
    assert out["error_matrix"]["Stable forest"]["Deforestation"] == pytest.approx(0.32 / 165)
    assert set(out["users_accuracy"]) == set(OLOFSSON_2014_CLASSES)
