"""Stage 2, features: spectral indices on a regular time grid per tile.

Reads the download EOPatch, computes the configured features (default: NDVI,
NDWI, NDBI and tasselled-cap brightness/greenness/wetness; option ``features``
adds red-edge and SWIR indices and the bands themselves, see
:mod:`lcms_tasks.features.indices`), drops dates with too little valid
coverage, and harmonises time either by linear interpolation of valid
observations or by per-period mosaics.

Memory: the tile is processed end to end one chunk of rows at a time, straight
from the uint16 digital numbers (the normalized differences do not depend on
the scale; the tasselled cap uses its coefficients divided by the
quantification). Neither a float copy of the bands nor the (T, H, W, F) index
cube is ever built: beyond the input and the (K, H, W, F) output, the stage
needs a few tens of MB whatever the tile size.

Output EOPatch: ``data/FEATURES`` (K, H, W, F) float32 on the regular dates,
``mask_timeless/VALID_COUNT`` (H, W, 1) uint16 (valid observations per pixel;
0 marks pixels with no valid observation, whose features are NaN),
``mask_timeless/NO_DATA`` (H, W, 1) bool. The marker's ``readiness`` says whether the tile has
enough clear observations to be classified (:class:`Readiness`; an ``empty`` tile has none at all:
it flows through the chain as no data, not as an error).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from lcms_tasks.errors import StageError
from lcms_tasks.features.indices import FEATURE_NAMES, check_feature_names
from lcms_tasks.schema import StrictModel

if TYPE_CHECKING:
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import Tile
    from lcms_tasks.preflight import Need

NAME = "features"

log = logging.getLogger(__name__)


class Readiness(StrictModel):
    """When a tile has enough clear observations to be classified (the data-readiness gate)."""

    min_valid_observations: int = Field(
        3, ge=0, description="Valid (clear) observations over the season a pixel needs to count as observed."
    )
    max_share_below: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="A tile is not ready when more than this share of its pixels has fewer valid observations.",
    )
    not_ready: Literal["exclude", "flag"] = Field(
        "exclude",
        description="What a not-ready tile gets: 'exclude': no training samples and no prediction (mapped as no "
        "data); 'flag': sampled and predicted as any tile, flagged in its markers and the report.",
    )


def readiness_of(n_valid: np.ndarray, footprint: np.ndarray | None, n_dates: int, options: Readiness) -> dict[str, Any]:
    """The readiness of a tile from its clear-observation counts per pixel (H, W).

    ``footprint`` (H, W) bool: the pixels the source has data for on some date (None: all). Pixels
    outside it (sea beyond the coast, outside the imagery) do not count against the tile: the gate
    measures clouds over what the source covers. ``empty`` (a reason, or None): no clear observation
    at all, with why (no data: outside the source's footprint, e.g. sea; or every date clouded). An
    empty tile is never ready.
    """
    counts = np.asarray(n_valid)
    inside = np.ones(counts.shape, bool) if footprint is None else np.asarray(footprint, bool)
    covered = counts[inside]
    share_below = float((covered < options.min_valid_observations).mean()) if covered.size else 1.0
    empty: str | None = None
    if not covered.size or int(covered.max()) == 0:
        empty = (
            "no data: the source has no pixel of this tile in the season (outside its footprint, e.g. sea)"
            if not covered.size
            else f"no clear observation: all {n_dates} date(s) of the season clouded or without data"
        )
    ready = empty is None and share_below <= options.max_share_below
    reason = empty
    if empty is None and not ready:
        reason = (
            f"{100 * share_below:.0f} % of the pixels with data have fewer than {options.min_valid_observations} "
            f"clear observation(s) (at most {100 * options.max_share_below:.0f} % allowed)"
        )
    return {
        "ready": ready,
        "empty": empty,
        "reason": reason,
        "share_below": round(share_below, 4),
        "mean_valid_observations": round(float(covered.mean()), 3) if covered.size else 0.0,
        "footprint_share": round(float(inside.mean()), 4) if inside.size else 0.0,
        "min_valid_observations": options.min_valid_observations,
        "max_share_below": options.max_share_below,
        "not_ready": options.not_ready,
    }


def excluded_as_not_ready(features_meta: dict[str, Any]) -> str | None:
    """Why the readiness gate keeps this tile out of training and prediction (None: it does not)."""
    readiness = features_meta.get("readiness") or {}
    if readiness.get("ready", True) or readiness.get("not_ready") == "flag":
        return None
    return str(readiness.get("reason") or "not ready")


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
    features: tuple[str, ...] = Field(
        FEATURE_NAMES,
        min_length=1,
        description="Features per date, in output order: indices (NDVI, NDWI, NDBI, NDRE, NDVI705, NDMI, NBR, "
        "NDTI, TC_BRIGHTNESS, TC_GREENNESS, TC_WETNESS) and bands as reflectance (B02, B8A, ...). The tasselled "
        "cap works without B01, B09, B10 (left out) and B8A (B08 stands in). The default is the benchmarked set "
        "the demo is tuned on and eo-learn's chain is compared with; on real crop parcels adding the bands "
        "(B02 ... B12) and NDRE, NDVI705 raised cross-validated macro-F1, NBR and NDTI did not (`lcms parcels "
        "evaluate`). Keep "
        "NDVI, NDWI and NDBI for the post-processing superpixels (its segmentation image uses them).",
    )
    readiness: Readiness = Field(
        default_factory=Readiness,
        description="The data-readiness gate before classification: tiles with too few clear observations.",
    )

    @field_validator("features")
    @classmethod
    def _known_features(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_feature_names(v)


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
    See :func:`compute_features` (this is it with ``quantification=1``).
    """
    return compute_features(reflectance, valid, dates, band_names, start, end, options)


def compute_features(
    bands: np.ndarray | Any,
    valid: np.ndarray,
    dates: list[dt.date],
    band_names: list[str],
    start: dt.date,
    end: dt.date,
    options: Options,
    *,
    quantification: float = 1.0,
    chunk_rows: int | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[dt.date], dict[str, object]]:
    """Features of one tile, computed one chunk of rows at a time.

    Args:
        bands: ``(T, H, W, B)`` reflectance x ``quantification`` (an array, or a reader such as
            :class:`lcms_tasks.eopatch.StoredArray` indexed as ``bands[dates, rows]``): uint16 digital numbers with the
            source's quantification (e.g. 10000), or float reflectance with 1. Never converted as a
            whole: each chunk's kept dates are read, turned into indices, harmonised in time and
            written into the output, so memory beyond the output is a few tens of MB.
        valid: ``(T, H, W)`` bool (``(T, H, W, 1)`` accepted); invalid observations are never used.
        dates: the T acquisition dates, non-decreasing.
        band_names: names of the last axis of ``bands``.
        start, end: the season; the output dates are ``start, start + step_days, ...`` up to ``end``.
        options: the stage options (coverage threshold, temporal method, step, chunk rows).
        quantification: see above.
        chunk_rows: rows per chunk, overriding ``options.chunk_rows`` (None there too: ~8k pixels).
        out: optional ``(K, H, W, F)`` float32 array to fill (e.g. file-backed); returned as the features.

    Returns:
        ``(features (K, H, W, F) float32, n_valid (H, W) uint16, regular dates, quality figures)``.
    """
    from lcms_tasks.features import indices, temporal

    valid = np.asarray(valid, dtype=bool)
    if valid.ndim == 4 and valid.shape[-1] == 1:
        valid = valid[..., 0]
    if bands.ndim != 4 or valid.shape != bands.shape[:3] or len(dates) != bands.shape[0]:
        raise ValueError(
            f"bands {bands.shape} must be (T, H, W, B) with valid (T, H, W) {valid.shape} and T = {len(dates)} dates"
        )
    keep = temporal.select_dates(valid, options.min_valid_coverage) if len(dates) else np.zeros(0, bool)
    kept_dates = [d for d, k in zip(dates, keep, strict=True) if k]
    target_dates = temporal.regular_dates(start, end, options.step_days)
    h, w = valid.shape[1:3]
    quality: dict[str, object] = {
        "dates_total": len(dates),
        "dates_dropped": int(len(dates) - len(kept_dates)),
        "dropped_dates": [d.isoformat() for d, k in zip(dates, keep, strict=True) if not k],
    }
    n_feat = len(options.features)
    shape = (len(target_dates), h, w, n_feat)
    if out is None:
        feats = np.empty(shape, dtype=np.float32)
    elif tuple(out.shape) != shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 with shape {shape}, got {out.dtype} {tuple(out.shape)}")
    else:
        feats = out
    n_valid = np.zeros((h, w), np.uint16)
    if not kept_dates:
        feats.fill(np.nan)
        return feats, n_valid, target_dates, quality
    idx = np.flatnonzero(keep)
    all_kept = idx.size == bands.shape[0]
    origin = dt.date(start.year, 1, 1)
    times = np.array([(d - origin).days for d in kept_dates], dtype=np.float32)
    targets = np.array([(d - origin).days for d in target_dates], dtype=np.float32)
    rows_per_chunk = chunk_rows if chunk_rows is not None else options.chunk_rows
    for rows in temporal.row_chunks(h, w, rows_per_chunk):
        # The chunk's kept observations: a small copy of the input dtype (uint16 DN: 2 bytes per band).
        chunk_bands = bands[:, rows] if all_kept else bands[idx, rows]
        chunk_valid = valid[:, rows] if all_kept else valid[idx, rows]
        values = indices.compute_indices(
            chunk_bands, band_names, quantification=quantification, features=options.features
        )
        del chunk_bands
        if options.temporal == "interpolate":
            chunk_feats, chunk_n = temporal.interpolate_linear(values, chunk_valid, times, targets, chunk_rows=None)
        else:
            chunk_feats, chunk_n = temporal.mosaic(
                values, chunk_valid, times, targets, float(options.step_days), options.mosaic_method, chunk_rows=None
            )
        feats[:, rows] = chunk_feats
        n_valid[rows] = chunk_n
    return feats, n_valid, target_dates, quality


def needs(ctx: RunContext) -> list[Need]:
    """The download of every tile of the run."""
    from lcms_tasks.preflight import Need

    return [Need("download", ctx.season, what="the download (imagery)")]


def run(tile: Tile, ctx: RunContext) -> list[str]:
    """Compute the features EOPatch of one tile from its download EOPatch."""
    from lcms_tasks import eopatch
    from lcms_tasks.features import temporal

    options: Options = ctx.config.stages.features
    season = ctx.config.season(ctx.season)
    src_uri = ctx.tile_uri("download", tile.id)
    uri = ctx.tile_uri(NAME, tile.id)
    target_dates = temporal.regular_dates(season.start, season.end, options.step_days)
    height, width = tile.shape
    meta: dict[str, Any] = {
        "feature_names": list(options.features),
        "temporal": options.temporal,
        "step_days": options.step_days,
    }
    marker = ctx.marker_meta(NAME, tile.id, meta)
    # The band cube is read block of rows by block of rows from its file, and the features are written
    # into their file as they are computed: the stage holds neither the input cube (nor a float copy of
    # it) nor an in-memory copy of the output, only one chunk.
    with (
        eopatch.open_rows(
            ctx.storage, src_uri, features=["mask/IS_VALID", "mask/IS_DATA"], by_rows=["data/BANDS"]
        ) as opened,
        eopatch.writing(ctx.storage, uri, marker) as writer,
    ):
        src, src_meta, arrays = opened
        if (src.mask["IS_VALID"].shape[1:3]) != (height, width):
            raise StageError(
                f"tile {tile.id}: {src_uri} is {src.mask['IS_VALID'].shape[1:3]} px, the grid says {tile.shape}"
            )
        out = writer.array("data/FEATURES", (len(target_dates), height, width, len(options.features)), np.float32)
        _, n_valid, dates_out, quality = compute_features(
            arrays["data/BANDS"],
            src.mask["IS_VALID"][..., 0],
            [t.date() for t in src.timestamps or []],
            list(src_meta["band_names"]),
            season.start,
            season.end,
            options,
            quantification=float(src_meta.get("quantification", 10000.0)),
            out=out,
        )
        footprint: np.ndarray | None = None
        if "IS_DATA" in src.mask:
            footprint = np.asarray(np.asarray(src.mask["IS_DATA"][..., 0]).any(axis=0), dtype=bool)
        n_dates = len(src.timestamps or [])
        del src, arrays
        readiness = readiness_of(n_valid, footprint, n_dates, options.readiness)
        if readiness["reason"]:
            log.warning("%s %s: not ready: %s", NAME, tile.id, readiness["reason"])
        patch = eopatch.new_patch(tile, dates_out)
        patch.mask_timeless["VALID_COUNT"] = n_valid[..., None]
        patch.mask_timeless["NO_DATA"] = (n_valid == 0)[..., None]
        writer.save(patch)
        quality["no_data_pixels"] = int((n_valid == 0).sum())
        quality["mean_valid_observations"] = float(n_valid.mean()) if n_valid.size else 0.0
        # the marker is written when the block ends: figures known only now still go into it
        marker.update(quality=quality, upstream=src_meta.get("run_id"), readiness=readiness)
    return [uri]
