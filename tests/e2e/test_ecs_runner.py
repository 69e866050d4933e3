"""The ECS tile runner for real: Airflow's EcsRunTaskOperator, boto3 and a loopback ECS that runs the commands.

``LCMS_TILE_RUNNER=ecs`` makes every ``run_batch`` the provider's ``EcsRunTaskOperator``
(:class:`lcms_airflow.ecs_operator.LcmsEcsRunTaskOperator`). The Airflow AWS connection's
``endpoint_url`` points boto3 at :class:`tests.fakes.ecs_server.FakeEcs` — the provider's real hook,
client, ``tasks_stopped`` waiter and CloudWatch log fetcher, nothing patched — and the fake runs each
task's ``lcms run ...`` command as a local process with the task definition's environment, which is
only what that definition gives it (``PATH`` to this venv's ``lcms``), not the test's.

* A download run through ``dag.test()`` (the operator executes in-process as in a worker) maps one
  ECS task over each of the 2 batches; the tiles are complete in storage, written by those processes
  under the Airflow run id, and the CloudWatch log of each task holds what ``lcms run`` printed.
* A task definition whose environment breaks the config in the container (the worker sees a valid
  one) makes ``lcms run`` exit 2: the run fails, the batch is not retried, nothing is published, and
  the error names the exit code and ends with the container's log lines.
* A retry reattaches to the still-running ECS task instead of starting a second one. This is tested at
  the operator level: a whole Airflow retry (a worker lost mid-wait, the scheduler noticing, the
  retry delay) is slow and only reproduces what matters here, which is that a new execution of the
  same task instance (same dag, task, run and map index, hence the same ``startedBy``) finds the
  RUNNING task through ``ListTasks``. The first attempt keeps waiting in a thread, as a lost worker's
  ECS task keeps running; the retry's operator is a fresh instance, as a re-parsed DAG gives.

Not deferrable: the runner waits in the worker (``deferrable=False``; the provider's trigger needs
aiobotocore, which is not installed). ``dag.test()`` would run a trigger in line if it were.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lcms_tasks.config import load_config
from lcms_tasks.context import RunContext
from lcms_tasks.grid import project_tiles
from tests.conftest import base_config, write_aoi
from tests.fakes.ecs_server import ContainerDefinition, FakeEcs, TaskDefinition

pytestmark = pytest.mark.slow

CONN_ID = "lcms_fake_aws"
LOG_GROUP = "/ecs/lcms-test"
VENV_BIN = str(Path(sys.executable).parent)


def _definition(family: str, **environment: str) -> TaskDefinition:
    env = {"PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", **environment}
    container = ContainerDefinition(name="lcms", environment=env, log_group=LOG_GROUP, log_stream_prefix="ecs")
    return TaskDefinition(family=family, container=container)


@pytest.fixture
def ecs(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEcs]:
    """The fake ECS, and the environment that makes the DAGs built next run their batches on it."""
    with FakeEcs(clusters={"lcms-test"}) as fake:
        fake.add_task_definition(_definition("lcms-worker"))
        # A definition whose environment makes the project's config invalid inside the container.
        fake.add_task_definition(_definition("lcms-poisoned", LCMS_ECS_TEST_SEED="not-a-seed"))
        connection = {
            "conn_type": "aws",
            "login": "AKIDLCMSTEST",
            "password": "not-a-secret",
            "extra": {"endpoint_url": fake.endpoint_url, "region_name": "eu-central-1"},
        }
        env = {
            f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(connection),
            "LCMS_TILE_RUNNER": "ecs",
            "LCMS_AWS_CONN_ID": CONN_ID,
            "LCMS_ECS_CLUSTER": "lcms-test",
            "LCMS_ECS_TASK_DEFINITION": "lcms-worker",
            "LCMS_ECS_CONTAINER": "lcms",
            "LCMS_ECS_SUBNETS": "subnet-0a1b2c",
            "LCMS_ECS_SECURITY_GROUPS": "sg-0d4e5f",
            "LCMS_ECS_AWSLOGS_GROUP": LOG_GROUP,
            "LCMS_ECS_POLL_SECONDS": "0.5",
            "LCMS_RETRY_DELAY_SECONDS": "1",
        }
        for name in [n for n in os.environ if n.startswith("LCMS_ECS_")]:
            monkeypatch.delenv(name)  # a developer's settings must not leak in
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        yield fake


@pytest.fixture
def two_tiles(tmp_path: Path) -> Path:
    """A 2 x 1-tile project, one tile per batch, its synthetic source's seed read from the environment."""
    write_aoi(tmp_path / "aoi.geojson", ncols=2, nrows=1)
    cfg = base_config("aoi.geojson", "data", batch_size=1)
    text = yaml.safe_dump(cfg, sort_keys=False).replace("seed: 7", "seed: ${LCMS_ECS_TEST_SEED:-7}")
    assert "LCMS_ECS_TEST_SEED" in text
    (tmp_path / "project.yaml").write_text(text)
    return tmp_path / "project.yaml"


