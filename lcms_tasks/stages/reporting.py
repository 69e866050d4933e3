"""Stage 10, reporting: class and change areas, metrics and data quality of a season (JSON + HTML).

Once per season, reads for every tile of the run (``ctx.tiles()``: the tile
subset, or every project tile) the post-processed map (falling back to the raw
prediction), the change polygons, the features' quality figures and the
reference/sampling metadata, plus the model's test metrics, and writes
``reporting/_run/report``: ``report.json``, ``report.html``, the PNG plots it
references and ``report.pdf``, the page printed to A4 by headless Chromium
(:mod:`lcms_tasks.report.pdf`; option ``pdf``: ``auto`` makes it when a Chromium is
found and says plainly in the report when none was, ``true`` fails without one,
``false`` skips it; ``report.json``'s ``pdf`` block names the PDF's URI and page count).
A report of a subset says so (``run.tile_subset``, a line at the
top of the page) and its areas and totals are those of the subset.

Comparison with the previous season (``previous_season``,
:mod:`lcms_tasks.report.compare`): the class areas per region against the report.json
of the season before in the config's season order; changes beyond ``drift_threshold``
(a fraction of the previous area) are highlighted as possible map drift. Without a
previous season or its report the block says so.

Only the maps are required; any other missing input is listed under
``missing_inputs``. A corrupt input (a file of a complete artefact that cannot be
what it claims, e.g. a truncated array) is listed there too, and under
``corrupt_inputs`` with the file and the problem; the report fails only when no
tile has a readable map.

Validated changes (the change store's decided changes that add_reference used, see
:mod:`lcms_tasks.reference.validated`) are reported once each under
``total.reference.validated``, with the decisions they came from.

Area-adjusted accuracy (``area_adjusted``, :mod:`lcms_tasks.report.accuracy`): overall, user's
and producer's accuracy and the class areas with 95 % confidence intervals, from the reference
labels of a probability sample: a labelled design of the season (``stages.reporting.accuracy``,
or ``<project>/<season>/accuracy/``), else on the synthetic source a design the stage draws over
the map as it reads the tiles, labelled from the generator's truth (written to the report's
``accuracy/`` folder). Without labels the block says so, and the test-split figures are labelled as
a test split, not a probability sample.

Options are reported as configured (``options``), never summed over tiles;
totals over tiles are only of the quantities declared additive
(:data:`lcms_tasks.report.stats.ADDITIVE_FIGURES`). Classes the training stage
dropped (too few samples) or never saw are listed as such (``training``), not
scored in the per-class metrics.

Areas. A class area is pixel count × resolution². Every pixel of a tile is
counted once (class 0 = no data, ids outside the legend listed as 'unknown'),
so class areas add up to the tile's area and tiles add up to the total.
Tiles overhang the AOI: each pixel is assigned to the region containing its
centre (regions made disjoint, the first listed wins) or to 'outside AOI', so
the total equals the regions plus 'outside AOI'; the AOI-clipped figures are
the sum of the regions, within half a pixel along the AOI boundary of the
AOI polygon's area (reported as ``polygon_area_km2``). Change polygons are
clipped to regions geometrically.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from lcms_tasks.errors import ArtefactMissingError, CorruptArtefactError, StageError
from lcms_tasks.parcels.raster import Options as ParcelMarkerOptions
from lcms_tasks.report.accuracy import AccuracyOptions
from lcms_tasks.schema import StrictModel

if TYPE_CHECKING:
    import geopandas as gpd

    from lcms_tasks.accuracy.design import Design
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import Tile
    from lcms_tasks.report.accuracy import FoundDesign, TruthSample
    from lcms_tasks.report.evaluate import ChangeOverlap
    from lcms_tasks.report.stats import ClassInfo

NAME = "reporting"
log = logging.getLogger(__name__)

OUTSIDE_AOI = "outside AOI"
# Keys every completion marker carries; the rest of a marker is the stage's own figures.
_MARKER_KEYS = {"stage", "tile", "project", "season", "run_id", "upstream_run_id", "written_at", "upstream"}
# Per-tile marker figures too long to repeat in every tile's record (one entry per polygon / feature).
_BULKY_FIGURES = {"polygon_keys", "feature_names"}
# A figure a marker does not have (distinct from one it holds as None).
_ABSENT = object()
# Beyond this, change outlines are not drawn on a mosaic (the plot would be unreadable and slow).
MAX_OUTLINES = 5000


class Options(StrictModel):
    """Options of the reporting stage."""

    thumbnail_max_px: int = Field(
        512,
        ge=32,
        le=8192,
        description="Longest side in pixels of each map mosaic (at least one pixel per tile is kept).",
    )
    include_tiles_table: bool = Field(True, description="List every tile's figures in report.json and report.html.")
    evaluate_against_truth: bool = Field(
        True, description="When the download EOPatches carry synthetic truth layers, measure the maps against them."
    )
    accuracy: AccuracyOptions = Field(
        default_factory=AccuracyOptions,
        description="Area-adjusted accuracy and class areas with 95 % confidence intervals: where the reference "
        "labels of a probability sample come from (a labelled design, or the synthetic truth).",
    )
    pdf: bool | Literal["auto"] = Field(
        "auto",
        description="Also print report.html to report.pdf (A4) with headless Chromium. 'auto': when a Chromium is "
        "found (the report says when none was and why); true: a missing or failing Chromium fails the stage; "
        "false: no PDF.",
    )
    chromium: str | None = Field(
        None,
        description="The Chromium binary that prints the PDF (a path or a name on the PATH). Default: $LCMS_CHROMIUM, "
        "else chromium or chromium-browser on the PATH.",
    )
    pdf_timeout_s: float = Field(120.0, gt=0, le=3600, description="Seconds Chromium may take to print the PDF.")
    drift_threshold: float = Field(
        0.2,
        gt=0,
        le=100,
        description="Comparison with the previous season's report: a class whose area in a region changed by more "
        "than this fraction of its previous area (0.2 = 20 %), or that is new, is highlighted as possible map drift.",
    )
    change_tolerance_seasons: int = Field(
        1,
        ge=0,
        le=10,
        description="Change accuracy against reference changes: a change detected up to this many seasons after "
        "the season it happened in counts as late, not as false (and the earlier season's change as found late, "
        "not missed). 0: only same-season detections count.",
    )
    drift_min_area_km2: float = Field(
        0.0,
        ge=0,
        description="Class-area changes smaller than this (km²) are never highlighted as drift, whatever their "
        "fraction (small classes change by large fractions).",
    )
    parcel_markers: ParcelMarkerOptions | None = Field(
        None,
        description="Compute the season's parcel markers (crop type per declared parcel, disagreements) before the "
        "report, which then shows the parcel agreement: set it on the crop type product "
        "(products.crop_type.stages.reporting.parcel_markers: {declarations: {type: file, path: ..., class_column: "
        "...}}). None: the report shows the markers `lcms parcels markers` made for the season, if any.",
    )


@dataclass
class _Zones:
    """Accumulators for one zone (a region, or 'outside AOI'), or for the total."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    conf: np.ndarray = field(default_factory=lambda: np.zeros(256, np.float64))
    valid_hist: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    change_tables: list[list[dict[str, Any]]] = field(default_factory=list)
    n_polygons: int = 0


