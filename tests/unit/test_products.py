"""Several map products per run: land cover everywhere, crop type inside its cropland.

The config's ``products`` validate (names, masks, per-product options merged over ``stages``), each
product keeps its artefacts apart, and a run of the product stages maps both: the crop type map is
no data wherever the land cover map is not cropland, and each product has its own model and report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from lcms_tasks import eopatch
from lcms_tasks.config import load_config, parse_config
from lcms_tasks.context import RunContext
from lcms_tasks.errors import ConfigError
from lcms_tasks.runner import finalize_stage, run_stage, run_tiles

CROP_PRODUCT: dict[str, Any] = {
    "legend": "crop_type",
    "mask": {"product": "land_cover", "classes": ["cropland"]},
    # Three tiles of four get crop declarations; the others judge the crop map against the generator's truth.
    "stages": {
        "add_reference": {"sources": [{"type": "synthetic_truth", "tile_fraction": 0.75, "parcel_fraction": 1.0}]}
    },
}


def _with_products(config_path: Path, products: dict[str, Any], **extra: Any) -> dict[str, Any]:
    cfg = yaml.safe_load(config_path.read_text())
    cfg["products"] = products
    cfg.update(extra)
    return dict(cfg)


def _parse(cfg: dict[str, Any], base: Path) -> Any:
    return parse_config(cfg, path="p.yaml", base_dir=base)


def test_products_default_to_the_classification_legend(config_path: Path) -> None:
    cfg = load_config(config_path)
    assert cfg.products is None
    assert cfg.product_names() == ["land_cover"] and cfg.primary_product == "land_cover"
    assert cfg.for_product("land_cover") is cfg
    with pytest.raises(ConfigError, match="unknown product 'crop_type'; this project has land_cover"):
        cfg.product("crop_type")


def test_product_options_merge_over_the_top_level_stages(config_path: Path) -> None:
    raw = _with_products(
        config_path,
        {"land_cover": {"legend": "land_cover"}, "crop_type": {**CROP_PRODUCT, "stages": {"training": {"seed": 11}}}},
        stages={"training": {"n_estimators": 50, "seed": 3}, "sampling": {"seed": 5}},
    )
    cfg = _parse(raw, config_path.parent)
    assert cfg.classification.legend == "land_cover"  # the primary product's legend
    crop = cfg.for_product("crop_type")
    assert crop.classification.legend == "crop_type"
    assert [c.name for c in crop.legend()][:2] == ["winter cereal", "maize"]
    # Merged key by key: the product's seed, the top level's n_estimators and sampling.
    assert crop.stages.training.seed == 11 and crop.stages.training.n_estimators == 50
    assert crop.stages.sampling.seed == 5
    assert cfg.for_product("land_cover").stages.training.seed == 3


@pytest.mark.parametrize(
    ("products", "extra", "problem"),
    [
        (
            {
                "land_cover": {"legend": "land_cover"},
                "crop_type": {**CROP_PRODUCT, "mask": {"product": "crops", "classes": ["cropland"]}},
            },
            {},
            "products.crop_type.mask.product 'crops' is not an earlier product (earlier: land_cover)",
        ),
        (
            {"crop_type": {**CROP_PRODUCT}, "land_cover": {"legend": "land_cover"}},
            {},
            "mask.product 'land_cover' is not an earlier product (earlier: none)",
        ),
        (
            {
                "land_cover": {"legend": "land_cover"},
                "crop_type": {**CROP_PRODUCT, "mask": {"product": "land_cover", "classes": ["arable"]}},
            },
            {},
            "products.crop_type.mask.classes: 'arable' not in the land_cover legend",
        ),
        (
            {"land_cover": {"legend": "land_cover", "stages": {"training": {"seed": 1}}}},
            {},
            "the primary product's options are the top-level `stages`",
        ),
        (
            {"land_cover": {"legend": "land_cover"}},
            {"classification": {"legend": "crop_type"}},
            "classification.legend is 'crop_type' but the first (primary) product 'land_cover' maps 'land_cover'",
        ),
        (
            {
                "land_cover": {"legend": "land_cover"},
                "crop_type": {**CROP_PRODUCT, "stages": {"training": {"n_trees": 5}}},
            },
            {},
            "products.crop_type.stages (merged over `stages`): training.n_trees: unknown key",
        ),
        (
            {"Crop Type": {"legend": "crop_type"}},
            {},
            "a product name is lower-case letters",
        ),
    ],
)
def test_bad_products_name_the_field(
    config_path: Path, products: dict[str, Any], extra: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _parse(_with_products(config_path, products, **extra), config_path.parent)
    assert problem in str(err.value) and "p.yaml" in str(err.value)


def test_each_product_keeps_its_artefacts_apart(config_path: Path) -> None:
    raw = _with_products(config_path, {"land_cover": {"legend": "land_cover"}, "crop_type": CROP_PRODUCT})
    ctx = RunContext.create(_parse(raw, config_path.parent), season="2023")
    land, crop = ctx.contexts_for("training")
    assert (land.product_name, crop.product_name) == ("land_cover", "crop_type")
    assert land.run_uri("training", "model").endswith("/testproj/2023/training/_run/model")
    assert crop.run_uri("training", "model").endswith("/testproj/2023/products/crop_type/training/_run/model")
    # Imagery, features and change detection are shared: one folder whatever the product.
    assert crop.tile_uri("features", "T") == land.tile_uri("features", "T")
    assert crop.tile_uri("change_detection", "T") == land.tile_uri("change_detection", "T")
    assert ctx.contexts_for("features") == [ctx]
    # From one product's context, another's artefacts and contexts are reachable.
    assert crop.tile_uri("postprocessing", "T", product="land_cover") == land.tile_uri("postprocessing", "T")
    assert crop.for_product("land_cover").config.classification.legend == "land_cover"


@pytest.fixture(scope="module")
def two_product_run(tmp_path_factory: pytest.TempPathFactory) -> RunContext:
    """The 2 x 2-tile project with both products run from download to reporting (season 2023)."""
    from tests.conftest import base_config, write_aoi

    folder = tmp_path_factory.mktemp("products")
    write_aoi(folder / "aoi.geojson")
    config_path = folder / "project.yaml"
    config_path.write_text(yaml.safe_dump(base_config("aoi.geojson", "data"), sort_keys=False))
    raw = _with_products(config_path, {"land_cover": {"legend": "land_cover"}, "crop_type": CROP_PRODUCT})
    raw["stages"] = {
        "add_reference": {"sources": [{"type": "synthetic_truth", "tile_fraction": 1.0}]},
        "reporting": {"pdf": "false"},
        "publish": {"change_store": False},
    }
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    ctx = RunContext.create(load_config(config_path), season="2023", run_id="products", config_path=str(config_path))
    for stage in ("download", "features", "add_reference", "sampling"):
        run_tiles(stage, ctx.tiles(), ctx)
    run_stage("merge_features", ctx)
    run_stage("training", ctx)
    for stage in ("prediction", "postprocessing", "change_detection"):
        run_tiles(stage, ctx.tiles(), ctx)
    run_stage("reporting", ctx)
    run_tiles("publish", ctx.tiles(), ctx)
    finalize_stage("publish", ctx)
    return ctx


def test_crop_type_is_mapped_inside_cropland_only(two_product_run: RunContext) -> None:
    ctx = two_product_run
    land, crop = ctx.contexts_for("postprocessing")
    crop_ids = {c.id for c in crop.config.legend()}
    mapped_crop = 0
    for tile in ctx.tiles():
        lc, _ = eopatch.load(ctx.storage, land.tile_uri("postprocessing", tile.id), features=["mask_timeless/CLASS"])
        ct, meta = eopatch.load(ctx.storage, crop.tile_uri("postprocessing", tile.id), features=["mask_timeless/CLASS"])
        lc_map = np.asarray(lc.mask_timeless["CLASS"])[..., 0]
        ct_map = np.asarray(ct.mask_timeless["CLASS"])[..., 0]
        assert not ct_map[lc_map != 1].any(), f"{tile.id}: crop type outside cropland"
        assert set(np.unique(ct_map[lc_map == 1]).tolist()) <= crop_ids  # every cropland pixel gets a crop
        mapped_crop += int((ct_map > 0).sum())
        step = meta["steps"][-1]
        assert step["step"] == "product_mask" and step["classes"] == ["cropland"] and step["class_ids"] == [1]
        assert meta["product"] == "crop_type"
    assert mapped_crop > 0


def test_each_product_has_its_own_model_and_report(two_product_run: RunContext) -> None:
    ctx = two_product_run
    land, crop = ctx.contexts_for("reporting")
    land_model = ctx.storage.read_marker(land.run_uri("training", "model"))
    crop_model = ctx.storage.read_marker(crop.run_uri("training", "model"))
    assert land_model["legend_name"] == "land_cover" and crop_model["legend_name"] == "crop_type"
    assert crop_model["product"] == "crop_type"
    reports = {}
    for pctx in (land, crop):
        with ctx.storage.reading_dir(pctx.run_uri("reporting", "report")) as folder:
            reports[pctx.product_name] = json.loads((Path(folder) / "report.json").read_text())
    crop_names = {row["name"] for row in reports["crop_type"]["total"]["class_areas"] if row["id"]}
    assert "maize" in crop_names and "forest" not in crop_names
    # Crop type is judged against the generator's crop truth; change detection stays on land cover.
    assert reports["crop_type"]["evaluation"]["overall_accuracy"] is not None
    assert reports["crop_type"]["total"]["changes"]["n_polygons"] == 0
    assert "change_detection" not in json.dumps(reports["crop_type"]["missing_inputs"])
    cropland = next(r for r in reports["land_cover"]["total"]["class_areas"] if r["name"] == "cropland")
    crop_total = sum(r["area_km2"] for r in reports["crop_type"]["total"]["class_areas"] if r["name"] in crop_names)
    assert crop_total == pytest.approx(cropland["area_km2"], rel=1e-6)


def test_a_masked_product_needs_its_mask_product_first(two_product_run: RunContext) -> None:
    from lcms_tasks.errors import UpstreamMissingError
    from lcms_tasks.stages import postprocessing

    ctx = two_product_run
    tile = ctx.tiles()[0]
    land = ctx.for_product("land_cover")
    ctx.storage.delete(land.tile_uri("postprocessing", tile.id))
    crop = ctx.for_product("crop_type")
    with pytest.raises(
        UpstreamMissingError, match="is mapped inside 'land_cover' classes cropland, but the land_cover map"
    ):
        postprocessing.run(tile, crop)
    # Through the runner both products run again, land cover first: the tile is whole again.
    run_tiles("postprocessing", [tile], ctx)
    assert ctx.storage.is_complete(land.tile_uri("postprocessing", tile.id))


def test_each_product_is_published_in_its_own_folders_and_collection(two_product_run: RunContext) -> None:
    from lcms_tasks.publish.stac import catalog_uri
    from tests.unit.test_publish_fixtures import validate_stac_folder

    ctx = two_product_run
    land, crop = ctx.contexts_for("publish")
    for tile in ctx.tiles():
        land_files = set(ctx.storage.list_names(land.tile_uri("publish", tile.id)))
        crop_files = set(ctx.storage.list_names(crop.tile_uri("publish", tile.id)))
        assert {"CLASS.tiff", "CONFIDENCE.tiff", "CHANGE.tiff"} <= land_files
        assert {"CLASS.tiff", "CONFIDENCE.tiff"} <= crop_files and "CHANGE.tiff" not in crop_files
        marker = ctx.storage.read_marker(crop.tile_uri("publish", tile.id))
        assert marker["byoc_path"] == f"testproj/2023/products/crop_type/publish/{tile.id}/(BAND).tiff"
        assert [c["name"] for c in marker["legend"]][:2] == ["winter cereal", "maize"]
        assert marker["n_changes"] == 0 and marker["transition_codes"] == []
    summary = json.loads(
        ctx.storage.local_path(crop.run_uri("publish", "summary")).joinpath("summary.json").read_text()
    )
    assert summary["product"] == "crop_type" and set(summary["skipped"]) >= {"change_store", "imagery"}
    assert sorted(ctx.storage.list_names(crop.run_uri("publish", "mosaic"))).count("CHANGE.qml") == 0

    import pystac

    catalog = pystac.Catalog.from_file(ctx.storage.local_path(catalog_uri(ctx)).as_posix())
    ids = {c.id for c in catalog.get_children()}
    assert ids == {"testproj-class-map", "testproj-change-polygons", "testproj-crop-type-map"}
    crop_col = catalog.get_child("testproj-crop-type-map")
    items = list(crop_col.get_items())
    assert len(items) == len(ctx.tiles())
    for item in items:
        assert item.id.startswith("testproj-crop-type-2023-") and set(item.assets) == {"CLASS", "CONFIDENCE"}
        assert item.properties["lcms:product"] == "crop_type"
        classes = item.assets["CLASS"].extra_fields["classification:classes"]
        assert "maize" in {c["name"] for c in classes}
    # Every catalog file against the STAC core and extension schemas (stored copies, no network).
    validated = validate_stac_folder(ctx.storage.local_path(catalog_uri(ctx)).parent)
    assert sum(1 for name in validated if name.startswith("testproj-crop-type-map/")) == 1 + len(ctx.tiles())
    land_item = next(iter(catalog.get_child("testproj-class-map").get_items()))
    assert set(land_item.assets) == {"CLASS", "CONFIDENCE", "CHANGE"}


def test_the_viewer_api_serves_each_product(two_product_run: RunContext) -> None:
    from fastapi.testclient import TestClient
    from pyproj import Transformer

    from lcms_service.tiles import hex_rgba
    from tests.unit.test_maps_api import assert_colours, decode, sample, tile_across, viewer_app

    ctx = two_product_run
    client = TestClient(viewer_app(Path(ctx.config_path or "")))
    project = client.get("/api/projects").json()[0]
    products = {p["id"]: p for p in project["products"]}
    assert list(products) == ["land_cover", "crop_type"]
    assert products["land_cover"]["primary"] and not products["crop_type"]["primary"]
    assert products["crop_type"]["bands"] == ["CLASS", "CONFIDENCE"]
    assert products["crop_type"]["published_seasons"] == ["2023"]
    assert [c["name"] for c in products["crop_type"]["legend"]][:2] == ["winter cereal", "maize"]

    crop = ctx.for_product("crop_type")
    arrays = {}
    for tile in ctx.tiles():
        patch, _ = eopatch.load(ctx.storage, crop.tile_uri("postprocessing", tile.id), features=["mask_timeless/CLASS"])
        arrays[tile.id] = np.asarray(patch.mask_timeless["CLASS"])[..., 0]
    t = tile_across(ctx.tiles(), 15)
    response = client.get(f"/api/maps/2023/CLASS/tiles/{t.z}/{t.x}/{t.y}.png", params={"product": "crop_type"})
    assert response.status_code == 200, response.text
    values, found, _ = sample(ctx.tiles(), arrays, 0, t.z, t.x, t.y)
    assert found.any()
    assert_colours(decode(response.content), values, found, {c.id: hex_rgba(c.color) for c in crop.config.legend()})

    no_change = client.get(f"/api/maps/2023/CHANGE/tiles/{t.z}/{t.x}/{t.y}.png", params={"product": "crop_type"})
    assert no_change.status_code == 404 and "has no CHANGE band" in no_change.json()["detail"]
    unknown = client.get(f"/api/maps/2023/CLASS/tiles/{t.z}/{t.x}/{t.y}.png", params={"product": "rice"})
    assert unknown.status_code == 404 and "unknown product 'rice'" in unknown.json()["detail"]

    tile = ctx.tiles()[0]
    rows, cols = np.nonzero(arrays[tile.id])
    row, col = int(rows[0]), int(cols[0])
    min_x, _, _, max_y = tile.bounds
    lon, lat = Transformer.from_crs(tile.epsg, 4326, always_xy=True).transform(
        min_x + (col + 0.5) * tile.resolution, max_y - (row + 0.5) * tile.resolution
    )
    body = client.get("/api/pixel", params={"lon": lon, "lat": lat, "seasons": "2023", "product": "crop_type"}).json()
    names = {c.id: c.name for c in crop.config.legend()}
    assert body["product"] == "crop_type"
    assert body["seasons"]["2023"]["class"] == int(arrays[tile.id][row, col])
    assert body["seasons"]["2023"]["class_name"] == names[int(arrays[tile.id][row, col])]
