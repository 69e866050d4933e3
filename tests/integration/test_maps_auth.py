"""The map endpoints need a logged-in user (viewer or more): 401 without a session, 200 with one.

Real sessions on the change store (PostgreSQL, skipped when it is unreachable), real HTTP through
Starlette's TestClient, on a small published project.
"""

# ruff: noqa: F811 - the imported fixtures are the tests' parameters
from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from lcms_service.maps_testing import SyntheticProject, make_project, utm_block
from lcms_service.settings import ServiceSettings
from tests.auth_helpers import auth_config, client_as, service_app, service_client  # noqa: F401
from tests.store_fixtures import store_db, store_url  # noqa: F401
from tests.unit.test_maps_api import tile_across


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> SyntheticProject:
    return make_project(
        tmp_path_factory.mktemp("maps-auth"),
        aoi=utm_block(32638, 498, 3440, 2, 1, 1280.0),
        aoi_crs=32638,
        seasons=("2024",),
    )


@pytest.fixture
def service_settings(store_url: str, project: SyntheticProject) -> ServiceSettings:
    """The service on the test's store database and the published project."""
    return ServiceSettings(
        config=project.config_path,
        database_url=SecretStr(store_url),
        embedded_database=False,
        require_database=True,
        freeze_gc=False,
        retry_interval_s=0,
    )


def _paths(project: SyntheticProject) -> list[str]:
    t = tile_across(project.tiles, 16)
    return [
        "/api/projects",
        f"/api/maps/2024/CLASS/tiles/{t.z}/{t.x}/{t.y}.png",
        "/api/imagery/2024/dates",
        f"/api/imagery/2024/tiles/{t.z}/{t.x}/{t.y}.png?render=false_color",
        "/api/pixel?lon=46.61&lat=39.772",
    ]


def test_every_endpoint_refuses_an_anonymous_client(service_client: TestClient, project: SyntheticProject) -> None:
    for path in [*_paths(project), "/api/maps/2030/CLASS/tiles/1/1/1.png"]:  # 401 before any 404
        response = service_client.get(path)
        assert response.status_code == 401, path
        assert "log in" in response.json()["detail"]


@pytest.mark.parametrize("role", ["viewer", "validator", "admin"])
def test_every_role_reads_the_maps(client_as: Callable[..., TestClient], project: SyntheticProject, role: str) -> None:
    client = client_as(role)
    for path in _paths(project):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
    tile = client.get(_paths(project)[1])
    assert tile.headers["content-type"] == "image/png" and tile.headers["cache-control"] == "private, max-age=60"
    assert client.get("/api/projects").headers["cache-control"] == "private, no-cache"
