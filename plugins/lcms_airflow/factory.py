"""One factory builds every LCMS stage DAG.

Shape of a stage DAG::

    resolve  ->  plan (tile batches)  ->  run_batch (mapped, one per batch)  ->  publish
                                    or ->  run_season (not mapped)          ->  publish

``resolve`` turns trigger params or the upstream stage's asset events into run
specs; ``plan`` splits each run's tiles into batches; ``run_batch`` executes
one batch with the configured tile runner (in the worker for the Local and
Celery executors, or as an ECS task); ``publish`` checks in storage which
planned tiles are complete (failed ones within the stage's tolerance, see
:mod:`lcms_tasks.tolerance`) and emits this stage's asset event, whose extra
carries config, season, tiles, gaps and run id to the next stage. Only URIs and
small summaries travel through XCom.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.sdk import DAG, Asset, Metadata, Param, TriggerRule, get_current_context, task

from lcms_airflow import runs, tile_runners
from lcms_tasks.stages import StageInfo, stage_info

OWNER = "lcms"


def stage_asset(stage: str) -> Asset:
    """The asset that stands for 'stage outputs of some (project, season) are complete'."""
    return Asset(name=f"lcms_{stage}", uri=f"x-lcms://stages/{stage}", group="lcms")


def _param_help(info: StageInfo) -> dict[str, str]:
    """What each trigger-form parameter means for this stage (the form's help and the DAG's doc)."""
    helps = {
        "config": "Path of the project config YAML (on the machines that run the tasks).",
        "season": "Season id from the config; empty = the latest season (a scheduled run: the season "
        "that has just ended).",
    }
    if info.mapped:
        helps["tiles"] = (
            "Tile ids to process (one per line); empty = every tile of the project. The subset flows down "
            "the chain: later stages, the model and the report cover these tiles only."
        )
        helps["skip_existing"] = "Skip tiles whose output of this stage is already complete (resume a run)."
        helps["rerun_failed"] = (
            f"Run id of an earlier lcms_{info.name} run (same season) whose failed tiles to re-run: this run "
            "processes those tiles only (the run's other tiles are complete) and the chain below fills the "
            "gaps they left. Leave `tiles` empty. Empty = a normal run."
        )
    else:
        helps["tiles"] = (
            f"This stage runs once for the season; `tiles` restricts it to the outputs of these tiles "
            f"(the {info.name} of a tile subset; the report then says it covers a subset). Empty = every "
            "tile. Set by the upstream stage when the chain runs."
        )
    for param in info.params:
        helps[param.name] = param.description
    return helps


def _doc(info: StageInfo) -> str:
    trigger = (
        f"Runs when **lcms_{info.upstream}** publishes its asset (same config, season and tiles), "
        "or by hand with the parameters below."
        if info.upstream
        else "Runs by hand (or from a schedule) with the parameters below."
    )
    work = "mapped over tile batches" if info.mapped else "once for the whole season"
    params = "\n".join(f"* `{name}`: {text}" for name, text in _param_help(info).items())
    return (
        f"### LCMS stage `{info.name}`\n\n{info.summary}\n\n{trigger} Work runs {work}; "
        f"outputs land under the config's storage root at `<project>/<season>/{info.name}/`. "
        "Every default of the trigger form can be submitted as it is.\n\nParameters:\n\n" + params
    )


def _params(info: StageInfo) -> dict[str, Param]:
    """The trigger form. Optional fields allow JSON null: the form refuses an empty typed field otherwise."""
    helps = _param_help(info)
    params = {
        "config": Param(
            runs.default_config_path(), type="string", minLength=1, title="Project config", description=helps["config"]
        ),
        "season": Param(None, type=["null", "string"], title="Season", description=helps["season"]),
        "tiles": Param(
            None, type=["null", "array"], items={"type": "string"}, title="Tiles", description=helps["tiles"]
        ),
    }
    if info.mapped:
        params["skip_existing"] = Param(
            False, type="boolean", title="Skip complete tiles", description=helps["skip_existing"]
        )
        params["rerun_failed"] = Param(
            None, type=["null", "string"], title="Re-run the failed tiles of run", description=helps["rerun_failed"]
        )
    for param in info.params:
        params[param.name] = Param(None, type=["null", "string"], title=param.name, description=helps[param.name])
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
    schedule: Any = [stage_asset(info.upstream)] if info.upstream else None
    start_date, catchup = None, False
    if not info.upstream:
        from lcms_airflow.timetables import season_timetable

        schedule, start_date, catchup = season_timetable(runs.default_config_path())
    with DAG(
        dag_id=f"lcms_{stage}",
        description=info.summary,
        doc_md=_doc(info),
        # Later stages run on the previous stage's asset; the first runs by hand, or once per season of the
        # config (`schedule: {timetable: seasons}`; backfills of past seasons: `airflow backfill create`).
        schedule=schedule,
        start_date=start_date or dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        catchup=catchup,
        params=_params(info),
        # A fresh metadata database must run the whole chain: each stage DAG is triggered by the
        # previous one's asset, which a paused DAG would ignore.
        is_paused_upon_creation=False,
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
            """Decide which config/season/tiles this run processes and check it all before any work.

            Bad parameters, a config that does not validate and missing upstream outputs fail here, once,
            with one line saying what to do, and are not retried.
            """
            context = get_current_context()
            specs = runs.resolve_run_specs(dict(context["params"]), _event_extras(context, info.upstream), stage=stage)
            # Scheduled and backfill runs carry a data interval: they process the season ended by then.
            interval_end = context.get("data_interval_end")
            run_type = context["dag_run"].run_type
            scheduled = str(getattr(run_type, "value", run_type)) in {"scheduled", "backfill"}
            try:
                return [
                    runs.prepare_spec(
                        spec,
                        stage,
                        str(context["run_id"]),
                        interval_end.date() if scheduled and interval_end is not None else None,
                    )
                    for spec in specs
                ]
            except Exception as err:
                converted = tile_runners.permanent_failure(err)
                if converted is err:
                    raise
                raise converted from err

        @task(task_id="plan", retries=0)
        def plan(specs: list[dict[str, Any]]) -> list[str]:
            """Split each run's tiles into batches: one mapped task instance per batch.

            Each batch is passed on as ``"<run spec index>:<batch id>"`` only (the worker finds the batch's
            tiles by planning the same run again, which is deterministic), so this XCom stays a few bytes a
            batch: 1.7 KB for 5,000 tiles in batches of 32 (`make bench-scale`).
            """
            from lcms_tasks.runner import plan_batches

            refs: list[str] = []
            for index, spec in enumerate(specs):
                ctx = tile_runners.run_context(spec)
                refs.extend(f"{index}:{batch['id']}" for batch in plan_batches(ctx))
            return refs

        # A per-tile stage whose batches failed in part ends all the same: publish (or the finalize step
        # before it) decides from storage whether the failed tiles are within the stage's tolerance. It
        # needs `resolve` to have succeeded (its run specs), hence "min one success".
        tolerant = info.mapped and not info.finalize

        @task(
            task_id="publish",
            outlets=[asset],
            retries=0,
            trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS if tolerant else TriggerRule.ALL_SUCCESS,
        )
        def publish(specs: list[dict[str, Any]]) -> Any:
            """Check the run's tiles in storage (failed ones within tolerance), write the run summary, emit the
            asset event (the failed tiles in it as gaps)."""
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
            done = runner.map_batches(stage, specs, plan(specs))
            if info.finalize:
                finalized = tile_runners.finalize_task(stage, specs)
                done >> finalized
                done = finalized
        else:
            done = runner.run_season(stage, specs)
        done >> publish(specs)
    return dag
