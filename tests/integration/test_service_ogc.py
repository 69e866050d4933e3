"""The OGC API of the change store, with real clients, against a fresh migrated database.

The change store's fixture (``store_db``: a fresh database on the server at ``LCMS_TEST_PG_URL``,
migrated with the store's migrations; skipped when there is none) is filled with synthetic changes of
two projects and season pairs; the service runs under uvicorn in a child process on a free port.
Clients: GDAL's OGC API Features driver through fiona (what QGIS uses), GDAL's MVT driver for the
vector tiles, httpx for the parameters, schemathesis for the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import fiona
import httpx
import morecantile
import psycopg2
import pytest
import schemathesis
import shapely
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

from lcms_service.database import create_pool
from lcms_service.settings import ServiceSettings
from lcms_service.testing import ServiceProcess, SyntheticChanges, copy_changes, synthetic_changes

BOUNDS = (47.0, 40.0, 47.2, 40.2)
COLLECTION = "lcms.changes"
ITEMS = f"/ogc/collections/{COLLECTION}/items"
PARCEL_CHECK = "6a0f3a52-9d51-4c1e-8f0b-2b7e4f1c9a11"


class Store:
    """The scratch database and what was put into it."""

    def __init__(self, url: str, batches: list[SyntheticChanges]) -> None:
        self.url = url
        self.batches = batches

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for b in self.batches:
            for i, change_id in enumerate(b.ids):
                out.append(
                    {
                        "id": change_id,
                        "geom": b.geoms[i],
                        "project": b.project,
                        "season_before": b.season_before,
                        "season_after": b.season_after,
                        "from_class": int(b.from_class[i]),
                        "to_class": int(b.to_class[i]),
                        "confidence": float(b.confidence[i]),
                        "area_m2": float(b.area_m2[i]),
                        "status": b.status[i],
                        "run_id": b.run_id,
                        "datetime": b.datetime,
                    }
                )
        return out

    def ids(self, keep: Any = lambda r: True) -> set[str]:
        return {r["id"] for r in self.rows() if keep(r)}


@pytest.fixture(scope="module")
def store(store_db: str) -> Store:
    """The change store's fresh migrated database of this module (tests/store_fixtures.py), with synthetic changes."""
    url = store_db
    batches = [
        synthetic_changes(300, BOUNDS, seed=1, project="alpha", run_id="run_a"),
        synthetic_changes(
            60,
            BOUNDS,
            seed=2,
            project="beta",
            season_before="2022",
            season_after="2023",
            season_start=dt.datetime(2023, 3, 1, tzinfo=dt.UTC),
            run_id="run_b",
        ),
    ]
    for batch in batches:
        copy_changes(url, batch)
    # An operator decision: the decisions table must never be reachable through the service.
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO lcms.decisions (change_id, decided_by, action) VALUES (%s, 'op', 'confirm')",
                (batches[0].ids[0],),
            )
            # A parcel check shares the table: never served as a change (only with kind=parcel_check).
            cur.execute(
                "INSERT INTO lcms.changes (id, kind, project, product, parcel_id, season_before, season_after,"
                " from_class, from_name, to_class, to_name, area_m2, confidence, geom, run_id, datetime)"
                " VALUES (%s, 'parcel_check', 'alpha', 'crop_type', 'P-1', '2024', '2024', 2, 'maize', 3, 'cotton',"
                " 5000, 0.9, ST_Multi(ST_GeomFromText('POLYGON((47.1 40.1, 47.101 40.1, 47.101 40.101, 47.1 40.1))',"
                " 4326)), 'run_a', %s)",
                (PARCEL_CHECK, dt.datetime(2024, 3, 1, tzinfo=dt.UTC)),  # inside the extent (the table's)
            )
    finally:
        conn.close()
    return Store(url, batches)


