"""Stage prediction: class map, confidence and class probabilities per tile.

Loads the season's model (or another season's, ``model_season``) and the
tile's features EOPatch, checks that the flattened feature names match the
model's order exactly, and predicts in chunks of image rows so memory stays
bounded on large tiles. Pixels flagged NO_DATA are not predicted: CLASS 0,
CONFIDENCE 0, PROBABILITIES 0.

Output EOPatch: ``mask_timeless/CLASS`` (H, W, 1) uint8 legend ids,
``data_timeless/CONFIDENCE`` (H, W, 1) float32 (probability of the chosen
class), ``data_timeless/PROBABILITIES`` (H, W, C) uint8 percent with C = the
legend's classes in legend order (0 for classes the model does not know).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from lcms_tasks.errors import StageError
from lcms_tasks.schema import StrictModel

if TYPE_CHECKING:
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import Tile
    from lcms_tasks.ml.model import LcmsModel
    from lcms_tasks.preflight import Need
    from lcms_tasks.storage import Storage

NAME = "prediction"

log = logging.getLogger(__name__)


class Options(StrictModel):
    """Options of the prediction stage."""

    chunk_pixels: int = Field(
        65536, ge=1, description="Pixels predicted at once (whole image rows, at least one row); bounds memory."
    )
    model_season: str | None = Field(
        None, description="Season whose trained model to apply (default: the run's own season)."
    )
    write_probabilities: bool = Field(True, description="Also store per-class probabilities (uint8 percent).")


@dataclass
class TilePrediction:
    """Prediction arrays of one tile."""

    classes: np.ndarray  # (H, W) uint8 legend ids, 0 = no data
    confidence: np.ndarray  # (H, W) float32 in [0, 1], 0 where no data
    probabilities: np.ndarray | None  # (H, W, C) uint8 percent, legend order


def predict_tile(
    features: np.ndarray,
    no_data: np.ndarray | None,
    model: LcmsModel,
    output_class_ids: list[int],
    *,
    chunk_pixels: int = 65536,
    with_probabilities: bool = True,
) -> TilePrediction:
    """Predict (K, H, W, F) features chunk by chunk of rows.

    ``output_class_ids`` orders the PROBABILITIES channels; it must contain every model class.
    The result does not depend on ``chunk_pixels`` (each pixel is predicted independently).
    """
    from lcms_tasks.ml.matrix import pixel_matrix

    if features.ndim != 4:
        raise StageError(f"features must be (times, height, width, features), got shape {features.shape}")
    _, h, w, _ = features.shape
    out_pos = {cid: i for i, cid in enumerate(output_class_ids)}
    unknown = [int(c) for c in model.class_ids if int(c) not in out_pos]
    if unknown:
        raise StageError(f"model classes {unknown} are not in the legend {output_class_ids}")
    # Channel of each model column in the output probability stack.
    channels = np.array([out_pos[int(c)] for c in model.class_ids], dtype=np.intp)
    class_ids = model.class_ids.astype(np.uint8)

    classes = np.zeros((h, w), dtype=np.uint8)
    confidence = np.zeros((h, w), dtype=np.float32)
    probabilities = np.zeros((h, w, len(output_class_ids)), dtype=np.uint8) if with_probabilities else None
    valid_all = np.ones((h, w), dtype=bool) if no_data is None else ~np.asarray(no_data, dtype=bool).reshape(h, w)

    rows_per_chunk = max(1, chunk_pixels // max(w, 1))
    for r0 in range(0, h, rows_per_chunk):
        rows = slice(r0, min(h, r0 + rows_per_chunk))
        valid = valid_all[rows].ravel()
        if not valid.any():
            continue
        X = pixel_matrix(features, rows=rows)
        if not valid.all():
            X = X[valid]  # no-data pixels (all NaN) are not worth predicting
        proba = model.predict_proba(X)
        best = np.argmax(proba, axis=1)
        n_rows = rows.stop - rows.start
        # Flat views of the chunk's rows (contiguous), written only where valid.
        cls_view = classes[rows].reshape(-1)
        conf_view = confidence[rows].reshape(-1)
        cls_view[valid] = class_ids[best]
        conf_view[valid] = np.take_along_axis(proba, best[:, None], axis=1)[:, 0]
        if probabilities is not None:
            pct = np.zeros((proba.shape[0], len(output_class_ids)), dtype=np.uint8)
            # Rounding to whole percent; probabilities are in [0, 1] so 0..100 fits uint8.
            pct[:, channels] = np.rint(np.clip(proba, 0.0, 1.0) * 100.0).astype(np.uint8)
            probabilities[rows].reshape(n_rows * w, -1)[valid] = pct
    return TilePrediction(classes=classes, confidence=confidence, probabilities=probabilities)


# One model per process: mapped batches predict many tiles with the same model, and loading it from
# S3 for each tile would cost more than predicting a small tile. Keyed by URI and the marker's run id
# and write time, so a retrained model is picked up.
_CACHE_LOCK = threading.Lock()
_MODEL_CACHE: dict[str, tuple[tuple[Any, ...], LcmsModel]] = {}


def load_model_cached(storage: Storage, uri: str) -> LcmsModel:
    """The model at ``uri``, reused while its completion marker is unchanged."""
    from lcms_tasks.ml.model import LcmsModel

    marker = storage.read_marker(uri)
    key = (storage.root, marker.get("run_id"), marker.get("written_at"))
    with _CACHE_LOCK:
        hit = _MODEL_CACHE.get(uri)
        if hit is not None and hit[0] == key:
            return hit[1]
        model = LcmsModel.load(storage, uri)
        _MODEL_CACHE.clear()
        _MODEL_CACHE[uri] = (key, model)
        return model


def check(ctx: RunContext) -> None:
    """``model_season`` must be a season of the config."""
    options: Options = ctx.config.stages.prediction
    if options.model_season:
        ctx.config.season(options.model_season)


def needs(ctx: RunContext) -> list[Need]:
    """The features of every tile and the model (of the season, or of ``model_season``)."""
    from lcms_tasks.preflight import Need

    options: Options = ctx.config.stages.prediction
    return [
        Need("features", ctx.season),
        Need("training", options.model_season or ctx.season, artefact="model", what="the trained model"),
    ]


def run(tile: Tile, ctx: RunContext) -> list[str]:
    """Predict the class map of one tile from its features EOPatch."""
    from lcms_tasks import eopatch
    from lcms_tasks.ml.matrix import flat_feature_names
    from lcms_tasks.stages.features import excluded_as_not_ready

    options: Options = ctx.config.stages.prediction
    model_season = options.model_season or ctx.season
    ctx.config.season(model_season)  # unknown season: ConfigError naming the known ones
    model_uri = ctx.run_uri("training", "model", season=model_season)
    model = load_model_cached(ctx.storage, model_uri)

    features_uri = ctx.tile_uri("features", tile.id)
    patch, meta = eopatch.load(ctx.storage, features_uri, features=["data/FEATURES", "mask_timeless/NO_DATA"])
    features = patch.data["FEATURES"]
    no_data = patch.mask_timeless["NO_DATA"][..., 0] if "NO_DATA" in patch.mask_timeless else None
    not_ready = excluded_as_not_ready(meta)
    if not_ready:  # the readiness gate: mapped as no data, said in the marker
        no_data = np.ones(tile.shape, dtype=bool)
        log.info("prediction %s: not predicted, not ready: %s", tile.id, not_ready)
    if "feature_names" not in meta:
        raise StageError(f"tile {tile.id}: {features_uri} marker meta has no feature_names")
    names = flat_feature_names(list(meta["feature_names"]), features.shape[0])
    model.check_features(names, where=f"tile {tile.id} ({features_uri})")

    legend_ids = [c.id for c in ctx.config.legend()]
    t0 = time.perf_counter()
    result = predict_tile(
        features,
        no_data,
        model,
        legend_ids,
        chunk_pixels=options.chunk_pixels,
        with_probabilities=options.write_probabilities,
    )
    seconds = time.perf_counter() - t0
    h, w = result.classes.shape
    n_pred = int((result.classes > 0).sum())
    log.info("prediction %s: %d px in %.2f s (%.0f px/s)", tile.id, n_pred, seconds, n_pred / max(seconds, 1e-9))

    out = eopatch.new_patch(tile, [])
    out.mask_timeless["CLASS"] = result.classes[..., None]
    out.data_timeless["CONFIDENCE"] = result.confidence[..., None]
    if result.probabilities is not None:
        out.data_timeless["PROBABILITIES"] = result.probabilities
    ids, counts = np.unique(result.classes, return_counts=True)
    out_meta = {
        "class_ids": legend_ids,  # order of the PROBABILITIES channels
        "model_class_ids": [int(c) for c in model.class_ids],
        "model_uri": model_uri,
        "model_run_id": model.run_id,
        "model_season": model_season,
        "pixels_predicted": n_pred,
        "no_data_pixels": int(h * w - n_pred),
        "class_pixel_counts": {int(i): int(c) for i, c in zip(ids, counts, strict=True) if i > 0},
        "mean_confidence": float(result.confidence[result.classes > 0].mean()) if n_pred else None,
        "seconds": round(seconds, 3),
        "upstream": meta.get("run_id"),
        # The readiness gate's verdict on the tile's imagery (None: ready), as the features marker says.
        "not_ready": (meta.get("readiness") or {}).get("reason"),
        "not_predicted": not_ready,
    }
    uri = ctx.tile_uri(NAME, tile.id)
    eopatch.save(ctx.storage, uri, out, meta=ctx.marker_meta(NAME, tile.id, out_meta))
    return [uri]
