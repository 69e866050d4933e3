"""Stage 10, reporting: class and change areas, metrics and data quality of a season (JSON + HTML).

Once per season, reads for every project tile the post-processed map
(falling back to the raw prediction), the change polygons, the features'
quality figures and the reference/sampling metadata, plus the model's test
metrics, and writes ``reporting/_run/report``: ``report.json``,
``report.html`` and the PNG plots it references. Only the maps are required;
any other missing input is listed under ``missing_inputs``.

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
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from lcms_tasks.errors import ArtefactMissingError, StageError
from lcms_tasks.schema import StrictModel

if TYPE_CHECKING:
    import geopandas as gpd

    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import Tile
    from lcms_tasks.report.evaluate import ChangeOverlap
    from lcms_tasks.report.stats import ClassInfo

NAME = "reporting"
log = logging.getLogger(__name__)

OUTSIDE_AOI = "outside AOI"
# Keys every completion marker carries; the rest of a marker is the stage's own figures.
_MARKER_KEYS = {"stage", "tile", "project", "season", "run_id", "upstream_run_id", "written_at", "upstream"}
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
    run_ids: dict[str, set[str]] = field(default_factory=dict)
    map_sources: Counter[str] = field(default_factory=Counter)
    quality_metas: list[dict[str, Any]] = field(default_factory=list)
    ref_metas: list[dict[str, Any]] = field(default_factory=list)
    sampling_metas: list[dict[str, Any]] = field(default_factory=list)
    n_change_tiles: int = 0
    truth_tiles: int = 0
    eval_confusion: np.ndarray | None = None
    eval_tiles: int = 0
    eval_unknown_training: int = 0
    overlap: ChangeOverlap | None = None
    thumbs: dict[str, np.ndarray] = field(default_factory=dict)
    outlines: dict[int, list[Any]] = field(default_factory=dict)

    def note_missing(self, stage: str, tile_id: str) -> None:
        self.missing.setdefault(stage, []).append(tile_id)

    def note_run(self, stage: str, meta: Mapping[str, Any]) -> None:
        if meta.get("run_id"):
            self.run_ids.setdefault(stage, set()).add(str(meta["run_id"]))


def _figures(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A marker's stage-specific figures (the common bookkeeping keys removed)."""
    return {k: v for k, v in meta.items() if k not in _MARKER_KEYS}


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


def _load_map(tile: Tile, ctx: RunContext) -> tuple[str, np.ndarray, np.ndarray | None, dict[str, Any]] | None:
    """(source stage, CLASS (H, W), CONFIDENCE (H, W) or None, meta) of the tile's map, or None if absent."""
    from lcms_tasks import eopatch

    for stage in ("postprocessing", "prediction"):
        uri = ctx.tile_uri(stage, tile.id)
        if not ctx.storage.is_complete(uri):
            continue
        patch, meta = eopatch.load(ctx.storage, uri, features=["mask_timeless/CLASS"])
        classes = np.asarray(patch.mask_timeless["CLASS"])
        if classes.ndim == 3:
            classes = classes[..., 0]
        if classes.shape != tile.shape:
            raise StageError(f"{uri}: CLASS has shape {classes.shape}, tile {tile.id} is {tile.shape}")
        confidence = None
        try:
            cpatch, _ = eopatch.load(ctx.storage, uri, features=["data_timeless/CONFIDENCE"])
            confidence = np.asarray(cpatch.data_timeless["CONFIDENCE"], dtype=np.float32)[..., 0]
        except ArtefactMissingError:
            log.warning("%s: no data_timeless/CONFIDENCE; mean confidence not reported for tile %s", uri, tile.id)
        return stage, classes, confidence, meta
    return None


def _read_changes(tile: Tile, ctx: RunContext) -> tuple[gpd.GeoDataFrame, dict[str, Any]] | None:
    """The tile's change polygons (tile CRS) and the stage's metadata, or None if absent."""
    from lcms_tasks.changes import read_changes

    uri = ctx.tile_uri("change_detection", tile.id)
    if not ctx.storage.is_complete(uri):
        return None
    meta = ctx.storage.read_marker(uri)
    with ctx.storage.reading_dir(uri) as folder:
        path = Path(folder) / "changes.gpkg"
        if not path.is_file():
            raise StageError(f"{uri}: complete but has no changes.gpkg (tile {tile.id})")
        try:
            # The change stage's own reader: typed columns even for an empty layer.
            frame = read_changes(path)
        except ValueError as err:
            raise StageError(f"{uri}/changes.gpkg (tile {tile.id}): {err}") from err
    if len(frame) and frame.crs is not None and frame.crs != tile.crs:
        frame = frame.to_crs(tile.crs)
    return frame, meta


