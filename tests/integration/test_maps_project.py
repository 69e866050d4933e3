"""Imagery publishing and the map endpoints on a small project processed for real, download to change_detection.

The publish stage writes, beside each BYOC tile folder (which keeps exactly its three bands), an imagery
folder whose composite is the median of the download's valid observations and whose dates are the
download's acquisition days; a tile whose imagery fails to write leaves no partial folder. The service
then renders the published COGs with the legend's colours and answers the pixel's values.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from fastapi.testclient import TestClient
from pyproj import Transformer
from rio_cogeo.cogeo import cog_validate

from lcms_tasks.config import load_config
from lcms_tasks.context import RunContext
from lcms_tasks.errors import TileFailureError
from lcms_tasks.publish import BAND_NAMES, imagery
from lcms_tasks.publish.imagery import IMAGERY_BANDS, date_groups, median_composite
from lcms_tasks.runner import run_tiles
from tests.chain_helpers import FIRST, MAPS, publish_season, run_chain
from tests.unit.test_maps_api import decode, sample, tile_across, viewer_app

STAGES = FIRST + MAPS
SEASON = "2023"


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The conftest-style 2 x 2-tile project (64 px tiles) processed to change_detection for 2023, then published."""
    from tests.conftest import base_config, write_aoi

    folder = tmp_path_factory.mktemp("maps-project")
    write_aoi(folder / "aoi.geojson")
    cfg = base_config("aoi.geojson", "data")
    cfg["stages"] = {
        "add_reference": {"sources": [{"type": "synthetic_truth", "tile_fraction": 1.0}]},
        "training": {"drop_rare_classes": True, "min_samples_per_class": 5},
        "publish": {"change_store": False},
    }
    path = folder / "project.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_chain(path, SEASON, STAGES, "chain")
    publish_season(path, SEASON)
    return path


def _ctx(path: Path) -> RunContext:
    return RunContext.create(load_config(path), season=SEASON, run_id="test")


def _download(ctx: RunContext, tile_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    folder = ctx.storage.local_path(ctx.tile_uri("download", tile_id))
    marker = json.loads((folder / "_COMPLETE.json").read_text())
    bands = np.load(folder / "data" / "BANDS.npy")
    valid = np.load(folder / "mask" / "IS_VALID.npy")[..., 0]
    data = np.load(folder / "mask" / "IS_DATA.npy")[..., 0]
    stamps = json.loads((folder / "timestamps.json").read_text())
    return bands, valid, data, list(marker["band_names"]), stamps


def test_every_tile_has_an_imagery_folder_beside_its_byoc_folder(processed: Path) -> None:
    ctx = _ctx(processed)
    season = ctx.storage.local_path(ctx.storage.uri("testproj", SEASON))
    for tile in ctx.tiles():
        byoc = season / "publish" / tile.id
        assert sorted(p.name for p in byoc.iterdir()) == sorted([f"{b}.tiff" for b in BAND_NAMES] + ["_COMPLETE.json"])
        folder = season / "imagery" / tile.id
        marker = json.loads((folder / "_COMPLETE.json").read_text())
        assert marker["bands"] == list(IMAGERY_BANDS) and marker["epsg"] == tile.epsg
        assert marker["footprint_wgs84"] == json.loads((byoc / "_COMPLETE.json").read_text())["footprint_wgs84"]
        files = [folder / "composite.tiff", *(folder / d["file"] for d in marker["dates"])]
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.tiff")) == sorted(
            p.relative_to(folder).as_posix() for p in files
        )
        for path in files:
            assert cog_validate(str(path), quiet=True)[0], path
            with rasterio.open(path) as src:
                assert src.count == 4 and src.dtypes[0] == "uint16" and src.nodata == 0
                assert src.descriptions == IMAGERY_BANDS and src.crs.to_epsg() == tile.epsg
    assert not [p for p in (season / "imagery").iterdir() if p.name.startswith(".")]  # no staging left


def test_composite_and_dates_come_from_the_download(processed: Path) -> None:
    ctx = _ctx(processed)
    tile = ctx.tiles()[0]
    bands, valid, data, names, stamps = _download(ctx, tile.id)
    picks = [names.index(b) for b in IMAGERY_BANDS]
    folder = ctx.storage.local_path(ctx.tile_uri("imagery", tile.id))
    with rasterio.open(folder / "composite.tiff") as src:
        composite = np.moveaxis(src.read(), 0, -1)
    usable = valid & data
    expected = median_composite(np.ascontiguousarray(bands[..., picks]), usable)
    expected = np.where(usable.any(axis=0)[..., None], np.maximum(expected, 1), 0)
    np.testing.assert_array_equal(composite, expected)
    # a spot check of the median against numpy's
    r, c = np.argwhere(usable.sum(axis=0) >= 3)[0]
    obs = bands[usable[:, r, c], r, c][:, picks].astype(np.float64)
    np.testing.assert_array_equal(composite[r, c], np.floor(np.median(obs, axis=0) + 0.5))
    import datetime as dt

    days = [d for d, idx in date_groups([dt.datetime.fromisoformat(s) for s in stamps]) if data[idx].any()]
    marker = ctx.storage.read_marker(ctx.tile_uri("imagery", tile.id))
    assert [d["date"] for d in marker["dates"]] == days and days


