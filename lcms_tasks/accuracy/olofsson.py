"""Stratified estimators of area and accuracy when the strata are the map classes.

Olofsson, Foody, Stehman & Woodcock (2013), "Making better use of accuracy data in land change
studies", RSE 129, 122-131; Olofsson, Foody, Herold, Stehman, Woodcock & Wulder (2014), "Good
practices for estimating area and assessing accuracy of land change", RSE 148, 42-57.

Input: the sample counts ``n[i, j]`` (rows map class = stratum ``i``, columns reference class
``j``) of a stratified random sample whose strata are the map classes, and the mapped area
``A_i`` of each stratum (pixel counting, any unit). With ``n_i. = Σ_j n_ij``, ``A = Σ_i A_i`` and
``W_i = A_i / A``:

* error matrix of area proportions  ``p_ij = W_i n_ij / n_i.``                           (eq. 4)
* area proportion of class j        ``p_.j = Σ_i p_ij``; area ``A p_.j``                 (eq. 9)
* ``SE(p_.j) = sqrt(Σ_i W_i² (n_ij/n_i.)(1 − n_ij/n_i.) / (n_i. − 1))``                  (eq. 10)
* overall accuracy ``O = Σ_j p_jj``, ``V(O) = Σ_i W_i² U_i (1 − U_i) / (n_i. − 1)``        (eq. 1, 5)
* user's accuracy ``U_i = p_ii / p_i. = n_ii / n_i.``, ``V(U_i) = U_i (1 − U_i) / (n_i. − 1)`` (eq. 2, 6)
* producer's accuracy ``P_j = p_jj / p_.j`` with                                            (eq. 3, 7)
  ``V(P_j) = [W_j² (1 − P_j)² U_j (1 − U_j) / (n_j. − 1)
             + P_j² Σ_{i≠j} W_i² (n_ij/n_i.)(1 − n_ij/n_i.) / (n_i. − 1)] / p_.j²``
  (eq. 7 written with ``N_i. = A W_i`` and ``N̂_.j = A p_.j``; the ``A²`` cancel);
* 95 % confidence intervals: estimate ± 1.96 SE.

Edge cases, each decided here and documented in the result's ``notes``:

* a map class with mapped area > 0 and no sample unit (an empty row): **error** naming the class,
  as its area cannot be attributed to any reference class;
* a map class with sample units but mapped area 0: **error** naming the class, as a stratified
  random sample cannot draw units from an empty stratum (areas rounded to 0 in a coarse unit:
  give them in a finer one);
* a map class with neither (a row of zeros, area 0): allowed; its user's accuracy is undefined
  (``NaN``, with a note) and it adds nothing to any estimate;
* a stratum with exactly one sample unit: the point estimates stand, but every variance it enters
  divides by ``n_i. − 1 = 0``, so those standard errors are ``NaN`` with a note naming the stratum
  (all area, overall and producer's SEs, and that class's user's accuracy SE);
* a class present only among the reference columns (never mapped): a row of zeros with area 0;
  its user's accuracy is undefined, its area and producer's accuracy are estimated;
* a class never found in the reference (``p_.j = 0``): area 0 (SE 0), producer's accuracy
  undefined (``NaN``, with a note).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lcms_tasks.accuracy.estimate import AccuracyEstimate, AccuracyInputError, check_class_names

ESTIMATOR = "olofsson2014"


def _square(
    counts: np.ndarray, mapped_area: np.ndarray, map_classes: list[str], reference_classes: list[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(classes, n, A) over the union of the classes: map classes first, then reference-only ones."""
    classes = list(map_classes) + [c for c in reference_classes if c not in set(map_classes)]
    size = len(classes)
    n = np.zeros((size, size), dtype=np.float64)
    columns = [classes.index(c) for c in reference_classes]
    n[np.ix_(range(len(map_classes)), columns)] = counts
    area = np.zeros(size, dtype=np.float64)
    area[: len(map_classes)] = mapped_area
    return classes, n, area


