"""Where per-batch work runs: in the Airflow worker, or as an AWS ECS task.

Chosen by the environment of the DAG processor (``LCMS_TILE_RUNNER``), never
by editing DAG files:

* ``local`` (default): the mapped task calls :func:`lcms_tasks.runner.run_batch`
  in the worker — the LocalExecutor on one machine, Celery workers in a cluster.
* ``ecs``: the mapped task is the Amazon provider's ``EcsRunTaskOperator``
  running the LCMS image with ``lcms run <stage> --batch <id> ...``, the same
  entry point; settings from ``LCMS_ECS_CLUSTER``, ``LCMS_ECS_TASK_DEFINITION``,
  ``LCMS_ECS_CONTAINER``, ``LCMS_ECS_SUBNETS``, ``LCMS_ECS_SECURITY_GROUPS``,
  ``LCMS_ECS_LAUNCH_TYPE`` and the Airflow connection ``LCMS_AWS_CONN_ID``.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from airflow.sdk import task


class TileRunner(Protocol):
    def map_batches(self, stage: str, items: Any) -> Any: ...

    def run_season(self, stage: str, specs: Any) -> Any: ...


def batch_command(stage: str, item: dict[str, Any]) -> list[str]:
    """The ``lcms run`` command line that processes one batch item."""
    cmd = ["lcms", "run", stage, "--config", item["config"], "--season", item["season"], "--run-id", item["run_id"]]
    if item.get("batch"):
        cmd += ["--batch", item["batch"]]
        for tile in item.get("tiles") or []:
            cmd += ["--subset", tile]
    if item.get("skip_existing"):
        cmd.append("--skip-existing")
    if item.get("upstream_run_id"):
        cmd += ["--upstream-run-id", str(item["upstream_run_id"])]
    for name, value in sorted((item.get("params") or {}).items()):
        cmd += ["--param", f"{name}={value}"]
    return cmd


def _context(item: dict[str, Any]) -> Any:
    from lcms_airflow.credentials import install
    from lcms_tasks.config import load_config

    install()  # sources read credentials (e.g. Sentinel Hub) from Airflow connections inside tasks
    from lcms_tasks.context import RunContext

    return RunContext.create(
        load_config(item["config"]),
        season=item["season"],
        run_id=item["run_id"],
        config_path=item["config"],
        skip_existing=bool(item.get("skip_existing")),
        upstream_run_id=item.get("upstream_run_id"),
    )


class LocalRunner:
    """Runs batches inside the Airflow worker process."""

    def map_batches(self, stage: str, items: Any) -> Any:
        @task(task_id="run_batch", map_index_template="{{ task.op_kwargs['item']['batch'] }}")
        def run_batch(item: dict[str, Any]) -> dict[str, Any]:
            """Run the stage on one batch of tiles; returns the URIs written (no arrays)."""
            from lcms_tasks.runner import run_batch as _run

            return _run(stage, item["batch"], _context(item), item.get("tiles") or None).to_dict()

        return run_batch.expand(item=items)

    def run_season(self, stage: str, specs: Any) -> Any:
        @task(task_id="run_season")
        def run_season(spec: dict[str, Any]) -> list[str]:
            """Run the stage once for the whole season."""
            from lcms_tasks.runner import run_stage

            return run_stage(stage, _context(spec))

        return run_season.expand(spec=specs)


class EcsRunner:
    """Runs each batch as an ECS task of the LCMS image."""

    def __init__(self) -> None:
        self.cluster = os.environ.get("LCMS_ECS_CLUSTER", "lcms")
        self.task_definition = os.environ.get("LCMS_ECS_TASK_DEFINITION", "lcms-worker")
        self.container = os.environ.get("LCMS_ECS_CONTAINER", "lcms")
        self.launch_type = os.environ.get("LCMS_ECS_LAUNCH_TYPE", "FARGATE")
        self.aws_conn_id = os.environ.get("LCMS_AWS_CONN_ID", "aws_default")
        subnets = [s for s in os.environ.get("LCMS_ECS_SUBNETS", "").split(",") if s]
        groups = [s for s in os.environ.get("LCMS_ECS_SECURITY_GROUPS", "").split(",") if s]
        self.network = {"awsvpcConfiguration": {"subnets": subnets, "securityGroups": groups}} if subnets else None

    def _operator(self, task_id: str) -> Any:
        from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator

        kwargs: dict[str, Any] = {
            "task_id": task_id,
            "cluster": self.cluster,
            "task_definition": self.task_definition,
            "launch_type": self.launch_type,
            "aws_conn_id": self.aws_conn_id,
            "wait_for_completion": True,
        }
        if self.network:
            kwargs["network_configuration"] = self.network
        return EcsRunTaskOperator.partial(**kwargs)

    def _overrides(self, stage: str, task_id: str) -> Any:
        container = self.container

        @task(task_id=task_id)
        def overrides(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            """ECS container overrides: one `lcms run` command per batch."""
            return [{"containerOverrides": [{"name": container, "command": batch_command(stage, it)}]} for it in items]

        return overrides

    def map_batches(self, stage: str, items: Any) -> Any:
        return self._operator("run_batch").expand(overrides=self._overrides(stage, "ecs_commands")(items))

    def run_season(self, stage: str, specs: Any) -> Any:
        return self._operator("run_season").expand(overrides=self._overrides(stage, "ecs_commands")(specs))


def configured_runner() -> TileRunner:
    """The runner ``LCMS_TILE_RUNNER`` selects (``local`` by default)."""
    name = os.environ.get("LCMS_TILE_RUNNER", "local").strip().lower()
    if name == "local":
        return LocalRunner()
    if name == "ecs":
        return EcsRunner()
    raise ValueError(f"LCMS_TILE_RUNNER={name!r} is not a tile runner; use 'local' or 'ecs'")
