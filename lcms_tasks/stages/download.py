"""Stage 1, download: the season's imagery, cloud mask and valid-data mask per tile.

The configured source (synthetic by default) delivers Sentinel-2 digital
numbers with a data mask and a cloud mask; this stage derives the valid-data
mask (data and not cloud, cloud optionally dilated) and stores everything as
one EOPatch per tile.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from lcms_tasks.errors import StageError
from lcms_tasks.schema import StrictModel

if TYPE_CHECKING:
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import Tile

NAME = "download"


class Options(StrictModel):
    """Options of the download stage."""

    cloud_dilation_px: int = Field(
        2,
        ge=0,
        le=50,
        description="Dilate the cloud mask by this many pixels before deriving IS_VALID "
        "(cloud edges are the least reliable part of a cloud mask).",
    )
    max_cloud_coverage: float = Field(
        1.0, ge=0.0, le=1.0, description="Drop acquisitions whose cloud share over the tile exceeds this."
    )


def valid_mask(data_mask: np.ndarray, cloud_mask: np.ndarray, dilation_px: int) -> np.ndarray:
    """IS_VALID = data and not (cloud dilated by ``dilation_px``); inputs and output (T, H, W) bool."""
    from scipy import ndimage

    clouds = cloud_mask.astype(bool)
    if dilation_px > 0 and clouds.any():
        structure = np.zeros((1, 3, 3), dtype=bool)
        structure[0] = ndimage.generate_binary_structure(2, 1)
        clouds = ndimage.binary_dilation(clouds, structure=structure, iterations=dilation_px)
    return data_mask.astype(bool) & ~clouds


def run(tile: Tile, ctx: RunContext) -> list[str]:
    """Fetch the tile's season from the configured source and store it as an EOPatch.

    Dates are written as the source delivers them, one at a time, so the stage's memory is one date's
    arrays (plus the source's own working set), not the season's cube.
    """
    from lcms_tasks import eopatch
    from lcms_tasks.sources import get_source

    options: Options = ctx.config.stages.download
    interval = ctx.config.season(ctx.season)
    acq = get_source(ctx.config).fetch(tile, ctx.season, interval.start, interval.end)
    height, width = tile.shape
    meta: dict[str, Any] = {
        "band_names": list(acq.band_names),
        "quantification": acq.quantification,
        "source": acq.source_name,
    }
    uri = ctx.tile_uri(NAME, tile.id)
    marker = ctx.marker_meta(NAME, tile.id, meta)
    with eopatch.writing(ctx.storage, uri, marker) as writer:
        bands = writer.stream("data/BANDS", (height, width, len(acq.band_names)), np.uint16)
        probability = writer.stream("data/CLP", (height, width, 1), np.uint8)
        masks = {
            name: writer.stream(f"mask/{name}", (height, width, 1), bool) for name in ("IS_DATA", "CLM", "IS_VALID")
        }
        kept: list[dt.date] = []
        dropped: list[str] = []
        for date, slab in zip(acq.dates, acq.iter_dates(), strict=True):
            if options.max_cloud_coverage < 1.0 and slab.cloud_mask.mean() > options.max_cloud_coverage:
                dropped.append(date.isoformat())
                continue
            valid = valid_mask(slab.data_mask[None], slab.cloud_mask[None], options.cloud_dilation_px)[0]
            try:
                bands.append(slab.bands)
                probability.append(slab.cloud_probability[..., None])
                masks["IS_DATA"].append(slab.data_mask[..., None])
                masks["CLM"].append(slab.cloud_mask[..., None])
                masks["IS_VALID"].append(valid[..., None])
            except ValueError as exc:  # a source delivering arrays of another shape or type
                raise StageError(f"tile {tile.id}: {acq.source_name} source, date {date}: {exc}") from exc
            kept.append(date)
        patch = eopatch.new_patch(tile, kept)
        for name, array in acq.truth_rasters.items():
            patch.mask_timeless[name] = array[..., None]
        for name, frame in acq.truth_vectors.items():
            patch.vector_timeless[name] = frame
        writer.save(patch)
        # the marker is written when the block ends, so the counts known only now still go into it
        marker.update(n_dates=len(kept), n_dates_dropped_cloudy=len(dropped), dates_dropped_cloudy=dropped)
    return [uri]
