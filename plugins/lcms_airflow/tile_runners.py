"""Where per-batch work runs: in the Airflow worker, or as an AWS ECS task.

Chosen by the environment of the DAG processor (``LCMS_TILE_RUNNER``), never
by editing DAG files:

* ``local`` (default): the mapped task calls :func:`lcms_tasks.runner.run_batch`
  in the worker — the LocalExecutor on one machine, Celery workers in a cluster
  (each stage's work on the Celery queue ``LCMS_STAGE_QUEUES`` gives it, see :func:`stage_queues`).
* ``ecs``: the mapped task is the Amazon provider's ``EcsRunTaskOperator``
  running the LCMS image with ``lcms run <stage> --batch <id> ...``, the same
  entry point; settings from ``LCMS_ECS_CLUSTER``, ``LCMS_ECS_TASK_DEFINITION``,
  ``LCMS_ECS_CONTAINER``, ``LCMS_ECS_LAUNCH_TYPE``, ``LCMS_ECS_SUBNETS``,
  ``LCMS_ECS_SECURITY_GROUPS``, ``LCMS_ECS_ASSIGN_PUBLIC_IP``, ``LCMS_ECS_POLL_SECONDS``,
  ``LCMS_ECS_AWSLOGS_GROUP`` / ``_STREAM_PREFIX`` / ``_REGION`` and the Airflow connection
  ``LCMS_AWS_CONN_ID`` (see :class:`EcsRunner` and the README).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING, Any, Protocol

from airflow.sdk import task

if TYPE_CHECKING:
    from lcms_tasks.stages import StageInfo


def execution_timeout(info: StageInfo) -> dt.timedelta:
    """Timeout of one run_batch / run_season task: ``LCMS_TIMEOUT_MINUTES_<STAGE>``, else the stage's default."""
    raw = os.environ.get(f"LCMS_TIMEOUT_MINUTES_{info.name.upper()}") or str(info.timeout_minutes)
    try:
        minutes = float(raw)
    except ValueError:
        raise ValueError(f"LCMS_TIMEOUT_MINUTES_{info.name.upper()}={raw!r} is not a number of minutes") from None
    if minutes <= 0:
        raise ValueError(f"LCMS_TIMEOUT_MINUTES_{info.name.upper()}={raw!r} must be > 0")
    return dt.timedelta(minutes=minutes)


def stage_queues() -> dict[str, str]:
    """The Celery queue of each stage's work tasks, from ``LCMS_STAGE_QUEUES`` ("download=download,prediction=big").

    A stage not named there runs on Airflow's default queue (``[operators] default_queue``); a worker
    serves the queues of its ``airflow celery worker --queues`` option, so download batches can run on
    workers near the imagery and prediction on large machines. The LocalExecutor ignores queues.
    """
    from lcms_tasks.stages import stage_names

    raw = os.environ.get("LCMS_STAGE_QUEUES", "").strip()
    queues: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        stage, sep, queue = (x.strip() for x in part.partition("="))
        if not sep or not queue:
            raise ValueError(f"LCMS_STAGE_QUEUES: {part!r} is not STAGE=QUEUE")
        if stage not in stage_names():
            raise ValueError(f"LCMS_STAGE_QUEUES: {stage!r} is not a stage ({', '.join(stage_names())})")
        queues[stage] = queue
    return queues


def _queue(stage: str) -> dict[str, Any]:
    """``{"queue": ...}`` for a stage with its own queue, else nothing (Airflow's default queue)."""
    queue = stage_queues().get(stage)
    return {"queue": queue} if queue else {}


