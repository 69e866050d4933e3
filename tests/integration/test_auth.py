"""Login, sessions, CSRF and roles of the service, over HTTP (TestClient) against a fresh migrated database.

The role and CSRF checks run on sample endpoints this module adds to its own app (``/api/probe/...``):
the service ships none. Users are made as ``lcms users add`` makes them (:func:`tests.auth_helpers.make_user`).
"""

# ruff: noqa: F811 - the fixtures imported from tests.auth_helpers and tests.store_fixtures are test parameters

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import time
from collections.abc import AsyncIterator, Callable
from http.cookies import SimpleCookie
from typing import Annotated, Any

import asyncpg
import psycopg2
import pytest
from argon2 import PasswordHasher
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient

from lcms_service.app import create_app
from lcms_service.auth import (
    AUTH_RESPONSES,
    CSRF_HEADER,
    SESSION_COOKIE,
    AuthSettings,
    CurrentUser,
    User,
    configure_auth,
    csrf_protect,
    login_limiter,
    require_role,
    token_hash,
)
from lcms_service.rw import rw_connection
from lcms_service.settings import ServiceSettings
from tests.auth_helpers import (  # noqa: F401  (pytest fixtures)
    PASSWORD,
    admin_client,
    auth_config,
    clean_users,
    client_as,
    login,
    make_user,
    service_client,
    service_settings,
    sibling,
    validator_client,
    viewer_client,
)
from tests.store_fixtures import store_db, store_url  # noqa: F401  (pytest fixtures)

# --------------------------------------------------------------------------- sample endpoints (tests only)
probe = APIRouter(prefix="/api/probe", responses=AUTH_RESPONSES)


@probe.get("/read")
async def probe_read(user: CurrentUser) -> User:
    return user


@probe.post("/write")
async def probe_write(user: CurrentUser) -> User:
    return user


@probe.put("/write")
async def probe_put(user: CurrentUser) -> User:
    return user


@probe.patch("/write")
async def probe_patch(user: CurrentUser) -> User:
    return user


@probe.delete("/write")
async def probe_delete(user: CurrentUser) -> User:
    return user


@probe.post("/decide")
async def probe_decide(user: Annotated[User, Depends(require_role("validator"))]) -> User:
    return user


@probe.post("/admin", dependencies=[Depends(csrf_protect)])
async def probe_admin(user: Annotated[User, Depends(require_role("admin"))]) -> User:
    return user


@probe.get("/viewer")
async def probe_viewer(user: Annotated[User, Depends(require_role("viewer"))]) -> User:
    return user


@probe.post("/rw")
async def probe_rw(
    user: Annotated[User, Depends(require_role("validator"))], conn: Annotated[Any, Depends(rw_connection)]
) -> dict[str, str]:
    read_only = await conn.fetchval("SELECT current_setting('transaction_read_only')")
    async with conn.transaction():
        await conn.execute("CREATE TEMP TABLE probe_write (x int) ON COMMIT DROP")
        await conn.execute("INSERT INTO probe_write VALUES (1)")
    return {"user": user.name, "transaction_read_only": read_only}


@pytest.fixture
def service_app(service_settings: ServiceSettings, auth_config: AuthSettings, store_url: str) -> FastAPI:
    """The service with the sample endpoints."""
    clean_users(store_url)
    app = create_app(service_settings)
    configure_auth(app, auth_config)
    app.include_router(probe)
    return app