@dataclass
class _Acc:
    """Everything summed over tiles."""

    zones: list[_Zones]
    tiles: list[dict[str, Any]] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)
    corrupt: list[dict[str, str]] = field(default_factory=list)
    run_ids: dict[str, set[str]] = field(default_factory=dict)
    map_sources: Counter[str] = field(default_factory=Counter)
    # Season of the model behind each tile's prediction (prediction markers' ``model_season``).
    model_seasons: Counter[str] = field(default_factory=Counter)
    quality_metas: list[dict[str, Any]] = field(default_factory=list)
    # Per tile: the readiness gate's verdict (features markers' ``readiness``) and the tile's lon/lat box.
    readiness: list[dict[str, Any]] = field(default_factory=list)
    ref_metas: list[dict[str, Any]] = field(default_factory=list)
    # (tile id, the ``validated`` block of its add_reference marker): the operators' decisions it used.
    validated: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    sampling_metas: list[dict[str, Any]] = field(default_factory=list)
    # (tile id, marker figures) of the stages whose markers echo options, to compare with the config.
    option_echoes: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    n_change_tiles: int = 0
    truth_tiles: int = 0
    eval_confusion: np.ndarray | None = None
    eval_tiles: int = 0
    eval_unknown_training: int = 0
    overlap: ChangeOverlap | None = None
    # Change accuracy with a temporal tolerance (lcms_tasks.accuracy.change), summed over tiles.
    change_timing: list[Any] | None = None
    thumbs: dict[str, np.ndarray] = field(default_factory=dict)
    outlines: dict[int, list[Any]] = field(default_factory=dict)
    # The design the stage draws over the map when the synthetic truth labels it (None: labels from elsewhere).
    truth_sample: TruthSample | None = None
    accuracy_design: Design | None = None

    def note_missing(self, stage: str, tile_id: str) -> None:
        self.missing.setdefault(stage, []).append(tile_id)

    def note_corrupt(
        self, stage: str, tile_id: str, uri: str, err: CorruptArtefactError | str, *, missing: bool = True
    ) -> None:
        """A corrupt input of ``tile_id`` (artefact ``uri``), with its file and problem.

        ``missing``: the stage's output is left out for the tile (False: only a secondary layer is, e.g. the
        confidence of a map that is itself used).
        """
        file, problem = _file_and_problem(err, uri)
        if missing:
            self.note_missing(stage, tile_id)
        self.corrupt.append({"stage": stage, "tile": tile_id, "file": file, "problem": problem})
        log.warning("reporting: tile %s: corrupt %s input left out: %s: %s", tile_id, stage, file, problem)

    def note_run(self, stage: str, meta: Mapping[str, Any]) -> None:
        if meta.get("run_id"):
            self.run_ids.setdefault(stage, set()).add(str(meta["run_id"]))


def _file_and_problem(err: CorruptArtefactError | str, uri: str) -> tuple[str, str]:
    """(file, problem) of a corrupt-input error about artefact ``uri``: the file's URI and what is wrong."""
    from lcms_tasks.eopatch import CorruptArrayError

    if isinstance(err, CorruptArrayError):
        return f"{err.where.rstrip('/')}/{err.file}", err.problem
    text = str(err)
    head, sep, rest = text.partition(": ")
    # Messages name the file first ("<uri>/changes.gpkg: unreadable: ..."): split it off the problem.
    if sep and head.startswith(uri):
        return head, rest
    return uri, text


