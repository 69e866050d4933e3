"""Stage change_detection: relevant class transitions between two seasons, per tile.

Compares the post-processed maps of the *before* season and of the run's season
(the *after* season, under which the output is stored). The before season is,
in order of precedence, the run parameter ``before_season``, the option
``before_season``, or the season preceding the run's season by start date.

Output: folder ``change_detection/T`` with ``changes.gpkg`` (layer ``changes``;
columns change_id, from_class, to_class, from_name, to_name, area_m2,
confidence, tile, season_before, season_after, geometry in the tile CRS). The
first season has no before season: its table is empty and the meta says so.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, field_validator

from lcms_tasks.schema import StrictModel

if TYPE_CHECKING:
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import Tile
    from lcms_tasks.preflight import Need

NAME = "change_detection"
GPKG_NAME = "changes.gpkg"

log = logging.getLogger(__name__)

# Relevant transitions for the land-cover demo legend: urbanisation, flooding/new water, land
# clearing, cropland expansion and abandonment. "*" means any other class.
DEFAULT_TRANSITIONS: list[dict[str, str]] = [
    {"from": "*", "to": "built-up"},
    {"from": "*", "to": "water"},
    {"from": "forest", "to": "bare land"},
    {"from": "forest", "to": "cropland"},
    {"from": "grassland", "to": "cropland"},
    {"from": "cropland", "to": "grassland"},
]


class Options(StrictModel):
    """Options of the change_detection stage."""

    before_season: str | None = Field(
        None,
        description="Season to compare with (None: the season before the run's season; a run parameter "
        "'before_season' overrides this).",
    )
    transitions: list[dict[str, str]] = Field(
        default_factory=lambda: [dict(t) for t in DEFAULT_TRANSITIONS],
        description="Relevant transitions as {from: class name, to: class name}; '*' means any other class. "
        "Names are checked against the legend at run time. Left unset, pairs naming classes absent from the "
        "legend are skipped (and if none is left, every change counts).",
    )
    min_area_m2: float = Field(5000.0, ge=0, description="Change polygons smaller than this (m²) are dropped.")
    min_confidence: float = Field(
        0.5, ge=0, le=1, description="Change polygons whose mean change confidence is below this are dropped."
    )
    confidence_rule: Literal["product", "min", "mean"] = Field(
        "product",
        description="Per-pixel change confidence from both maps' CONFIDENCE (averaged per polygon).",
    )

    @field_validator("transitions")
    @classmethod
    def _pairs(cls, v: list[dict[str, str]]) -> list[dict[str, str]]:
        for i, tr in enumerate(v):
            if set(tr) != {"from", "to"}:
                raise ValueError(f"transition {i} must have exactly the keys 'from' and 'to', got {sorted(tr)}")
            if not tr["from"].strip() or not tr["to"].strip():
                raise ValueError(f"transition {i} has an empty class name")
        return v


def _explicit_before(ctx: RunContext, options: Options) -> tuple[str | None, str]:
    """(before season asked for by the run parameter or the option, or None; where it was asked)."""
    if ctx.params.get("before_season"):
        return str(ctx.params["before_season"]), "run parameter before_season"
    if options.before_season:
        return options.before_season, "stages.change_detection.before_season"
    return None, ""


def before_season_of(ctx: RunContext, options: Options) -> str | None:
    """The season to compare the run's season with (None for the first season)."""
    from lcms_tasks.errors import ConfigError

    cfg = ctx.config
    chosen, where = _explicit_before(ctx, options)
    if chosen:
        if chosen not in cfg.seasons:
            raise ConfigError(
                f"before season {chosen!r} is not a season of the config ({', '.join(cfg.seasons)})", field=where
            )
        if chosen == ctx.season:
            raise ConfigError(
                f"before season {chosen!r} is the run's own season; a map compared with itself has no change",
                field=where,
            )
        if cfg.season(chosen).start >= cfg.season(ctx.season).start:
            log.warning("before season %s does not start before the after season %s", chosen, ctx.season)
        return chosen
    order = cfg.season_ids_ordered()
    index = order.index(ctx.season)
    return order[index - 1] if index > 0 else None


def check(ctx: RunContext) -> None:
    """The before season and the transitions are valid; says once when the implicit before season has no maps."""
    options: Options = ctx.config.stages.change_detection
    before = before_season_of(ctx, options)
    _transitions(ctx, options)
    if before is None:
        log.info("change_detection: season %s is the project's first season: no before map, no changes", ctx.season)
    elif _explicit_before(ctx, options)[0] is None:
        done = ctx.storage.complete_children(ctx.stage_uri("postprocessing", season=before))
        lacking = [t.id for t in ctx.tiles() if t.id not in done]
        if lacking:
            log.warning(
                "change_detection (season %s): %d of %d tile(s) have no post-processed map of the season before "
                "(%s): their change tables are empty; run the chain for season %s, then change_detection again",
                ctx.season,
                len(lacking),
                len(ctx.tiles()),
                before,
                before,
            )


