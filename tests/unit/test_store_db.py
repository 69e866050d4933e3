"""Which database the change store uses, and how its connection errors read (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lcms_tasks.cli import build_parser, main
from lcms_tasks.config import load_config
from lcms_tasks.errors import ChangeStoreError, LcmsError
from lcms_tasks.store import db as store_db
from lcms_tasks.store.db import (
    SCHEMA_REVISION,
    connection_error,
    database_url,
    describe,
    head_revision,
    hide_password,
    libpq_url,
    register_url_provider,
    resolve_database_url,
    sqlalchemy_url,
    unregister_url_provider,
)
from lcms_tasks.store.embedded import DEFAULT_PORT, EmbeddedPostgres, default_port, default_state_dir

SECRET = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No developer database or running embedded cluster may leak into these tests.
    monkeypatch.delenv("LCMS_DATABASE_URL", raising=False)
    monkeypatch.delenv("LCMS_DB_PORT", raising=False)
    monkeypatch.setenv("LCMS_STATE_DIR", str(tmp_path / "state"))


def test_schema_revision_is_the_newest_migration() -> None:
    assert head_revision() == SCHEMA_REVISION


def test_url_forms() -> None:
    assert sqlalchemy_url("postgresql://u@h/d") == "postgresql+psycopg2://u@h/d"
    assert sqlalchemy_url("postgres://u@h/d") == "postgresql+psycopg2://u@h/d"
    assert sqlalchemy_url("postgresql+asyncpg://u@h/d") == "postgresql+psycopg2://u@h/d"
    assert libpq_url("postgresql+psycopg2://u@h:5/d?sslmode=require") == "postgresql://u@h:5/d?sslmode=require"


def test_describe_and_hide_password_never_show_it() -> None:
    url = f"postgresql://lcms:{SECRET}@db.example:6432/changes"
    assert describe(url) == "database 'changes' at db.example:6432 (user lcms)"
    assert SECRET not in hide_password(url) and "***" in hide_password(url)
    assert describe("postgresql:///lcms?host=/var/run/postgresql").startswith(
        "database 'lcms' at /var/run/postgresql:5432"
    )
    with pytest.raises(ChangeStoreError) as err:
        describe(f"not a url {SECRET}")
    assert SECRET not in str(err.value)


@pytest.mark.parametrize(
    ("message", "expected", "permanent"),
    [
        ('connection to server at "h", port 5432 failed: FATAL:  password authentication failed for user "lcms"',
         "refused the login", True),
        ("fe_sendauth: no password supplied", "refused the login", True),
        ('FATAL:  role "bob" does not exist', "no such role", True),
        ('FATAL:  database "x" does not exist', "does not exist", True),
        ('connection to server at "127.0.0.1", port 1 failed: Connection refused', "unreachable", False),
        ("timeout expired", "unreachable", False),
        ('could not translate host name "nope" to address: Name or service not known', "does not resolve", True),
        ('FATAL:  no pg_hba.conf entry for host "1.2.3.4"', "pg_hba.conf", True),
    ],
)  # fmt: skip
def test_connection_errors_name_the_database_and_the_fix(message: str, expected: str, permanent: bool) -> None:
    url = f"postgresql://lcms:{SECRET}@db.example:6432/changes"
    err = connection_error(Exception(message + f" {SECRET}"), url)
    text = str(err)
    assert "database 'changes' at db.example:6432" in text
    assert expected in text and "Fix:" in text
    assert SECRET not in text
    assert "\n" not in text
    assert err.permanent is permanent
    assert isinstance(err, LcmsError)


def test_url_resolution_order(monkeypatch: pytest.MonkeyPatch, config_path: Path) -> None:
    cfg = load_config(config_path)
    assert database_url(cfg) is None  # nothing configured, no embedded cluster running
    asked: list[str] = []

    def provider(conn_id: str) -> str | None:
        asked.append(conn_id)
        return "postgresql://from-provider/db"

    def broken(conn_id: str) -> str | None:
        raise RuntimeError("boom")

    register_url_provider(broken)
    register_url_provider(provider)
    register_url_provider(provider)  # twice: asked once
    try:
        assert resolve_database_url(cfg) == ("postgresql://from-provider/db", "the connection 'lcms_change_store'")
        assert asked == ["lcms_change_store"]
        monkeypatch.setenv("LCMS_DATABASE_URL", "postgresql://from-env/db")
        assert database_url(cfg) == "postgresql://from-env/db"
        configured = cfg.model_copy(update={"database": cfg.database.model_copy(update={"url": "postgresql://cfg/db"})})
        assert database_url(configured) == "postgresql://cfg/db"
    finally:
        unregister_url_provider(provider)
        unregister_url_provider(broken)


def test_url_falls_back_to_a_running_embedded_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EmbeddedPostgres, "is_running", lambda self: True)
    monkeypatch.setattr(EmbeddedPostgres, "_pid_file", lambda self: {"pid": 1, "port": 54444, "state": "ready"})
    assert database_url(None) == "postgresql://postgres@127.0.0.1:54444/lcms"


def test_require_database_url_says_how_to_configure_one() -> None:
    with pytest.raises(ChangeStoreError, match=r"LCMS_DATABASE_URL.*lcms db start"):
        store_db.require_database_url(None)


def test_embedded_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_state_dir() == tmp_path / "state"
    monkeypatch.delenv("LCMS_STATE_DIR")
    assert default_state_dir() == Path(store_db.__file__).resolve().parents[2] / ".lcms"
    assert default_port() == DEFAULT_PORT == 54329
    monkeypatch.setenv("LCMS_DB_PORT", "6543")
    assert default_port() == 6543
    monkeypatch.setenv("LCMS_DB_PORT", "nope")
    with pytest.raises(ChangeStoreError, match="LCMS_DB_PORT"):
        default_port()


def test_embedded_status_of_an_absent_cluster(tmp_path: Path) -> None:
    db = EmbeddedPostgres(tmp_path / "st", port=54400, password=SECRET)
    state: dict[str, Any] = db.status()
    assert state["running"] is False and state["state"] == "not initialised"
    assert state["data_dir"] == str(tmp_path / "st" / "postgres" / "data")
    assert SECRET not in json.dumps(state) and SECRET not in repr(db)
    assert db.stop() is False
    # a stale pid file (a server killed, a machine rebooted) is not a running server
    db.data_dir.mkdir(parents=True)
    (db.data_dir / "postmaster.pid").write_text("999999999\n/x\n0\n54400\n\n127.0.0.1\n0 0\nready\n")
    assert db.is_running() is False


def test_db_cli_parses() -> None:
    parser = build_parser()
    for argv in (["db", "start", "--port", "5"], ["db", "stop"], ["db", "status"], ["db", "url", "--show-password"]):
        assert callable(parser.parse_args(argv).func)
    args = parser.parse_args(["db", "upgrade", "--config", "x.yaml"])
    assert args.config == "x.yaml"


def test_db_url_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LCMS_DATABASE_URL", f"postgresql://lcms:{SECRET}@db.example/changes")
    assert main(["db", "url"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == "postgresql://lcms:***@db.example/changes"
    assert main(["db", "url", "--show-password"]) == 0
    assert SECRET in capsys.readouterr().out
    monkeypatch.delenv("LCMS_DATABASE_URL")
    assert main(["db", "url"]) == 1  # nothing configured, nothing running: the embedded URL and a warning
    captured = capsys.readouterr()
    assert captured.out.strip().endswith("@127.0.0.1:54329/lcms") and "lcms db start" in captured.err


def test_db_upgrade_cli_unreachable(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LCMS_DATABASE_URL", f"postgresql://lcms:{SECRET}@127.0.0.1:{port}/changes")
    assert main(["db", "upgrade"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot connect to the change store: database 'changes' at 127.0.0.1:{port}")
    assert "unreachable" in err and "Fix:" in err and SECRET not in err
    assert len(err.splitlines()) == 1


class _Result:
    def __init__(self, value: object) -> None:
        self.value = value

    def scalar(self) -> object:
        return self.value


class _ServerWithoutPostgis:
    """Stands for a SQLAlchemy connection to a PostgreSQL 16 server without the PostGIS package."""

    def __init__(self) -> None:
        from sqlalchemy.engine import make_url

        self.engine = type("E", (), {"url": make_url(f"postgresql+psycopg2://lcms:{SECRET}@db.example:5433/changes")})

    def execute(self, statement: Any) -> _Result:
        sql = str(statement)
        if "server_version_num" in sql:
            return _Result("160004")
        return _Result(None)  # not installed, not available


def test_missing_postgis_package_names_the_database_and_the_package() -> None:
    from lcms_tasks.store.db import ensure_postgis

    with pytest.raises(ChangeStoreError) as err:
        ensure_postgis(_ServerWithoutPostgis())  # type: ignore[arg-type]
    text = str(err.value)
    assert "database 'changes' at db.example:5433 (user lcms)" in text
    assert "postgresql-16-postgis-3" in text and "lcms db upgrade" in text
    assert SECRET not in text and err.value.permanent
