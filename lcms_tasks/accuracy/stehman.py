"""Area and accuracy estimators for stratified random sampling when the strata differ from the map classes.

Stehman, S. V. (2014), "Estimating area and map accuracy for stratified random sampling when the
strata are different from the map classes", International Journal of Remote Sensing 35(13),
4923-4939.

Every sample unit ``u`` has a stratum ``h``, a map class ``m_u`` and a reference class ``r_u``;
stratum ``h`` has ``N_h`` population units (pixels) of which ``n_h`` are in the sample, and
``N = Σ_h N_h``. Each estimated quantity is a total (or a ratio of two totals) of a 0/1 variable
``y_u`` defined per unit:

* estimated total ``Ŷ = Σ_h N_h ȳ_h`` (``ȳ_h`` the sample mean of ``y`` in stratum ``h``), and
  ``V(Ŷ) = Σ_h N_h² (1 − n_h/N_h) s²_yh / n_h`` with ``s²_yh`` the sample variance in stratum ``h``
  (eq. 2-3 and 25 of the paper); a proportion is ``Ŷ / N`` with ``SE = sqrt(V(Ŷ)) / N``;
* ratio ``R̂ = Ŷ / X̂`` of two totals and
  ``V(R̂) = (1 / X̂²) Σ_h N_h² (1 − n_h/N_h) (s²_yh + R̂² s²_xh − 2 R̂ s_xyh) / n_h`` (eq. 27-28).

With these:

* area proportion of class ``k`` and cell ``p_ij`` of the error matrix: ``y_u = 1[r_u = k]``,
  resp. ``1[m_u = i and r_u = j]`` (eq. 14-15);
* overall accuracy: ``y_u = 1[m_u = r_u]`` (eq. 12);
* user's accuracy of class ``k``: ``y_u = 1[m_u = k and r_u = k]``, ``x_u = 1[m_u = k]`` (eq. 18);
* producer's accuracy of class ``k``: the same ``y_u``, ``x_u = 1[r_u = k]`` (eq. 22).

The finite population correction ``1 − n_h/N_h`` needs ``N_h`` counted in sampling units (pixels);
it is applied only when ``finite_population_correction=True`` (the paper's example uses it, the
Olofsson et al. equations leave it out). Without it and with strata equal to the map classes, the
estimates equal :func:`lcms_tasks.accuracy.olofsson.olofsson_estimates` exactly (a test checks it).

Edge cases: a stratum with ``N_h > 0`` and no sample unit, a sample unit in a stratum without a
size, or a stratum with size 0 and units: :class:`AccuracyInputError` naming the stratum. A
stratum with one unit: point estimates stand, every standard error is ``NaN`` (``s²`` divides by
``n_h − 1``), with a note. A ratio whose denominator total is 0 (a class never mapped, or never in
the reference) is ``NaN`` with a note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lcms_tasks.accuracy.estimate import AccuracyEstimate, AccuracyInputError, check_class_names

ESTIMATOR = "stehman2014"


class _Strata:
    """Per-stratum sums of unit variables: the building block of every estimate and variance."""

    def __init__(self, index: np.ndarray, sizes: np.ndarray, *, fpc: bool) -> None:
        self.index = index  # (n,) stratum position of each unit
        self.sizes = sizes  # (H,) N_h
        self.n_h = np.bincount(index, minlength=len(sizes)).astype(np.float64)
        self.total = float(sizes.sum())
        sampled = self.n_h > 0
        factor = np.ones_like(sizes)
        if fpc:
            factor = 1.0 - np.divide(self.n_h, sizes, out=np.zeros_like(sizes), where=sizes > 0)
        # N_h² (1 − n_h/N_h) / (n_h (n_h − 1)): the weight of Σ (deviation products) in a variance;
        # NaN for a stratum of one unit (s² undefined, and it stays NaN when multiplied by 0), 0 for a
        # stratum without units (N_h = 0).
        with np.errstate(divide="ignore", invalid="ignore"):
            weight = sizes**2 * factor / (self.n_h * (self.n_h - 1))
        self.weight = np.where(self.n_h >= 2, weight, np.where(sampled, np.nan, 0.0))

    def means(self, values: np.ndarray) -> np.ndarray:
        """(H, K) stratum means of the (n, K) unit values."""
        sums = np.zeros((len(self.sizes), values.shape[1]))
        np.add.at(sums, self.index, values)
        return np.divide(sums, self.n_h[:, None], out=np.zeros_like(sums), where=self.n_h[:, None] > 0)

    def totals(self, values: np.ndarray) -> np.ndarray:
        """(K,) estimated population totals Σ_h N_h ȳ_h."""
        return np.asarray(self.sizes @ self.means(values))

    def deviations(self, values: np.ndarray) -> np.ndarray:
        return values - self.means(values)[self.index]

    def cross(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(K,) Σ_h weight_h Σ_{u in h} (a_u − ā_h)(b_u − b̄_h): the variance core of a total or a ratio."""
        products = np.zeros((len(self.sizes), a.shape[1]))
        np.add.at(products, self.index, self.deviations(a) * self.deviations(b))
        return np.asarray((self.weight[:, None] * products).sum(axis=0))

    def total_variance(self, values: np.ndarray) -> np.ndarray:
        return self.cross(values, values)

    def ratio(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R̂, SE(R̂)) of the (n, K) variables y over x; NaN where X̂ = 0."""
        y_total, x_total = self.totals(y), self.totals(x)
        defined = x_total > 0
        r = np.divide(y_total, x_total, out=np.full_like(y_total, np.nan), where=defined)
        rr = np.nan_to_num(r)
        var = self.total_variance(y) + rr**2 * self.total_variance(x) - 2 * rr * self.cross(y, x)
        # var can be a rounding error below 0 when it is 0 (a perfect sample); NaN stays NaN.
        se = np.sqrt(np.where(var < 0, 0.0, var)) / np.where(defined, x_total, 1.0)
        return r, np.where(defined, se, np.nan)


def _labels(values: Sequence[Any], what: str) -> list[str]:
    out = [str(v) for v in values]
    if any(not v.strip() for v in out):
        raise AccuracyInputError(f"{what}: a sample unit has an empty label")
    return out


def stehman_estimates(
    strata: Sequence[Any],
    map_class: Sequence[Any],
    reference: Sequence[Any],
    stratum_size: Mapping[Any, float],
    *,
    classes: Sequence[str] | None = None,
    finite_population_correction: bool = False,
) -> AccuracyEstimate:
    """Area and accuracy estimates of a stratified random sample (strata need not be map classes).

    ``strata``, ``map_class``, ``reference``: one label per sample unit. ``stratum_size``: ``N_h``
    of every stratum (pixels, or an area; areas of the result are in its unit). ``classes``: the
    order of the classes in the result (default: the labels in order of first appearance among
    the map classes, then the reference classes); every label must be among them.
    """
    s_lab = _labels(strata, "strata")
    m_lab = _labels(map_class, "map classes")
    r_lab = _labels(reference, "reference classes")
    if not len(s_lab) == len(m_lab) == len(r_lab):
        raise AccuracyInputError(
            f"{len(s_lab)} strata, {len(m_lab)} map classes and {len(r_lab)} reference classes: "
            "one of each per sample unit"
        )
    if not s_lab:
        raise AccuracyInputError("the sample is empty")
    sizes_by_name = {str(k): float(v) for k, v in stratum_size.items()}
    for name, size in sizes_by_name.items():
        if not np.isfinite(size) or size < 0:
            raise AccuracyInputError(f"stratum {name!r}: size {size!r} is not a number >= 0")
    unknown = sorted(set(s_lab) - set(sizes_by_name))
    if unknown:
        raise AccuracyInputError(f"sample units in stratum/strata {', '.join(map(repr, unknown))}, which have no size")
    names = list(sizes_by_name)
    index = _positions(names, s_lab)
    sizes = np.array([sizes_by_name[s] for s in names])
    n_h = np.bincount(index, minlength=len(names))
    for h, name in enumerate(names):
        if sizes[h] > 0 and n_h[h] == 0:
            raise AccuracyInputError(
                f"stratum {name!r} has size {sizes[h]:g} but no sample unit: its share cannot be estimated"
            )
        if sizes[h] == 0 and n_h[h] > 0:
            raise AccuracyInputError(f"stratum {name!r} has {n_h[h]} sample unit(s) but size 0")
        if finite_population_correction and n_h[h] > sizes[h]:
            raise AccuracyInputError(
                f"stratum {name!r} has {n_h[h]} sample units but only {sizes[h]:g} population units: with the "
                "finite population correction the sizes count sampling units (pixels)"
            )
    if sizes.sum() <= 0:
        raise AccuracyInputError("the strata sizes sum to 0: there is nothing to estimate")

    if classes is None:
        order = list(dict.fromkeys(m_lab + r_lab))
    else:
        order = [str(c) for c in classes]
        check_class_names(order, "classes")
        missing = sorted(set(m_lab + r_lab) - set(order))
        if missing:
            raise AccuracyInputError(f"label(s) {', '.join(map(repr, missing))} are not among the classes")
    m_idx = _positions(order, m_lab)
    r_idx = _positions(order, r_lab)
    size = len(order)
    eye = np.eye(size)
    mapped = eye[m_idx]  # (n, C) x_u = 1[m_u = k]
    labelled = eye[r_idx]  # (n, C) 1[r_u = k]
    correct = mapped * labelled  # (n, C) 1[m_u = k and r_u = k]
    cells = (m_idx * size + r_idx)[:, None] == np.arange(size * size)[None, :]  # (n, C²) 1[m_u = i, r_u = j]

    st = _Strata(index, sizes, fpc=finite_population_correction)
    notes = [
        f"stratum {names[h]!r} has 1 sample unit: its variance divides by n - 1 = 0, so every standard error is "
        "undefined"
        for h in np.flatnonzero(n_h == 1)
    ]
    total = st.total
    error_matrix = st.totals(cells.astype(np.float64)).reshape(size, size) / total
    area_p = st.totals(labelled) / total
    area_se = np.sqrt(st.total_variance(labelled)) / total
    agree = (m_idx == r_idx).astype(np.float64)[:, None]
    oa = float(st.totals(agree)[0] / total)
    oa_se = float(np.sqrt(st.total_variance(agree)[0]) / total)
    users, users_se = st.ratio(correct, mapped)
    producers, producers_se = st.ratio(correct, labelled)
    for k in np.flatnonzero(~np.isfinite(users)):
        notes.append(f"users_accuracy[{order[k]!r}]: no sample unit is mapped as this class: undefined")
    for k in np.flatnonzero(~np.isfinite(producers)):
        notes.append(f"producers_accuracy[{order[k]!r}]: no sample unit has this reference class: undefined")
    return AccuracyEstimate(
        estimator=ESTIMATOR,
        classes=tuple(order),
        total_area=total,
        error_matrix=error_matrix,
        map_proportion=error_matrix.sum(axis=1),
        area_proportion=area_p,
        area_proportion_se=area_se,
        overall_accuracy=oa,
        overall_accuracy_se=oa_se,
        users_accuracy=users,
        users_accuracy_se=users_se,
        producers_accuracy=producers,
        producers_accuracy_se=producers_se,
        n_map=mapped.sum(axis=0).astype(np.int64),
        n_reference=labelled.sum(axis=0).astype(np.int64),
        notes=tuple(notes),
    )


def _positions(order: list[str], labels: list[str]) -> np.ndarray:
    lookup = {name: i for i, name in enumerate(order)}
    return np.fromiter((lookup[v] for v in labels), dtype=np.int64, count=len(labels))
