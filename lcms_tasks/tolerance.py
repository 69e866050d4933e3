"""Failed tiles at country scale: how many a stage run tolerates, what it hands on, how to re-run them.

A per-tile stage run ends with :func:`finish_stage_run` (the DAG's ``publish`` task, or ``lcms run``
after its tiles). It reads storage, not the tasks' results, so it is the same for every tile runner:

* every tile of the run (the tiles an upstream run left out aside) whose output is complete succeeded;
  any other failed, with the error its failure record holds (``<stage>/_run/failures/<run id>/``);
* within the stage's tolerance (``failures`` in the config) the run is handed on: its summary (and the
  asset event) carries the failed tiles as ``excluded`` gaps with their reason, later stages process the
  other tiles and the report lists the gaps;
* beyond it, :class:`TooManyFailedTilesError` names the tiles and the command that re-runs them.

Either way the summary is written first (``<stage>/_run/runs/<run id>.json``), so
:func:`rerun_spec` finds the failed tiles of any run: ``lcms rerun-failed STAGE --run-id ...`` or the
trigger parameter ``rerun_failed`` processes exactly those tiles, with the rest of the run's scope
complete already (``skip_existing``), and the chain below fills the gaps.
"""

from __future__ import annotations

import datetime as dt
import logging
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lcms_tasks.errors import ConfigError, TileFailureError
from lcms_tasks.logs import run_log

if TYPE_CHECKING:
    from lcms_tasks.context import RunContext

log = logging.getLogger(__name__)

#: Longest error text a gap carries (the failure record keeps the whole error and its traceback).
_REASON_CHARS = 300


class TooManyFailedTilesError(TileFailureError):
    """More tiles of a stage run failed than its tolerance allows; the run is not handed on."""

    def __init__(self, outcome: StageOutcome, command: str) -> None:
        super().__init__(outcome.stage, outcome.failed, permanent=False)
        self.outcome = outcome
        self.headline = (
            f"stage {outcome.stage!r}, season {outcome.season}: {len(outcome.failed)} of {len(outcome.planned)} "
            f"tile(s) failed, more than the {outcome.allowed} {outcome.tolerance_key} tolerates; once the cause is "
            f"fixed, re-run them with `{command}`"
        )
        shown = "; ".join(f"{tile}: {err}" for tile, err in sorted(outcome.failed.items())[:10])
        more = f" (and {len(outcome.failed) - 10} more)" if len(outcome.failed) > 10 else ""
        self.args = (f"{self.headline}. Failed: {shown}{more}",)


@dataclass
class StageOutcome:
    """What one run of a per-tile stage produced, read from storage."""

    stage: str
    season: str
    run_id: str
    planned: list[str]  # the tiles the run had to produce (upstream gaps not counted)
    failed: dict[str, str]  # tile -> error
    allowed: int
    tolerance_key: str  # the config key the tolerance comes from
    excluded: dict[str, str] = field(default_factory=dict)  # gaps handed in by upstream runs

    @property
    def within_tolerance(self) -> bool:
        return len(self.failed) <= self.allowed

    def gaps(self) -> dict[str, str]:
        """This run's failed tiles as gaps for the stages below: tile -> reason (stage, run, error)."""
        return {
            tile: _clip(f"{self.stage} failed (run {self.run_id}): {err}") for tile, err in sorted(self.failed.items())
        }

    def handed_on(self) -> dict[str, str]:
        """Every gap the stages below must leave out: the upstream ones and this run's failed tiles."""
        return {**self.excluded, **self.gaps()}


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def failure_record_uri(ctx: RunContext, stage: str, tile_id: str, run_id: str | None = None) -> str:
    return ctx.run_uri(stage, "failures", run_id or ctx.run_id, f"{tile_id}.json")


def _recorded_error(ctx: RunContext, stage: str, tile_id: str) -> str:
    uri = failure_record_uri(ctx, stage, tile_id)
    if ctx.storage.exists(uri):
        try:
            return str(ctx.storage.read_json(uri).get("error") or "failed (no message)")
        except (ValueError, OSError) as err:
            return f"failed (its failure record {uri} is unreadable: {err})"
    return "no output and no failure record (the task did not run to the end: killed, timed out or lost)"