def rows(url: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def cookie_of(response: Any) -> Any:
    jar: SimpleCookie = SimpleCookie()
    jar.load(response.headers["set-cookie"])
    return jar[SESSION_COOKIE]


# -------------------------------------------------------------------------------------- login
def test_login_me_logout(service_client: TestClient, store_url: str) -> None:
    make_user(store_url, "Ana", "validator")
    r = service_client.post("/api/auth/login", json={"name": "ana", "password": PASSWORD})  # any case
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"name", "role", "csrf_token"}
    assert (body["name"], body["role"]) == ("Ana", "validator") and len(body["csrf_token"]) >= 40
    assert r.headers["cache-control"] == "no-store"
    token = service_client.cookies[SESSION_COOKIE]
    # only the token's SHA-256 is stored
    stored = rows(store_url, "SELECT token_hash, csrf_token FROM lcms.sessions")
    assert [(bytes(h), c) for h, c in stored] == [(token_hash(token), body["csrf_token"])]

    me = service_client.get("/api/auth/me")
    assert me.status_code == 200 and me.json() == body and me.headers["cache-control"] == "no-store"
    read = service_client.get("/api/probe/read")
    assert read.json() == {"name": "Ana", "role": "validator"}
    assert read.headers["cache-control"] == "private, no-cache"  # no shared cache keeps a user's answer

    # logout is a write: it needs the CSRF token
    assert service_client.post("/api/auth/logout").status_code == 403
    r = service_client.post("/api/auth/logout", headers={CSRF_HEADER: body["csrf_token"]})
    assert r.status_code == 204 and r.content == b""
    cleared = cookie_of(r)
    assert cleared.value == "" and cleared["max-age"] == "0" and cleared["path"] == "/"
    assert rows(store_url, "SELECT count(*) FROM lcms.sessions") == [(0,)]
    assert service_client.get("/api/auth/me").status_code == 401
    # the old cookie, replayed, is worth nothing
    replay = sibling(service_client)
    replay.cookies.set(SESSION_COOKIE, token)
    assert replay.get("/api/auth/me").status_code == 401
    assert replay.post("/api/auth/logout", headers={CSRF_HEADER: body["csrf_token"]}).status_code == 401


def test_anonymous_requests_get_401(service_client: TestClient) -> None:
    for method, path in (("GET", "/api/auth/me"), ("GET", "/api/probe/read"), ("POST", "/api/auth/logout")):
        r = service_client.request(method, path)
        assert r.status_code == 401, (method, path)
        assert r.json()["detail"].startswith("not logged in")
    service_client.cookies.set(SESSION_COOKIE, "not-a-token")
    assert service_client.get("/api/auth/me").status_code == 401


def test_cookie_flags(service_client: TestClient, store_url: str, auth_config: AuthSettings) -> None:
    make_user(store_url, "ana", "viewer")
    r = service_client.post("/api/auth/login", json={"name": "ana", "password": PASSWORD})
    header = r.headers["set-cookie"]
    cookie = cookie_of(r)
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/"
    assert cookie["max-age"] == str(math.ceil(auth_config.session_max_age_s))
    assert "secure" not in header.lower()  # plain http: a Secure cookie would never come back
    assert len(cookie.value) >= 40


def test_cookie_is_secure_on_https(service_client: TestClient, store_url: str) -> None:
    make_user(store_url, "ana", "viewer")
    https = TestClient(service_client.app, base_url="https://testserver")
    https.portal = service_client.portal
    r = https.post("/api/auth/login", json={"name": "ana", "password": PASSWORD})
    assert r.status_code == 200 and cookie_of(r)["secure"] is True
    assert https.get("/api/auth/me").status_code == 200  # sent back over https


def test_cookie_path_is_the_mount_point(service_app: FastAPI, store_url: str) -> None:
    """Mounted as Airflow mounts it (``/lcms``, its lifespan run by the parent's), the cookie stays under /lcms."""

    @contextlib.asynccontextmanager
    async def lifespan(parent: FastAPI) -> AsyncIterator[None]:
        async with service_app.router.lifespan_context(service_app):
            yield

    parent = FastAPI(lifespan=lifespan)
    parent.mount("/lcms", service_app)
    make_user(store_url, "ana", "viewer")
    with TestClient(parent) as client:
        r = client.post("/lcms/api/auth/login", json={"name": "ana", "password": PASSWORD})
        assert r.status_code == 200
        assert cookie_of(r)["path"] == "/lcms"
        assert client.get("/lcms/api/auth/me").json()["name"] == "ana"
        r = client.post("/lcms/api/auth/logout", headers={CSRF_HEADER: r.json()["csrf_token"]})
        assert r.status_code == 204 and cookie_of(r)["path"] == "/lcms"


