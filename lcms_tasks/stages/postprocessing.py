"""Stage postprocessing: clean the predicted class map of each tile.

Reads prediction/T (``mask_timeless/CLASS``, ``data_timeless/CONFIDENCE`` and,
unless confidence is carried, ``data_timeless/PROBABILITIES``) and, for
superpixel segmentation, features/T (``data/FEATURES``). Steps, each skippable,
in this order (see :mod:`lcms_tasks.postprocess`):

1. superpixel segmentation (Felzenszwalb or SLIC) of a compact image of
   temporal feature statistics, then majority vote of the classes per segment;
2. modal filter;
3. minimum mapping unit: small patches merged into the neighbouring class
   sharing the longest border;
4. morphological opening per class (holes refilled from neighbours).

No-data pixels (class 0) stay exactly where they were. Output EOPatch:
``mask_timeless/CLASS`` (H, W, 1) uint8 and ``data_timeless/CONFIDENCE``
(H, W, 1) float32; the marker meta lists the steps with their parameters and
pixels changed per class pair.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, field_validator

from lcms_tasks.schema import StrictModel

if TYPE_CHECKING:
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import Tile
    from lcms_tasks.postprocess import PostprocessSettings
    from lcms_tasks.preflight import Need

NAME = "postprocessing"

log = logging.getLogger(__name__)


class Options(StrictModel):
    """Options of the postprocessing stage."""

    segmentation: Literal["felzenszwalb", "slic", "none"] = Field(
        "felzenszwalb",
        description="Superpixels for the per-segment majority vote, computed on NDVI median/max, NDWI and NDBI "
        "medians of the features ('none': skip the vote).",
    )
    felzenszwalb_scale: float = Field(
        10.0, gt=0, description="Felzenszwalb scale: higher gives larger segments (image scaled to [0, 1])."
    )
    felzenszwalb_sigma: float = Field(0.5, ge=0, description="Gaussian smoothing (px) before Felzenszwalb.")
    felzenszwalb_min_size: int = Field(5, ge=1, description="Minimum Felzenszwalb segment size in pixels.")
    slic_n_segments: int | None = Field(
        None, ge=1, description="Approximate number of SLIC segments per tile (None: one per ~40 pixels)."
    )
    slic_compactness: float = Field(
        0.1, gt=0, description="SLIC compactness (image in [0, 1]): higher gives squarer segments."
    )
    modal_size: int = Field(3, ge=0, le=51, description="Modal filter window side in pixels, odd (0: skip).")
    min_mapping_unit_px: int = Field(
        16, ge=0, description="Patches smaller than this many pixels merge into a neighbouring class (0 or 1: skip)."
    )
    mmu_max_iterations: int = Field(20, ge=1, le=1000, description="Bound on the minimum-mapping-unit merge passes.")
    erosion_dilation_px: int = Field(
        0, ge=0, le=20, description="Radius of a per-class morphological opening (0: skip)."
    )
    confidence: Literal["segment_mean", "class_probability", "carry"] = Field(
        "segment_mean",
        description="Output CONFIDENCE: the final class's probability averaged per segment ('segment_mean'), "
        "per pixel ('class_probability'), or the prediction's confidence unchanged ('carry').",
    )

    @field_validator("modal_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v not in (0, 1) and v % 2 == 0:
            raise ValueError(f"modal_size must be odd (a window centred on the pixel) or 0 to skip, got {v}")
        return v

    def settings(self) -> PostprocessSettings:
        """These options as the pure function's settings."""
        from lcms_tasks.postprocess import PostprocessSettings

        return PostprocessSettings(
            segmentation=self.segmentation,
            felzenszwalb_scale=self.felzenszwalb_scale,
            felzenszwalb_sigma=self.felzenszwalb_sigma,
            felzenszwalb_min_size=self.felzenszwalb_min_size,
            slic_n_segments=self.slic_n_segments,
            slic_compactness=self.slic_compactness,
            modal_size=self.modal_size,
            min_mapping_unit_px=self.min_mapping_unit_px,
            mmu_max_iterations=self.mmu_max_iterations,
            erosion_dilation_px=self.erosion_dilation_px,
            confidence=self.confidence,
        )


def needs(ctx: RunContext) -> list[Need]:
    """The prediction of every tile (and its features when a segmentation is configured)."""
    from lcms_tasks.preflight import Need

    options: Options = ctx.config.stages.postprocessing
    out = [Need("prediction", ctx.season, what="the predicted map")]
    if options.segmentation != "none":
        out.append(Need("features", ctx.season, what="the features (for the segmentation)"))
    return out


