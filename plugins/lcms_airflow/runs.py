"""Which (config, season, tiles) a DAG run processes: from trigger params or asset events.

Pure functions over dicts (no Airflow import) so they are unit-tested alone.
A run triggered by hand or by a schedule reads its trigger-form params; a run
triggered by the upstream stage's asset reads the event's ``extra``, which
carries the config, season, tile subset and the upstream run id, so a
features run knows exactly which download run it follows.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

#: Keys every run spec carries (and every asset event's extra).
#: ``excluded``: tile -> reason, the gaps upstream runs handed on (their failed tiles, within tolerance).
RUN_KEYS = (
    "config",
    "season",
    "tiles",
    "skip_existing",
    "upstream_run_id",
    "project",
    "params",
    "excluded",
    "rerun_of",
)


def _stage_params(stage: str | None, source: dict[str, Any]) -> dict[str, Any]:
    """The run parameters (``RunContext.params``) of ``stage`` found in ``source``; empty ones dropped."""
    if not stage:
        return {}
    from lcms_tasks.stages import stage_info

    names = [p.name for p in stage_info(stage).params]
    return {name: source[name] for name in names if source.get(name) not in (None, "")}


def default_config_path() -> str:
    """``LCMS_CONFIG`` if set, else the demo config shipped with the project."""
    env = os.environ.get("LCMS_CONFIG")
    if env:
        return env
    return str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")


def run_specs_from_events(extras: list[dict[str, Any]], stage: str | None = None) -> list[dict[str, Any]]:
    """One run spec per distinct (config, season) among upstream events; the latest event wins."""
    specs: dict[tuple[str, str], dict[str, Any]] = {}
    for extra in extras:
        if not extra.get("config") or not extra.get("season"):
            continue  # an event not produced by an LCMS stage (e.g. a manual asset event without extra)
        key = (str(extra["config"]), str(extra["season"]))
        specs[key] = {
            "config": key[0],
            "season": key[1],
            "tiles": list(extra.get("tiles") or []),
            "skip_existing": bool(extra.get("skip_existing", False)),
            "upstream_run_id": extra.get("run_id"),
            "project": extra.get("project"),
            "params": _stage_params(stage, dict(extra.get("params") or {})),
            "excluded": {str(k): str(v) for k, v in dict(extra.get("excluded") or {}).items()},
            "rerun_of": extra.get("rerun_of") or None,
        }
    return list(specs.values())


def run_spec_from_params(params: dict[str, Any], stage: str | None = None) -> dict[str, Any]:
    """The run spec of a hand-triggered run."""
    tiles = params.get("tiles") or []
    if isinstance(tiles, str):
        tiles = tiles.split(",")
    # One id per line in the form; commas and spaces separate too; blank lines are ignored.
    tiles = [t for item in tiles for t in str(item).replace(",", " ").split()]
    return {
        "config": str(params.get("config") or default_config_path()),
        "season": str(params.get("season") or ""),
        "tiles": list(tiles),
        "skip_existing": bool(params.get("skip_existing", False)),
        "upstream_run_id": params.get("upstream_run_id") or None,
        "project": None,
        "params": _stage_params(stage, params),
        "excluded": {},
        "rerun_of": None,
        # The failed tiles of this run id (of the same stage and season) are what the run processes.
        "rerun_failed": str(params.get("rerun_failed") or "").strip() or None,
    }


def resolve_run_specs(
    params: dict[str, Any], event_extras: list[dict[str, Any]], stage: str | None = None
) -> list[dict[str, Any]]:
    """Run specs from asset events when the run was triggered by them, else from params."""
    from_events = run_specs_from_events(event_extras, stage)
    return from_events or [run_spec_from_params(params, stage)]


def prepare_spec(spec: dict[str, Any], stage: str, run_id: str, scheduled_date: dt.date | None) -> dict[str, Any]:
    """``spec`` completed (season, project, run id) and checked before any work.

    Checks the config (everything :func:`lcms_tasks.checks.check_project` can check without imagery,
    for the run's season), the season, the tile subset, the stage's run parameters and that the
    stage's inputs exist. Raises the LCMS error (permanent: a retry cannot help) naming the problem.
    ``scheduled_date``: the data interval's end of a scheduled or backfill run without a season.
    """
    from lcms_tasks.checks import check_project
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.preflight import check_run

    cfg = load_config(spec["config"])
    season = spec.get("season") or ""
    if not season and scheduled_date is not None:
        season = season_for_date({k: (v.start, v.end) for k, v in cfg.seasons.items()}, scheduled_date)
    season = season or cfg.default_season()
    cfg.season(season)  # ConfigError naming the known seasons
    check_project(cfg, config_path=spec["config"], seasons=[season])
    spec = dict(spec)
    rerun = spec.pop("rerun_failed", None)
    if rerun:
        spec.update(_rerun(cfg, stage, season, str(rerun), spec))
    ctx = RunContext.create(
        cfg,
        season=season,
        run_id=run_id,
        config_path=spec["config"],
        params=dict(spec.get("params") or {}),
        subset=list(spec.get("tiles") or []) or None,
        excluded=dict(spec.get("excluded") or {}),
        rerun_of=spec.get("rerun_of"),
    )
    check_run(stage, ctx)
    return {
        **spec,
        "season": season,
        "project": cfg.project,
        "run_id": run_id,
        "params": ctx.params,
        "tiles": [t.id for t in ctx.tiles(include_excluded=True)] if ctx.is_subset else [],
        "excluded": dict(ctx.excluded),
    }


def _rerun(cfg: Any, stage: str, season: str, run_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The spec fields of a run that re-runs the failed tiles of run ``run_id`` (trigger param ``rerun_failed``)."""
    from lcms_tasks.context import RunContext
    from lcms_tasks.errors import ConfigError
    from lcms_tasks.tolerance import rerun_spec

    if spec.get("tiles"):
        raise ConfigError(
            f"rerun_failed re-runs the failed tiles of run {run_id!r} over that run's tiles: leave `tiles` empty",
            field="rerun_failed",
        )
    found = rerun_spec(stage, RunContext.create(cfg, season=season, run_id=run_id), run_id)
    return {
        "tiles": found["tiles"],
        "excluded": found["excluded"],
        "params": {**found["params"], **dict(spec.get("params") or {})},
        "skip_existing": True,
        "rerun_of": run_id,
    }


def season_for_date(seasons: dict[str, tuple[dt.date, dt.date]], when: dt.date) -> str:
    """The season a scheduled or backfill run at ``when`` processes: the latest one ended by then.

    A yearly schedule running early in year N+1 (or a backfill run dated then) thus processes the
    season of year N, whose imagery is complete.
    """
    ended = [(end, sid) for sid, (_, end) in seasons.items() if end < when]
    if not ended:
        from lcms_tasks.errors import ConfigError

        first = min(start for start, _ in seasons.values())
        raise ConfigError(f"no season of the config has ended by {when} (the first starts {first})", field="seasons")
    return max(ended)[1]