def test_unknown_user_and_wrong_password_get_the_same_answer(
    service_client: TestClient,
    store_url: str,
) -> None:
    make_user(store_url, "ana", "viewer")
    answers = []
    times: dict[str, list[float]] = {"wrong": [], "unknown": []}
    for i in range(3):
        for kind, name in (("wrong", "ana"), ("unknown", f"nobody{i}")):
            t0 = time.perf_counter()
            r = service_client.post("/api/auth/login", json={"name": name, "password": "not the password"})
            times[kind].append(time.perf_counter() - t0)
            answers.append((r.status_code, r.text, r.headers.get("set-cookie"), r.headers.get("cache-control")))
    assert set(answers) == {(401, '{"detail":"wrong user name or password"}', None, "no-store")}
    # an unknown name costs the same argon2 work as a wrong password (no early answer to time)
    assert statistics.median(times["unknown"]) > 0.5 * statistics.median(times["wrong"])
    assert rows(store_url, "SELECT count(*) FROM lcms.sessions") == [(0,)]


def test_login_body_errors_name_the_problem_without_echoing_it(service_client: TestClient) -> None:
    secret = "s3cret-never-echoed"
    r = service_client.post("/api/auth/login", json={"password": secret})
    assert r.status_code == 422 and secret not in r.text
    assert r.json()["detail"][0]["loc"] == ["body", "name"]
    r = service_client.post("/api/auth/login", json={"name": "ana", "password": secret, "extra": secret})
    assert r.status_code == 422 and secret not in r.text
    r = service_client.post(
        "/api/auth/login", content=f"{{not json {secret}", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and secret not in r.text
    # an HTML form (or a text/plain fetch) cannot log anyone in: JSON only
    r = service_client.post("/api/auth/login", data={"name": "ana", "password": secret})
    assert r.status_code == 415 and secret not in r.text


def test_disabled_user_cannot_log_in_and_loses_their_sessions(
    service_client: TestClient,
    store_url: str,
) -> None:
    from lcms_tasks.users import disable_user, enable_user

    make_user(store_url, "ana", "validator")
    other = sibling(service_client)
    login(other, "ana")
    disable_user(store_url, "ana")
    assert other.get("/api/auth/me").status_code == 401
    r = service_client.post("/api/auth/login", json={"name": "ana", "password": PASSWORD})
    assert (r.status_code, r.json()) == (401, {"detail": "wrong user name or password"})
    enable_user(store_url, "ana")
    assert service_client.post("/api/auth/login", json={"name": "ana", "password": PASSWORD}).status_code == 200


def test_expired_and_idle_sessions_are_refused(service_client: TestClient, store_url: str) -> None:
    make_user(store_url, "ana", "viewer")
    login(service_client, "ana")
    assert service_client.get("/api/auth/me").status_code == 200
    rows(
        store_url,
        "UPDATE lcms.sessions SET created_at = now() - interval '9 hours', expires_at = now() - interval '1 s'",
    )
    assert service_client.get("/api/auth/me").status_code == 401

    login(service_client, "ana")
    assert rows(store_url, "SELECT count(*) FROM lcms.sessions") == [(1,)]  # the expired one was swept at login
    rows(store_url, "UPDATE lcms.sessions SET last_seen = now() - interval '2 hours'")  # default idle timeout: 1 h
    assert service_client.get("/api/auth/me").status_code == 401


def test_session_lifetimes_follow_the_settings(
    service_settings: ServiceSettings,
    store_url: str,
) -> None:
    clean_users(store_url)
    app = create_app(service_settings)
    # Margins of a second or more either side of each limit: a loaded CI machine answers a request in
    # a few hundred milliseconds, which must not decide the outcome.
    configure_auth(app, AuthSettings(session_max_age_s=6.5, session_idle_timeout_s=2.5))
    make_user(store_url, "ana", "viewer")
    with TestClient(app) as client:
        login(client, "ana")
        assert cookie_of(client.post("/api/auth/login", json={"name": "ana", "password": PASSWORD}))["max-age"] == "7"
        for _ in range(3):  # active: each request (the touch interval is a tenth of the idle timeout) keeps it
            time.sleep(1.0)
            assert client.get("/api/auth/me").status_code == 200
        time.sleep(4.0)  # idle too long
        assert client.get("/api/auth/me").status_code == 401

        login(client, "ana")
        started = time.monotonic()
        while time.monotonic() - started < 5.0:  # active all along, well within its maximum age
            time.sleep(1.0)
            assert client.get("/api/auth/me").status_code == 200
        while time.monotonic() - started < 8.0:  # active all along, but past its maximum age
            time.sleep(1.0)
            status = client.get("/api/auth/me").status_code
        assert status == 401


def test_a_new_login_ends_the_browsers_previous_session(service_client: TestClient, store_url: str) -> None:
    make_user(store_url, "ana", "viewer")
    login(service_client, "ana")
    first = service_client.cookies[SESSION_COOKIE]
    login(service_client, "ana")
    assert service_client.cookies[SESSION_COOKIE] != first
    hashes = [bytes(h) for (h,) in rows(store_url, "SELECT token_hash FROM lcms.sessions")]
    assert hashes == [token_hash(service_client.cookies[SESSION_COOKIE])]


def test_an_outdated_hash_is_renewed_at_login(service_client: TestClient, store_url: str) -> None:
    make_user(store_url, "ana", "viewer")
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    rows(store_url, "UPDATE lcms.users SET password_hash = %s", weak)
    login(service_client, "ana")
    [(renewed,)] = rows(store_url, "SELECT password_hash FROM lcms.users")
    assert renewed != weak and renewed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PasswordHasher().verify(renewed, PASSWORD)


# --------------------------------------------------------------------------------------- CSRF
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_csrf_on_every_state_changing_method(method: str, viewer_client: TestClient) -> None:
    csrf = viewer_client.headers.pop(CSRF_HEADER)
    missing = viewer_client.request(method, "/api/probe/write")
    assert (missing.status_code, missing.json()) == (403, {"detail": "CSRF token missing or wrong"})
    wrong = viewer_client.request(method, "/api/probe/write", headers={CSRF_HEADER: csrf[:-2] + "xx"})
    assert (wrong.status_code, wrong.json()) == (403, {"detail": "CSRF token missing or wrong"})
    empty = viewer_client.request(method, "/api/probe/write", headers={CSRF_HEADER: ""})
    assert empty.status_code == 403
    right = viewer_client.request(method, "/api/probe/write", headers={CSRF_HEADER: csrf})
    assert right.status_code == 200
    # reading needs no token
    assert viewer_client.get("/api/probe/read").status_code == 200


def test_csrf_token_of_another_session_is_refused(client_as: Callable[..., TestClient]) -> None:
    ana, bob = client_as("validator"), client_as("validator")
    r = ana.post("/api/probe/decide", headers={CSRF_HEADER: bob.headers[CSRF_HEADER]})
    assert r.status_code == 403
    assert ana.post("/api/probe/decide").status_code == 200


def test_csrf_is_checked_before_the_role(viewer_client: TestClient) -> None:
    viewer_client.headers.pop(CSRF_HEADER)
    assert viewer_client.post("/api/probe/admin").json() == {"detail": "CSRF token missing or wrong"}


# -------------------------------------------------------------------------------------- roles
@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (None, {"viewer": 401, "decide": 401, "admin": 401, "rw": 401}),
        ("viewer", {"viewer": 200, "decide": 403, "admin": 403, "rw": 403}),
        ("validator", {"viewer": 200, "decide": 200, "admin": 403, "rw": 200}),
        ("admin", {"viewer": 200, "decide": 200, "admin": 200, "rw": 200}),
    ],
)
def test_role_checks(
    role: str | None,
    expected: dict[str, int],
    client_as: Callable[..., TestClient],
    service_client: TestClient,
) -> None:
    client = client_as(role) if role else service_client
    got = {
        "viewer": client.get("/api/probe/viewer").status_code,
        "decide": client.post("/api/probe/decide").status_code,
        "admin": client.post("/api/probe/admin").status_code,
        "rw": client.post("/api/probe/rw").status_code,
    }
    assert got == expected
    if role == "viewer":
        detail = client.post("/api/probe/decide").json()["detail"]
        assert "'validator'" in detail and "viewer" in detail


