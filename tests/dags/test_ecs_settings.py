"""The ECS tile runner's settings: what the operator is given, and settings refused when the DAGs are parsed.

The runner itself, through Airflow against a loopback ECS, is tested in tests/e2e/test_ecs_runner.py.
"""

from __future__ import annotations

import os

import pytest

from lcms_airflow.tile_runners import EcsRunner


@pytest.fixture(autouse=True)
def _no_ecs_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each test states its settings; a developer's environment must not leak in.
    for name in [n for n in os.environ if n.startswith("LCMS_ECS_")]:
        monkeypatch.delenv(name)


def test_operator_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LCMS_ECS_SUBNETS", "subnet-1, subnet-2")
    monkeypatch.setenv("LCMS_ECS_SECURITY_GROUPS", "sg-1")
    monkeypatch.setenv("LCMS_ECS_ASSIGN_PUBLIC_IP", "enabled")
    monkeypatch.setenv("LCMS_ECS_AWSLOGS_GROUP", "/ecs/lcms")
    monkeypatch.setenv("LCMS_ECS_POLL_SECONDS", "30")
    kwargs = EcsRunner().operator_kwargs("run_batch", "download")
    assert kwargs["reattach"] is True and kwargs["deferrable"] is False and kwargs["wait_for_completion"] is True
    assert kwargs["container_name"] == "lcms" and kwargs["waiter_delay"] == 30
    assert kwargs["network_configuration"] == {
        "awsvpcConfiguration": {
            "subnets": ["subnet-1", "subnet-2"],
            "securityGroups": ["sg-1"],
            "assignPublicIp": "ENABLED",
        }
    }
    assert (kwargs["awslogs_group"], kwargs["awslogs_stream_prefix"]) == ("/ecs/lcms", "ecs")
    assert "awslogs_region" not in kwargs


def test_ec2_tasks_need_no_network_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LCMS_ECS_LAUNCH_TYPE", "ec2")
    kwargs = EcsRunner().operator_kwargs("run_season", "training")
    assert kwargs["launch_type"] == "EC2" and "network_configuration" not in kwargs and "awslogs_group" not in kwargs


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "LCMS_ECS_SUBNETS is empty: FARGATE tasks"),
        ({"LCMS_ECS_LAUNCH_TYPE": "k8s"}, "LCMS_ECS_LAUNCH_TYPE='K8S' is not an ECS launch type"),
        ({"LCMS_ECS_SUBNETS": "s-1", "LCMS_ECS_POLL_SECONDS": "soon"}, "LCMS_ECS_POLL_SECONDS='soon' is not a number"),
        ({"LCMS_ECS_SUBNETS": "s-1", "LCMS_ECS_POLL_SECONDS": "0"}, "LCMS_ECS_POLL_SECONDS='0' must be > 0"),
        ({"LCMS_ECS_SUBNETS": "s-1", "LCMS_ECS_ASSIGN_PUBLIC_IP": "yes"}, "LCMS_ECS_ASSIGN_PUBLIC_IP='YES'"),
    ],
)
def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        EcsRunner()
