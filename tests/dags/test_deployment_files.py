"""The Docker image and compose file: they parse, and install exactly what `make setup` installs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_compose_file_parses_and_wires_airflow_to_postgres() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    expected = {"postgres", "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"}
    assert expected <= set(services)
    for name in ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"):
        svc = services[name]
        assert svc["build"]["dockerfile"] == "docker/Dockerfile"
        assert (REPO / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        env = svc["environment"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert "postgres:5432" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        # Every component must agree on the execution API and its token secret.
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:8080/")
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"]
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"):
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-init"]["command"] == ["airflow", "db", "migrate"]


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