def _task_instances(run: Any) -> dict[tuple[str, int], Any]:
    from airflow.utils.session import create_session

    with create_session() as session:
        return {(ti.task_id, ti.map_index): ti for ti in run.get_task_instances(session=session)}


def test_download_batches_run_as_ecs_tasks(airflow_db: Path, ecs: FakeEcs, two_tiles: Path) -> None:
    from lcms_airflow.ecs_operator import LcmsEcsRunTaskOperator
    from lcms_airflow.factory import build_stage_dag

    dag = build_stage_dag("download")
    assert dag.get_task("run_batch").operator_class is LcmsEcsRunTaskOperator
    run = dag.test(run_conf={"config": str(two_tiles), "season": "2023"})
    assert run.state == "success", {k: ti.state for k, ti in _task_instances(run).items()}

    ctx = RunContext.create(load_config(two_tiles), season="2023")
    tiles = [t.id for t in project_tiles(ctx.config)]
    assert len(tiles) == 2
    for tile in tiles:
        assert ctx.storage.is_complete(ctx.tile_uri("download", tile)), tile
        assert ctx.storage.read_marker(ctx.tile_uri("download", tile))["run_id"] == run.run_id

    calls = ecs.run_task_calls()
    assert len(calls) == 2, "one ECS task per batch"
    commands = sorted(c["overrides"]["containerOverrides"][0]["command"] for c in calls)
    for batch, command in zip(("b0000", "b0001"), commands, strict=True):
        assert command[:3] == ["lcms", "run", "download"] and command[command.index("--batch") + 1] == batch
        assert command[command.index("--config") + 1] == str(two_tiles)
        assert command[command.index("--run-id") + 1] == run.run_id
    for call in calls:
        assert (call["cluster"], call["taskDefinition"], call["launchType"]) == ("lcms-test", "lcms-worker", "FARGATE")
        assert call["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == ["subnet-0a1b2c"]
        assert len(call["startedBy"]) == 36, "reattach=True: startedBy identifies the task instance"
    assert len({c["startedBy"] for c in calls}) == 2
    assert {c.region for c in ecs.calls} == {"eu-central-1"} and {c.access_key for c in ecs.calls} == {"AKIDLCMSTEST"}

    tasks = ecs.tasks()
    assert [(t["lastStatus"], t["containers"][0]["exitCode"]) for t in tasks] == [("STOPPED", 0)] * 2
    for task in tasks:
        printed = ecs.log_messages(LOG_GROUP, f"ecs/lcms/{task['taskArn'].rsplit('/', 1)[-1]}")
        assert any('"stage": "download"' in line for line in printed), printed[-5:]
    assert ecs.counts["GetLogEvents"] >= 2, "the operator copied the CloudWatch log into the task log"

    instances = _task_instances(run)
    assert sorted(ti.rendered_map_index for (task_id, _), ti in instances.items() if task_id == "run_batch") == [
        "b0000",
        "b0001",
    ]


def test_failing_container_fails_the_batch_with_its_exit_code(
    airflow_db: Path, ecs: FakeEcs, two_tiles: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from lcms_airflow.factory import build_stage_dag

    monkeypatch.setenv("LCMS_ECS_TASK_DEFINITION", "lcms-poisoned")
    first_tile = project_tiles(load_config(two_tiles))[0].id
    run = build_stage_dag("download").test(run_conf={"config": str(two_tiles), "season": "2023", "tiles": [first_tile]})
    assert run.state == "failed"
    instances = _task_instances(run)
    batch = instances[("run_batch", 0)]
    assert (batch.state, batch.try_number) == ("failed", 1), "exit 2 (bad input) is not retried"
    # publish runs after a failed batch and decides: one tile of one failed, beyond the 2 % tolerated.
    assert instances[("publish", -1)].state == "failed"

    assert len(ecs.run_task_calls()) == 1
    (task,) = ecs.tasks()
    assert task["containers"][0]["exitCode"] == 2 and task["stopCode"] == "EssentialContainerExited"
    printed = ecs.log_messages(LOG_GROUP, f"ecs/lcms/{task['taskArn'].rsplit('/', 1)[-1]}")
    assert any("source.synthetic.seed" in line for line in printed), printed

    # The task runner logs the task's exception (structlog, to the console in dag.test()).
    out = capfd.readouterr()
    logged = out.out + out.err
    assert "AirflowFailException: ECS task" in logged, logged[-3000:]
    error = logged[logged.index("AirflowFailException: ECS task") :]
    assert "(lcms run download --config" in error.splitlines()[0]
    assert "1 of 1 tile(s) failed, more than the 0 failures.mapped tolerates" in logged
    assert "container lcms: exit code 2 (bad input" in error
    assert "source.synthetic.seed: Input should be a valid integer" in error, "the container's last log lines"


class _TaskInstance:
    """What EcsRunTaskOperator.execute reads of ``context['ti']``: the task instance key and xcom_push."""

    def __init__(self, map_index: int) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = "lcms_download", "run_batch", "manual__ecs", map_index
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_retry_reattaches_to_the_running_task(ecs: FakeEcs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lcms_airflow.ecs_operator import LcmsEcsRunTaskOperator
    from lcms_airflow.tile_runners import EcsRunner

    monkeypatch.setenv("LCMS_ECS_POLL_SECONDS", "0.2")
    release = tmp_path / "release"
    code = (
        "import pathlib, time\n"
        f"while not pathlib.Path({str(release)!r}).exists(): time.sleep(0.05)\n"
        "print('batch done')\n"
    )
    overrides = {"containerOverrides": [{"name": "lcms", "command": [sys.executable, "-c", code]}]}

    def attempt(results: dict[str, Any], key: str) -> threading.Thread:
        # A fresh operator per attempt, as the retry's worker parses the DAG anew.
        op = LcmsEcsRunTaskOperator(overrides=overrides, **EcsRunner().operator_kwargs("run_batch", "download"))
        results[key] = op

        def run() -> None:
            try:
                results[key + ".return"] = op.execute({"ti": _TaskInstance(map_index=3)})
            except Exception as err:  # reported by the asserts below
                results[key + ".error"] = err

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    results: dict[str, Any] = {}
    first = attempt(results, "first")
    arn = _wait(lambda: results["first"].arn)
    ecs.wait_for_status(arn, "RUNNING")
    listed_before = ecs.counts["ListTasks"]
    retry = attempt(results, "retry")
    _wait(lambda: ecs.counts["ListTasks"] > listed_before and results["retry"].arn)
    release.write_text("go")
    for thread in (first, retry):
        thread.join(timeout=30)
        assert not thread.is_alive()

    assert not any(k.endswith(".error") for k in results), results
    assert results["retry"].arn == arn and len(ecs.run_task_calls()) == 1, "the retry attached, it started nothing"
    (started,) = ecs.run_task_calls()
    listed = [c.body for c in ecs.calls if c.operation == "ListTasks"]
    assert [b["startedBy"] for b in listed] == [started["startedBy"]] * 2
    assert all(b["desiredStatus"] == "RUNNING" for b in listed)
    assert results["retry.return"] == "batch done", "the last log line, from the task's CloudWatch log"

    # Once that task has stopped there is nothing to attach to: a later retry starts a new task.
    third = attempt(results, "third")
    third.join(timeout=30)
    assert "third.error" not in results and len(ecs.run_task_calls()) == 2


def _wait(condition: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)
    return value