def batch_item(specs: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    """The work item of batch ``ref`` (``"<run spec index>:<batch id>"``, as ``plan`` hands it on)."""
    index, sep, batch = ref.partition(":")
    if not sep or not index.isdigit() or int(index) >= len(specs):
        raise ValueError(f"batch reference {ref!r} is not '<run spec index>:<batch id>' for {len(specs)} run spec(s)")
    return {**specs[int(index)], "batch": batch}


class TileRunner(Protocol):
    def map_batches(self, stage: str, specs: Any, batches: Any) -> Any: ...

    def run_season(self, stage: str, specs: Any) -> Any: ...


def finalize_task(stage: str, specs: Any) -> Any:
    """The season-level step of a mapped stage, after every batch; runs in the Airflow worker.

    It builds season artefacts from what the batches stored (catalogs, mosaics, database loads) and
    needs only storage and service access, not the heavy compute an ECS task is for.
    """

    from airflow.sdk import TriggerRule

    # After every batch, failed ones included: finalize_stage itself refuses a run beyond its tolerance.
    @task(
        task_id="finalize",
        execution_timeout=LocalRunner.timeout(stage),
        trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS,
    )
    def finalize(spec: dict[str, Any]) -> list[str]:
        """Build the season's artefacts from the tiles' outputs."""
        from lcms_tasks.runner import finalize_stage

        def work() -> list[str]:
            return finalize_stage(stage, run_context(spec))

        result: list[str] = _run_in_worker(work)
        return result

    return finalize.expand(spec=specs)


def batch_command(stage: str, item: dict[str, Any]) -> list[str]:
    """The ``lcms run`` command line that processes one batch item."""
    cmd = ["lcms", "run", stage, "--config", item["config"], "--season", item["season"], "--run-id", item["run_id"]]
    if item.get("batch"):
        cmd += ["--batch", item["batch"]]
        for tile in item.get("tiles") or []:
            cmd += ["--subset", tile]
    else:  # a per-season stage on a tile subset
        for tile in item.get("tiles") or []:
            cmd += ["--tile", tile]
    if item.get("skip_existing") and item.get("batch"):  # per-tile stages only: `lcms run` refuses it otherwise
        cmd.append("--skip-existing")
    if item.get("upstream_run_id"):
        cmd += ["--upstream-run-id", str(item["upstream_run_id"])]
    for tile, reason in sorted((item.get("excluded") or {}).items()):  # upstream gaps: the batches skip them
        cmd += ["--exclude", f"{tile}={reason}"]
    if item.get("rerun_of"):
        cmd += ["--rerun-of", str(item["rerun_of"])]
    for name, value in sorted((item.get("params") or {}).items()):
        cmd += ["--param", f"{name}={value}"]
    return cmd


def run_context(item: dict[str, Any]) -> Any:
    """The stage's :class:`~lcms_tasks.context.RunContext` for a run spec or batch item.

    The same fields as :func:`batch_command` passes to ``lcms run``, so a batch sees the same config,
    season, tile subset and run parameters whichever runner executes it.
    """
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext

    return RunContext.create(
        load_config(item["config"]),
        season=item["season"],
        run_id=item["run_id"],
        config_path=item["config"],
        skip_existing=bool(item.get("skip_existing")),
        upstream_run_id=item.get("upstream_run_id"),
        params=dict(item.get("params") or {}),
        subset=list(item.get("tiles") or []) or None,
        excluded=dict(item.get("excluded") or {}),
        rerun_of=item.get("rerun_of"),
    )


def permanent_failure(err: BaseException) -> BaseException:
    """An exception Airflow does not retry, for an LCMS error a retry cannot fix; else ``err`` itself."""
    from airflow.sdk.exceptions import AirflowFailException

    from lcms_tasks.errors import LcmsError

    if isinstance(err, LcmsError) and err.permanent:
        return AirflowFailException(str(err))
    return err


def _run_in_worker(fn: Any, *args: Any) -> Any:
    """Call ``fn`` with Airflow connections as credential source; permanent errors fail without retries."""
    from lcms_airflow.credentials import install

    install()  # sources read credentials (e.g. Sentinel Hub) from Airflow connections inside tasks
    try:
        return fn(*args)
    except Exception as err:
        converted = permanent_failure(err)
        if converted is err:
            raise
        raise converted from err


class LocalRunner:
    """Runs batches inside the Airflow worker process."""

    def map_batches(self, stage: str, specs: Any, batches: Any) -> Any:
        @task(
            task_id="run_batch",
            map_index_template="{{ task.op_kwargs['batch'].partition(':')[2] }}",
            execution_timeout=self.timeout(stage),
            **_queue(stage),
        )
        def run_batch(batch: str, specs: list[dict[str, Any]]) -> dict[str, Any]:
            """Run the stage on one batch of tiles; returns the URIs written (no arrays)."""
            from lcms_tasks.runner import run_batch as _run

            item = batch_item(specs, batch)

            def work() -> dict[str, Any]:
                return _run(stage, item["batch"], run_context(item)).to_dict()

            result: dict[str, Any] = _run_in_worker(work)
            return result

        return run_batch.partial(specs=specs).expand(batch=batches)

    def run_season(self, stage: str, specs: Any) -> Any:
        @task(task_id="run_season", execution_timeout=self.timeout(stage), **_queue(stage))
        def run_season(spec: dict[str, Any]) -> list[str]:
            """Run the stage once for the whole season (on the run's tile subset, if any)."""
            from lcms_tasks.runner import run_stage

            def work() -> list[str]:
                return run_stage(stage, run_context(spec))

            result: list[str] = _run_in_worker(work)
            return result

        return run_season.expand(spec=specs)

    @staticmethod
    def timeout(stage: str) -> dt.timedelta:
        from lcms_tasks.stages import stage_info

        return execution_timeout(stage_info(stage))


class EcsRunner:
    """Runs each batch as an ECS task of the LCMS image (``lcms run <stage> --batch ...``).

    The operator is :class:`~lcms_airflow.ecs_operator.LcmsEcsRunTaskOperator` (the provider's
    ``EcsRunTaskOperator``): it starts the task with ``startedBy`` derived from the task instance
    (dag, task, run, map index) and, with ``reattach=True``, a retry of an Airflow task whose ECS task
    is still running (a worker lost mid-wait) attaches to that task instead of starting a second one.
    It polls ``DescribeTasks`` every ``LCMS_ECS_POLL_SECONDS`` in the worker (not deferrable: that
    needs aiobotocore and a triggerer), stops the ECS task when the Airflow task is killed or times
    out, and, with ``LCMS_ECS_AWSLOGS_GROUP``, copies the container's CloudWatch log into the task log.
    """

    LAUNCH_TYPES = ("FARGATE", "EC2", "EXTERNAL", "")

    def __init__(self) -> None:
        env = os.environ.get
        self.cluster = env("LCMS_ECS_CLUSTER", "lcms")
        self.task_definition = env("LCMS_ECS_TASK_DEFINITION", "lcms-worker")
        self.container = env("LCMS_ECS_CONTAINER", "lcms")
        self.launch_type = env("LCMS_ECS_LAUNCH_TYPE", "FARGATE").strip().upper()
        if self.launch_type not in self.LAUNCH_TYPES:
            raise ValueError(
                f"LCMS_ECS_LAUNCH_TYPE={self.launch_type!r} is not an ECS launch type: use FARGATE, EC2, EXTERNAL "
                "or empty (the cluster's default capacity provider strategy)"
            )
        self.aws_conn_id = env("LCMS_AWS_CONN_ID", "aws_default")
        subnets = [s.strip() for s in env("LCMS_ECS_SUBNETS", "").split(",") if s.strip()]
        groups = [s.strip() for s in env("LCMS_ECS_SECURITY_GROUPS", "").split(",") if s.strip()]
        public_ip = env("LCMS_ECS_ASSIGN_PUBLIC_IP", "").strip().upper()
        if public_ip not in ("", "ENABLED", "DISABLED"):
            raise ValueError(f"LCMS_ECS_ASSIGN_PUBLIC_IP={public_ip!r}: use ENABLED or DISABLED")
        if self.launch_type == "FARGATE" and not subnets:
            # ECS refuses every such RunTask ("Network Configuration must be provided when networkMode
            # 'awsvpc' is specified"): say so when the DAGs are parsed, not at the first batch.
            raise ValueError("LCMS_ECS_SUBNETS is empty: FARGATE tasks run in awsvpc mode and need subnet ids")
        self.network: dict[str, Any] | None = None
        if subnets:
            vpc: dict[str, Any] = {"subnets": subnets, "securityGroups": groups}
            if public_ip:
                vpc["assignPublicIp"] = public_ip
            self.network = {"awsvpcConfiguration": vpc}
        self.awslogs_group = env("LCMS_ECS_AWSLOGS_GROUP", "").strip() or None
        self.awslogs_stream_prefix = env("LCMS_ECS_AWSLOGS_STREAM_PREFIX", "").strip() or "ecs"
        self.awslogs_region = env("LCMS_ECS_AWSLOGS_REGION", "").strip() or None
        raw = env("LCMS_ECS_POLL_SECONDS", "").strip() or "6"
        try:
            self.poll_seconds = float(raw)
        except ValueError:
            raise ValueError(f"LCMS_ECS_POLL_SECONDS={raw!r} is not a number of seconds") from None
        if self.poll_seconds <= 0:
            raise ValueError(f"LCMS_ECS_POLL_SECONDS={raw!r} must be > 0")

    def operator_kwargs(self, task_id: str, stage: str) -> dict[str, Any]:
        """The operator's arguments, except ``overrides`` (one per batch)."""
        kwargs: dict[str, Any] = {
            "task_id": task_id,
            "cluster": self.cluster,
            "task_definition": self.task_definition,
            "launch_type": self.launch_type or None,
            # The log stream is <prefix>/<container>/<task id>; without the name the provider sleeps
            # 10 + 30 s after each RunTask to look it up.
            "container_name": self.container,
            "aws_conn_id": self.aws_conn_id,
            "reattach": True,
            "wait_for_completion": True,
            "deferrable": False,  # not [operators] default_deferrable: no aiobotocore in the image
            "waiter_delay": self.poll_seconds,
            "execution_timeout": LocalRunner.timeout(stage),
        }
        if self.network:
            kwargs["network_configuration"] = self.network
        if self.awslogs_group:
            kwargs["awslogs_group"] = self.awslogs_group
            kwargs["awslogs_stream_prefix"] = self.awslogs_stream_prefix
            if self.awslogs_region:
                kwargs["awslogs_region"] = self.awslogs_region
        return kwargs

    def _operator(self, task_id: str, stage: str, **extra: Any) -> Any:
        from lcms_airflow.ecs_operator import LcmsEcsRunTaskOperator

        return LcmsEcsRunTaskOperator.partial(**self.operator_kwargs(task_id, stage), **extra)

    def _overrides(self, stage: str, task_id: str) -> Any:
        container = self.container

        @task(task_id=task_id)
        def overrides(specs: list[dict[str, Any]], batches: list[str] | None = None) -> list[dict[str, Any]]:
            """ECS container overrides: one `lcms run` command per batch (per run spec without ``batches``)."""
            items = specs if batches is None else [batch_item(specs, ref) for ref in batches]
            return [{"containerOverrides": [{"name": container, "command": batch_command(stage, it)}]} for it in items]

        return overrides

    def map_batches(self, stage: str, specs: Any, batches: Any) -> Any:
        # The batch id as the mapped task's name in the UI, read from its command.
        batch = (
            "{% set c = task.overrides['containerOverrides'][0]['command'] %}"
            "{{ c[c.index('--batch') + 1] if '--batch' in c else '' }}"
        )
        operator = self._operator("run_batch", stage, map_index_template=batch)
        return operator.expand(overrides=self._overrides(stage, "ecs_commands")(specs, batches))

    def run_season(self, stage: str, specs: Any) -> Any:
        return self._operator("run_season", stage).expand(overrides=self._overrides(stage, "ecs_commands")(specs))


def configured_runner() -> TileRunner:
    """The runner ``LCMS_TILE_RUNNER`` selects (``local`` by default)."""
    name = os.environ.get("LCMS_TILE_RUNNER", "local").strip().lower()
    if name == "local":
        return LocalRunner()
    if name == "ecs":
        return EcsRunner()
    raise ValueError(f"LCMS_TILE_RUNNER={name!r} is not a tile runner; use 'local' or 'ecs'")
