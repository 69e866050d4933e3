"""The STAC catalog of a published 2 x 2-tile project: valid offline, self-contained, season by season, on S3 too."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pystac
import pytest

from lcms_tasks.config import load_config
from lcms_tasks.context import RunContext
from lcms_tasks.publish.stac import StorageStacIO, catalog_uri, stac_name
from lcms_tasks.runner import finalize_stage, run_tiles
from tests.unit.test_publish_fixtures import NOT_VENDORED, published_project, validate_stac_folder

CLASS_COL = "testproj-class-map"
CHANGE_COL = "testproj-change-polygons"
EXT = "https://stac-extensions.github.io/"


def _publish(config: Path, season: str, run_id: str, subset: list[str] | None = None) -> RunContext:
    ctx = RunContext.create(load_config(config), season=season, run_id=run_id, upstream_run_id=f"rep-{season}")
    tiles = ctx.tiles() if subset is None else [t for t in ctx.tiles() if t.id in subset]
    run_tiles("publish", tiles, ctx)
    finalize_stage("publish", RunContext.create(ctx.config, season=season, run_id=run_id, subset=subset))
    return ctx


def _jsons(folder: Path) -> dict[str, dict[str, Any]]:
    return {str(p.relative_to(folder)): json.loads(p.read_text()) for p in sorted(folder.rglob("*.json"))}


@pytest.fixture(scope="module")
def seasons(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The project published for 2023, then for 2024; the catalog as it was after each."""
    folder = tmp_path_factory.mktemp("stac")
    config = published_project(folder, seasons=("2023", "2024"))
    stac = folder / "data" / "testproj" / "stac"
    _publish(config, "2023", "pub-2023")
    after_first = _jsons(stac)
    ctx = _publish(config, "2024", "pub-2024")
    return {"folder": folder, "config": config, "stac": stac, "after_first": after_first, "ctx": ctx}


