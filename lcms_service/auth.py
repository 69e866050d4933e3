"""Who is asking: login sessions, CSRF protection and role checks, as FastAPI dependencies for every router.

Users (``lcms users add NAME --role ROLE``, :mod:`lcms_tasks.users`) have one of three ordered roles,
each including the ones below it: ``viewer`` (reads) < ``validator`` (decides changes) < ``admin``
(users, settings). ``POST /api/auth/login`` (:mod:`lcms_service.routers.auth`) checks the password
against its argon2 hash and opens a session: a random token in the cookie ``lcms_session``
(HttpOnly, SameSite=Lax, Path = where the app is mounted, Secure on https), of which the database
keeps only the SHA-256 (``lcms.sessions``), and a CSRF token the client reads from the login (or
``GET /api/auth/me``) answer and sends back in the header ``X-CSRF-Token`` on every state-changing
request. A session ends at logout, ``session_max_age_s`` after login, or ``session_idle_timeout_s``
after its last request; disabling a user ends their sessions.

Use in a router (``Annotated`` keeps ruff's B008 quiet and the signature readable)::

    from typing import Annotated
    from fastapi import APIRouter, Depends
    from lcms_service.auth import AUTH_RESPONSES, User, csrf_protect, current_user, require_role

    router = APIRouter(prefix="/api", responses=AUTH_RESPONSES)  # documents the 401 and 403

    @router.get("/changes")                                       # any logged-in user (viewer or more)
    async def changes(user: Annotated[User, Depends(current_user)]) -> ChangePage: ...

    @router.post("/changes/{id}/decisions", dependencies=[Depends(csrf_protect)])  # documents the header
    async def decide(id: UUID, body: Decision, user: Annotated[User, Depends(require_role("validator"))]) -> Change:
        ...  # user.name is the author to record

* :func:`current_user` → :class:`User` (``name``, ``role``): 401 without a valid session. On a
  state-changing method (POST, PUT, PATCH, DELETE) it also checks the CSRF header (403
  ``{"detail": "CSRF token missing or wrong"}``), so no write endpoint that knows its user can forget it.
* :func:`require_role` ``("viewer" | "validator" | "admin")`` → the :class:`User`, or 403 when the
  user's role is lower (after the 401 and CSRF checks of :func:`current_user`).
* :func:`csrf_protect`: the same CSRF check on its own, for a router's ``dependencies=[...]``; it also
  puts the header into the OpenAPI document as a security scheme.
* :data:`AUTH_RESPONSES`: the 401/403 answers for ``responses=`` (the OpenAPI document stays true).

An authenticated answer gets ``Cache-Control: private, no-cache`` (unless the endpoint sets its own,
or returns a ``Response`` itself: then set it there), so no shared cache keeps one user's data.

Login itself needs no CSRF token: it needs a JSON body (a cross-site form cannot send one, and a
cross-site ``fetch`` with JSON needs a CORS preflight the service does not grant), and the cookie is
SameSite=Lax. Failed logins are limited per user name and client address and per address
(:class:`LoginLimiter`, in the process's memory: each API server process counts its own); an unknown
user and a wrong password get the same 401 after the same argon2 work. Nothing here logs or answers
a password, a token or a hash.

Settings (:class:`AuthSettings`) come from the environment (``LCMS_AUTH_*``) unless a caller gives
its own with :func:`configure_auth` (tests do, before the app starts).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Request, Response, Security
from fastapi.security import APIKeyCookie, APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lcms_service.routers.ogc import ErrorDetail  # one error schema in the OpenAPI document
from lcms_service.rw import rw_pool
from lcms_tasks.users import ROLES, Role, check_role, role_rank

log = logging.getLogger(__name__)

SESSION_COOKIE = "lcms_session"
CSRF_HEADER = "X-CSRF-Token"
#: Methods that change nothing: no CSRF token needed.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CSRF_DETAIL = "CSRF token missing or wrong"
NOT_LOGGED_IN = "not logged in, or the session has ended: log in (POST /api/auth/login)"
AUTHENTICATED_CACHE_CONTROL = "private, no-cache"

__all__ = [
    "AUTH_RESPONSES",
    "CSRF_HEADER",
    "ROLES",
    "SESSION_COOKIE",
    "AuthSettings",
    "CurrentUser",
    "ErrorDetail",
    "LoginLimiter",
    "Role",
    "Session",
    "User",
    "auth_settings",
    "configure_auth",
    "csrf_protect",
    "current_session",
    "current_user",
    "require_role",
]


class AuthSettings(BaseSettings):
    """Sessions and login limits of the operator application (environment: ``LCMS_AUTH_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix="LCMS_AUTH_", extra="ignore", frozen=True)

    session_max_age_s: float = Field(
        8 * 3600.0, gt=0, description="A session ends this many seconds after login, however active (a working day)."
    )
    session_idle_timeout_s: float = Field(
        3600.0, gt=0, description="A session ends after this many seconds without a request."
    )
    secure_cookie: bool | None = Field(
        None,
        description="Mark the session cookie Secure (sent over https only). None: when the login request came over "
        "https (behind a TLS proxy, let uvicorn trust its X-Forwarded-Proto, or set True).",
    )
    login_max_failures: int = Field(
        5, ge=1, description="Failed logins allowed per user name and client address within the window."
    )
    login_max_failures_per_ip: int = Field(
        50, ge=1, description="Failed logins allowed per client address (any user names) within the window."
    )
    login_failure_window_s: float = Field(
        300.0, gt=0, description="Seconds a failed login counts against the limits; after it, logins are allowed again."
    )
    hash_threads: int = Field(
        4, ge=1, description="Password checks run at once (argon2 takes 64 MiB and ~50 ms of CPU each)."
    )

    @property
    def touch_interval_s(self) -> float:
        """How stale ``last_seen`` may get before a request records it (bounds the writes, not the timeout)."""
        return min(60.0, self.session_idle_timeout_s / 10)


