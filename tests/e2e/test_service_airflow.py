"""One deployment serves both: Airflow's API server answers the LCMS OGC API at /lcms/ogc/.

A real Airflow (API server, scheduler, DAG processor: :class:`LocalAirflow`) loads the plugins folder,
whose plugin mounts the LCMS service; the change store is the store's test database with synthetic changes,
given to Airflow's components as ``LCMS_DATABASE_URL``. GDAL's OGC API Features driver then reads the
changes through Airflow's port, as QGIS would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fiona
import httpx
import pytest
import shapely

from lcms_airflow.local_stack import LocalAirflow, running_airflow
from lcms_service.testing import copy_changes, synthetic_changes
from tests.store_fixtures import fresh_database

BOUNDS = (47.0, 40.0, 47.2, 40.2)
#: (database URL, change ids, their geometries)
Store = tuple[str, list[str], list[Any]]


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    """A fresh migrated change store database (tests/store_fixtures.py) with synthetic changes."""
    with fresh_database("lcms_service_e2e", migrate=True) as url:
        changes = synthetic_changes(120, BOUNDS, seed=3, project="e2e")
        copy_changes(url, changes)
        yield url, changes.ids, list(changes.geoms)


@pytest.fixture(scope="module")
def airflow(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAirflow]:
    url = store[0]
    root = tmp_path_factory.mktemp("service-airflow")
    (root / "dags").mkdir()
    env = {"LCMS_DATABASE_URL": url, "LCMS_STATE_DIR": str(root / "state")}
    with running_airflow(root / "home", dags_folder=root / "dags", extra_env=env) as stack:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the port answers before every API worker has started
            try:
                if httpx.get(f"{stack.url}/lcms/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield stack


def test_api_server_answers_the_ogc_api_under_lcms(airflow: LocalAirflow, store: Store) -> None:
    landing = httpx.get(f"{airflow.url}/lcms/ogc/", timeout=30)
    assert landing.status_code == 200
    links = {link["rel"]: link["href"] for link in landing.json()["links"]}
    assert links["self"] == f"{airflow.url}/lcms/ogc/"
    assert links["service-desc"] == f"{airflow.url}/lcms/openapi.json"
    assert httpx.get(f"{airflow.url}/lcms/ogc/conformance", timeout=30).status_code == 200
    items = httpx.get(f"{airflow.url}/lcms/ogc/collections/lcms.changes/items", params={"limit": 500}, timeout=30)
    assert items.status_code == 200
    assert {f["id"] for f in items.json()["features"]} == set(store[1])
    # Airflow's own API is still Airflow's.
    assert httpx.get(f"{airflow.url}/api/v2/monitor/health", timeout=30).status_code == 200


def test_gdal_reads_the_changes_through_airflows_port(
    airflow: LocalAirflow, store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(fiona.supported_drivers, "OAPIF", "r")
    source = f"OAPIF:{airflow.url}/lcms/ogc"
    assert fiona.listlayers(source) == ["lcms.changes"]
    bbox = (47.05, 40.05, 47.15, 40.15)
    box = shapely.box(*bbox)
    expected = {cid for cid, geom in zip(store[1], store[2], strict=True) if geom.intersects(box)}
    with fiona.open(source, layer="lcms.changes") as src:
        got = {f["properties"]["id"] for f in src.filter(bbox=bbox)}
    assert got == expected and expected
