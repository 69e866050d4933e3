"""Prediction stage on small features EOPatches, with a model trained on samples of the same tile."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from lcms_tasks import eopatch
from lcms_tasks.context import RunContext
from lcms_tasks.errors import ArtefactMissingError, StageError
from lcms_tasks.grid import Tile, project_tiles
from lcms_tasks.ml.matrix import sample_matrix
from lcms_tasks.ml.model import LcmsModel, describe_feature_difference
from lcms_tasks.runner import run_tiles
from lcms_tasks.stages import prediction, training
from tests.unit.test_training import FEATURES, N_TIMES, make_ctx, write_dataset

MODEL_CLASSES = [1, 2, 4, 7]  # legend ids; 3, 5, 6, 8 are unknown to the model
# (context, tile, features (K, H, W, F), truth (H, W), NO_DATA (H, W)) of a tile with a trained model
Setup = tuple[RunContext, Tile, np.ndarray, np.ndarray, np.ndarray]


def synthetic_features(tile: Tile, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K, H, W, F) features of vertical class stripes, truth (H, W) ids and a NO_DATA block."""
    h, w = tile.shape
    rng = np.random.default_rng(seed)
    truth = np.empty((h, w), dtype=np.uint8)
    for i, cid in enumerate(MODEL_CLASSES):
        truth[:, i * w // len(MODEL_CLASSES) : (i + 1) * w // len(MODEL_CLASSES)] = cid
    centres = {c: np.random.default_rng(100 + c).normal(0.0, 1.0, (N_TIMES, len(FEATURES))) for c in MODEL_CLASSES}
    mean = np.stack([centres[int(c)] for c in truth.ravel()], axis=1).reshape(N_TIMES, h, w, len(FEATURES))
    feats: np.ndarray = (mean + rng.normal(0.0, 0.3, mean.shape)).astype(np.float32)
    feats[rng.random(feats.shape) < 0.05] = np.nan  # scattered gaps stay predictable
    no_data = np.zeros((h, w), dtype=bool)
    no_data[5:12, 20:40] = True
    feats[:, no_data] = np.nan
    return feats, truth, no_data


def write_features(
    ctx: RunContext, tile: Tile, feats: np.ndarray, no_data: np.ndarray, names: list[str] | None = None
) -> None:
    """Publish a features EOPatch as the features stage would."""
    start = ctx.config.season(ctx.season).start
    patch = eopatch.new_patch(tile, [start + dt.timedelta(days=10 * k) for k in range(feats.shape[0])])
    patch.data["FEATURES"] = feats
    patch.mask_timeless["NO_DATA"] = no_data[..., None]
    patch.mask_timeless["VALID_COUNT"] = np.where(no_data, 0, feats.shape[0]).astype(np.uint16)[..., None]
    meta = {"feature_names": list(names or FEATURES)}
    eopatch.save(ctx.storage, ctx.tile_uri("features", tile.id), patch, meta=ctx.marker_meta("features", tile.id, meta))


def train_on_tile(ctx: RunContext, feats: np.ndarray, truth: np.ndarray, no_data: np.ndarray) -> str:
    """Sample labelled pixels of the tile into a dataset artefact and run the training stage."""
    rng = np.random.default_rng(1)
    rows, cols = np.nonzero(~no_data)
    pick = rng.choice(len(rows), size=900, replace=False)
    r, c = rows[pick].astype(np.int32), cols[pick].astype(np.int32)
    split = (np.arange(900) % 10 >= 6).astype(np.uint8) + (np.arange(900) % 10 >= 8).astype(np.uint8)
    write_dataset(ctx, sample_matrix(feats, r, c), truth[r, c], split)
    return training.run(ctx)[0]


@pytest.fixture
def setup(project_dir: Path) -> Setup:
    ctx = make_ctx(project_dir)
    tile = project_tiles(ctx.config)[0]
    feats, truth, no_data = synthetic_features(tile)
    write_features(ctx, tile, feats, no_data)
    train_on_tile(ctx, feats, truth, no_data)
    return ctx, tile, feats, truth, no_data


def test_prediction_stage_writes_class_confidence_probabilities(setup: Setup) -> None:
    ctx, tile, _, truth, no_data = setup
    result = run_tiles("prediction", [tile], ctx)
    uri = ctx.tile_uri("prediction", tile.id)
    assert result.written == {tile.id: [uri]}
    patch, meta = eopatch.load(ctx.storage, uri)
    cls = patch.mask_timeless["CLASS"][..., 0]
    conf = patch.data_timeless["CONFIDENCE"][..., 0]
    prob = patch.data_timeless["PROBABILITIES"]
    h, w = tile.shape
    assert cls.dtype == np.uint8 and cls.shape == (h, w)
    assert conf.dtype == np.float32 and prob.dtype == np.uint8 and prob.shape == (h, w, 8)

    # NO_DATA pixels are 0 everywhere; the others get a model class, mostly the true one.
    assert (cls[no_data] == 0).all() and (conf[no_data] == 0).all() and (prob[no_data] == 0).all()
    valid = ~no_data
    assert set(np.unique(cls[valid]).tolist()) <= set(MODEL_CLASSES)
    assert np.mean(cls[valid] == truth[valid]) > 0.95
    assert (conf[valid] > 0.25).all() and (conf[valid] <= 1.0).all()

    legend_ids = [c.id for c in ctx.config.legend()]
    assert meta["class_ids"] == legend_ids and meta["model_class_ids"] == MODEL_CLASSES
    # Channels of classes the model does not know are 0; percentages add up to ~100.
    unknown = [legend_ids.index(c) for c in legend_ids if c not in MODEL_CLASSES]
    assert (prob[..., unknown] == 0).all()
    sums = prob[valid].astype(int).sum(axis=1)
    assert (np.abs(sums - 100) <= 2).all()
    # The chosen class's channel holds the confidence, in percent.
    chosen = prob.reshape(h * w, -1)[np.arange(h * w), [legend_ids.index(c) if c else 0 for c in cls.ravel()]]
    np.testing.assert_array_equal(chosen.reshape(h, w)[valid], np.rint(conf[valid] * 100).astype(np.uint8))

    assert meta["model_uri"] == ctx.run_uri("training", "model")
    assert meta["model_run_id"] == "run-1" and meta["model_season"] == "2023"
    assert meta["no_data_pixels"] == int(no_data.sum())
    assert sum(meta["class_pixel_counts"].values()) == int(valid.sum())


def test_chunked_equals_unchunked(setup: Setup) -> None:
    ctx, _, feats, _, no_data = setup
    model = LcmsModel.load(ctx.storage, ctx.run_uri("training", "model"))
    legend_ids = [c.id for c in ctx.config.legend()]
    whole = prediction.predict_tile(feats, no_data, model, legend_ids, chunk_pixels=10**9)
    for chunk in (1, 100, 640, 1000):  # one row, partial rows, exact rows, uneven last chunk
        part = prediction.predict_tile(feats, no_data, model, legend_ids, chunk_pixels=chunk)
        np.testing.assert_array_equal(part.classes, whole.classes)
        np.testing.assert_array_equal(part.confidence, whole.confidence)
        assert part.probabilities is not None and whole.probabilities is not None
        np.testing.assert_array_equal(part.probabilities, whole.probabilities)
    # The same as predicting every valid pixel at once through the model.
    h, w = no_data.shape
    X = np.ascontiguousarray(feats.transpose(1, 2, 0, 3)).reshape(h * w, -1)
    expected = model.predict(X[~no_data.ravel()])
    np.testing.assert_array_equal(whole.classes[~no_data], expected)
    no_prob = prediction.predict_tile(feats, None, model, legend_ids, with_probabilities=False)
    assert no_prob.probabilities is None and (no_prob.classes > 0).all()


def test_feature_mismatch_names_the_difference(setup: Setup) -> None:
    ctx, tile, feats, _, no_data = setup
    write_features(ctx, tile, feats[..., :5], no_data, names=FEATURES[:5])
    with pytest.raises(StageError, match=rf"tile {tile.id}.*missing 4 feature\(s\): TC_WETNESS_t00, TC_WETNESS_t01"):
        prediction.run(tile, ctx)
    extra = np.concatenate([feats, feats[:1]], axis=0)  # one more date than the model knows
    write_features(ctx, tile, extra, no_data)
    with pytest.raises(StageError, match=r"unexpected 6 feature\(s\): NDVI_t04, NDWI_t04"):
        prediction.run(tile, ctx)
    swapped = [FEATURES[1], FEATURES[0], *FEATURES[2:]]
    write_features(ctx, tile, feats, no_data, names=swapped)
    with pytest.raises(StageError, match=r"different order.*column 0: model expects 'NDVI_t00', got 'NDWI_t00'"):
        prediction.run(tile, ctx)
    assert not ctx.storage.exists(ctx.tile_uri("prediction", tile.id))
    assert describe_feature_difference(["a", "b"], ["a", "b"]) is None


def test_model_of_another_season(setup: Setup, project_dir: Path) -> None:
    _, tile, feats, truth, no_data = setup
    ctx24 = make_ctx(project_dir, season="2024", run_id="run-24")
    write_features(ctx24, tile, feats, no_data)
    with pytest.raises(ArtefactMissingError, match="2024/training/_run/model"):
        prediction.run(tile, ctx24)
    ctx24 = make_ctx(
        project_dir,
        season="2024",
        run_id="run-24",
        stages={"prediction": {"model_season": "2023", "write_probabilities": False, "chunk_pixels": 500}},
    )
    uri = prediction.run(tile, ctx24)[0]
    assert "/2024/prediction/" in uri
    patch, meta = eopatch.load(ctx24.storage, uri)
    assert meta["model_season"] == "2023" and "/2023/training/_run/model" in meta["model_uri"]
    assert "PROBABILITIES" not in patch.data_timeless
    cls = patch.mask_timeless["CLASS"][..., 0]
    assert np.mean(cls[~no_data] == truth[~no_data]) > 0.95


def test_model_rejects_bad_input(setup: Setup) -> None:
    ctx, *_ = setup
    model = LcmsModel.load(ctx.storage, ctx.run_uri("training", "model"))
    with pytest.raises(StageError, match=r"expected a \(n, 24\) feature matrix"):
        model.predict_proba(np.zeros((3, 5), np.float32))
    assert model.predict_proba(np.zeros((0, 24), np.float32)).shape == (0, 4)
    # A pixel with every feature missing still gets a valid distribution (XGBoost's default branches).
    p = model.predict_proba(np.full((1, 24), np.nan, np.float32))
    assert p.shape == (1, 4) and abs(float(p.sum()) - 1.0) < 1e-5