def test_role_changes_apply_to_open_sessions(client_as: Callable[..., TestClient], store_url: str) -> None:
    from lcms_tasks.users import set_role

    client = client_as("viewer", name="ana")
    assert client.post("/api/probe/decide").status_code == 403
    set_role(store_url, "ana", "validator")
    assert client.post("/api/probe/decide").json() == {"name": "ana", "role": "validator"}


def test_helpers_give_one_logged_in_client_per_role(
    viewer_client: TestClient, validator_client: TestClient, admin_client: TestClient
) -> None:
    for client, role in ((viewer_client, "viewer"), (validator_client, "validator"), (admin_client, "admin")):
        me = client.get("/api/auth/me").json()
        assert me["role"] == role and client.headers[CSRF_HEADER] == me["csrf_token"]


# ------------------------------------------------------------------------------ the rw pool
def test_rw_connection_writes_and_the_tipg_pool_stays_read_only(
    validator_client: TestClient, service_client: TestClient
) -> None:
    r = validator_client.post("/api/probe/rw")
    assert r.status_code == 200 and r.json()["transaction_read_only"] == "off"
    app: Any = service_client.app

    async def read_only() -> str:
        async with app.state.pool.acquire() as conn:
            value: str = await conn.fetchval("SELECT current_setting('transaction_read_only')")
            return value

    assert service_client.portal is not None
    assert service_client.portal.call(read_only) == "on"
    assert isinstance(app.state.rw.pool, asyncpg.Pool)


