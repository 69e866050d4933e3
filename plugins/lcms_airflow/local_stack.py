"""A real Airflow on one machine: API server, scheduler (LocalExecutor), DAG processor, triggerer, and
Celery workers when asked for (the CeleryExecutor on PostgreSQL and Redis, as in production).

Used by ``make demo``, ``make airflow`` and the end-to-end tests: the components
run as separate processes against one metadata database (SQLite under
``AIRFLOW_HOME`` by default), as ``airflow standalone`` would, but with ports,
secrets, polling and shutdown under our control. DAG runs are triggered and
watched through Airflow's REST API (``/api/v2``), authenticated as a user of the
simple auth manager whose password is generated into ``AIRFLOW_HOME``.

``python -m lcms_airflow.local_stack`` (``make airflow``) runs the stack in the
foreground for the UI: it prints the URL and how to log in, and on Ctrl-C or
SIGTERM stops every component, with everything they started, before exiting.
"""

from __future__ import annotations

import argparse
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
TERMINAL_STATES = {"success", "failed"}


def worker_hostname() -> str:
    """The hostname a task instance records (``[core] hostname_callable``): the Celery worker's name when
    several workers share this machine, else the machine's."""
    return os.environ.get("LCMS_WORKER_HOSTNAME") or socket.getfqdn()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class _Stat:
    state: str
    ppid: int
    pgid: int
    start: int  # clock ticks after boot: with the pid, identifies the process (pids are reused)

    @property
    def running(self) -> bool:
        return self.state not in {"Z", "X"}  # a zombie has finished; only its exit status is left


def _proc_stat(pid: int) -> _Stat | None:
    """``pid``'s state, parent, process group and start time from ``/proc``, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces and parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    return _Stat(state=fields[0], ppid=int(fields[1]), pgid=int(fields[2]), start=int(fields[19]))


def _running_processes() -> dict[int, _Stat]:
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None and stat.running:
            stats[int(entry.name)] = stat
    return stats


def group_members(pgids: Iterable[int]) -> dict[int, int]:
    """Every running process of the process groups ``pgids``: pid -> start time."""
    wanted = set(pgids)
    return {pid: stat.start for pid, stat in _running_processes().items() if stat.pgid in wanted}


def descendants(pids: Iterable[int]) -> dict[int, int]:
    """Every running descendant of ``pids`` (not ``pids`` themselves): pid -> start time."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for pid, stat in _running_processes().items():
        children.setdefault(stat.ppid, []).append(pid)
        starts[pid] = stat.start
    found: dict[int, int] = {}
    todo = list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = starts[child]
                todo.append(child)
    return found


def _alive(pid: int, start: int) -> bool:
    """Whether the process ``pid`` that started at ``start`` still runs."""
    stat = _proc_stat(pid)
    return stat is not None and stat.start == start and stat.running


def _signal_process(pid: int, sig: signal.Signals) -> None:
    """Signal ``pid``, and its whole group if it leads one (Airflow puts each task in a group of its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def terminate(procs: dict[int, int], timeout: float = 10.0) -> None:
    """SIGTERM ``procs`` (pid -> start time), wait up to ``timeout`` s, SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        live = {pid: start for pid, start in procs.items() if _alive(pid, start)}
        for pid in live:
            _signal_process(pid, sig)
        deadline = time.monotonic() + wait
        while live and time.monotonic() < deadline:
            time.sleep(0.1)
            live = {pid: start for pid, start in live.items() if _alive(pid, start)}
        if not live:
            return
    log.warning("processes still running after SIGKILL: %s", sorted(live))


