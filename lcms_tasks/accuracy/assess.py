"""Assessing a labelled sample design: area and accuracy estimates (Stehman 2014) with confidence intervals.

The labels (``LABELS.csv``) have a ``point_id`` column and a ``reference`` column (other columns are
ignored, so the design's own points.csv with its ``reference`` column filled in is a labels file).
A reference is a class name of the legend (case does not matter) or its id. A point without a label
(empty ``reference``) is left out: the labelled points of each stratum are then its sample, which is
sound when the missing ones are missing at random; the result says how many there are, per stratum.

The estimates are :func:`lcms_tasks.accuracy.stehman.stehman_estimates` with the strata and their
pixel counts ``N_h`` from design.json (with the finite population correction ``1 − n_h/N_h``), the
map class of each point and its label; areas are in hectares (pixels × pixel area).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcms_tasks.accuracy.estimate import AccuracyEstimate, AccuracyInputError
from lcms_tasks.accuracy.stehman import stehman_estimates

if TYPE_CHECKING:
    import pandas as pd


def class_lookup(legend: list[dict[str, Any]]) -> dict[str, str]:
    """Lower-cased class name or id (as text) → the legend's class name."""
    out: dict[str, str] = {}
    for c in legend:
        out[str(c["name"]).strip().lower()] = str(c["name"])
        out[str(int(c["id"]))] = str(c["name"])
    return out


def read_labels(path: str | Path, legend: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, int]]:
    """(point id → reference class name, point id → line) of a labels CSV; empty labels are left out."""
    from lcms_tasks.accuracy.tables import csv_records

    name = str(path)
    records = list(csv_records(Path(path)))
    if not records:
        raise AccuracyInputError("the file is empty: expected a header with 'point_id' and 'reference'", path=name)
    header_line, header = records[0]
    lowered = [h.lower() for h in header]
    missing = [c for c in ("point_id", "reference") if c not in lowered]
    if missing:
        raise AccuracyInputError(
            f"the header has no column {' or '.join(map(repr, missing))}: expected 'point_id' and 'reference'",
            path=name,
            line=header_line,
        )
    pi, ri = lowered.index("point_id"), lowered.index("reference")
    lookup = class_lookup(legend)
    labels: dict[str, str] = {}
    lines: dict[str, int] = {}
    for line, cells in records[1:]:
        cells = cells + [""] * (len(header) - len(cells))
        point, value = cells[pi], cells[ri]
        if not point:
            raise AccuracyInputError("no point id in column 'point_id'", path=name, line=line)
        if point in lines:
            raise AccuracyInputError(
                f"point {point!r} appears twice (lines {lines[point]} and {line})", path=name, line=line
            )
        lines[point] = line
        if not value:
            continue
        cls = lookup.get(value.lower())
        if cls is None:
            known = ", ".join(str(c["name"]) for c in legend)
            raise AccuracyInputError(
                f"point {point!r}: reference {value!r} is not a class of the legend ({known}) nor its id",
                path=name,
                line=line,
            )
        labels[point] = cls
    return labels, lines


