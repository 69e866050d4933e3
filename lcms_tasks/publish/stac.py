"""The project's static STAC catalog, written with pystac through :class:`~lcms_tasks.storage.Storage`.

Layout (under the storage root; pystac's best-practices layout, every link and asset href relative,
so the catalog is self-contained: it reads the same on ``file://``, on ``s3://`` and from a copy)::

    <project>/stac/catalog.json                                     root catalog (id: <project>)
    <project>/stac/<project>-class-map/collection.json              the class map product
    <project>/stac/<project>-class-map/<item>/<item>.json           item <project>-<season>-<tile>
    <project>/stac/<project>-change-polygons/collection.json        the change polygon product
    <project>/stac/<project>-change-polygons/<item>/<item>.json     item <project>-<season>-<tile>-changes

A class map item has the tile's three COGs as assets (``CLASS``, ``CONFIDENCE``, ``CHANGE``) and a
change polygon item the tile's GeoPackage (``changes``). Items carry the ``proj`` (code, bbox,
shape, transform), ``raster`` (data type, no-data, resolution per asset), ``classification``
(legend values, names, titles and colour hints for CLASS; transition codes for CHANGE) and
``processing`` (lineage with the run ids and the model's run id, software versions) extensions,
and the LCMS fields ``lcms:project``, ``lcms:season``, ``lcms:tile``, ``lcms:run_ids``.

:func:`publish_season` updates the catalog in place: a later season adds its items; publishing a
season again replaces that season's items with the tiles now stored for it (items of tiles no longer
published are removed, files included); other seasons are left as they are. Two seasons must not be
published at the same moment (the catalog is read, changed and written back whole).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pystac
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.processing import ProcessingExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension, Sampling

from lcms_tasks.publish import BAND_NAMES, PublishedTile

if TYPE_CHECKING:
    from lcms_tasks.context import RunContext
    from lcms_tasks.storage import Storage

log = logging.getLogger(__name__)

GPKG_MEDIA_TYPE = "application/geopackage+sqlite3"
#: Asset roles of the published bands.
BAND_ROLES: dict[str, list[str]] = {
    "CLASS": ["data"],
    "CONFIDENCE": ["data", "quality"],
    "CHANGE": ["data"],
}
_NAME_OK = re.compile(r"[^0-9A-Za-z_-]+")


class StorageStacIO(pystac.StacIO):
    """pystac reads and writes through the project's storage (local disk or S3, atomic writes)."""

    def __init__(self, storage: Storage) -> None:
        super().__init__()
        self.storage = storage

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        return self.storage.read_bytes(str(source)).decode("utf-8")

    def write_text(self, dest: Any, txt: str, *args: Any, **kwargs: Any) -> None:
        self.storage.write_bytes(str(dest), txt.encode("utf-8"))


def stac_root_uri(ctx: RunContext) -> str:
    """Folder of the project's catalog: ``<root>/<project>/stac``."""
    return ctx.storage.uri(ctx.config.project, "stac")


def catalog_uri(ctx: RunContext) -> str:
    """The root catalog: ``<root>/<project>/stac/catalog.json``."""
    return f"{stac_root_uri(ctx)}/catalog.json"


def collection_ids(project: str) -> tuple[str, str]:
    """Ids of the primary product's (class map, change polygons) collections."""
    return f"{project}-class-map", f"{project}-change-polygons"


def product_collection_id(project: str, product: str) -> str:
    """Id of the map collection of a product other than the primary one (e.g. ``demo-crop-type-map``)."""
    return f"{project}-{product.replace('_', '-')}-map"


def item_id(project: str, season: str, tile_id: str, product: str | None = None) -> str:
    """Id of the class map item of a tile and season (the change polygon item adds ``-changes``); a product
    other than the primary one puts its name after the project."""
    middle = f"-{product.replace('_', '-')}" if product else ""
    return f"{project}{middle}-{season}-{tile_id}"


def stac_name(text: str, fallback: str) -> str:
    """``text`` as a classification class name (letters, digits, ``-`` and ``_`` only)."""
    return _NAME_OK.sub("_", text).strip("_") or fallback


def _season_range(ctx: RunContext, season: str) -> tuple[dt.datetime, dt.datetime]:
    s = ctx.config.season(season)
    start = dt.datetime(s.start.year, s.start.month, s.start.day, tzinfo=dt.UTC)
    end = dt.datetime(s.end.year, s.end.month, s.end.day, 23, 59, 59, tzinfo=dt.UTC)
    return start, end


