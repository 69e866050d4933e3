"""The report's area-adjusted accuracy and class areas with 95 % confidence intervals (``area_adjusted``).

Figures an auditor accepts come from reference labels of a probability sample, weighted by the
inclusion probabilities (:mod:`lcms_tasks.accuracy`). The reporting stage takes the labels of the
season from the first of these that exists (options ``stages.reporting.accuracy``,
:class:`AccuracyOptions`):

1. ``design`` (and ``labels``): a sample design folder written by ``lcms accuracy design`` for the
   season (``design.json``, ``points.csv``) and its labels CSV (``point_id``, ``reference``; default
   ``labels.csv`` in the design folder); paths relative to the config folder, or URIs, ``{season}``
   replaced by the season id;
2. the conventional place, ``<storage root>/<project>/<season>/accuracy/``, holding ``design.json``,
   ``points.csv`` and ``labels.csv`` (``lcms accuracy design --out`` that folder, then add the labels);
3. with ``synthetic_truth`` on and download EOPatches that carry the synthetic generator's truth
   (``mask_timeless/TRUTH_LAND_COVER``): a design drawn by the stage itself over the season's map while
   it reads the tiles (:class:`TruthSample`: the same strata, allocation and draw as
   ``lcms accuracy design``, seeded with ``seed`` or the source's seed), each point labelled with the
   truth at its pixel. The points are read from arrays the stage reads anyway: no extra read. This is
   the demo's stand-in for reference labels and the report says so;
4. none of them: the block says plainly that there are no labels (``available: false`` and why), and
   the report's other accuracy figures are labelled as what they are (a test split is not a
   probability sample).

The estimates are :func:`lcms_tasks.accuracy.assess.assess`'s (Stehman 2014 with the finite
population correction; with strata equal to the map classes they are Olofsson et al. 2014's), with
areas in km². A labelled design that cannot be used (absent files, another season, a bad CSV) is a
``problem`` of the block, logged as a warning, never a failed report.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from lcms_tasks.schema import StrictModel

if TYPE_CHECKING:
    import geopandas as gpd

    from lcms_tasks.accuracy.design import Design, DesignBuilder
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import Tile

log = logging.getLogger(__name__)

#: The folder below ``<project>/<season>/`` where a season's labelled design is looked for.
CONVENTIONAL_FOLDER = "accuracy"
LABELS_CSV = "labels.csv"
#: The folder of the report holding the design the stage drew (design.json, points.csv with the labels).
REPORT_FOLDER = "accuracy"
SYNTHETIC_TRUTH = "synthetic_truth"
LABELS = "labels"


class AccuracyOptions(StrictModel):
    """Where the reporting stage finds reference labels for the area-adjusted accuracy (see the module)."""

    design: str | None = Field(
        None,
        description="Folder of the season's sample design (design.json and points.csv, from `lcms accuracy design`): "
        "a path relative to the config folder or a file:// or s3:// URI; '{season}' is replaced by the season id. "
        "Default: <storage root>/<project>/<season>/accuracy/ when it holds a design.json.",
    )
    labels: str | None = Field(
        None,
        description="Labels CSV of that design (columns point_id and reference: a class name or id); path or URI as "
        "for design, '{season}' replaced. Default: labels.csv in the design folder.",
    )
    synthetic_truth: bool = Field(
        True,
        description="Without a labelled design, when the download EOPatches carry the synthetic generator's truth: "
        "draw a design over the season's map and label its points from the truth (the demo's stand-in for labels).",
    )
    target_se: float = Field(0.01, gt=0, lt=1, description="Drawn design: target standard error of overall accuracy.")
    min_per_stratum: int = Field(50, ge=0, description="Drawn design: minimum number of points per stratum.")
    expected_ua: float = Field(
        0.85, gt=0, le=1, description="Drawn design: anticipated user's accuracy of every stratum (sizes the sample)."
    )
    change_strata: bool = Field(
        True,
        description="Drawn design: one stratum per change transition and a buffer stratum, when there are changes.",
    )
    buffer_px: int = Field(2, ge=0, le=50, description="Drawn design: width in pixels of the buffer around changes.")
    sample_size: int | None = Field(
        None, ge=2, description="Drawn design: a fixed number of points instead of the one for target_se."
    )
    seed: int | None = Field(None, ge=0, description="Drawn design: random seed; default: the source's seed (or 0).")


# -- a drawn design labelled by the synthetic truth ------------------------------------------------------------


@dataclass
class TruthSample:
    """The design the reporting stage draws over the season's map, offered each tile it reads (truth included)."""

    builder: DesignBuilder
    tiles_without_truth: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, ctx: RunContext, options: AccuracyOptions) -> TruthSample:
        from lcms_tasks.accuracy.design import DesignBuilder, DesignOptions

        source_seed = getattr(ctx.config.source, "seed", 0)
        seed = options.seed if options.seed is not None else int(source_seed or 0) % 2**32
        design_options = DesignOptions(
            target_se=options.target_se,
            min_per_stratum=options.min_per_stratum,
            expected_ua=options.expected_ua,
            seed=seed,
            buffer_px=options.buffer_px,
            change_strata=options.change_strata,
            sample_size=options.sample_size,
        )
        legend = [(c.id, c.name) for c in ctx.config.legend()]
        return cls(DesignBuilder(legend, design_options, values=("truth",)))

    def add_tile(
        self,
        tile: Tile,
        classes: np.ndarray,
        in_aoi: np.ndarray,
        changes: gpd.GeoDataFrame | None,
        truth: np.ndarray,
    ) -> None:
        """Offer a tile: its map, AOI pixels, change polygons (None: no change map) and truth raster."""
        change = codes = None
        if changes is not None:
            from lcms_tasks.publish.tiles import rasterise_changes, transition_code_table

            names = dict(self.builder.legend)
            pairs = {(int(a), int(b)) for a, b in zip(changes["from_class"], changes["to_class"], strict=True)}
            # The tile's own code table: the builder names strata by transition and numbers them at the end.
            codes = transition_code_table(pairs, names)
            change = rasterise_changes(changes, codes, tile.shape, tile.transform(), where=f"tile {tile.id}")
        self.builder.add_tile(tile, classes, in_aoi=in_aoi, change=change, codes=codes, values={"truth": truth})

    @property
    def n_tiles(self) -> int:
        return len(self.builder.draw.tiles)