def assess(stage: str, ctx: RunContext) -> StageOutcome:
    """The outcome of run ``ctx.run_id`` of per-tile stage ``stage``: which planned tiles have no output."""
    tolerance, key = ctx.config.failures.for_stage(stage)
    planned = [t.id for t in ctx.tiles()]
    complete: set[str] | None = None
    for pctx in ctx.contexts_for(stage):  # a product stage: a tile succeeded when every product's output is there
        done = ctx.storage.complete_children(pctx.stage_uri(stage))
        complete = done if complete is None else complete & done
    failed = {t: _recorded_error(ctx, stage, t) for t in planned if t not in (complete or set())}
    return StageOutcome(
        stage=stage,
        season=ctx.season,
        run_id=ctx.run_id,
        planned=planned,
        failed=failed,
        allowed=tolerance.allowed(len(planned)),
        tolerance_key=key,
        excluded=dict(ctx.excluded),
    )


def rerun_command(ctx: RunContext, stage: str, run_id: str | None = None) -> str:
    """The command line that re-runs the failed tiles of run ``run_id`` (default this one) of ``stage``."""
    return shlex.join(
        [
            "lcms",
            "rerun-failed",
            stage,
            "--config",
            ctx.config_path or "CONFIG",
            "--season",
            ctx.season,
            "--run-id",
            run_id or ctx.run_id,
        ]
    )


def summary_uri(ctx: RunContext, stage: str, run_id: str | None = None) -> str:
    return ctx.run_uri(stage, "runs", f"{safe_run_id(run_id or ctx.run_id)}.json")


def safe_run_id(run_id: str) -> str:
    """``run_id`` as a file name (Airflow run ids hold ':' and '+')."""
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in run_id)


def base_summary(stage: str, ctx: RunContext) -> dict[str, Any]:
    """The fields every stage run's summary has."""
    return {
        "stage": stage,
        "project": ctx.config.project,
        "season": ctx.season,
        "run_id": ctx.run_id,
        "upstream_run_id": ctx.upstream_run_id,
        "rerun_of": ctx.rerun_of,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        # The run's scope as it was asked for ([] = every tile), gaps included: what a re-run covers.
        "tiles": [t.id for t in ctx.tiles(include_excluded=True)] if ctx.is_subset else [],
        "params": dict(ctx.params),
        "skip_existing": ctx.skip_existing,
    }


def durations(ctx: RunContext, stage: str, slowest: int = 5) -> dict[str, Any]:
    """Seconds per tile of run ``ctx.run_id`` (the batches' timing files): count, min, median, max, slowest."""
    folder = ctx.run_uri(stage, "timings", ctx.run_id)
    seconds: dict[str, float] = {}
    for name in ctx.storage.list_names(folder):
        try:
            seconds.update({str(k): float(v) for k, v in ctx.storage.read_json(f"{folder}/{name}").items()})
        except (ValueError, OSError, AttributeError) as err:
            log.warning("%s: unreadable timing file %s/%s (%s): left out of the durations", stage, folder, name, err)
    if not seconds:
        return {"n_tiles": 0}
    ordered = sorted(seconds.values())
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    top = sorted(seconds.items(), key=lambda item: (-item[1], item[0]))[:slowest]
    return {
        "n_tiles": len(ordered),
        "min_s": ordered[0],
        "median_s": round(median, 3),
        "max_s": ordered[-1],
        "total_s": round(sum(ordered), 3),
        "slowest": [{"tile": tile, "seconds": s} for tile, s in top],
    }


