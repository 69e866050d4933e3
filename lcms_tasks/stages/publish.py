"""Stage publish: a season's maps as Cloud Optimized GeoTIFFs, mosaics, styles and a STAC catalog.

Per tile (:func:`run`) it reads the post-processed map (postprocessing/T: ``mask_timeless/CLASS``,
``data_timeless/CONFIDENCE`` in 0..1), the change polygons (change_detection/T ``changes.gpkg``)
and the prediction's marker (for the model's run id), and writes the tile folder::

    <root>/<project>/<season>/publish/<tile>/CLASS.tiff        class id, uint8, no-data 0, MODE overviews
    <root>/<project>/<season>/publish/<tile>/CONFIDENCE.tiff   percent 0..100, uint8, no-data 255, AVERAGE overviews
    <root>/<project>/<season>/publish/<tile>/CHANGE.tiff       transition code, uint8, 0 = no change (no-data), MODE
    <root>/<project>/<season>/publish/<tile>/_COMPLETE.json    the marker (below)

so the BYOC tile path of a folder (in a collection on the storage root's bucket) is its S3 key followed
by ``/(BAND).tiff``: ``<root prefix>/<project>/<season>/publish/<tile>/(BAND).tiff`` (the marker's
``byoc_path`` is that path below the storage root). Every file is checked with
:func:`lcms_tasks.publish.cog.check_byoc` inside the staging folder: one broken rule and nothing of
the tile is published (:class:`~lcms_tasks.publish.cog.CogCheckError` names the file and the rule).
The CHANGE codes come from :func:`transition_codes`: the config's relevant transitions
(``stages.change_detection.transitions``) sorted by (from id, to id) and numbered 1..N, the same for
every tile and season. The marker holds what :class:`~lcms_tasks.publish.PublishedTile` needs
(``epsg``, ``bounds``, ``footprint_wgs84``, ``bands``) and ``shape``, ``resolution``, ``transform``,
``block_size``, ``compression``, ``byoc_path``, ``legend``, ``transition_codes``, ``changes_uri``,
``season_before``, ``n_changes``, ``class_pixels``, ``change_pixels``, ``model`` (run id, uri,
season), ``run_ids`` (publish, reporting, postprocessing, prediction, features, change_detection,
training), ``software``, ``checks``, ``seconds``, besides the keys of every marker.

Per season (:func:`finalize`, after every tile) it checks the rules that span tile folders (same
files in each, one bit depth per band, one code table and legend), then writes

* ``<season>/publish/_run/mosaic/``: ``<BAND>_<epsg>.vrt`` per UTM zone (relative paths: QGIS opens
  them in place), ``<BAND>.qml`` / ``<BAND>_<epsg>.qml`` QGIS styles, ``CLASS_colormap.txt`` and
  ``CHANGE_colormap.txt`` (:mod:`lcms_tasks.publish.mosaic`);
* the STAC catalog ``<root>/<project>/stac/catalog.json`` (:mod:`lcms_tasks.publish.stac`);
* the season's changes into the PostGIS change store (``lcms_tasks.store``), when one is configured, and
  the product's parcel disagreements (when its parcel markers were computed) as parcel checks for the
  Validation Tool (:mod:`lcms_tasks.store.parcel_checks`);
* the BYOC tiles (``lcms_tasks.publish.byoc``), when ``stages.publish.byoc`` is set;
* ``<season>/publish/_run/summary/summary.json``: what was published, what was skipped and why.

The mosaic and the catalog cover every tile of the season that is published (a run on a tile subset
refreshes those tiles and keeps the others); the change store and BYOC get the run's tiles.

Imagery for the map viewer (:mod:`lcms_tasks.publish.imagery`): per tile, after its BYOC folder, a
separate folder ``<root>/<project>/<season>/imagery/<tile>/`` (complete or absent) with the season's
cloud-free composite and one COG per acquisition date (B02, B03, B04, B08 as uint16 digital numbers),
from the tile's download; per season, ``<season>/imagery/_run/index/dates.json`` (date -> tiles), in
the summary under ``imagery``. A tile whose download is missing or lacks those bands is published
without imagery (logged, and listed in the summary).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

# BYOC's option schema is part of this stage's; the module imports sentinelhub-py only inside functions.
from lcms_tasks.publish.byoc import ByocOptions
from lcms_tasks.schema import StrictModel

if TYPE_CHECKING:
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import Tile
    from lcms_tasks.preflight import Need
    from lcms_tasks.publish import PublishedTile
    from lcms_tasks.publish.tiles import TransitionCode

NAME = "publish"
log = logging.getLogger(__name__)


class Options(StrictModel):
    """Options of the publish stage."""

    compression: Literal["DEFLATE", "ZSTD"] = Field(
        "DEFLATE", description="Compression of the published COGs (both are BYOC-compatible)."
    )
    stac_license: str = Field(
        "other",
        min_length=1,
        description="License of the STAC collections: an SPDX identifier (e.g. 'CC-BY-4.0') or 'other'.",
    )
    change_store: bool = Field(
        True,
        description="Load the season's change polygons into the PostGIS change store when a database is "
        "configured (false: never, e.g. for a publication to files only).",
    )
    byoc: ByocOptions | None = Field(
        None,
        description="Sentinel Hub BYOC registration of each published season (collection, bucket, sensing time, "
        "...). None: no registration.",
    )


# -- run-level checks --------------------------------------------------------------------------------


def transition_codes(ctx: RunContext) -> list[TransitionCode]:
    """The CHANGE band's code table: the config's relevant transitions, by (from id, to id), codes 1..N."""
    from lcms_tasks.errors import ConfigError
    from lcms_tasks.publish.tiles import transition_code_table
    from lcms_tasks.stages import change_detection

    options: change_detection.Options = ctx.config.stages.change_detection
    # The change stage's own resolution of the transitions (defaults, wildcards, legend check), so both
    # stages agree on what is relevant.
    pairs = change_detection._transitions(ctx, options)
    try:
        return transition_code_table(pairs, {c.id: c.name for c in ctx.config.legend()})
    except ValueError as err:
        raise ConfigError(str(err), path=ctx.config_path, field="stages.change_detection.transitions") from err


def check(ctx: RunContext) -> None:
    """Every tile's CRS is one BYOC accepts, the transitions fit the uint8 CHANGE band, a BYOC target can work."""
    from lcms_tasks.errors import ConfigError
    from lcms_tasks.publish.byoc import check_target
    from lcms_tasks.publish.cog import byoc_accepts_epsg

    bad = sorted({t.epsg for t in ctx.tiles() if not byoc_accepts_epsg(t.epsg)})
    if bad:
        raise ConfigError(
            f"tiles in EPSG {', '.join(map(str, bad))}: Sentinel Hub BYOC accepts only EPSG:4326, 3857, 3035 and "
            "the WGS84 UTM zones (326xx/327xx); use grid.crs: utm",
            path=ctx.config_path,
            field="grid.crs",
        )
    if ctx.is_primary_product:
        transition_codes(ctx)
    options: Options = ctx.config.stages.publish
    if options.byoc is not None:
        check_target(options.byoc, ctx.storage.root)  # e.g. a file:// root Sentinel Hub cannot read