def test_the_summary_and_the_season_index_name_the_imagery(processed: Path) -> None:
    ctx = _ctx(processed)
    summary = ctx.storage.read_marker(ctx.run_uri("publish", "summary"))
    assert summary["imagery"]["tiles"] == len(ctx.tiles()) and summary["imagery"]["tiles_without_imagery"] == []
    index = json.loads((ctx.storage.local_path(ctx.run_uri("imagery", "index")) / "dates.json").read_text())
    assert index["tiles"] == sorted(t.id for t in ctx.tiles()) and index["bands"] == list(IMAGERY_BANDS)


def test_a_tile_whose_imagery_fails_keeps_no_partial_imagery(processed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = RunContext.create(load_config(processed), season=SEASON, run_id="again", upstream_run_id="rep")
    tile = ctx.tiles()[0]
    uri = ctx.tile_uri("imagery", tile.id)
    before = ctx.storage.read_marker(uri)
    calls = {"n": 0}
    real = imagery.write_imagery_cog

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("no space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(imagery, "write_imagery_cog", failing)
    with pytest.raises(TileFailureError):
        run_tiles("publish", [tile], ctx)
    assert ctx.storage.read_marker(uri) == before  # the previous imagery, whole
    ctx.storage.delete(uri)
    calls["n"] = 0
    with pytest.raises(TileFailureError):
        run_tiles("publish", [tile], ctx)
    assert not ctx.storage.exists(uri)  # absent, not partial
    folder = ctx.storage.local_path(ctx.stage_uri("imagery"))
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(imagery, "write_imagery_cog", real)
    result = run_tiles("publish", [tile], ctx)
    assert result.written[tile.id] == [ctx.tile_uri("publish", tile.id), uri]
    assert ctx.storage.read_marker(uri)["run_id"] == "again"


@pytest.fixture(scope="module")
def client(processed: Path) -> Iterator[TestClient]:
    yield TestClient(viewer_app(processed))


def test_the_service_renders_the_published_cogs(processed: Path, client: TestClient) -> None:
    ctx = _ctx(processed)
    tiles = ctx.tiles()
    arrays = {}
    for tile in tiles:
        with rasterio.open(ctx.storage.local_path(ctx.tile_uri("publish", tile.id)) / "CLASS.tiff") as src:
            arrays[tile.id] = src.read(1)
    legend = {c.id: c.color for c in ctx.config.legend()}
    from lcms_service.tiles import hex_rgba

    table = {k: hex_rgba(v) for k, v in legend.items()}
    t = tile_across(tiles, 16)
    response = client.get(f"/api/maps/{SEASON}/CLASS/tiles/{t.z}/{t.x}/{t.y}.png")
    assert response.status_code == 200
    values, found, which = sample(tiles, arrays, 0, t.z, t.x, t.y)
    assert len(set(which[found].tolist())) >= 2
    rgba = decode(response.content)
    expected = np.zeros((*values.shape, 4), dtype=np.uint8)
    for value, color in table.items():
        expected[found & (values == value)] = color
    assert ((rgba == expected).all(axis=-1) | ((rgba[..., 3] == 0) & (expected[..., 3] == 0))).mean() >= 0.998
    assert client.get(f"/api/imagery/{SEASON}/tiles/{t.z}/{t.x}/{t.y}.png").status_code == 200
    seasons = {s["id"]: s for s in client.get("/api/projects").json()[0]["seasons"]}
    assert seasons[SEASON]["published"] and seasons[SEASON]["imagery"] and not seasons["2024"]["published"]


def test_the_pixel_answers_the_published_cogs_and_the_features(processed: Path, client: TestClient) -> None:
    ctx = _ctx(processed)
    tile = ctx.tiles()[2]
    row, col = 30, 40
    min_x, _, _, max_y = tile.bounds
    x, y = min_x + (col + 0.5) * tile.resolution, max_y - (row + 0.5) * tile.resolution
    lon, lat = Transformer.from_crs(tile.epsg, 4326, always_xy=True).transform(x, y)
    body = client.get("/api/pixel", params={"lon": lon, "lat": lat, "seasons": SEASON}).json()
    folder = ctx.storage.local_path(ctx.tile_uri("publish", tile.id))
    with rasterio.open(folder / "CLASS.tiff") as src:
        klass = int(src.read(1)[row, col])
    with rasterio.open(folder / "CONFIDENCE.tiff") as src:
        pct = int(src.read(1)[row, col])
    names = {c.id: c.name for c in ctx.config.legend()}
    assert body["tile"] == tile.id
    assert body["seasons"][SEASON] == {
        "class": klass,
        "class_name": names[klass],
        "confidence": pct / 100,
        "published": True,
    }
    features = ctx.storage.local_path(ctx.tile_uri("features", tile.id))
    ndvi = np.load(features / "data" / "FEATURES.npy", mmap_mode="r")[:, row, col, 0]
    stamps = json.loads((features / "timestamps.json").read_text())
    assert [p["date"] for p in body["ndvi"][SEASON]] == [s[:10] for s in stamps]
    np.testing.assert_allclose([p["ndvi"] for p in body["ndvi"][SEASON]], ndvi, atol=1e-4)