# --------------------------------------------------------------------------------- rate limit
def test_failed_logins_are_limited_per_name_and_address(
    service_settings: ServiceSettings,
    store_url: str,
) -> None:
    clean_users(store_url)
    app = create_app(service_settings)
    configure_auth(app, AuthSettings(login_max_failures=3, login_max_failures_per_ip=5, login_failure_window_s=60.0))
    # the limiter's clock is the test's: the window passes when the test says so, however slow argon2 runs here
    now = [1000.0]
    login_limiter(app).clock = lambda: now[0]
    make_user(store_url, "ana", "viewer")
    make_user(store_url, "bob", "viewer")
    with TestClient(app) as client:

        def attempt(name: str, password: str = "wrong password") -> Any:
            return client.post("/api/auth/login", json={"name": name, "password": password})

        assert [attempt("ana").status_code for _ in range(3)] == [401, 401, 401]
        blocked = attempt("ana", PASSWORD)  # even the right password, until the window has passed
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) == 60
        assert "try again later" in blocked.json()["detail"]
        assert attempt("bob", PASSWORD).status_code == 200  # another name from the same address
        assert attempt("nobody").status_code == 401
        assert attempt("nobody2").status_code == 401  # the address's 5th failure
        assert attempt("bob", PASSWORD).status_code == 429  # per address now
        now[0] += 30.0
        assert attempt("ana", PASSWORD).status_code == 429  # still inside the window
        assert 29 <= int(attempt("ana", PASSWORD).headers["retry-after"]) <= 30
        now[0] += 30.5
        assert attempt("ana", PASSWORD).status_code == 200


# ------------------------------------------------------------------------------------ secrets
def test_no_secret_in_logs_or_answers(
    service_client: TestClient,
    store_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "Tr0ub4dor&3-unique-secret"
    make_user(store_url, "ana", "validator", password)
    [(password_hash,)] = rows(store_url, "SELECT password_hash FROM lcms.users")
    answers: list[str] = []

    def keep(r: Any) -> Any:
        answers.append(r.text + " " + " ".join(f"{k}: {v}" for k, v in r.headers.items() if k != "set-cookie"))
        return r

    keep(service_client.post("/api/auth/login", json={"name": "ana", "password": password + "x"}))
    keep(service_client.post("/api/auth/login", json={"name": "anna", "password": password}))
    keep(service_client.post("/api/auth/login", json={"password": password}))
    keep(service_client.post("/api/auth/login", json={"name": password, "password": password}))  # typed in the name
    ok = service_client.post("/api/auth/login", json={"name": "ana", "password": password})
    token = service_client.cookies[SESSION_COOKIE]
    csrf = ok.json()["csrf_token"]
    keep(service_client.post("/api/probe/write"))
    keep(service_client.post("/api/probe/write", headers={CSRF_HEADER: "forged"}))
    keep(service_client.get("/api/probe/read"))
    keep(service_client.post("/api/auth/logout", headers={CSRF_HEADER: csrf}))
    keep(service_client.get("/api/auth/me"))
    secrets_ = {"password": password, "token": token, "token hash": token_hash(token).hex(), "hash": password_hash}
    secrets_["hash digest"] = password_hash.rsplit("$", 1)[1]
    logged = caplog.text
    assert "failed login of 'ana'" in logged and "refused: CSRF token missing or wrong" in logged
    for what, value in {**secrets_, "csrf token": csrf}.items():
        assert value not in logged, f"the {what} is in the log"
        for answer in answers:
            assert value not in answer, f"the {what} is in an answer: {answer}"
