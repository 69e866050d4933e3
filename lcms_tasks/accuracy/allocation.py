"""Sample size and its allocation to strata: how many points to label, and where.

Notation: strata ``h = 1..H`` with ``N_h`` population units (pixels), ``N = Σ N_h``,
``W_h = N_h / N``; ``U_h`` the anticipated user's accuracy of the map in stratum ``h`` and
``S_h = sqrt(U_h (1 − U_h))`` its anticipated standard deviation; ``S(Ô)`` the target standard
error of overall accuracy; ``m`` the minimum per stratum.

1. **Total** (Cochran 1977, eq. 5.25; Olofsson et al. 2014, eq. 13)::

       n = ceil( (Σ_h W_h S_h / S(Ô))² )

2. **Allocation**: every stratum gets at least ``m_h = min(m, N_h)`` (a rare stratum: its minimum,
   or all of its pixels if it has fewer), the rest of ``n`` is shared in proportion to area. Exactly:
   start with no stratum fixed; give each stratum not fixed ``(n − Σ_fixed n_f) · W_h / Σ_not fixed W``;
   fix at ``m_h`` every stratum whose share is below ``m_h`` and at ``N_h`` every one whose share
   exceeds ``N_h``, and repeat with the others until no share changes. If the minimums alone need
   more than ``n`` (``Σ m_h ≥ n``), every stratum gets ``m_h`` and the total is ``Σ m_h``; if
   ``n ≥ N``, every pixel is taken (a census).
3. **Whole numbers**: the shares are floored, and the units left over go one each to the strata
   with the largest fractional parts (ties: the earlier stratum), so ``Σ n_h`` is the total.

The standard error of overall accuracy this allocation anticipates (stratified estimator, the same
``U_h``; the finite population correction left out, as in step 1) is::

       S(Ô) = sqrt( Σ_h W_h² S_h² / n_h )

Step 1 is the total for the optimal (Neyman) allocation; minimums for rare strata and the
proportional rest are the good practice of Olofsson et al. (2014, section 5.1.3), so the
anticipated SE of the final allocation can be above the target: the design reports both.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from lcms_tasks.accuracy.estimate import AccuracyInputError


def _check(sizes: np.ndarray, expected_ua: np.ndarray | None = None) -> None:
    if sizes.ndim != 1 or sizes.size == 0:
        raise AccuracyInputError("the design has no stratum")
    if np.any(~np.isfinite(sizes)) or np.any(sizes < 0) or np.any(sizes != np.floor(sizes)):
        raise AccuracyInputError(f"stratum sizes must be whole numbers of pixels >= 0, got {sizes.tolist()}")
    if sizes.sum() <= 0:
        raise AccuracyInputError("every stratum is empty: the map has no pixel to sample")
    if expected_ua is not None:
        if expected_ua.shape != sizes.shape:
            raise AccuracyInputError(f"{expected_ua.size} anticipated user's accuracies for {sizes.size} strata")
        if np.any(~np.isfinite(expected_ua)) or np.any((expected_ua <= 0) | (expected_ua > 1)):
            raise AccuracyInputError(f"anticipated user's accuracies must be in (0, 1], got {expected_ua.tolist()}")


def cochran_sample_size(sizes: ArrayLike, expected_ua: ArrayLike, target_se: float) -> int:
    """Step 1 of the module docstring: ``ceil((Σ W_h S_h / target_se)²)`` (at least 1)."""
    n_h = np.asarray(sizes, dtype=np.float64)
    u = np.asarray(expected_ua, dtype=np.float64)
    _check(n_h, u)
    if not math.isfinite(target_se) or target_se <= 0:
        raise AccuracyInputError(f"the target standard error must be > 0, got {target_se!r}")
    w = n_h / n_h.sum()
    s = np.sqrt(u * (1 - u))
    # A tiny tolerance so that an exact square (e.g. 640.0000000001 from rounding) is not rounded up.
    return max(1, math.ceil((float(np.sum(w * s)) / target_se) ** 2 - 1e-9))


def allocate(sizes: ArrayLike, n_total: int, min_per_stratum: int) -> np.ndarray:
    """Steps 2-3 of the module docstring: (H,) int64 sample sizes summing to the total."""
    n_h = np.asarray(sizes, dtype=np.float64)
    _check(n_h)
    if n_total < 1:
        raise AccuracyInputError(f"the sample size must be >= 1, got {n_total}")
    if min_per_stratum < 0:
        raise AccuracyInputError(f"the minimum per stratum must be >= 0, got {min_per_stratum}")
    floor = np.minimum(float(min_per_stratum), n_h)
    if floor.sum() >= n_total:
        return floor.astype(np.int64)
    if n_total >= n_h.sum():
        return n_h.astype(np.int64)
    share = np.zeros_like(n_h)
    fixed = np.zeros(n_h.size, dtype=bool)
    fixed[n_h == 0] = True  # an empty stratum gets nothing
    while True:
        free = ~fixed
        budget = n_total - share[fixed].sum()
        share[free] = budget * n_h[free] / n_h[free].sum()
        low = free & (share < floor)
        high = free & (share > n_h)
        if not low.any() and not high.any():
            break
        share[low] = floor[low]
        share[high] = n_h[high]
        fixed |= low | high
        if fixed.all():  # cannot happen with floor.sum() < n_total < N, kept as a guard
            break
    whole = np.floor(share + 1e-9)
    left = round(float(n_total - whole.sum()))
    while left < 0:  # a share a rounding error above a whole number: take the unit back where it weighs least
        over = np.flatnonzero(whole > floor)
        h = int(over[np.argmin(share[over] - whole[over])])
        whole[h] -= 1
        left += 1
    if left > 0:
        room = whole < n_h  # never above a stratum's size
        fraction = np.where(room, share - whole, -1.0)
        order = sorted(range(n_h.size), key=lambda h: (-fraction[h], h))
        for h in order[:left]:
            whole[h] += 1
    return whole.astype(np.int64)


def anticipated_oa_se(sizes: ArrayLike, expected_ua: ArrayLike, n_h: ArrayLike) -> float:
    """``sqrt(Σ W_h² S_h² / n_h)``: the SE of overall accuracy an allocation anticipates (NaN if a stratum gets 0)."""
    sizes_a = np.asarray(sizes, dtype=np.float64)
    u = np.asarray(expected_ua, dtype=np.float64)
    n = np.asarray(n_h, dtype=np.float64)
    _check(sizes_a, u)
    w = sizes_a / sizes_a.sum()
    present = w > 0
    if np.any(present & (n <= 0)):
        return math.nan
    return float(math.sqrt(np.sum(np.where(present, w**2 * u * (1 - u) / np.where(n > 0, n, 1.0), 0.0))))
