"""One factory builds every LCMS stage DAG.

Shape of a stage DAG::

    resolve  ->  plan (tile batches)  ->  run_batch (mapped, one per batch)  ->  publish
                                    or ->  run_season (not mapped)          ->  publish

``resolve`` turns trigger params or the upstream stage's asset events into run
specs; ``plan`` splits each run's tiles into batches; ``run_batch`` executes
one batch with the configured tile runner (in the worker for the Local and
Celery executors, or as an ECS task); ``publish`` checks in storage that every
planned tile is complete and emits this stage's asset event, whose extra
carries config, season, tiles and run id to the next stage. Only URIs and
small summaries travel through XCom.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.sdk import DAG, Asset, Metadata, Param, get_current_context, task

from lcms_airflow import runs, tile_runners
from lcms_tasks.stages import StageInfo, stage_info

OWNER = "lcms"


def stage_asset(stage: str) -> Asset:
    """The asset that stands for 'stage outputs of some (project, season) are complete'."""
    return Asset(name=f"lcms_{stage}", uri=f"x-lcms://stages/{stage}", group="lcms")


def _doc(info: StageInfo) -> str:
    trigger = (
        f"Runs when **lcms_{info.upstream}** publishes its asset (same config, season and tiles), "
        "or by hand with the parameters below."
        if info.upstream
        else "Runs by hand (or from a schedule) with the parameters below."
    )
    work = "mapped over tile batches" if info.mapped else "once for the whole season"
    return (
        f"### LCMS stage `{info.name}`\n\n{info.summary}\n\n{trigger} Work runs {work}; "
        f"outputs land under the config's storage root at `<project>/<season>/{info.name}/`.\n\n"
        "Parameters: `config` (path of the project YAML), `season` (empty: the latest season), "
        "`tiles` (empty: all tiles), `skip_existing` (skip tiles whose output is complete)."
        + "".join(f" `{name}`: {desc}" for name, (_, desc) in runs.STAGE_PARAMS.get(info.name, {}).items())
    )


def _params(stage: str) -> dict[str, Param]:
    params = {
        "config": Param(runs.default_config_path(), type="string", description="Path of the project config YAML."),
        "season": Param("", type="string", description="Season id from the config; empty = the latest season."),
        "tiles": Param([], type="array", items={"type": "string"}, description="Tile ids; empty = all tiles."),
        "skip_existing": Param(False, type="boolean", description="Skip tiles whose output is already complete."),
    }
    for name, (default, description) in runs.STAGE_PARAMS.get(stage, {}).items():
        params[name] = Param(default, type="string", description=description)
    return params


def _event_extras(context: Any, upstream: str | None) -> list[dict[str, Any]]:
    if not upstream:
        return []
    events = context.get("triggering_asset_events") or {}
    try:
        selected = events[stage_asset(upstream)]
    except KeyError:
        return []
    return [dict(e.extra or {}) for e in selected]


def build_stage_dag(stage: str) -> DAG:
    """The DAG ``lcms_<stage>`` for one pipeline stage."""
    info = stage_info(stage)
    asset = stage_asset(stage)
    runner = tile_runners.configured_runner()
    with DAG(
        dag_id=f"lcms_{stage}",
        description=info.summary,
        doc_md=_doc(info),
        # The first stage runs by hand, or on LCMS_DOWNLOAD_SCHEDULE (a cron expression or preset such as
        # "@yearly" for yearly crop runs; backfills of past seasons: `airflow backfill create`).
        schedule=[stage_asset(info.upstream)] if info.upstream else (os.environ.get("LCMS_DOWNLOAD_SCHEDULE") or None),
        start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        params=_params(stage),
        tags=["lcms", f"stage:{stage}", "mapped" if info.mapped else "season"],
        default_args={
            "owner": OWNER,
            "retries": int(os.environ.get("LCMS_TASK_RETRIES", "2")),
            "retry_delay": dt.timedelta(seconds=int(os.environ.get("LCMS_RETRY_DELAY_SECONDS", "30"))),
        },
        max_active_runs=4,
    ) as dag:

        @task(task_id="resolve", retries=0)
        def resolve() -> list[dict[str, Any]]:
            """Decide which config/season/tiles this run processes, and validate them."""
            from lcms_tasks.config import load_config

            context = get_current_context()
            specs = runs.resolve_run_specs(dict(context["params"]), _event_extras(context, info.upstream), stage=stage)
            # Scheduled and backfill runs carry a data interval: they process the season ended by then.
            interval_end = context.get("data_interval_end")
            run_type = context["dag_run"].run_type
            scheduled = str(getattr(run_type, "value", run_type)) in {"scheduled", "backfill"}
            for spec in specs:
                cfg = load_config(spec["config"])
                if not spec["season"] and scheduled and interval_end is not None:
                    spec["season"] = runs.season_for_date(
                        {k: (v.start, v.end) for k, v in cfg.seasons.items()}, interval_end.date()
                    )
                spec["season"] = spec["season"] or cfg.default_season()
                cfg.season(spec["season"])
                spec["project"] = cfg.project
                spec["run_id"] = str(context["run_id"])
            return specs

        @task(task_id="plan", retries=0)
        def plan(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            """Split each run's tiles into batches: one mapped task instance per batch."""
            from lcms_tasks.config import load_config
            from lcms_tasks.context import RunContext
            from lcms_tasks.runner import plan_batches

            items = []
            for spec in specs:
                ctx = RunContext.create(load_config(spec["config"]), season=spec["season"], run_id=spec["run_id"])
                for batch in plan_batches(ctx, spec["tiles"] or None):
                    items.append({**spec, "batch": batch["id"], "tile_ids": batch["tile_ids"]})
            return items

        @task(task_id="publish", outlets=[asset], retries=0)
        def publish(specs: list[dict[str, Any]]) -> Any:
            """Check every planned tile is complete, write the run summary, emit the asset event."""
            from lcms_airflow.publish import summarise_run

            for spec in specs:
                summary = summarise_run(stage, spec)
                yield Metadata(
                    asset,
                    extra={
                        **{k: spec.get(k) for k in runs.RUN_KEYS},
                        "run_id": spec["run_id"],
                        "stage": stage,
                        **summary,
                    },
                )

        # TaskFlow calls return XComArgs at parse time; mypy sees the functions' runtime signatures.
        specs: Any = resolve()
        if info.mapped:
            items = plan(specs)
            done = runner.map_batches(stage, items)
        else:
            done = runner.run_season(stage, specs)
        done >> publish(specs)
    return dag