@pytest.fixture
def private(seasons: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A copy of the two-season project for tests that publish again."""
    shutil.copytree(seasons["folder"], tmp_path / "p")
    return {"config": tmp_path / "p" / "project.yaml", "stac": tmp_path / "p" / "data" / "testproj" / "stac"}


def test_every_object_validates_against_its_schemas(seasons: dict[str, Any]) -> None:
    results = validate_stac_folder(seasons["stac"])
    assert len(results) == 1 + 2 + 2 * 2 * 4  # catalog, two collections, an item per product, tile and season
    item = results[f"{CLASS_COL}/testproj-2024-32638_498_3440/testproj-2024-32638_498_3440.json"]
    assert item[0].endswith("/item-spec/json-schema/item.json")
    assert set(item[1:]) == {
        EXT + "raster/v1.1.0/schema.json",
        EXT + "classification/v2.0.0/schema.json",
        EXT + "projection/v2.0.0/schema.json",
    }
    declared = json.loads(
        (seasons["stac"] / f"{CLASS_COL}/testproj-2024-32638_498_3440/testproj-2024-32638_498_3440.json").read_text()
    )["stac_extensions"]
    assert set(declared) - set(item[1:]) == NOT_VENDORED  # processing v1.2.0: no schema to be had (README)


def test_links_and_assets_are_relative_and_resolve(seasons: dict[str, Any]) -> None:
    stac: Path = seasons["stac"]
    for rel, data in _jsons(stac).items():
        here = (stac / rel).parent
        hrefs = [link["href"] for link in data.get("links", [])] + [a["href"] for a in data.get("assets", {}).values()]
        for href in hrefs:
            assert "://" not in href and not href.startswith("/"), f"{rel}: {href} is not relative"
            assert (here / href).resolve().is_file(), f"{rel}: {href} does not resolve"
    catalog = pystac.Catalog.from_file(str(stac / "catalog.json"))
    items = list(catalog.get_items(recursive=True))
    assert len(items) == 16
    change = next(i for i in items if i.id == "testproj-2024-32638_499_3441-changes")
    href = change.assets["changes"].get_absolute_href()
    assert href is not None and href.endswith("/2024/change_detection/32638_499_3441/changes.gpkg")


def test_items_carry_legend_codes_projection_and_lineage(seasons: dict[str, Any]) -> None:
    ctx: RunContext = seasons["ctx"]
    tile = ctx.tiles()[1]
    item = pystac.Item.from_file(
        str(seasons["stac"] / CLASS_COL / f"testproj-2024-{tile.id}" / f"testproj-2024-{tile.id}.json")
    )
    marker = ctx.storage.read_marker(ctx.tile_uri("publish", tile.id))
    assert item.properties["proj:code"] == "EPSG:32638" and item.properties["proj:bbox"] == list(tile.bounds)
    assert item.properties["proj:shape"] == [64, 64] and item.properties["lcms:season"] == "2024"
    assert item.properties["start_datetime"] == "2024-04-01T00:00:00Z" and item.datetime is None
    assert item.properties["lcms:run_ids"]["publish"] == "pub-2024"
    lineage = item.properties["processing:lineage"]
    assert "model-run-1" in lineage and "pub-2024" in lineage and "up-2024" in lineage
    assert item.properties["processing:software"]["lcms"] == "0.1.0"
    classes = item.assets["CLASS"].extra_fields["classification:classes"]
    legend = ctx.config.legend()
    assert [c["value"] for c in classes] == [0] + [c.id for c in legend]
    assert [c.get("title") for c in classes[1:]] == [c.name for c in legend]
    assert [c["name"] for c in classes[1:]] == [stac_name(c.name, "") for c in legend]
    assert [c["color_hint"] for c in classes[1:]] == [c.color.lstrip("#").upper() for c in legend]
    changes = item.assets["CHANGE"].extra_fields["classification:classes"]
    assert [(c["value"], c["title"]) for c in changes[1:]] == [
        (t["code"], f"{t['from_name']} -> {t['to_name']}") for t in marker["transition_codes"]
    ]
    bands = {name: a.extra_fields["raster:bands"][0] for name, a in item.assets.items()}
    assert bands["CONFIDENCE"] == {
        "nodata": 255,
        "sampling": "area",
        "data_type": "uint8",
        "spatial_resolution": 20.0,
        "unit": "percent",
    }
    assert item.assets["CLASS"].media_type == pystac.MediaType.COG and item.assets["CONFIDENCE"].roles == [
        "data",
        "quality",
    ]


def test_a_second_season_adds_items_and_leaves_the_first(seasons: dict[str, Any]) -> None:
    before, after = seasons["after_first"], _jsons(seasons["stac"])
    items = lambda d: {k for k, v in d.items() if v["type"] == "Feature"}  # noqa: E731
    assert len(items(before)) == 8 and len(items(after)) == 16 and items(before) < items(after)
    for key in items(before):
        assert after[key] == before[key]
    extent = after[f"{CLASS_COL}/collection.json"]["extent"]["temporal"]["interval"][0]
    assert extent == ["2023-04-01T00:00:00Z", "2024-09-30T23:59:59Z"]


def test_republishing_a_season_replaces_its_items(private: dict[str, Any]) -> None:
    stac: Path = private["stac"]
    before = _jsons(stac)
    ctx = _publish(private["config"], "2024", "pub-again")
    after = _jsons(stac)
    assert set(after) == set(before)  # same objects, no duplicates
    for key, data in after.items():
        if data["type"] != "Feature":
            continue
        publish_run = data["properties"]["lcms:run_ids"]["publish"]
        assert publish_run == ("pub-again" if data["properties"]["lcms:season"] == "2024" else "pub-2023")
        if data["properties"]["lcms:season"] == "2023":
            assert data == before[key]
    # A tile of the season no longer published loses its items (and their files) at the next publication.
    gone = ctx.tiles()[0].id
    ctx.storage.delete(ctx.tile_uri("publish", gone))
    _publish(private["config"], "2024", "pub-third", subset=[t.id for t in ctx.tiles()[1:]])
    left = _jsons(stac)
    assert not [k for k in left if f"2024-{gone}" in k] and [k for k in left if f"2023-{gone}" in k]
    assert len([k for k, v in left.items() if v["type"] == "Feature"]) == 14
    assert not (stac / CLASS_COL / f"testproj-2024-{gone}").exists()
    validate_stac_folder(stac)


# -- S3 ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_the_catalog_is_written_and_read_through_s3(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    for var, value in (
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("LCMS_S3_ENDPOINT_URL", s3_endpoint)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket="lcms-stac")
    config = published_project(tmp_path, storage_root="s3://lcms-stac/root", seasons=("2023",))
    ctx = _publish(config, "2023", "pub-s3")
    root = catalog_uri(ctx)
    assert root == "s3://lcms-stac/root/testproj/stac/catalog.json"
    catalog = pystac.Catalog.from_file(root, stac_io=StorageStacIO(ctx.storage))
    items = list(catalog.get_items(recursive=True))
    assert len(items) == 8
    keys = {
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket="lcms-stac")
        for o in page.get("Contents", [])
    }
    for item in items:
        for asset in item.assets.values():
            assert "://" not in asset.href  # stored relative ...
            absolute = asset.get_absolute_href()
            assert absolute is not None and absolute.startswith("s3://lcms-stac/root/testproj/2023/")
            assert absolute.removeprefix("s3://lcms-stac/") in keys  # ... and resolving to the stored object
    local = tmp_path / "downloaded"
    for key in keys:
        if key.startswith("root/testproj/stac/"):
            dest = local / key.removeprefix("root/testproj/stac/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.download_file("lcms-stac", key, str(dest))
    assert len(validate_stac_folder(local)) == 1 + 2 + 8