def needs(ctx: RunContext) -> list[Need]:
    """The post-processed map, the prediction (its model run id) and the change polygons of every tile."""
    from lcms_tasks.preflight import Need

    out = [
        Need("postprocessing", ctx.season, what="the post-processed map"),
        Need("prediction", ctx.season, what="the prediction (for the model's run id)"),
    ]
    if ctx.is_primary_product:  # change detection maps the primary product's transitions only
        out.append(Need("change_detection", ctx.season, what="the change polygons"))
    return out


def product_bands(ctx: RunContext) -> tuple[str, ...]:
    """The bands of the product's tile folders: CLASS, CONFIDENCE and (primary product) CHANGE."""
    from lcms_tasks.publish import BAND_NAMES

    return BAND_NAMES if ctx.is_primary_product else tuple(b for b in BAND_NAMES if b != "CHANGE")


def byoc_tile_path(ctx: RunContext, tile_id: str = "<tile>") -> str:
    """The BYOC tile path of a tile folder below the storage root (``.../publish/<tile>/(BAND).tiff``)."""
    return "/".join([ctx.config.project, ctx.season, *ctx.stage_parts(NAME), tile_id, "(BAND).tiff"])


# -- per tile ----------------------------------------------------------------------------------------


def _footprint_wgs84(tile: Tile) -> dict[str, Any]:
    """The tile's square in WGS84 (edges densified so the reprojected outline stays true)."""
    import shapely
    from pyproj import Transformer
    from shapely.geometry import box, mapping

    to_wgs84 = Transformer.from_crs(tile.epsg, 4326, always_xy=True).transform
    square = box(*tile.bounds).segmentize(tile.side_m / 8)
    geom = shapely.transform(square, to_wgs84, interleaved=False)
    out: dict[str, Any] = mapping(geom)
    out["coordinates"] = [[[round(x, 8), round(y, 8)] for x, y in ring] for ring in out["coordinates"]]
    return out