def assess_truth_sample(
    ctx: RunContext, sample: TruthSample, map_source: str = "reporting"
) -> tuple[dict[str, Any], Design | None]:
    """(the ``area_adjusted`` block, the drawn design with its points labelled, to write with the report).

    ``map_source``: which maps the stage read (the design's ``source``).
    """
    from lcms_tasks.accuracy.assess import assess
    from lcms_tasks.accuracy.design import Design
    from lcms_tasks.accuracy.estimate import AccuracyInputError

    try:
        design = sample.builder.finish(
            project=ctx.config.project, season=ctx.season, config=ctx.config_path, source=map_source
        )
    except AccuracyInputError as err:
        return unavailable(f"no sample could be drawn over the season's map: {err}"), None
    meta, points = dict(design.meta), design.points
    names = {int(cid): str(name) for cid, name in sample.builder.legend}
    truth_names = [names.get(int(v), "") for v in points["truth"]]
    points = points.drop(columns=["truth"])
    points["reference"] = truth_names
    labels = {str(p): r for p, r in zip(points["point_id"], truth_names, strict=True) if r}
    from lcms_tasks.stages.reporting import truth_feature

    meta["label_source"] = (
        f"the synthetic generator's truth (download mask_timeless/{truth_feature(ctx)}) at each point"
    )
    try:
        estimate, figures = assess(meta, points, labels)
    except AccuracyInputError as err:
        return unavailable(f"the synthetic truth cannot label the drawn sample: {err}"), None
    notes = list(figures["notes"])
    notes.insert(0, "the sample covers the whole map of this report's tiles, tiles that gave training samples included")
    if sample.tiles_without_truth:
        notes.insert(
            0,
            f"{len(sample.tiles_without_truth)} tile(s) have no truth layer and are not in the sample's frame "
            f"({', '.join(sample.tiles_without_truth[:5])}): the estimates cover the other tiles",
        )
    figures = {**figures, "notes": notes}
    block = _block(
        meta,
        estimate,
        figures,
        label_source=SYNTHETIC_TRUTH,
        design_origin="drawn by the reporting stage over this season's map",
        labels_origin=meta["label_source"],
        points_file=f"{REPORT_FOLDER}/points.csv",
    )
    return block, Design(meta, points)


