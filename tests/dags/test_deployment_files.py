"""The Docker image and compose file: they parse, and install exactly what `make setup` installs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


COMPOSE_SCHEMA = REPO / ".venv" / "share" / "lcms" / "compose_spec.json"  # `make setup` fetches it
AIRFLOW_COMPONENTS = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "celery-worker-1",
    "celery-worker-2",
)


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def test_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    import jsonschema

    if not COMPOSE_SCHEMA.is_file():
        pytest.fail(f"{COMPOSE_SCHEMA} is missing: `make setup` (its compose-schema step) fetches it")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(_compose())]
    assert not errors, errors
    # The schema catches what compose would refuse: a misspelt key, a wrong type.
    broken = _compose()
    broken["services"]["redis"]["helthcheck"] = broken["services"]["redis"].pop("healthcheck")
    broken["services"]["airflow-scheduler"]["ports"] = "8080"
    messages = " ".join(e.message for e in validator.iter_errors(broken))
    assert "'helthcheck' does not match any of the regexes" in messages and "'8080' is not of type 'array'" in messages


def test_compose_stack_is_the_production_like_one() -> None:
    """PostGIS, Redis, MinIO, every Airflow component, two Celery workers and the LCMS service, wired."""
    services = _compose()["services"]
    expected = {"postgres", "redis", "minio", "airflow-init", *AIRFLOW_COMPONENTS, "lcms-service"}
    assert expected <= set(services)
    assert services["postgres"]["image"].startswith("postgis/postgis:")
    for name in ("airflow-init", *AIRFLOW_COMPONENTS, "lcms-service"):
        svc = services[name]
        assert svc["build"]["dockerfile"] == "docker/Dockerfile"
        assert (REPO / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        env = svc["environment"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert "postgres:5432" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379")
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
        # Every component must agree on the execution API and its token secret.
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:8080/")
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"]
        assert "s3://" in env["LCMS_STORAGE_ROOT"] and "http://minio:9000" in env["LCMS_S3_ENDPOINT_URL"]
    for name in (*AIRFLOW_COMPONENTS, "lcms-service"):
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    workers = [services[f"celery-worker-{i}"]["command"] for i in (1, 2)]
    assert all(cmd[:3] == ["airflow", "celery", "worker"] for cmd in workers)
    hostnames = [cmd[cmd.index("--celery-hostname") + 1] for cmd in workers]
    assert len(set(hostnames)) == 2
    # The download queue LCMS_STAGE_QUEUES names is served by a worker.
    queue = services["celery-worker-1"]["environment"]["LCMS_STAGE_QUEUES"].partition("=")[2]
    assert any(queue in cmd[cmd.index("--queues") + 1].split(",") for cmd in workers)
    init = services["airflow-init"]["command"][-1]
    assert "airflow db migrate" in init and "lcms db upgrade" in init and "create_bucket" in init


def test_image_installs_with_the_same_make_target_as_setup() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^RUN make install$", dockerfile, re.MULTILINE)
    # setup, demo and test go through the stamp, whose recipe runs install (what the image runs).
    assert re.search(r"^setup: \$\(SETUP_STAMP\)", makefile, re.MULTILINE)
    assert re.search(r"^\$\(SETUP_STAMP\): .*uv\.lock.*\n\t.*\binstall\b.*\bairflow-init\b", makefile, re.MULTILINE)
    for target in ("demo", "test"):
        assert re.search(rf"^{target}: \$\(SETUP_STAMP\)", makefile, re.MULTILINE), target
    assert "uv sync --frozen" in makefile  # installs from the lock, never re-resolves
    for path in re.findall(r"^COPY (\S+)", dockerfile, re.MULTILINE):
        for part in path.split():
            assert (REPO / part).exists(), f"Dockerfile copies {part}, which does not exist"
    assert "FROM python:3.11" in dockerfile
