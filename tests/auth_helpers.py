"""Users and logged-in clients for the service's tests (real database, real HTTP through Starlette's TestClient).

Import the helpers and the fixtures you use (pytest finds fixtures by name in the test module)::

    # ruff: noqa: F811 - (at the top of the module) the imported fixtures are the tests' parameters
    from tests.auth_helpers import admin_client, service_client, validator_client, viewer_client  # noqa: F401
    from tests.store_fixtures import store_db, store_url  # noqa: F401  (the database they run on)

    def test_decide(validator_client: TestClient) -> None:
        r = validator_client.post("/api/changes/.../decisions", json={...})  # cookie and X-CSRF-Token sent

Functions:

* :func:`make_user` ``(url, name, role, password=PASSWORD)``: a user in the store at ``url`` (as
  ``lcms users add`` makes it); :func:`clean_users` empties ``lcms.users`` and ``lcms.sessions``.
* :func:`login` ``(client, name, password=PASSWORD)``: logs ``client`` in (its cookie jar keeps the
  session) and sets the ``X-CSRF-Token`` header on it; returns the login answer.
* :func:`sibling` ``(client)``: another client on the same running app with its own cookies and
  headers (a second browser), sharing the app's event loop, hence its database pools.

Fixtures (override ``service_settings`` or ``auth_config`` in your module for your own settings):

* ``service_settings``: :class:`ServiceSettings` on ``store_url`` (no embedded cluster, no gc freeze).
* ``auth_config``: :class:`AuthSettings` the app is given (the defaults).
* ``service_app``: ``create_app(service_settings)`` with ``auth_config``, on a store emptied of users.
* ``service_client``: an anonymous TestClient on it, lifespan run (pools open) for the test.
* ``client_as``: ``client_as("validator")`` → a new user of that role (unique name) and a sibling
  client logged in as them; ``client_as("admin", name="boss")`` names the user.
* ``viewer_client``, ``validator_client``, ``admin_client``: one of each, logged in.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from lcms_service.app import create_app
from lcms_service.auth import CSRF_HEADER, AuthSettings, configure_auth
from lcms_service.settings import ServiceSettings
from lcms_tasks.users import Role, UserRecord, add_user

#: The password :func:`make_user` gives when none is named.
PASSWORD = "correct horse battery staple"


def make_user(url: str, name: str, role: Role | str, password: str = PASSWORD) -> UserRecord:
    """Add user ``name`` with ``role`` and ``password`` to the change store at ``url``."""
    return add_user(url, name, role, password)


def clean_users(url: str) -> None:
    """Delete every user and session of the store at ``url``."""
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("TRUNCATE lcms.sessions, lcms.users")
    finally:
        conn.close()


def login(client: TestClient, name: str, password: str = PASSWORD) -> dict[str, Any]:
    """Log ``client`` in as ``name`` and send the session's CSRF token on its later requests; the login answer."""
    response = client.post("/api/auth/login", json={"name": name, "password": password})
    assert response.status_code == 200, f"login of {name!r} failed: {response.status_code} {response.text}"
    body: dict[str, Any] = response.json()
    client.headers[CSRF_HEADER] = body["csrf_token"]
    return body


def sibling(client: TestClient) -> TestClient:
    """A client of ``client``'s app with its own cookies and headers, on ``client``'s event loop (entered first)."""
    if client.portal is None:
        raise RuntimeError("enter the client first (`with TestClient(app) as client`): its lifespan opens the pools")
    other = TestClient(client.app, base_url=str(client.base_url))
    other.portal = client.portal  # the app's pools belong to this loop; a new portal would be a new loop
    return other


@pytest.fixture
def service_settings(store_url: str) -> ServiceSettings:
    """The service on the test's store database."""
    return ServiceSettings(
        database_url=SecretStr(store_url),
        embedded_database=False,
        require_database=True,
        freeze_gc=False,
        retry_interval_s=0,
    )


@pytest.fixture
def auth_config() -> AuthSettings:
    """Sessions and login limits of the test app (the defaults)."""
    return AuthSettings()


@pytest.fixture
def service_app(service_settings: ServiceSettings, auth_config: AuthSettings, store_url: str) -> FastAPI:
    """The app (not started), on a store without users or sessions."""
    clean_users(store_url)
    app = create_app(service_settings)
    configure_auth(app, auth_config)
    return app


@pytest.fixture
def service_client(service_app: FastAPI) -> Iterator[TestClient]:
    """An anonymous client on the running app."""
    with TestClient(service_app) as client:
        yield client


@pytest.fixture
def client_as(service_client: TestClient, store_url: str) -> Callable[..., TestClient]:
    """``client_as(role, name=None, password=PASSWORD)``: a new user and a client logged in as them."""

    def make(role: Role, name: str | None = None, password: str = PASSWORD) -> TestClient:
        name = name or f"{role}_{secrets.token_hex(3)}"
        make_user(store_url, name, role, password)
        client = sibling(service_client)
        login(client, name, password)
        return client

    return make


@pytest.fixture
def viewer_client(client_as: Callable[..., TestClient]) -> TestClient:
    return client_as("viewer")


@pytest.fixture
def validator_client(client_as: Callable[..., TestClient]) -> TestClient:
    return client_as("validator")


@pytest.fixture
def admin_client(client_as: Callable[..., TestClient]) -> TestClient:
    return client_as("admin")