def assess(
    meta: Mapping[str, Any],
    points: pd.DataFrame,
    labels: Mapping[str, str],
    *,
    label_lines: Mapping[str, int] | None = None,
    labels_path: str | None = None,
) -> tuple[AccuracyEstimate, dict[str, Any]]:
    """(estimate with areas in ha, figures about the labels) of a design's points labelled by ``labels``.

    ``labels``: point id → reference class name (of the design's legend). Ids not among the points
    are an error naming the line (``label_lines``) of ``labels_path``.
    """
    ids = set(points["point_id"].astype(str))
    unknown = [p for p in labels if p not in ids]
    if unknown:
        line = (label_lines or {}).get(unknown[0])
        raise AccuracyInputError(
            f"point {unknown[0]!r} is not a point of the design"
            + (f" ({len(unknown)} such ids)" if len(unknown) > 1 else ""),
            path=labels_path,
            line=line,
        )
    strata = {str(s["name"]): s for s in meta["strata"]}
    labelled = points[points["point_id"].astype(str).isin(labels)]
    n_design = points.groupby("stratum").size().to_dict()
    n_labelled = labelled.groupby("stratum").size().to_dict()
    for name, s in strata.items():
        if int(s["pixels"]) > 0 and n_labelled.get(name, 0) == 0:
            raise AccuracyInputError(
                f"stratum {name!r}: none of its {n_design.get(name, 0)} point(s) has a label; its share of the map "
                "cannot be estimated (label at least 2 of them)",
                path=labels_path,
            )
    legend_names = [str(c["name"]) for c in meta["legend"]]
    reference = [labels[p] for p in labelled["point_id"].astype(str)]
    present = set(labelled["map_class"].astype(str)) | set(reference)
    present |= {str(s["name"]) for s in meta["strata"] if s["kind"] == "class"}
    classes = [c for c in legend_names if c in present] + sorted(present - set(legend_names))
    estimate = stehman_estimates(
        list(labelled["stratum"].astype(str)),
        list(labelled["map_class"].astype(str)),
        reference,
        {name: int(s["pixels"]) for name, s in strata.items()},
        classes=classes,
        finite_population_correction=True,
    )
    pixel_m2 = float(meta["pixel_area_m2"])
    estimate = estimate.with_total_area(estimate.total_area * pixel_m2 / 1e4)
    n_missing = len(points) - len(labelled)
    notes = list(estimate.notes)
    if n_missing:
        notes.insert(
            0,
            f"{n_missing} of {len(points)} point(s) have no label: each stratum's labelled points are its sample "
            "(sound if the labels are missing at random)",
        )
    figures = {
        "n_points": len(points),
        "n_labelled": len(labelled),
        "n_unlabelled": n_missing,
        "strata": [
            {
                "name": name,
                "kind": s["kind"],
                "pixels": int(s["pixels"]),
                "n_design": int(n_design.get(name, 0)),
                "n_labelled": int(n_labelled.get(name, 0)),
            }
            for name, s in strata.items()
        ],
        "notes": notes,
    }
    return estimate, figures


#: Square metres per unit of the areas :func:`estimates_json` can give.
AREA_UNITS = {"ha": 1e4, "km2": 1e6}


def estimates_json(
    meta: Mapping[str, Any], estimate: AccuracyEstimate, figures: Mapping[str, Any], *, unit: str = "ha"
) -> dict[str, Any]:
    """The figures of :func:`assess` as JSON, areas in ``unit`` (``ha`` or ``km2``).

    The map's class areas are known exactly (pixel counting, ``class_pixels`` of design.json): they are
    ``mapped_area``; Stehman's estimate of them is kept beside as ``mapped_area_estimated``.
    """
    if unit not in AREA_UNITS:
        raise ValueError(f"area unit {unit!r}: use one of {', '.join(AREA_UNITS)}")
    pixel_m2 = float(meta["pixel_area_m2"])
    per_unit = AREA_UNITS[unit]
    # assess() gives hectares: the same estimate over the total in the unit asked for.
    est = estimate.with_total_area(estimate.total_area * AREA_UNITS["ha"] / per_unit)
    out = est.to_dict()
    out["notes"] = list(figures["notes"])
    pixels = meta.get("class_pixels", {})
    out["mapped_area_estimated"] = out["mapped_area"]
    out["mapped_area"] = {c: float(pixels.get(c, 0)) * pixel_m2 / per_unit for c in est.classes}
    return {"area_unit": unit, **{k: v for k, v in figures.items() if k != "notes"}, **out}


def assess_folder(design_dir: str | Path, labels_path: str | Path) -> dict[str, Any]:
    """``lcms accuracy assess``: the JSON of a design folder assessed with a labels CSV."""
    from lcms_tasks.accuracy.design import read_design

    meta, points = read_design(Path(design_dir))
    labels, lines = read_labels(labels_path, meta["legend"])
    estimate, figures = assess(meta, points, labels, label_lines=lines, labels_path=str(labels_path))
    return {
        "design": str(design_dir),
        "labels": str(labels_path),
        "project": meta.get("project"),
        "season": meta.get("season"),
        "source": meta.get("source"),
        **estimates_json(meta, estimate, figures, unit="ha"),
    }
