"""The sample designs the blind assessment mode labels: where they are, what a labeller may see, the export.

A season's design is the one the reporting stage looks for: ``<storage root>/<project>/<season>/accuracy/``
holding ``design.json`` and ``points.csv`` (``lcms accuracy design --out`` that folder). It is named by
its ``design_id``, the SHA-256 of the two files, so labels of a redrawn design never mix with the old
one's.

What a labeller sees of a point (:class:`BlindPoint`) is built from an explicit list of columns
(:data:`BLIND_FIELDS`: the id, the pixel's centre in EPSG:4326 and the pixel's outline): never the map
class, the stratum, the change label or the inclusion probability, so the map cannot steer the label.
The order is the design's (point ids are drawn in a random order, so the order gives no stratum away).

:func:`labels_csv` writes the export: one row per point of the design, columns ``point_id`` and
``reference`` (a class name of the legend; empty when no labeller gave a class) as ``lcms accuracy
assess`` and the reporting stage read, and ``labelled_by``, ``labelled_at``, ``labellers``,
``cannot_tell``, ``comment`` beside them (they ignore other columns).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lcms_tasks.accuracy.design import DESIGN_FILE, POINTS_CSV
from lcms_tasks.report.accuracy import CONVENTIONAL_FOLDER, LABELS_CSV

#: design.json's ``kind``.
DESIGN_KIND = "lcms-accuracy-design"
#: The only columns of points.csv the blind mode reads for a labeller.
BLIND_FIELDS = ("point_id", "lon", "lat", "x", "y", "epsg")
#: Columns of the exported labels.csv, in order.
LABELS_COLUMNS = ("point_id", "reference", "labelled_by", "labelled_at", "labellers", "cannot_tell", "comment")


class DesignNotFoundError(LookupError):
    """No sample design for the season (the message says where it was looked for)."""


class DesignProblemError(ValueError):
    """A design folder the service cannot use (the message names the file and the problem)."""


@dataclass(frozen=True)
class BlindPoint:
    """What a labeller may know of a point: where it is."""

    point_id: str
    lon: float
    lat: float
    pixel: list[list[float]]  # the pixel's outline, a closed ring of [lon, lat]


@dataclass(frozen=True)
class SeasonDesign:
    """A season's design as the blind mode uses it (its points without any map label)."""

    project: str
    season: str
    design_id: str
    folder: str  # URI of the design folder
    legend: list[tuple[int, str]]  # (class id, name) of the design's legend, class 0 excluded
    resolution_m: float
    points: list[BlindPoint]

    @property
    def point_ids(self) -> list[str]:
        return [p.point_id for p in self.points]

    def class_name(self, class_id: int) -> str | None:
        return dict(self.legend).get(class_id)


def design_folder(storage: Any, project: str, season: str) -> str:
    """URI of the season's conventional design folder (``<project>/<season>/accuracy``)."""
    uri: str = storage.uri(project, season, CONVENTIONAL_FOLDER)
    return uri


def _pixel_ring(x: float, y: float, half: float, transformer: Any) -> list[list[float]]:
    xs = [x - half, x + half, x + half, x - half, x - half]
    ys = [y - half, y - half, y + half, y + half, y - half]
    lons, lats = transformer.transform(xs, ys)
    return [[round(float(a), 8), round(float(b), 8)] for a, b in zip(lons, lats, strict=True)]