@pytest.fixture(scope="module")
def service(store: Store) -> Iterator[ServiceProcess]:
    with ServiceProcess(store.url, env={"LCMS_SERVICE_CATALOG_TTL_S": "0"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30) as c:
        yield c


@pytest.fixture
def gdal_oapif(monkeypatch: pytest.MonkeyPatch) -> None:
    # fiona only opens the drivers it lists; GDAL's OGC API Features driver is there, read-only.
    monkeypatch.setitem(fiona.supported_drivers, "OAPIF", "r")
    monkeypatch.setitem(fiona.supported_drivers, "MVT", "r")


# -- GDAL's OGC API Features driver (what QGIS uses) ----------------------------------------------------
@pytest.mark.usefixtures("gdal_oapif")
def test_gdal_lists_the_one_collection(service: ServiceProcess) -> None:
    assert fiona.listlayers(f"OAPIF:{service.url}/ogc") == [COLLECTION]


@pytest.mark.usefixtures("gdal_oapif")
def test_gdal_bbox_reads_exactly_the_changes_that_intersect_it(service: ServiceProcess, store: Store) -> None:
    bbox = (47.03, 40.05, 47.09, 40.11)
    box = shapely.box(*bbox)
    expected = store.ids(lambda r: r["geom"].intersects(box))
    assert 10 < len(expected) < len(store.ids())
    with fiona.open(f"OAPIF:{service.url}/ogc", layer=COLLECTION) as src:
        assert src.crs.to_epsg() == 4326
        assert src.schema["geometry"] == "MultiPolygon"
        assert {"status", "from_class", "to_class", "confidence", "area_m2", "project"} <= set(src.schema["properties"])
        got = {f["properties"]["id"]: f for f in src.filter(bbox=bbox)}
    assert set(got) == expected
    row = next(r for r in store.rows() if r["id"] in got)
    feature = got[row["id"]]
    assert feature["properties"]["status"] == row["status"]
    assert feature["properties"]["from_class"] == row["from_class"]
    assert shapely.geometry.shape(feature["geometry"]).equals_exact(row["geom"], 1e-9)


@pytest.mark.usefixtures("gdal_oapif")
def test_gdal_pages_through_every_change(service: ServiceProcess, store: Store) -> None:
    # A small page size makes GDAL follow the responses' "next" links.
    with fiona.open(f"OAPIF:{service.url}/ogc", layer=COLLECTION, PAGE_SIZE=70) as src:
        ids = [f["properties"]["id"] for f in src]
    assert len(ids) == len(set(ids)) == len(store.ids())
    assert set(ids) == store.ids()


# -- OGC API Features parameters ----------------------------------------------------------------------------
def _all_ids(client: httpx.Client, params: dict[str, Any]) -> set[str]:
    """Every feature id of a query, following the ``next`` links."""
    ids: list[str] = []
    resp = client.get(ITEMS, params={"limit": 100, **params})
    while True:
        assert resp.status_code == 200, resp.text
        body = resp.json()
        ids += [f["id"] for f in body["features"]]
        nxt = [link["href"] for link in body["links"] if link["rel"] == "next"]
        if not nxt:
            break
        resp = client.get(nxt[0])
    assert len(ids) == len(set(ids))
    assert body["numberMatched"] == len(ids)
    return set(ids)


def test_limit_and_next_links(client: httpx.Client, store: Store) -> None:
    first = client.get(ITEMS, params={"limit": 25})
    body = first.json()
    assert first.headers["content-type"] == "application/geo+json"
    assert body["numberReturned"] == 25 and body["numberMatched"] == len(store.ids())
    nxt = next(link["href"] for link in body["links"] if link["rel"] == "next")
    assert nxt.startswith(f"{client.base_url}{ITEMS}?") and "offset=25" in nxt
    assert _all_ids(client, {}) == store.ids()


@pytest.mark.parametrize(
    ("params", "keep"),
    [
        ({"status": "confirmed"}, lambda r: r["status"] == "confirmed"),
        ({"project": "beta"}, lambda r: r["project"] == "beta"),
        ({"season": "2024"}, lambda r: r["season_after"] == "2024"),
        ({"season_before": "2022"}, lambda r: r["season_before"] == "2022"),
        ({"run_id": "run_a"}, lambda r: r["run_id"] == "run_a"),
        ({"from_class": 2}, lambda r: r["from_class"] == 2),
        ({"from_class": 2, "to_class": 5}, lambda r: (r["from_class"], r["to_class"]) == (2, 5)),
        ({"transition": "3-1"}, lambda r: (r["from_class"], r["to_class"]) == (3, 1)),
        ({"min_confidence": 0.9}, lambda r: r["confidence"] >= 0.9),
        ({"min_area_m2": 20000}, lambda r: r["area_m2"] >= 20000),
        ({"status": "detected", "min_confidence": 0.8, "project": "alpha"}, None),
        ({"tiles": "synthetic_tile", "season_after": "2023"}, lambda r: r["season_after"] == "2023"),
    ],
)
def test_property_filters(client: httpx.Client, store: Store, params: dict[str, Any], keep: Any) -> None:
    if keep is None:

        def keep(r: dict[str, Any]) -> bool:
            return r["status"] == "detected" and r["confidence"] >= 0.8 and r["project"] == "alpha"

    expected = store.ids(keep)
    assert expected, "the synthetic data should cover every filter"
    assert _all_ids(client, params) == expected


def test_parcel_checks_only_when_asked_for(client: httpx.Client, store: Store) -> None:
    assert PARCEL_CHECK not in _all_ids(client, {"project": "alpha"})
    assert _all_ids(client, {"kind": "parcel_check"}) == {PARCEL_CHECK}
    assert client.get(f"{ITEMS}/{PARCEL_CHECK}").status_code == 404
    item = client.get(f"{ITEMS}/{PARCEL_CHECK}", params={"kind": "parcel_check"}).json()
    assert item["properties"]["parcel_id"] == "P-1" and item["properties"]["from_name"] == "maize"
    assert client.get(ITEMS, params={"kind": "lpis"}).status_code == 422


def test_datetime_is_the_after_seasons_start(client: httpx.Client, store: Store) -> None:
    assert _all_ids(client, {"datetime": "2023-03-01T00:00:00Z"}) == store.ids(lambda r: r["project"] == "beta")
    assert _all_ids(client, {"datetime": "2024-01-01T00:00:00Z/.."}) == store.ids(lambda r: r["project"] == "alpha")
    assert _all_ids(client, {"datetime": "2020-01-01T00:00:00Z/2021-01-01T00:00:00Z"}) == set()


def test_bbox_parameter(client: httpx.Client, store: Store) -> None:
    box = shapely.box(47.1, 40.1, 47.2, 40.2)
    assert _all_ids(client, {"bbox": "47.1,40.1,47.2,40.2"}) == store.ids(lambda r: r["geom"].intersects(box))


def _in_box(*bounds: float) -> Any:
    box = shapely.box(*bounds)
    return lambda r: r["geom"].intersects(box)


TRIANGLE = shapely.Polygon([(47, 40), (47.1, 40), (47, 40.1)])


@pytest.mark.parametrize(
    ("params", "keep"),
    [
        (
            {"filter": "confidence >= 0.9 AND status = 'detected'"},
            lambda r: r["confidence"] >= 0.9 and r["status"] == "detected",
        ),
        (
            {"filter": "from_class IN (1, 2) AND area_m2 BETWEEN 5000 AND 15000"},
            lambda r: r["from_class"] in (1, 2) and 5000 <= r["area_m2"] <= 15000,
        ),
        (
            {"filter": "project = 'beta' OR status LIKE 'rej%'"},
            lambda r: r["project"] == "beta" or r["status"] == "rejected",
        ),
        ({"filter": "S_INTERSECTS(geom, BBOX(47.0, 40.0, 47.05, 40.05))"}, _in_box(47.0, 40.0, 47.05, 40.05)),
        (
            {"filter": "S_INTERSECTS(geom, POLYGON((47 40, 47.1 40, 47 40.1, 47 40)))"},
            lambda r: r["geom"].intersects(TRIANGLE),
        ),
        ({"filter": "T_AFTER(datetime, TIMESTAMP('2023-06-01T00:00:00Z'))"}, lambda r: r["season_after"] == "2024"),
        (
            {"filter": '{"op": "=", "args": [{"property": "status"}, "corrected"]}', "filter-lang": "cql2-json"},
            lambda r: r["status"] == "corrected",
        ),
    ],
)
def test_cql2_filters(client: httpx.Client, store: Store, params: dict[str, Any], keep: Any) -> None:
    expected = store.ids(keep)
    assert expected
    assert _all_ids(client, params) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"filter": "query_to_xml('select * from lcms.decisions', true, true, '') = 'x'"}, "unsupported function"),
        ({"filter": "decided_by = 'op'"}, "unknown property"),
        ({"filter": "confidence >>> 1"}, "not valid cql2-text"),
        ({"filter": "status > 3"}, "do not apply"),
        ({"filter": "S_INTERSECTS(geom, POLYGON((0 0, 1 1, 1 0, 0 1, 0 0)))"}, "not valid"),
        ({"bbox": "47,40,46,41"}, "west must not exceed east"),
        ({"datetime": "2024-13-01"}, "not an RFC 3339"),
        ({"from_class": "abc"}, None),  # FastAPI's own validation: 422
        ({"tiles": "x", "id": "not-a-uuid"}, "not a valid uuid"),
        ({"simplify": "-1"}, "tolerance"),
    ],
)
def test_bad_parameters_are_client_errors(client: httpx.Client, params: dict[str, Any], message: str | None) -> None:
    resp = client.get(ITEMS, params=params)
    assert resp.status_code == (422 if message is None else 400), resp.text
    if message:
        assert message in resp.json()["detail"]


