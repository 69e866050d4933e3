"""Stage 2, features: spectral indices on a regular time grid per tile.

Reads the download EOPatch, converts digital numbers to reflectance, computes
NDVI, NDWI, NDBI and tasselled-cap brightness/greenness/wetness, drops dates
with too little valid coverage, and harmonises time either by linear
interpolation of valid observations or by per-period mosaics.

Output EOPatch: ``data/FEATURES`` (K, H, W, F) float32 on the regular dates,
``mask_timeless/VALID_COUNT`` (H, W, 1) uint16 (valid observations per pixel;
0 marks pixels with no valid observation, whose features are NaN),
``mask_timeless/NO_DATA`` (H, W, 1) bool.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from lcms_tasks.schema import StrictModel

if TYPE_CHECKING:
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import Tile

NAME = "features"


class Options(StrictModel):
    """Options of the features stage."""

    min_valid_coverage: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Drop acquisition dates whose share of valid pixels over the tile is below this.",
    )
    temporal: Literal["interpolate", "mosaic"] = Field(
        "interpolate", description="Harmonise time by linear interpolation or by per-period mosaics."
    )
    step_days: int = Field(10, ge=1, le=120, description="Step of the regular output date grid, in days.")
    mosaic_method: Literal["median", "mean"] = Field("median", description="Compositing rule of mosaics.")
    chunk_rows: int | None = Field(
        None,
        ge=1,
        description="Rows per processing chunk, bounding memory (None: automatic chunks of about 8k pixels).",
    )


def compute_tile_features(
    reflectance: np.ndarray,
    valid: np.ndarray,
    dates: list[dt.date],
    band_names: list[str],
    start: dt.date,
    end: dt.date,
    options: Options,
) -> tuple[np.ndarray, np.ndarray, list[dt.date], dict[str, object]]:
    """Features of one tile from reflectance (T, H, W, B) float32 and valid (T, H, W) bool.

    Returns (features (K, H, W, F), n_valid (H, W), regular dates, quality figures).
    """
    from lcms_tasks.features import indices, temporal

    keep = temporal.select_dates(valid, options.min_valid_coverage) if len(dates) else np.zeros(0, bool)
    kept_dates = [d for d, k in zip(dates, keep, strict=True) if k]
    target_dates = temporal.regular_dates(start, end, options.step_days)
    h, w = valid.shape[1:3]
    quality: dict[str, object] = {
        "dates_total": len(dates),
        "dates_dropped": int(len(dates) - len(kept_dates)),
        "dropped_dates": [d.isoformat() for d, k in zip(dates, keep, strict=True) if not k],
    }
    n_feat = len(indices.FEATURE_NAMES)
    if not kept_dates:
        feats = np.full((len(target_dates), h, w, n_feat), np.nan, dtype=np.float32)
        return feats, np.zeros((h, w), np.uint16), target_dates, quality
    idx = np.flatnonzero(keep)
    values = indices.compute_indices(reflectance[idx], band_names)
    valid_kept = valid[idx]
    origin = dt.date(start.year, 1, 1)
    times = np.array([(d - origin).days for d in kept_dates], dtype=np.float32)
    targets = np.array([(d - origin).days for d in target_dates], dtype=np.float32)
    if options.temporal == "interpolate":
        feats, n_valid = temporal.interpolate_linear(values, valid_kept, times, targets, chunk_rows=options.chunk_rows)
    else:
        feats, n_valid = temporal.mosaic(
            values, valid_kept, times, targets, float(options.step_days), options.mosaic_method
        )
    return feats, n_valid, target_dates, quality


def run(tile: Tile, ctx: RunContext) -> list[str]:
    """Compute the features EOPatch of one tile from its download EOPatch."""
    from lcms_tasks import eopatch
    from lcms_tasks.features import indices

    options: Options = ctx.config.stages.features
    season = ctx.config.season(ctx.season)
    src_uri = ctx.tile_uri("download", tile.id)
    src, src_meta = eopatch.load(ctx.storage, src_uri, features=["data/BANDS", "mask/IS_VALID"])
    quant = float(src_meta.get("quantification", 10000.0))
    band_names = list(src_meta["band_names"])
    bands = src.data["BANDS"]
    reflectance = np.empty(bands.shape, dtype=np.float32)
    np.multiply(bands, np.float32(1.0 / quant), out=reflectance, casting="unsafe")
    valid = src.mask["IS_VALID"][..., 0]
    dates = [t.date() for t in src.timestamps or []]
    feats, n_valid, target_dates, quality = compute_tile_features(
        reflectance, valid, dates, band_names, season.start, season.end, options
    )
    patch = eopatch.new_patch(tile, target_dates)
    patch.data["FEATURES"] = feats
    patch.mask_timeless["VALID_COUNT"] = n_valid[..., None]
    patch.mask_timeless["NO_DATA"] = (n_valid == 0)[..., None]
    quality["no_data_pixels"] = int((n_valid == 0).sum())
    quality["mean_valid_observations"] = float(n_valid.mean()) if n_valid.size else 0.0
    meta = {
        "feature_names": list(indices.FEATURE_NAMES),
        "temporal": options.temporal,
        "step_days": options.step_days,
        "quality": quality,
        "upstream": src_meta.get("run_id"),
    }
    uri = ctx.tile_uri(NAME, tile.id)
    eopatch.save(ctx.storage, uri, patch, meta=ctx.marker_meta(NAME, tile.id, meta))
    return [uri]