def _software() -> dict[str, str]:
    import rasterio
    import rio_cogeo

    import lcms_tasks

    return {
        "lcms": lcms_tasks.__version__,
        "rio-cogeo": rio_cogeo.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
    }


def _counts(array: Any) -> dict[str, int]:
    import numpy as np

    values, counts = np.unique(array, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)}


def run(tile: Tile, ctx: RunContext) -> list[str]:
    """Publish one tile: its CLASS, CONFIDENCE and CHANGE COGs, checked, complete or absent."""
    import numpy as np

    from lcms_tasks import eopatch
    from lcms_tasks.changes import read_changes
    from lcms_tasks.errors import CorruptArtefactError, StageError
    from lcms_tasks.publish.cog import BAND_SPECS, TILE_SIZE, CogCheckError, check_byoc, confidence_percent, write_band
    from lcms_tasks.publish.imagery import write_tile_imagery
    from lcms_tasks.publish.tiles import rasterise_changes
    from lcms_tasks.stages.change_detection import GPKG_NAME

    options: Options = ctx.config.stages.publish
    t0 = time.perf_counter()
    storage = ctx.storage
    pp_uri = ctx.tile_uri("postprocessing", tile.id)
    patch, pp_meta = eopatch.load(storage, pp_uri, features=["mask_timeless/CLASS", "data_timeless/CONFIDENCE"])
    classes = np.asarray(patch.mask_timeless["CLASS"])[..., 0].astype(np.uint8)
    confidence = np.asarray(patch.data_timeless["CONFIDENCE"])[..., 0]
    if classes.shape != tile.shape:
        raise StageError(f"tile {tile.id}: post-processed map {pp_uri} is {classes.shape}, the grid says {tile.shape}")
    pred_meta = storage.read_marker(ctx.tile_uri("prediction", tile.id))
    arrays = {"CLASS": classes, "CONFIDENCE": confidence_percent(confidence, classes > 0)}
    bands = product_bands(ctx)
    codes: list[TransitionCode] = []
    cd_meta: dict[str, Any] = {}
    gpkg: str | None = None
    n_changes = 0
    if "CHANGE" in bands:
        cd_uri = ctx.tile_uri("change_detection", tile.id)
        cd_meta = storage.read_marker(cd_uri)
        gpkg = f"{cd_uri}/{GPKG_NAME}"
        with storage.reading_dir(cd_uri) as folder:
            try:
                frame = read_changes(folder / GPKG_NAME)
            except (ValueError, OSError) as err:
                raise CorruptArtefactError(f"tile {tile.id}: {gpkg} cannot be read as a change table: {err}") from err
        codes = transition_codes(ctx)
        arrays["CHANGE"] = rasterise_changes(
            frame, codes, tile.shape, tile.transform(), where=f"tile {tile.id} ({gpkg})"
        )
        n_changes = len(frame)

    uri = ctx.tile_uri(NAME, tile.id)
    transform = tile.transform()
    model = {
        "run_id": pred_meta.get("model_run_id"),
        "uri": pred_meta.get("model_uri"),
        "season": pred_meta.get("model_season"),
    }
    meta: dict[str, Any] = {
        "epsg": tile.epsg,
        "bounds": list(tile.bounds),
        "shape": list(tile.shape),
        "resolution": tile.resolution,
        "transform": [transform.a, transform.b, transform.c, transform.d, transform.e, transform.f],
        "block_size": TILE_SIZE,
        "compression": options.compression,
        "footprint_wgs84": _footprint_wgs84(tile),
        "byoc_path": byoc_tile_path(ctx, tile.id),
        "bands": {},
        "legend": [{"id": c.id, "name": c.name, "color": c.color} for c in ctx.config.legend()],
        "transition_codes": [c.to_dict() for c in codes],
        "changes_uri": gpkg,
        "season_before": cd_meta.get("season_before"),
        "n_changes": n_changes,
        "class_pixels": _counts(classes),
        "change_pixels": {k: v for k, v in _counts(arrays["CHANGE"]).items() if k != "0"} if "CHANGE" in arrays else {},
        "model": model,
        "run_ids": {
            "publish": ctx.run_id,
            "reporting": ctx.upstream_run_id,
            "postprocessing": pp_meta.get("run_id"),
            "prediction": pred_meta.get("run_id"),
            "features": pred_meta.get("upstream"),
            "change_detection": cd_meta.get("run_id"),
            "training": model["run_id"],
        },
        "upstream": pp_meta.get("run_id"),
        "software": _software(),
    }
    marker = ctx.marker_meta(NAME, tile.id, meta)
    with storage.writing_dir(uri, marker) as staging:
        for name in bands:
            spec = BAND_SPECS[name]
            path = write_band(
                spec, arrays[name], staging, crs=tile.crs, transform=transform, compression=options.compression
            )
            meta["bands"][name] = {
                "file": spec.file,
                "dtype": "uint8",
                "nodata": spec.nodata,
                "description": spec.description,
                "overview_resampling": spec.resampling.upper(),
                "bytes": path.stat().st_size,
            }
        problems = [p.replace(str(staging), uri) for name in bands for p in check_byoc(staging / BAND_SPECS[name].file)]
        if problems:
            raise CogCheckError(problems, where=f"publish tile {tile.id}")
        meta["checks"] = {"byoc": "passed", "files": [BAND_SPECS[n].file for n in bands]}
        meta["seconds"] = round(time.perf_counter() - t0, 3)
        marker.update(meta)  # written last, when the block ends
    log.info(
        "publish %s (%s): %s (%d change polygon(s)) in %.2f s",
        tile.id,
        ctx.product_name,
        ", ".join(BAND_SPECS[n].file for n in bands),
        n_changes,
        meta["seconds"],
    )
    if not ctx.is_primary_product:
        return [uri]  # the imagery is the primary product's (one folder per tile and season)
    # The viewer's imagery: a folder of its own (not part of the BYOC tile), complete or absent.
    imagery = write_tile_imagery(tile, ctx, footprint_wgs84=meta["footprint_wgs84"], compression=options.compression)
    return [uri] if imagery.uri is None else [uri, imagery.uri]