# -- a labelled design found for the season --------------------------------------------------------------------


@dataclass(frozen=True)
class FoundDesign:
    """Where a season's design and labels are: ``folder``/``labels`` as given (path or URI), and how to read them."""

    folder: str
    labels: str
    configured: bool


def find_design(ctx: RunContext, options: AccuracyOptions) -> tuple[FoundDesign | None, list[str]]:
    """(the season's labelled design if configured or at the conventional place, the places looked at)."""
    season = ctx.season
    if options.design:
        folder = _location(ctx, options.design.replace("{season}", season))
        labels = (
            _location(ctx, options.labels.replace("{season}", season)) if options.labels else _join(folder, LABELS_CSV)
        )
        return FoundDesign(folder, labels, True), [folder]
    folder = ctx.storage.uri(ctx.config.project, season, CONVENTIONAL_FOLDER)
    labels = _location(ctx, options.labels.replace("{season}", season)) if options.labels else _join(folder, LABELS_CSV)
    if ctx.storage.exists(_join(folder, "design.json")):
        return FoundDesign(folder, labels, False), [folder]
    return None, [folder]


def _location(ctx: RunContext, value: str) -> str:
    """A URI as given, a path made absolute against the config folder."""
    if "://" in value:
        return value.rstrip("/")
    return str(ctx.config.resolve_path(value))


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}"


def _fetch(ctx: RunContext, location: str, into: Path) -> Path:
    """A local path of the file at ``location``: a path as it is, a URI copied into ``into`` (``FileNotFoundError``)."""
    if "://" not in location:
        if not Path(location).is_file():
            raise FileNotFoundError(location)
        return Path(location)
    from lcms_tasks.errors import ArtefactMissingError
    from lcms_tasks.storage import Storage

    folder, _, name = location.rpartition("/")
    storage = Storage(folder, s3_endpoint_url=ctx.config.storage.s3_endpoint_url)
    try:
        data = storage.read_bytes(storage.uri(name))
    except ArtefactMissingError as err:
        raise FileNotFoundError(location) from err
    into.mkdir(parents=True, exist_ok=True)
    (into / name).write_bytes(data)
    return into / name


def assess_found_design(ctx: RunContext, found: FoundDesign) -> dict[str, Any]:
    """The ``area_adjusted`` block of a labelled design (or why it cannot be used)."""
    from lcms_tasks.accuracy.assess import assess, read_labels
    from lcms_tasks.accuracy.design import DESIGN_FILE, POINTS_CSV, read_design
    from lcms_tasks.accuracy.estimate import AccuracyInputError

    where = "stages.reporting.accuracy.design" if found.configured else "the season's accuracy folder"
    looked = [found.folder]
    with tempfile.TemporaryDirectory(prefix="lcms-accuracy-") as tmp:
        try:
            design_dir = Path(found.folder)
            if "://" in found.folder:  # copy the two files: read_design reads a local folder
                design_dir = Path(tmp) / "design"
                for name in (DESIGN_FILE, POINTS_CSV):
                    _fetch(ctx, _join(found.folder, name), design_dir)
            meta, points = read_design(design_dir)
        except FileNotFoundError as err:
            return unavailable(f"{where}: {err} does not exist", problem=True, looked_for=looked)
        except AccuracyInputError as err:
            return unavailable(f"{where}: {err}", problem=True, looked_for=looked)
        if (meta.get("project"), str(meta.get("season"))) != (ctx.config.project, ctx.season):
            return unavailable(
                f"{where}: the design at {found.folder} is for project {meta.get('project')!r} season "
                f"{meta.get('season')}, not {ctx.config.project!r} season {ctx.season}",
                problem=True,
                looked_for=looked,
            )
        try:
            labels_path = _fetch(ctx, found.labels, Path(tmp) / "labels")
        except FileNotFoundError:
            reason = f"the sample design at {found.folder} has no labels yet ({found.labels})"
            return unavailable(reason, looked_for=looked)
        try:
            labels, lines = read_labels(labels_path, meta["legend"])
            estimate, figures = assess(meta, points, labels, label_lines=lines, labels_path=found.labels)
        except AccuracyInputError as err:
            return unavailable(f"{where}: {err}", problem=True, looked_for=looked)
    notes = list(figures["notes"])
    report_tiles = sorted(t.id for t in ctx.tiles())
    if sorted(map(str, meta.get("tiles") or [])) != report_tiles:
        notes.insert(
            0,
            f"the design covers {len(meta.get('tiles') or [])} tile(s), this report {len(report_tiles)}: the estimates "
            "are those of the design's tiles",
        )
    return _block(
        meta,
        estimate,
        {**figures, "notes": notes},
        label_source=LABELS,
        design_origin=found.folder,
        labels_origin=found.labels,
        points_file=None,
    )