def _load_truth(tile: Tile, ctx: RunContext) -> tuple[np.ndarray, gpd.GeoDataFrame | None] | None:
    """TRUTH_LAND_COVER (H, W) and TRUTH_CHANGES of the tile's download EOPatch, or None if it has no truth."""
    from lcms_tasks import eopatch

    uri = ctx.tile_uri("download", tile.id)
    if not ctx.storage.is_complete(uri):
        return None
    try:
        patch, _ = eopatch.load(ctx.storage, uri, features=["mask_timeless/TRUTH_LAND_COVER"])
    except ArtefactMissingError:
        return None  # a real (non-synthetic) source: nothing to evaluate against
    truth = np.asarray(patch.mask_timeless["TRUTH_LAND_COVER"])[..., 0]
    changes = None
    try:
        cpatch, _ = eopatch.load(ctx.storage, uri, features=["vector_timeless/TRUTH_CHANGES"])
        changes = cpatch.vector_timeless["TRUTH_CHANGES"]
        if "season_after" in changes.columns:
            changes = changes[changes["season_after"].astype(str) == ctx.season]
    except ArtefactMissingError:
        log.warning("%s has TRUTH_LAND_COVER but no TRUTH_CHANGES; change evaluation skips tile %s", uri, tile.id)
    return truth, changes


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
    loaded = _load_map(tile, ctx)
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
    if ctx.storage.is_complete(furi):
        fpatch, fmeta = eopatch.load(ctx.storage, furi, features=["mask_timeless/VALID_COUNT"])
        acc.note_run("features", fmeta)
        valid = np.asarray(fpatch.mask_timeless["VALID_COUNT"])[..., 0]
        q = dict(fmeta.get("quality") or {})
        acc.quality_metas.append(q)
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
        acc.note_missing("features", tile.id)
        quality["valid_observations"] = stats.histogram_stats(np.zeros(1, np.int64))
    record["quality"] = quality

    # Reference and sampling.
    reference: dict[str, Any] = {"add_reference": None, "sampling": None, "n_samples": None}
    ruri = ctx.tile_uri("add_reference", tile.id)
    if ctx.storage.is_complete(ruri):
        rmeta = ctx.storage.read_marker(ruri)
        acc.note_run("add_reference", rmeta)
        reference["add_reference"] = _figures(rmeta)
        acc.ref_metas.append(_figures(rmeta))
    else:
        acc.note_missing("add_reference", tile.id)
    suri = ctx.tile_uri("sampling", tile.id)
    smeta: dict[str, Any] | None = None
    if ctx.storage.is_complete(suri):
        smeta = ctx.storage.read_marker(suri)
        acc.note_run("sampling", smeta)
        sfig = {k: v for k, v in _figures(smeta).items() if k != "feature_names"}  # names: long and per model
        reference["sampling"] = sfig
        reference["n_samples"] = int(smeta.get("n_samples") or 0)
        acc.sampling_metas.append(sfig)
    else:
        acc.note_missing("sampling", tile.id)
    reference["used_for_training"] = evaluate.used_for_training(smeta)
    record["reference"] = reference

    # Changes, clipped to regions geometrically.
    changes_info: dict[str, Any] = {"available": False, "n_polygons": 0, "area_km2": 0.0, "transitions": []}
    changes = _read_changes(tile, ctx)
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
    else:
        acc.note_missing("change_detection", tile.id)
    record["changes"] = changes_info

    # Truth.
    if options.evaluate_against_truth:
        truth = _load_truth(tile, ctx)
        if truth is not None:
            acc.truth_tiles += 1
            truth_lc, truth_changes = truth
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

    # Thumbnail: nearest-neighbour sample of thumb_px x thumb_px pixel centres.
    pick = ((np.arange(thumb_px) + 0.5) * tile.shape[0] / thumb_px).astype(np.int64)
    acc.thumbs[tile.id] = classes[np.ix_(pick, pick)].astype(np.uint8)
    acc.tiles.append(record)


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
    sampling_totals = stats.sum_numeric(acc.sampling_metas)
    return {
        "n_tiles_with_reference": len(acc.ref_metas),
        "n_tiles_with_sampling": len(acc.sampling_metas),
        "n_tiles_sampled": sampled,
        "skipped_reasons": dict(reasons),
        "n_samples": int(sampling_totals.get("n_samples", 0)),
        "sampling_totals": sampling_totals,
        "add_reference_totals": stats.sum_numeric(acc.ref_metas),
    }


