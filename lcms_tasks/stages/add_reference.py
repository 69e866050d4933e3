"""Stage 3, add_reference: the season's reference polygons rasterised into per-tile label masks.

Reference comes from vector files (any CRS, any code list through a crosswalk), for the
demo from the synthetic source's truth parcels, of which a seeded share of tiles and
parcels is kept to simulate partial ground truth such as an LPIS, and from the change
store: changes operators confirmed, corrected or rejected (``change_store``, see
:mod:`lcms_tasks.reference.validated` for which decisions serve which season; the
marker's ``validated`` block lists the changes and decisions used). Polygons
are reprojected to the tile CRS, clipped to the tile, crosswalked to legend ids,
overlaps resolved ('priority' or 'drop') and burned on the tile grid; borders are
eroded so that mixed edge pixels are not trained on.

Output EOPatch: ``mask_timeless/REFERENCE`` (H, W, 1) uint8 class ids (0 none),
``mask_timeless/REFERENCE_SAMPLABLE`` (H, W, 1) bool (labelled, eroded, not NO_DATA),
``mask_timeless/POLYGON_ID`` (H, W, 1) int32 (1-based index into the marker meta's
``polygon_keys``, the polygons' stable 63-bit keys; 0 none).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from lcms_tasks.schema import StrictModel

if TYPE_CHECKING:
    from pathlib import Path

    from lcms_tasks.config import LegendClass, ProjectConfig
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import Tile
    from lcms_tasks.preflight import Need
    from lcms_tasks.reference.rasterize import LabelledPolygon
    from lcms_tasks.reference.sources import SourceStats
    from lcms_tasks.reference.validated import TileValidated

NAME = "add_reference"
log = logging.getLogger(__name__)


class CrosswalkStep(StrictModel):
    """One crosswalk file of a chain: which column holds the code, which the target (a code, or a class)."""

    path: str = Field(
        description="CSV (or YAML {code: class}) file; may contain '{season}'; relative to the config folder."
    )
    code_column: str = Field("code", description="Column of the codes this step looks up (case-insensitive).")
    target_column: str = Field(
        "class",
        description="Column of what a code maps to: the next step's code, or (last step) a legend class name or "
        "id (0 = 'no label' on purpose).",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, data: Any) -> Any:
        # A bare path is a step with the default columns: `crosswalk_chain: [a.csv, b.csv]`.
        return {"path": data} if isinstance(data, str) else data


class FileSource(StrictModel):
    """Reference polygons from a vector file GDAL can read."""

    type: Literal["file"] = Field("file", description="A vector file.")
    path: str = Field(
        description="Vector file; may contain '{season}' (replaced by the season id); relative to the config folder."
    )
    layer: str | None = Field(None, description="Layer of a multi-layer file (GeoPackage).")
    class_column: str = Field(description="Attribute holding the class code of each polygon.")
    crosswalk: dict[str | int, str | int] | None = Field(
        None,
        description="Code -> legend class name or id (0 = 'no label' on purpose). None: codes are legend ids. "
        "Codes absent from the crosswalk are counted in the metadata as unknown_codes.",
    )
    crosswalk_file: str | None = Field(
        None, description="CSV with columns code,class (instead of `crosswalk`); relative to the config folder."
    )
    crosswalk_chain: list[CrosswalkStep] | None = Field(
        None,
        min_length=1,
        description="Crosswalks applied in order (instead of `crosswalk`/`crosswalk_file`), e.g. national code -> "
        "HCAT3 code -> legend class: [{path: at_codes_hcat.csv, code_column: original_code, target_column: "
        "HCAT3_code}, hcat3_to_legend.csv]. Only the last step names legend classes; codes unknown at any step are "
        "counted per step in the metadata.",
    )
    seasons: list[str] | None = Field(None, description="Seasons this source serves (None: all).")
    priority: int = Field(0, description="Overlaps: the higher priority wins (overlap_rule 'priority').")

    @model_validator(mode="after")
    def _one_crosswalk(self) -> FileSource:
        given = [n for n in ("crosswalk", "crosswalk_file", "crosswalk_chain") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(
                "give only one of `crosswalk`, `crosswalk_file`, `crosswalk_chain`; this source has "
                + " and ".join(f"`{n}`" for n in given)
            )
        return self


class SyntheticTruthSource(StrictModel):
    """The synthetic source's truth parcels, thinned to simulate partial ground truth (demo)."""

    type: Literal["synthetic_truth"] = Field("synthetic_truth", description="Synthetic truth parcels.")
    tile_fraction: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="Share of the project's tiles that get reference (seeded; the same tiles every season). "
        "The other tiles get none, so maps can be evaluated there.",
    )
    parcel_fraction: float = Field(0.7, ge=0.0, le=1.0, description="Share of a chosen tile's parcels kept (seeded).")
    seed: int = Field(0, description="Seed of the tile and parcel choice.")
    priority: int = Field(0, description="Overlaps: the higher priority wins (overlap_rule 'priority').")