# -- the block ---------------------------------------------------------------------------------------------------


def unavailable(reason: str, *, problem: bool = False, looked_for: list[str] | None = None) -> dict[str, Any]:
    """The block when there are no usable labels: ``reason`` says why (``problem``: labels exist but are unusable)."""
    (log.warning if problem else log.info)("reporting: no area-adjusted accuracy: %s", reason)
    return {"available": False, "reason": reason, "problem": problem, "looked_for": list(looked_for or [])}


def _block(
    meta: Mapping[str, Any],
    estimate: Any,
    figures: Mapping[str, Any],
    *,
    label_source: str,
    design_origin: str,
    labels_origin: str,
    points_file: str | None,
) -> dict[str, Any]:
    from lcms_tasks.accuracy.assess import estimates_json

    result = estimates_json(meta, estimate, figures, unit="km2")
    pixel_km2 = float(meta["pixel_area_m2"]) / 1e6
    per_stratum = {s["name"]: s for s in figures["strata"]}
    strata = [
        {
            "name": s["name"],
            "kind": s["kind"],
            "pixels": int(s["pixels"]),
            "area_km2": int(s["pixels"]) * pixel_km2,
            "weight": s.get("weight"),
            "expected_ua": s.get("expected_ua"),
            "n": int(per_stratum.get(s["name"], {}).get("n_design", s.get("n", 0))),
            "n_labelled": int(per_stratum.get(s["name"], {}).get("n_labelled", 0)),
            "inclusion_probability": s.get("inclusion_probability"),
        }
        for s in meta["strata"]
    ]
    design = {
        "origin": design_origin,
        "labels": labels_origin,
        "map_source": meta.get("source"),
        "n_tiles": len(meta.get("tiles") or []),
        "change_strata": meta.get("change_strata"),
        "buffer_px": meta.get("buffer_px"),
        "options": meta.get("options"),
        "allocation": meta.get("allocation"),
        "strata": strata,
        "points": points_file,
    }
    for key in ("strata", "n_points", "n_labelled", "n_unlabelled"):
        result.pop(key, None)
    return {
        "available": True,
        "label_source": label_source,
        "n_points": int(figures["n_points"]),
        "n_labelled": int(figures["n_labelled"]),
        "n_unlabelled": int(figures["n_unlabelled"]),
        "design": design,
        **result,
    }


def write_drawn_design(folder: Path, design: Design) -> None:
    """design.json and points.csv (the labels in ``reference``) of a drawn design, into the report's folder.

    ``lcms accuracy assess --design <report>/accuracy --labels <report>/accuracy/points.csv`` gives the
    same estimates (areas in ha).
    """
    import json

    from lcms_tasks.accuracy.design import DESIGN_FILE, POINTS_CSV

    out = folder / REPORT_FOLDER
    out.mkdir(parents=True, exist_ok=True)
    (out / DESIGN_FILE).write_text(json.dumps(design.meta, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (out / POINTS_CSV).write_text(design.points.to_csv(index=False, lineterminator="\n"), encoding="utf-8")