def parse_design(project: str, season: str, folder: str, design_bytes: bytes, points_bytes: bytes) -> SeasonDesign:
    """A :class:`SeasonDesign` from the bytes of design.json and points.csv (:class:`DesignProblemError`)."""
    from pyproj import Transformer

    try:
        meta = json.loads(design_bytes)
    except (ValueError, UnicodeDecodeError) as err:
        raise DesignProblemError(f"{folder}/{DESIGN_FILE}: not JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("kind") != DESIGN_KIND:
        raise DesignProblemError(f"{folder}/{DESIGN_FILE}: not an LCMS sample design (its kind is not {DESIGN_KIND!r})")
    if (str(meta.get("project")), str(meta.get("season"))) != (project, season):
        raise DesignProblemError(
            f"{folder}/{DESIGN_FILE}: the design is for project {meta.get('project')!r} season {meta.get('season')}, "
            f"not {project!r} season {season}"
        )
    legend = [(int(c["id"]), str(c["name"])) for c in meta.get("legend") or [] if int(c["id"]) != 0]
    resolution = float(meta.get("resolution_m") or math.sqrt(float(meta.get("pixel_area_m2") or 0.0)))
    try:
        reader = csv.DictReader(io.StringIO(points_bytes.decode("utf-8-sig")))
        missing = [c for c in BLIND_FIELDS if c not in (reader.fieldnames or [])]
        if missing:
            raise DesignProblemError(f"{folder}/{POINTS_CSV}: no column {', '.join(missing)}")
        # Only the blind fields are kept: nothing else of a row outlives this loop.
        rows = [{k: row[k] for k in BLIND_FIELDS} for row in reader]
    except UnicodeDecodeError as err:
        raise DesignProblemError(f"{folder}/{POINTS_CSV}: not UTF-8 text ({err})") from err
    transformers: dict[int, Any] = {}
    points: list[BlindPoint] = []
    half = resolution / 2
    for line, row in enumerate(rows, start=2):
        try:
            epsg = int(row["epsg"])
            x, y, lon, lat = (float(row[k]) for k in ("x", "y", "lon", "lat"))
        except (TypeError, ValueError) as err:
            raise DesignProblemError(f"{folder}/{POINTS_CSV} line {line}: {err}") from err
        if epsg not in transformers:
            transformers[epsg] = Transformer.from_crs(epsg, 4326, always_xy=True)
        ring = _pixel_ring(x, y, half, transformers[epsg]) if half > 0 else [[lon, lat]] * 5
        points.append(BlindPoint(point_id=str(row["point_id"]), lon=lon, lat=lat, pixel=ring))
    if not points:
        raise DesignProblemError(f"{folder}/{POINTS_CSV}: no points")
    digest = hashlib.sha256()
    for part in (design_bytes, points_bytes):
        digest.update(hashlib.sha256(part).digest())
    return SeasonDesign(
        project=project,
        season=season,
        design_id=digest.hexdigest(),
        folder=folder,
        legend=legend,
        resolution_m=resolution,
        points=points,
    )


def load_design(storage: Any, project: str, season: str) -> SeasonDesign:
    """The season's design from storage (:class:`DesignNotFoundError`, :class:`DesignProblemError`). Blocking."""
    from lcms_tasks.errors import ArtefactMissingError

    folder = design_folder(storage, project, season)
    try:
        design_bytes = storage.read_bytes(f"{folder}/{DESIGN_FILE}")
    except ArtefactMissingError as err:
        raise DesignNotFoundError(
            f"season {season} has no sample design: {folder}/{DESIGN_FILE} does not exist "
            f"(draw one with `lcms accuracy design --config CONFIG --season {season} --out` that folder)"
        ) from err
    try:
        points_bytes = storage.read_bytes(f"{folder}/{POINTS_CSV}")
    except ArtefactMissingError as err:
        raise DesignProblemError(f"{folder}/{POINTS_CSV} does not exist (the design is incomplete)") from err
    return parse_design(project, season, folder, design_bytes, points_bytes)


@dataclass(frozen=True)
class StoredLabel:
    """One labeller's current label of a point (a row of ``lcms.accuracy_labels``)."""

    point_id: str
    labelled_by: str
    reference_name: str | None  # None: cannot tell
    cannot_tell: bool
    comment: str | None
    labelled_at: Any  # datetime


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`labels_csv` wrote."""

    points: int
    labelled: int
    cannot_tell: int
    unlabelled: int
    disagreements: int
    labellers: list[str]


def labels_csv(design: SeasonDesign, labels: Iterable[StoredLabel]) -> tuple[bytes, ExportSummary]:
    """labels.csv of ``design`` (see the module docstring) and what it holds.

    Each point's reference is its most recent class label among the labellers ("cannot tell" only when
    nobody gave a class: the point is then unlabelled, which ``lcms accuracy assess`` leaves out);
    ``disagreements`` counts the points whose labellers gave different classes.
    """
    by_point: dict[str, list[StoredLabel]] = {}
    for label in labels:
        by_point.setdefault(label.point_id, []).append(label)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LABELS_COLUMNS)
    labelled = cannot = disagreements = 0
    names: set[str] = set()
    for point_id in design.point_ids:
        given = sorted(by_point.get(point_id, []), key=lambda lb: (lb.labelled_at, lb.labelled_by))
        names.update(lb.labelled_by for lb in given)
        classes = [lb for lb in given if not lb.cannot_tell and lb.reference_name]
        if len({lb.reference_name for lb in classes}) > 1:
            disagreements += 1
        chosen = classes[-1] if classes else (given[-1] if given else None)
        if chosen is None:
            writer.writerow([point_id, "", "", "", 0, "", ""])
            continue
        if chosen.cannot_tell:
            cannot += 1
        else:
            labelled += 1
        writer.writerow(
            [
                point_id,
                chosen.reference_name or "",
                chosen.labelled_by,
                chosen.labelled_at.isoformat() if hasattr(chosen.labelled_at, "isoformat") else chosen.labelled_at,
                len({lb.labelled_by for lb in given}),
                "true" if chosen.cannot_tell else "false",
                (chosen.comment or "").replace("\r", " ").replace("\n", " "),
            ]
        )
    summary = ExportSummary(
        points=len(design.points),
        labelled=labelled,
        cannot_tell=cannot,
        unlabelled=len(design.points) - labelled - cannot,
        disagreements=disagreements,
        labellers=sorted(names),
    )
    return out.getvalue().encode(), summary


def write_labels(storage: Any, design: SeasonDesign, data: bytes) -> str:
    """Write labels.csv beside the design (a temporary name, then renamed; one PUT on S3); its URI. Blocking."""
    uri = f"{design.folder}/{LABELS_CSV}"
    storage.write_bytes(uri, data)
    return uri


def legend_check(design: SeasonDesign, class_id: int) -> str:
    """The name of ``class_id`` in the design's legend, or :class:`ValueError` naming the known classes."""
    name = design.class_name(class_id)
    if name is None:
        known = ", ".join(f"{cid} {n}" for cid, n in design.legend)
        raise ValueError(f"reference_class {class_id} is not a class of the design's legend ({known})")
    return name


def counts(design: SeasonDesign, labelled: Mapping[str, Any]) -> tuple[int, int]:
    """(done, left) of the design's points for one labeller's labels ``labelled`` (point id -> label)."""
    done = sum(1 for p in design.point_ids if p in labelled)
    return done, len(design.points) - done
