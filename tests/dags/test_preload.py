"""The scheduler and Celery workers import the domain library once, before they fork task processes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
_spec = importlib.util.spec_from_file_location("lcms_local_settings_under_test", PLUGINS / "airflow_local_settings.py")
assert _spec is not None and _spec.loader is not None
settings = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(settings)  # pytest's argv: it preloads nothing itself
PRELOAD, forks_task_processes, preload = settings.PRELOAD, settings.forks_task_processes, settings.preload

HEAVY = ("numpy", "pandas", "geopandas", "rasterio", "eolearn.core", "xgboost")


def test_only_the_forking_commands_preload(monkeypatch: pytest.MonkeyPatch) -> None:
    assert forks_task_processes(["airflow", "scheduler"])
    assert forks_task_processes(["/x/airflow", "celery", "worker", "--queues", "default"])
    for argv in (["airflow", "api-server"], ["airflow", "dag-processor"], ["airflow", "celery", "flower"], ["lcms"]):
        assert not forks_task_processes(argv), argv
    assert preload(["airflow", "scheduler"]) == list(PRELOAD)
    assert preload(["airflow", "triggerer"]) == []
    monkeypatch.setenv("LCMS_PRELOAD", "0")
    assert preload(["airflow", "scheduler"]) == []


@pytest.mark.parametrize(("command", "expected"), [("scheduler", True), ("api-server", False)])
def test_airflow_runs_the_hook_when_it_initialises(command: str, expected: bool) -> None:
    """Importing Airflow as `airflow <command>` does: the heavy modules are then there, or not at all."""
    code = (
        "import json, sys; sys.argv = ['airflow', sys.argv[1]]; import airflow; "
        f"print(json.dumps({{m: m in sys.modules for m in {list(HEAVY)!r}}}))"
    )
    env = {**os.environ, "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS)}
    env.pop("LCMS_PRELOAD", None)
    out = subprocess.run(
        [sys.executable, "-c", code, command], env=env, capture_output=True, text=True, check=True, timeout=300
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == dict.fromkeys(HEAVY, expected), (loaded, out.stderr[-2000:])