DecidedStatus = Literal["confirmed", "corrected", "rejected"]
DECIDED_STATUSES: tuple[DecidedStatus, ...] = ("confirmed", "corrected", "rejected")


class ChangeStoreSource(StrictModel):
    """Operators' decisions in the change store: validated changes and rejected ones ("no change") as reference.

    Confirmed changes give their after class over their geometry, corrected ones the corrected class over
    the corrected geometry, rejected ones the before class over the polygon. A change decided for the
    season pair A->B serves season B and later seasons until a later change says otherwise (the rule of
    :mod:`lcms_tasks.reference.validated`). The store is the config's (``lcms_tasks.store.database_url``).
    Those are the primary product's; every product (a crop type product) also reads its own decided parcel
    checks (declared parcels the operators checked), for their season only.
    """

    type: Literal["change_store"] = Field("change_store", description="Decided changes of the change store.")
    statuses: list[DecidedStatus] = Field(
        default_factory=lambda: list(DECIDED_STATUSES),
        description="Which decided changes make reference: confirmed and corrected (the after class holds) and/or "
        "rejected (the before class still holds: a 'no change' sample).",
    )
    priority: int = Field(
        50,
        description="Overlaps: priority of confirmed and corrected changes (the higher wins; by default above "
        "every other source, as the fusion rules rank confirmed changes first).",
    )
    rejected_priority: int = Field(45, description="Overlaps: priority of rejected changes ('no change' samples).")
    seasons: list[str] | None = Field(None, description="Seasons this source serves (None: all).")
    max_seasons_later: int | None = Field(
        None,
        ge=0,
        description="A change decided for A->B serves season B and at most this many seasons after it "
        "(0: only B; None: every later season, until a later change says otherwise).",
    )
    required: bool = Field(
        False,
        description="Fail when no change store is configured. False: the source is skipped (and the metadata "
        "says so) when there is no database to read; a configured database that cannot be read always fails.",
    )


ReferenceSource = Annotated[FileSource | SyntheticTruthSource | ChangeStoreSource, Field(discriminator="type")]
AnySource = FileSource | SyntheticTruthSource | ChangeStoreSource


def _default_sources() -> list[FileSource | SyntheticTruthSource | ChangeStoreSource]:
    # The operators' decisions are read automatically when a change store is configured (skipped otherwise).
    return [SyntheticTruthSource(), ChangeStoreSource()]


