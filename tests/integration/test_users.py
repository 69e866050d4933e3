"""``lcms users``: adding users with the password on standard input or typed at a terminal (a pseudo-terminal
here), listing them, changing roles, disabling; the hashes are argon2 and verify; no password is ever shown."""

# ruff: noqa: F811 - the fixtures imported from tests.store_fixtures are test parameters

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from argon2 import PasswordHasher

from lcms_tasks.store import upgrade
from lcms_tasks.users import get_user, list_users, set_password, verify_password
from tests.auth_helpers import clean_users, make_user
from tests.store_fixtures import fresh_database, store_db, store_url  # noqa: F401  (pytest fixtures)

PASSWORD = "a long enough passphrase"


@pytest.fixture
def users_db(store_url: str) -> str:
    clean_users(store_url)
    return store_url


@pytest.fixture
def env(users_db: str, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: the store's URL, no embedded cluster to fall back on, no developer settings."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("LCMS_")}
    out.update({"LCMS_DATABASE_URL": users_db, "LCMS_STATE_DIR": str(tmp_path / "state")})
    return out


def lcms(env: dict[str, str], *args: str, stdin: str | None = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lcms_tasks.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def hashes(url: str) -> dict[str, str]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name, password_hash FROM lcms.users")
            return dict(cur.fetchall())
    finally:
        conn.close()


def in_terminal(env: dict[str, str], args: list[str], answers: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run ``lcms ARGS`` on a pseudo-terminal, typing each answer after each password prompt; (exit code, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal, where getpass prompts
        try:
            os.execve(sys.executable, [sys.executable, "-m", "lcms_tasks.cli", *args], env)
        finally:
            os._exit(127)
    output = b""
    answered = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child has closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if answered < len(answers) and output.count(b"assword for") > answered:
                os.write(fd, answers[answered].encode() + b"\n")
                answered += 1
        else:
            os.kill(pid, 9)
            raise AssertionError(f"lcms did not finish within {timeout} s: {output!r}")
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_add_with_the_password_on_stdin(env: dict[str, str], users_db: str) -> None:
    r = lcms(env, "users", "add", "ana", "--role", "validator", stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "added user 'ana' (validator)"
    assert PASSWORD not in r.stdout + r.stderr
    stored = hashes(users_db)["ana"]
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PasswordHasher().verify(stored, PASSWORD)
    assert not verify_password(stored, PASSWORD + " ")
    # the salt is random: the same password twice gives two hashes
    r = lcms(env, "users", "add", "bob", "--role", "viewer", stdin=PASSWORD + "\r\n")  # a Windows line end too
    assert r.returncode == 0, r.stderr
    assert hashes(users_db)["bob"] != stored and verify_password(hashes(users_db)["bob"], PASSWORD)


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("", "the password is empty"),
        ("\n", "the password is empty"),
        ("xq7Zp\n", "too short: at least 8 characters"),
        ("        \n", "only white space"),
        ("ana\n", "too short"),
        ("AnaAnaAna\n", None),  # fine
    ],
)
def test_add_refuses_empty_and_short_passwords(env: dict[str, str], users_db: str, stdin: str, message: str) -> None:
    name = "AnaAnaAna" if message is None else "ana"
    r = lcms(env, "users", "add", name, "--role", "viewer", stdin=stdin)
    if message is None:  # the password may not be the name either
        assert r.returncode == 2 and "may not be the user name" in r.stderr
    else:
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1  # one line, no traceback
        if stdin.strip() not in ("", "ana"):
            assert stdin.strip() not in r.stderr
    assert hashes(users_db) == {}


def test_add_with_a_terminal_prompts_twice(env: dict[str, str], users_db: str) -> None:
    code, output = in_terminal(env, ["users", "add", "ana", "--role", "admin"], [PASSWORD, PASSWORD])
    assert code == 0, output
    assert "Password for ana: " in output and "Repeat the password for ana: " in output
    assert "added user 'ana' (admin)" in output
    assert PASSWORD not in output  # not echoed
    assert verify_password(hashes(users_db)["ana"], PASSWORD)


def test_two_different_passwords_at_the_terminal_add_nobody(env: dict[str, str], users_db: str) -> None:
    code, output = in_terminal(env, ["users", "add", "ana", "--role", "admin"], [PASSWORD, PASSWORD + "!"])
    assert code == 2 and "differ; nothing was changed" in output
    assert PASSWORD not in output
    code, output = in_terminal(env, ["users", "add", "ana", "--role", "admin"], ["short"])
    assert code == 2 and "too short" in output
    assert hashes(users_db) == {}


def test_list_set_role_disable_enable(env: dict[str, str], users_db: str) -> None:
    make_user(users_db, "ana", "validator")
    make_user(users_db, "Bob", "viewer")
    r = lcms(env, "users", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["name", "role", "state", "created"]
    assert [line.split()[:3] for line in lines[1:]] == [["ana", "validator", "active"], ["Bob", "viewer", "active"]]
    assert "$argon2" not in r.stdout

    assert lcms(env, "users", "set-role", "bob", "admin").stdout.strip() == "set the role of user 'Bob' (admin)"
    assert lcms(env, "users", "disable", "ana").returncode == 0
    listed = json.loads(lcms(env, "users", "list", "--json").stdout)
    assert [(u["name"], u["role"], u["disabled"]) for u in listed] == [
        ("ana", "validator", True),
        ("Bob", "admin", False),
    ]
    assert set(listed[0]) == {"name", "role", "disabled", "created_at"}
    assert lcms(env, "users", "enable", "ana").returncode == 0
    assert get_user(users_db, "ana").disabled is False


def test_set_password(env: dict[str, str], users_db: str) -> None:
    make_user(users_db, "ana", "viewer")
    old = hashes(users_db)["ana"]
    r = lcms(env, "users", "set-password", "ANA", stdin="a new passphrase\n")
    assert r.returncode == 0, r.stderr
    new = hashes(users_db)["ana"]
    assert new != old and verify_password(new, "a new passphrase") and not verify_password(new, PASSWORD)
    with pytest.raises(ValueError, match="too short"):
        set_password(users_db, "ana", "ana")
    assert set_password(users_db, "ana", "yet another one").name == "ana"


def test_mistakes_are_one_line_with_exit_2(env: dict[str, str], users_db: str) -> None:
    make_user(users_db, "ana", "viewer")
    for args, stdin, message in (
        (("users", "add", "ANA", "--role", "viewer"), PASSWORD, "a user named 'ANA' exists already"),
        (("users", "add", "an a", "--role", "viewer"), PASSWORD, "user name 'an a' is not allowed"),
        (("users", "set-role", "nobody", "admin"), "", "no user named 'nobody'"),
        (("users", "disable", "nobody"), "", "no user named 'nobody'"),
        (("users", "set-password", "nobody"), PASSWORD, "no user named 'nobody'"),
        (("users", "set-role", "ana", "boss"), "", "invalid choice: 'boss'"),
        (("users", "add", "zoe", "--role", "root"), PASSWORD, "invalid choice: 'root'"),
    ):
        r = lcms(env, *args, stdin=stdin + "\n")
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and PASSWORD not in r.stderr
    assert [u.name for u in list_users(users_db)] == ["ana"]


def test_the_config_names_the_database(env: dict[str, str], users_db: str, config_path: Path) -> None:
    cfg: dict[str, Any] = yaml.safe_load(config_path.read_text())
    cfg["database"] = {"url": users_db}
    config_path.write_text(yaml.safe_dump(cfg))
    no_env = {k: v for k, v in env.items() if k != "LCMS_DATABASE_URL"}
    r = lcms(no_env, "users", "add", "ana", "--role", "viewer", "--config", str(config_path), stdin=PASSWORD)
    assert r.returncode == 0, r.stderr
    assert [u.name for u in list_users(users_db)] == ["ana"]


def test_with_nothing_configured_the_embedded_cluster_serves_the_command_and_stops(env: dict[str, str]) -> None:
    """After `make demo` the project-local cluster is stopped: `lcms users` starts it for the command."""
    from lcms_tasks.store import EmbeddedPostgres
    from tests.store_fixtures import free_port

    state = Path(tempfile.mkdtemp(prefix="lcms-test-users-", dir="/tmp"))
    state.chmod(0o755)  # the server runs as the postgres system user when tests run as root
    port = free_port()
    no_env = {k: v for k, v in env.items() if k != "LCMS_DATABASE_URL"}
    no_env.update({"LCMS_STATE_DIR": str(state), "LCMS_DB_PORT": str(port)})
    cluster = EmbeddedPostgres(state, port=port)
    try:
        r = lcms(no_env, "users", "add", "ana", "--role", "validator", stdin=PASSWORD)
        assert r.returncode == 0, r.stderr
        assert "starting the project-local change store" in r.stderr and PASSWORD not in r.stderr
        assert not cluster.is_running()  # stopped again: it was not running before
        r = lcms(no_env, "users", "list", "--json")
        assert r.returncode == 0, r.stderr
        assert [(u["name"], u["role"]) for u in json.loads(r.stdout)] == [("ana", "validator")]
        assert not cluster.is_running()
    finally:
        cluster.stop()
        shutil.rmtree(state, ignore_errors=True)


def test_a_store_without_the_users_table_says_to_upgrade(tmp_path: Path) -> None:
    with fresh_database("lcms_users_old") as url:
        upgrade(url, "0001")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LCMS_")}
        env.update({"LCMS_DATABASE_URL": url, "LCMS_STATE_DIR": str(tmp_path / "state")})
        r = lcms(env, "users", "add", "ana", "--role", "viewer", stdin=PASSWORD)
        assert r.returncode == 2
        assert "has no users table" in r.stderr and "lcms db upgrade" in r.stderr


def test_the_demo_user_gets_a_generated_password_kept_in_an_owner_only_file(users_db: str, tmp_path: Path) -> None:
    from lcms_tasks.users import _password_matches, disable_user, ensure_generated_user

    secrets_file = tmp_path / "state" / "app_passwords.json"
    user, changed = ensure_generated_user(users_db, "demo", "admin", secrets_file)
    assert changed and (user.name, user.role, user.disabled) == ("demo", "admin", False)
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    assert not list(secrets_file.parent.glob(".*.tmp"))  # renamed into place
    first = json.loads(secrets_file.read_text())["demo"]
    assert len(first) >= 20 and _password_matches(users_db, "demo", first)
    # a second demo changes nothing: the recorded password still logs in
    assert ensure_generated_user(users_db, "demo", "admin", secrets_file)[1] is False
    assert json.loads(secrets_file.read_text())["demo"] == first
    # the password changed by hand, then the user disabled: a new one is generated, the user enabled again
    set_password(users_db, "demo", "another password 1")
    disable_user(users_db, "demo")
    user, changed = ensure_generated_user(users_db, "demo", "validator", secrets_file)
    second = json.loads(secrets_file.read_text())["demo"]
    assert changed and second != first and _password_matches(users_db, "demo", second)
    assert (user.role, user.disabled) == ("admin", False)  # an existing user keeps their role
    assert not _password_matches(users_db, "demo", "another password 1")
