"""BYOC registration through the real sentinelhub-py client against a fake BYOC API on loopback."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from lcms_tasks.config import parse_config
from lcms_tasks.context import RunContext
from lcms_tasks.errors import ConfigError
from lcms_tasks.publish import BAND_NAMES, BandInfo, PublishedTile
from lcms_tasks.publish.byoc import (
    CDSE_BASE_URL,
    CDSE_TOKEN_URL,
    DEFAULT_TOKEN_URL,
    ByocAuthError,
    ByocError,
    ByocOptions,
    check_target,
    register_season,
    sensing_time,
)
from lcms_tasks.sources import credentials
from lcms_tasks.sources.sentinelhub_source import SentinelHubAuthError
from tests.conftest import base_config
from tests.fakes.byoc_server import FakeByoc
from tests.fakes.sentinelhub_server import TOKEN_PATH

BUCKET = "lcms-test-bucket"
ROOT = f"s3://{BUCKET}/maps"
NODATA = {"CLASS": 0, "CONFIDENCE": 255, "CHANGE": 0}  # as lcms_tasks.publish.cog.BAND_SPECS writes them
EXPECTED_BANDS = {
    "CLASS": {"source": "CLASS", "bitDepth": 8, "sampleFormat": "UINT", "noData": 0},
    "CONFIDENCE": {"source": "CONFIDENCE", "bitDepth": 8, "sampleFormat": "UINT", "noData": 255},
    "CHANGE": {"source": "CHANGE", "bitDepth": 8, "sampleFormat": "UINT", "noData": 0},
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the fake server speaks plain http on loopback
    monkeypatch.setattr(credentials, "_PROVIDERS", [])
    for var in ("SH_CLIENT_ID", "SH_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def sh(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeByoc]:
    with FakeByoc(max_page_size=3) as fake:
        monkeypatch.setenv("SH_CLIENT_ID", fake.client_id)
        monkeypatch.setenv("SH_CLIENT_SECRET", fake.client_secret)
        yield fake


def make_ctx(tmp_path: Path, root: str = ROOT, season: str = "2023") -> RunContext:
    config = parse_config(base_config("aoi.geojson", root), base_dir=tmp_path)
    return RunContext.create(config, season=season, run_id="test_run")


def make_tile(ctx: RunContext, index: int, season: str | None = None) -> PublishedTile:
    season = season or ctx.season
    tile_id = f"32638_{498 + index}_3440"
    lon, lat = 44.5 + 0.02 * index, 31.0
    ring = [[lon, lat], [lon + 0.02, lat], [lon + 0.02, lat + 0.02], [lon, lat + 0.02], [lon, lat]]
    return PublishedTile(
        tile_id=tile_id,
        season=season,
        uri=f"{ctx.storage.root}/{ctx.config.project}/{season}/publish/{tile_id}",
        epsg=32638,
        bounds=(637440.0 + 1280 * index, 4403200.0, 638720.0 + 1280 * index, 4404480.0),
        footprint_wgs84={"type": "Polygon", "coordinates": [ring]},
        bands={name: BandInfo(name, f"{name}.tiff", "uint8", NODATA[name]) for name in BAND_NAMES},
    )


def options(fake: FakeByoc, **kwargs: Any) -> ByocOptions:
    values: dict[str, Any] = {
        "collection": "lcms-testproj",
        "base_url": fake.base_url,
        "poll_interval_seconds": 0.01,
        "ingestion_timeout_seconds": 10.0,
        "backoff_seconds": 0.05,
        "max_retries": 3,
    }
    values.update(kwargs)
    return ByocOptions.model_validate(values)


def key(tile: PublishedTile) -> str:
    return f"maps/testproj/{tile.season}/publish/{tile.tile_id}"


def _chain(exc: BaseException | None) -> str:
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc} {exc.args!r}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------- options


def test_options_defaults_are_sentinelhub_py_and_documented() -> None:
    from sentinelhub import SHConfig

    o = ByocOptions(collection="lcms-maps")
    assert o.base_url == SHConfig(use_defaults=True).sh_base_url
    assert o.resolved_token_url() == DEFAULT_TOKEN_URL == SHConfig(use_defaults=True).sh_token_url
    assert ByocOptions(collection="x", base_url="https://services-uswest2.sentinel-hub.com").resolved_token_url() == (
        DEFAULT_TOKEN_URL
    )
    assert ByocOptions(collection="x", base_url=CDSE_BASE_URL).resolved_token_url() == CDSE_TOKEN_URL
    assert ByocOptions(collection="x", base_url="http://127.0.0.1:9").resolved_token_url() == (
        "http://127.0.0.1:9" + TOKEN_PATH
    )
    assert ByocOptions(collection="x", token_url="https://auth.example/token").resolved_token_url() == (
        "https://auth.example/token"
    )
    assert o.collection_id() is None and o.sensing_time == "season_start"
    assert o.wait_for_ingestion and o.airflow_conn_id == "sentinel_hub_default"
    uuid = "3F605F75-86C4-411A-B4AE-01C896F0E54E"
    assert ByocOptions(collection=uuid).collection_id() == uuid.lower()
    for name, field in ByocOptions.model_fields.items():
        assert field.description, f"ByocOptions.{name} has no description"
    with pytest.raises(ValidationError, match="extra"):
        ByocOptions.model_validate({"collection": "x", "colection": "y"})
    with pytest.raises(ValidationError, match="bucket"):
        ByocOptions(collection="x", bucket="s3://Bad_Bucket")


def test_sensing_time_season_start_rule_or_configured(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    utc = dt.UTC
    assert sensing_time(ByocOptions(collection="x"), ctx.config, "2023") == dt.datetime(2023, 4, 1, tzinfo=utc)
    assert sensing_time(ByocOptions(collection="x", sensing_time="season_end"), ctx.config, "2023") == dt.datetime(
        2023, 9, 30, tzinfo=utc
    )
    configured = ByocOptions.model_validate(
        {"collection": "x", "sensing_times": {"2023": "2023-06-15", "2024": "2024-06-15T10:30:00+02:00"}}
    )
    assert sensing_time(configured, ctx.config, "2023") == dt.datetime(2023, 6, 15, tzinfo=utc)
    assert sensing_time(configured, ctx.config, "2024") == dt.datetime(2024, 6, 15, 8, 30, tzinfo=utc)
    with pytest.raises(ConfigError, match="unknown season '2030'"):
        sensing_time(ByocOptions(collection="x"), ctx.config, "2030")


def test_a_file_root_or_another_bucket_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"storage root is 'file://.*s3://<bucket>/<prefix>"):
        check_target(ByocOptions(collection="x"), "file:///data/lcms")
    ctx = make_ctx(tmp_path, root="file:///data/lcms")
    with pytest.raises(ConfigError, match="BYOC registration needs the COGs in S3"):
        register_season(ctx, ByocOptions(collection="x"), [])
    assert check_target(ByocOptions(collection="x"), ROOT) == BUCKET
    assert check_target(ByocOptions(collection="x", bucket=BUCKET), ROOT) == BUCKET
    with pytest.raises(ConfigError, match=f"bucket: 'other-bucket' is not the bucket of the storage root .*'{BUCKET}'"):
        check_target(ByocOptions(collection="x", bucket="other-bucket"), ROOT)


# ------------------------------------------------------------------------------------------- registration


def test_without_credentials_the_step_is_skipped(tmp_path: Path) -> None:
    with FakeByoc() as fake:
        ctx = make_ctx(tmp_path)
        summary = register_season(ctx, options(fake), [make_tile(ctx, 0)])
        assert not fake.requests  # not even a token request
    assert summary["skipped"].startswith("BYOC registration skipped: no Sentinel Hub credentials")
    assert "SH_CLIENT_ID" in summary["skipped"] and "sentinel_hub_default" in summary["skipped"]
    assert summary["collection_id"] is None and summary["tiles_created"] == []


def test_first_publish_creates_collection_and_tiles_with_documented_requests(
    sh: FakeByoc, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = make_ctx(tmp_path)
    tiles = [make_tile(ctx, i) for i in range(2)]
    caplog.set_level(logging.DEBUG)

    summary = register_season(ctx, options(sh), tiles)

    json.dumps(summary)  # the run summary is JSON
    assert sh.client_secret not in caplog.text
    assert not any(token in caplog.text for token in sh._tokens)

    # The token: OAuth2 client credentials, form-encoded, the secret not recorded by the fake.
    (token,) = [r for r in sh.requests if r.endpoint == "token"]
    assert token.path == TOKEN_PATH and token.body == {"grant_type": "client_credentials", "client_id": sh.client_id}
    calls = [(r.method, r.endpoint) for r in sh.byoc_requests()]
    assert calls[:2] == [("GET", "collections"), ("POST", "collection.create")]
    assert calls[2:4] == [("POST", "tile.create"), ("POST", "tile.create")]  # a new collection has no tiles to list
    assert set(calls[4:]) == {("GET", "tiles")}  # polling for ingestion
    for request in sh.byoc_requests():
        assert request.headers["authorization"].startswith("Bearer ")
        assert request.path.startswith("/api/v1/byoc/collections")
    (create,) = sh.byoc_requests("collection.create")
    assert create.path == "/api/v1/byoc/collections"
    assert create.headers["content-type"] == "application/json"
    assert create.body == {"name": "lcms-testproj", "s3Bucket": BUCKET, "additionalData": {"bands": EXPECTED_BANDS}}
    assert list(create.body["additionalData"]["bands"]) == list(BAND_NAMES)
    collection_id = summary["collection_id"]
    bodies = [r.body for r in sh.byoc_requests("tile.create")]
    assert {r.path for r in sh.byoc_requests("tile.create")} == {f"/api/v1/byoc/collections/{collection_id}/tiles"}
    assert bodies[0] == {
        "path": f"{key(tiles[0])}/(BAND).tiff",
        "sensingTime": "2023-04-01T00:00:00Z",
        "coverGeometry": {
            "type": "Polygon",
            "coordinates": tiles[0].footprint_wgs84["coordinates"],
            "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4326"}},
        },
    }
    assert bodies[1]["path"] == f"{key(tiles[1])}/(BAND).tiff"
    for request in sh.byoc_requests("tiles"):
        assert request.query.get("count") == "100"

    stored = sh.collection_tiles(collection_id)
    assert sorted(t["path"] for t in stored) == sorted(b["path"] for b in bodies)
    assert summary["skipped"] is None and summary["collection_created"] is True
    assert summary["collection"] == "lcms-testproj" and summary["bucket"] == BUCKET
    assert summary["tiles_created"] == [t.tile_id for t in tiles]
    assert summary["tiles_ingested"] == [t.tile_id for t in tiles]
    assert summary["tiles_updated"] == summary["tiles_reingested"] == summary["tiles_pending"] == []
    assert summary["tiles_failed"] == {} and summary["timed_out"] is False
    assert {t["id"] for t in stored} == {summary["tiles"][t.tile_id]["byoc_id"] for t in tiles}
    assert all(entry["status"] == "INGESTED" for entry in summary["tiles"].values())


def test_second_publish_reuses_collection_and_updates_or_reingests_without_duplicates(
    sh: FakeByoc, tmp_path: Path
) -> None:
    ctx = make_ctx(tmp_path)
    tiles = [make_tile(ctx, i) for i in range(7)]  # more tiles than the fake's page of 3
    first = register_season(ctx, options(sh), tiles[:5])
    collection_id = first["collection_id"]
    n_creates = len(sh.byoc_requests("tile.create"))

    # Second publish: two more tiles, and one season's tiles get a configured sensing time.
    second = register_season(ctx, options(sh, sensing_times={"2023": "2023-06-01"}), tiles)
    assert len(sh.byoc_requests("collection.create")) == 1
    assert second["collection_id"] == collection_id and second["collection_created"] is False
    assert len(sh.byoc_requests("tile.create")) == n_creates + 2
    stored = sh.collection_tiles(collection_id)
    paths = [t["path"] for t in stored]
    assert len(paths) == len(set(paths)) == 7
    assert second["tiles_created"] == [t.tile_id for t in tiles[5:]]
    assert second["tiles_updated"] == [t.tile_id for t in tiles[:5]]
    assert second["tiles_reingested"] == [t.tile_id for t in tiles[:5]]
    assert second["tiles_ingested"] == [t.tile_id for t in tiles]
    updates = sh.byoc_requests("tile.update")
    assert len(updates) == 5
    first_ids = {first["tiles"][t.tile_id]["byoc_id"] for t in tiles[:5]}
    assert {r.path.rsplit("/", 1)[1] for r in updates} == first_ids
    assert all(r.method == "PUT" and r.body["sensingTime"] == "2023-06-01T00:00:00Z" for r in updates)
    assert all(set(r.body) == {"path", "sensingTime", "coverGeometry"} for r in updates)
    reingests = sh.byoc_requests("tile.reingest")
    assert sorted(r.path for r in reingests) == sorted(
        f"/api/v1/byoc/collections/{collection_id}/tiles/{i}/reingest" for i in first_ids
    )
    assert all(r.method == "POST" and r.body is None for r in reingests)

    # Third publish, nothing changed: the tiles are re-ingested (their files were replaced), not updated.
    third = register_season(ctx, options(sh, sensing_times={"2023": "2023-06-01"}), tiles)
    assert len(sh.byoc_requests("tile.update")) == 5 and len(sh.byoc_requests("tile.create")) == n_creates + 2
    assert third["tiles_updated"] == [] and third["tiles_created"] == []
    assert third["tiles_reingested"] == [t.tile_id for t in tiles]
    assert len(sh.collection_tiles(collection_id)) == 7


def test_listings_follow_every_page(sh: FakeByoc, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    for i in range(4):  # the account's other collections fill the first pages
        sh.add_collection(f"someone-else-{i}", "other-bucket")
    tiles = [make_tile(ctx, i) for i in range(8)]
    register_season(ctx, options(sh), tiles)
    listings = sh.byoc_requests("collections")
    assert [r.query.get("viewtoken") for r in listings] == [None, "3"]  # 4 collections, pages of 3

    summary = register_season(ctx, options(sh), tiles)
    assert len(sh.byoc_requests("collection.create")) == 1
    assert summary["tiles_created"] == [] and len(summary["tiles_reingested"]) == 8
    # The path lookup listed the collection's 8 tiles in 3 pages, following the nextToken of each.
    lookup = [r for r in sh.byoc_requests("tiles") if r.at > listings[-1].at][:3]
    assert [r.query.get("viewtoken") for r in lookup] == [None, "3", "6"]
    assert all(r.query.get("count") == "100" for r in lookup)
    assert len(sh.collection_tiles(summary["collection_id"])) == 8


def test_failed_ingestion_is_reported_with_its_cause(sh: FakeByoc, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    tiles = [make_tile(ctx, i) for i in range(3)]
    cause = "Band CONFIDENCE: the file is not a Cloud Optimized GeoTIFF (no overviews)"
    sh.fail_ingestion = {tiles[1].tile_id: cause}

    summary = register_season(ctx, options(sh), tiles)

    assert summary["tiles_failed"] == {tiles[1].tile_id: {"path": f"{key(tiles[1])}/(BAND).tiff", "cause": cause}}
    assert summary["tiles_ingested"] == [tiles[0].tile_id, tiles[2].tile_id]
    assert summary["tiles"][tiles[1].tile_id]["status"] == "FAILED"
    assert summary["tiles"][tiles[1].tile_id]["cause"] == cause


def test_ingestion_timeout_leaves_tiles_pending(sh: FakeByoc, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    sh.ingest_after_reads = 10_000
    summary = register_season(
        ctx, options(sh, ingestion_timeout_seconds=0.2, poll_interval_seconds=0.05), [make_tile(ctx, 0)]
    )
    assert summary["timed_out"] is True and summary["tiles_pending"] == [make_tile(ctx, 0).tile_id]
    assert summary["tiles_failed"] == {} and summary["tiles"][make_tile(ctx, 0).tile_id]["status"] == "INGESTING"

    no_wait = register_season(ctx, options(sh, wait_for_ingestion=False), [make_tile(ctx, 1)])
    assert no_wait["waited_for_ingestion"] is False and no_wait["tiles_pending"] == [make_tile(ctx, 1).tile_id]


def test_existing_collection_by_id_gets_its_bands_declared(sh: FakeByoc, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    collection = sh.add_collection("made in the dashboard", BUCKET)
    summary = register_season(ctx, options(sh, collection=collection["id"]), [make_tile(ctx, 0)])
    assert summary["collection_id"] == collection["id"] and summary["collection_created"] is False
    (get,) = sh.byoc_requests("collection")
    assert get.method == "GET" and get.path == f"/api/v1/byoc/collections/{collection['id']}"
    assert not sh.byoc_requests("collections")  # an id is not looked up by name
    (update,) = sh.byoc_requests("collection.update")
    assert update.method == "PUT" and update.headers["content-type"] == "application/json"
    assert update.body == {
        "id": collection["id"],
        "name": "made in the dashboard",
        "s3Bucket": BUCKET,
        "additionalData": {"bands": EXPECTED_BANDS},
    }
    assert sh.collections[collection["id"]]["isConfigured"] is True
    assert summary["tiles_ingested"] == [make_tile(ctx, 0).tile_id]


def test_unknown_collection_id_or_mismatching_collection_is_refused(sh: FakeByoc, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    missing = "3f605f75-86c4-411a-b4ae-01c896f0e54e"
    with pytest.raises(ByocError, match=rf"collection {missing} .*cannot be read.*HTTP 404"):
        register_season(ctx, options(sh, collection=missing), [make_tile(ctx, 0)])

    other_bucket = sh.add_collection("in-another-bucket", "other-bucket", EXPECTED_BANDS)
    with pytest.raises(ByocError, match="reads bucket 'other-bucket'"):
        register_season(ctx, options(sh, collection=other_bucket["id"]), [make_tile(ctx, 0)])

    bands = {**EXPECTED_BANDS, "CONFIDENCE": {**EXPECTED_BANDS["CONFIDENCE"], "noData": 0}}
    sh.add_collection("lcms-old", BUCKET, bands)
    with pytest.raises(ByocError, match=r"'lcms-old'.*band CONFIDENCE noData is 0, LCMS publishes 255"):
        register_season(ctx, options(sh, collection="lcms-old"), [make_tile(ctx, 0)])
    assert not sh.byoc_requests("tile.create")


def test_inconsistent_tile_folders_are_refused_before_any_request(sh: FakeByoc, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    good = make_tile(ctx, 0)
    odd = make_tile(ctx, 1)
    odd = PublishedTile(**{**odd.__dict__, "bands": {k: v for k, v in odd.bands.items() if k != "CHANGE"}})
    with pytest.raises(ByocError, match=f"tile {odd.tile_id} .*same files"):
        register_season(ctx, options(sh), [good, odd])
    elsewhere = PublishedTile(**{**good.__dict__, "uri": "s3://other-bucket/x/" + good.tile_id})
    with pytest.raises(ByocError, match="not in the collection's bucket"):
        register_season(ctx, options(sh), [elsewhere])
    assert not sh.requests


# ------------------------------------------------------------------------------------------- faults


def test_rejected_credentials_name_the_client_id_never_the_secret(
    sh: FakeByoc, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = make_ctx(tmp_path)
    sh.reject_credentials = True
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ByocAuthError) as info:
        register_season(ctx, options(sh), [make_tile(ctx, 0)])
    message = str(info.value)
    assert "HTTP 401" in message and f"client id {sh.client_id}" in message
    assert "sentinel_hub_default" in message
    assert sh.client_secret not in _chain(info.value)
    assert sh.client_secret not in caplog.text
    assert isinstance(info.value, SentinelHubAuthError) and info.value.permanent
    assert sh.counts["token"] == 1 and not sh.byoc_requests()  # at once: no retry, no API request


def test_401_from_the_api_fails_at_once(sh: FakeByoc, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ctx = make_ctx(tmp_path)
    sh.fail("collections", 401)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ByocAuthError, match=f"client id {sh.client_id}.*listing BYOC collections"):
        register_season(ctx, options(sh), [make_tile(ctx, 0)])
    assert sh.counts["collections"] == 1
    assert sh.client_secret not in caplog.text


def test_429_is_retried_after_retry_after(sh: FakeByoc, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    sh.retry_after_ms = 400  # Sentinel Hub sends Retry-After in milliseconds
    sh.fail("tile.create", 429, after=1)  # the second tile's create is throttled once
    tiles = [make_tile(ctx, i) for i in range(2)]

    summary = register_season(ctx, options(sh, backoff_seconds=5.0), tiles)

    creates = sh.byoc_requests("tile.create")
    assert len(creates) == 3
    assert creates[1].body == creates[2].body
    gap = creates[2].at - creates[1].at
    assert 0.4 <= gap < 3.0, gap  # after Retry-After, not after the 5 s backoff nor sentinelhub-py's 30 s default
    assert summary["tiles_created"] == [t.tile_id for t in tiles]
    assert len(sh.collection_tiles(summary["collection_id"])) == 2


def test_429_without_retry_after_waits_the_backoff(sh: FakeByoc, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    sh.retry_after_ms = None
    sh.fail("collections", 429)
    register_season(ctx, options(sh, backoff_seconds=0.3), [make_tile(ctx, 0)])
    first, second = sh.byoc_requests("collections")[:2]
    assert 0.3 <= second.at - first.at < 3.0


def test_persistent_429_gives_up_after_the_configured_attempts(sh: FakeByoc, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    sh.fail("collections", *[429] * 10)
    with pytest.raises(ByocError, match=r"rate-limits \(HTTP 429\) after 3 attempts"):
        register_season(ctx, options(sh, max_retries=2), [make_tile(ctx, 0)])
    assert sh.counts["collections"] == 3


def test_5xx_is_retried_with_backoff(sh: FakeByoc, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    sh.fail("collection.create", 503, 500)
    summary = register_season(ctx, options(sh, backoff_seconds=0.1), [make_tile(ctx, 0)])
    creates = sh.byoc_requests("collection.create")
    assert len(creates) == 3 and len(sh.collections) == 1
    assert creates[1].at - creates[0].at >= 0.1
    assert creates[2].at - creates[1].at >= 0.3  # x3 per attempt
    assert summary["collection_created"] is True

    sh.fail("tiles", *[502] * 10)
    with pytest.raises(ByocError, match=r"listing the tiles of BYOC collection .*HTTP 502"):
        register_season(ctx, options(sh, backoff_seconds=0.01, max_retries=1), [make_tile(ctx, 0)])


def test_a_lost_create_response_does_not_duplicate_the_tile(sh: FakeByoc, tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    sh.unique_paths = True
    sh.lose_response("tile.create", 502)  # created, but the answer is lost: sentinelhub-py retries the POST
    tile = make_tile(ctx, 0)

    summary = register_season(ctx, options(sh), [tile])

    assert len(sh.byoc_requests("tile.create")) == 2  # the retry got 409
    (stored,) = sh.collection_tiles(summary["collection_id"])
    assert summary["tiles"][tile.tile_id]["byoc_id"] == stored["id"]
    assert summary["tiles_created"] == summary["tiles_ingested"] == [tile.tile_id]
    assert summary["tiles_reingested"] == [] and not sh.byoc_requests("tile.reingest")
    lookups = [r for r in sh.byoc_requests("tiles") if "path" in r.query]
    assert [r.query["path"] for r in lookups] == [f"{key(tile)}/(BAND).tiff"]


def test_an_unreachable_service_fails_naming_the_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("SH_CLIENT_ID", "lcms-test-client")
    monkeypatch.setenv("SH_CLIENT_SECRET", "not-a-real-secret")
    ctx = make_ctx(tmp_path)
    o = ByocOptions(collection="x", base_url=f"http://127.0.0.1:{port}", max_retries=1, backoff_seconds=0.01)
    with pytest.raises(ByocError, match=rf"token request to http://127.0.0.1:{port}/.*could not be reached after 2"):
        register_season(ctx, o, [make_tile(ctx, 0)])
