"""Publishing a small project processed for real, from download to change_detection, over two seasons.

Every file of each published season passes the BYOC check (overview tile sizes included), the tile
folders hold the same files, the mosaics open in GDAL and match the tiles, the STAC catalog
validates offline, and the CHANGE rasters hold exactly the change polygons of the change stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile
import yaml

from lcms_tasks.changes import read_changes
from lcms_tasks.config import load_config
from lcms_tasks.context import RunContext
from lcms_tasks.publish import BAND_NAMES
from lcms_tasks.publish.cog import TILE_SIZE, check_byoc
from tests.chain_helpers import publish_season, run_two_seasons
from tests.unit.test_publish_fixtures import validate_stac_folder


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The conftest-style 2 x 2-tile project (64 px tiles), processed to change_detection for 2023 and 2024."""
    from tests.conftest import base_config, write_aoi

    folder = tmp_path_factory.mktemp("publish-project")
    write_aoi(folder / "aoi.geojson")
    cfg = base_config("aoi.geojson", "data")
    cfg["stages"] = {
        "add_reference": {"sources": [{"type": "synthetic_truth", "tile_fraction": 1.0}]},
        "training": {"drop_rare_classes": True, "min_samples_per_class": 5},
        "prediction": {"model_season": "2023"},  # one model maps both seasons
        "publish": {"change_store": False},
    }
    path = folder / "project.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_two_seasons(path)
    for season in ("2023", "2024"):
        assert len(publish_season(path, season)) == 3
    return path


@pytest.mark.parametrize("season", ["2023", "2024"])
def test_every_published_file_passes_the_byoc_rules(processed: Path, season: str) -> None:
    ctx = RunContext.create(load_config(processed), season=season)
    root = ctx.storage.local_path(ctx.stage_uri("publish"))
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name != "_run")
    assert [p.name for p in folders] == sorted(t.id for t in ctx.tiles())
    files = sorted(root.glob("*/*.tiff"))
    assert len(files) == 3 * len(folders)
    for folder in folders:
        assert sorted(p.name for p in folder.glob("*.tiff")) == sorted(f"{b}.tiff" for b in BAND_NAMES)
    for path in files:
        assert check_byoc(path) == [], path
        with tifffile.TiffFile(path) as tif:  # every level, overviews included, in 1024 px tiles
            assert {(p.aspage().tilewidth, p.aspage().tilelength) for p in tif.pages} == {(TILE_SIZE, TILE_SIZE)}
        with rasterio.open(path) as src:
            assert src.dtypes == ("uint8",) and src.crs.to_epsg() == 32638


def test_change_rasters_hold_the_change_polygons(processed: Path) -> None:
    ctx = RunContext.create(load_config(processed), season="2024")
    total = 0
    for tile in ctx.tiles():
        marker = ctx.storage.read_marker(ctx.tile_uri("publish", tile.id))
        codes = {(c["from"], c["to"]): c["code"] for c in marker["transition_codes"]}
        frame = read_changes(ctx.storage.local_path(ctx.tile_uri("change_detection", tile.id)) / "changes.gpkg")
        with rasterio.open(ctx.storage.local_path(ctx.tile_uri("publish", tile.id)) / "CHANGE.tiff") as src:
            change = src.read(1)
        expected = np.zeros_like(change)
        for geom, a, b in zip(frame.geometry, frame["from_class"], frame["to_class"], strict=True):
            inside = rasterio.features.geometry_mask([geom], change.shape, tile.transform(), invert=True)
            expected[inside] = codes[(int(a), int(b))]
        np.testing.assert_array_equal(change, expected)
        assert marker["n_changes"] == len(frame) and marker["season_before"] == "2023"
        assert marker["model"]["run_id"] == "chain-2023" and marker["run_ids"]["reporting"] == "reporting-2024"
        total += len(frame)
    assert total > 0  # the synthetic source changes some land between seasons


def test_first_season_has_empty_change_rasters(processed: Path) -> None:
    ctx = RunContext.create(load_config(processed), season="2023")
    for tile in ctx.tiles():
        with rasterio.open(ctx.storage.local_path(ctx.tile_uri("publish", tile.id)) / "CHANGE.tiff") as src:
            assert not src.read(1).any()


def test_season_mosaics_and_catalog(processed: Path) -> None:
    ctx = RunContext.create(load_config(processed), season="2024")
    mosaic = ctx.storage.local_path(ctx.run_uri("publish", "mosaic"))
    with rasterio.open(mosaic / "CLASS_32638.vrt") as vrt:
        assert vrt.shape == (128, 128)
        for tile in ctx.tiles():
            with rasterio.open(ctx.storage.local_path(ctx.tile_uri("publish", tile.id)) / "CLASS.tiff") as src:
                np.testing.assert_array_equal(vrt.read(1, window=vrt.window(*tile.bounds)), src.read(1))
    summary = json.loads((ctx.storage.local_path(ctx.run_uri("publish", "summary")) / "summary.json").read_text())
    assert summary["tiles_published_in_season"] == [t.id for t in ctx.tiles()]
    stac = ctx.storage.local_path(ctx.storage.uri("testproj", "stac"))
    assert len(validate_stac_folder(stac)) == 1 + 2 + 2 * 2 * len(ctx.tiles())
