"""Stage 1, download: the season's imagery, cloud mask and valid-data mask per tile.

The configured source (synthetic by default) delivers Sentinel-2 digital
numbers with a data mask and a cloud mask; this stage derives the valid-data
mask (data and not cloud, cloud optionally dilated) and stores everything as
one EOPatch per tile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

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
    """Fetch the tile's season from the configured source and store it as an EOPatch."""
    from lcms_tasks import eopatch
    from lcms_tasks.sources import get_source

    options: Options = ctx.config.stages.download
    interval = ctx.config.season(ctx.season)
    source = get_source(ctx.config)
    acq = source.fetch(tile, ctx.season, interval.start, interval.end)
    if options.max_cloud_coverage < 1.0 and len(acq.dates):
        cloud_share = acq.cloud_mask.reshape(len(acq.dates), -1).mean(axis=1)
        keep = cloud_share <= options.max_cloud_coverage
        acq = acq.subset(keep)
    valid = valid_mask(acq.data_mask, acq.cloud_mask, options.cloud_dilation_px)
    patch = eopatch.new_patch(tile, acq.dates)
    patch.data["BANDS"] = acq.bands
    patch.data["CLP"] = acq.cloud_probability[..., None]
    patch.mask["IS_DATA"] = acq.data_mask[..., None]
    patch.mask["CLM"] = acq.cloud_mask[..., None]
    patch.mask["IS_VALID"] = valid[..., None]
    for name, array in acq.truth_rasters.items():
        patch.mask_timeless[name] = array[..., None]
    for name, frame in acq.truth_vectors.items():
        patch.vector_timeless[name] = frame
    meta = {
        "band_names": list(acq.band_names),
        "quantification": acq.quantification,
        "source": acq.source_name,
        "n_dates": len(acq.dates),
    }
    uri = ctx.tile_uri(NAME, tile.id)
    eopatch.save(ctx.storage, uri, patch, meta=ctx.marker_meta(NAME, tile.id, meta))
    return [uri]
