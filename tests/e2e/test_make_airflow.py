"""``make airflow``: the UI stack in the foreground, and nothing of it left once it is stopped.

The entry point (``python -m lcms_airflow.local_stack``) is started on a free
port and a fresh ``AIRFLOW_HOME``; once the API answers, it is stopped the two
ways a developer stops it (SIGTERM, and Ctrl-C, which a terminal sends to the
whole foreground process group: ``make`` and the entry point alike). Every
process of the stack seen before the signal must be gone afterwards, and no
process may still run with that ``AIRFLOW_HOME``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from lcms_airflow.local_stack import LocalAirflow, free_port
from tests.conftest import base_config, write_aoi

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ("api_server", "scheduler", "dag-processor", "triggerer")

pytestmark = pytest.mark.slow


def stack_env(home: Path, port: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__API__")}
    env["AIRFLOW_HOME"] = str(home)
    # Runs triggered here work on a tiny project under the test's folder, never on the demo's storage.
    project = home.parent / "project"
    project.mkdir(parents=True, exist_ok=True)
    write_aoi(project / "aoi.geojson")
    (project / "project.yaml").write_text(yaml.safe_dump(base_config("aoi.geojson", "data"), sort_keys=False))
    env["LCMS_CONFIG"] = str(project / "project.yaml")
    env["LCMS_TASK_RETRIES"] = "0"
    if port is not None:
        env["AIRFLOW__API__PORT"] = str(port)
    return env


def api_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def cmdline(proc: psutil.Process) -> str:
    """``proc``'s command line (or process title); empty once it has ended."""
    try:
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


def component(proc: psutil.Process) -> str | None:
    """Which Airflow component ``proc`` is, if any."""
    title = cmdline(proc).replace("api-server", "api_server")
    return next((name for name in COMPONENTS if name in title), None)


def wait_until_up(proc: subprocess.Popen[bytes], leader: int, port: int, out: Path) -> list[psutil.Process]:
    """Wait until the API answers and every component runs; the stack's processes below ``leader``."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the stack exited with {proc.returncode}:\n{out.read_text()[-3000:]}"
        if api_answers(port) and "log in as" in out.read_text():
            procs = psutil.Process(leader).children(recursive=True)
            if set(COMPONENTS) <= {component(p) for p in procs}:
                return procs
        time.sleep(1)
    raise AssertionError(f"the stack did not come up on port {port} within 240 s:\n{out.read_text()[-3000:]}")


def still_running(procs: list[psutil.Process], home: Path) -> list[str]:
    """Processes of ``procs``, or any with ``AIRFLOW_HOME=home``, that still run (zombies have ended)."""
    left = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{p.pid} {cmdline(p)}")
        except psutil.NoSuchProcess:
            continue
    for p in processes_of(home):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and all(not line.startswith(f"{p.pid} ") for line in left):
                left.append(f"{p.pid} {cmdline(p)}")
        except psutil.NoSuchProcess:
            continue
    return left


def processes_of(home: Path) -> list[psutil.Process]:
    """Every live process with ``AIRFLOW_HOME=home`` or a file under ``home`` open (its log, the database).

    The open files find what the environment cannot: a process title set with setproctitle (the
    API server's) overwrites the memory ``/proc/<pid>/environ`` shows.
    """
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid == os.getpid():
                continue
            if p.environ().get("AIRFLOW_HOME") == str(home) or any(
                Path(f.path).is_relative_to(home) for f in p.open_files()
            ):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture
def launched(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; whatever is left of them is killed, so a failing test leaves nothing behind."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    # Components lead process groups of their own: kill those groups too.
    for p in processes_of(tmp_path / "airflow-home"):
        try:
            if os.getpgid(p.pid) == p.pid:
                os.killpg(p.pid, signal.SIGKILL)
            else:
                p.kill()
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue


def wait_for_task_process(procs: list[psutil.Process], timeout: float = 120) -> psutil.Process:
    """Wait until a task runs: a process below the scheduler in a process group of its own."""
    scheduler = next(p for p in procs if component(p) == "scheduler")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in scheduler.children(recursive=True):
            try:
                if os.getpgid(p.pid) != os.getpgid(scheduler.pid):
                    return p
            except ProcessLookupError:
                continue
        time.sleep(0.2)
    raise AssertionError(f"no task process started within {timeout:.0f} s")


def test_sigterm_stops_every_component(tmp_path: Path, launched: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM while tasks run and more are queued: the scheduler would drain its queue; it gets 10 s."""
    home, port, out = tmp_path / "airflow-home", free_port(), tmp_path / "stack.log"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lcms_airflow.local_stack", "--port", str(port), "--stop-timeout", "10"],
            cwd=REPO,
            env=stack_env(home),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    launched.append(proc)
    procs = wait_until_up(proc, proc.pid, port, out)

    text = out.read_text()
    password = json.loads((home / "lcms_passwords.json").read_text())["lcms"]
    assert f"http://127.0.0.1:{port}/" in text
    assert "'lcms'" in text and str(home / "lcms_passwords.json") in text
    assert password not in text
    for log in (home / "logs").rglob("*.log"):
        assert password not in log.read_text(errors="replace"), f"the password is written to {log}"

    client = LocalAirflow(home=home, port=port)
    for _ in range(3):
        client.trigger("lcms_download", {})
        time.sleep(0.01)  # distinct run ids
    task = wait_for_task_process(procs)
    procs = [*psutil.Process(proc.pid).children(recursive=True), task]

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, out.read_text()[-3000:]
    assert still_running(procs, home) == []
    assert "SIGTERM: stopping Airflow" in out.read_text()
    assert out.read_text().rstrip().endswith("Airflow stopped")


def test_ctrl_c_on_make_airflow_stops_every_component(tmp_path: Path, launched: list[subprocess.Popen[bytes]]) -> None:
    home, port, out = tmp_path / "airflow-home", free_port(), tmp_path / "make.log"
    # `-o` keeps make from re-running setup (the stamp may be older than a Makefile being edited).
    stamp = REPO / ".venv" / ".lcms-setup-stamp"
    with out.open("wb") as sink:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "-o", str(stamp), "airflow"],
            cwd=REPO,
            env=stack_env(home, port),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal's foreground job
        )
    launched.append(make)
    procs = wait_until_up(make, make.pid, port, out)
    entry = [p for p in procs if "lcms_airflow.local_stack" in cmdline(p)]
    assert len(entry) == 1, [cmdline(p) for p in procs]

    os.killpg(make.pid, signal.SIGINT)
    # make waits for its recipe, then dies of the same signal, as make does after a Ctrl-C.
    assert make.wait(timeout=120) in (0, -signal.SIGINT), out.read_text()[-3000:]
    assert not entry[0].is_running() or entry[0].status() == psutil.STATUS_ZOMBIE
    assert still_running(procs, home) == []
    text = out.read_text()
    assert "SIGINT: stopping Airflow" in text and "Airflow stopped" in text


def test_make_airflow_sets_up_first_and_runs_the_entry_point() -> None:
    rule = re.search(r"^airflow:(.*)\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert rule is not None, "the Makefile has no `airflow:` rule"
    prerequisites = rule.group(1).split("##")[0].split()
    assert prerequisites == ["$(SETUP_STAMP)"]
    assert rule.group(2).strip() == "$(PY) -m lcms_airflow.local_stack"
