"""What a stage run checks once, before any tile: its run parameters and that its inputs exist.

Every entry point (``lcms run``, the first task of a DAG run, an ECS container) calls
:func:`check_run` before it starts the tiles, so a missing upstream is reported once, as one line
naming the stage and season that are missing and the command that produces them, instead of a
traceback per tile. The errors raised here are *permanent* (:attr:`LcmsError.permanent`): an
orchestrator fails the task at once rather than retrying what cannot succeed.

A stage module declares its inputs with ``needs(ctx) -> list[Need]`` and may validate its run
parameters and options against the config with ``check(ctx) -> None``.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lcms_tasks.errors import UpstreamMissingError
from lcms_tasks.stages import check_run_params, get_stage, stage_info

if TYPE_CHECKING:
    from lcms_tasks.context import RunContext

log = logging.getLogger(__name__)

#: How many tile ids a message lists before it says "...".
_SHOWN = 5


@dataclass(frozen=True)
class Need:
    """An input of a stage run: the outputs of ``stage`` for ``season``.

    ``artefact``: a run-level artefact of that stage (``<stage>/_run/<artefact>``, e.g. the training
    ``model``); None: the stage's per-tile outputs for every tile of the run (or, with ``any_tile``,
    for at least one of them: the stage copes with gaps and reports them).
    """

    stage: str
    season: str
    artefact: str | None = None
    any_tile: bool = False
    what: str = ""  # how the message calls the input, e.g. "the model"; default: "<stage> output"


def produce_command(ctx: RunContext, stage: str, season: str, tiles: list[str] | None = None) -> str:
    """The ``lcms run`` command line that produces ``stage`` for ``season`` (and ``tiles``)."""
    cmd = ["lcms", "run", stage, "--config", ctx.config_path or "CONFIG", "--season", season]
    if tiles and stage_info(stage).mapped:
        for tile in tiles[:_SHOWN]:
            cmd += ["--tile", tile]
        if len(tiles) > _SHOWN:
            cmd.append("...")
    return shlex.join(cmd).replace("'...'", "...")


def _shown(ids: list[str]) -> str:
    return ", ".join(ids[:_SHOWN]) + (f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else "")


def check_need(ctx: RunContext, stage: str, need: Need) -> None:
    """``UpstreamMissingError`` (one line) when ``need`` is not met for the run's tiles."""
    what = need.what or f"the {need.stage} output"
    season_text = f"season {need.season}"
    if need.artefact is not None:
        uri = ctx.run_uri(need.stage, need.artefact, season=need.season)
        if ctx.storage.is_complete(uri):
            return
        raise UpstreamMissingError(
            f"{stage} (season {ctx.season}) needs {what} of {season_text}, which is missing ({uri}): "
            f"produce it with `{produce_command(ctx, need.stage, need.season)}`" + _chain_hint(need.stage, need.season),
            stage=need.stage,
            season=need.season,
        )
    tiles = [t.id for t in ctx.tiles()]
    done = ctx.storage.complete_children(ctx.stage_uri(need.stage, season=need.season))
    missing = [t for t in tiles if t not in done]
    if not missing or (need.any_tile and len(missing) < len(tiles)):
        return
    folder = ctx.stage_uri(need.stage, season=need.season)
    raise UpstreamMissingError(
        f"{stage} (season {ctx.season}) needs {what} of {season_text} for {len(missing)} of {len(tiles)} tile(s) "
        f"({_shown(missing)}), which is missing under {folder}: produce it with "
        f"`{produce_command(ctx, need.stage, need.season, missing if len(missing) < len(tiles) else None)}`"
        + _chain_hint(need.stage, need.season),
        stage=need.stage,
        season=need.season,
        tiles=missing,
    )


def _chain_hint(stage: str, season: str) -> str:
    return f" (in Airflow: trigger lcms_{stage}, or the chain from lcms_download, with season {season})"


def check_run(stage: str, ctx: RunContext) -> None:
    """Validate the run (parameters, tile subset, stage-specific checks) and its inputs; raise before any work.

    Normalises ``ctx.params`` (empty values dropped). Raises ``ConfigError`` for bad parameters or tile
    ids and ``UpstreamMissingError`` for a missing input; both are permanent.
    """
    ctx.params = check_run_params(stage, ctx.params)
    ctx.tiles()  # unknown tile ids: ConfigError naming them
    module = get_stage(stage)
    check = getattr(module, "check", None)
    needs = getattr(module, "needs", None)
    for pctx in ctx.contexts_for(stage):  # a product stage: every product's options and inputs
        pctx.params = ctx.params
        if check is not None:
            check(pctx)
        for need in needs(pctx) if needs is not None else []:
            check_need(pctx, stage, need)
