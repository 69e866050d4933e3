"""Run a stage over tiles or a batch: the one entry point every executor calls.

The CLI, an Airflow task, an ECS container and a Celery worker all call
:func:`run_tiles` / :func:`run_stage`. A tile that fails is recorded (its
error goes to ``<stage>/_run/failures/<run id>/<tile>.json``) and the other
tiles of the batch still run; the batch then raises :class:`TileFailureError`, so
the orchestrator retries it, and ``skip_existing`` lets the retry skip the
tiles already complete. Whether the stage run as a whole is usable despite failed
tiles is decided once, after every batch, by :mod:`lcms_tasks.tolerance`.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

from lcms_tasks.context import RunContext
from lcms_tasks.errors import LcmsError, TileFailureError
from lcms_tasks.grid import Tile, make_batches, select_tiles
from lcms_tasks.logs import run_log
from lcms_tasks.stages import get_stage, stage_info
from lcms_tasks.tolerance import check_within_tolerance, failure_record_uri

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """What a batch did: URIs written per tile, tiles skipped, tiles failed, seconds spent."""

    stage: str
    season: str
    run_id: str
    written: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    #: Seconds per tile processed (written or failed; skipped ones are not timed).
    durations: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run_tiles(ctx: RunContext, subset: list[str] | None) -> list[Tile]:
    return select_tiles(ctx.project_tiles(), subset) if subset is not None else ctx.tiles()


def tiles_of_batch(ctx: RunContext, batch_id: str, subset: list[str] | None = None) -> list[Tile]:
    """Tiles of ``batch_id`` as :func:`plan_batches` numbers them (over ``subset``, default the run's tiles)."""
    from lcms_tasks.errors import ConfigError

    tiles = _run_tiles(ctx, subset)
    batches = make_batches(tiles, ctx.config.grid.batch_size)
    for batch in batches:
        if batch.id == batch_id:
            by_id = {t.id: t for t in tiles}
            return [by_id[t] for t in batch.tile_ids]
    last = batches[-1].id if batches else "none"
    raise ConfigError(
        f"no batch {batch_id!r} among the {len(batches)} batch(es) of {len(tiles)} tile(s) of project "
        f"{ctx.config.project!r} (b0000 ... {last}; `lcms tiles list` shows them)",
        field="batch",
    )


def plan_batches(ctx: RunContext, subset: list[str] | None = None) -> list[dict[str, Any]]:
    """The batches of the run's tiles (or of ``subset``), as dicts for task mapping."""
    return [b.to_dict() for b in make_batches(_run_tiles(ctx, subset), ctx.config.grid.batch_size)]


def run_tiles(stage_name: str, tiles: list[Tile], ctx: RunContext, *, raise_on_failure: bool = True) -> BatchResult:
    """Run a mapped stage on ``tiles``; see the module docstring for failure handling."""
    if not stage_info(stage_name).mapped:
        raise ValueError(f"stage {stage_name!r} runs once per season, not per tile; use run_stage")
    stage = get_stage(stage_name)
    result = BatchResult(stage=stage_name, season=ctx.season, run_id=ctx.run_id)
    rlog = run_log(log, ctx, stage_name)
    permanent: list[str] = []
    start = time.perf_counter()
    contexts = ctx.contexts_for(stage_name)
    for done, tile in enumerate(tiles):
        # A product stage runs each product in turn on the tile (in config order: a product masked by
        # another finds that one's output of the tile written already).
        todo = [
            pctx
            for pctx in contexts
            if not (ctx.skip_existing and ctx.storage.is_complete(pctx.tile_uri(stage_name, tile.id)))
        ]
        if not todo:
            rlog.info("%s %s: complete already, skipped", stage_name, tile.id, tile=tile.id)
            result.skipped.append(tile.id)
            continue
        t0 = time.perf_counter()
        try:
            written: list[str] = []
            for pctx in todo:
                written.extend(stage.run(tile, pctx))
            result.written[tile.id] = written
        except Exception as err:  # one bad tile must not stop the batch; it is recorded and re-raised below
            if isinstance(err, LcmsError) and err.permanent:
                # The message says it all (file, field, what to do); the traceback goes to the failure record.
                rlog.error("%s %s failed: %s", stage_name, tile.id, err, tile=tile.id)
                permanent.append(tile.id)
            else:
                rlog.exception("%s %s failed", stage_name, tile.id, tile=tile.id)
            result.failed[tile.id] = f"{type(err).__name__}: {err}"
            result.durations[tile.id] = round(time.perf_counter() - t0, 3)
            ctx.storage.write_json(
                failure_record_uri(ctx, stage_name, tile.id),
                {
                    "tile": tile.id,
                    "stage": stage_name,
                    "product": pctx.product_name,
                    "error": result.failed[tile.id],
                    "traceback": traceback.format_exc(),
                },
            )
        else:
            result.durations[tile.id] = round(time.perf_counter() - t0, 3)
            rlog.info(
                "%s %s: done in %.1f s (batch: %d done, %d failed, %d left)",
                stage_name,
                tile.id,
                result.durations[tile.id],
                done + 1 - len(result.failed),
                len(result.failed),
                len(tiles) - done - 1,
                tile=tile.id,
            )
    result.seconds = time.perf_counter() - start
    if result.durations:  # one small file per batch: the run summary's durations per tile
        ctx.storage.write_json(
            ctx.run_uri(stage_name, "timings", ctx.run_id, f"{next(iter(result.durations))}.json"), result.durations
        )
    if result.failed and raise_on_failure:
        # Retrying cannot help when every failure is permanent (bad input, missing upstream).
        raise TileFailureError(stage_name, result.failed, permanent=len(permanent) == len(result.failed))
    return result


def run_batch(stage_name: str, batch_id: str, ctx: RunContext, subset: list[str] | None = None) -> BatchResult:
    """Run a mapped stage on one batch of the run's tiles (``subset``: the tiles the batches were planned on)."""
    return run_tiles(stage_name, tiles_of_batch(ctx, batch_id, subset), ctx)


def finalize_stage(stage_name: str, ctx: RunContext) -> list[str]:
    """The season-level step of a mapped stage that has one (after every batch); [] for the others."""
    info = stage_info(stage_name)
    if not info.finalize:
        return []
    # Beyond the tolerance nothing season-level is built; within it, from the tiles that succeeded.
    ctx = check_within_tolerance(stage_name, ctx)
    module = get_stage(stage_name)
    uris: list[str] = []
    for pctx in ctx.contexts_for(stage_name):
        uris.extend(module.finalize(pctx))
    return uris


def run_stage(stage_name: str, ctx: RunContext) -> list[str]:
    """Run a stage that works on the whole season at once (not mapped)."""
    if stage_info(stage_name).mapped:
        raise ValueError(f"stage {stage_name!r} is mapped per tile; use run_tiles / run_batch")
    info = stage_info(stage_name)
    module = get_stage(stage_name)
    uris: list[str] = []
    for pctx in ctx.contexts_for(stage_name):
        if info.season_artefact and ctx.skip_existing:
            kept = pctx.run_uri(stage_name, info.season_artefact)
            if ctx.storage.is_complete(kept):
                log.info("%s (%s): %s complete already, kept (skip_existing)", stage_name, pctx.product_name, kept)
                continue
        uris.extend(module.run(pctx))
    return uris