class Options(StrictModel):
    """Options of the add_reference stage."""

    sources: list[ReferenceSource] = Field(
        default_factory=lambda: _default_sources(),
        description="Reference sources (type 'file', 'synthetic_truth' or 'change_store'). Default: the synthetic "
        "truth and the change store's decided changes; a list of your own needs `{type: change_store}` to use them.",
    )
    overlap_rule: Literal["drop", "priority"] = Field(
        "priority",
        description="Overlapping polygons of different classes: 'priority' (higher priority wins, ties are "
        "dropped) or 'drop' (conflicting pixels stay unlabelled).",
    )
    erosion_px: int = Field(
        1, ge=0, le=50, description="Border erosion (pixels) of every polygon and class region before sampling."
    )
    erosion_per_class: dict[str, int] = Field(
        default_factory=dict, description="Class name -> erosion in pixels, overriding erosion_px."
    )
    min_polygon_area_m2: float = Field(0.0, ge=0.0, description="Ignore polygons smaller than this (m²).")


# -- pure helpers -----------------------------------------------------------------------------------


def class_erosion(options: Options, legend: list[LegendClass]) -> dict[int, int]:
    """{class id: px} from ``erosion_per_class`` (``ConfigError`` naming an unknown class)."""
    from lcms_tasks.errors import ConfigError

    by_name = {c.name: c.id for c in legend}
    out: dict[int, int] = {}
    for name, px in options.erosion_per_class.items():
        if name not in by_name:
            raise ConfigError(
                f"erosion_per_class names class {name!r}, not in the legend (classes: {', '.join(by_name)})",
                field="stages.add_reference.erosion_per_class",
            )
        if px < 0:
            raise ConfigError(f"erosion_per_class[{name!r}] = {px} must be >= 0", field="stages.add_reference")
        out[by_name[name]] = px
    return out


def source_active(source: AnySource, season: str) -> bool:
    """Whether ``source`` serves ``season``."""
    if isinstance(source, FileSource | ChangeStoreSource):
        return source.seasons is None or season in source.seasons
    return True


def source_name(index: int, source: AnySource) -> str:
    """A readable name for the metadata: 'sources[0] file LPIS_2023.gpkg'."""
    if isinstance(source, FileSource):
        return f"sources[{index}] file {source.path}"
    return f"sources[{index}] {source.type}"


def _file_source_polygons(
    source: FileSource, cfg: ProjectConfig, season: str, tile: Tile, options: Options
) -> tuple[list[LabelledPolygon], SourceStats]:
    from lcms_tasks.errors import ConfigError
    from lcms_tasks.reference import sources as src

    legend = cfg.legend()
    path = cfg.resolve_path(source.path.replace("{season}", season))
    lost: dict[str, tuple[int, str]] = {}
    steps: list[str] = []
    crosswalk: dict[str, int] | None
    if source.crosswalk_chain is not None:
        crosswalk, lost, steps = _chain_crosswalk(source.crosswalk_chain, cfg, season, path)
    else:
        where = f"reference file {path}"
        crosswalk_map: dict[str | int, str | int] | None = source.crosswalk
        if source.crosswalk_file is not None:
            csv_path = cfg.resolve_path(source.crosswalk_file.replace("{season}", season))
            crosswalk_map = src.read_crosswalk_csv(csv_path)
            where = f"crosswalk file {csv_path}"
        crosswalk = src.build_crosswalk(crosswalk_map, legend, where=where)
    try:
        frame = src.read_reference_file(path, source.layer, source.class_column, tile.bounds, tile.crs)
    except ConfigError as err:
        raise ConfigError(f"tile {tile.id}: {err}", field="stages.add_reference.sources") from err
    polygons, stats = src.file_polygons(
        frame,
        source.class_column,
        crosswalk,
        {c.id for c in legend},
        source_name=f"{path.name}:{source.layer or ''}:{source.class_column}",
        bounds=tile.bounds,
        tile_crs=tile.crs,
        priority=source.priority,
        min_area_m2=options.min_polygon_area_m2,
    )
    if steps:
        by_step: list[Counter[str]] = [Counter() for _ in steps]
        for code, count in stats.unknown_codes.items():
            step, step_code = lost.get(code, (0, code))  # not a code of the first step: unknown there
            by_step[step][step_code] += count
        stats.unknown_codes_by_step = [
            {"crosswalk": name, "unknown_codes": dict(sorted(counts.items()))}
            for name, counts in zip(steps, by_step, strict=True)
        ]
    return polygons, stats