def configure_auth(app: FastAPI, settings: AuthSettings) -> None:
    """Use ``settings`` for ``app``'s sessions and login limits (call before the app serves requests)."""
    app.state.auth_settings = settings
    app.state.login_limiter = None
    app.state.hash_limiter = None


def auth_settings(app: Any) -> AuthSettings:
    """``app``'s :class:`AuthSettings`: those given to :func:`configure_auth`, else read from the environment once."""
    settings: AuthSettings | None = getattr(app.state, "auth_settings", None)
    if settings is None:
        settings = app.state.auth_settings = AuthSettings()
    return settings


# -------------------------------------------------------------------------------------- models
class User(BaseModel):
    """The user a request comes from."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="The user's name (who decided, in the audit trail).")
    role: Role = Field(description="viewer < validator < admin.")

    def has_role(self, role: Role) -> bool:
        """Whether this user may do what ``role`` may."""
        return role_rank(self.role) >= role_rank(role)


@dataclass(frozen=True)
class Session:
    """A request's valid session: its user, its CSRF token and the hash of its cookie's token."""

    user: User
    csrf_token: str
    token_hash: bytes


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "Not logged in, or the session has ended."},
    403: {
        "model": ErrorDetail,
        "description": f"A state-changing request without the session's `{CSRF_HEADER}` header "
        f"(`{CSRF_DETAIL}`), or a role too low for the endpoint.",
    },
}


# ---------------------------------------------------------------------------------- the limiter
class LoginLimiter:
    """Failed logins per (user name, client address) and per client address within a sliding window.

    Bounded: at most ``max_keys`` keys are remembered (the oldest are forgotten first).
    """

    def __init__(
        self,
        *,
        max_failures: int,
        max_failures_per_ip: int,
        window_s: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.max_failures_per_ip = max_failures_per_ip
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    @staticmethod
    def _keys(name: str, ip: str) -> tuple[str, str]:
        return f"user\0{name.casefold()}\0{ip}", f"ip\0{ip}"

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, name: str, ip: str) -> float:
        """0 if a login of ``name`` from ``ip`` may be tried now, else the seconds until it may."""
        now = self.clock()
        wait = 0.0
        for key, limit in zip(self._keys(name, ip), (self.max_failures, self.max_failures_per_ip), strict=True):
            times = self._recent(key, now)
            if len(times) >= limit:
                wait = max(wait, self.window_s - (now - times[-limit]))
        return wait

    def failed(self, name: str, ip: str) -> None:
        """Count a failed login of ``name`` from ``ip``."""
        now = self.clock()
        for key in self._keys(name, ip):
            times = self._recent(key, now)
            times.append(now)
            self._failures[key] = times
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, name: str, ip: str) -> None:
        """Forget the failures of ``name`` from ``ip`` (those of the address stay)."""
        self._failures.pop(self._keys(name, ip)[0], None)


def login_limiter(app: Any) -> LoginLimiter:
    """``app``'s limiter of failed logins (made on first use from its :class:`AuthSettings`)."""
    limiter: LoginLimiter | None = getattr(app.state, "login_limiter", None)
    if limiter is None:
        s = auth_settings(app)
        limiter = app.state.login_limiter = LoginLimiter(
            max_failures=s.login_max_failures,
            max_failures_per_ip=s.login_max_failures_per_ip,
            window_s=s.login_failure_window_s,
        )
    return limiter


def hash_limiter(app: Any) -> anyio.CapacityLimiter:
    """How many argon2 checks ``app`` runs at once in worker threads (bounds memory under a login flood)."""
    limiter: anyio.CapacityLimiter | None = getattr(app.state, "hash_limiter", None)
    if limiter is None:
        limiter = app.state.hash_limiter = anyio.CapacityLimiter(auth_settings(app).hash_threads)
    return limiter


