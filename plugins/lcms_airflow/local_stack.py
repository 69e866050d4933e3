"""A real Airflow on one machine: API server, scheduler (LocalExecutor) and DAG processor.

Used by ``make demo`` and the end-to-end tests: the components run as separate
processes against one metadata database (SQLite under ``AIRFLOW_HOME`` by
default), exactly as ``airflow standalone`` would, but with ports, secrets and
polling under our control. DAG runs are triggered and watched through Airflow's
REST API (``/api/v2``), authenticated as a user of the simple auth manager
whose password is generated into ``AIRFLOW_HOME``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
TERMINAL_STATES = {"success", "failed"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalAirflow:
    """Airflow components as child processes sharing ``home``'s metadata database."""

    home: Path
    dags_folder: Path = REPO / "dags"
    parallelism: int = 2
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    user: str = "lcms"
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _token: str | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        jwt_file = self.home / "jwt_secret"
        passwords = self.home / "lcms_passwords.json"
        self.home.mkdir(parents=True, exist_ok=True)
        if not jwt_file.exists():
            jwt_file.write_text(secrets.token_hex(32))
        if not passwords.exists():
            passwords.write_text(json.dumps({self.user: secrets.token_urlsafe(16)}))
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API_AUTH__JWT_SECRET": jwt_file.read_text().strip(),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.user}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
            }
        )
        env.update(self.extra_env)
        return env

    def _airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        exe = str(Path(sys.executable).with_name("airflow"))
        return subprocess.run([exe, *args], env=self.env(), capture_output=True, text=True, check=check)

    def migrate(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        proc = self._airflow("db", "migrate", check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")

    def start(self, timeout: float = 180.0) -> None:
        """Migrate the database, start the components, wait until the API answers."""
        if not self.port:
            self.port = free_port()
        self.migrate()
        exe = str(Path(sys.executable).with_name("airflow"))
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name, args in (
            ("api-server", ["api-server", "--port", str(self.port), "--host", "127.0.0.1"]),
            ("scheduler", ["scheduler"]),
            ("dag-processor", ["dag-processor"]),
        ):
            with (logs / f"{name}.log").open("ab") as out:  # the child keeps its own copy of the descriptor
                self.procs[name] = subprocess.Popen(
                    [exe, *args], env=self.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(1)
        raise TimeoutError(f"Airflow API server did not answer on port {self.port} within {timeout:.0f} s")

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.home / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"Airflow {name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.procs.clear()

    # -- REST API ------------------------------------------------------------------------------------
    def password(self) -> str:
        return str(json.loads((self.home / "lcms_passwords.json").read_text())[self.user])

    def _request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            if self._token is None:
                self._token = str(
                    self._request(
                        "POST", "/auth/token", {"username": self.user, "password": self.password()}, auth=False
                    )["access_token"]
                )
            headers["Authorization"] = f"Bearer {self._token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:1000]
            raise RuntimeError(f"Airflow API {method} {path} -> HTTP {err.code}: {detail}") from err

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 180.0) -> None:
        """Wait until the DAG processor has serialised ``dag_ids``."""
        deadline = time.monotonic() + timeout
        missing = set(dag_ids)
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(RuntimeError, OSError):
                listed = self._request("GET", "/api/v2/dags?limit=1000")
                missing = set(dag_ids) - {d["dag_id"] for d in listed["dags"]}
                if not missing:
                    return
            time.sleep(1)
        errors = ""
        with contextlib.suppress(RuntimeError, OSError):
            errors = json.dumps(self._request("GET", "/api/v2/importErrors"))
        raise TimeoutError(f"DAGs not loaded within {timeout:.0f} s: {sorted(missing)} {errors}")

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Trigger ``dag_id`` with ``conf``; return the run id."""
        run_id = f"manual__lcms_{int(time.time() * 1000)}"
        self._request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        )
        return run_id

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        """The DAG's runs (run_id, state, start_date, end_date, ...), oldest first."""
        query = urllib.parse.urlencode({"limit": 1000, "order_by": "run_after"})
        rows = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?{query}")["dag_runs"]
        return [{**r, "run_id": r["dag_run_id"]} for r in rows]

    def wait_for_run(
        self, dag_id: str, *, run_id: str | None = None, after: int = 0, timeout: float = 900.0, poll: float = 1.0
    ) -> dict[str, Any]:
        """Wait for ``run_id`` (or the first run beyond the first ``after`` runs) to finish."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            runs = self.runs(dag_id)
            match = [r for r in runs if r["run_id"] == run_id] if run_id else runs[after : after + 1]
            if match and match[0]["state"] in TERMINAL_STATES:
                return match[0]
            time.sleep(poll)
        raise TimeoutError(f"{dag_id} run {run_id or f'#{after + 1}'} did not finish within {timeout:.0f} s")

    def task_states(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Task instances of a run: task_id, map_index (-1 if not mapped), state, try_number."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances?limit=1000"
        rows: list[dict[str, Any]] = self._request("GET", path)["task_instances"]
        return rows


@contextlib.contextmanager
def running_airflow(home: Path, **kwargs: Any) -> Iterator[LocalAirflow]:
    """Start a :class:`LocalAirflow` for the ``with`` block; always stop it."""
    stack = LocalAirflow(home=home, **kwargs)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
