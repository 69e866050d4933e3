"""``lcms serve``: on a configured database, and on the embedded one it starts (and stops) itself.

The command runs as a developer runs it (the ``lcms`` entry point in a child process), is stopped
with SIGTERM or Ctrl-C (SIGINT) and must exit 0; with no database configured the embedded cluster
(in a scratch state folder, on a free port) must be running while it serves and stopped after.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from lcms_service.testing import copy_changes, free_port, synthetic_changes
from lcms_tasks.store import EmbeddedPostgres
from tests.conftest import base_config, write_aoi
from tests.store_fixtures import fresh_database

LCMS = str(Path(sys.executable).with_name("lcms"))

pytestmark = pytest.mark.slow


@pytest.fixture
def config(tmp_path: Path) -> Path:
    write_aoi(tmp_path / "aoi.geojson")
    path = tmp_path / "project.yaml"
    path.write_text(yaml.safe_dump(base_config("aoi.geojson", "data"), sort_keys=False))
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LCMS_", "AIRFLOW__"))}
    return {**env, **extra}


@contextlib.contextmanager
def serving(config: Path, env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [LCMS, "serve", "--config", str(config), "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"lcms serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"lcms serve did not answer:\n{log.read_text()[-3000:]}")
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_serve_on_a_configured_database(config: Path, tmp_path: Path) -> None:
    with fresh_database("lcms_service_cli", migrate=True) as url:
        changes = synthetic_changes(40, (47.0, 40.0, 47.1, 40.1), seed=5)
        copy_changes(url, changes)
        with serving(config, clean_env(LCMS_DATABASE_URL=url), tmp_path / "serve.log") as (proc, base):
            assert httpx.get(f"{base}/ogc/").status_code == 200
            body = httpx.get(f"{base}/ogc/collections/lcms.changes/items", params={"limit": 100}).json()
            assert {f["id"] for f in body["features"]} == set(changes.ids)
            assert httpx.get(f"{base}/").status_code == 200
            assert httpx.get(f"{base}/openapi.json").json()["openapi"] == "3.0.3"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    assert "OGC API Features: http://127.0.0.1:" in (tmp_path / "serve.log").read_text()


def test_serve_starts_and_stops_the_embedded_database(config: Path, tmp_path: Path) -> None:
    # initdb runs as the unprivileged `postgres` user when the tests run as root: the state folder must be
    # reachable by it (pytest's own tmp folders are private to their owner).
    state = Path(tempfile.mkdtemp(prefix="lcms-serve-state-"))
    state.chmod(0o755)
    port = free_port()
    embedded = EmbeddedPostgres(state_dir=state, port=port)
    try:
        env = clean_env(LCMS_STATE_DIR=str(state), LCMS_DB_PORT=str(port))
        with serving(config, env, tmp_path / "serve.log") as (proc, base):
            assert embedded.is_running()
            health = httpx.get(f"{base}/healthz").json()
            assert health["status"] == "ok" and health["collection_present"]  # migrated by the start
            assert httpx.get(f"{base}/ogc/collections/lcms.changes/items").json()["numberMatched"] == 0
            proc.send_signal(signal.SIGINT)  # Ctrl-C
            assert proc.wait(timeout=60) == 0
        assert not embedded.is_running(), "lcms serve started the embedded database: it must stop it"
    finally:
        with contextlib.suppress(Exception):
            embedded.stop()
        shutil.rmtree(state, ignore_errors=True)


def test_serve_refuses_an_unreachable_database_in_one_line(config: Path) -> None:
    port = free_port()
    proc = subprocess.run(
        [LCMS, "serve", "--config", str(config), "--port", str(port)],
        env=clean_env(LCMS_DATABASE_URL="postgresql://lcms:s3cret@127.0.0.1:1/lcms"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "127.0.0.1:1" in proc.stderr
    assert "s3cret" not in proc.stderr and "Traceback" not in proc.stderr