def _product_mask(tile: Tile, ctx: RunContext) -> tuple[np.ndarray, dict[str, object]] | None:
    """Where this product is mapped (the mask product's post-processed map in the mask classes), or None.

    The mask product comes earlier in ``products``, so the runner has post-processed its tile already.
    """
    from lcms_tasks import eopatch
    from lcms_tasks.errors import ArtefactMissingError, UpstreamMissingError

    mask = ctx.config.product(ctx.product_name).mask
    if mask is None:
        return None
    uri = ctx.tile_uri(NAME, tile.id, product=mask.product)
    try:
        other, _ = eopatch.load(ctx.storage, uri, features=["mask_timeless/CLASS"])
    except ArtefactMissingError as err:
        raise UpstreamMissingError(
            f"tile {tile.id}: product {ctx.product_name!r} is mapped inside {mask.product!r} classes "
            f"{', '.join(mask.classes)}, but the {mask.product} map of the tile is missing ({uri}): "
            f"post-process {mask.product} first",
            stage=NAME,
            season=ctx.season,
            tiles=[tile.id],
        ) from err
    legend = ctx.config.legend(ctx.config.product(mask.product).legend)
    ids = [c.id for c in legend if c.name in set(mask.classes)]
    inside = np.isin(np.asarray(other.mask_timeless["CLASS"])[..., 0], ids)
    return inside, {"product": mask.product, "classes": list(mask.classes), "class_ids": ids}


def run(tile: Tile, ctx: RunContext) -> list[str]:
    """Post-process the prediction of one tile (then, for a masked product, clear it outside the mask)."""
    from lcms_tasks import eopatch
    from lcms_tasks.errors import StageError
    from lcms_tasks.postprocess import postprocess_class_map, segmentation_image

    options: Options = ctx.config.stages.postprocessing
    t0 = time.perf_counter()
    pred_uri = ctx.tile_uri("prediction", tile.id)
    wanted = ["mask_timeless/CLASS", "data_timeless/CONFIDENCE"]
    if options.confidence != "carry":
        wanted.append("data_timeless/PROBABILITIES")
    pred, pred_meta = eopatch.load(ctx.storage, pred_uri, features=wanted)
    cls = np.asarray(pred.mask_timeless["CLASS"])[..., 0].astype(np.uint8)
    confidence = np.asarray(pred.data_timeless["CONFIDENCE"])[..., 0].astype(np.float32)
    legend_ids = [c.id for c in ctx.config.legend()]
    class_ids = [int(c) for c in pred_meta.get("class_ids", legend_ids)]
    unknown = sorted(set(np.unique(cls).tolist()) - {0, *legend_ids})
    if unknown:
        raise StageError(f"prediction of tile {tile.id} ({pred_uri}) has class ids {unknown} not in the legend")
    probabilities = None
    if options.confidence != "carry":
        probabilities = np.asarray(pred.data_timeless["PROBABILITIES"])
        if probabilities.shape[-1] != len(class_ids):
            raise StageError(
                f"prediction of tile {tile.id} ({pred_uri}): PROBABILITIES has {probabilities.shape[-1]} channels "
                f"but meta class_ids lists {len(class_ids)} classes"
            )

    seg_image = None
    if options.segmentation != "none":
        feat_uri = ctx.tile_uri("features", tile.id)
        feats, feat_meta = eopatch.load(ctx.storage, feat_uri, features=["data/FEATURES"])
        try:
            seg_image = segmentation_image(np.asarray(feats.data["FEATURES"]), list(feat_meta["feature_names"]))
        except (ValueError, KeyError) as err:
            raise StageError(f"features of tile {tile.id} ({feat_uri}) cannot feed segmentation: {err}") from err
        if seg_image.shape[:2] != cls.shape:
            raise StageError(
                f"tile {tile.id}: features {seg_image.shape[:2]} and prediction {cls.shape} differ in size"
            )

    result = postprocess_class_map(
        cls, confidence, options.settings(), seg_image=seg_image, probabilities=probabilities, class_ids=class_ids
    )
    masked = _product_mask(tile, ctx)
    if masked is not None:
        inside, mask_meta = masked
        result.classes[~inside] = 0
        result.confidence[~inside] = 0.0
        result.steps.append({"step": "product_mask", **mask_meta, "pixels_inside": int(inside.sum())})
    patch = eopatch.new_patch(tile, [])
    patch.mask_timeless["CLASS"] = result.classes[..., None]
    patch.data_timeless["CONFIDENCE"] = result.confidence[..., None]
    values, counts = np.unique(result.classes, return_counts=True)
    meta = {
        "steps": result.steps,
        "steps_applied": [s["step"] for s in result.steps],
        "options": options.model_dump(mode="json"),
        "class_ids": class_ids,
        "class_pixels": {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)},
        "pixels_changed": int((result.classes != cls).sum()),
        "upstream": pred_meta.get("run_id"),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    uri = ctx.tile_uri(NAME, tile.id)
    eopatch.save(ctx.storage, uri, patch, meta=ctx.marker_meta(NAME, tile.id, meta))
    log.info("postprocessing %s: %s, %d pixels changed", tile.id, meta["steps_applied"], meta["pixels_changed"])
    return [uri]