def olofsson_estimates(
    counts: np.ndarray | Sequence[Sequence[float]],
    mapped_area: np.ndarray | Sequence[float],
    map_classes: Sequence[str],
    reference_classes: Sequence[str] | None = None,
) -> AccuracyEstimate:
    """Area and accuracy estimates of a stratified sample whose strata are the map classes.

    ``counts[i][j]``: sample units mapped as ``map_classes[i]`` and labelled
    ``reference_classes[j]`` (default: the map classes, a square matrix). ``mapped_area[i]``:
    the map's area of ``map_classes[i]``, in any unit (the areas of the result are in it too).
    The result's classes are the map classes, then the reference classes never mapped.
    Raises :class:`AccuracyInputError` naming the class for the cases in the module docstring.
    """
    map_names = [str(c) for c in map_classes]
    ref_names = map_names if reference_classes is None else [str(c) for c in reference_classes]
    check_class_names(map_names, "map classes")
    check_class_names(ref_names, "reference classes")
    n_in = np.asarray(counts, dtype=np.float64)
    a_in = np.asarray(mapped_area, dtype=np.float64)
    if n_in.shape != (len(map_names), len(ref_names)):
        raise AccuracyInputError(
            f"the counts have shape {n_in.shape}, but there are {len(map_names)} map and {len(ref_names)} "
            "reference classes"
        )
    if a_in.shape != (len(map_names),):
        raise AccuracyInputError(f"{a_in.size} mapped areas for {len(map_names)} map classes")
    for i, name in enumerate(map_names):
        for j, ref in enumerate(ref_names):
            value = n_in[i, j]
            if not np.isfinite(value) or value < 0 or value != np.floor(value):
                raise AccuracyInputError(
                    f"count of map class {name!r}, reference class {ref!r} is {float(value):g}: "
                    "counts are whole numbers >= 0"
                )
        if not np.isfinite(a_in[i]) or a_in[i] < 0:
            raise AccuracyInputError(f"mapped area of class {name!r} is {float(a_in[i]):g}: areas are numbers >= 0")
    if a_in.sum() <= 0:
        raise AccuracyInputError("the mapped areas sum to 0: there is nothing to estimate")

    classes, n, area = _square(n_in, a_in, map_names, ref_names)
    n_row = n.sum(axis=1)
    for i, name in enumerate(classes[: len(map_names)]):
        if area[i] > 0 and n_row[i] == 0:
            raise AccuracyInputError(
                f"map class {name!r} has mapped area {a_in[i]:g} but no sample unit (an empty row): its area "
                "cannot be attributed to reference classes; sample it or merge it into another class"
            )
        if area[i] == 0 and n_row[i] > 0:
            raise AccuracyInputError(
                f"map class {name!r} has {int(n_row[i])} sample unit(s) but mapped area 0: a stratified random "
                "sample cannot draw units from an empty stratum (an area rounded to 0? give areas in a finer unit)"
            )
    notes: list[str] = []
    w = area / area.sum()
    sampled = n_row > 0
    q = np.divide(n, n_row[:, None], out=np.zeros_like(n), where=sampled[:, None])  # n_ij / n_i.
    p = w[:, None] * q
    p_col = p.sum(axis=0)
    diag = np.diag(p)
    users = np.where(sampled, np.diag(q), np.nan)
    for i in np.flatnonzero(~sampled):
        notes.append(f"users_accuracy[{classes[i]!r}]: the class is not mapped (area 0, no sample unit): undefined")
    with np.errstate(invalid="ignore", divide="ignore"):
        producers = np.where(p_col > 0, diag / np.where(p_col > 0, p_col, 1.0), np.nan)
    for j in np.flatnonzero(p_col <= 0):
        notes.append(f"producers_accuracy[{classes[j]!r}]: no sample unit has this reference class: undefined")

    # Variance terms per stratum; a stratum of one unit makes every variance it enters undefined.
    single = sampled & (n_row == 1)
    for i in np.flatnonzero(single):
        notes.append(
            f"stratum {classes[i]!r} has 1 sample unit: the variances it enters divide by n - 1 = 0, so the standard "
            "errors of the areas, of the overall and producer's accuracies and of its user's accuracy are undefined"
        )
    denom = np.where(n_row >= 2, n_row - 1, np.nan)
    denom = np.where(sampled, denom, 1.0)  # strata with W_i = 0 contribute 0, not NaN
    terms = (w**2)[:, None] * q * (1 - q) / denom[:, None]  # (C, C): stratum i's share of V(p_.j)
    area_se = np.sqrt(terms.sum(axis=0))
    u_terms = np.where(sampled, users * (1 - np.nan_to_num(users)) / denom, 0.0)
    oa_var = float(np.sum(w**2 * np.where(sampled, u_terms, 0.0)))
    users_se = np.where(sampled, np.sqrt(np.where(sampled, u_terms, 0.0)), np.nan)
    off_diagonal = np.where(np.eye(len(classes), dtype=bool), 0.0, terms).sum(axis=0)  # Σ_{i≠j}
    with np.errstate(invalid="ignore", divide="ignore"):
        first = np.where(sampled, w**2 * (1 - producers) ** 2 * u_terms, 0.0)
        pa_var = (first + producers**2 * off_diagonal) / p_col**2
    producers_se = np.where(p_col > 0, np.sqrt(pa_var), np.nan)
    return AccuracyEstimate(
        estimator=ESTIMATOR,
        classes=tuple(classes),
        total_area=float(area.sum()),
        error_matrix=p,
        map_proportion=w,
        area_proportion=p_col,
        area_proportion_se=area_se,
        overall_accuracy=float(diag.sum()),
        overall_accuracy_se=float(np.sqrt(oa_var)),
        users_accuracy=users,
        users_accuracy_se=users_se,
        producers_accuracy=producers,
        producers_accuracy_se=producers_se,
        n_map=n_row.astype(np.int64),
        n_reference=n.sum(axis=0).astype(np.int64),
        notes=tuple(notes),
    )
