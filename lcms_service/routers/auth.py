"""``/api/auth``: log in (a session cookie and a CSRF token), log out, who am I.

* ``POST /api/auth/login`` ``{"name", "password"}`` → 200 ``{"name", "role", "csrf_token"}`` and the
  cookie ``lcms_session``; 401 for an unknown user, a wrong password or a disabled user alike (after
  the same argon2 work); 429 with ``Retry-After`` after too many failures for the name and address.
  A session cookie the request already carried is ended (no session fixation).
* ``POST /api/auth/logout`` → 204, the session deleted and the cookie cleared (needs the CSRF header).
* ``GET /api/auth/me`` → ``{"name", "role", "csrf_token"}`` or 401.

Every answer here is ``Cache-Control: no-store``. How sessions, CSRF and roles work: :mod:`lcms_service.auth`.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from lcms_service.auth import (
    AUTH_RESPONSES,
    SESSION_COOKIE,
    ErrorDetail,
    Session,
    auth_settings,
    cookie_path,
    cookie_secure,
    csrf_protect,
    current_session,
    hash_limiter,
    login_limiter,
    new_token,
    retry_after_header,
    token_hash,
)
from lcms_service.rw import rw_pool
from lcms_tasks.users import (
    MAX_PASSWORD_LENGTH,
    NAME_PATTERN,
    Role,
    check_role,
    hash_password,
    needs_rehash,
    verify_nothing,
)
from lcms_tasks.users import verify_password as _verify_password

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/auth", tags=["Auth"])

BAD_CREDENTIALS = "wrong user name or password"
NO_STORE = "no-store"


class LoginRequest(BaseModel):
    """A login: the user's name (case-insensitive) and password."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="The user name.")
    # SecretStr: never shown by a repr or a log line
    password: SecretStr = Field(min_length=1, description="The password.")