# -- per season --------------------------------------------------------------------------------------


def _folder_problems(ctx: RunContext, tiles: list[PublishedTile]) -> list[str]:
    """Rules across the season's tile folders: same COG files, one bit depth per band, one code table/legend."""
    from lcms_tasks.publish.cog import BAND_SPECS, check_tile_folders

    folders: dict[str, dict[str, str]] = {}
    for t in tiles:
        dtypes = {b.file: b.dtype for b in t.bands.values()}
        stored = [n for n in ctx.storage.list_names(t.uri) if n.lower().endswith((".tif", ".tiff"))]
        folders[t.uri] = {name: dtypes.get(name, "undeclared") for name in stored}
    problems = check_tile_folders(folders, expected=[BAND_SPECS[name].file for name in product_bands(ctx)])
    for key, what in (("transition_codes", "transition code table"), ("legend", "legend")):
        variants: dict[str, list[str]] = {}
        for t in tiles:
            variants.setdefault(repr(t.meta.get(key)), []).append(t.tile_id)
        if len(variants) > 1:
            groups = "; ".join(f"{len(ids)} tile(s) like {ids[0]}" for ids in variants.values())
            problems.append(
                f"{ctx.stage_uri(NAME)}: {key}: the tiles were published with {len(variants)} different "
                f"{what}s ({groups}); publish the season again"
            )
    return problems