def test_decisions_are_not_exposed(client: httpx.Client) -> None:
    listed = client.get("/ogc/collections").json()
    assert [c["id"] for c in listed["collections"]] == [COLLECTION]
    for other in ("lcms.decisions", "lcms.detection_links", "lcms.loads", "public.spatial_ref_sys"):
        assert client.get(f"/ogc/collections/{other}/items").status_code == 404
    props = client.get(f"/ogc/collections/{COLLECTION}/queryables").json()["properties"]
    assert "decided_by" not in props and "status" in props


def test_collection_metadata(client: httpx.Client, store: Store) -> None:
    meta = client.get(f"/ogc/collections/{COLLECTION}").json()
    west, south, east, north = meta["extent"]["spatial"]["bbox"][0]
    assert BOUNDS[0] - 0.01 < west < east < BOUNDS[2] + 0.01 and BOUNDS[1] - 0.01 < south < north < BOUNDS[3] + 0.01
    assert meta["extent"]["temporal"]["interval"] == [["2023-03-01T00:00:00+00:00", "2024-03-01T00:00:00+00:00"]]
    rels = {link["rel"] for link in meta["links"]}
    assert {"self", "items", "queryables"} <= rels


def test_item_by_id(client: httpx.Client, store: Store) -> None:
    row = store.rows()[5]
    feature = client.get(f"{ITEMS}/{row['id']}").json()
    assert feature["id"] == row["id"] and feature["properties"]["status"] == row["status"]
    assert client.get(f"{ITEMS}/not-a-uuid").status_code == 404
    assert client.get(f"{ITEMS}/00000000-0000-4000-8000-000000000000").status_code == 404


