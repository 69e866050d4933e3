"""The embedded change store: a project-local PostgreSQL + PostGIS cluster for the one-machine default.

With no database configured, ``make demo`` and ``make serve`` (and ``lcms db start``) run
:meth:`EmbeddedPostgres.start`. Layout, under the project's git-ignored state folder
(``$LCMS_STATE_DIR``, default ``<repo>/.lcms``)::

    <state>/postgres/            owned by the cluster's system user (``postgres`` when run as root), 0700
        data/                    the cluster (initdb), PostgreSQL's own files
        postgres.log             the server's log (start-up failures are read from it)

The server listens on 127.0.0.1 only (no Unix socket), on its own port (``$LCMS_DB_PORT``, default
54329), with a database ``lcms`` migrated to the newest schema and the superuser ``postgres``;
host connections are trusted (loopback only) unless a password is given, then they need it
(SCRAM). ``initdb`` and ``pg_ctl`` refuse to run as root: as root they run as the ``postgres``
system user, to whom the folder is handed. The server keeps running after the command that
started it (it is its own process group) until :meth:`EmbeddedPostgres.stop` / ``lcms db stop``.
The binaries are those of the newest PostgreSQL under ``/usr/lib/postgresql`` with PostGIS
installed (``$LCMS_PG_BIN`` to choose), or of the version the data folder was made with.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lcms_tasks.errors import ChangeStoreError

log = logging.getLogger(__name__)

ENV_STATE_DIR = "LCMS_STATE_DIR"
ENV_PORT = "LCMS_DB_PORT"
ENV_PG_BIN = "LCMS_PG_BIN"
DEFAULT_PORT = 54329
DATABASE = "lcms"
SUPERUSER = "postgres"
#: The unprivileged system user the cluster runs as when LCMS runs as root.
SYSTEM_USER = "postgres"
REPO = Path(__file__).resolve().parents[2]

#: The server's settings, written to ``data/lcms.conf`` (included by postgresql.conf) at every start.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "max_connections": "50",
    "shared_buffers": "'256MB'",
    "max_wal_size": "'2GB'",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_checkpoints": "off",
    "log_timezone": "'UTC'",
    "timezone": "'UTC'",
}


def default_state_dir() -> Path:
    """``$LCMS_STATE_DIR``, else ``<repo>/.lcms`` (git-ignored)."""
    env = os.environ.get(ENV_STATE_DIR, "").strip()
    return Path(env).expanduser().resolve() if env else REPO / ".lcms"


def default_port() -> int:
    """``$LCMS_DB_PORT``, else 54329."""
    env = os.environ.get(ENV_PORT, "").strip()
    if not env:
        return DEFAULT_PORT
    try:
        port = int(env)
    except ValueError:
        raise ChangeStoreError(f"{ENV_PORT}={env!r} is not a port number", permanent=True) from None
    if not 0 < port < 65536:
        raise ChangeStoreError(f"{ENV_PORT}={port} is not a port number (1-65535)", permanent=True)
    return port


def find_pg_bin(major: int | None = None) -> Path:
    """Folder of ``initdb``/``pg_ctl``: ``$LCMS_PG_BIN``, else the newest (or the ``major``) Debian PostgreSQL."""
    env = os.environ.get(ENV_PG_BIN, "").strip()
    if env:
        path = Path(env)
        if not (path / "initdb").is_file():
            raise ChangeStoreError(f"{ENV_PG_BIN}={env}: no initdb in that folder", permanent=True)
        return path
    base = Path("/usr/lib/postgresql")
    versions = sorted((int(p.name) for p in base.glob("*") if p.name.isdigit()), reverse=True) if base.is_dir() else []
    if major is not None:
        versions = [v for v in versions if v == major]
    with_postgis = [v for v in versions if Path(f"/usr/share/postgresql/{v}/extension/postgis.control").is_file()]
    for v in with_postgis or versions:
        if (base / str(v) / "bin" / "initdb").is_file():
            if not with_postgis:
                log.warning("PostgreSQL %d has no PostGIS: install postgresql-%d-postgis-3 (make setup does)", v, v)
            return base / str(v) / "bin"
    on_path = shutil.which("initdb")
    if on_path and major is None:
        return Path(on_path).parent
    wanted = f"PostgreSQL {major}" if major else "PostgreSQL"
    raise ChangeStoreError(
        f"no {wanted} server binaries (initdb) found under {base} or on PATH. Fix: install the Debian packages "
        f"postgresql{'-' + str(major) if major else ''} and postgresql-{major or 'NN'}-postgis-3 (`make setup`), "
        f"or set {ENV_PG_BIN}",
        permanent=True,
    )


class EmbeddedPostgres:
    """A project-local PostgreSQL + PostGIS cluster (see the module docstring for its layout)."""

    def __init__(
        self,
        state_dir: str | Path | None = None,
        port: int | None = None,
        *,
        password: str | None = None,
        database: str = DATABASE,
    ) -> None:
        self.state_dir = Path(state_dir).resolve() if state_dir is not None else default_state_dir()
        self.root = self.state_dir / "postgres"
        self.data_dir = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self._port = port
        self.password = password
        self.database = database

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(data_dir={str(self.data_dir)!r}, port={self.port})"

    # -- where -----------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The running server's port, else the configured one."""
        running = self._pid_file()
        if running is not None:
            return running["port"]
        return self._port if self._port is not None else default_port()

    @property
    def url(self) -> str:
        """``postgresql://postgres[:password]@127.0.0.1:PORT/lcms``."""
        auth = SUPERUSER + (f":{quote(self.password, safe='')}" if self.password else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{self.database}"

    def admin_url(self) -> str:
        """URL of the cluster's ``postgres`` maintenance database."""
        return self.url.rsplit("/", 1)[0] + "/postgres"

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    # -- state -----------------------------------------------------------------------------------
    def _pid_file(self) -> dict[str, Any] | None:
        """The running postmaster's pid and port (from postmaster.pid), None if it is not running and ready."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # a stale pid file (the machine rebooted, the server was killed)
        except PermissionError:
            pass  # alive, another user's process
        cmdline = Path(f"/proc/{pid}/cmdline")
        with contextlib.suppress(OSError):
            if cmdline.exists() and b"postgres" not in cmdline.read_bytes():
                return None  # the pid was reused by another program
        status = lines[7].strip() if len(lines) > 7 else "ready"
        return {"pid": pid, "port": port, "state": status}

    def is_running(self) -> bool:
        """True when this cluster's server is up and ready (cheap: reads its pid file, starts nothing)."""
        found = self._pid_file()
        return found is not None and found["state"] == "ready"

    def status(self) -> dict[str, Any]:
        """Where the cluster lives and whether it runs (``running``, ``pid``, ``port``, ``url``, ...)."""
        found = self._pid_file()
        version = (self.data_dir / "PG_VERSION").read_text().strip() if self.initialised else None
        return {
            "running": bool(found and found["state"] == "ready"),
            "state": found["state"] if found else ("stopped" if self.initialised else "not initialised"),
            "pid": found["pid"] if found else None,
            "port": self.port,
            "url": self.url.replace(f":{quote(self.password, safe='')}@", ":***@") if self.password else self.url,
            "data_dir": str(self.data_dir),
            "log_file": str(self.log_file),
            "postgresql": version,
        }

    # -- running the server's tools as an unprivileged user ---------------------------------------
    def _owner(self) -> tuple[int, int] | None:
        """(uid, gid) of the system user the cluster runs as when we are root; None: the current user."""
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise ChangeStoreError(
                f"running as root, the embedded database needs the unprivileged system user {SYSTEM_USER!r} "
                "(initdb refuses to run as root). Fix: install the postgresql package, which creates it, or run "
                "LCMS as an unprivileged user",
                permanent=True,
            ) from None
        return entry.pw_uid, entry.pw_gid

    def _run(self, args: list[str], *, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        owner = self._owner()
        kwargs: dict[str, Any] = {}
        if owner is not None:
            kwargs.update(user=owner[0], group=owner[1], extra_groups=[])
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        proc = subprocess.run(
            args,
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )
        if check and proc.returncode != 0:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            raise ChangeStoreError(
                f"embedded database in {self.data_dir}: {Path(args[0]).name} failed (exit {proc.returncode}): {tail}"
            )
        return proc

    def _check_reachable(self, owner: tuple[int, int]) -> None:
        """The system user can enter every folder above the cluster (else initdb fails obscurely)."""
        import pwd

        name = pwd.getpwuid(owner[0]).pw_name
        groups = {owner[1], *(g for g in os.getgrouplist(name, owner[1]))}
        for folder in [self.root.parent, *self.root.parent.parents]:
            st = folder.stat()
            ok = (
                (st.st_uid == owner[0] and st.st_mode & 0o100)
                or (st.st_gid in groups and st.st_mode & 0o010)
                or st.st_mode & 0o001
            )
            if not ok:
                raise ChangeStoreError(
                    f"embedded database: the system user {name!r} the server runs as cannot enter {folder} "
                    f"(mode {st.st_mode & 0o777:o}), above {self.root}. Fix: set {ENV_STATE_DIR} to a folder it can "
                    f"reach, or `chmod o+x {folder}`",
                    permanent=True,
                )

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        owner = self._owner()
        if owner is not None:
            self._check_reachable(owner)
            os.chown(self.root, *owner)
            if self.log_file.exists():
                os.chown(self.log_file, *owner)
        self.root.chmod(0o700)

    def _initdb(self, bin_dir: Path) -> None:
        log.info("creating the embedded change store cluster in %s", self.data_dir)
        args = [
            str(bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--auth-local=trust",
        ]
        pwfile: Path | None = None
        if self.password:
            fd, name = tempfile.mkstemp(dir=self.root, prefix=".pw-")
            pwfile = Path(name)
            with os.fdopen(fd, "w") as fh:
                fh.write(self.password + "\n")
            owner = self._owner()
            if owner is not None:
                os.chown(pwfile, *owner)
            args += ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        else:
            args += ["--auth-host=trust"]
        try:
            self._run(args)
        except ChangeStoreError:
            shutil.rmtree(self.data_dir, ignore_errors=True)  # a half-made cluster would never start
            raise
        finally:
            if pwfile is not None:
                pwfile.unlink(missing_ok=True)

    def _write_settings(self) -> None:
        """(Re)write ``lcms.conf`` and make sure postgresql.conf includes it (settings of this LCMS version)."""
        conf = self.data_dir / "lcms.conf"
        text = "# written by lcms_tasks/store/embedded.py at every start: edit SERVER_SETTINGS there\n" + "".join(
            f"{key} = {value}\n" for key, value in SERVER_SETTINGS.items()
        )
        conf.write_text(text, encoding="utf-8")
        main = self.data_dir / "postgresql.conf"
        include = "include_if_exists = 'lcms.conf'"
        if include not in main.read_text(encoding="utf-8"):
            with open(main, "a", encoding="utf-8") as fh:
                fh.write(f"\n# --- LCMS embedded change store ---\n{include}\n")
        owner = self._owner()
        if owner is not None:
            os.chown(conf, *owner)

    def _port_taken(self, port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", port)) == 0

    def _log_tail(self, n: int = 8) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(line.strip() for line in lines[-n:])

    # -- start / stop ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One process at a time starts or stops the cluster (``make demo`` and ``make serve`` may race)."""
        import fcntl

        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "postgres.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def start(self, *, migrate: bool = True, timeout: float = 60) -> str:
        """Start the cluster (creating it on first use), make the ``lcms`` database and migrate it; its URL.

        Idempotent: when it already runs, only the database and the schema are checked.
        """
        with self._locked():
            self._start(timeout)
        if migrate:
            from lcms_tasks.store.db import upgrade

            upgrade(self.url)
        return self.url

    def _start(self, timeout: float) -> None:
        if not self.is_running():
            port = self._port if self._port is not None else default_port()
            if self._port_taken(port):
                raise ChangeStoreError(
                    f"embedded database: port {port} on 127.0.0.1 is in use by another program. Fix: set "
                    f"{ENV_PORT} (or --port) to a free port, or stop that program",
                    permanent=True,
                )
            self._prepare_root()
            major = int((self.data_dir / "PG_VERSION").read_text()) if self.initialised else None
            bin_dir = find_pg_bin(major)
            if not self.initialised:
                self._initdb(bin_dir)
            self._write_settings()
            log.info("starting the embedded change store on 127.0.0.1:%d (%s)", port, self.data_dir)
            proc = self._run(
                [
                    str(bin_dir / "pg_ctl"),
                    "start",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "-o",
                    f"-p {port}",
                ],
                timeout=timeout + 30,
                check=False,
            )
            if proc.returncode != 0 or not self.is_running():
                raise ChangeStoreError(
                    f"embedded database in {self.data_dir} did not start on port {port} "
                    f"(pg_ctl exit {proc.returncode}); server log {self.log_file}: {self._log_tail()}"
                )
        self._ensure_database()

    def _ensure_database(self) -> None:
        from lcms_tasks.store.db import connect

        conn = connect(self.admin_url(), application_name="lcms-embedded")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                if cur.fetchone() is None:
                    log.info("creating database %s in the embedded change store", self.database)
                    cur.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            conn.close()

    def stop(self, *, timeout: float = 60) -> bool:
        """Stop the server (fast shutdown: open sessions are ended); True if it was running."""
        with self._locked():
            return self._stop(timeout)

    def _stop(self, timeout: float) -> bool:
        found = self._pid_file()
        if found is None:
            return False
        major = int((self.data_dir / "PG_VERSION").read_text())
        bin_dir = find_pg_bin(major)
        log.info("stopping the embedded change store (pid %d)", found["pid"])
        self._run(
            [str(bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(int(timeout))],
            timeout=timeout + 30,
        )
        return True

    def destroy(self) -> None:
        """Stop the server and delete the cluster's folder (every change stored in it is lost)."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        """Start the cluster for the ``with`` block (yields its URL); stop it after, if this block started it."""
        was_running = self.is_running()
        url = self.start()
        try:
            yield url
        finally:
            if not was_running:
                self.stop()

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until the server accepts connections (after a start by another process)."""
        deadline = time.monotonic() + timeout
        while not self.is_running():
            if time.monotonic() > deadline:
                raise ChangeStoreError(f"embedded database in {self.data_dir} is not ready after {timeout:.0f} s")
            time.sleep(0.2)
