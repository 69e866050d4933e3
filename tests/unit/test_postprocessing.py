"""Postprocessing: pure steps on small arrays, hypothesis invariants, speed, and the stage on stored EOPatches."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydantic import ValidationError

from lcms_tasks import postprocess as pp
from lcms_tasks.stages import postprocessing as stage

FEATURE_NAMES = ["NDVI", "NDWI", "NDBI", "TC_BRIGHTNESS", "TC_GREENNESS", "TC_WETNESS"]
NO_STEPS = {"segmentation": "none", "modal_size": 0, "min_mapping_unit_px": 0, "erosion_dilation_px": 0}


def _patches(cls: np.ndarray) -> list[tuple[int, int, bool]]:
    """(class, size, touches another data class) of each 4-connected data patch, computed independently."""
    from scipy import ndimage

    out = []
    for c in np.unique(cls[cls != 0]):
        lab, n = ndimage.label(cls == c)
        for k in range(1, n + 1):
            patch = lab == k
            ring = ndimage.binary_dilation(patch) & ~patch
            touches = bool(((cls[ring] != 0) & (cls[ring] != c)).any())
            out.append((int(c), int(patch.sum()), touches))
    return out


# -- segment majority -----------------------------------------------------------------------------------
def test_segment_majority_takes_the_most_frequent_data_class() -> None:
    cls = np.array([[1, 1, 2, 3], [1, 2, 0, 3]], dtype=np.uint8)
    segments = np.array([[0, 0, 0, 1], [0, 0, 0, 1]])
    out = pp.segment_majority(cls, segments)
    # Segment 0 holds 1,1,2,1,2 and one no-data pixel: 1 wins, the no-data pixel stays 0.
    assert out.tolist() == [[1, 1, 1, 3], [1, 1, 0, 3]]
    assert out.dtype == np.uint8


def test_segment_majority_no_data_never_wins_and_ties_keep_the_pixel_class() -> None:
    cls = np.array([[0, 0, 0, 4], [0, 0, 2, 4], [2, 4, 7, 7]], dtype=np.uint8)
    segments = np.zeros(cls.shape, dtype=np.int64)
    out = pp.segment_majority(cls, segments)
    # Data votes: 4 x3, 2 x2, 7 x2 -> 4; no-data pixels (the majority) stay 0.
    assert out.tolist() == [[0, 0, 0, 4], [0, 0, 4, 4], [4, 4, 4, 4]]
    tie = np.array([[1, 1, 2, 2]], dtype=np.uint8)
    assert pp.segment_majority(tie, np.zeros((1, 4), dtype=np.int64)).tolist() == [[1, 1, 2, 2]]


def test_segment_majority_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2-D uint8"):
        pp.segment_majority(np.zeros((3, 3), dtype=np.int32), np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="segments shape"):
        pp.segment_majority(np.zeros((3, 3), dtype=np.uint8), np.zeros((2, 3), dtype=np.int64))


def test_segmentation_image_scales_and_fills_no_data() -> None:
    rng = np.random.default_rng(1)
    feats = rng.uniform(-1, 1, size=(5, 8, 9, 6)).astype(np.float32)
    feats[:, 0, 0, :] = np.nan  # a no-data pixel
    feats[2, 1, 1, 0] = np.nan  # one missing date
    image = pp.segmentation_image(feats, FEATURE_NAMES)
    assert image.shape == (8, 9, 4)
    assert image.dtype == np.float32
    assert np.isfinite(image).all()
    assert image.min() >= 0.0 and image.max() <= 1.0
    expected_max = (np.nanmax(feats[:, 1, 1, 0]) + 1) / 2
    assert image[1, 1, 1] == pytest.approx(expected_max)
    expected_ndwi = (np.median(feats[:, 3, 4, 1]) + 1) / 2
    assert image[3, 4, 2] == pytest.approx(expected_ndwi)
    with pytest.raises(ValueError, match="NDBI"):
        pp.segmentation_image(feats[..., :2], ["NDVI", "NDWI"])


@pytest.mark.parametrize("method", ["felzenszwalb", "slic"])
def test_segments_follow_image_edges(method: pp.Segmentation) -> None:
    image = np.zeros((40, 40, 4), dtype=np.float32)
    image[:, 20:] = 1.0
    labels = pp.segment(image, method, slic_n_segments=8)
    assert labels.shape == (40, 40)
    assert labels.min() == 0
    left, right = set(np.unique(labels[:, :20]).tolist()), set(np.unique(labels[:, 20:]).tolist())
    assert not left & right, "a segment crosses a sharp edge"


# -- modal filter ---------------------------------------------------------------------------------------
def test_modal_filter_removes_salt_and_keeps_no_data() -> None:
    cls = np.full((7, 7), 3, dtype=np.uint8)
    cls[3, 3] = 5
    cls[0, :] = 0
    out = pp.modal_filter(cls, 3)
    assert out[3, 3] == 3
    assert (out[0] == 0).all()
    assert (out[1:] == 3).all()


def test_modal_filter_tie_keeps_original_and_no_data_does_not_count() -> None:
    # Window of the centre pixel: 3 x class 1, 3 x class 2, 3 x no data -> tie between 1 and 2.
    cls = np.array([[1, 1, 1], [2, 2, 2], [0, 0, 0]], dtype=np.uint8)
    out = pp.modal_filter(cls, 3)
    assert out[1, 1] == 2
    assert (out[2] == 0).all()
    assert pp.modal_filter(cls, 0).tolist() == cls.tolist()


# -- minimum mapping unit ------------------------------------------------------------------------------
def test_mmu_merges_small_patch_into_longest_border_class() -> None:
    cls = np.ones((10, 10), dtype=np.uint8)
    cls[:, 6:] = 2
    cls[4:6, 4:6] = 3  # 4 px: borders class 1 on 6 edges, class 2 on 2 edges
    out, iterations = pp.minimum_mapping_unit(cls, 5)
    assert out[4:6, 4:6].tolist() == [[1, 1], [1, 1]]
    assert iterations == 1
    assert (out[:, 6:] == 2).all()


def test_mmu_leaves_patches_enclosed_by_no_data() -> None:
    cls = np.zeros((6, 6), dtype=np.uint8)
    cls[1:3, 1:3] = 4
    cls[:, 4:] = 2
    out, _ = pp.minimum_mapping_unit(cls, 10)
    assert out.tolist() == cls.tolist()


def test_mmu_resolves_clusters_of_small_patches() -> None:
    rng = np.random.default_rng(3)
    cls = rng.integers(1, 5, size=(30, 30)).astype(np.uint8)
    out, iterations = pp.minimum_mapping_unit(cls, 8)
    assert 1 <= iterations <= 20
    assert all(size >= 8 or not touches for _, size, touches in _patches(out))
    assert set(np.unique(out)) <= set(np.unique(cls))


# -- opening --------------------------------------------------------------------------------------------
def test_opening_removes_thin_lines_and_refills_from_neighbours() -> None:
    cls = np.ones((9, 9), dtype=np.uint8)
    cls[:, 5:] = 2
    cls[4, :4] = 3  # a 1-px line inside class 1
    cls[0, 0] = 0
    out = pp.open_classes(cls, 1)
    assert (out[4, :4] == 1).all()
    assert out[0, 0] == 0
    assert (out[:, 5:] == 2).all()
    # Tile edges do not erode: a class filling a tile edge keeps it.
    assert (out[1:, 0] == 1).all()


# -- confidence -----------------------------------------------------------------------------------------
def test_class_confidence_per_pixel_and_per_segment() -> None:
    cls = np.array([[1, 1, 2]], dtype=np.uint8)
    probs = np.array([[[80, 20], [60, 40], [30, 70]]], dtype=np.uint8)
    fallback = np.full((1, 3), 0.5, dtype=np.float32)
    per_pixel = pp.class_confidence(cls, probs, [1, 2], fallback)
    assert per_pixel[0].tolist() == pytest.approx([0.8, 0.6, 0.7])
    per_segment = pp.class_confidence(cls, probs, [1, 2], fallback, np.zeros((1, 3), dtype=np.int64))
    assert per_segment[0].tolist() == pytest.approx([0.7, 0.7, 0.7])
    with pytest.raises(ValueError, match="class ids"):
        pp.class_confidence(cls, probs, [1, 2, 3], fallback)


# -- the chain ------------------------------------------------------------------------------------------
def _blocky_map(size: int, seed: int, noise: float = 0.1, n_classes: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    block = max(size // 10, 1)
    base = rng.integers(1, n_classes + 1, size=(-(-size // block), -(-size // block))).astype(np.uint8)
    cls = np.kron(base, np.ones((block, block), dtype=np.uint8))[:size, :size]
    flip = rng.random((size, size)) < noise
    cls[flip] = rng.integers(1, n_classes + 1, size=int(flip.sum()))
    cls[: size // 25 + 1, :] = 0
    return cls


def test_chain_records_steps_and_class_changes() -> None:
    cls = _blocky_map(60, seed=2)
    conf = np.full(cls.shape, 0.9, dtype=np.float32)
    settings_ = pp.PostprocessSettings(segmentation="none", erosion_dilation_px=1, confidence="carry")
    result = pp.postprocess_class_map(cls, conf, settings_)
    assert [s["step"] for s in result.steps] == ["modal_filter", "minimum_mapping_unit", "opening"]
    total = sum(s["pixels_changed"] for s in result.steps)
    assert total >= int((result.classes != cls).sum()) > 0
    first = result.steps[0]
    assert sum(first["changes_by_class"].values()) == first["pixels_changed"]
    assert np.array_equal(result.confidence, conf)
    with pytest.raises(ValueError, match="segmentation image"):
        pp.postprocess_class_map(cls, conf, pp.PostprocessSettings())
    with pytest.raises(ValueError, match="probabilities"):
        pp.postprocess_class_map(cls, conf, pp.PostprocessSettings(segmentation="none"))


def test_chain_on_500_px_tile() -> None:
    # Speed is measured by `make bench`, not asserted here (timings on shared CI machines are noise).
    cls = _blocky_map(500, seed=5, noise=0.15)
    rng = np.random.default_rng(5)
    conf = rng.random(cls.shape).astype(np.float32)
    probs = rng.integers(0, 101, size=(*cls.shape, 8)).astype(np.uint8)
    image = np.clip(cls[..., None] / 8.0 + rng.normal(0, 0.05, size=(*cls.shape, 4)), 0, 1).astype(np.float32)
    result = pp.postprocess_class_map(
        cls,
        conf,
        pp.PostprocessSettings(erosion_dilation_px=1),
        seg_image=image,
        probabilities=probs,
        class_ids=list(range(1, 9)),
    )
    assert np.array_equal(result.classes == 0, cls == 0)
    assert set(np.unique(result.classes)) <= set(np.unique(cls))
    # The noise is cleaned up: the result is closer to the noise-free map than the input was.
    clean = _blocky_map(500, seed=5, noise=0.0)
    assert (result.classes == clean).mean() > (cls == clean).mean()


# -- invariants (hypothesis) ---------------------------------------------------------------------------
class_maps = st.integers(2, 24).flatmap(
    lambda h: st.integers(2, 24).flatmap(
        lambda w: arrays(np.uint8, (h, w), elements=st.sampled_from([0, 1, 2, 3, 5, 9]))
    )
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cls=class_maps,
    modal=st.sampled_from([0, 3, 5]),
    mmu=st.sampled_from([0, 4, 9]),
    radius=st.integers(0, 2),
    seg_seed=st.integers(0, 3),
)
def test_invariants_of_the_chain(cls: np.ndarray, modal: int, mmu: int, radius: int, seg_seed: int) -> None:
    rng = np.random.default_rng(seg_seed)
    image = rng.random((*cls.shape, 4)).astype(np.float32)
    settings_ = pp.PostprocessSettings(
        segmentation="felzenszwalb" if seg_seed % 2 else "none",
        felzenszwalb_min_size=3,
        modal_size=modal,
        min_mapping_unit_px=mmu,
        erosion_dilation_px=radius,
        confidence="carry",
    )
    conf = np.ones(cls.shape, dtype=np.float32)
    out = pp.postprocess_class_map(cls, conf, settings_, seg_image=image).classes
    assert set(np.unique(out).tolist()) <= set(np.unique(cls).tolist())
    assert np.array_equal(out == 0, cls == 0)


@settings(max_examples=60, deadline=None)
@given(cls=class_maps, mmu=st.integers(2, 30))
def test_mmu_leaves_no_small_patch_that_could_merge(cls: np.ndarray, mmu: int) -> None:
    out, _ = pp.minimum_mapping_unit(cls, mmu, max_iterations=100)
    assert np.array_equal(out == 0, cls == 0)
    assert set(np.unique(out).tolist()) <= set(np.unique(cls).tolist())
    for c, size, touches in _patches(out):
        assert size >= mmu or not touches, f"class {c} patch of {size} px < {mmu} still borders another class"


@settings(max_examples=40, deadline=None)
@given(value=st.sampled_from([0, 1, 7, 200]), h=st.integers(1, 30), w=st.integers(1, 30))
def test_uniform_map_is_unchanged(value: int, h: int, w: int) -> None:
    cls = np.full((h, w), value, dtype=np.uint8)
    image = np.full((h, w, 4), 0.3, dtype=np.float32)
    settings_ = pp.PostprocessSettings(erosion_dilation_px=2, confidence="carry")
    out = pp.postprocess_class_map(cls, np.zeros((h, w), np.float32), settings_, seg_image=image)
    assert np.array_equal(out.classes, cls)
    assert all(s["pixels_changed"] == 0 for s in out.steps)


# -- options --------------------------------------------------------------------------------------------
def test_options_validate() -> None:
    assert stage.Options().settings().min_mapping_unit_px == 16
    with pytest.raises(ValidationError, match="odd"):
        stage.Options(modal_size=4)
    with pytest.raises(ValidationError):
        stage.Options(segmentation="watershed")
    with pytest.raises(ValidationError):
        stage.Options(unknown=1)  # type: ignore[call-arg]


# -- the stage ------------------------------------------------------------------------------------------
def _project(config_path: Path, stage_options: dict[str, Any]) -> tuple[Any, Any]:
    from lcms_tasks.config import load_config
    from lcms_tasks.grid import project_tiles

    data = yaml.safe_load(config_path.read_text())
    data["stages"] = {"postprocessing": stage_options}
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_config(config_path)
    return cfg, project_tiles(cfg)[0]


def _store_inputs(ctx: Any, tile: Any, cls: np.ndarray, probs: np.ndarray, feats: np.ndarray) -> None:
    from lcms_tasks import eopatch

    pred = eopatch.new_patch(tile, [])
    pred.mask_timeless["CLASS"] = cls[..., None]
    pred.data_timeless["CONFIDENCE"] = (probs.max(axis=-1, keepdims=True) / 100.0).astype(np.float32)
    pred.data_timeless["PROBABILITIES"] = probs
    class_ids = [c.id for c in ctx.config.legend()]
    eopatch.save(
        ctx.storage,
        ctx.tile_uri("prediction", tile.id),
        pred,
        meta=ctx.marker_meta("prediction", tile.id, {"class_ids": class_ids}),
    )
    dates = [dt.date(2024, 4, 1) + dt.timedelta(days=10 * i) for i in range(feats.shape[0])]
    fp = eopatch.new_patch(tile, dates)
    fp.data["FEATURES"] = feats
    eopatch.save(
        ctx.storage,
        ctx.tile_uri("features", tile.id),
        fp,
        meta=ctx.marker_meta("features", tile.id, {"feature_names": FEATURE_NAMES}),
    )


def _inputs(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A two-field map (cropland | forest) with salt noise, matching probabilities and features."""
    rng = np.random.default_rng(11)
    cls = np.ones((size, size), dtype=np.uint8)
    cls[:, size // 2 :] = 2
    noisy = rng.random(cls.shape) < 0.05
    cls[noisy] = 4
    cls[:3, :] = 0
    probs = np.zeros((size, size, 8), dtype=np.uint8)
    probs[..., 2] = 30  # grassland is every pixel's runner-up
    rows, cols = np.indices(cls.shape)
    probs[rows, cols, np.maximum(cls, 1) - 1] = 70
    probs[cls == 0] = 0
    feats = np.zeros((4, size, size, 6), dtype=np.float32)
    feats[..., 0] = np.where(cls == 2, 0.8, 0.3)[None]  # NDVI follows the two fields, not the noise
    feats[:, :3] = np.nan
    return cls, probs, feats


def test_stage_writes_postprocessed_patch(config_path: Path) -> None:
    from lcms_tasks import eopatch
    from lcms_tasks.context import RunContext
    from lcms_tasks.runner import run_tiles

    cfg, tile = _project(config_path, {"min_mapping_unit_px": 6})
    ctx = RunContext.create(cfg, season="2024", run_id="pp1")
    cls, probs, feats = _inputs(tile.size_px)
    _store_inputs(ctx, tile, cls, probs, feats)
    result = run_tiles("postprocessing", [tile], ctx)
    assert not result.failed
    patch, meta = eopatch.load(ctx.storage, ctx.tile_uri("postprocessing", tile.id))
    out = patch.mask_timeless["CLASS"][..., 0]
    conf = patch.data_timeless["CONFIDENCE"][..., 0]
    assert out.dtype == np.uint8 and conf.dtype == np.float32
    assert np.array_equal(out == 0, cls == 0)
    half = tile.size_px // 2
    # The salt (class 4) is gone: each field is one class again.
    assert (out[3:, :half] == 1).mean() > 0.99 and (out[3:, half:] == 2).mean() > 0.99
    assert meta["steps_applied"] == ["segment_majority", "modal_filter", "minimum_mapping_unit"]
    assert meta["pixels_changed"] == int((out != cls).sum()) > 0
    # Confidence is the segment's mean probability of its final class: 0.7 on the pixels predicted so,
    # 0 on the former salt pixels, so a little under 0.7 over a field.
    field = conf[3:, :half]
    assert 0.6 < float(field.mean()) < 0.7
    assert (conf[cls == 0] == 0).all()


def test_stage_without_segmentation_needs_no_features(config_path: Path) -> None:
    from lcms_tasks import eopatch
    from lcms_tasks.context import RunContext
    from lcms_tasks.runner import run_tiles

    cfg, tile = _project(config_path, {"segmentation": "none", "confidence": "carry", "modal_size": 0})
    ctx = RunContext.create(cfg, season="2024", run_id="pp2")
    cls, probs, feats = _inputs(tile.size_px)
    _store_inputs(ctx, tile, cls, probs, feats)
    ctx.storage.delete(ctx.tile_uri("features", tile.id))
    run_tiles("postprocessing", [tile], ctx)
    _, meta = eopatch.load(ctx.storage, ctx.tile_uri("postprocessing", tile.id))
    assert meta["steps_applied"] == ["minimum_mapping_unit"]


def test_stage_missing_prediction_fails_the_tile(config_path: Path) -> None:
    from lcms_tasks.context import RunContext
    from lcms_tasks.runner import run_tiles

    cfg, tile = _project(config_path, dict(NO_STEPS))
    ctx = RunContext.create(cfg, season="2024", run_id="pp3")
    result = run_tiles("postprocessing", [tile], ctx, raise_on_failure=False)
    assert "ArtefactMissingError" in result.failed[tile.id]
    assert "prediction" in result.failed[tile.id]
    assert not ctx.storage.is_complete(ctx.tile_uri("postprocessing", tile.id))
