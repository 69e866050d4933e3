"""Stage 4, sampling: stratified, seeded sampling of labelled pixels per tile.

Only pixels that are labelled and samplable (REFERENCE_SAMPLABLE: eroded, not NO_DATA)
are drawn. Each class gets at most ``max_per_class`` pixels (all of them when it has
fewer, so rare classes are represented), or, in fraction mode, a share of its pixels
with a floor of ``min_per_class``. The generator is seeded from the options' seed and a
stable hash of the tile id, so a rerun draws the same pixels.

Output folder ``samples.npz``: X (n, K*F) float32 (the features' time series, as
:mod:`lcms_tasks.ml.matrix` flattens them), y (n,) uint8, row, col (n,) int32,
polygon_id (n,) int64 (stable polygon keys from add_reference).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from lcms_tasks.schema import StrictModel

if TYPE_CHECKING:
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import Tile
    from lcms_tasks.preflight import Need

NAME = "sampling"
SAMPLES_FILE = "samples.npz"
NO_REFERENCE = "no reference pixels"
log = logging.getLogger(__name__)


class Options(StrictModel):
    """Options of the sampling stage."""

    max_per_class: int = Field(2000, ge=1, description="At most this many pixels per class and tile.")
    fraction: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="If set, sample this share of each class's samplable pixels (still capped by max_per_class).",
    )
    min_per_class: int = Field(
        100,
        ge=0,
        description="Fraction mode: at least this many pixels per class (all of them if it has fewer), "
        "so rare classes are represented.",
    )
    seed: int = Field(42, description="Seed; combined with a stable hash of the tile id.")


def tile_rng(seed: int, tile_id: str) -> np.random.Generator:
    """The tile's generator: ``seed`` plus a stable (hashlib) hash of ``tile_id``, never Python's ``hash``."""
    digest = int.from_bytes(hashlib.sha256(tile_id.encode()).digest()[:8], "big")
    return np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, digest])


def class_quota(n_available: int, cap: int, fraction: float | None, min_per_class: int) -> int:
    """How many of ``n_available`` pixels of a class to draw."""
    if fraction is None:
        return min(n_available, cap)
    wanted = max(math.ceil(fraction * n_available), min_per_class)
    return min(n_available, cap, wanted)


def sample_pixels(
    labels: np.ndarray,
    samplable: np.ndarray,
    n_per_class: int | Mapping[int, int],
    fraction: float | None,
    rng: np.random.Generator,
    *,
    min_per_class: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified sample of (rows, cols) among labelled (> 0) ``samplable`` pixels of ``labels`` (H, W).

    ``n_per_class`` caps the pixels per class (an int for all, or {class id: cap}; a class
    absent from the mapping is not sampled). Without ``fraction`` a class gets
    min(available, cap) pixels; with it, ceil(fraction * available), at least
    ``min_per_class``, at most the cap. No pixel is drawn twice. The result is sorted in
    row-major order (reads the features in memory order).
    """
    if labels.shape != samplable.shape or labels.ndim != 2:
        raise ValueError(f"labels {labels.shape} and samplable {samplable.shape} must be the same (H, W) shape")
    flat_labels = labels.ravel()
    eligible = np.flatnonzero(samplable.ravel().astype(bool) & (flat_labels > 0))
    if eligible.size == 0:
        empty = np.zeros(0, np.int32)
        return empty, empty.copy()
    eligible_labels = flat_labels[eligible]
    picked: list[np.ndarray] = []
    for cls in np.unique(eligible_labels):
        cap = n_per_class if isinstance(n_per_class, int) else int(n_per_class.get(int(cls), 0))
        pool = eligible[eligible_labels == cls]
        n = class_quota(pool.size, cap, fraction, min_per_class)
        if n <= 0:
            continue
        picked.append(pool if n == pool.size else rng.choice(pool, size=n, replace=False))
    flat = np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)
    rows, cols = np.divmod(flat, labels.shape[1])
    return rows.astype(np.int32), cols.astype(np.int32)


def class_counts(y: np.ndarray) -> dict[str, int]:
    """{class id (str, JSON-friendly): count}."""
    ids, counts = np.unique(y, return_counts=True)
    return {str(int(c)): int(n) for c, n in zip(ids, counts, strict=True)}