async def _login_request(request: Request) -> LoginRequest:
    """The body as a :class:`LoginRequest`; 415 unless JSON, 422 naming the problem (never echoing the input).

    Parsed here rather than by FastAPI, whose 422 answer repeats the offending input: for a body without
    ``name`` that would be the whole body, password included. JSON only: a cross-site HTML form cannot
    send it, which is what keeps login safe without a CSRF token.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise HTTPException(415, "send the login as JSON (Content-Type: application/json)")
    try:
        return LoginRequest.model_validate_json(await request.body())
    except ValidationError as err:
        problems = [
            {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in err.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise HTTPException(422, problems) from None


class SessionInfo(BaseModel):
    """The logged-in user and the CSRF token to send as ``X-CSRF-Token`` on state-changing requests."""

    name: str
    role: Role
    csrf_token: str = Field(description="Send it in the X-CSRF-Token header of every POST, PUT, PATCH and DELETE.")


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _check(password_hash: str | None, password: str) -> tuple[bool, bool]:
    """(password right, hash to renew); the same work whether or not there is a hash."""
    if password_hash is None:
        return verify_nothing(password), False
    ok = _verify_password(password_hash, password)
    return ok, ok and needs_rehash(password_hash)


@router.post(
    "/login",
    response_model=SessionInfo,
    summary="Log in",
    operation_id="login",
    responses={
        401: {"model": ErrorDetail, "description": "Wrong user name or password (or the user is disabled)."},
        415: {"model": ErrorDetail, "description": "The body is not JSON."},
        422: {"description": "The body is not a login (`detail`: where and what, never the input)."},
        429: {"model": ErrorDetail, "description": "Too many failed logins for this name or address: wait."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": LoginRequest.model_json_schema()}},
        }
    },
)
async def login(request: Request, response: Response) -> SessionInfo:
    body = await _login_request(request)
    settings = auth_settings(request.app)
    limiter = login_limiter(request.app)
    address = _client_address(request)
    headers = {"Cache-Control": NO_STORE}
    wait = limiter.retry_after(body.name, address)
    if wait > 0:
        log.warning("login refused: too many failed logins from %s", address)
        raise HTTPException(
            429, "too many failed logins; try again later", headers={**headers, **retry_after_header(wait)}
        )
    password = body.password.get_secret_value()
    pool = await rw_pool(request)
    row = None
    if NAME_PATTERN.fullmatch(body.name):  # no user has another name (and PostgreSQL text takes no NUL)
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT id, name, role, disabled, password_hash FROM lcms.users WHERE lower(name) = lower($1)",
                body.name,
            )
    if len(password) > MAX_PASSWORD_LENGTH:  # never a valid one: no need to spend argon2 on it
        ok, rehash = False, False
    else:
        ok, rehash = await anyio.to_thread.run_sync(
            _check, row["password_hash"] if row is not None else None, password, limiter=hash_limiter(request.app)
        )
    if not ok or row is None or row["disabled"]:
        limiter.failed(body.name, address)
        if row is None:
            log.warning("failed login from %s: no such user", address)
        else:
            reason = "disabled user" if ok else "wrong password"
            log.warning("failed login of %r from %s: %s", row["name"], address, reason)
        raise HTTPException(401, BAD_CREDENTIALS, headers=headers)
    limiter.succeeded(body.name, address)

    token = new_token()
    csrf_token = new_token()
    previous = request.cookies.get(SESSION_COOKIE)
    async with pool.acquire() as conn, conn.transaction():
        if rehash:
            new_hash = await anyio.to_thread.run_sync(hash_password, password, limiter=hash_limiter(request.app))
            await conn.execute("UPDATE lcms.users SET password_hash = $1 WHERE id = $2", new_hash, row["id"])
        # housekeeping: sessions past their end, and the one this browser had (no session fixation)
        await conn.execute(
            "DELETE FROM lcms.sessions WHERE expires_at <= now() OR last_seen <= now() - make_interval(secs => $1) "
            "OR token_hash = $2",
            settings.session_idle_timeout_s,
            token_hash(previous) if previous else b"",
        )
        await conn.execute(
            "INSERT INTO lcms.sessions (token_hash, user_id, csrf_token, expires_at) "
            "VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
            token_hash(token),
            row["id"],
            csrf_token,
            settings.session_max_age_s,
        )
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=math.ceil(settings.session_max_age_s),
        path=cookie_path(request),
        secure=cookie_secure(request),
        httponly=True,
        samesite="lax",
    )
    response.headers["Cache-Control"] = NO_STORE
    log.info("%r logged in from %s (%s)", row["name"], address, row["role"])
    return SessionInfo(name=row["name"], role=check_role(row["role"]), csrf_token=csrf_token)


@router.post(
    "/logout",
    status_code=204,
    response_class=Response,
    summary="Log out",
    operation_id="logout",
    dependencies=[Depends(csrf_protect)],
    responses={**AUTH_RESPONSES, 204: {"description": "The session is ended and its cookie cleared."}},
)
async def logout(request: Request, session: Annotated[Session, Depends(current_session)]) -> Response:
    pool = await rw_pool(request)
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM lcms.sessions WHERE token_hash = $1", session.token_hash)
    response = Response(status_code=204, headers={"Cache-Control": NO_STORE})
    response.delete_cookie(
        SESSION_COOKIE, path=cookie_path(request), secure=cookie_secure(request), httponly=True, samesite="lax"
    )
    log.info("%r logged out", session.user.name)
    return response


@router.get(
    "/me",
    response_model=SessionInfo,
    summary="The logged-in user",
    operation_id="me",
    responses={401: AUTH_RESPONSES[401]},
)
async def me(response: Response, session: Annotated[Session, Depends(current_session)]) -> SessionInfo:
    response.headers["Cache-Control"] = NO_STORE
    return SessionInfo(name=session.user.name, role=session.user.role, csrf_token=session.csrf_token)
