"""The result of an area and accuracy estimator, shared by :mod:`.olofsson` and :mod:`.stehman`.

One :class:`AccuracyEstimate` holds, over one ordered list of classes, the estimated error matrix
of area proportions ``p[i, j]`` (rows map class ``i``, columns reference class ``j``), the
estimated area proportion of every reference class, the overall, user's and producer's accuracies
and the standard error of each. Undefined figures are ``NaN`` in the arrays (``null`` in JSON) and
every one of them has a sentence in :attr:`AccuracyEstimate.notes` saying why, so a report never
shows a blank without a reason.

Confidence intervals are the normal approximation the literature uses: estimate ± 1.96 SE
(Olofsson et al. 2014, section 5), reported as the half-width (``..._ci95``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lcms_tasks.errors import LcmsError

#: The normal quantile of a two-sided 95 % interval, as in Olofsson et al. (2014).
Z95 = 1.96


class AccuracyInputError(LcmsError, ValueError):
    """The inputs of an estimator (counts, areas, sample units, labels) cannot give an estimate.

    The message names the file and line when the input came from a file, the class or stratum
    and the problem; the CLI prints it as one line and exits with status 2.
    """

    permanent = True

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = ": ".join(part for part in (path, f"line {line}" if line is not None else None) if part)
        super().__init__(f"{where}: {message}" if where else message)


def _floats(values: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(float(v)) else float(v) for v in np.asarray(values, dtype=np.float64)]


def _by_class(classes: tuple[str, ...], values: np.ndarray) -> dict[str, float | None]:
    return dict(zip(classes, _floats(values), strict=True))


def _none_if_nan(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class AccuracyEstimate:
    """Area and accuracy estimates over ``classes`` (see the module docstring).

    ``total_area`` is the area of the whole mapped region in the caller's unit (the areas of
    AREAS.csv, pixels, hectares); every ``area*`` property is a proportion times it.
    ``n_map[i]`` / ``n_reference[j]`` are the sample units mapped as / labelled as each class.
    """

    estimator: str
    classes: tuple[str, ...]
    total_area: float
    error_matrix: np.ndarray  # (C, C) estimated area proportions p_ij, rows map, columns reference
    map_proportion: np.ndarray  # (C,) p_i. : mapped share of each class (known or estimated)
    area_proportion: np.ndarray  # (C,) p_.j : estimated share of each reference class
    area_proportion_se: np.ndarray
    overall_accuracy: float
    overall_accuracy_se: float
    users_accuracy: np.ndarray
    users_accuracy_se: np.ndarray
    producers_accuracy: np.ndarray
    producers_accuracy_se: np.ndarray
    n_map: np.ndarray
    n_reference: np.ndarray
    notes: tuple[str, ...] = ()

    # -- derived figures ----------------------------------------------------------------------------
    @property
    def area(self) -> np.ndarray:
        """Estimated area of each class (reference), in the unit of :attr:`total_area`."""
        return self.area_proportion * self.total_area

    @property
    def area_se(self) -> np.ndarray:
        return self.area_proportion_se * self.total_area

    @property
    def area_ci95(self) -> np.ndarray:
        """Half-width of the 95 % confidence interval of :attr:`area` (area ± this)."""
        return Z95 * self.area_se

    @property
    def mapped_area(self) -> np.ndarray:
        """The map's area of each class (pixel counting), in the unit of :attr:`total_area`."""
        return self.map_proportion * self.total_area

    def index(self, name: str) -> int:
        """Position of class ``name`` (``KeyError`` naming the known classes)."""
        try:
            return self.classes.index(name)
        except ValueError:
            raise KeyError(f"no class {name!r}; classes: {', '.join(self.classes)}") from None

    def with_total_area(self, total_area: float) -> AccuracyEstimate:
        """The same estimate with areas expressed over ``total_area`` (another unit)."""
        return dataclasses.replace(self, total_area=float(total_area))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per-class figures as objects class → value, undefined values as ``None``."""
        c = self.classes
        return {
            "estimator": self.estimator,
            "classes": list(c),
            "overall_accuracy": _none_if_nan(self.overall_accuracy),
            "overall_accuracy_se": _none_if_nan(self.overall_accuracy_se),
            "overall_accuracy_ci95": _none_if_nan(Z95 * self.overall_accuracy_se),
            "users_accuracy": _by_class(c, self.users_accuracy),
            "users_accuracy_se": _by_class(c, self.users_accuracy_se),
            "users_accuracy_ci95": _by_class(c, Z95 * self.users_accuracy_se),
            "producers_accuracy": _by_class(c, self.producers_accuracy),
            "producers_accuracy_se": _by_class(c, self.producers_accuracy_se),
            "producers_accuracy_ci95": _by_class(c, Z95 * self.producers_accuracy_se),
            "area": _by_class(c, self.area),
            "area_se": _by_class(c, self.area_se),
            "area_ci95": _by_class(c, self.area_ci95),
            "area_proportion": _by_class(c, self.area_proportion),
            "area_proportion_se": _by_class(c, self.area_proportion_se),
            "mapped_area": _by_class(c, self.mapped_area),
            "total_area": float(self.total_area),
            "n_map": {name: int(v) for name, v in zip(c, self.n_map, strict=True)},
            "n_reference": {name: int(v) for name, v in zip(c, self.n_reference, strict=True)},
            "n_total": int(np.sum(self.n_map)),
            "error_matrix": {row: dict(zip(c, _floats(self.error_matrix[i]), strict=True)) for i, row in enumerate(c)},
            "z": Z95,
            "notes": list(self.notes),
        }


def check_class_names(names: list[str], what: str) -> None:
    """``AccuracyInputError`` for an empty or repeated class name in ``names``."""
    seen: set[str] = set()
    for name in names:
        if not str(name).strip():
            raise AccuracyInputError(f"{what}: a class name is empty")
        if name in seen:
            raise AccuracyInputError(f"{what}: class {name!r} appears twice")
        seen.add(name)
