"""schemathesis against the ``/api/auth`` operations of the service under uvicorn (real HTTP, a child process):
no 5xx and every answer as the OpenAPI document says, logged out and logged in."""

# ruff: noqa: F811 - the fixtures imported from tests.store_fixtures are test parameters

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from lcms_service.testing import ServiceProcess
from tests.auth_helpers import PASSWORD, clean_users, make_user
from tests.store_fixtures import store_db, store_url  # noqa: F401  (pytest fixtures)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def service(store_url: str) -> Iterator[ServiceProcess]:
    clean_users(store_url)
    make_user(store_url, "ana", "admin")
    with ServiceProcess(store_url) as proc:
        yield proc


def test_login_over_real_http(service: ServiceProcess) -> None:
    with httpx.Client(base_url=service.url) as client:
        r = client.post("/api/auth/login", json={"name": "ana", "password": PASSWORD})
        assert r.status_code == 200 and "HttpOnly" in r.headers["set-cookie"]
        assert client.get("/api/auth/me").json()["name"] == "ana"
        # a name no user can have (a NUL byte) is a plain 401, not a database error
        r = client.post("/api/auth/login", json={"name": "an\u0000a", "password": PASSWORD})
        assert r.status_code == 401


@pytest.mark.parametrize("logged_in", [False, True], ids=["anonymous", "logged-in"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_auth_operations_match_their_schema(service: ServiceProcess, mode: GenerationMode, logged_in: bool) -> None:
    headers: dict[str, Any] = {}
    if logged_in:
        r = httpx.post(f"{service.url}/api/auth/login", json={"name": "ana", "password": PASSWORD})
        headers = {"Cookie": f"lcms_session={r.cookies['lcms_session']}", "X-CSRF-Token": r.json()["csrf_token"]}
    api = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    operations = [op for op in (result.ok() for result in api.get_all_operations()) if op.path.startswith("/api/auth")]
    assert sorted(op.path for op in operations) == ["/api/auth/login", "/api/auth/logout", "/api/auth/me"]
    for operation in sorted(operations, key=lambda op: op.path == "/api/auth/logout"):  # logout last

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case: Any) -> None:
            case.call_and_validate(base_url=service.url, checks=CHECKS, headers=headers)

        try:
            check()
        except Unsatisfiable:  # negative mode, and an operation without inputs to make invalid
            assert mode is GenerationMode.NEGATIVE, operation.path
    assert "Traceback" not in service.log_tail(20_000)