def write_samples(
    path: Any, X: np.ndarray, y: np.ndarray, rows: np.ndarray, cols: np.ndarray, polygon_id: np.ndarray
) -> None:
    """Write the samples file with the dtypes of the artefact contract."""
    np.savez(
        path,
        X=X.astype(np.float32, copy=False),
        y=y.astype(np.uint8, copy=False),
        row=rows.astype(np.int32, copy=False),
        col=cols.astype(np.int32, copy=False),
        polygon_id=polygon_id.astype(np.int64, copy=False),
    )


def needs(ctx: RunContext) -> list[Need]:
    """The reference masks and the features of every tile."""
    from lcms_tasks.preflight import Need

    return [Need("add_reference", ctx.season), Need("features", ctx.season)]


def run(tile: Tile, ctx: RunContext) -> list[str]:
    """Sample the tile's labelled pixels and store their feature vectors."""
    from lcms_tasks import eopatch
    from lcms_tasks.errors import StageError
    from lcms_tasks.ml.matrix import flat_feature_names, sample_matrix
    from lcms_tasks.stages.features import excluded_as_not_ready

    options: Options = ctx.config.stages.sampling
    ref, ref_meta = eopatch.load(
        ctx.storage,
        ctx.tile_uri("add_reference", tile.id),
        features=["mask_timeless/REFERENCE", "mask_timeless/REFERENCE_SAMPLABLE", "mask_timeless/POLYGON_ID"],
    )
    labels = ref.mask_timeless["REFERENCE"][..., 0]
    samplable = ref.mask_timeless["REFERENCE_SAMPLABLE"][..., 0].astype(bool)
    polygon_index = ref.mask_timeless["POLYGON_ID"][..., 0]
    keys = np.asarray([0, *ref_meta.get("polygon_keys", [])], dtype=np.int64)
    if polygon_index.size and int(polygon_index.max()) >= len(keys):
        raise StageError(f"tile {tile.id}: POLYGON_ID {int(polygon_index.max())} has no key in add_reference meta")

    features_uri = ctx.tile_uri("features", tile.id)
    feats, feats_meta = eopatch.load(ctx.storage, features_uri, features=["data/FEATURES"])
    not_ready = excluded_as_not_ready(feats_meta)
    if not_ready:  # the readiness gate: too few clear observations to learn from
        samplable = np.zeros_like(samplable)
    rows, cols = sample_pixels(
        labels,
        samplable,
        options.max_per_class,
        options.fraction,
        tile_rng(options.seed, tile.id),
        min_per_class=options.min_per_class,
    )
    features = feats.data["FEATURES"]
    if features.shape[1:3] != labels.shape:
        raise StageError(f"tile {tile.id}: FEATURES {features.shape[1:3]} and REFERENCE {labels.shape} differ in size")
    k, _, _, f = features.shape
    # sample_matrix cannot reshape an empty selection (-1 with size 0), so build the empty matrix here.
    X = sample_matrix(features, rows, cols) if rows.size else np.zeros((0, k * f), np.float32)
    meta: dict[str, Any] = {"upstream": ref_meta.get("run_id"), "skipped_reason": None}
    if not rows.size:
        # Nothing to learn from here; still write an (empty) result so the run is complete and reportable.
        meta["skipped_reason"] = (
            f"not ready: {not_ready}"
            if not_ready
            else NO_REFERENCE
            if not (labels > 0).any()
            else "no samplable reference pixels"
        )
        log.info("%s %s: skipped, %s", NAME, tile.id, meta["skipped_reason"])
    y = labels[rows, cols]
    polygon_id = keys[polygon_index[rows, cols]]
    meta.update(
        {
            "n_samples": int(rows.size),
            "per_class": class_counts(y),
            "feature_names": flat_feature_names(list(feats_meta.get("feature_names", [])), features.shape[0]),
            "max_per_class": options.max_per_class,
            "fraction": options.fraction,
            "seed": options.seed,
        }
    )
    uri = ctx.tile_uri(NAME, tile.id)
    with ctx.storage.writing_dir(uri, ctx.marker_meta(NAME, tile.id, meta)) as staging:
        write_samples(staging / SAMPLES_FILE, X, y, rows, cols, polygon_id)
    return [uri]