def _chain_crosswalk(
    chain_steps: list[CrosswalkStep], cfg: ProjectConfig, season: str, path: Path
) -> tuple[dict[str, int], dict[str, tuple[int, str]], list[str]]:
    """A crosswalk chain flattened for one season: ({first-step code: legend id}, {code lost on the way:
    (step, code looked up there)}, the steps' descriptions). Year-scoped rows apply to a numeric season,
    source-scoped rows to the reference file's stem."""
    from lcms_tasks.errors import ConfigError
    from lcms_tasks.reference.crosswalk import CrosswalkSpec, read_chain

    specs = [
        CrosswalkSpec(cfg.resolve_path(step.path.replace("{season}", season)), step.code_column, step.target_column)
        for step in chain_steps
    ]
    try:
        chain = read_chain(specs)
        chain.resolve(cfg.legend(), legend_name=cfg.classification.legend)
    except ConfigError as err:
        raise ConfigError(f"crosswalk_chain: {err}", field="stages.add_reference.sources") from err
    year = int(season) if season.isdigit() else None
    found, lost = chain.flatten(year=year, source=(path.stem,))
    return (
        {code: cls.id for code, cls in found.items()},
        {code: (hit.step if hit.step is not None else 0, hit.code) for code, hit in lost.items()},
        [spec.describe() for spec in specs],
    )


_TILE_IDS: dict[str, list[str]] = {}


def _project_tile_ids(cfg: ProjectConfig) -> list[str]:
    """The project's tile ids, computed once per process and AOI/grid (a country AOI is slow to tile)."""
    from lcms_tasks.grid import project_tiles

    key = f"{cfg.base_dir}|{cfg.aoi.model_dump_json()}|{cfg.grid.model_dump_json()}"
    if cfg.aoi.file is not None:
        aoi_path = cfg.resolve_path(cfg.aoi.file)
        key += f"|{aoi_path.stat().st_mtime_ns if aoi_path.exists() else 0}"
    if key not in _TILE_IDS:
        _TILE_IDS[key] = [t.id for t in project_tiles(cfg)]
    return _TILE_IDS[key]


def _synthetic_polygons(
    source: SyntheticTruthSource, ctx: RunContext, tile: Tile, options: Options
) -> tuple[list[LabelledPolygon], SourceStats]:
    from lcms_tasks import eopatch
    from lcms_tasks.errors import StageError
    from lcms_tasks.reference import sources as src

    cfg = ctx.config
    chosen = src.synthetic_tiles(_project_tile_ids(cfg), source.tile_fraction, source.seed)
    if tile.id not in chosen:
        return [], src.SourceStats()
    download_uri = ctx.tile_uri("download", tile.id)
    try:
        patch, _ = eopatch.load(ctx.storage, download_uri, features=["vector_timeless/TRUTH_PARCELS"])
        parcels = patch.vector_timeless["TRUTH_PARCELS"]
    except (KeyError, OSError, ValueError) as err:
        raise StageError(
            f"tile {tile.id}: reference source 'synthetic_truth' needs vector_timeless/TRUTH_PARCELS in "
            f"{download_uri} (only the synthetic imagery source writes it): {err}"
        ) from err
    if parcels.crs is not None and not parcels.crs.equals(tile.crs):
        parcels = parcels.to_crs(tile.crs)
    column = cfg.classification.legend  # 'land_cover' or 'crop_type': the truth column of that legend
    return src.synthetic_polygons(
        parcels,
        column,
        {c.id for c in cfg.legend()},
        tile_id=tile.id,
        parcel_fraction=source.parcel_fraction,
        seed=source.seed,
        priority=source.priority,
        min_area_m2=options.min_polygon_area_m2,
    )