# ----------------------------------------------------------------------------------- sessions
def new_token() -> str:
    """A session token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    """What the database keeps of a session token: its SHA-256 (the token has 256 bits: no salt needed)."""
    return hashlib.sha256(token.encode()).digest()


def cookie_path(request: Request) -> str:
    """Where the app is mounted (``/`` under ``lcms serve``, ``/lcms`` in Airflow): the session cookie's Path."""
    root = request.scope.get("app_root_path") or request.scope.get("root_path") or ""
    return root.rstrip("/") or "/"


def cookie_secure(request: Request) -> bool:
    setting = auth_settings(request.app).secure_cookie
    return request.url.scheme == "https" if setting is None else setting


_SESSION_SQL = """
WITH s AS (
    SELECT s.csrf_token, u.name, u.role, s.last_seen < now() - make_interval(secs => $3) AS stale
    FROM lcms.sessions s JOIN lcms.users u ON u.id = s.user_id
    WHERE s.token_hash = $1 AND s.expires_at > now() AND s.last_seen > now() - make_interval(secs => $2)
      AND NOT u.disabled
), touched AS (
    UPDATE lcms.sessions SET last_seen = now() WHERE token_hash = $1 AND (SELECT stale FROM s)
)
SELECT csrf_token, name, role FROM s
"""


async def lookup_session(conn: asyncpg.Connection, token: str, settings: AuthSettings) -> Session | None:
    """The valid session of ``token`` (recording the request when ``last_seen`` is stale), or None."""
    digest = token_hash(token)
    row = await conn.fetchrow(_SESSION_SQL, digest, settings.session_idle_timeout_s, settings.touch_interval_s)
    if row is None:
        return None
    return Session(User(name=row["name"], role=check_role(row["role"])), row["csrf_token"], digest)


def _csrf_ok(request: Request, session: Session) -> bool:
    sent = request.headers.get(CSRF_HEADER)
    return sent is not None and hmac.compare_digest(sent.encode(), session.csrf_token.encode())


_session_cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    scheme_name="session",
    description="The session cookie set by `POST /api/auth/login`.",
    auto_error=False,
)
_csrf_header = APIKeyHeader(
    name=CSRF_HEADER,
    scheme_name="csrf",
    description="The session's CSRF token (`csrf_token` of the login or `/api/auth/me` answer), on every "
    "state-changing request.",
    auto_error=False,
)


async def current_session(
    request: Request, response: Response, token: Annotated[str | None, Security(_session_cookie)]
) -> Session:
    """Dependency: the request's valid session (401 without; 403 on a write without the right CSRF header)."""
    if not token:
        raise HTTPException(401, NOT_LOGGED_IN)
    pool = await rw_pool(request)
    async with pool.acquire() as conn:
        session = await lookup_session(conn, token, auth_settings(request.app))
    if session is None:
        raise HTTPException(401, NOT_LOGGED_IN)
    if request.method not in SAFE_METHODS and not _csrf_ok(request, session):
        log.warning(
            "%s %s by %r refused: CSRF token missing or wrong", request.method, request.url.path, session.user.name
        )
        raise HTTPException(403, CSRF_DETAIL)
    response.headers.setdefault("Cache-Control", AUTHENTICATED_CACHE_CONTROL)
    return session


async def current_user(session: Annotated[Session, Depends(current_session)]) -> User:
    """Dependency: the :class:`User` of the request (401 without a session; 403 on a write without CSRF token)."""
    return session.user


#: ``user: CurrentUser`` in an endpoint's signature: the logged-in user.
CurrentUser = Annotated[User, Depends(current_user)]


async def csrf_protect(
    request: Request,
    session: Annotated[Session, Depends(current_session)],
    token: Annotated[str | None, Security(_csrf_header)],
) -> None:
    """Dependency: 403 unless a state-changing request carries the session's CSRF token in ``X-CSRF-Token``.

    :func:`current_user` checks this already; as a dependency it also documents the header in OpenAPI.
    """
    if request.method not in SAFE_METHODS and not _csrf_ok(request, session):
        raise HTTPException(403, CSRF_DETAIL)


_role_dependencies: dict[str, Callable[..., Awaitable[User]]] = {}


def require_role(role: Role) -> Callable[..., Awaitable[User]]:
    """Dependency factory: the :class:`User` if their role is ``role`` or higher, else 403 (401 without a session).

    ``Depends(require_role("validator"))``; the same role gives the same dependency (FastAPI runs it once
    per request). An unknown role fails at import time, not at the first request.
    """
    found = _role_dependencies.get(role)
    if found is not None:
        return found
    check_role(role)

    async def dependency(user: Annotated[User, Depends(current_user)]) -> User:
        if not user.has_role(role):
            raise HTTPException(403, f"this needs the role {role!r} or higher; {user.name!r} is a {user.role}")
        return user

    dependency.__name__ = dependency.__qualname__ = f"require_{role}"
    return _role_dependencies.setdefault(role, dependency)


def retry_after_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