def _quality_totals(acc: _Acc, zone_all: _Zones) -> dict[str, Any]:
    from lcms_tasks.report import stats

    summed = stats.sum_numeric(acc.quality_metas)
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
    """Each region's polygon area (km²) within the project tiles, measured in each tile group's CRS."""
    import shapely

    areas = np.zeros(len(region_frame))
    for epsg in sorted({t.epsg for t in tiles}):
        boxes = shapely.union_all([shapely.box(*t.bounds) for t in tiles if t.epsg == epsg])
        projected = region_frame.to_crs(epsg)
        areas += np.array([float(shapely.intersection(g, boxes).area) for g in projected.geometry])
    return [float(a) / 1e6 for a in areas]


def build_report(ctx: RunContext) -> tuple[dict[str, Any], _Acc, gpd.GeoDataFrame, list[ClassInfo]]:
    """Read every input and compute the report's figures (no writing)."""
    from lcms_tasks.grid import project_tiles
    from lcms_tasks.report import evaluate, stats

    cfg = ctx.config
    options: Options = cfg.stages.reporting
    legend = [stats.ClassInfo(c.id, c.name, c.color) for c in cfg.legend()]
    tiles = project_tiles(cfg)
    region_names, region_frame = _regions(cfg)
    n_zones = len(region_names) + 1
    acc = _Acc(zones=[_Zones() for _ in range(n_zones)])
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
        raise StageError(
            f"no tile of project {cfg.project!r} season {ctx.season} has a map: neither "
            f"{ctx.stage_uri('postprocessing')} nor {ctx.stage_uri('prediction')} holds a complete tile"
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
    if metadata is None:
        acc.missing.setdefault("training", []).append("model")
    else:
        acc.note_run("training", metadata)
        try:
            metrics = stats.normalise_metrics(metadata, legend)
        except (ValueError, TypeError) as err:
            raise StageError(f"{ctx.run_uri('training', 'model')}: unreadable test metrics: {err}") from err

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
        if evaluation["confusion_matrix"] is not None:
            for cid, row in evaluation["per_class"].items():
                row["name"] = {c.id: c.name for c in legend}.get(int(cid), f"class {cid}")

    report: dict[str, Any] = {
        "schema_version": 1,
        "run": {
            "project": cfg.project,
            "season": ctx.season,
            "run_id": ctx.run_id,
            "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "legend_name": cfg.classification.legend,
            "resolution_m": cfg.grid.resolution_m,
            "pixel_area_m2": pixel_area,
            "n_tiles": len(tiles),
            "map_sources": dict(acc.map_sources),
            "upstream_run_ids": {k: sorted(v) for k, v in sorted(acc.run_ids.items())},
        },
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
        "evaluation": evaluation,
        "missing_inputs": {k: sorted(set(v)) for k, v in sorted(acc.missing.items())},
    }
    return _jsonable(report), acc, region_frame, legend


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
    html.plot_class_areas(report["total"]["class_areas"], folder / "class_areas.png", "Class areas, all tiles")
    images["class_areas"] = "class_areas.png"
    for key, section, title in (
        ("confusion", report.get("metrics"), "Test confusion matrix"),
        ("truth_confusion", report.get("evaluation"), "Map vs synthetic truth"),
    ):
        cm = (section or {}).get("confusion_matrix")
        if cm and cm.get("matrix"):
            labels = [names.get(int(i), f"class {i}") for i in cm["class_ids"]]
            html.plot_confusion(cm["matrix"], labels, folder / f"{key}.png", title)
            images[key] = f"{key}.png"
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


def run(ctx: RunContext) -> list[str]:
    """Compute the season's report and publish report.json, report.html and plots as one folder."""
    from lcms_tasks.grid import project_tiles
    from lcms_tasks.report import html

    report, acc, region_frame, legend = build_report(ctx)
    tiles = project_tiles(ctx.config)
    uri = ctx.run_uri(NAME, "report")
    ev = report.get("evaluation") or {}
    marker = ctx.marker_meta(
        NAME,
        None,
        {
            "n_tiles": report["run"]["n_tiles"],
            "map_sources": report["run"]["map_sources"],
            "total_area_km2": report["total"]["area_km2"],
            "change_area_km2": report["total"]["changes"]["area_km2"],
            "overall_accuracy": (report.get("metrics") or {}).get("overall_accuracy"),
            "truth_overall_accuracy": ev.get("overall_accuracy"),
            "missing_inputs": {k: len(v) for k, v in report["missing_inputs"].items()},
        },
    )
    with ctx.storage.writing_dir(uri, marker) as staging:
        images = _plots(report, acc, region_frame, legend, tiles, staging)
        (staging / "report.json").write_text(
            json.dumps(report, indent=2, sort_keys=False, allow_nan=False), encoding="utf-8"
        )
        (staging / "report.html").write_text(html.render(report, images), encoding="utf-8")
    log.info("reporting: wrote %s (%d tiles)", uri, len(tiles))
    return [uri]