@dataclass
class LocalAirflow:
    """Airflow components as child processes sharing ``home``'s metadata database."""

    home: Path
    dags_folder: Path = REPO / "dags"
    parallelism: int = 2
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    user: str = "lcms"
    #: Also run a triggerer (deferred tasks and sensors); ``make airflow`` does, the demo needs none.
    triggerer: bool = False
    #: Celery workers to start (name -> comma-separated queues); any makes the executor the CeleryExecutor,
    #: which needs a broker and result backend in ``extra_env`` (``AIRFLOW__CELERY__BROKER_URL``,
    #: ``AIRFLOW__CELERY__RESULT_BACKEND``) and a PostgreSQL metadata database. Each worker records its
    #: name as the hostname of the task instances it runs.
    celery_workers: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def password_file(self) -> Path:
        """The simple auth manager's password file (JSON: user -> password), generated on first use."""
        return self.home / "lcms_passwords.json"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        jwt_file = self.home / "jwt_secret"
        passwords = self.password_file
        self.home.mkdir(parents=True, exist_ok=True)
        if not jwt_file.exists():
            jwt_file.write_text(secrets.token_hex(32))
        known = json.loads(passwords.read_text() or "{}") if passwords.exists() else {}
        if self.user not in known:
            passwords.touch(mode=0o600)  # readable by its owner only, from the start
            passwords.write_text(json.dumps({**known, self.user: secrets.token_urlsafe(16)}))
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if self.celery_workers else "LocalExecutor",
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
        # Airflow's API server and DAG processor import starlette's TestClient (its in-process execution
        # API), which warns about its own httpx dependency at every start; nothing in LCMS uses it.
        quiet = "ignore:Using `httpx` with `starlette.testclient` is deprecated"
        env["PYTHONWARNINGS"] = ",".join(w for w in (env.get("PYTHONWARNINGS"), quiet) if w)
        env.update(self.extra_env)
        # After extra_env: a test or deployment may point the metadata database at PostgreSQL.
        if env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite").startswith("sqlite"):
            env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS", "lcms_airflow.sqlite_settings.CONNECT_ARGS")
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
        components = [
            ("api-server", ["api-server", "--port", str(self.port), "--host", "127.0.0.1"]),
            ("scheduler", ["scheduler"]),
            ("dag-processor", ["dag-processor"]),
        ]
        if self.triggerer:
            components.append(("triggerer", ["triggerer"]))
        worker_env: dict[str, dict[str, str]] = {}
        for worker, queues in self.celery_workers.items():
            name = f"celery-worker-{worker}"
            args = ["celery", "worker", "--celery-hostname", f"{worker}@lcms", "--queues", queues, "--concurrency", "1"]
            components.append((name, args))
            worker_env[name] = {
                # several workers on one machine: each its own log server port and task-instance hostname
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "lcms_airflow.local_stack.worker_hostname",
                "LCMS_WORKER_HOSTNAME": worker,
            }
        for name, args in components:
            # Each component leads a process group of its own: stop() signals the whole group, and a
            # terminal's Ctrl-C reaches only our process, which then stops them in order.
            with (logs / f"{name}.log").open("ab") as out:  # the child keeps its own copy of the descriptor
                self.procs[name] = subprocess.Popen(
                    [exe, *args],
                    env={**self.env(), **worker_env.get(name, {})},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
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

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every component's process group and whatever they started; wait for all of them."""
        # Task processes run in process groups of their own and some children outlive their parent:
        # note every descendant now, and make sure each is gone once the components have exited.
        spawned = descendants(proc.pid for proc in self.procs.values() if proc.poll() is None)
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # What outlived its component: group members (workers finishing their shutdown) and descendants
        # that left the group (task processes) get SIGTERM, a little time, then SIGKILL.
        terminate({**spawned, **group_members(proc.pid for proc in self.procs.values())})
        self.procs.clear()
        self._token = None

    # -- REST API ------------------------------------------------------------------------------------
    def password(self) -> str:
        return str(json.loads(self.password_file.read_text())[self.user])

    def token(self) -> str:
        """A JWT for the REST API, from the simple auth manager's ``/auth/token`` (cached)."""
        if self._token is None:
            self._token = str(
                self._request("POST", "/auth/token", {"username": self.user, "password": self.password()}, auth=False)[
                    "access_token"
                ]
            )
        return self._token

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the REST API (``path`` such as ``/api/v2/dags``) as :attr:`user`; the decoded JSON answer."""
        return self._request(method, path, body)

    def _request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        url = f"{self.url}{path}"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
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
        base = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
        rows: list[dict[str, Any]] = []
        while True:  # the API answers at most [api] maximum_page_limit (100) rows a page
            page = self._request("GET", f"{base}?limit=100&offset={len(rows)}")
            rows.extend(page["task_instances"])
            if not page["task_instances"] or len(rows) >= int(page.get("total_entries", 0)):
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


# -- make airflow ------------------------------------------------------------------------------------
class _SignalReceivedError(Exception):
    """SIGINT or SIGTERM arrived: stop the stack."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Once: a second Ctrl-C must not cut the shutdown short and leave components running.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _SignalReceivedError(signum)


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    """Run the stack in the foreground until SIGINT or SIGTERM; 0 after a clean stop."""
    parser = argparse.ArgumentParser(
        prog="python -m lcms_airflow.local_stack",
        description="The Airflow UI and REST API, scheduler, DAG processor and triggerer on the local metadata "
        "database, in the foreground; Ctrl-C or SIGTERM stops every component.",
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=Path(os.environ.get("AIRFLOW_HOME") or REPO / ".airflow"),
        help="AIRFLOW_HOME: metadata database (SQLite unless configured), logs, secrets (default: %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("AIRFLOW__API__PORT") or 8080),
        help="port of the UI and API on 127.0.0.1 (default: AIRFLOW__API__PORT or 8080: %(default)s)",
    )
    parser.add_argument("--user", default="lcms", help="the simple auth manager's (admin) user (default: %(default)s)")
    parser.add_argument("--no-triggerer", action="store_true", help="do not start a triggerer")
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        help="seconds the components get to stop (the scheduler finishes its queued tasks) before SIGKILL "
        "(default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if _port_in_use(args.port):
        print(
            f"port {args.port} on 127.0.0.1 is in use (another Airflow?); choose another with --port", file=sys.stderr
        )
        return 1

    stack = LocalAirflow(home=args.home.resolve(), port=args.port, user=args.user, triggerer=not args.no_triggerer)
    # Installed before anything starts, so a Ctrl-C while the database migrates stops cleanly too.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    code = 0
    try:
        components = "API server, scheduler, DAG processor" + ("" if args.no_triggerer else ", triggerer")
        _say(f"starting Airflow ({components}) with AIRFLOW_HOME={stack.home}")
        stack.start()
        _say(f"Airflow UI: {stack.url}/")
        _say(f"log in as {stack.user!r}; the password is in {stack.password_file} (JSON: user -> password)")
        _say(f"component logs: {stack.home / 'logs'}; Ctrl-C stops everything")
        from lcms_tasks.stages import STAGES

        try:
            stack.wait_for_dags([f"lcms_{s.name}" for s in STAGES], timeout=300)
            _say(f"{len(STAGES)} LCMS DAGs loaded")
        except TimeoutError as err:
            _say(f"warning: {err}")
        while True:
            stack._check_alive()
            time.sleep(1)
    except _SignalReceivedError as sig:
        _say(f"{sig}: stopping Airflow (running tasks get up to {args.stop_timeout:.0f} s to finish)")
    except (RuntimeError, TimeoutError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop(timeout=args.stop_timeout)
        # A component whose start a signal interrupted is not in stack.procs: every child of ours is the stack's.
        leftovers = descendants([os.getpid()])
        terminate(leftovers)
    _say("Airflow stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