def _change_store_polygons(source: ChangeStoreSource, ctx: RunContext, tile: Tile, options: Options) -> TileValidated:
    """The decided changes of the change store as labelled polygons of ``tile`` (skipped without a database)."""
    from lcms_tasks.errors import ChangeStoreError
    from lcms_tasks.reference import validated
    from lcms_tasks.reference.sources import SourceStats
    from lcms_tasks.store import database_url

    cfg = ctx.config
    url = database_url(cfg)
    if url is None:
        reason = "no change store configured (database.url, LCMS_DATABASE_URL, or a running `lcms db start`)"
        if source.required:
            raise ChangeStoreError(f"tile {tile.id}: reference source 'change_store': {reason}", permanent=True)
        return validated.TileValidated(stats=SourceStats(), skipped=reason)
    # The primary product's maps are what change detection compares: its decided changes are its reference.
    # Every product's own decided parcel checks are its reference for their season.
    found, rule = validated.read_validated(
        url,
        project=cfg.project,
        season=ctx.season,
        order=validated.season_order(cfg),
        statuses=source.statuses,
        max_seasons_later=source.max_seasons_later,
        envelope=validated.tile_envelope(tile.bounds, tile.crs),
        changes=ctx.is_primary_product,
        parcel_checks_of=ctx.product_name,
    )
    out = validated.tile_polygons(
        found,
        bounds=tile.bounds,
        crs=tile.crs,
        legend_ids={c.id for c in cfg.legend()},
        priority=source.priority,
        rejected_priority=source.rejected_priority,
        min_area_m2=options.min_polygon_area_m2,
    )
    out.rule = rule
    return out


def compact_polygon_ids(polygon_index: np.ndarray, keys: list[int]) -> tuple[np.ndarray, list[int]]:
    """Renumber a 1-based polygon index raster to the polygons present (1..m) and their keys."""
    present = np.unique(polygon_index)
    present = present[present > 0]
    lut = np.zeros(len(keys) + 1, np.int32)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    return lut[polygon_index], [keys[i - 1] for i in present.tolist()]


def needs(ctx: RunContext) -> list[Need]:
    """The features of every tile (their no-data mask decides what is samplable)."""
    from lcms_tasks.preflight import Need

    return [Need("features", ctx.season)]