# -- vector tiles -------------------------------------------------------------------------------------
@pytest.mark.usefixtures("gdal_oapif")
def test_vector_tile_holds_the_changes_of_its_extent(client: httpx.Client, store: Store, tmp_path: Path) -> None:
    tms = morecantile.tms.get("WebMercatorQuad")
    tile = tms.tile(47.08, 40.08, 13)
    resp = client.get(f"/ogc/collections/{COLLECTION}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    path = tmp_path / str(tile.z) / str(tile.x) / f"{tile.y}.pbf"  # GDAL reads z/x/y from the path
    path.parent.mkdir(parents=True)
    path.write_bytes(resp.content)
    with fiona.open(f"MVT:{path}", layer="default") as src:
        features = list(src)
    box = shapely.box(*tms.bounds(tile))
    expected = store.ids(lambda r: r["geom"].intersects(box))
    assert len(features) == len(expected) > 0
    assert {f["properties"]["id"] for f in features} == expected
    assert {"status", "from_class", "to_class", "confidence"} <= set(features[0]["properties"])

    # a filtered tile: only confirmed changes
    resp = client.get(
        f"/ogc/collections/{COLLECTION}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}",
        params={"status": "confirmed", "properties": "id,status"},
    )
    path.write_bytes(resp.content)
    with fiona.open(f"MVT:{path}", layer="default") as src:
        statuses = [f["properties"]["status"] for f in src]
    assert statuses and set(statuses) == {"confirmed"}


def test_tilejson_for_the_viewer(client: httpx.Client) -> None:
    tj = client.get(f"/ogc/collections/{COLLECTION}/tiles/WebMercatorQuad/tilejson.json").json()
    assert tj["tiles"] == [f"{client.base_url}/ogc/collections/{COLLECTION}/tiles/WebMercatorQuad/{{z}}/{{x}}/{{y}}"]
    assert client.get(f"/ogc/collections/{COLLECTION}/tiles/WebMercatorQuad/30/0/0").status_code == 404


# -- the database side -------------------------------------------------------------------------------
def test_service_sessions_are_read_only(store: Store) -> None:
    async def attempt() -> None:
        pool = await create_pool(store.url, ServiceSettings(database_url=store.url))
        try:
            async with pool.acquire() as conn:
                with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                    await conn.execute(
                        "INSERT INTO lcms.decisions (change_id, decided_by, action) "
                        "SELECT id, 'x', 'confirm' FROM lcms.changes LIMIT 1"
                    )
        finally:
            await pool.close()

    asyncio.run(attempt())


# -- schemathesis against the service's own OpenAPI document --------------------------------------------
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_openapi_no_server_error_and_responses_match_the_schema(service: ServiceProcess, mode: GenerationMode) -> None:
    """Every operation of /openapi.json, with generated parameters: no 5xx, and every answer as documented.

    (schemathesis's Python API rather than its pytest plugin, whose lazy fixture loader does not run on
    pytest 9: it renames the test node through an attribute pytest no longer has.)
    """
    api = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        # The real collection, so the generated queries reach the database (unknown ones: test_decisions_...).
        fixed = {"collectionId": COLLECTION} if "{collectionId}" in operation.path else None

        @given(case=operation.as_strategy(mode, path_parameters=fixed))
        @settings(
            max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case: Any) -> None:
            case.call_and_validate(base_url=service.url, checks=CHECKS)

        try:
            check()
        except Unsatisfiable:
            # Negative mode and an operation whose inputs cannot be made invalid (no parameter or only an
            # enumerated, optional one: the home page, the conformance page): nothing to try.
            assert mode is GenerationMode.NEGATIVE, operation.path
