"""A small published project with known arrays, for the map endpoints' tests and benchmark.

:func:`make_project` writes a project config (AOI, grid, legend, seasons) and, for every tile of its
grid and every season, what the map endpoints read, each through the code the pipeline uses:

* a download EOPatch (``data/BANDS`` uint16 with the 13 Sentinel-2 bands, ``mask/IS_DATA``,
  ``mask/IS_VALID``, timestamps; written like the download stage writes it, date by date), from which
  :func:`lcms_tasks.publish.imagery.write_tile_imagery` writes the imagery folder;
* the publish tile folder: ``CLASS``, ``CONFIDENCE`` and ``CHANGE`` COGs written by
  :func:`lcms_tasks.publish.cog.write_band` and a marker with what the publish stage's marker says
  about the tile (epsg, bounds, footprint, bands, legend, transition codes);
* a features EOPatch (``data/FEATURES`` with NDVI first, on a regular date grid).

Every array is kept in the returned :class:`SyntheticProject`, so a test compares what the API
answers with what was written. Seeded: the same arguments write the same project.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from lcms_tasks.template import LAND_COVER_EXAMPLE

if TYPE_CHECKING:
    from lcms_tasks.config import ProjectConfig
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import Tile

#: The demo's land cover legend.
LEGEND: list[dict[str, Any]] = LAND_COVER_EXAMPLE
SEASONS: dict[str, tuple[str, str]] = {"2023": ("2023-04-01", "2023-09-30"), "2024": ("2024-04-01", "2024-09-30")}
#: Class ids are drawn in square blocks of this many pixels (so a web tile meets whole blocks).
BLOCK_PX = 8


@dataclass
class SyntheticProject:
    """What :func:`make_project` wrote: the config and, per (season, tile id), the arrays of each artefact."""

    config_path: Path
    config: ProjectConfig
    tiles: list[Tile]
    seasons: list[str]
    classes: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (H, W) uint8, 0 = no data
    confidence: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (H, W) uint8 %, 255 = no data
    change: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (H, W) uint8 codes, 0 = none
    bands: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (T, H, W, 13) uint16
    data: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (T, H, W) bool
    valid: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (T, H, W) bool
    timestamps: dict[str, list[dt.datetime]] = field(default_factory=dict)
    ndvi: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (K, H, W) float32
    feature_dates: dict[str, list[dt.date]] = field(default_factory=dict)

    def context(self, season: str) -> RunContext:
        from lcms_tasks.context import RunContext

        return RunContext.create(self.config, season=season, run_id=f"synthetic-{season}")


def write_config(
    folder: Path,
    aoi: Any,
    aoi_crs: int,
    *,
    tile_px: int,
    resolution: float,
    seasons: Sequence[str],
    project: str = "maptest",
) -> Path:
    """The project's AOI (``aoi``, a shapely geometry in EPSG ``aoi_crs``) and config; the config's path."""
    import geopandas as gpd

    folder.mkdir(parents=True, exist_ok=True)
    gpd.GeoDataFrame({"region": ["all"]}, geometry=[aoi], crs=aoi_crs).to_file(folder / "aoi.geojson", driver="GeoJSON")
    cfg = {
        "project": project,
        "aoi": {"file": "aoi.geojson", "region_column": "region"},
        "grid": {"tile_size_px": tile_px, "resolution_m": resolution, "batch_size": 4},
        "seasons": {s: {"start": SEASONS[s][0], "end": SEASONS[s][1]} for s in seasons},
        "legends": {"land_cover": LEGEND, "crop_type": []},
        "source": {"type": "synthetic", "seed": 1},
        "storage": {"root": "data"},
        "stages": {"publish": {"change_store": False}},
    }
    path = folder / "project.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def utm_block(epsg: int, col0: int, row0: int, ncols: int, nrows: int, side: float, inset: float = 15.0) -> Any:
    """A box inset by ``inset`` metres inside ``ncols`` x ``nrows`` grid tiles of ``side`` metres (its grid's AOI)."""
    from shapely.geometry import box

    x0, y0 = col0 * side, row0 * side
    return box(x0 + inset, y0 + inset, x0 + ncols * side - inset, y0 + nrows * side - inset)


def _class_map(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    coarse = rng.integers(1, len(LEGEND) + 1, size=(-(-h // BLOCK_PX), -(-w // BLOCK_PX)))
    classes = np.kron(coarse, np.ones((BLOCK_PX, BLOCK_PX), dtype=np.int64))[:h, :w].astype(np.uint8)
    classes[:, : max(1, w // 16)] = 0  # a swath edge without data
    return classes


def _write_publish(ctx: RunContext, tile: Tile, arrays: dict[str, np.ndarray], codes: list[Any]) -> None:
    from lcms_tasks.publish.cog import BAND_SPECS, write_band
    from lcms_tasks.stages.publish import _footprint_wgs84

    t = tile.transform()
    meta: dict[str, Any] = {
        "epsg": tile.epsg,
        "bounds": list(tile.bounds),
        "shape": list(tile.shape),
        "resolution": tile.resolution,
        "transform": [t.a, t.b, t.c, t.d, t.e, t.f],
        "footprint_wgs84": _footprint_wgs84(tile),
        "bands": {},
        "legend": [{"id": c.id, "name": c.name, "color": c.color} for c in ctx.config.legend()],
        "transition_codes": [c.to_dict() for c in codes],
        "synthetic": True,
    }
    marker = ctx.marker_meta("publish", tile.id, meta)
    with ctx.storage.writing_dir(ctx.tile_uri("publish", tile.id), marker) as staging:
        for name, array in arrays.items():
            spec = BAND_SPECS[name]
            write_band(spec, array, staging, crs=tile.crs, transform=t)
            meta["bands"][name] = {"file": spec.file, "dtype": "uint8", "nodata": spec.nodata}
        marker.update(meta)


def _write_download(
    ctx: RunContext, tile: Tile, bands: np.ndarray, data: np.ndarray, valid: np.ndarray, stamps: list[dt.datetime]
) -> None:
    from lcms_tasks import eopatch
    from lcms_tasks.bands import S2_BANDS

    h, w = tile.shape
    meta = {"band_names": list(S2_BANDS), "quantification": 10000.0, "source": "synthetic-maps"}
    with eopatch.writing(
        ctx.storage, ctx.tile_uri("download", tile.id), ctx.marker_meta("download", tile.id, meta)
    ) as wr:
        out = wr.stream("data/BANDS", (h, w, len(S2_BANDS)), np.uint16)
        is_data = wr.stream("mask/IS_DATA", (h, w, 1), bool)
        is_valid = wr.stream("mask/IS_VALID", (h, w, 1), bool)
        for i in range(len(stamps)):
            out.append(bands[i])
            is_data.append(data[i][..., None])
            is_valid.append(valid[i][..., None])
        wr.save(eopatch.new_patch(tile, stamps))


def _write_features(ctx: RunContext, tile: Tile, ndvi: np.ndarray, dates: list[dt.date]) -> None:
    from lcms_tasks import eopatch
    from lcms_tasks.features.indices import FEATURE_NAMES

    h, w = tile.shape
    meta = {"feature_names": list(FEATURE_NAMES), "temporal": "interpolate", "step_days": 30}
    uri = ctx.tile_uri("features", tile.id)
    with eopatch.writing(ctx.storage, uri, ctx.marker_meta("features", tile.id, meta)) as wr:
        feats = wr.array("data/FEATURES", (len(dates), h, w, len(FEATURE_NAMES)), np.float32)
        feats[..., 0] = ndvi
        feats[..., 1:] = 0.5
        wr.save(eopatch.new_patch(tile, dates))


def make_project(
    folder: Path,
    *,
    aoi: Any,
    aoi_crs: int,
    tile_px: int = 64,
    resolution: float = 20.0,
    seasons: Sequence[str] = ("2023", "2024"),
    n_dates: int = 4,
    seed: int = 0,
    imagery: bool = True,
    features: bool = True,
) -> SyntheticProject:
    """Write a published project over the grid tiles of ``aoi`` (see the module docstring)."""
    from lcms_tasks.bands import S2_BANDS
    from lcms_tasks.config import load_config
    from lcms_tasks.publish.imagery import write_tile_imagery
    from lcms_tasks.stages.publish import _footprint_wgs84, transition_codes

    path = write_config(folder, aoi, aoi_crs, tile_px=tile_px, resolution=resolution, seasons=seasons)
    config = load_config(path)
    project = SyntheticProject(path, config, [], list(seasons))
    rng = np.random.default_rng(seed)
    for season in seasons:
        ctx = project.context(season)
        project.tiles = ctx.tiles()
        codes = transition_codes(ctx)
        start = config.season(season).start
        base = dt.datetime(start.year, start.month, start.day, 8, 0)
        stamps = [base + dt.timedelta(days=7 * i) for i in range(n_dates)]
        if n_dates > 1:  # a second acquisition the same day as the second one (another orbit)
            stamps.insert(2, stamps[1] + dt.timedelta(minutes=90))
        project.timestamps[season] = stamps
        feature_dates = [start + dt.timedelta(days=30 * k) for k in range(5)]
        project.feature_dates[season] = feature_dates
        for tile in project.tiles:
            key = (season, tile.id)
            h, w = tile.shape
            classes = _class_map(rng, h, w)
            confidence = np.where(classes > 0, rng.integers(30, 101, size=(h, w)), 255).astype(np.uint8)
            change: np.ndarray = np.zeros((h, w), dtype=np.uint8)
            if codes:
                patches = rng.random((-(-h // BLOCK_PX), -(-w // BLOCK_PX))) < 0.15
                picks = rng.integers(1, len(codes) + 1, size=patches.shape)
                coded = np.where(patches, picks, 0)
                change = np.kron(coded, np.ones((BLOCK_PX, BLOCK_PX), dtype=np.int64))[:h, :w].astype(np.uint8)
                change[classes == 0] = 0
            project.classes[key], project.confidence[key], project.change[key] = classes, confidence, change
            _write_publish(ctx, tile, {"CLASS": classes, "CONFIDENCE": confidence, "CHANGE": change}, codes)
            if imagery:
                t = len(stamps)
                bands = rng.integers(1, 6000, size=(t, h, w, len(S2_BANDS)), dtype=np.uint16)
                data = rng.random((t, h, w)) < 0.9
                data[:, :, : max(1, w // 16)] = False
                data[-1] = False  # the last acquisition has no data over this tile: not a date of its imagery
                bands[~data] = 0
                valid = data & (rng.random((t, h, w)) < 0.7)
                project.bands[key], project.data[key], project.valid[key] = bands, data, valid
                _write_download(ctx, tile, bands, data, valid, stamps)
                write_tile_imagery(tile, ctx, footprint_wgs84=_footprint_wgs84(tile))
            if features:
                ndvi = rng.uniform(-0.2, 0.9, size=(len(feature_dates), h, w)).astype(np.float32)
                ndvi[:, 0, 0] = np.nan  # a pixel without any valid observation
                project.ndvi[key] = ndvi
                _write_features(ctx, tile, ndvi, feature_dates)
    return project
