"""The Airflow plugin, loaded the way Airflow loads it: its app is mounted at /lcms of Airflow's API server.

In a child process with a fresh ``AIRFLOW_HOME`` (plugins are loaded once per process and cached):
``plugins_manager`` imports every file of the plugins folder, the API server's ``create_app`` mounts
each ``fastapi_apps`` entry, and a request through Airflow's own app reaches the service. No database
is configured, which must not stop Airflow: the OGC landing page answers, the collections a 503.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
from airflow import plugins_manager

plugins, errors = plugins_manager._get_plugins()
out = {"plugins": [p.name for p in plugins], "errors": errors}
# Loading the plugin (every Airflow component does) must not build the app nor import the web stack.
out["fastapi_imported_by_loading"] = "fastapi" in sys.modules or "tipg" in sys.modules
apps, _ = plugins_manager.get_fastapi_plugins()
out["apps"] = [{"name": a["name"], "url_prefix": a["url_prefix"], "app": type(a["app"]).__name__} for a in apps]

from fastapi.testclient import TestClient
from starlette.routing import Mount
from airflow.api_fastapi.app import create_app

app = create_app()
out["mounts"] = [r.path for r in app.routes if isinstance(r, Mount)]
with TestClient(app) as client:
    landing = client.get("/lcms/ogc/")
    out["landing"] = [landing.status_code, {l["rel"]: l["href"] for l in landing.json()["links"]}]
    out["collections"] = client.get("/lcms/ogc/collections").status_code
    out["openapi"] = client.get("/lcms/openapi.json").json()["openapi"]
    out["airflow_health"] = client.get("/api/v2/monitor/health").status_code
print("RESULT " + json.dumps(out))
"""


def test_plugin_mounts_the_service_into_airflows_api_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "LCMS_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(tmp_path / "airflow"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "no-dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),  # the execution API's lifespan needs one
            # No change store anywhere: no URL, and an embedded cluster that is not running.
            "LCMS_STATE_DIR": str(tmp_path / "state"),
            "PYTHONWARNINGS": "ignore",
        }
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out = json.loads(lines[-1].removeprefix("RESULT "))
    assert "lcms_service" in out["plugins"] and not out["errors"]
    assert out["fastapi_imported_by_loading"] is False
    assert out["apps"] == [{"name": "LCMS service", "url_prefix": "/lcms", "app": "FastAPI"}]
    assert "/lcms" in out["mounts"]
    status, links = out["landing"]
    assert status == 200
    assert links["self"] == "http://testserver/lcms/ogc/"
    assert links["service-desc"] == "http://testserver/lcms/openapi.json"
    assert out["collections"] == 503  # no database: the service says so, Airflow runs on
    assert out["openapi"] == "3.0.3"
    assert out["airflow_health"] == 200
