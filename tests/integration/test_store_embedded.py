"""The embedded change store: a private PostgreSQL + PostGIS cluster, created, started, stopped by LCMS.

Each test module gets its own cluster (temporary state folder, free port, password authentication:
the wrong-password message path is tested against it, since the machine's server trusts loopback).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from lcms_tasks.errors import ChangeStoreError
from lcms_tasks.store import EmbeddedPostgres, current_revision, database_url, upgrade
from lcms_tasks.store.db import SCHEMA_REVISION, connect
from tests.store_fixtures import free_port

pytestmark = pytest.mark.slow  # initdb + start + migrate + restarts: ~15 s


def test_start_is_idempotent_and_listens_on_loopback_only(embedded_store: EmbeddedPostgres) -> None:
    db = embedded_store
    state = db.status()
    assert state["running"] and state["postgresql"] == "15"
    assert db.password and db.password not in json.dumps(state) and ":***@" in state["url"]
    pid = state["pid"]
    assert db.start() == db.url  # already running: nothing restarted
    assert db.status()["pid"] == pid
    with db.running() as url:  # a block that did not start it does not stop it
        assert url == db.url
    assert db.status()["pid"] == pid
    assert current_revision(db.url) == SCHEMA_REVISION
    conn = psycopg2.connect(db.url)
    with conn.cursor() as cur:
        cur.execute("SHOW listen_addresses")
        assert cur.fetchone()[0] == "127.0.0.1"
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'postgis'")
        assert cur.fetchone()[0].startswith("3.")
        cur.execute("SELECT current_database()")
        assert cur.fetchone()[0] == "lcms"
    conn.close()
    assert db.data_dir.is_dir() and (db.data_dir / "PG_VERSION").is_file()
    if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to the postgres system user
        import pwd

        assert pwd.getpwuid(db.data_dir.stat().st_uid).pw_name == "postgres"
        assert (db.root.stat().st_mode & 0o777) == 0o700


def test_wrong_password_fails_once_naming_the_database(embedded_store: EmbeddedPostgres) -> None:
    wrong = f"postgresql://postgres:not-the-password@127.0.0.1:{embedded_store.port}/lcms"
    for attempt in (lambda: upgrade(wrong), lambda: connect(wrong)):
        with pytest.raises(ChangeStoreError) as err:
            attempt()
        text = str(err.value)
        assert text.startswith("cannot connect to the change store")
        assert f"database 'lcms' at 127.0.0.1:{embedded_store.port} (user postgres)" in text
        assert "refused the login" in text and "Fix: set the right user and password" in text
        assert "not-the-password" not in text and embedded_store.password not in text
        assert "\n" not in text and err.value.permanent


def test_database_url_finds_the_running_cluster(embedded_store: EmbeddedPostgres, monkeypatch: Any) -> None:
    monkeypatch.delenv("LCMS_DATABASE_URL", raising=False)
    monkeypatch.setenv("LCMS_STATE_DIR", str(embedded_store.state_dir))
    # a cluster found by its state folder carries no password: the URL is the one to connect to, minus it
    found = database_url(None)
    assert found == f"postgresql://postgres@127.0.0.1:{embedded_store.port}/lcms"


def test_stop_start_keeps_the_data_and_port_conflicts_are_named(embedded_store: EmbeddedPostgres) -> None:
    db = embedded_store
    conn = psycopg2.connect(db.url)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE public.kept (x int); INSERT INTO public.kept VALUES (42)")
    conn.commit()
    conn.close()
    assert db.stop() is True
    assert db.status()["running"] is False and db.stop() is False
    with pytest.raises(ChangeStoreError, match="unreachable"):
        connect(db.url)
    # another program on the port: a clear error, nothing started
    import socket

    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the server's own sockets linger in TIME_WAIT
        blocker.bind(("127.0.0.1", db.port))
        blocker.listen()
        with pytest.raises(ChangeStoreError, match=rf"port {db.port} on 127.0.0.1 is in use.*LCMS_DB_PORT"):
            db.start()
    db.start()
    conn = psycopg2.connect(db.url)
    with conn.cursor() as cur:
        cur.execute("SELECT x FROM public.kept")
        assert cur.fetchone()[0] == 42
    conn.close()


def test_cli_start_status_url_stop(tmp_path_factory: pytest.TempPathFactory) -> None:
    import shutil
    import tempfile

    state = Path(tempfile.mkdtemp(prefix="lcms-test-cli-pg-", dir="/tmp"))
    state.chmod(0o755)
    port = free_port()
    env = {**os.environ, "LCMS_STATE_DIR": str(state), "LCMS_DB_PORT": str(port)}
    env.pop("LCMS_DATABASE_URL", None)
    lcms = [sys.executable, "-m", "lcms_tasks.cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*lcms, "db", *args], env=env, capture_output=True, text=True, timeout=180, check=False)

    try:
        stopped = run("status")
        assert stopped.returncode == 1 and json.loads(stopped.stdout)["running"] is False
        started = run("start")
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"postgresql://postgres@127.0.0.1:{port}/lcms"
        status = run("status")
        assert status.returncode == 0 and json.loads(status.stdout)["revision"] == SCHEMA_REVISION
        assert run("url").stdout.strip() == f"postgresql://postgres@127.0.0.1:{port}/lcms"
        upgraded = run("upgrade")
        assert upgraded.returncode == 0 and f"127.0.0.1:{port}" in upgraded.stdout
        assert run("stop").stdout.strip() == "stopped"
        assert json.loads(run("status").stdout)["running"] is False
    finally:
        EmbeddedPostgres(state, port=port).stop()
        shutil.rmtree(state, ignore_errors=True)
