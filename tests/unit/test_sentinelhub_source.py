"""The Sentinel Hub source through the real sentinelhub-py client against a fake server on loopback."""

from __future__ import annotations

import datetime as dt
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from lcms_tasks.grid import Tile
from lcms_tasks.sources import credentials
from lcms_tasks.sources.sentinelhub_source import (
    L2A_BANDS,
    SentinelHubAuthError,
    SentinelHubError,
    SentinelHubSource,
    SentinelHubSourceConfig,
    decode_tiff,
    merge_acquisitions,
)
from tests.fakes.sentinelhub_server import VEGETATION_DN, Acquisition, FakeSentinelHub

UTC = dt.UTC
START, END = dt.date(2023, 4, 1), dt.date(2023, 9, 30)
TILE = Tile(epsg=32638, row=3440, col=498, size_px=16, resolution=80.0)

# Two dates in the season: 1 May (two acquisitions 40 min apart, merged; leastCC picks the clear one),
# 11 May (cloudy); a 95 % cloudy scene (excluded by max_cloud_coverage) and one outside the season.
ACQUISITIONS = [
    Acquisition(dt.datetime(2023, 5, 1, 7, 30, tzinfo=UTC), 10.0),
    Acquisition(dt.datetime(2023, 5, 1, 8, 10, tzinfo=UTC), 0.0),
    Acquisition(dt.datetime(2023, 5, 11, 7, 30, tzinfo=UTC), 30.0),
    Acquisition(dt.datetime(2023, 5, 21, 7, 30, tzinfo=UTC), 95.0),
    Acquisition(dt.datetime(2023, 10, 21, 7, 30, tzinfo=UTC), 0.0),
]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LCMS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the fake server speaks plain http on loopback
    monkeypatch.setattr(credentials, "_PROVIDERS", [])
    for var in ("SH_CLIENT_ID", "SH_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def sh(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSentinelHub]:
    with FakeSentinelHub(acquisitions=list(ACQUISITIONS), max_page_size=2) as fake:
        monkeypatch.setenv("SH_CLIENT_ID", fake.client_id)
        monkeypatch.setenv("SH_CLIENT_SECRET", fake.client_secret)
        yield fake


def source(fake: FakeSentinelHub, **options: object) -> SentinelHubSource:
    kwargs: dict[str, object] = {"base_url": fake.base_url, "backoff_seconds": 0.0, "max_retries": 3}
    kwargs.update(options)
    return SentinelHubSource(SentinelHubSourceConfig.model_validate(kwargs))


def _chain(exc: BaseException | None) -> str:
    text = []
    while exc is not None:
        text.append(f"{type(exc).__name__}: {exc} {exc.args!r}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(text)


# ------------------------------------------------------------------------------------------- pure helpers


def test_merge_acquisitions_by_gap_and_day() -> None:
    t = dt.datetime(2023, 5, 1, 7, 0, tzinfo=UTC)
    m = dt.timedelta(minutes=1)
    times = [t, t + 40 * m, t + 10 * 24 * 60 * m, t + 10 * 24 * 60 * m + 200 * m, t + 30 * 24 * 60 * m]
    groups = merge_acquisitions(list(reversed(times)), dt.timedelta(minutes=120))
    # 40 min apart: merged by the gap; 200 min apart but the same UTC day: merged by the day rule.
    assert groups == [[times[0], times[1]], [times[2], times[3]], [times[4]]]
    # Late evening and early next morning, 60 min apart: merged (gap), dated by the first.
    late = dt.datetime(2023, 6, 1, 23, 30, tzinfo=UTC)
    assert merge_acquisitions([late, late + 60 * m], dt.timedelta(minutes=120)) == [[late, late + 60 * m]]
    assert merge_acquisitions([late, late + 60 * m], dt.timedelta(0)) == [[late], [late + 60 * m]]
    assert merge_acquisitions([], dt.timedelta(minutes=120)) == []


def test_decode_tiff_accepts_planar_and_rejects_wrong_shape() -> None:
    import tifffile

    data = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)  # (bands, rows, cols)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data, photometric="minisblack", planarconfig="separate")
    decoded = decode_tiff(buffer.getvalue(), 4, 5, 3)
    assert decoded.shape == (4, 5, 3)
    np.testing.assert_array_equal(decoded[..., 1], data[1])
    with pytest.raises(ValueError, match=r"expected a \(4, 5, 4\) image"):
        decode_tiff(buffer.getvalue(), 4, 5, 4)


# ------------------------------------------------------------------------------------------- fetch


def test_fetch_two_dates_through_the_real_client(sh: FakeSentinelHub) -> None:
    acq = source(sh).fetch(TILE, "2023", START, END).stacked()

    assert acq.dates == [dt.date(2023, 5, 1), dt.date(2023, 5, 11)]
    assert acq.band_names == L2A_BANDS and "B10" not in acq.band_names and len(acq.band_names) == 12
    assert acq.bands.shape == (2, 16, 16, 12) and acq.bands.dtype == np.uint16
    assert acq.data_mask.shape == acq.cloud_mask.shape == acq.cloud_probability.shape == (2, 16, 16)
    assert acq.data_mask.dtype == bool and acq.cloud_mask.dtype == bool and acq.cloud_probability.dtype == np.uint8
    assert acq.quantification == 10000.0 and acq.source_name == "sentinelhub"

    # Swath edge: the left two columns have no data, bands 0 there.
    expected_data = np.ones((16, 16), bool)
    expected_data[:, :2] = False
    assert (acq.data_mask == expected_data).all()
    assert (acq.bands[:, :, :2] == 0).all()
    # 1 May: the two acquisitions merged, leastCC took the clear one (index 1 of the server's list).
    b04 = L2A_BANDS.index("B04")
    yy, xx = np.mgrid[0:16, 0:16]
    expected_b04 = np.where(expected_data, VEGETATION_DN["B04"] + 1 + (xx + yy) % 7, 0)
    np.testing.assert_array_equal(acq.bands[0, ..., b04], expected_b04)
    assert not acq.cloud_mask[0].any()
    # 11 May: CLM cloud block (rows 0-3, cols 8-15) plus the SCL shadow rows 4-5.
    expected_cloud = np.zeros((16, 16), bool)
    expected_cloud[0:6, 8:] = True
    assert (acq.cloud_mask[1] == expected_cloud).all()
    assert acq.cloud_probability[1, 0, 8] == round(220 * 100 / 255)
    assert acq.cloud_probability[1, 10, 10] == round(12 * 100 / 255)
    assert acq.cloud_probability[1, 10, 0] == 0  # no data

    # Two catalog pages (page size 2, three hits), one token, one Process API request per date.
    assert sh.counts == {"token": 1, "catalog": 2, "process": 2}
    search = next(r for r in sh.requests if r.endpoint == "catalog").body
    assert search["collections"] == ["sentinel-2-l2a"]
    assert "eo:cloud_cover <= 80" in search["filter"]
    process = [r for r in sh.requests if r.endpoint == "process"]
    for req in process:
        assert req.headers["accept"] == "image/tiff"
        assert req.headers["authorization"].startswith("Bearer ")
        body = req.body
        assert body["input"]["bounds"]["bbox"] == list(TILE.bounds)
        assert body["input"]["bounds"]["properties"]["crs"].endswith("/EPSG/0/32638")
        assert (body["output"]["width"], body["output"]["height"]) == (16, 16)
        data_filter = body["input"]["data"][0]["dataFilter"]
        assert data_filter["mosaickingOrder"] == "leastCC" and data_filter["maxCloudCoverage"] == 80
        assert body["input"]["data"][0]["type"] == "sentinel-2-l2a"
    may_first = next(
        r.body for r in process if r.body["input"]["data"][0]["dataFilter"]["timeRange"]["from"] < "2023-05-02"
    )
    time_range = may_first["input"]["data"][0]["dataFilter"]["timeRange"]
    assert time_range["from"] <= "2023-05-01T07:30:00" and time_range["to"] >= "2023-05-01T08:10:00"


def test_scl_classes_are_optional(sh: FakeSentinelHub) -> None:
    acq = source(sh, scl_cloud_classes=()).fetch(TILE, "2023", START, END).stacked()
    expected_cloud = np.zeros((16, 16), bool)
    expected_cloud[0:4, 8:] = True  # CLM alone: no shadow rows
    assert (acq.cloud_mask[1] == expected_cloud).all()


def test_time_difference_zero_keeps_acquisitions_of_other_days_apart(sh: FakeSentinelHub) -> None:
    sh.acquisitions.append(Acquisition(dt.datetime(2023, 5, 12, 7, 0, tzinfo=UTC), 5.0))
    acq = source(sh, time_difference_minutes=0).fetch(TILE, "2023", START, END).stacked()
    assert acq.dates == [dt.date(2023, 5, 1), dt.date(2023, 5, 11), dt.date(2023, 5, 12)]


def test_empty_season(sh: FakeSentinelHub) -> None:
    acq = source(sh).fetch(TILE, "2022", dt.date(2022, 4, 1), dt.date(2022, 9, 30)).stacked()
    assert acq.dates == [] and acq.bands.shape == (0, 16, 16, 12)
    assert sh.counts["process"] == 0


# ------------------------------------------------------------------------------------------- retries


def test_429_is_retried_honouring_retry_after(sh: FakeSentinelHub) -> None:
    sh.fail("process", 429, 429)
    sh.fail("catalog", 429)
    acq = source(sh).fetch(TILE, "2023", START, END).stacked()
    assert len(acq.dates) == 2
    assert sh.counts["process"] == 2 + 2 and sh.counts["catalog"] == 2 + 1


def test_500_twice_then_success(sh: FakeSentinelHub) -> None:
    sh.fail("process", 500, 500)
    acq = source(sh).fetch(TILE, "2023", START, END).stacked()
    assert len(acq.dates) == 2 and acq.bands.any()
    assert sh.counts["process"] == 2 + 2


def test_persistent_5xx_gives_up_after_max_retries(sh: FakeSentinelHub) -> None:
    sh.acquisitions[:] = [ACQUISITIONS[2]]  # one date
    sh.fail("process", *([503] * 10))
    with pytest.raises(SentinelHubError, match=r"tile 32638_498_3440.*HTTP 503"):
        source(sh, max_retries=2).fetch(TILE, "2023", START, END)
    assert sh.counts["process"] == 3


def test_persistent_429_gives_up_after_max_retries(sh: FakeSentinelHub) -> None:
    sh.acquisitions[:] = [ACQUISITIONS[2]]
    sh.fail("process", *([429] * 10))
    with pytest.raises(SentinelHubError, match="HTTP 429"):
        source(sh, max_retries=2).fetch(TILE, "2023", START, END)
    assert sh.counts["process"] == 3


def test_401_on_token_is_a_clear_error_without_retries(sh: FakeSentinelHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SH_CLIENT_SECRET", "wrong-" + sh.client_secret)
    with pytest.raises(SentinelHubAuthError) as info:
        source(sh, airflow_conn_id="my_sh_conn").fetch(TILE, "2023", START, END)
    message = str(info.value)
    assert "rejected the credentials (HTTP 401)" in message
    assert f"client id {sh.client_id}" in message
    assert "SH_CLIENT_ID/SH_CLIENT_SECRET" in message and "Airflow connection my_sh_conn" in message
    assert sh.counts == {"token": 1}


def test_401_on_process_is_not_retried(sh: FakeSentinelHub) -> None:
    sh.acquisitions[:] = [ACQUISITIONS[2]]
    sh.fail("process", 401)
    with pytest.raises(SentinelHubAuthError, match=r"HTTP 401\) for client id"):
        source(sh).fetch(TILE, "2023", START, END)
    assert sh.counts["process"] == 1


def test_secret_never_logged_nor_in_errors(sh: FakeSentinelHub, caplog: pytest.LogCaptureFixture) -> None:
    secret = sh.client_secret
    caplog.set_level(logging.DEBUG)
    source(sh).fetch(TILE, "2023", START, END)
    # requests_oauthlib logs the token request body (client secret included) at DEBUG: the path is exercised.
    assert any(r.name.startswith("requests_oauthlib") for r in caplog.records)
    other = FakeSentinelHub(acquisitions=list(ACQUISITIONS), client_secret="another-" + secret)
    with other, pytest.raises(SentinelHubAuthError) as info:
        source(other).fetch(TILE, "2023", START, END)
    for record in caplog.records:
        assert secret not in record.getMessage(), record.name
        assert secret not in str(record.args)
    assert secret not in _chain(info.value)
    assert secret not in caplog.text


def test_plain_http_token_url_needs_the_explicit_opt_in(sh: FakeSentinelHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OAUTHLIB_INSECURE_TRANSPORT")
    with pytest.raises(SentinelHubError, match="is not https"):
        source(sh).fetch(TILE, "2023", START, END)


def test_tile_larger_than_a_request(sh: FakeSentinelHub) -> None:
    big = Tile(epsg=32638, row=1, col=1, size_px=64, resolution=10.0)
    with pytest.raises(SentinelHubError, match="exceeds the Process API request limit of 32 px"):
        source(sh, max_request_px=32).fetch(big, "2023", START, END)
    assert sh.counts.total() == 0


# ------------------------------------------------------------------------------------------- cache


def test_cache_prevents_a_second_download(sh: FakeSentinelHub, tmp_path: Path) -> None:
    first = source(sh).fetch(TILE, "2023", START, END).stacked()
    assert sh.counts["process"] == 2
    second = source(sh).fetch(TILE, "2023", START, END).stacked()  # a retried task: a new source instance
    assert sh.counts["process"] == 2
    np.testing.assert_array_equal(first.bands, second.bands)
    np.testing.assert_array_equal(first.cloud_mask, second.cloud_mask)
    files = sorted((tmp_path / "cache").rglob("*"))
    tifs = [f for f in files if f.suffix == ".tif"]
    assert len(tifs) == 2 and all(TILE.id in str(f) for f in tifs)
    assert not [f for f in files if f.name.endswith(".part")]
    # Another request (other mosaicking) is another key; use_cache=False always downloads.
    source(sh, mosaicking_order="mostRecent").fetch(TILE, "2023", START, END)
    assert sh.counts["process"] == 4
    source(sh, use_cache=False).fetch(TILE, "2023", START, END)
    assert sh.counts["process"] == 6


def test_a_failed_date_does_not_lose_the_dates_already_downloaded(sh: FakeSentinelHub) -> None:
    sh.fail("process", 500, 500, after=1)  # the first date succeeds, the second fails twice
    with pytest.raises(SentinelHubError, match="HTTP 500"):
        source(sh, max_retries=1, max_parallel_requests=1).fetch(TILE, "2023", START, END)
    assert sh.counts["process"] == 3
    acq = source(sh, max_retries=1, max_parallel_requests=1).fetch(TILE, "2023", START, END).stacked()
    assert sh.counts["process"] == 4 and len(acq.dates) == 2  # only the missing date was requested


def test_corrupt_cache_entry_is_downloaded_again(sh: FakeSentinelHub, tmp_path: Path) -> None:
    source(sh).fetch(TILE, "2023", START, END)
    victim = sorted((tmp_path / "cache").rglob("*.tif"))[0]
    victim.write_bytes(b"not a tiff")
    source(sh).fetch(TILE, "2023", START, END)
    assert sh.counts["process"] == 3


# ------------------------------------------------------------------------------------------- config


def test_config_fields_and_validation() -> None:
    cfg = SentinelHubSourceConfig()
    assert cfg.base_url == "https://services.sentinel-hub.com"
    assert cfg.resolved_token_url() == (
        "https://services.sentinel-hub.com/auth/realms/main/protocol/openid-connect/token"
    )
    cdse = SentinelHubSourceConfig(
        base_url="https://sh.dataspace.copernicus.eu",
        token_url="https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token",
    )
    assert "CDSE" in cdse.resolved_token_url()
    assert (cfg.collection, cfg.max_cloud_coverage, cfg.time_difference_minutes) == ("sentinel-2-l2a", 0.8, 120.0)
    assert (cfg.max_retries, cfg.backoff_seconds, cfg.timeout_seconds) == (5, 2.0, 120.0)
    assert cfg.airflow_conn_id == "sentinel_hub_default"
    for field_info in SentinelHubSourceConfig.model_fields.values():
        assert field_info.description
    for bad in (
        {"client_secret": "x"},  # unknown key: secrets have no place in configs
        {"max_cloud_coverage": 1.5},
        {"max_retries": -1},
        {"mosaicking_order": "random"},
        {"collection": "sentinel-2-l1c"},
        {"base_url": "services.sentinel-hub.com"},
        {"max_request_px": 5000},
    ):
        with pytest.raises(ValidationError):
            SentinelHubSourceConfig.model_validate({"type": "sentinelhub", **bad})


def test_project_config_selects_the_source(config_path: Path) -> None:
    from lcms_tasks.config import load_config
    from lcms_tasks.errors import ConfigError
    from lcms_tasks.sources import get_source

    raw = yaml.safe_load(config_path.read_text())
    raw["source"] = {"type": "sentinelhub", "base_url": "http://127.0.0.1:9", "max_retries": 1}
    config_path.write_text(yaml.safe_dump(raw))
    cfg = load_config(config_path)
    assert isinstance(get_source(cfg), SentinelHubSource)
    raw["source"]["maxcc"] = 0.5
    config_path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="maxcc"):
        load_config(config_path)


# ------------------------------------------------------------------------------------------- credentials


def test_credentials_providers_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(credentials.CredentialsError, match=r"'conn_x'.*SH_CLIENT_ID and SH_CLIENT_SECRET"):
        credentials.get_credentials("conn_x")
    monkeypatch.setenv("SH_CLIENT_ID", "env-id")
    monkeypatch.setenv("SH_CLIENT_SECRET", "env-secret")
    assert credentials.get_credentials("conn_x")[:2] == ("env-id", "env-secret")

    def provider(conn_id: str) -> tuple[str, str] | None:
        return ("conn-id", "conn-secret") if conn_id == "conn_x" else None

    def broken(conn_id: str) -> tuple[str, str] | None:
        raise RuntimeError("metadata database unreachable")

    credentials.register_provider(broken)
    credentials.register_provider(provider)
    credentials.register_provider(provider)  # idempotent
    assert credentials.registered_providers() == [broken, provider]
    creds = credentials.get_credentials("conn_x")
    assert (creds.client_id, creds.client_secret) == ("conn-id", "conn-secret")
    assert "conn-secret" not in repr(creds) and "conn-secret" not in str(creds)
    assert credentials.get_credentials("other").client_id == "env-id"  # provider does not know it
    credentials.unregister_provider(provider)
    assert credentials.get_credentials("conn_x").client_id == "env-id"


def test_airflow_connection_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    from lcms_airflow import credentials as af_credentials

    monkeypatch.setenv(
        "AIRFLOW_CONN_SH_TEST_CONN", '{"conn_type": "generic", "login": "af-id", "password": "af-secret"}'
    )
    assert af_credentials.airflow_connection_credentials("sh_test_conn") == ("af-id", "af-secret")
    assert af_credentials.airflow_connection_credentials("sh_surely_undefined_conn") is None
    af_credentials.install()
    af_credentials.install()
    assert credentials.registered_providers() == [af_credentials.airflow_connection_credentials]
    creds = credentials.get_credentials("sh_test_conn")
    assert (creds.client_id, creds.client_secret) == ("af-id", "af-secret")
    assert "sh_test_conn" in creds.origin


# ------------------------------------------------------------------------------------------- stages


def test_download_and_features_stages_on_the_fixture_project(
    config_path: Path, sh: FakeSentinelHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lcms_tasks import eopatch
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import project_tiles
    from lcms_tasks.runner import run_tiles

    raw = yaml.safe_load(config_path.read_text())
    raw["source"] = {"type": "sentinelhub", "base_url": sh.base_url, "backoff_seconds": 0, "max_retries": 2}
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(config_path)
    tiles = project_tiles(cfg)
    assert len(tiles) == 4
    ctx = RunContext.create(cfg, season="2023", run_id="sh-test")

    result = run_tiles("download", tiles, ctx)
    assert not result.failed and sorted(result.written) == sorted(t.id for t in tiles)
    assert sh.counts["process"] == 2 * len(tiles) and sh.counts["token"] == 1
    for tile in tiles:
        patch, meta = eopatch.load(ctx.storage, ctx.tile_uri("download", tile.id))
        h, w = tile.shape
        assert patch.data["BANDS"].shape == (2, h, w, 12)
        assert patch.data["CLP"].shape == (2, h, w, 1)
        for name in ("IS_DATA", "CLM", "IS_VALID"):
            assert patch.mask[name].shape == (2, h, w, 1)
        assert meta["band_names"] == list(L2A_BANDS) and meta["source"] == "sentinelhub"
        assert [t.date() for t in patch.timestamps or []] == [dt.date(2023, 5, 1), dt.date(2023, 5, 11)]

    result = run_tiles("features", tiles, ctx)
    assert not result.failed
    patch, meta = eopatch.load(ctx.storage, ctx.tile_uri("features", tiles[0].id))
    features = patch.data["FEATURES"]
    assert features.shape[1:] == (64, 64, 6)
    no_data = patch.mask_timeless["NO_DATA"][..., 0]
    assert no_data[:, :8].all() and not no_data[:, 8:].any()  # the swath edge has no valid observation
    valid = features[:, ~no_data]
    assert np.isfinite(valid).all()
    ndvi = valid[..., meta["feature_names"].index("NDVI")]
    assert 0.6 < float(np.median(ndvi)) < 0.9  # vegetation DN: (3100 - 400) / (3100 + 400) = 0.77