def _load_change_store(ctx: RunContext, options: Options) -> dict[str, Any]:
    if not ctx.is_primary_product:
        return {"status": "skipped", "reason": f"the change store holds the {ctx.config.primary_product} changes"}
    if not options.change_store:
        return {"status": "skipped", "reason": "stages.publish.change_store is false"}
    try:
        from lcms_tasks import store
    except ModuleNotFoundError as err:
        if err.name != "lcms_tasks.store":
            raise
        return {"status": "skipped", "reason": "the change store (lcms_tasks.store) is not part of this installation"}
    database_url = getattr(store, "database_url", None)
    load_season = getattr(store, "load_season", None)
    if database_url is None or load_season is None:
        return {"status": "skipped", "reason": "lcms_tasks.store has no database_url/load_season yet"}
    url = database_url(ctx.config)
    if url is None:
        return {"status": "skipped", "reason": "no database configured (database.url or LCMS_DATABASE_URL)"}
    result = load_season(url, ctx)
    return {"status": "loaded", **(result if isinstance(result, dict) else {"result": result})}


def _load_parcel_checks(ctx: RunContext, options: Options) -> dict[str, Any]:
    """The season's parcel disagreements of this product into the Validation Tool's queue (when computed)."""
    from lcms_tasks.parcels.raster import NAME as MARKERS

    if not ctx.storage.is_complete(ctx.run_uri(MARKERS)):
        return {"status": "skipped", "reason": f"no parcel markers for product {ctx.product_name} this season"}
    if not options.change_store:
        return {"status": "skipped", "reason": "stages.publish.change_store is false"}
    from lcms_tasks import store
    from lcms_tasks.store.parcel_checks import load_parcel_checks

    url = store.database_url(ctx.config)
    if url is None:
        return {"status": "skipped", "reason": "no database configured (database.url or LCMS_DATABASE_URL)"}
    return {"status": "loaded", **load_parcel_checks(url, ctx)}


def _register_byoc(ctx: RunContext, options: Options, tiles: list[PublishedTile]) -> dict[str, Any]:
    if options.byoc is None:
        return {"status": "skipped", "reason": "no stages.publish.byoc section in the config"}
    if not ctx.is_primary_product:
        primary = ctx.for_product(ctx.config.primary_product).config.stages.publish.byoc
        if primary is not None and primary.collection == options.byoc.collection:
            return {
                "status": "skipped",
                "reason": f"BYOC collection {options.byoc.collection!r} is the {ctx.config.primary_product} "
                f"product's; give products.{ctx.product_name}.stages.publish.byoc its own collection",
            }
    from lcms_tasks.publish import byoc

    result = dict(byoc.register_season(ctx, options.byoc, tiles))
    if result.get("skipped"):  # e.g. no Sentinel Hub credentials
        return {**result, "status": "skipped", "reason": str(result["skipped"])}
    return {**result, "status": "registered"}


