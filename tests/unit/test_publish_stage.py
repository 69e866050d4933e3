"""The publish stage on a fabricated 2 x 2-tile project: tile folders, markers, failures, season steps and hooks."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from shapely.geometry import Polygon, box, shape

import lcms_tasks
import lcms_tasks.publish as publish_pkg
from lcms_tasks import eopatch
from lcms_tasks.changes import read_changes, write_changes
from lcms_tasks.cli import main
from lcms_tasks.config import load_config
from lcms_tasks.context import RunContext
from lcms_tasks.errors import ArtefactMissingError, ConfigError, StageError, TileFailureError, UpstreamMissingError
from lcms_tasks.preflight import check_run
from lcms_tasks.publish import BAND_NAMES, PublishedTile
from lcms_tasks.publish.byoc import ByocOptions
from lcms_tasks.publish.cog import CONFIDENCE_NODATA, check_byoc
from lcms_tasks.publish.tiles import published_tiles
from lcms_tasks.runner import finalize_stage, run_tiles
from lcms_tasks.stages import publish
from lcms_tasks.tolerance import TooManyFailedTilesError
from tests.conftest import write_aoi
from tests.unit.test_publish_fixtures import published_project, write_project

#: Keys of a published tile's marker besides those of every marker.
MARKER_KEYS = {
    "epsg",
    "bounds",
    "shape",
    "resolution",
    "transform",
    "block_size",
    "compression",
    "footprint_wgs84",
    "byoc_path",
    "bands",
    "legend",
    "transition_codes",
    "changes_uri",
    "season_before",
    "n_changes",
    "class_pixels",
    "change_pixels",
    "model",
    "run_ids",
    "upstream",
    "software",
    "checks",
    "seconds",
}
COMMON_KEYS = {"stage", "tile", "project", "season", "run_id", "product", "upstream_run_id", "written_at"}


@pytest.fixture(scope="module")
def base_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("publish-base")
    published_project(folder, seasons=("2023", "2024"))
    return folder


@pytest.fixture
def project(base_project: Path, tmp_path: Path) -> Path:
    """A private copy of the fabricated project; returns its config path."""
    folder = tmp_path / "project"
    shutil.copytree(base_project, folder)
    return folder / "project.yaml"


def _ctx(config: Path, season: str = "2024", run_id: str = "pub-1", **kw: Any) -> RunContext:
    return RunContext.create(load_config(config), season=season, run_id=run_id, upstream_run_id="rep-1", **kw)


def test_tile_folder_holds_the_checked_bands_and_a_marker_describing_them(project: Path) -> None:
    ctx = _ctx(project)
    tile = ctx.tiles()[0]
    check_run("publish", ctx)
    uris = publish.run(tile, ctx)
    assert uris == [ctx.tile_uri("publish", tile.id)]
    folder = ctx.storage.local_path(uris[0])
    assert folder == ctx.storage.local_path(ctx.storage.root) / "testproj" / "2024" / "publish" / tile.id
    assert sorted(p.name for p in folder.iterdir()) == [
        "CHANGE.tiff",
        "CLASS.tiff",
        "CONFIDENCE.tiff",
        "_COMPLETE.json",
    ]
    for name in BAND_NAMES:
        assert check_byoc(folder / f"{name}.tiff") == []

    marker = ctx.storage.read_marker(uris[0])
    assert set(marker) == MARKER_KEYS | COMMON_KEYS
    assert marker["byoc_path"] == f"testproj/2024/publish/{tile.id}/(BAND).tiff"
    assert marker["bands"]["CONFIDENCE"] == {
        "file": "CONFIDENCE.tiff",
        "dtype": "uint8",
        "nodata": CONFIDENCE_NODATA,
        "description": marker["bands"]["CONFIDENCE"]["description"],
        "overview_resampling": "AVERAGE",
        "bytes": (folder / "CONFIDENCE.tiff").stat().st_size,
    }
    assert marker["model"]["run_id"] == "model-run-1" and marker["run_ids"]["training"] == "model-run-1"
    assert marker["run_ids"] == {
        "publish": "pub-1",
        "reporting": "rep-1",
        "postprocessing": "up-2024",
        "prediction": "up-2024",
        "features": "feat-1",
        "change_detection": "up-2024",
        "training": "model-run-1",
    }
    assert marker["season_before"] == "2023" and marker["checks"]["byoc"] == "passed"
    footprint = shape(marker["footprint_wgs84"])
    assert footprint.is_valid and footprint.exterior.is_ccw and 46 < footprint.centroid.x < 47

    # The bands hold the map: classes as they are, confidence in percent, the changes as their codes.
    pp, _ = eopatch.load(ctx.storage, ctx.tile_uri("postprocessing", tile.id))
    classes = np.asarray(pp.mask_timeless["CLASS"])[..., 0]
    conf = np.asarray(pp.data_timeless["CONFIDENCE"])[..., 0]
    with rasterio.open(folder / "CLASS.tiff") as src:
        np.testing.assert_array_equal(src.read(1), classes)
    with rasterio.open(folder / "CONFIDENCE.tiff") as src:
        pct = src.read(1)
    assert (pct[classes == 0] == CONFIDENCE_NODATA).all() and pct[0, 5] == CONFIDENCE_NODATA  # NaN confidence
    ok = (classes > 0) & np.isfinite(conf)
    np.testing.assert_array_equal(pct[ok], np.rint(conf[ok] * 100).astype(np.uint8))
    codes = {(c["from"], c["to"]): c["code"] for c in marker["transition_codes"]}
    frame = read_changes(ctx.storage.local_path(marker["changes_uri"]))
    assert len(frame) == marker["n_changes"] > 0
    with rasterio.open(folder / "CHANGE.tiff") as src:
        change = src.read(1)
    for geom, a, b, area in zip(frame.geometry, frame["from_class"], frame["to_class"], frame["area_m2"], strict=True):
        inside = rasterio.features.geometry_mask([geom], change.shape, tile.transform(), invert=True)
        assert (change[inside] == codes[(int(a), int(b))]).all()
        assert inside.sum() * tile.resolution**2 == pytest.approx(area)
    assert int((change > 0).sum()) == sum(marker["change_pixels"].values())


def test_published_tiles_are_read_back_from_the_markers(project: Path) -> None:
    ctx = _ctx(project)
    with pytest.raises(ArtefactMissingError, match="4 of 4 tile"):
        published_tiles(ctx)
    run_tiles("publish", ctx.tiles(), ctx)
    tiles = published_tiles(ctx)
    assert [t.tile_id for t in tiles] == [t.id for t in ctx.tiles()]
    first = tiles[0]
    assert isinstance(first, PublishedTile)
    assert first.epsg == 32638 and first.bounds == ctx.tiles()[0].bounds and first.season == "2024"
    assert list(first.bands) == list(BAND_NAMES) and first.bands["CLASS"].file == "CLASS.tiff"
    assert first.bands["CHANGE"].nodata == 0 and first.bands["CONFIDENCE"].dtype == "uint8"
    assert first.footprint_wgs84["type"] == "Polygon" and first.meta["run_id"] == "pub-1"


def test_a_broken_rule_publishes_nothing_and_names_the_file(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lcms_tasks.publish.cog as cog

    ctx = _ctx(project)
    tile = ctx.tiles()[0]
    real = cog.check_byoc

    def strict(path: Path | str, **kw: Any) -> list[str]:
        found = real(path, **kw)
        return (
            [*found, f"{path}: colormap: the file carries a colour map"] if Path(path).name == "CHANGE.tiff" else found
        )

    monkeypatch.setattr(cog, "check_byoc", strict)
    with pytest.raises(TileFailureError) as info:
        run_tiles("publish", [tile], ctx)
    assert info.value.permanent  # the same data would break the same rule again: no retry
    message = info.value.failures[tile.id]
    assert f"{ctx.tile_uri('publish', tile.id)}/CHANGE.tiff: colormap" in message and "staging" not in message
    assert not ctx.storage.exists(ctx.tile_uri("publish", tile.id))
    stage_dir = ctx.storage.local_path(ctx.stage_uri("publish"))
    assert not [p for p in stage_dir.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_republishing_replaces_the_tile_folder(project: Path) -> None:
    ctx = _ctx(project, run_id="first")
    tile = ctx.tiles()[0]
    publish.run(tile, ctx)
    again = _ctx(project, run_id="second", params={})
    publish.run(tile, again)
    assert again.storage.read_marker(again.tile_uri("publish", tile.id))["run_id"] == "second"


def test_preflight_names_a_missing_upstream(project: Path) -> None:
    ctx = _ctx(project)
    ctx.storage.delete(ctx.tile_uri("change_detection", ctx.tiles()[1].id))
    with pytest.raises(UpstreamMissingError, match=r"change polygons of season 2024 for 1 of 4 tile") as info:
        check_run("publish", ctx)
    assert "lcms run change_detection" in str(info.value)


def test_check_refuses_a_crs_byoc_does_not_accept(tmp_path: Path) -> None:
    write_aoi(tmp_path / "aoi.geojson", epsg=2154, col0=500, row0=5200)
    path = write_project(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["grid"]["crs"] = 2154
    path.write_text(yaml.safe_dump(cfg))
    ctx = RunContext.create(load_config(path), season="2023")
    with pytest.raises(ConfigError, match=r"grid.crs: tiles in EPSG 2154: Sentinel Hub BYOC accepts only"):
        publish.check(ctx)


def test_check_refuses_byoc_on_a_root_sentinel_hub_cannot_read(project: Path) -> None:
    cfg = yaml.safe_load(project.read_text())
    cfg["stages"]["publish"]["byoc"] = {"collection": "lcms-maps"}
    project.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"BYOC registration needs the COGs in S3"):
        publish.check(_ctx(project))


def test_transition_codes_are_the_configured_transitions_in_a_stable_order(tmp_path: Path) -> None:
    stages = {
        "change_detection": {"transitions": [{"from": "grassland", "to": "cropland"}, {"from": "*", "to": "water"}]}
    }
    path = write_project(tmp_path, stages=stages)
    cfg = load_config(path)
    codes = publish.transition_codes(RunContext.create(cfg, season="2024"))
    pairs = [(c.from_id, c.to_id) for c in codes]
    assert pairs == sorted({(3, 1)} | {(k, 4) for k in (1, 2, 3, 5, 6, 7, 8)})
    assert [c.code for c in codes] == list(range(1, len(pairs) + 1))
    assert codes == publish.transition_codes(RunContext.create(cfg, season="2023"))  # the same in every season
    assert codes[0].label == "cropland -> water"


def test_a_change_the_config_does_not_list_fails_by_name(project: Path) -> None:
    ctx = _ctx(project)
    tile = ctx.tiles()[0]
    uri = ctx.tile_uri("change_detection", tile.id)
    frame = read_changes(ctx.storage.local_path(uri) / "changes.gpkg")
    frame.loc[0, "from_class"], frame.loc[0, "to_class"] = 8, 7  # wetland -> shrubland: not relevant
    with ctx.storage.writing_dir(uri, ctx.storage.read_marker(uri)) as folder:
        write_changes(frame, folder / "changes.gpkg")
    with pytest.raises(StageError, match=r"transition\(s\) \[\(8, 7\)\].*run change_detection again"):
        publish.run(tile, ctx)


def test_finalize_needs_every_tile_of_the_run_and_checks_the_folders(project: Path) -> None:
    ctx = _ctx(project)
    run_tiles("publish", ctx.tiles()[:3], ctx)
    # No failed tile tolerated by default on 4 tiles (2 %): nothing season-level is built.
    with pytest.raises(TooManyFailedTilesError, match="1 of 4 tile"):
        finalize_stage("publish", ctx)
    assert not ctx.storage.exists(ctx.run_uri("publish", "mosaic"))
    run_tiles("publish", ctx.tiles()[3:], ctx)
    extra = ctx.storage.local_path(ctx.tile_uri("publish", ctx.tiles()[2].id)) / "EXTRA.tiff"
    extra.write_bytes(b"")
    with pytest.raises(StageError, match=r"file_names: extra \['EXTRA.tiff'\]"):
        finalize_stage("publish", ctx)


def test_finalize_writes_mosaic_catalog_and_summary_and_says_what_it_skipped(project: Path) -> None:
    ctx = _ctx(project)
    run_tiles("publish", ctx.tiles(), ctx)
    uris = finalize_stage("publish", ctx)
    mosaic, catalog, summary_uri = uris
    assert mosaic == ctx.run_uri("publish", "mosaic") and summary_uri == ctx.run_uri("publish", "summary")
    assert catalog == ctx.storage.uri("testproj", "stac", "catalog.json") and ctx.storage.exists(catalog)
    names = set(ctx.storage.list_names(mosaic))
    assert {"CLASS_32638.vrt", "CONFIDENCE_32638.vrt", "CHANGE_32638.vrt", "CLASS.qml", "CHANGE.qml"} <= names
    assert {"CLASS_colormap.txt", "CHANGE_colormap.txt", "_COMPLETE.json"} <= names
    summary = json.loads((ctx.storage.local_path(summary_uri) / "summary.json").read_text())
    assert summary["tiles_published_by_run"] == [t.id for t in ctx.tiles()]
    assert summary["skipped"] == {
        "change_store": "stages.publish.change_store is false",
        "parcel_checks": "no parcel markers for product land_cover this season",
        "byoc": "no stages.publish.byoc section in the config",
    }
    assert (
        summary["stac"]["items_added"] == 8 and summary["byoc_tile_path"] == "testproj/2024/publish/<tile>/(BAND).tiff"
    )
    assert (
        summary["transition_codes"]
        == ctx.storage.read_marker(ctx.tile_uri("publish", ctx.tiles()[0].id))["transition_codes"]
    )


def _install(monkeypatch: pytest.MonkeyPatch, parent: types.ModuleType, name: str, module: types.ModuleType) -> None:
    monkeypatch.setitem(sys.modules, f"{parent.__name__}.{name}", module)
    monkeypatch.setattr(parent, name, module, raising=False)


def test_change_store_is_loaded_when_a_database_is_configured(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = yaml.safe_load(project.read_text())
    cfg["stages"]["publish"]["change_store"] = True
    project.write_text(yaml.safe_dump(cfg))
    calls: list[tuple[str, str]] = []
    fake = types.ModuleType("lcms_tasks.store")
    fake.database_url = lambda config: None  # type: ignore[attr-defined]  # a stand-in module
    _install(monkeypatch, lcms_tasks, "store", fake)
    ctx = _ctx(project)
    run_tiles("publish", ctx.tiles(), ctx)

    def load_season(url: str, c: RunContext) -> dict[str, Any]:
        calls.append((url, c.season))
        return {"changes": 3}

    fake.load_season = load_season  # type: ignore[attr-defined]
    finalize_stage("publish", ctx)
    summary = ctx.storage.read_marker(ctx.run_uri("publish", "summary"))
    assert summary["skipped"]["change_store"].startswith("no database configured") and calls == []
    fake.database_url = lambda config: "postgresql://db/lcms"  # type: ignore[attr-defined]
    finalize_stage("publish", ctx)
    summary = ctx.storage.read_marker(ctx.run_uri("publish", "summary"))
    assert calls == [("postgresql://db/lcms", "2024")]
    assert summary["change_store"] == {"status": "loaded", "changes": 3} and "change_store" not in summary["skipped"]


def test_byoc_registration_gets_the_options_and_the_run_tiles(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, list[str]]] = []
    fake = types.ModuleType("lcms_tasks.publish.byoc")

    def register_season(ctx: RunContext, options: Any, tiles: list[PublishedTile]) -> dict[str, Any]:
        calls.append((options, [t.tile_id for t in tiles]))
        if not options.sensing_times:
            return {"skipped": "BYOC registration skipped: no Sentinel Hub credentials", "tiles_created": []}
        return {"skipped": None, "tiles_created": [t.tile_id for t in tiles]}

    fake.register_season = register_season  # type: ignore[attr-defined]  # a stand-in module
    _install(monkeypatch, publish_pkg, "byoc", fake)
    cfg = yaml.safe_load(project.read_text())
    cfg["stages"]["publish"]["byoc"] = {"collection": "lcms-maps", "bucket": "my-bucket"}
    project.write_text(yaml.safe_dump(cfg))
    ctx = _ctx(project, subset=None)
    sub = [t.id for t in ctx.tiles()[:2]]
    run_tiles("publish", ctx.tiles(), ctx)
    finalize_stage("publish", _ctx(project, subset=sub))
    options, tiles = calls[-1]
    assert isinstance(options, ByocOptions) and options.collection == "lcms-maps" and tiles == sub
    summary = ctx.storage.read_marker(ctx.run_uri("publish", "summary"))
    assert summary["byoc"]["status"] == "skipped" and summary["skipped"]["byoc"].endswith("no Sentinel Hub credentials")
    cfg["stages"]["publish"]["byoc"]["sensing_times"] = {"2024": "2024-06-01"}
    project.write_text(yaml.safe_dump(cfg))
    finalize_stage("publish", _ctx(project, subset=sub))
    summary = ctx.storage.read_marker(ctx.run_uri("publish", "summary"))
    assert summary["byoc"] == {"skipped": None, "status": "registered", "tiles_created": sub}
    assert "byoc" not in summary["skipped"]
    # A subset run refreshes its tiles and keeps the others in the season's mosaic and catalog.
    assert summary["tiles_published_in_season"] == [t.id for t in ctx.tiles()]


def test_cli_runs_the_tiles_then_the_season_step(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "publish", "--config", str(project), "--season", "2023"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["written"]) == 4 and out["finalized"][1].endswith("/testproj/stac/catalog.json")


def test_config_template_documents_the_publish_options() -> None:
    from lcms_tasks.template import config_template

    text = config_template()
    assert "publish:" in text and "compression: DEFLATE" in text and "byoc:" in text


def test_footprint_is_the_tile_square_in_wgs84(project: Path) -> None:
    ctx = _ctx(project)
    tile = ctx.tiles()[0]
    footprint = shape(publish._footprint_wgs84(tile))
    from pyproj import Transformer

    back = Transformer.from_crs(4326, tile.epsg, always_xy=True)
    xs, ys = back.transform(*footprint.exterior.xy)
    rebuilt = Polygon(zip(xs, ys, strict=True))
    assert rebuilt.hausdorff_distance(box(*tile.bounds)) < 0.01  # metres: WGS84 coordinates kept to 1e-8 degree
