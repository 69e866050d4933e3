"""The fake ECS server (tests/fakes/ecs_server.py) answers boto3 as ECS and CloudWatch Logs do.

boto3 itself is the client, so request serialisation, response parsing (every answer is also checked
against botocore's service model by the server), error codes and the ``tasks_stopped`` waiter are the
real ones. Commands are tiny Python one-liners.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.fakes.ecs_server import ContainerDefinition, FakeEcs, TaskDefinition

NETWORK = {"awsvpcConfiguration": {"subnets": ["subnet-1"], "securityGroups": []}}


@pytest.fixture
def ecs() -> Iterator[FakeEcs]:
    with FakeEcs(clusters={"lcms"}) as fake:
        fake.add_task_definition(
            TaskDefinition(
                family="worker",
                container=ContainerDefinition(
                    name="app",
                    environment={"GREETING": "from the task definition"},
                    log_group="/ecs/lcms",
                    log_stream_prefix="ecs",
                    stop_timeout=1,
                ),
            )
        )
        yield fake


def _client(ecs: FakeEcs, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=ecs.endpoint_url,
        region_name="eu-central-1",
        aws_access_key_id="AKIDFAKEECS",
        aws_secret_access_key="not-a-secret",
    )


def _python(code: str) -> dict[str, Any]:
    return {"containerOverrides": [{"name": "app", "command": [sys.executable, "-c", code]}]}


def test_task_runs_its_command_and_reports_exit_code_and_logs(ecs: FakeEcs) -> None:
    client, logs = _client(ecs, "ecs"), _client(ecs, "logs")
    code = "import os; print('one'); print('two', os.environ['GREETING'], os.environ['EXTRA']); raise SystemExit(3)"
    overrides = _python(code)
    overrides["containerOverrides"][0]["environment"] = [{"name": "EXTRA", "value": "from the override"}]
    started = client.run_task(
        cluster="lcms", taskDefinition="worker", overrides=overrides, launchType="FARGATE", networkConfiguration=NETWORK
    )
    assert started["failures"] == [] and started["tasks"][0]["lastStatus"] == "PENDING"
    arn = started["tasks"][0]["taskArn"]
    assert arn.startswith("arn:aws:ecs:eu-central-1:123456789012:task/lcms/")

    client.get_waiter("tasks_stopped").wait(cluster="lcms", tasks=[arn], WaiterConfig={"Delay": 0.1})
    task = client.describe_tasks(cluster="lcms", tasks=[arn])["tasks"][0]
    assert task["lastStatus"] == task["desiredStatus"] == "STOPPED" and task["stopCode"] == "EssentialContainerExited"
    assert task["containers"][0]["exitCode"] == 3 and task["stoppedAt"] >= task["startedAt"] >= task["createdAt"]
    assert ecs.task_environment(arn)["GREETING"] == "from the task definition"
    assert "AIRFLOW_HOME" not in ecs.task_environment(arn), "a container does not see the test's environment"
    calls = [c for c in ecs.calls if c.operation == "RunTask"]
    assert [(c.region, c.access_key, c.service) for c in calls] == [("eu-central-1", "AKIDFAKEECS", "ecs")]

    stream = f"ecs/app/{arn.rsplit('/', 1)[-1]}"
    first = logs.get_log_events(logGroupName="/ecs/lcms", logStreamName=stream, startFromHead=True)
    assert [e["message"] for e in first["events"]] == ["one", "two from the task definition from the override"]
    again = logs.get_log_events(logGroupName="/ecs/lcms", logStreamName=stream, nextToken=first["nextForwardToken"])
    assert again["events"] == [] and again["nextForwardToken"] == first["nextForwardToken"]  # the end: same token
    last = logs.get_log_events(logGroupName="/ecs/lcms", logStreamName=stream, startFromHead=False, limit=1)
    assert [e["message"] for e in last["events"]] == ["two from the task definition from the override"]
    found = logs.filter_log_events(logGroupName="/ecs/lcms", logStreamNamePrefix="ecs/app/", filterPattern="override")
    assert [(e["logStreamName"], e["message"]) for e in found["events"]] == [(stream, last["events"][0]["message"])]
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        logs.get_log_events(logGroupName="/ecs/lcms", logStreamName="ecs/app/nope")


def test_stop_task_kills_the_process_and_list_tasks_finds_running_ones(ecs: FakeEcs) -> None:
    client = _client(ecs, "ecs")
    arn = client.run_task(
        cluster="lcms",
        taskDefinition="worker:1",
        overrides=_python("import time; print('up', flush=True); time.sleep(60)"),
        launchType="FARGATE",
        networkConfiguration=NETWORK,
        startedBy="attempt-1",
    )["tasks"][0]["taskArn"]
    ecs.wait_for_status(arn, "RUNNING")
    assert client.list_tasks(cluster="lcms", startedBy="attempt-1")["taskArns"] == [arn]  # desiredStatus RUNNING
    assert client.list_tasks(cluster="lcms", startedBy="someone-else")["taskArns"] == []

    stopped = client.stop_task(cluster="lcms", task=arn, reason="Task killed by the user")["task"]
    assert (stopped["desiredStatus"], stopped["stopCode"]) == ("STOPPED", "UserInitiated")
    task = ecs.wait_for_status(arn, "STOPPED", timeout=10)
    assert task["containers"][0]["exitCode"] == 143 and task["stoppedReason"] == "Task killed by the user"  # SIGTERM
    assert client.list_tasks(cluster="lcms", startedBy="attempt-1")["taskArns"] == []
    assert client.list_tasks(cluster="lcms", startedBy="attempt-1", desiredStatus="STOPPED")["taskArns"] == [arn]
    missing = client.describe_tasks(cluster="lcms", tasks=["0123456789abcdef"])
    assert missing["tasks"] == [] and missing["failures"][0]["reason"] == "MISSING"


def test_requests_ecs_refuses_are_refused(ecs: FakeEcs) -> None:
    client = _client(ecs, "ecs")
    run = {"taskDefinition": "worker", "launchType": "FARGATE", "networkConfiguration": NETWORK}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**run, "cluster": "prod"}, "ClusterNotFoundException"),
        ({**run, "cluster": "lcms", "taskDefinition": "worker:7"}, "ClientException"),
        ({**run, "cluster": "lcms", "overrides": {"containerOverrides": [{"name": "lcms"}]}}, "not a container"),
        ({"cluster": "lcms", "taskDefinition": "worker", "launchType": "FARGATE"}, "Network Configuration must be"),
    ]
    for kwargs, error in cases:
        with pytest.raises(ClientError, match=error):
            client.run_task(**kwargs)
    assert ecs.run_task_calls() and not ecs.tasks()

    definition = client.describe_task_definition(taskDefinition="worker")["taskDefinition"]
    assert definition["containerDefinitions"][0]["logConfiguration"]["options"]["awslogs-group"] == "/ecs/lcms"
    arn = client.run_task(
        cluster="lcms",
        overrides={"containerOverrides": [{"name": "app", "command": ["no-such-lcms-binary"]}]},
        **run,
    )["tasks"][0]["taskArn"]
    task = ecs.wait_for_status(arn, "STOPPED")
    assert task["stopCode"] == "TaskFailedToStart" and "executable file not found" in task["stoppedReason"]
    assert "exitCode" not in task["containers"][0]