def _bbox(geometry: Mapping[str, Any]) -> list[float]:
    from shapely.geometry import shape

    return [float(v) for v in shape(geometry).bounds]


def lineage(tile: PublishedTile) -> str:
    """The processing lineage of a published tile, naming every run it comes from."""
    runs: Mapping[str, Any] = tile.meta.get("run_ids", {})
    model = tile.meta.get("model", {})
    parts = [
        f"Sentinel-2 L2A time series of season {tile.season} ({runs.get('features') or 'unknown'} features run)",
        f"classified by the gradient-boosted model of training run {model.get('run_id') or 'unknown'}"
        + (f" (season {model['season']})" if model.get("season") else ""),
        f"in prediction run {runs.get('prediction') or 'unknown'}",
        f"post-processed in run {runs.get('postprocessing') or 'unknown'}",
        f"changes since season {tile.meta.get('season_before') or 'none'} from change_detection run "
        f"{runs.get('change_detection') or 'unknown'}",
        f"published as COGs in run {runs.get('publish') or 'unknown'}",
    ]
    return "; ".join(parts) + "."


def _common(item: pystac.Item, tile: PublishedTile, project: str) -> None:

    item.properties["lcms:project"] = project
    item.properties["lcms:season"] = tile.season
    item.properties["lcms:tile"] = tile.tile_id
    item.properties["lcms:run_ids"] = dict(tile.meta.get("run_ids", {}))
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    shape = tile.meta.get("shape")
    transform = tile.meta.get("transform")
    proj.apply(
        code=f"EPSG:{tile.epsg}",
        bbox=list(tile.bounds),
        shape=[int(v) for v in shape] if shape else None,
        transform=[float(v) for v in transform] if transform else None,
    )
    processing = ProcessingExtension.ext(item, add_if_missing=True)
    processing.lineage = lineage(tile)
    processing.software = {str(k): str(v) for k, v in tile.meta.get("software", {}).items()}
    version = tile.meta.get("software", {}).get("lcms")
    if version:
        processing.version = str(version)
    written = tile.meta.get("written_at")
    if written:
        processing.processing_datetime = dt.datetime.fromisoformat(str(written))


def _classes(tile: PublishedTile) -> list[Classification]:

    out = [Classification.create(value=0, name="no_data", title="no data", description="no data", nodata=True)]
    for c in tile.meta.get("legend", []):
        out.append(
            Classification.create(
                value=int(c["id"]),
                name=stac_name(str(c["name"]), f"class_{c['id']}"),
                title=str(c["name"]),
                description=str(c["name"]),
                color_hint=str(c["color"]).lstrip("#").upper(),
            )
        )
    return out


def _transitions(tile: PublishedTile) -> list[Classification]:

    colors = {int(c["id"]): str(c["color"]) for c in tile.meta.get("legend", [])}
    out = [Classification.create(value=0, name="no_change", title="no change", description="no change", nodata=True)]
    for t in tile.meta.get("transition_codes", []):
        label = f"{t['from_name']} -> {t['to_name']}"
        out.append(
            Classification.create(
                value=int(t["code"]),
                name=stac_name(f"{t['from_name']}-to-{t['to_name']}", f"transition_{t['code']}"),
                title=label,
                description=f"changed from class {t['from']} ({t['from_name']}) to class {t['to']} ({t['to_name']})",
                color_hint=colors.get(int(t["to"]), "#FF00FF").lstrip("#").upper(),
            )
        )
    return out


