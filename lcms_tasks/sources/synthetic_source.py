"""The synthetic source bound to a project: legend mapping, seasons, truth layers.

:mod:`lcms_tasks.sources.synthetic` generates arrays from generic "kinds";
this adapter maps those kinds to the project's legend ids, keeps scenes of
consecutive seasons consistent (season k = season k-1 plus recorded changes),
and attaches the generator's truth (class maps, change polygons) so the
pipeline can be measured against it.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from lcms_tasks.bands import S2_BANDS, S2_QUANTIFICATION
from lcms_tasks.errors import ConfigError
from lcms_tasks.sources import StreamedAcquisitions
from lcms_tasks.sources import synthetic as gen

if TYPE_CHECKING:
    from lcms_tasks.config import LegendClass, ProjectConfig
    from lcms_tasks.grid import Tile

TRUTH_LAND_COVER = "TRUTH_LAND_COVER"
TRUTH_CROP_TYPE = "TRUTH_CROP_TYPE"
TRUTH_CHANGES = "TRUTH_CHANGES"
TRUTH_PARCELS = "TRUTH_PARCELS"


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def kind_lookup(classes: list[LegendClass], kinds: tuple[str, ...], legend: str) -> np.ndarray:
    """Array mapping generator index (kind index + 1; 0 = none) to legend class id (0 if not in the legend)."""
    lut = np.zeros(len(kinds) + 1, dtype=np.uint8)
    for cls in classes:
        kind = cls.kind or _snake(cls.name)
        if kind not in kinds:
            raise ConfigError(
                f"class {cls.name!r} (id {cls.id}) has kind {kind!r}, which the synthetic source cannot simulate; "
                f"set `kind` to one of {', '.join(kinds)}",
                field=f"legends.{legend}",
            )
        lut[kinds.index(kind) + 1] = cls.id
    return lut


class SyntheticSource:
    """Deterministic synthetic Sentinel-2 L2A-like imagery for a project."""

    def __init__(self, config: ProjectConfig) -> None:
        from lcms_tasks.config import SyntheticSourceConfig

        src = config.source
        if not isinstance(src, SyntheticSourceConfig):
            raise TypeError(f"SyntheticSource needs a synthetic source config, got {src.type!r}")
        self.config = config
        self.params = gen.SyntheticParams(
            seed=src.seed,
            revisit_days=src.revisit_days,
            missing_date_fraction=src.missing_date_fraction,
            cloud_cover=src.cloud_cover,
            fully_cloudy_fraction=src.fully_cloudy_fraction,
            nodata_edge_fraction=src.nodata_edge_fraction,
            noise=src.noise,
            change_fraction=src.change_fraction,
        )
        self.lc_lut = kind_lookup(config.legends.land_cover, gen.KINDS, "land_cover")
        self.crop_lut = (
            kind_lookup(config.legends.crop_type, gen.CROP_KINDS, "crop_type")
            if config.legends.crop_type
            else np.zeros(len(gen.CROP_KINDS) + 1, np.uint8)
        )
        self.lc_names = {c.id: c.name for c in config.legends.land_cover}

    def scene(self, tile: Tile, season_id: str) -> tuple[gen.Scene, list[gen.Change]]:
        """The tile's scene in ``season_id`` and the changes since the previous season."""
        index = self.config.season_ids_ordered().index(season_id)
        return gen.scene_for_season(tile.shape, self.params, tile.id, index)

    def fetch(self, tile: Tile, season_id: str, start: dt.date, end: dt.date) -> StreamedAcquisitions:
        """The season rendered date by date (memory of one date, however long the season)."""
        scene, changes = self.scene(tile, season_id)
        dates, rendered = gen.stream_acquisitions(scene, start, end, self.params, f"{tile.id}/{season_id}")
        return StreamedAcquisitions(
            dates=list(dates),
            shape=tile.shape,
            slabs=rendered,
            band_names=S2_BANDS,
            quantification=S2_QUANTIFICATION,
            source_name="synthetic",
            truth_rasters={
                TRUTH_LAND_COVER: self.lc_lut[scene.land_cover],
                TRUTH_CROP_TYPE: self.crop_lut[scene.crop],
            },
            truth_vectors={
                TRUTH_CHANGES: self.change_polygons(tile, changes, season_id),
                TRUTH_PARCELS: self.parcel_polygons(tile, scene),
            },
        )

    def parcel_polygons(self, tile: Tile, scene: gen.Scene) -> Any:
        """Every field/patch of the scene as a polygon with its land cover and crop class ids.

        This is what an LPIS-like reference would look like if it were complete; the
        reference stage samples from it to simulate partial ground truth.
        """
        import geopandas as gpd
        from rasterio import features
        from shapely.geometry import shape

        ids = scene.parcel_id.astype(np.int32)
        lc = self.lc_lut[scene.land_cover]
        crop = self.crop_lut[scene.crop]
        rows: list[dict[str, Any]] = []
        for geom, value in features.shapes(ids, mask=ids > 0, transform=tile.transform()):
            pid = int(value)
            rows.append({"parcel_id": pid, "geometry": shape(geom)})
        frame = gpd.GeoDataFrame(rows, columns=["parcel_id", "geometry"], geometry="geometry", crs=tile.crs)
        if len(frame):
            frame = frame.dissolve(by="parcel_id", as_index=False)
            # One class per parcel: the parcel's modal land cover / crop (they are constant by construction).
            flat_ids = ids.ravel()
            order = np.argsort(flat_ids, kind="stable")
            first = order[np.searchsorted(flat_ids[order], frame["parcel_id"].to_numpy())]
            frame["land_cover"] = lc.ravel()[first].astype(int)
            frame["crop_type"] = crop.ravel()[first].astype(int)
        else:
            frame["land_cover"] = []
            frame["crop_type"] = []
        frame["tile"] = tile.id
        return frame[["parcel_id", "land_cover", "crop_type", "tile", "geometry"]]

    def change_polygons(self, tile: Tile, changes: list[gen.Change], season_id: str) -> Any:
        """The true changes since the previous season as polygons in the tile's CRS."""
        import geopandas as gpd
        from rasterio import features
        from shapely.geometry import shape
        from shapely.ops import unary_union

        order = self.config.season_ids_ordered()
        index = order.index(season_id)
        before = order[index - 1] if index > 0 else ""
        rows: list[dict[str, Any]] = []
        transform = tile.transform()
        for ch in changes:
            mask = ch.geometry_pixels.astype(np.uint8)
            geoms = [shape(g) for g, v in features.shapes(mask, mask=mask.astype(bool), transform=transform) if v]
            if not geoms:
                continue
            from_id = int(self.lc_lut[gen.KINDS.index(ch.from_kind) + 1])
            to_id = int(self.lc_lut[gen.KINDS.index(ch.to_kind) + 1])
            rows.append(
                {
                    "change_id": int(ch.change_id),
                    "from_class": from_id,
                    "to_class": to_id,
                    "from_name": self.lc_names.get(from_id, ch.from_kind),
                    "to_name": self.lc_names.get(to_id, ch.to_kind),
                    "season_before": before,
                    "season_after": season_id,
                    "tile": tile.id,
                    "geometry": unary_union(geoms),
                }
            )
        columns = [
            "change_id",
            "from_class",
            "to_class",
            "from_name",
            "to_name",
            "season_before",
            "season_after",
            "tile",
            "geometry",
        ]
        return gpd.GeoDataFrame(rows, columns=columns, geometry="geometry", crs=tile.crs)