def _figures(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A marker's stage-specific figures (the common bookkeeping keys and per-polygon lists removed)."""
    return {k: v for k, v in meta.items() if k not in _MARKER_KEYS and k not in _BULKY_FIGURES}


def _labelled_pixels(figures: Mapping[str, Any]) -> int:
    """Labelled reference pixels of a tile's add_reference figures (older markers: the per-class sum)."""
    if isinstance(figures.get("labelled_pixels"), int):
        return int(figures["labelled_pixels"])
    per_class = figures.get("class_pixels")
    if isinstance(per_class, Mapping):
        return sum(int(v) for v in per_class.values() if isinstance(v, int | float))
    return 0


def _jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays as Python values and non-finite floats as None (valid JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# -- inputs -----------------------------------------------------------------------------------------


def _load_map(
    tile: Tile, ctx: RunContext, acc: _Acc
) -> tuple[str, np.ndarray, np.ndarray | None, dict[str, Any]] | None:
    """(source stage, CLASS (H, W), CONFIDENCE (H, W) or None, meta) of the tile's map, or None if absent.

    A corrupt post-processed map is noted in ``acc`` and the raw prediction used instead.
    """
    from lcms_tasks import eopatch

    for stage in ("postprocessing", "prediction"):
        uri = ctx.tile_uri(stage, tile.id)
        if not ctx.storage.is_complete(uri):
            continue
        try:
            patch, meta = eopatch.load(ctx.storage, uri, features=["mask_timeless/CLASS"])
        except CorruptArtefactError as err:
            acc.note_corrupt(stage, tile.id, uri, err)
            continue
        classes = np.asarray(patch.mask_timeless["CLASS"])
        if classes.ndim == 3:
            classes = classes[..., 0]
        if classes.shape != tile.shape:
            acc.note_corrupt(
                stage, tile.id, uri, f"{uri}/mask_timeless/CLASS: shape {classes.shape}, the tile is {tile.shape}"
            )
            continue
        confidence = None
        try:
            cpatch, _ = eopatch.load(ctx.storage, uri, features=["data_timeless/CONFIDENCE"])
            confidence = np.asarray(cpatch.data_timeless["CONFIDENCE"], dtype=np.float32)[..., 0]
        except ArtefactMissingError:
            log.warning("%s: no data_timeless/CONFIDENCE; mean confidence not reported for tile %s", uri, tile.id)
        except CorruptArtefactError as err:
            # The class map itself is sound: it is used, only its confidence is left out.
            acc.note_corrupt(stage, tile.id, uri, err, missing=False)
        return stage, classes, confidence, meta
    return None


def _read_changes(
    tile: Tile, ctx: RunContext, season: str | None = None
) -> tuple[gpd.GeoDataFrame, dict[str, Any]] | None:
    """The tile's change polygons (tile CRS) of ``season`` (default: the run's) and the stage's metadata, or
    None if absent.

    ``CorruptArtefactError`` if the artefact is complete but its changes.gpkg is absent or unreadable.
    """
    from lcms_tasks.changes import read_changes

    if not ctx.is_primary_product:
        return None  # change detection maps the primary product's transitions only
    uri = ctx.tile_uri("change_detection", tile.id, season)
    if not ctx.storage.is_complete(uri):
        return None
    meta = ctx.storage.read_marker(uri)
    with ctx.storage.reading_dir(uri) as folder:
        path = Path(folder) / "changes.gpkg"
        if not path.is_file():
            raise CorruptArtefactError(f"{uri}/changes.gpkg: marked complete but the file is absent")
        try:
            # The change stage's own reader: typed columns even for an empty layer.
            frame = read_changes(path)
        except ValueError as err:  # GDAL cannot open it (fiona's DriverError), or not the change table schema
            raise CorruptArtefactError(f"{uri}/changes.gpkg: unreadable: {err}") from err
    if len(frame) and frame.crs is not None and frame.crs != tile.crs:
        frame = frame.to_crs(tile.crs)
    return frame, meta


def _product_block(ctx: RunContext, acc: _Acc) -> dict[str, Any]:
    """Which product the report is of, where it is mapped, and which season's model made its maps."""
    cfg = ctx.config
    product = cfg.product(ctx.product_name)
    seasons = sorted(acc.model_seasons)
    other = [s for s in seasons if s != ctx.season]
    warning = None
    if other:
        warning = (
            f"the maps of season {ctx.season} were predicted with the model trained on season "
            f"{', '.join(other)} (stages.prediction.model_season): a model trained on one season does not carry "
            "to another (crop calendars, sowing dates and weather differ), so expect lower accuracy than that "
            f"season's; train a model for {ctx.season} once its reference exists"
        )
        log.warning("reporting %s (%s): %s", ctx.season, ctx.product_name, warning)
    return {
        "product": ctx.product_name,
        "primary_product": cfg.primary_product,
        "products": (ctx._root_config or cfg).product_names(),
        "mask": product.mask.model_dump() if product.mask is not None else None,
        "model_seasons": seasons,
        "model_warning": warning,
    }


def truth_feature(ctx: RunContext) -> str:
    """The download's synthetic truth layer of the product's legend."""
    return "TRUTH_CROP_TYPE" if ctx.config.classification.legend == "crop_type" else "TRUTH_LAND_COVER"


def _load_truth(
    tile: Tile, ctx: RunContext, acc: _Acc
) -> tuple[np.ndarray, gpd.GeoDataFrame | None, gpd.GeoDataFrame | None] | None:
    """The truth of the product's legend (TRUTH_LAND_COVER or TRUTH_CROP_TYPE, (H, W)), this season's
    TRUTH_CHANGES and every season's (column ``season_after``) of the tile's download EOPatch, or None if it
    has no truth.

    Corrupt truth layers are noted in ``acc``; the tile is then left out of the evaluation.
    """
    from lcms_tasks import eopatch

    uri = ctx.tile_uri("download", tile.id)
    if not ctx.storage.is_complete(uri):
        return None
    name = truth_feature(ctx)
    try:
        patch, _ = eopatch.load(ctx.storage, uri, features=[f"mask_timeless/{name}"])
    except ArtefactMissingError:
        return None  # a real (non-synthetic) source: nothing to evaluate against
    except CorruptArtefactError as err:
        acc.note_corrupt("download", tile.id, uri, err)
        return None
    truth = np.asarray(patch.mask_timeless[name])[..., 0]
    if truth.shape != tile.shape:
        acc.note_corrupt(
            "download",
            tile.id,
            uri,
            f"{uri}/mask_timeless/{name}: shape {truth.shape}, the tile is {tile.shape}",
        )
        return None
    changes = every_season = None
    if not ctx.is_primary_product:
        return truth, None, None
    try:
        cpatch, _ = eopatch.load(ctx.storage, uri, features=["vector_timeless/TRUTH_CHANGES"])
        changes = cpatch.vector_timeless["TRUTH_CHANGES"]
        if "season_after" in changes.columns:
            every_season = changes
            changes = changes[changes["season_after"].astype(str) == ctx.season]
    except ArtefactMissingError:
        log.warning("%s has TRUTH_LAND_COVER but no TRUTH_CHANGES; change evaluation skips tile %s", uri, tile.id)
    except CorruptArtefactError as err:
        acc.note_corrupt("download", tile.id, uri, err, missing=False)  # the map is still evaluated
    return truth, changes, every_season


def _training_metadata(ctx: RunContext) -> dict[str, Any] | None:
    """The model's metadata (marker meta, or metadata.json when the marker lacks metrics), or None."""
    uri = ctx.run_uri("training", "model")
    if not ctx.storage.is_complete(uri):
        return None
    meta = ctx.storage.read_marker(uri)
    if "metrics" not in meta:
        with ctx.storage.reading_dir(uri) as folder:
            path = Path(folder) / "metadata.json"
            if path.is_file():
                try:
                    meta = {**meta, **json.loads(path.read_text(encoding="utf-8"))}
                except json.JSONDecodeError as err:
                    raise StageError(f"{uri}/metadata.json is not valid JSON: {err}") from err
    return meta


def _regions(cfg: Any) -> tuple[list[str], gpd.GeoDataFrame]:
    """Region names and their disjoint geometries (AOI CRS); the whole AOI is one region without a column."""
    import geopandas as gpd
    import shapely

    from lcms_tasks.grid import load_aoi
    from lcms_tasks.report.stats import disjoint

    aoi = load_aoi(cfg)
    column = cfg.aoi.region_column
    if column:
        keys = aoi[column].astype(str)
        names = list(dict.fromkeys(keys))
        geoms = [shapely.union_all(list(aoi.geometry[keys == n])) for n in names]
    else:
        names, geoms = ["AOI"], [shapely.union_all(list(aoi.geometry))]
    return names, gpd.GeoDataFrame({"name": names}, geometry=disjoint(geoms), crs=aoi.crs)


# -- per tile ---------------------------------------------------------------------------------------


def _tile(
    tile: Tile,
    ctx: RunContext,
    acc: _Acc,
    region_geoms: Sequence[Any],
    zone_names: Sequence[str],
    legend: Sequence[ClassInfo],
    thumb_px: int,
) -> None:
    """Load one tile's inputs and add its figures to ``acc``."""
    from lcms_tasks import eopatch
    from lcms_tasks.report import evaluate, stats

    options: Options = ctx.config.stages.reporting
    names = {c.id: c.name for c in legend}
    pixel_area = tile.resolution**2
    n_zones = len(region_geoms) + 1
    zones = stats.zone_raster(region_geoms, tile.transform(), tile.shape)
    record: dict[str, Any] = {
        "id": tile.id,
        "epsg": tile.epsg,
        "bounds": list(tile.bounds),
        "area_km2": tile.shape[0] * tile.shape[1] * pixel_area / 1e6,
    }

    # Map: a tile without one counts as no data, so areas still add up; it is listed as missing.
    loaded = _load_map(tile, ctx, acc)
    if loaded is None:
        acc.note_missing("postprocessing", tile.id)
        source, classes, confidence = "missing", np.zeros(tile.shape, np.uint8), None
    else:
        source, classes, confidence, map_meta = loaded
        acc.note_run(source, map_meta)
        if source != "postprocessing":
            acc.note_missing("postprocessing", tile.id)
    acc.map_sources[source] += 1
    record["map_source"] = source
    puri = ctx.tile_uri("prediction", tile.id)
    if ctx.storage.is_complete(puri):
        model_season = ctx.storage.read_marker(puri).get("model_season")
        if model_season:
            acc.model_seasons[str(model_season)] += 1
    counts, conf = stats.zone_class_counts(classes, zones, n_zones, confidence)
    for z in range(n_zones):
        acc.zones[z].counts += counts[z]
        acc.zones[z].conf += conf[z]
    tile_counts = counts.sum(axis=0)
    record["class_areas"] = stats.class_area_rows(tile_counts, legend, pixel_area, conf.sum(axis=0))
    record["no_data_share"] = float(tile_counts[0]) / max(int(tile_counts.sum()), 1)
    mapped = int(tile_counts[1:].sum())
    # Confidence of no-data pixels means nothing; the mean is over mapped pixels only.
    record["mean_confidence"] = float(conf[:, 1:].sum()) / mapped if confidence is not None and mapped else None
    record["zone_pixels"] = {zone_names[z]: int(counts[z].sum()) for z in range(n_zones)}

    # Data quality.
    quality: dict[str, Any] = {"available": False}
    furi = ctx.tile_uri("features", tile.id)
    valid: np.ndarray | None = None
    fmeta: dict[str, Any] = {}
    if ctx.storage.is_complete(furi):
        try:
            fpatch, fmeta = eopatch.load(ctx.storage, furi, features=["mask_timeless/VALID_COUNT"])
            valid = np.asarray(fpatch.mask_timeless["VALID_COUNT"])[..., 0]
            if valid.shape != tile.shape:
                raise CorruptArtefactError(
                    f"{furi}/mask_timeless/VALID_COUNT: shape {valid.shape}, the tile is {tile.shape}"
                )
        except CorruptArtefactError as err:
            acc.note_corrupt("features", tile.id, furi, err)
            valid = None
    else:
        acc.note_missing("features", tile.id)
    if valid is not None:
        acc.note_run("features", fmeta)
        q = dict(fmeta.get("quality") or {})
        acc.quality_metas.append(q)
        if fmeta.get("readiness"):
            record["readiness"] = dict(fmeta["readiness"])
            acc.readiness.append({"tile": tile.id, "lonlat_bounds": _lonlat_bounds(tile), **fmeta["readiness"]})
        for z in range(n_zones):
            acc.zones[z].valid_hist = stats.add_histograms(acc.zones[z].valid_hist, stats.histogram(valid[zones == z]))
        hist = stats.histogram(valid)
        quality = {
            "available": True,
            **q,
            "valid_observations": stats.histogram_stats(hist),
            "no_data_pixels": int(hist[0]) if len(hist) else 0,
            "no_data_share": float(hist[0]) / valid.size if len(hist) and valid.size else 0.0,
        }
    else:
        quality["valid_observations"] = stats.histogram_stats(np.zeros(1, np.int64))
    record["quality"] = quality

    # Reference and sampling.
    reference: dict[str, Any] = {
        "add_reference": None,
        "sampling": None,
        "n_samples": None,
        "labelled_pixels": None,
        "has_reference": False,
    }
    ruri = ctx.tile_uri("add_reference", tile.id)
    if ctx.storage.is_complete(ruri):
        rmeta = ctx.storage.read_marker(ruri)
        acc.note_run("add_reference", rmeta)
        rfig = _figures(rmeta)
        block = rfig.get("validated")
        if isinstance(block, Mapping):
            acc.validated.append((tile.id, dict(block)))
            # The tile's record keeps the counts; the per-polygon lineage goes to the run's totals.
            rfig["validated"] = {k: block[k] for k in _VALIDATED_TILE_KEYS if k in block}
        reference["add_reference"] = rfig
        reference["labelled_pixels"] = _labelled_pixels(rfig)
        # add_reference runs on every tile; a tile *has* reference only where it labelled pixels.
        reference["has_reference"] = reference["labelled_pixels"] > 0
        acc.ref_metas.append(rfig)
        acc.option_echoes.setdefault("add_reference", []).append((tile.id, rfig))
    else:
        acc.note_missing("add_reference", tile.id)
    suri = ctx.tile_uri("sampling", tile.id)
    smeta: dict[str, Any] | None = None
    if ctx.storage.is_complete(suri):
        smeta = ctx.storage.read_marker(suri)
        acc.note_run("sampling", smeta)
        sfig = _figures(smeta)  # feature names dropped: long, and the model's metadata has them
        reference["sampling"] = sfig
        reference["n_samples"] = int(smeta.get("n_samples") or 0)
        acc.sampling_metas.append(sfig)
        acc.option_echoes.setdefault("sampling", []).append((tile.id, sfig))
    else:
        acc.note_missing("sampling", tile.id)
    reference["used_for_training"] = evaluate.used_for_training(smeta)
    record["reference"] = reference

    # Changes, clipped to regions geometrically.
    changes_info: dict[str, Any] = {"available": False, "n_polygons": 0, "area_km2": 0.0, "transitions": []}
    curi = ctx.tile_uri("change_detection", tile.id)
    try:
        changes = _read_changes(tile, ctx)
    except CorruptArtefactError as err:
        acc.note_corrupt("change_detection", tile.id, curi, err)
        changes = None
    predicted_geoms: list[Any] = []
    if changes is not None:
        frame, cmeta = changes
        acc.note_run("change_detection", cmeta)
        acc.n_change_tiles += 1
        predicted_geoms = [g for g in frame.geometry if g is not None and not g.is_empty]
        from_ids = frame["from_class"].astype(int).to_numpy()
        to_ids = frame["to_class"].astype(int).to_numpy()
        areas = frame.geometry.area.fillna(0.0).to_numpy()
        rows = stats.transition_rows(from_ids, to_ids, areas, names)
        changes_info = {
            "available": True,
            "n_polygons": len(frame),
            "area_km2": float(areas.sum()) / 1e6,
            "transitions": rows,
            "season_before": cmeta.get("season_before", cmeta.get("before")),
        }
        pieces = stats.zone_change_pieces(list(frame.geometry), region_geoms)
        for z in range(n_zones):
            sel = [(i, a) for i, ps in enumerate(pieces) for zz, a in ps if zz == z]
            if sel:
                idx = [i for i, _ in sel]
                acc.zones[z].change_tables.append(
                    stats.transition_rows(from_ids[idx], to_ids[idx], [a for _, a in sel], names)
                )
                acc.zones[z].n_polygons += len(sel)
        outlines = acc.outlines.setdefault(tile.epsg, [])
        outlines.extend(predicted_geoms[: max(MAX_OUTLINES - len(outlines), 0)])
    elif ctx.is_primary_product:
        acc.note_missing("change_detection", tile.id)  # listed once even if also noted as corrupt
    record["changes"] = changes_info

    # Truth: the evaluation of the whole map, and the labels of the drawn sample's points.
    if options.evaluate_against_truth or acc.truth_sample is not None:
        truth = _load_truth(tile, ctx, acc)
        if truth is not None and acc.truth_sample is not None:
            frame_changes = changes[0] if changes is not None else None
            acc.truth_sample.add_tile(tile, classes, zones > 0, frame_changes, truth[0])
        elif acc.truth_sample is not None:
            acc.truth_sample.tiles_without_truth.append(tile.id)
        if truth is not None and options.evaluate_against_truth:
            acc.truth_tiles += 1
            truth_lc, truth_changes, every_season = truth
            used = reference["used_for_training"]
            record["evaluated"] = bool(loaded is not None and not used)
            if loaded is not None and not used:
                if used is None:
                    acc.eval_unknown_training += 1
                ids = [c.id for c in legend]
                cm = evaluate.map_confusion(truth_lc, classes, ids)
                acc.eval_confusion = cm if acc.eval_confusion is None else acc.eval_confusion + cm
                acc.eval_tiles += 1
            if changes is not None and truth_changes is not None:
                ov = evaluate.change_overlap(predicted_geoms, list(truth_changes.geometry))
                acc.overlap = ov if acc.overlap is None else acc.overlap + ov
            if changes is not None and every_season is not None:
                _add_change_timing(tile, ctx, acc, predicted_geoms, every_season)

    # Thumbnail: nearest-neighbour sample of thumb_px x thumb_px pixel centres.
    pick = ((np.arange(thumb_px) + 0.5) * tile.shape[0] / thumb_px).astype(np.int64)
    acc.thumbs[tile.id] = classes[np.ix_(pick, pick)].astype(np.uint8)
    acc.tiles.append(record)


def _add_change_timing(
    tile: Tile, ctx: RunContext, acc: _Acc, detected_now: list[Any], truth_changes: gpd.GeoDataFrame
) -> None:
    """Add the tile's change-timing tallies (on time / late / false, :mod:`lcms_tasks.accuracy.change`): this
    season's detections and those of the ``change_tolerance_seasons`` seasons before it, against the truth
    changes of every season. An earlier season without change polygons counts as no detection."""
    from lcms_tasks.accuracy import change

    options: Options = ctx.config.stages.reporting
    seasons = list(ctx.config.seasons)
    i = seasons.index(ctx.season)
    tolerance = options.change_tolerance_seasons
    detected: dict[str, list[Any]] = {ctx.season: detected_now}
    for earlier in seasons[max(0, i - tolerance) : i]:
        try:
            found = _read_changes(tile, ctx, earlier)
        except CorruptArtefactError as err:
            acc.note_corrupt("change_detection", tile.id, ctx.tile_uri("change_detection", tile.id, earlier), err)
            found = None
        if found is not None:
            detected[earlier] = [g for g in found[0].geometry if g is not None and not g.is_empty]
    by_season = truth_changes["season_after"].astype(str)
    reference = {s: list(truth_changes.geometry[by_season == s]) for s in seasons[max(0, i - tolerance) : i + 1]}
    tallies = change.tile_tallies(change.TileChanges(detected, reference), seasons, ctx.season, tolerance)
    if acc.change_timing is None:
        acc.change_timing = list(tallies)
    else:
        acc.change_timing = [
            a if b is None else (b if a is None else a + b) for a, b in zip(acc.change_timing, tallies, strict=True)
        ]


# -- assembling -------------------------------------------------------------------------------------


def _zone_entry(
    name: str, z: _Zones, legend: Sequence[ClassInfo], pixel_area: float, n_change_tiles: int
) -> dict[str, Any]:
    from lcms_tasks.report import stats

    names = {c.id: c.name for c in legend}
    total = int(z.counts.sum())
    transitions = stats.merge_transition_rows(z.change_tables, names)
    hist = z.valid_hist
    n_valid_px = int(hist.sum())
    return {
        "name": name,
        "pixels": total,
        "area_km2": total * pixel_area / 1e6,
        "class_areas": stats.class_area_rows(z.counts, legend, pixel_area, z.conf),
        "no_data_share": float(z.counts[0]) / total if total else 0.0,
        "changes": {
            "n_polygons": z.n_polygons,
            "area_km2": sum(r["area_km2"] for r in transitions),
            "transitions": transitions,
            "n_tiles": n_change_tiles,
        },
        "quality": {
            "valid_observations": stats.histogram_stats(hist),
            "no_data_pixels": int(hist[0]) if n_valid_px else 0,
            "no_data_share": float(hist[0]) / n_valid_px if n_valid_px else None,
        },
    }


def _reference_totals(acc: _Acc) -> dict[str, Any]:
    """Reference and sampling figures of the run's tiles: tile counts and sums of additive figures only."""
    from lcms_tasks.report import stats

    reasons: Counter[str] = Counter()
    sampled = 0
    for s in acc.sampling_metas:
        if int(s.get("n_samples") or 0) > 0:
            sampled += 1
        elif s.get("skipped_reason"):
            reasons[str(s["skipped_reason"])] += 1
        else:
            reasons["no samples"] += 1
    sampling_totals = stats.sum_figures(acc.sampling_metas, stats.ADDITIVE_FIGURES["sampling"])
    with_reference = sum(1 for r in acc.ref_metas if _labelled_pixels(r) > 0)
    return {
        # Tiles with labelled reference pixels; add_reference also runs (and labels nothing) elsewhere.
        "n_tiles_with_reference": with_reference,
        "n_tiles_with_add_reference": len(acc.ref_metas),
        "n_tiles_without_labelled_pixels": len(acc.ref_metas) - with_reference,
        "n_tiles_with_sampling": len(acc.sampling_metas),
        "n_tiles_sampled": sampled,
        "skipped_reasons": dict(reasons),
        "n_samples": int(sampling_totals.get("n_samples", 0)),
        "sampling_totals": sampling_totals,
        "add_reference_totals": stats.sum_figures(acc.ref_metas, stats.ADDITIVE_FIGURES["add_reference"]),
        "summed_figures": {k: list(stats.ADDITIVE_FIGURES[k]) for k in ("add_reference", "sampling")},
        "validated": _validated_totals(acc),
    }


#: Keys of an add_reference marker's ``validated`` block kept in the tile's record (the lineage is in the totals).
_VALIDATED_TILE_KEYS = (
    "polygons_used",
    "polygons_rasterised",
    "by_status",
    "carried_forward",
    "decision_ids",
    "skipped",
)


def _validated_totals(acc: _Acc) -> dict[str, Any] | None:
    """The change store's decided changes the run's add_reference used: each change and decision once.

    A change crossing tiles is used by each of them; it counts once here (the per-tile figures under
    ``sources`` count it once per tile). None when no tile's marker has a ``validated`` block (no
    change_store source, or markers older than it).
    """
    if not acc.validated:
        return None
    used: dict[str, dict[str, Any]] = {}
    skipped: Counter[str] = Counter()
    for tile_id, block in acc.validated:
        if block.get("skipped"):
            skipped[str(block["skipped"])] += 1
        for poly in block.get("polygons") or []:
            if not isinstance(poly, Mapping) or "change_id" not in poly:
                continue
            entry = used.setdefault(
                str(poly["change_id"]),
                {k: poly.get(k) for k in ("change_id", "decision_id", "status", "class", "season_after")}
                | {"decided_by": poly.get("decided_by"), "decided_at": poly.get("decided_at")}
                | {"carried_forward": bool(poly.get("carried_forward")), "trimmed": False, "rasterised": False},
            )
            entry["trimmed"] = entry["trimmed"] or bool(poly.get("trimmed"))
            entry["rasterised"] = entry["rasterised"] or bool(poly.get("rasterised"))
            entry.setdefault("tiles", []).append(tile_id)
    polygons = sorted(used.values(), key=lambda e: (e["decision_id"] is None, e["decision_id"] or 0, e["change_id"]))
    by_status = Counter(str(e["status"]) for e in polygons)
    return {
        "n_tiles_read": len(acc.validated) - sum(skipped.values()),
        "n_tiles_skipped": sum(skipped.values()),
        "skipped_reasons": dict(skipped),
        "polygons_used": len(polygons),
        "polygons_rasterised": sum(1 for e in polygons if e["rasterised"]),
        "by_status": {s: by_status.get(s, 0) for s in ("confirmed", "corrected", "rejected")},
        "carried_forward": sum(1 for e in polygons if e["carried_forward"]),
        "decision_ids": sorted({int(e["decision_id"]) for e in polygons if e["decision_id"] is not None}),
        "without_decision": sorted(e["change_id"] for e in polygons if e["decision_id"] is None),
        "polygons": polygons,
    }


def _configured_options(ctx: RunContext) -> dict[str, Any]:
    """The add_reference and sampling options as the config sets them (one value each, never per tile)."""
    stages = ctx.config.stages
    return {
        "add_reference": stages.add_reference.model_dump(mode="json"),
        "sampling": stages.sampling.model_dump(mode="json"),
    }


def _option_differences(acc: _Acc, options: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Options whose value in some tiles' markers differs from the config (those tiles ran with another).

    One entry per (stage, option): the configured value and {value in the markers: tile ids}.
    """
    from lcms_tasks.report import stats

    out: list[dict[str, Any]] = []
    for stage, paths in stats.MARKER_OPTIONS.items():
        for path, option in paths.items():
            configured = options.get(stage, {}).get(option)
            others: dict[str, list[str]] = {}
            for tile_id, figures in acc.option_echoes.get(stage, []):
                value = stats.value_at(figures, path, _ABSENT)
                if value is not _ABSENT and value != configured:  # older markers may not echo an option
                    others.setdefault(json.dumps(value), []).append(tile_id)
            if others:
                out.append(
                    {
                        "stage": stage,
                        "option": option,
                        "configured": configured,
                        "in_markers": [
                            {"value": json.loads(v), "n_tiles": len(t), "tiles": sorted(t)}
                            for v, t in sorted(others.items())
                        ],
                    }
                )
    return out


def _training_section(
    metadata: Mapping[str, Any], legend: Sequence[ClassInfo], metrics: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Which classes the model learned, which it dropped (too few samples) and which it never saw.

    Read from the training stage's metadata (``data.dropped_classes``: id, name, train_samples;
    ``data.absent_classes``: ids); test sample counts from its per-split class counts.
    """
    names = {c.id: c.name for c in legend}
    raw_data, raw_hyper = metadata.get("data"), metadata.get("hyperparameters")
    data: Mapping[str, Any] = raw_data if isinstance(raw_data, Mapping) else {}
    hyper: Mapping[str, Any] = raw_hyper if isinstance(raw_hyper, Mapping) else {}
    test_counts = {str(k): int(v) for k, v in ((data.get("class_counts") or {}).get("test") or {}).items()}
    if not test_counts and metrics:
        test_counts = {str(k): int(v.get("support") or 0) for k, v in (metrics.get("per_class") or {}).items()}

    def name_of(cid: int, fallback: Any = None) -> str:
        return names.get(cid) or (str(fallback) if fallback else f"class {cid}")

    dropped = [
        {
            "id": int(r["id"]),
            "name": name_of(int(r["id"]), r.get("name")),
            "train_samples": r.get("train_samples", r.get("count")),
            "test_samples": test_counts.get(str(int(r["id"])), 0),
        }
        for r in (data.get("dropped_classes") or metadata.get("dropped_classes") or [])
        if isinstance(r, Mapping) and "id" in r
    ]
    absent = [
        {"id": int(cid), "name": name_of(int(cid)), "test_samples": test_counts.get(str(int(cid)), 0)}
        for cid in (data.get("absent_classes") or metadata.get("absent_classes") or [])
    ]
    learned = (metadata.get("label_encoding") or {}).get("class_ids")
    return {
        "min_samples_per_class": hyper.get("min_samples_per_class"),
        "drop_rare_classes": hyper.get("drop_rare_classes"),
        "classes_learned": None
        if learned is None
        else [{"id": int(cid), "name": name_of(int(cid))} for cid in learned],
        "dropped_classes": dropped,
        "absent_classes": absent,
    }


def _lonlat_bounds(tile: Tile) -> list[float]:
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs(tile.epsg, 4326, always_xy=True)
    return [round(float(v), 6) for v in to_lonlat.transform_bounds(*tile.bounds)]


def _readiness(ctx: RunContext, acc: _Acc) -> dict[str, Any]:
    """The data-readiness gate over the run's tiles: thresholds, counts, the tiles not ready and why."""
    gate = ctx.config.stages.features.readiness
    tiles = sorted(acc.readiness, key=lambda r: r["tile"])
    not_ready = [r for r in tiles if not r.get("ready", True)]
    return {
        "thresholds": gate.model_dump(),
        "n_tiles": len(tiles),
        "n_ready": len(tiles) - len(not_ready),
        "n_not_ready": len(not_ready),
        "n_empty": sum(1 for r in tiles if r.get("empty")),
        "not_ready": [
            {
                "tile": r["tile"],
                "reason": r.get("reason"),
                "empty": r.get("empty"),
                "share_below": r.get("share_below"),
                "mean_valid_observations": r.get("mean_valid_observations"),
                # What the gate did with it (the options of the run that computed the features).
                "mapped": r.get("not_ready") == "flag",
            }
            for r in not_ready
        ],
        "tiles": tiles,
    }


def _quality_totals(acc: _Acc, zone_all: _Zones) -> dict[str, Any]:
    from lcms_tasks.report import stats

    summed = stats.sum_figures(acc.quality_metas, stats.ADDITIVE_FIGURES["features"])
    hist = zone_all.valid_hist
    n = int(hist.sum())
    return {
        "n_tiles": len(acc.quality_metas),
        "dates_total": int(summed.get("dates_total", 0)),
        "dates_dropped": int(summed.get("dates_dropped", 0)),
        "valid_observations": stats.histogram_stats(hist),
        "no_data_pixels": int(hist[0]) if n else 0,
        "no_data_share": float(hist[0]) / n if n else None,
    }


def _aoi_area_km2(region_frame: gpd.GeoDataFrame, tiles: Sequence[Tile]) -> list[float]:
    """Each region's polygon area (km²) within ``tiles`` (the report's: a subset's AOI is its share), measured
    in each tile group's CRS."""
    import shapely

    areas = np.zeros(len(region_frame))
    for epsg in sorted({t.epsg for t in tiles}):
        boxes = shapely.union_all([shapely.box(*t.bounds) for t in tiles if t.epsg == epsg])
        projected = region_frame.to_crs(epsg)
        areas += np.array([float(shapely.intersection(g, boxes).area) for g in projected.geometry])
    return [float(a) / 1e6 for a in areas]


def build_report(ctx: RunContext) -> tuple[dict[str, Any], _Acc, gpd.GeoDataFrame, list[ClassInfo]]:
    """Read the inputs of the run's tiles (``ctx.tiles()``) and compute the report's figures (no writing)."""
    from lcms_tasks.report import accuracy, evaluate, stats

    cfg = ctx.config
    options: Options = cfg.stages.reporting
    legend = [stats.ClassInfo(c.id, c.name, c.color) for c in cfg.legend()]
    tiles = ctx.tiles()
    coverage = ctx.coverage()
    if ctx.is_subset:
        log.info(
            "reporting: a subset of %d of the project's %d tiles", coverage["n_tiles"], coverage["n_project_tiles"]
        )
    region_names, region_frame = _regions(cfg)
    n_zones = len(region_names) + 1
    acc = _Acc(zones=[_Zones() for _ in range(n_zones)])
    found, looked_for = accuracy.find_design(ctx, options.accuracy)
    if found is None and options.accuracy.synthetic_truth:
        acc.truth_sample = accuracy.TruthSample.create(ctx, options.accuracy)
    pixel_area = cfg.grid.resolution_m**2
    grid_cells = max(1, max(_grid_span(tiles, e) for e in {t.epsg for t in tiles}) if tiles else 1)
    thumb_px = int(min(cfg.grid.tile_size_px, max(1, options.thumbnail_max_px // grid_cells)))
    by_epsg: dict[int, list[Any]] = {}
    for tile in tiles:
        if tile.epsg not in by_epsg:
            by_epsg[tile.epsg] = list(region_frame.to_crs(tile.epsg).geometry)
        log.info("reporting: tile %s", tile.id)
        _tile(tile, ctx, acc, by_epsg[tile.epsg], [OUTSIDE_AOI, *region_names], legend, thumb_px)
    if acc.map_sources["missing"] == len(tiles):
        corrupt = [c for c in acc.corrupt if c["stage"] in ("postprocessing", "prediction")]
        detail = (
            f"; {len({c['tile'] for c in corrupt})} tile(s) have a corrupt one, e.g. {corrupt[0]['file']}: "
            f"{corrupt[0]['problem']}"
            if corrupt
            else ""
        )
        raise StageError(
            f"no tile of project {cfg.project!r} season {ctx.season} ({len(tiles)} tiles) has a readable map: "
            f"neither {ctx.stage_uri('postprocessing')} nor {ctx.stage_uri('prediction')} holds a complete, "
            f"readable tile{detail}"
        )

    total = _Zones()
    for z in acc.zones:
        total.counts += z.counts
        total.conf += z.conf
        total.valid_hist = stats.add_histograms(total.valid_hist, z.valid_hist)
    total_entry = _zone_entry("total", total, legend, pixel_area, acc.n_change_tiles)
    # Tile transitions (not zone pieces) so polygons crossing a region boundary count once.
    total_entry["changes"]["transitions"] = stats.merge_transition_rows(
        [t["changes"]["transitions"] for t in acc.tiles], {c.id: c.name for c in legend}
    )
    total_entry["changes"]["n_polygons"] = sum(t["changes"]["n_polygons"] for t in acc.tiles)
    total_entry["changes"]["area_km2"] = sum(t["changes"]["area_km2"] for t in acc.tiles)
    total_entry["quality"] = _quality_totals(acc, total)
    total_entry["reference"] = _reference_totals(acc)
    total_entry["n_tiles"] = len(tiles)

    polygon_areas = _aoi_area_km2(region_frame, tiles)
    regions = []
    for i, name in enumerate(region_names):
        entry = _zone_entry(name, acc.zones[i + 1], legend, pixel_area, acc.n_change_tiles)
        entry["polygon_area_km2"] = polygon_areas[i]
        regions.append(entry)
    outside = _zone_entry(OUTSIDE_AOI, acc.zones[0], legend, pixel_area, acc.n_change_tiles)
    outside["polygon_area_km2"] = total_entry["area_km2"] - sum(polygon_areas)
    inside = _Zones()
    for z in acc.zones[1:]:
        inside.counts += z.counts
        inside.conf += z.conf

    metadata = _training_metadata(ctx)
    metrics = None
    training = None
    if metadata is None:
        acc.missing.setdefault("training", []).append("model")
    else:
        acc.note_run("training", metadata)
        try:
            metrics = stats.normalise_metrics(metadata, legend)
        except (ValueError, TypeError) as err:
            raise StageError(f"{ctx.run_uri('training', 'model')}: unreadable test metrics: {err}") from err
        training = _training_section(metadata, legend, metrics)
        not_learned = [c["id"] for c in (*training["dropped_classes"], *training["absent_classes"])]
        if metrics is not None:
            # The model cannot predict these classes: scores of 0 would read as a model that fails on them.
            # Their test samples stay in the confusion matrix and overall figures (as errors).
            metrics["per_class"] = {
                k: v for k, v in (metrics.get("per_class") or {}).items() if str(k) not in {str(i) for i in not_learned}
            }
            metrics["classes_not_learned"] = not_learned
        for c in training["dropped_classes"]:
            log.info(
                "reporting: class %s was dropped from training (%s training samples, %s test samples)",
                c["name"],
                c["train_samples"],
                c["test_samples"],
            )

    evaluation = None
    if options.evaluate_against_truth and acc.truth_tiles:
        evaluation = evaluate.summarise(
            acc.eval_confusion,
            [c.id for c in legend],
            acc.eval_tiles,
            acc.overlap,
            n_truth_tiles=acc.truth_tiles,
            n_eval_tiles_training_unknown=acc.eval_unknown_training,
            definition="map accuracy on tiles without training samples (sampling n_samples == 0 or unknown), "
            "pixels with truth or map 0 ignored; change precision/recall by area of polygon unions per tile",
        )
        if acc.change_timing is not None:
            from lcms_tasks.accuracy import change

            det, now, completed = acc.change_timing
            evaluation["change_accuracy"] = change.summarise(
                list(ctx.config.seasons), ctx.season, options.change_tolerance_seasons, det, now, completed
            )
        if evaluation["confusion_matrix"] is not None:
            for cid, row in evaluation["per_class"].items():
                row["name"] = {c.id: c.name for c in legend}.get(int(cid), f"class {cid}")

    area_adjusted = _area_adjusted(ctx, acc, found, looked_for)

    configured = _configured_options(ctx)
    total_entry["reference"]["options_differing_in_markers"] = _option_differences(acc, configured)
    report: dict[str, Any] = {
        "schema_version": 1,
        "run": {
            "project": cfg.project,
            "season": ctx.season,
            "run_id": ctx.run_id,
            "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "legend_name": cfg.classification.legend,
            **_product_block(ctx, acc),
            "resolution_m": cfg.grid.resolution_m,
            "pixel_area_m2": pixel_area,
            "n_tiles": len(tiles),
            # What the report covers: the tile subset (None: every project tile) out of how many.
            "is_subset": ctx.is_subset,
            "tile_subset": coverage["tile_subset"],
            "n_project_tiles": coverage["n_project_tiles"],
            # Tiles of the run that an upstream stage run could not process (within its failure
            # tolerance): not in any figure of this report until `lcms rerun-failed` fills them.
            "gaps": [{"tile": tile, "reason": reason} for tile, reason in coverage["excluded"].items()],
            "readiness": _readiness(ctx, acc),
            "map_sources": dict(acc.map_sources),
            "upstream_run_ids": {k: sorted(v) for k, v in sorted(acc.run_ids.items())},
        },
        "options": configured,
        "legend": [{"id": c.id, "name": c.name, "color": c.color} for c in legend],
        "aoi": {
            "region_column": cfg.aoi.region_column,
            "n_regions": len(region_names),
            "polygon_area_km2": sum(polygon_areas),
            "mapped_area_km2": int(inside.counts.sum()) * pixel_area / 1e6,
            "class_areas": stats.class_area_rows(inside.counts, legend, pixel_area, inside.conf),
            "method": "Pixels are assigned to the region containing their centre (overlapping regions: the first "
            "listed wins), the rest to 'outside AOI'; total = regions + outside AOI = sum of tiles. "
            "AOI-clipped areas are the sum of the regions; they match the AOI polygon area within about "
            "half a pixel along its boundary. Change polygons are clipped to regions geometrically.",
        },
        "total": total_entry,
        "regions": regions,
        "outside_aoi": outside,
        "tiles": acc.tiles if options.include_tiles_table else None,
        "metrics": metrics,
        "training": training,
        "evaluation": evaluation,
        "area_adjusted": area_adjusted,
        "parcel_markers": _parcel_markers(ctx),
        "missing_inputs": {k: sorted(set(v)) for k, v in sorted(acc.missing.items())},
        "corrupt_inputs": acc.corrupt,
    }
    report = _jsonable(report)
    report["previous_season"] = _jsonable(previous_season(ctx, report))
    return report, acc, region_frame, legend


def _parcel_markers(ctx: RunContext) -> dict[str, Any] | None:
    """The season's parcel agreement (``lcms parcels markers``), or None when it was not computed."""
    from lcms_tasks.parcels.raster import read_summary

    summary = read_summary(ctx)
    if summary is None:
        return None
    keys = ("uri", "n_parcels", "status_counts", "n_train", "n_test", "held_out", "agreement_per_crop", "confusion")
    return {k: summary.get(k) for k in (*keys, "disagreements", "disagreement_threshold")}


def previous_season(ctx: RunContext, report: Mapping[str, Any]) -> dict[str, Any]:
    """The ``previous_season`` block: ``report``'s class areas against the previous season's report.json.

    The previous season is the one before ``ctx.season`` in the config's season order; its report is
    ``reporting/_run/report`` of that season. No previous season, no complete report or an unreadable one:
    the block says so (``available`` false and why), the report is still made.
    """
    from lcms_tasks.report import compare

    options: Options = ctx.config.stages.reporting
    order = ctx.config.season_ids_ordered()
    index = order.index(ctx.season)
    if index == 0:
        return compare.unavailable(
            f"season {ctx.season} is the first season of the config (seasons {', '.join(order)}): "
            "there is no previous season to compare with"
        )
    season = order[index - 1]
    uri = ctx.run_uri(NAME, "report", season=season)
    if not ctx.storage.is_complete(uri):
        return compare.unavailable(
            f"the previous season, {season}, has no report yet (no complete {uri}); run the reporting stage for "
            f"season {season}, then this one again",
            season,
            uri,
        )
    try:
        previous = ctx.storage.read_json(f"{uri}/report.json")
        block = compare.compare_class_areas(report, previous, options.drift_threshold, options.drift_min_area_km2)
    except (ArtefactMissingError, ValueError, KeyError, TypeError, AttributeError) as err:
        # json.JSONDecodeError is a ValueError; the others: a report.json of another shape.
        log.warning("reporting: previous season's report %s/report.json unusable: %s", uri, err)
        return compare.unavailable(
            f"the previous season's report {uri}/report.json cannot be read: {type(err).__name__}: {err}", season, uri
        )
    block["uri"] = uri
    if block["n_drift"]:
        log.info(
            "reporting: %d class area(s) changed by more than %g %% since season %s (possible map drift)",
            block["n_drift"],
            100 * options.drift_threshold,
            season,
        )
    return block


def _area_adjusted(ctx: RunContext, acc: _Acc, found: FoundDesign | None, looked_for: list[str]) -> dict[str, Any]:
    """The ``area_adjusted`` block: a labelled design's estimates, the synthetic truth's, or why there are none."""
    from lcms_tasks.report import accuracy as area

    if found is not None:
        return area.assess_found_design(ctx, found)
    sample = acc.truth_sample
    if sample is not None and sample.n_tiles:
        read = ", ".join(f"{stage} ({n} tiles)" for stage, n in sorted(acc.map_sources.items()) if stage != "missing")
        block, acc.accuracy_design = area.assess_truth_sample(ctx, sample, f"reporting: {read}")
        return block
    options: Options = ctx.config.stages.reporting
    truth = (
        "the synthetic truth is switched off in the reporting stage's accuracy options"
        if not options.accuracy.synthetic_truth
        else "the download EOPatches carry no synthetic truth"
    )
    return area.unavailable(
        f"no reference labels from a probability sample for season {ctx.season}: no sample design at "
        f"{looked_for[0]}, and {truth}",
        looked_for=looked_for,
    )


def _grid_span(tiles: Sequence[Tile], epsg: int) -> int:
    group = [t for t in tiles if t.epsg == epsg]
    return max(
        max(t.col for t in group) - min(t.col for t in group) + 1,
        max(t.row for t in group) - min(t.row for t in group) + 1,
    )


def _plots(
    report: Mapping[str, Any],
    acc: _Acc,
    region_frame: gpd.GeoDataFrame,
    legend: Sequence[ClassInfo],
    tiles: Sequence[Tile],
    folder: Path,
) -> dict[str, Any]:
    """Write the PNG plots into ``folder``; returns {'confusion', 'class_areas', 'mosaics', ...} file names."""
    from lcms_tasks.report import html

    images: dict[str, Any] = {"mosaics": []}
    names = {c.id: c.name for c in legend}
    run = report["run"]
    title = (
        f"Class areas, {run['n_tiles']} of {run['n_project_tiles']} tiles"
        if run["is_subset"]
        else "Class areas, all tiles"
    )
    html.plot_class_areas(report["total"]["class_areas"], folder / "class_areas.png", title)
    images["class_areas"] = "class_areas.png"
    readiness = run.get("readiness") or {}
    if readiness.get("tiles"):
        html.plot_readiness(readiness["tiles"], folder / "readiness.png")
        images["readiness"] = "readiness.png"
    for key, section, title in (
        ("confusion", report.get("metrics"), "Test confusion matrix"),
        ("truth_confusion", report.get("evaluation"), "Map vs synthetic truth"),
    ):
        cm = (section or {}).get("confusion_matrix")
        if cm and cm.get("matrix"):
            labels = [names.get(int(i), f"class {i}") for i in cm["class_ids"]]
            html.plot_confusion(cm["matrix"], labels, folder / f"{key}.png", title)
            images[key] = f"{key}.png"
    block = report.get("area_adjusted") or {}
    if block.get("available") and block.get("classes"):
        classes = list(block["classes"])

        def figures(key: str) -> list[Any]:
            return [(block.get(key) or {}).get(c) for c in classes]

        html.plot_accuracy_bars(
            classes,
            figures("users_accuracy"),
            figures("producers_accuracy"),
            folder / "accuracy_bars.png",
            "User's and producer's accuracy (area-adjusted)",
            figures("users_accuracy_ci95"),
            figures("producers_accuracy_ci95"),
        )
        images["accuracy_bars"] = "accuracy_bars.png"
    per_class = (report.get("metrics") or {}).get("per_class") or {}
    if per_class:
        ordered = sorted(per_class.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else 1 << 30)
        html.plot_accuracy_bars(
            [str(v.get("name") or names.get(int(k), f"class {k}")) for k, v in ordered],
            [v.get("precision") for _, v in ordered],
            [v.get("recall") for _, v in ordered],
            folder / "test_accuracy_bars.png",
            "Test split: precision (user's) and recall (producer's)",
        )
        images["test_accuracy_bars"] = "test_accuracy_bars.png"
    for epsg in sorted({t.epsg for t in tiles}):
        group = [t for t in tiles if t.epsg == epsg]
        s = next(iter(acc.thumbs.values())).shape[0]
        col0, col1 = min(t.col for t in group), max(t.col for t in group)
        row0, row1 = min(t.row for t in group), max(t.row for t in group)
        canvas = np.zeros(((row1 - row0 + 1) * s, (col1 - col0 + 1) * s), np.uint8)
        covered = np.zeros(canvas.shape, bool)
        for t in group:
            r, c = (row1 - t.row) * s, (t.col - col0) * s  # rows grow northwards; the image's top is north
            canvas[r : r + s, c : c + s] = acc.thumbs[t.id]
            covered[r : r + s, c : c + s] = True
        side = group[0].side_m
        extent = (col0 * side, (col1 + 1) * side, row0 * side, (row1 + 1) * side)
        name = f"map_{epsg}.png"
        html.plot_mosaic(
            canvas,
            covered,
            extent,
            legend,
            folder / name,
            f"Class map, EPSG:{epsg}",
            changes=acc.outlines.get(epsg, []),
            regions=list(region_frame.to_crs(epsg).geometry),
        )
        images["mosaics"].append((f"Class map, EPSG:{epsg}", name))
    return images


def _pdf_plan(ctx: RunContext) -> tuple[str | None, dict[str, Any]]:
    """(Chromium binary or None, the report's ``pdf`` block as planned) from the stage's options.

    ``pdf: true`` without a Chromium is an error here, before any input is read.
    """
    from lcms_tasks.report import pdf

    options: Options = ctx.config.stages.reporting
    block: dict[str, Any] = {"option": options.pdf, "made": False}
    if options.pdf is False:
        return None, {**block, "reason": "switched off (the reporting stage's pdf option is false)"}
    binary = pdf.find_chromium(options.chromium)
    if binary is None:
        reason = pdf.missing_chromium_reason(options.chromium)
        if options.pdf is True:
            raise pdf.ChromiumNotFoundError(
                f"reporting: project {ctx.config.project!r} season {ctx.season}: pdf is true but there is {reason}; "
                "install Debian's chromium (make system-deps), name the binary in stages.reporting.chromium or "
                f"${pdf.CHROMIUM_ENV}, or set pdf to auto"
            )
        return None, {**block, "reason": reason}
    return binary, {**block, "made": None, "file": PDF_NAME, "chromium": binary}  # None: to be printed


#: The PDF's name in the report folder.
PDF_NAME = "report.pdf"


def _print_pdf(ctx: RunContext, binary: str, staging: Path, uri: str, block: dict[str, Any]) -> dict[str, Any]:
    """Print staging/report.html to report.pdf; the ``pdf`` block with its URI and page count.

    A failing Chromium fails the stage with ``pdf: true``; with ``auto`` the block says why there is no PDF.
    """
    from lcms_tasks.report import pdf

    options: Options = ctx.config.stages.reporting
    try:
        path = pdf.html_to_pdf(staging / "report.html", staging / PDF_NAME, binary, timeout=options.pdf_timeout_s)
    except pdf.PdfRenderError as err:
        # The message names the staging folder, gone once the report is published: name the report's URI.
        message = str(err)
        for local in {str(staging.resolve()), str(staging)}:
            message = message.replace(local, uri)
        if options.pdf is True:
            raise pdf.PdfRenderError(f"reporting: {uri}/{PDF_NAME}: {message}") from err
        log.warning("reporting: no PDF: %s", message)
        return {"option": options.pdf, "made": False, "chromium": binary, "reason": f"Chromium failed: {message}"}
    out = {**block, "made": True, "uri": f"{uri}/{PDF_NAME}", "bytes": path.stat().st_size}
    try:
        out["pages"] = pdf.page_count(path)
    except (ValueError, OSError, subprocess.SubprocessError) as err:
        log.warning("reporting: page count of %s unknown: %s", path, err)
        out["pages"], out["pages_unknown"] = None, str(err)
    return out


def run(ctx: RunContext) -> list[str]:
    """Compute the season's report and publish report.json, report.html, report.pdf and plots as one folder."""
    from lcms_tasks.report import accuracy, html

    binary, pdf_block = _pdf_plan(ctx)
    options: Options = ctx.config.stages.reporting
    written: list[str] = []
    if options.parcel_markers is not None:
        from lcms_tasks.parcels import raster

        written.append(raster.run(ctx, options.parcel_markers)["uri"])
    report, acc, region_frame, legend = build_report(ctx)
    tiles = ctx.tiles()
    uri = ctx.run_uri(NAME, "report")
    ev = report.get("evaluation") or {}
    previous = report.get("previous_season") or {}
    marker = ctx.marker_meta(
        NAME,
        None,
        {
            **ctx.coverage(),
            "map_sources": report["run"]["map_sources"],
            "total_area_km2": report["total"]["area_km2"],
            "change_area_km2": report["total"]["changes"]["area_km2"],
            "overall_accuracy": (report.get("metrics") or {}).get("overall_accuracy"),
            "truth_overall_accuracy": ev.get("overall_accuracy"),
            "area_adjusted_overall_accuracy": (report.get("area_adjusted") or {}).get("overall_accuracy"),
            "missing_inputs": {k: len(v) for k, v in report["missing_inputs"].items()},
            "n_corrupt_inputs": len(report["corrupt_inputs"]),
            "previous_season": previous.get("season"),
            "n_drift": previous.get("n_drift"),
        },
    )
    with ctx.storage.writing_dir(uri, marker) as staging:
        images = _plots(report, acc, region_frame, legend, tiles, staging)
        if acc.accuracy_design is not None:
            accuracy.write_drawn_design(staging, acc.accuracy_design)
        report["pdf"] = pdf_block
        (staging / "report.html").write_text(html.render(report, images), encoding="utf-8")
        if binary is not None:
            report["pdf"] = _print_pdf(ctx, binary, staging, uri, pdf_block)
            if not report["pdf"]["made"]:  # the page says why there is no PDF, not where it is
                (staging / "report.html").write_text(html.render(report, images), encoding="utf-8")
        # The marker is written when the block ends: it names the PDF too.
        marker["pdf"] = {k: report["pdf"].get(k) for k in ("made", "uri", "pages", "reason") if k in report["pdf"]}
        (staging / "report.json").write_text(
            json.dumps(report, indent=2, sort_keys=False, allow_nan=False), encoding="utf-8"
        )
    log.info(
        "reporting: wrote %s (%d of %d project tiles)%s",
        uri,
        len(tiles),
        len(ctx.project_tiles()),
        f"; PDF of {report['pdf'].get('pages')} pages"
        if report["pdf"]["made"]
        else f"; no PDF: {report['pdf']['reason']}",
    )
    return [*written, uri]