def needs(ctx: RunContext) -> list[Need]:
    """The run season's maps, and the before season's when it was asked for explicitly."""
    from lcms_tasks.preflight import Need

    options: Options = ctx.config.stages.change_detection
    out = [Need("postprocessing", ctx.season, what="the post-processed map")]
    explicit, where = _explicit_before(ctx, options)
    if explicit:
        out.append(Need("postprocessing", explicit, what=f"the post-processed map (before season, from {where})"))
    return out


def _transitions(ctx: RunContext, options: Options) -> set[tuple[int, int]]:
    from lcms_tasks.changes import resolve_transitions
    from lcms_tasks.errors import ConfigError

    classes = {c.id: c.name for c in ctx.config.legend()}
    explicit = "transitions" in options.model_fields_set
    try:
        pairs = resolve_transitions(
            options.transitions, classes, strict=explicit, where="stages.change_detection.transitions"
        )
    except ValueError as err:
        raise ConfigError(str(err), path=ctx.config_path, field="stages.change_detection.transitions") from err
    if not explicit and not pairs:
        # The default set is written for the land-cover legend; on another legend every change counts.
        log.warning(
            "default transitions name no class of legend %r: every change counts", ctx.config.classification.legend
        )
        pairs = resolve_transitions([{"from": "*", "to": "*"}], classes)
    return pairs


def _load_map(ctx: RunContext, tile: Tile, season: str) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    from lcms_tasks import eopatch
    from lcms_tasks.errors import ArtefactMissingError

    uri = ctx.tile_uri("postprocessing", tile.id, season=season)
    if not ctx.storage.is_complete(uri):
        raise ArtefactMissingError(
            f"postprocessing of season {season} for tile {tile.id} is missing or incomplete ({uri}); "
            f"run postprocessing for season {season} first"
        )
    patch, meta = eopatch.load(ctx.storage, uri, features=["mask_timeless/CLASS", "data_timeless/CONFIDENCE"])
    cls = np.asarray(patch.mask_timeless["CLASS"])[..., 0].astype(np.uint8)
    conf = np.asarray(patch.data_timeless["CONFIDENCE"])[..., 0].astype(np.float32)
    return cls, conf, meta


def run(tile: Tile, ctx: RunContext) -> list[str]:
    """Detect the changes of one tile between the before season and the run's season."""
    from lcms_tasks.changes import (
        area_by_transition,
        detect_changes,
        empty_changes,
        min_pixels_for_area,
        vectorise_changes,
        write_changes,
    )
    from lcms_tasks.errors import StageError

    options: Options = ctx.config.stages.change_detection
    after = ctx.season
    before = before_season_of(ctx, options)
    transitions = _transitions(ctx, options)
    meta: dict[str, object] = {
        "season_before": before,
        "season_after": after,
        "confidence_rule": options.confidence_rule,
        "min_area_m2": options.min_area_m2,
        "min_confidence": options.min_confidence,
        "n_transitions": len(transitions),
    }
    before_missing = (
        before is not None
        and _explicit_before(ctx, options)[0] is None
        and not ctx.storage.is_complete(ctx.tile_uri("postprocessing", tile.id, season=before))
    )
    if before is None or before_missing:
        frame = empty_changes(tile.crs)
        meta["note"] = "no before season" if before is None else f"no post-processed map of the before season {before}"
        log.info("change_detection %s: %s, no changes", tile.id, meta["note"])
    else:
        cls_b, conf_b, meta_b = _load_map(ctx, tile, before)
        cls_a, conf_a, meta_a = _load_map(ctx, tile, after)
        if cls_b.shape != cls_a.shape:
            raise StageError(
                f"tile {tile.id}: postprocessing maps of seasons {before} {cls_b.shape} and {after} "
                f"{cls_a.shape} differ in size"
            )
        min_pixels = min_pixels_for_area(options.min_area_m2, tile.resolution)
        labels, regions = detect_changes(
            cls_b,
            cls_a,
            conf_b,
            conf_a,
            transitions,
            min_pixels,
            options.min_confidence,
            rule=options.confidence_rule,
        )
        frame = vectorise_changes(
            labels,
            regions,
            tile.transform(),
            tile.crs,
            class_names={c.id: c.name for c in ctx.config.legend()},
            tile_id=tile.id,
            season_before=before,
            season_after=after,
            min_area_m2=options.min_area_m2,
        )
        meta["upstream"] = {"before": meta_b.get("run_id"), "after": meta_a.get("run_id")}
        meta["changed_pixels_all_transitions"] = int(((cls_b != cls_a) & (cls_b != 0) & (cls_a != 0)).sum())
    by_transition = area_by_transition(frame)
    meta["n_changes"] = len(frame)
    meta["change_area_m2"] = float(sum(by_transition.values()))
    meta["change_area_m2_by_transition"] = by_transition
    uri = ctx.tile_uri(NAME, tile.id)
    with ctx.storage.writing_dir(uri, ctx.marker_meta(NAME, tile.id, meta)) as staging:
        write_changes(frame, staging / GPKG_NAME)
    if before is not None and not before_missing:
        log.info("change_detection %s: %s -> %s, %d change polygon(s)", tile.id, before, after, len(frame))
    return [uri]
