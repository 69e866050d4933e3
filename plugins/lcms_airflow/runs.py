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
RUN_KEYS = ("config", "season", "tiles", "skip_existing", "upstream_run_id", "project", "params")

#: Extra trigger-form parameters of some stages: name -> (default, description). They reach the
#: stage as ``RunContext.params``; an empty value means "the stage's default".
STAGE_PARAMS: dict[str, dict[str, tuple[str, str]]] = {
    "change_detection": {
        "before_season": ("", "Season to compare against; empty = the season before `season` in the config."),
    },
}


def _stage_params(stage: str | None, source: dict[str, Any]) -> dict[str, Any]:
    names = STAGE_PARAMS.get(stage or "", {})
    return {name: source[name] for name in names if source.get(name)}


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
        }
    return list(specs.values())


def run_spec_from_params(params: dict[str, Any], stage: str | None = None) -> dict[str, Any]:
    """The run spec of a hand-triggered run."""
    tiles = params.get("tiles") or []
    if isinstance(tiles, str):
        tiles = [t.strip() for t in tiles.replace(",", " ").split() if t.strip()]
    return {
        "config": str(params.get("config") or default_config_path()),
        "season": str(params.get("season") or ""),
        "tiles": list(tiles),
        "skip_existing": bool(params.get("skip_existing", False)),
        "upstream_run_id": params.get("upstream_run_id") or None,
        "project": None,
        "params": _stage_params(stage, params),
    }


def resolve_run_specs(
    params: dict[str, Any], event_extras: list[dict[str, Any]], stage: str | None = None
) -> list[dict[str, Any]]:
    """Run specs from asset events when the run was triggered by them, else from params."""
    from_events = run_specs_from_events(event_extras, stage)
    return from_events or [run_spec_from_params(params, stage)]


def season_for_date(seasons: dict[str, tuple[dt.date, dt.date]], when: dt.date) -> str:
    """The season a scheduled or backfill run at ``when`` processes: the latest one ended by then.

    A yearly schedule running early in year N+1 (or a backfill run dated then) thus processes the
    season of year N, whose imagery is complete.
    """
    ended = [(end, sid) for sid, (_, end) in seasons.items() if end < when]
    if not ended:
        first = min(start for start, _ in seasons.values())
        raise ValueError(f"no season of the config has ended by {when} (the first starts {first})")
    return max(ended)[1]