def class_map_item(ctx: RunContext, tile: PublishedTile) -> pystac.Item:
    """The class map item of a published tile: its three COGs with raster and classification metadata."""

    start, end = _season_range(ctx, tile.season)
    product = None if ctx.is_primary_product else ctx.product_name
    what = "class map" if product is None else f"{product.replace('_', ' ')} map"
    item = pystac.Item(
        id=item_id(ctx.config.project, tile.season, tile.tile_id, product),
        geometry=dict(tile.footprint_wgs84),
        bbox=_bbox(tile.footprint_wgs84),
        datetime=None,
        start_datetime=start,
        end_datetime=end,
        properties={"title": f"{ctx.config.project} {what}, season {tile.season}, tile {tile.tile_id}"},
    )
    item.properties["lcms:product"] = ctx.product_name
    resolution = tile.meta.get("resolution")
    for name in (n for n in BAND_NAMES if n in tile.bands):
        band = tile.bands[name]
        asset = pystac.Asset(
            href=f"{tile.uri}/{band.file}",
            media_type=pystac.MediaType.COG,
            roles=BAND_ROLES.get(name, ["data"]),
            title=name,
            description=band.description,
        )
        item.add_asset(name, asset)
        raster_band = RasterBand.create(
            nodata=band.nodata,
            data_type=DataType(band.dtype),
            spatial_resolution=float(resolution) if resolution else None,
            sampling=Sampling.AREA,
            unit="percent" if name == "CONFIDENCE" else None,
        )
        RasterExtension.ext(asset, add_if_missing=True).apply(bands=[raster_band])
        if name == "CLASS":
            ClassificationExtension.ext(asset, add_if_missing=True).apply(classes=_classes(tile))
        elif name == "CHANGE":
            ClassificationExtension.ext(asset, add_if_missing=True).apply(classes=_transitions(tile))
    _common(item, tile, ctx.config.project)
    return item


def changes_item(ctx: RunContext, tile: PublishedTile) -> pystac.Item | None:
    """The change polygon item of a published tile (its GeoPackage), None when the marker names none."""

    href = tile.meta.get("changes_uri")
    if not href:
        return None
    start, end = _season_range(ctx, tile.season)
    item = pystac.Item(
        id=item_id(ctx.config.project, tile.season, tile.tile_id) + "-changes",
        geometry=dict(tile.footprint_wgs84),
        bbox=_bbox(tile.footprint_wgs84),
        datetime=None,
        start_datetime=start,
        end_datetime=end,
        properties={
            "title": f"{ctx.config.project} change polygons, season {tile.season}, tile {tile.tile_id}",
            "lcms:season_before": tile.meta.get("season_before"),
            "lcms:n_changes": int(tile.meta.get("n_changes", 0)),
        },
    )
    item.add_asset(
        "changes",
        pystac.Asset(
            href=str(href),
            media_type=GPKG_MEDIA_TYPE,
            roles=["data"],
            title="change polygons",
            description="relevant land cover changes since the before season (layer 'changes', tile CRS)",
        ),
    )
    _common(item, tile, ctx.config.project)
    return item


def _collection(catalog: pystac.Catalog, cid: str, title: str, description: str, license: str) -> pystac.Collection:

    existing = catalog.get_child(cid)
    if isinstance(existing, pystac.Collection):
        return existing
    far_past = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    collection = pystac.Collection(
        id=cid,
        title=title,
        description=description,
        extent=pystac.Extent(
            pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]), pystac.TemporalExtent([[far_past, None]])
        ),
        license=license,
        keywords=["land cover", "change detection", "Sentinel-2", "LCMS"],
    )
    catalog.add_child(collection)
    return collection


def _item_assets_class_map(collection: pystac.Collection, bands: Sequence[str] = BAND_NAMES) -> None:

    collection.item_assets = {
        name: pystac.ItemAssetDefinition.create(
            title=name, description=None, media_type=pystac.MediaType.COG, roles=BAND_ROLES.get(name, ["data"])
        )
        for name in bands
    }


def _replace_season_items(
    collection: pystac.Collection, season: str, items: Sequence[pystac.Item]
) -> tuple[list[pystac.Item], list[pystac.Item]]:
    """Remove the collection's items of ``season`` and add ``items``; (removed, added)."""
    removed = [it for it in collection.get_items() if it.properties.get("lcms:season") == season]
    for it in removed:
        collection.remove_item(it.id)
    for it in items:
        collection.add_item(it)
    return removed, list(items)


