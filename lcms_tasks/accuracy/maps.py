"""A season's map as the sample design reads it: per tile, the class map, the change map and the AOI.

Two stored forms of the same map (see :mod:`lcms_tasks.stages.publish`):

* ``published``: the publish stage's COGs ``<project>/<season>/publish/<tile>/CLASS.tiff`` (class id,
  0 = no data) and ``CHANGE.tiff`` (transition code, 0 = no change), the legend and the code table
  from the tile folders' markers;
* ``postprocessing``: the post-processed EOPatch ``mask_timeless/CLASS`` of every tile and, when
  every tile has one, the change polygons ``change_detection/<tile>/changes.gpkg`` burnt into the
  tile grid; the code table is the transitions found, in (from id, to id) order.

``auto`` takes the published maps when every tile of the run is published, the post-processed ones
otherwise (the reporting stage runs before publish). Tiles are read in tile id order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lcms_tasks.errors import ArtefactMissingError, CorruptArtefactError

if TYPE_CHECKING:
    import geopandas as gpd

    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import Tile
    from lcms_tasks.publish.tiles import TransitionCode

log = logging.getLogger(__name__)

SOURCES = ("auto", "published", "postprocessing")


@dataclass
class SeasonMap:
    """Where a season's map is read from, and what its codes mean."""

    ctx: RunContext
    source: str  # "published" or "postprocessing"
    tiles: list[Tile]
    legend: list[tuple[int, str]]
    codes: list[TransitionCode] | None  # None: no change map for this season (no change strata)
    _changes: dict[str, gpd.GeoDataFrame] = field(default_factory=dict, repr=False)
    _aoi: dict[int, Any] = field(default_factory=dict, repr=False)

    def uri(self, tile: Tile) -> str:
        return self.ctx.tile_uri("publish" if self.source == "published" else "postprocessing", tile.id)

    def read(self, tile: Tile) -> tuple[np.ndarray, np.ndarray | None]:
        """(CLASS (H, W) uint8, CHANGE (H, W) uint8 or None) of ``tile``."""
        if self.source == "published":
            return self._read_published(tile)
        from lcms_tasks import eopatch

        uri = self.uri(tile)
        patch, _ = eopatch.load(self.ctx.storage, uri, features=["mask_timeless/CLASS"])
        classes = np.asarray(patch.mask_timeless["CLASS"])
        classes = (classes[..., 0] if classes.ndim == 3 else classes).astype(np.uint8)
        self._check_shape(tile, classes, f"{uri}/mask_timeless/CLASS")
        if self.codes is None:
            return classes, None
        from lcms_tasks.publish.tiles import rasterise_changes

        change = rasterise_changes(
            self._changes[tile.id], self.codes, tile.shape, tile.transform(), where=f"tile {tile.id}"
        )
        return classes, change

    def _read_published(self, tile: Tile) -> tuple[np.ndarray, np.ndarray | None]:
        import rasterio

        uri = self.uri(tile)

        def band(folder: Any, name: str) -> np.ndarray:
            try:
                with rasterio.open(folder / f"{name}.tiff") as src:
                    array = np.asarray(src.read(1)).astype(np.uint8)
            except rasterio.errors.RasterioIOError as err:
                raise CorruptArtefactError(f"{uri}/{name}.tiff cannot be read: {err}") from err
            self._check_shape(tile, array, f"{uri}/{name}.tiff")
            return array

        with self.ctx.storage.reading_dir(uri) as folder:
            return band(folder, "CLASS"), None if self.codes is None else band(folder, "CHANGE")

    @staticmethod
    def _check_shape(tile: Tile, array: np.ndarray, where: str) -> None:
        if array.shape != tile.shape:
            raise CorruptArtefactError(f"{where}: shape {array.shape}, the tile is {tile.shape}")

    def in_aoi(self, tile: Tile) -> np.ndarray:
        """(H, W) bool: pixels whose centre is inside the AOI."""
        from rasterio.features import geometry_mask

        if tile.epsg not in self._aoi:
            from lcms_tasks.grid import load_aoi

            aoi = load_aoi(self.ctx.config, config_path=self.ctx.config_path)
            self._aoi[tile.epsg] = list(aoi.to_crs(tile.epsg).geometry)
        return np.asarray(
            geometry_mask(self._aoi[tile.epsg], out_shape=tile.shape, transform=tile.transform(), invert=True)
        )


def open_season_map(ctx: RunContext, source: str = "auto") -> SeasonMap:
    """The season's map of the run's tiles (``ArtefactMissingError`` naming the tiles without one)."""
    from lcms_tasks.publish.tiles import transition_code_table

    if source not in SOURCES:
        raise ValueError(f"map source {source!r}: use one of {', '.join(SOURCES)}")
    storage = ctx.storage
    tiles = sorted(ctx.tiles(), key=lambda t: t.id)
    legend = [(c.id, c.name) for c in ctx.config.legend()]
    published = storage.complete_children(ctx.stage_uri("publish"))
    if source == "auto":
        source = "published" if all(t.id in published for t in tiles) else "postprocessing"
    stage = "publish" if source == "published" else "postprocessing"
    done = published if source == "published" else storage.complete_children(ctx.stage_uri(stage))
    missing = [t.id for t in tiles if t.id not in done]
    if missing:
        raise ArtefactMissingError(
            f"{stage} (season {ctx.season}): {len(missing)} of {len(tiles)} tile(s) have no map "
            f"({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}); run `lcms run {stage}` first"
        )
    if source == "published":
        from lcms_tasks.publish.tiles import TransitionCode

        marker = storage.read_marker(ctx.tile_uri("publish", tiles[0].id))
        legend = [(int(c["id"]), str(c["name"])) for c in marker.get("legend", [])] or legend
        table = marker.get("transition_codes")
        codes = [TransitionCode.from_dict(c) for c in table] if table else None
        return SeasonMap(ctx, source, tiles, legend, codes)
    changes = _change_frames(ctx, tiles)
    if changes is None:
        return SeasonMap(ctx, source, tiles, legend, None)
    pairs = {(int(a), int(b)) for f in changes.values() for a, b in zip(f["from_class"], f["to_class"], strict=True)}
    codes = transition_code_table(pairs, dict(legend)) if pairs else []
    return SeasonMap(ctx, source, tiles, legend, codes, _changes=changes)


def _change_frames(ctx: RunContext, tiles: list[Tile]) -> dict[str, gpd.GeoDataFrame] | None:
    """Every tile's change polygons (tile CRS), or None when some tile has no change map this season."""
    from lcms_tasks.changes import read_changes

    done = ctx.storage.complete_children(ctx.stage_uri("change_detection"))
    absent = [t.id for t in tiles if t.id not in done]
    if absent:
        log.info(
            "season %s: %d tile(s) without change_detection (%s): no change strata",
            ctx.season,
            len(absent),
            ", ".join(absent[:3]),
        )
        return None
    frames = {}
    for tile in tiles:
        uri = ctx.tile_uri("change_detection", tile.id)
        with ctx.storage.reading_dir(uri) as folder:
            try:
                frame = read_changes(folder / "changes.gpkg")
            except (ValueError, OSError) as err:
                raise CorruptArtefactError(f"{uri}/changes.gpkg cannot be read as a change table: {err}") from err
        if len(frame) and frame.crs is not None and frame.crs != tile.crs:
            frame = frame.to_crs(tile.crs)
        frames[tile.id] = frame
    return frames