def finish_stage_run(stage: str, ctx: RunContext) -> dict[str, Any]:
    """Assess run ``ctx.run_id`` of per-tile ``stage``, write its summary, and return it.

    The summary's ``excluded`` is what the stages below must leave out (the upstream gaps and this run's
    failed tiles); ``excluded_upstream`` the gaps it was handed. Raises :class:`TooManyFailedTilesError`
    (after writing the summary) when more tiles failed than the tolerance allows.
    """
    outcome = assess(stage, ctx)
    summary = {
        **base_summary(stage, ctx),
        "n_planned": len(outcome.planned),
        "tiles_complete": len(outcome.planned) - len(outcome.failed),
        "failed": dict(sorted(outcome.failed.items())),
        "allowed_failures": outcome.allowed,
        "tolerance": outcome.tolerance_key,
        "within_tolerance": outcome.within_tolerance,
        "excluded_upstream": dict(sorted(outcome.excluded.items())),
        "excluded": dict(sorted(outcome.handed_on().items())),
        "durations": durations(ctx, stage),
    }
    ctx.storage.write_json(summary_uri(ctx, stage), summary)
    timing = summary["durations"]
    run_log(log, ctx, stage).info(
        "%s: %d of %d tile(s) done, %d failed (%d tolerated)%s",
        stage,
        summary["tiles_complete"],
        summary["n_planned"],
        len(outcome.failed),
        outcome.allowed,
        f"; seconds per tile min {timing['min_s']}, median {timing['median_s']}, max {timing['max_s']} "
        f"(slowest {timing['slowest'][0]['tile']})"
        if timing["n_tiles"]
        else "",
    )
    if not outcome.within_tolerance:
        raise TooManyFailedTilesError(outcome, rerun_command(ctx, stage))
    if outcome.failed:
        log.warning(
            "%s (season %s, run %s): %d of %d tile(s) failed, within the %d %s tolerates; handed on as gaps: %s. "
            "Re-run them with `%s`",
            stage,
            ctx.season,
            ctx.run_id,
            len(outcome.failed),
            len(outcome.planned),
            outcome.allowed,
            outcome.tolerance_key,
            ", ".join(sorted(outcome.failed)),
            rerun_command(ctx, stage),
        )
    return summary


def check_within_tolerance(stage: str, ctx: RunContext) -> RunContext:
    """Before a stage's season-level step: ``ctx`` less this run's failed tiles, or the error beyond tolerance."""
    outcome = assess(stage, ctx)
    if not outcome.within_tolerance:
        raise TooManyFailedTilesError(outcome, rerun_command(ctx, stage))
    return ctx.with_excluded(outcome.gaps())


def rerun_spec(stage: str, ctx: RunContext, run_id: str) -> dict[str, Any]:
    """What re-running the failed tiles of run ``run_id`` of ``stage`` (season ``ctx.season``) processes.

    The run's scope (``tiles``, [] = every tile), the gaps it was handed (``excluded``: they stay out),
    its run parameters, and ``failed``, the tiles to process; the others of the scope are complete.
    ``ConfigError`` when the run left no summary or had no failed tile.
    """
    from lcms_tasks.stages import stage_info

    if not stage_info(stage).mapped:
        raise ConfigError(
            f"stage {stage!r} runs once per season and has no failed tiles to re-run: re-run the per-tile stage "
            "whose tiles failed (its run summary and the report's gaps name it)",
            field="rerun_failed",
        )
    uri = summary_uri(ctx, stage, run_id)
    if not ctx.storage.exists(uri):
        raise ConfigError(
            f"no summary of run {run_id!r} of stage {stage!r} in season {ctx.season} ({uri}): the run id is the one "
            "the run summary, the report's gaps or the failed run's log names (in Airflow: the DAG run id of "
            f"lcms_{stage})",
            field="rerun_failed",
        )
    summary = ctx.storage.read_json(uri)
    failed = sorted(summary.get("failed") or {})
    if not failed:
        raise ConfigError(
            f"run {run_id!r} of stage {stage!r} in season {ctx.season} had no failed tile: nothing to re-run",
            field="rerun_failed",
        )
    return {
        "tiles": list(summary.get("tiles") or []),
        "excluded": dict(summary.get("excluded_upstream") or {}),
        "params": dict(summary.get("params") or {}),
        "failed": failed,
        "rerun_of": run_id,
    }