def publish_season(
    ctx: RunContext, tiles: Sequence[PublishedTile], *, license: str = "other", season: str | None = None
) -> dict[str, Any]:
    """Add (or replace) the items of ``season`` (default the run's) for ``tiles`` in the project's catalog.

    Returns ``{"catalog": uri, "collections": {...}, "items_added": n, "items_removed": n, "item_ids": [...]}``.
    """

    season_id = season or ctx.season
    io = StorageStacIO(ctx.storage)
    root_uri = catalog_uri(ctx)
    project = ctx.config.project
    if ctx.storage.exists(root_uri):
        catalog = pystac.Catalog.from_file(root_uri, stac_io=io)
    else:
        catalog = pystac.Catalog(
            id=project,
            title=f"LCMS {project}",
            description=f"Land cover maps, confidence, change rasters and change polygons of LCMS project {project}, "
            "season by season.",
        )
    if not ctx.is_primary_product:
        return _publish_product_season(ctx, catalog, io, tiles, license, season_id)
    class_id, changes_id = collection_ids(project)
    class_col = _collection(
        catalog,
        class_id,
        f"{project} class map",
        "Post-processed land cover class map per tile and season as Cloud Optimized GeoTIFFs (Sentinel Hub BYOC "
        "layout): CLASS (legend id), CONFIDENCE (percent) and CHANGE (relevant transition code since the season "
        "before).",
        license,
    )
    _item_assets_class_map(class_col)
    change_col = _collection(
        catalog,
        changes_id,
        f"{project} change polygons",
        "Relevant land cover change polygons per tile and season (GeoPackage, layer 'changes').",
        license,
    )
    class_items = [class_map_item(ctx, t) for t in tiles]
    change_items = [it for it in (changes_item(ctx, t) for t in tiles) if it is not None]
    # Resolve every stored item now: pystac loads lazily, and saving rewrites all of them.
    for col in (class_col, change_col):
        list(col.get_items())
    removed_c, added_c = _replace_season_items(class_col, season_id, class_items)
    removed_p, added_p = _replace_season_items(change_col, season_id, change_items)
    for col in (class_col, change_col):
        if any(True for _ in col.get_items()):
            col.update_extent_from_items()
    stac_root = stac_root_uri(ctx)
    catalog.normalize_hrefs(stac_root)
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED, stac_io=io)
    # Items of this season whose tile is no longer published: their files go too.
    kept = {it.id for it in (*added_c, *added_p)}
    for col_id, removed in ((class_id, removed_c), (changes_id, removed_p)):
        for it in removed:
            if it.id not in kept:
                ctx.storage.delete(ctx.storage.uri(project, "stac", col_id, it.id))
    added_ids = sorted(kept)
    log.info(
        "STAC %s: season %s, %d item(s) written, %d replaced or removed",
        root_uri,
        season_id,
        len(added_ids),
        len(removed_c) + len(removed_p),
    )
    return {
        "catalog": root_uri,
        "collections": {class_id: len(added_c), changes_id: len(added_p)},
        "items_added": len(added_ids),
        "items_removed": len(removed_c) + len(removed_p),
        "item_ids": added_ids,
    }


def _publish_product_season(
    ctx: RunContext,
    catalog: pystac.Catalog,
    io: StorageStacIO,
    tiles: Sequence[PublishedTile],
    license: str,
    season_id: str,
) -> dict[str, Any]:
    """:func:`publish_season` for a product other than the primary one: its own map collection, no changes."""
    project = ctx.config.project
    product = ctx.product_name
    mask = ctx.config.product(product).mask
    where = (
        f" inside the {mask.product.replace('_', ' ')} classes {', '.join(mask.classes)} (no data elsewhere)"
        if mask
        else ""
    )
    cid = product_collection_id(project, product)
    col = _collection(
        catalog,
        cid,
        f"{project} {product.replace('_', ' ')} map",
        f"Post-processed {product.replace('_', ' ')} map per tile and season{where} as Cloud Optimized GeoTIFFs "
        "(Sentinel Hub BYOC layout): CLASS (legend id) and CONFIDENCE (percent).",
        license,
    )
    _item_assets_class_map(col, [b for b in BAND_NAMES if b != "CHANGE"])
    items = [class_map_item(ctx, t) for t in tiles]
    list(col.get_items())
    removed, added = _replace_season_items(col, season_id, items)
    if any(True for _ in col.get_items()):
        col.update_extent_from_items()
    catalog.normalize_hrefs(stac_root_uri(ctx))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED, stac_io=io)
    kept = {it.id for it in added}
    for it in removed:
        if it.id not in kept:
            ctx.storage.delete(ctx.storage.uri(project, "stac", cid, it.id))
    log.info("STAC %s: %s season %s, %d item(s) written", catalog_uri(ctx), product, season_id, len(kept))
    return {
        "catalog": catalog_uri(ctx),
        "collections": {cid: len(added)},
        "items_added": len(kept),
        "items_removed": len(removed),
        "item_ids": sorted(kept),
    }