def finalize(ctx: RunContext) -> list[str]:
    """The season's mosaics, styles, STAC items, change store load and BYOC registration, then the summary."""
    from lcms_tasks.publish import imagery, stac
    from lcms_tasks.publish.cog import CogCheckError
    from lcms_tasks.publish.mosaic import change_entries, class_entries, write_season_mosaic
    from lcms_tasks.publish.tiles import TransitionCode, published_tiles

    options: Options = ctx.config.stages.publish
    t0 = time.perf_counter()
    run_tiles = published_tiles(ctx)  # every tile of the run must be published
    season_tiles = published_tiles(ctx, every_stored=True)
    problems = _folder_problems(ctx, season_tiles)
    if problems:
        raise CogCheckError(problems, where=f"publish season {ctx.season}")

    reference = season_tiles[0] if season_tiles else None
    codes = [TransitionCode.from_dict(d) for d in (reference.meta.get("transition_codes", []) if reference else [])]
    legend = ctx.config.legend()
    styles = {"CLASS": class_entries(legend), "CONFIDENCE": None, "CHANGE": change_entries(codes, legend)}
    mosaic_uri = ctx.run_uri(NAME, "mosaic")
    mosaic_meta = ctx.marker_meta(NAME, None, {"tiles": [t.tile_id for t in season_tiles]})
    with ctx.storage.writing_dir(mosaic_uri, mosaic_meta) as staging:
        written = write_season_mosaic(
            staging,
            season_tiles,
            mosaic_uri=mosaic_uri,
            styles={b: styles[b] for b in product_bands(ctx)},
            nodata_labels={"CHANGE": "no change"},
        )
        mosaic_meta.update(written)

    stac_result = stac.publish_season(ctx, season_tiles, license=options.stac_license)
    store_result = _load_change_store(ctx, options)
    parcel_checks_result = _load_parcel_checks(ctx, options)
    byoc_result = _register_byoc(ctx, options, run_tiles)
    imagery_result = (
        imagery.write_season_index(ctx, [t.tile_id for t in season_tiles])
        if ctx.is_primary_product
        else {"status": "skipped", "reason": f"the imagery is published with the {ctx.config.primary_product} maps"}
    )

    summary = {
        **ctx.coverage(),
        "tiles_published_by_run": [t.tile_id for t in run_tiles],
        "tiles_published_in_season": [t.tile_id for t in season_tiles],
        "product": ctx.product_name,
        "byoc_tile_path": byoc_tile_path(ctx),
        "bands": {name: dataclasses.asdict(b) for name, b in reference.bands.items()} if reference else {},
        "transition_codes": [c.to_dict() for c in codes],
        "mosaic": {"uri": mosaic_uri, **written},
        "stac": stac_result,
        "change_store": store_result,
        "parcel_checks": parcel_checks_result,
        "byoc": byoc_result,
        "imagery": imagery_result,
        "skipped": {
            step: result["reason"]
            for step, result in (
                ("change_store", store_result),
                ("parcel_checks", parcel_checks_result),
                ("byoc", byoc_result),
                ("imagery", imagery_result),
            )
            if result.get("status") == "skipped"
        },
        "seconds": round(time.perf_counter() - t0, 3),
    }
    summary_uri = ctx.run_uri(NAME, "summary")
    summary_meta = ctx.marker_meta(NAME, None, summary)
    with ctx.storage.writing_dir(summary_uri, summary_meta) as staging:
        (staging / "summary.json").write_text(json.dumps(summary_meta, indent=2, sort_keys=True, default=str))
    for step, reason in summary["skipped"].items():
        log.info("publish season %s: %s skipped: %s", ctx.season, step, reason)
    log.info(
        "publish season %s: %d tile(s) in the season's mosaic and STAC items (%d from this run), catalog %s",
        ctx.season,
        len(season_tiles),
        len(run_tiles),
        stac_result["catalog"],
    )
    return [mosaic_uri, stac_result["catalog"], summary_uri]
