"""The auth pieces without a database: the login limiter, tokens, roles, password rules and hashes, the settings,
reading a new password, and an app whose database is down (it starts; logins answer 503, never a secret)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from lcms_service.app import create_app
from lcms_service.auth import (
    SESSION_COOKIE,
    AuthSettings,
    LoginLimiter,
    User,
    configure_auth,
    cookie_path,
    new_token,
    require_role,
    token_hash,
)
from lcms_service.settings import ServiceSettings
from lcms_tasks.users import (
    ROLES,
    UserError,
    check_name,
    check_password,
    check_role,
    hash_password,
    needs_rehash,
    read_new_password,
    role_rank,
    verify_nothing,
    verify_password,
)

DOWN = "postgresql://lcms:s3cret@127.0.0.1:1/lcms"  # nothing listens on port 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_counts_failures_per_name_and_address_in_a_sliding_window() -> None:
    clock = Clock()
    limiter = LoginLimiter(max_failures=3, max_failures_per_ip=5, window_s=60, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("ana", "10.0.0.1") == 0
        limiter.failed("ana", "10.0.0.1")
        clock.now += 10
    assert limiter.retry_after("Ana", "10.0.0.1") == pytest.approx(30)  # names are case-insensitive
    assert limiter.retry_after("ana", "10.0.0.2") == 0  # another address
    assert limiter.retry_after("bob", "10.0.0.1") == 0  # another name
    clock.now += 30
    assert limiter.retry_after("ana", "10.0.0.1") == 0  # the first failure left the window
    limiter.failed("bob", "10.0.0.1")
    limiter.failed("eve", "10.0.0.1")
    limiter.failed("joe", "10.0.0.1")
    assert limiter.retry_after("zoe", "10.0.0.1") > 0  # 5 failures from the address in the window
    limiter.succeeded("ana", "10.0.0.1")
    assert limiter.retry_after("zoe", "10.0.0.1") > 0  # a success clears the name's count, not the address's


def test_limiter_memory_is_bounded() -> None:
    limiter = LoginLimiter(max_failures=1, max_failures_per_ip=1000, window_s=60, max_keys=10)
    for i in range(100):
        limiter.failed(f"user{i}", f"10.0.{i}.1")
    assert len(limiter._failures) <= 10
    assert limiter.retry_after("user99", "10.0.99.1") > 0  # the newest are kept


def test_tokens_are_random_and_stored_as_sha256() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100 and all(len(t) == 43 for t in tokens)
    token = tokens.pop()
    assert len(token_hash(token)) == 32 and token_hash(token) == token_hash(token)
    assert token.encode() not in token_hash(token)


def test_roles_are_ordered() -> None:
    assert ROLES == ("viewer", "validator", "admin")
    assert [role_rank(r) for r in ROLES] == [0, 1, 2]
    admin, viewer = User(name="a", role="admin"), User(name="v", role="viewer")
    assert all(admin.has_role(r) for r in ROLES)
    assert viewer.has_role("viewer") and not viewer.has_role("validator")
    with pytest.raises(UserError, match="unknown role 'root'"):
        check_role("root")


def test_require_role_is_one_dependency_per_role_and_refuses_unknown_roles() -> None:
    assert require_role("validator") is require_role("validator")
    assert require_role("admin") is not require_role("validator")
    assert require_role("admin").__name__ == "require_admin"
    with pytest.raises(ValueError, match="unknown role"):
        require_role("superuser")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["ana", "Ana.Smith", "a", "ops@example.org", "x-1_2", "a" * 64])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", " ana", "ana smith", "-ana", ".ana", "a" * 65, "ana;drop", "ané"])
def test_bad_names(name: str) -> None:
    with pytest.raises(UserError, match="is not allowed"):
        check_name(name)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("", "empty"),
        ("Xy7!q", "too short"),
        ("x" * 1025, "too long"),
        ("         ", "only white space"),
        ("Ana.Smith", "may not be the user name"),
    ],
)
def test_password_rules_never_echo_the_password(password: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        check_password(password, name="ana.smith")
    if password.strip():
        assert password not in str(err.value)


def test_hashes_are_argon2id_salted_and_verify() -> None:
    first, second = hash_password("a long enough passphrase"), hash_password("a long enough passphrase")
    assert first.startswith("$argon2id$v=19$m=65536,t=3,p=4$") and first != second
    assert verify_password(first, "a long enough passphrase")
    assert not verify_password(first, "a long enough passphrase!")
    assert not verify_password("not a hash", "anything")
    assert not needs_rehash(first) and needs_rehash("$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo")
    assert verify_nothing("anything") is False


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_read_new_password_from_a_pipe_or_a_terminal() -> None:
    assert read_new_password("ana", stdin=io.StringIO("a long passphrase\nsecond line\n")) == "a long passphrase"
    assert read_new_password("ana", stdin=io.StringIO("  spaces count  \r\n")) == "  spaces count  "
    with pytest.raises(UserError, match="empty"):
        read_new_password("ana", stdin=io.StringIO(""))

    prompts: list[str] = []

    def typed(*answers: str) -> Any:
        it = iter(answers)

        def prompt(text: str) -> str:
            prompts.append(text)
            return next(it)

        return prompt

    assert read_new_password("ana", stdin=Tty(), prompt=typed("a long passphrase", "a long passphrase")) == (
        "a long passphrase"
    )
    assert prompts == ["Password for ana: ", "Repeat the password for ana: "]
    with pytest.raises(UserError, match="differ") as err:
        read_new_password("ana", stdin=Tty(), prompt=typed("a long passphrase", "a long passphrasf"))
    assert "passphras" not in str(err.value)
    prompts.clear()
    with pytest.raises(UserError, match="too short"):
        read_new_password("ana", stdin=Tty(), prompt=typed("short"))
    assert len(prompts) == 1  # refused before the second prompt


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LCMS_AUTH_SESSION_IDLE_TIMEOUT_S", "900")
    monkeypatch.setenv("LCMS_AUTH_SECURE_COOKIE", "true")
    settings = AuthSettings()
    assert settings.session_idle_timeout_s == 900 and settings.secure_cookie is True
    assert settings.session_max_age_s == 8 * 3600 and settings.touch_interval_s == 60
    assert AuthSettings(session_idle_timeout_s=5).touch_interval_s == 0.5
    with pytest.raises(ValueError, match="greater than 0"):
        AuthSettings(session_max_age_s=0)


@pytest.mark.parametrize(
    ("scope", "path"),
    [
        ({}, "/"),
        ({"root_path": ""}, "/"),
        ({"root_path": "/lcms"}, "/lcms"),
        ({"root_path": "/lcms/", "app_root_path": "/lcms/"}, "/lcms"),
    ],
)
def test_cookie_path_is_the_mount_point(scope: dict[str, Any], path: str) -> None:
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": [], **scope})
    assert cookie_path(request) == path


def test_an_app_whose_database_is_down_starts_and_answers_503_without_secrets() -> None:
    app = create_app(ServiceSettings(database_url=DOWN, require_database=False, retry_interval_s=0, freeze_gc=False))
    configure_auth(app, AuthSettings())
    with TestClient(app) as client:
        anonymous = client.get("/api/auth/me")
        assert anonymous.status_code == 401  # no cookie: no need to ask the database
        r = client.post("/api/auth/login", json={"name": "ana", "password": "a long passphrase"})
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        client.cookies.set(SESSION_COOKIE, "some-token")
        me = client.get("/api/auth/me")
        assert me.status_code == 503
        for answer in (r, me):
            assert "s3cret" not in answer.text and "a long passphrase" not in answer.text
            assert "some-token" not in answer.text


def test_openapi_documents_the_auth_endpoints_and_schemes() -> None:
    doc = create_app(ServiceSettings(database_url=DOWN)).openapi()
    assert {"/api/auth/login", "/api/auth/logout", "/api/auth/me"} <= set(doc["paths"])
    login = doc["paths"]["/api/auth/login"]["post"]
    schema = login["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["name", "password"] and schema["properties"]["password"]["format"] == "password"
    assert {"200", "401", "415", "422", "429"} <= set(login["responses"])
    assert {"401", "403"} <= set(doc["paths"]["/api/auth/logout"]["post"]["responses"])
    schemes = doc["components"]["securitySchemes"]
    assert schemes["session"] == {
        "type": "apiKey",
        "in": "cookie",
        "name": "lcms_session",
        "description": "The session cookie set by `POST /api/auth/login`.",
    }
    assert schemes["csrf"]["in"] == "header" and schemes["csrf"]["name"] == "X-CSRF-Token"