def _merge_lineage(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``validated`` metadata block from those of several change_store sources (usually one)."""
    if len(parts) == 1:
        return parts[0]
    out: dict[str, Any] = {"polygons_used": 0, "polygons_rasterised": 0, "carried_forward": 0, "by_status": {}}
    for part in parts:
        for key in ("polygons_used", "polygons_rasterised", "carried_forward"):
            out[key] += int(part.get(key, 0))
        for status, n in (part.get("by_status") or {}).items():
            out["by_status"][status] = out["by_status"].get(status, 0) + int(n)
    out["change_ids"] = sorted({c for p in parts for c in p.get("change_ids", [])})
    out["decision_ids"] = sorted({d for p in parts for d in p.get("decision_ids", [])})
    out["without_decision"] = sorted({c for p in parts for c in p.get("without_decision", [])})
    out["polygons"] = [poly for p in parts for poly in p.get("polygons", [])]
    rule: Counter[str] = Counter()
    for p in parts:
        rule.update({k: int(v) for k, v in (p.get("rule") or {}).items()})
    out["rule"] = dict(rule)
    skipped = [p["skipped"] for p in parts if p.get("skipped")]
    if skipped:
        out["skipped"] = skipped[0]
    return out


def run(tile: Tile, ctx: RunContext) -> list[str]:
    """Rasterise the season's reference for one tile and store it as an EOPatch."""
    from lcms_tasks import eopatch
    from lcms_tasks.reference.rasterize import rasterize_reference, samplable_mask
    from lcms_tasks.reference.sources import SourceStats

    cfg = ctx.config
    options: Options = cfg.stages.add_reference
    legend = cfg.legend()
    erosion = class_erosion(options, legend)
    feats, feats_meta = eopatch.load(ctx.storage, ctx.tile_uri("features", tile.id), features=["mask_timeless/NO_DATA"])
    no_data = feats.mask_timeless["NO_DATA"][..., 0].astype(bool)
    if no_data.shape != tile.shape:
        from lcms_tasks.errors import StageError

        raise StageError(f"tile {tile.id}: features NO_DATA has shape {no_data.shape}, the tile is {tile.shape}")

    polygons: list[LabelledPolygon] = []
    per_source: dict[str, Any] = {}
    unknown: Counter[str] = Counter()
    from_store: list[TileValidated] = []
    for i, source in enumerate(options.sources):
        name = source_name(i, source)
        if not source_active(source, ctx.season):
            per_source[name] = {"skipped": f"not a source for season {ctx.season}"}
            continue
        if isinstance(source, FileSource):
            found, stats = _file_source_polygons(source, cfg, ctx.season, tile, options)
        elif isinstance(source, ChangeStoreSource):
            store_part = _change_store_polygons(source, ctx, tile, options)
            from_store.append(store_part)
            found, stats = store_part.polygons, store_part.stats or SourceStats()
        else:
            found, stats = _synthetic_polygons(source, ctx, tile, options)
        polygons.extend(found)
        per_source[name] = stats.to_dict()
        if isinstance(source, ChangeStoreSource) and from_store[-1].skipped:
            per_source[name]["skipped"] = from_store[-1].skipped
        unknown.update(stats.unknown_codes)
    if unknown:
        log.warning("%s %s: codes not in the crosswalk (polygons): %s", NAME, tile.id, dict(unknown))

    ref = rasterize_reference(polygons, tile.shape, tile.transform(), options.overlap_rule)
    samplable = samplable_mask(ref.labels, ref.polygon_index, options.erosion_px, erosion, no_data=no_data)
    polygon_ids, keys = compact_polygon_ids(ref.polygon_index, [p.key for p in polygons])

    patch = eopatch.new_patch(tile, [])
    patch.mask_timeless["REFERENCE"] = ref.labels[..., None]
    patch.mask_timeless["REFERENCE_SAMPLABLE"] = samplable[..., None]
    patch.mask_timeless["POLYGON_ID"] = polygon_ids[..., None]
    ids, counts = np.unique(ref.labels[ref.labels > 0], return_counts=True)
    s_ids, s_counts = np.unique(ref.labels[samplable], return_counts=True)
    meta = {
        "class_pixels": {str(int(c)): int(n) for c, n in zip(ids, counts, strict=True)},
        "samplable_pixels": {str(int(c)): int(n) for c, n in zip(s_ids, s_counts, strict=True)},
        "labelled_pixels": int(counts.sum()),
        "samplable_total": int(samplable.sum()),
        "no_data_labelled_pixels": int((no_data & (ref.labels > 0)).sum()),
        "overlap": {"rule": options.overlap_rule, **ref.stats},
        "unknown_codes": dict(sorted(unknown.items())),
        "polygons_read": sum(int(s.get("polygons_read", 0)) for s in per_source.values()),
        "polygons_used": sum(int(s.get("polygons_used", 0)) for s in per_source.values()),
        "polygons_rasterised": len(keys),
        "polygon_keys": keys,
        "sources": per_source,
        "erosion_px": options.erosion_px,
        "erosion_per_class": {str(k): v for k, v in erosion.items()},
        "upstream": feats_meta.get("run_id"),
    }
    if from_store:
        meta["validated"] = _merge_lineage([part.lineage(keys) for part in from_store])
    uri = ctx.tile_uri(NAME, tile.id)
    eopatch.save(ctx.storage, uri, patch, meta=ctx.marker_meta(NAME, tile.id, meta))
    return [uri]
