"""Imagery COGs of the publish stage: the season composite is the median of valid observations, each date
holds what was acquired, the files are 4-band uint16 COGs, and a tile's folder is complete or absent."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from rio_cogeo.cogeo import cog_validate

from lcms_service.maps_testing import SyntheticProject, make_project, utm_block
from lcms_tasks.bands import S2_BANDS
from lcms_tasks.publish import imagery
from lcms_tasks.publish.imagery import (
    COMPOSITE_FILE,
    IMAGERY_BANDS,
    date_groups,
    median_composite,
    write_season_index,
    write_tile_imagery,
)
from lcms_tasks.stages.publish import _footprint_wgs84

PICKS = [S2_BANDS.index(b) for b in IMAGERY_BANDS]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> SyntheticProject:
    folder = tmp_path_factory.mktemp("maps-imagery")
    return make_project(
        folder, aoi=utm_block(32638, 498, 3440, 2, 1, 1280.0), aoi_crs=32638, seasons=("2024",), features=False
    )


def expected_median(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """np.median of the valid observations per pixel and band, rounded half up; 0 without any."""
    _, h, w, b = values.shape
    out = np.zeros((h, w, b), dtype=np.uint16)
    for r in range(h):
        for c in range(w):
            obs = values[valid[:, r, c], r, c, :]
            if len(obs):
                out[r, c] = np.floor(np.median(obs.astype(np.float64), axis=0) + 0.5).astype(np.uint16)
    return out


# -- the pure functions ------------------------------------------------------------------------------


def test_median_composite_is_the_median_of_the_valid_observations() -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(0, 10000, size=(7, 9, 11, 4), dtype=np.uint16)
    valid = rng.random((7, 9, 11)) < 0.6
    valid[:, 0, 0] = False  # no valid observation: 0
    valid[:, 0, 1] = [True, True, False, False, False, False, False]  # even count: mean of the middle two
    values[:, 0, 1, 0] = [10, 13, 60000, 60000, 60000, 60000, 60000]  # invalid values never count
    got = median_composite(values, valid, chunk_rows=2)
    np.testing.assert_array_equal(got, expected_median(values, valid))
    assert got[0, 0].tolist() == [0, 0, 0, 0] and got[0, 1, 0] == 12  # (10 + 13) / 2 = 11.5 -> 12
    # the (T, H, W, 1) mask form and a memory map give the same
    np.testing.assert_array_equal(median_composite(values, valid[..., None]), got)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 4),
    st.integers(0, 2**32 - 1),
)
def test_median_lies_between_the_valid_extremes(t: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 65536, size=(t, n, n, 2), dtype=np.uint16)
    valid = rng.random((t, n, n)) < 0.5
    got = median_composite(values, valid)
    for r in range(n):
        for c in range(n):
            obs = values[valid[:, r, c], r, c]
            if len(obs) == 0:
                assert not got[r, c].any()
            else:
                assert (obs.min(axis=0) <= got[r, c]).all() and (got[r, c] <= obs.max(axis=0)).all()


def test_median_composite_refuses_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="does not match"):
        median_composite(np.zeros((2, 3, 3, 4), np.uint16), np.zeros((3, 3, 3), bool))
    with pytest.raises(ValueError, match="uint16"):
        median_composite(np.zeros((2, 3, 3, 4), np.float32), np.zeros((2, 3, 3), bool))


def test_acquisitions_of_one_day_make_one_date() -> None:
    stamps = [
        dt.datetime(2024, 4, 8, 10, 30),
        dt.datetime(2024, 4, 1, 8),
        dt.datetime(2024, 4, 8, 9, 0),
        dt.datetime(2024, 4, 15, 8),
    ]
    assert date_groups(stamps) == [("2024-04-01", [1]), ("2024-04-08", [2, 0]), ("2024-04-15", [3])]


# -- the tile folder ---------------------------------------------------------------------------------


def _read(path: Path) -> tuple[np.ndarray, Any]:
    with rasterio.open(path) as src:
        return np.moveaxis(src.read(), 0, -1), src.profile | {
            "descriptions": src.descriptions,
            "tags": src.tags(),
            "nodatavals": src.nodatavals,
        }


def test_composite_cog_is_the_median_of_valid_observations(project: SyntheticProject) -> None:
    ctx = project.context("2024")
    for tile in project.tiles:
        key = ("2024", tile.id)
        folder = ctx.storage.local_path(ctx.tile_uri("imagery", tile.id))
        got, profile = _read(folder / COMPOSITE_FILE)
        values = project.bands[key][..., PICKS]
        valid = project.valid[key]
        expected = expected_median(values, valid)
        expected = np.where(valid.any(axis=0)[..., None], np.maximum(expected, 1), 0)
        np.testing.assert_array_equal(got, expected)
        assert profile["dtype"] == "uint16" and profile["count"] == 4 and profile["nodata"] == 0
        assert profile["descriptions"] == IMAGERY_BANDS
        assert profile["crs"].to_epsg() == tile.epsg and profile["transform"] == tile.transform()
        assert profile["tags"]["OVERVIEW_RESAMPLING"] == "AVERAGE"
        assert cog_validate(str(folder / COMPOSITE_FILE), quiet=True)[0]


def test_each_date_holds_what_was_acquired_that_day(project: SyntheticProject) -> None:
    ctx = project.context("2024")
    stamps = project.timestamps["2024"]
    tile = project.tiles[0]
    key = ("2024", tile.id)
    uri = ctx.tile_uri("imagery", tile.id)
    marker = ctx.storage.read_marker(uri)
    groups = date_groups(stamps)
    # the last acquisition has no data over the tile: it is not a date of its imagery
    assert [d["date"] for d in marker["dates"]] == [day for day, _ in groups[:-1]]
    assert marker["bands"] == list(IMAGERY_BANDS) and marker["nodata"] == 0 and marker["dtype"] == "uint16"
    assert marker["footprint_wgs84"] == _footprint_wgs84(tile) and marker["epsg"] == tile.epsg
    folder = ctx.storage.local_path(uri)
    for (day, indices), entry in zip(groups, marker["dates"], strict=False):
        got, profile = _read(folder / entry["file"])
        assert entry["file"] == f"dates/{day}.tiff" and entry["acquisitions"] == len(indices)
        expected = np.zeros(got.shape, dtype=np.uint16)
        covered = np.zeros(got.shape[:2], dtype=bool)
        for i in indices:  # acquisitions of one day: the first one with data wins
            fill = project.data[key][i] & ~covered
            expected[fill] = project.bands[key][i][..., PICKS][fill]
            covered |= project.data[key][i]
        expected = np.where(covered[..., None], np.maximum(expected, 1), 0)
        np.testing.assert_array_equal(got, expected)
        assert profile["tags"]["DATE"] == day
        assert entry["data_fraction"] == round(float(covered.mean()), 4)
    assert sorted(p.name for p in folder.iterdir()) == ["_COMPLETE.json", "composite.tiff", "dates"]
    assert len(groups[1][1]) == 2  # the fixture has two acquisitions on one day


def test_a_failed_write_leaves_the_previous_folder_or_nothing(
    project: SyntheticProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = project.context("2024")
    tile = project.tiles[1]
    uri = ctx.tile_uri("imagery", tile.id)
    folder = ctx.storage.local_path(uri)
    before = json.loads((folder / "_COMPLETE.json").read_text())
    calls = {"n": 0}
    real = imagery.write_imagery_cog

    def failing(*args: Any, **kwargs: Any) -> Path:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(imagery, "write_imagery_cog", failing)
    with pytest.raises(OSError, match="disk full"):
        write_tile_imagery(tile, ctx, footprint_wgs84=_footprint_wgs84(tile))
    assert json.loads((folder / "_COMPLETE.json").read_text()) == before  # the old folder, whole
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    # a tile never written before stays absent
    ctx.storage.delete(uri)
    calls["n"] = 0
    with pytest.raises(OSError, match="disk full"):
        write_tile_imagery(tile, ctx, footprint_wgs84=_footprint_wgs84(tile))
    assert not folder.exists() and not ctx.storage.is_complete(uri)
    monkeypatch.setattr(imagery, "write_imagery_cog", real)
    assert write_tile_imagery(tile, ctx, footprint_wgs84=_footprint_wgs84(tile)).uri == uri


def test_no_imagery_without_a_download_or_its_bands(project: SyntheticProject) -> None:
    ctx = project.context("2024")
    tile = project.tiles[0]
    download = ctx.tile_uri("download", tile.id)
    marker_path = ctx.storage.local_path(download) / "_COMPLETE.json"
    original = marker_path.read_text()
    try:
        marker = json.loads(original)
        marker["band_names"] = [b for b in marker["band_names"] if b != "B08"]
        marker_path.write_text(json.dumps(marker))
        result = write_tile_imagery(tile, ctx, footprint_wgs84=_footprint_wgs84(tile))
        assert result.uri is None and "no band(s) B08" in str(result.skipped)
    finally:
        marker_path.write_text(original)
    other = project.context("2024")
    other.season = "2023"  # a season without downloads
    result = write_tile_imagery(tile, other, footprint_wgs84=_footprint_wgs84(tile))
    assert result.uri is None and "no download" in str(result.skipped)
    assert ctx.storage.is_complete(ctx.tile_uri("imagery", tile.id))  # the 2024 folder is untouched


def test_season_index_lists_dates_and_tiles_without_imagery(project: SyntheticProject) -> None:
    ctx = project.context("2024")
    result = write_season_index(ctx, [*(t.id for t in project.tiles), "32638_1_1"])
    assert result["tiles"] == len(project.tiles) and result["tiles_without_imagery"] == ["32638_1_1"]
    index = json.loads((ctx.storage.local_path(result["uri"]) / "dates.json").read_text())
    days = [day for day, _ in date_groups(project.timestamps["2024"])][:-1]
    assert [d["date"] for d in index["dates"]] == days
    assert all(d["tiles"] == sorted(t.id for t in project.tiles) for d in index["dates"])
