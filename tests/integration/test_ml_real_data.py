"""Training and prediction on a real Sentinel-2 patch (Slovenia 2015, 5 dates; ../shared/data, see its README).

Features come from the features stage's pure function on the real bands; labels are the patch's LULC
reference. The model is trained on the left half of the patch and tested on the right half (spatially
held out), then the whole patch is predicted. With two of the five dates fully cloudy the task is hard,
so the assertions are sanity bounds, not a quality target; the figures are logged and recorded.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lcms_tasks.bands import S2_BANDS
from lcms_tasks.config import parse_config
from lcms_tasks.context import RunContext
from lcms_tasks.ml.matrix import flat_feature_names, sample_matrix
from lcms_tasks.ml.model import LcmsModel
from lcms_tasks.stages import features as features_stage
from lcms_tasks.stages import prediction, training
from tests.unit.test_training import write_dataset

pytestmark = pytest.mark.realdata

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FIVE_DATES = DATA_DIR / "slovenia_2015_s2l1c_5dates"
# LULC_ID of the reference (README): 0 no data, 1 cultivated land, 2 forest, 3 grassland, 4 shrubland, 8 artificial.
LEGEND: list[dict[str, Any]] = [
    {"id": 1, "name": "cultivated land", "color": "#f4d03f"},
    {"id": 2, "name": "forest", "color": "#1e8449"},
    {"id": 3, "name": "grassland", "color": "#82e0aa"},
    {"id": 4, "name": "shrubland", "color": "#a04000"},
    {"id": 8, "name": "artificial surface", "color": "#c0392b"},
]
SEASON_START, SEASON_END = dt.date(2015, 7, 11), dt.date(2015, 9, 9)

log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def patch_features() -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """(features (K, H, W, F), feature names, n_valid (H, W), LULC (H, W)) of the real patch."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"real data folder {DATA_DIR} is absent (expected next to the repository as shared/data)")
    from eolearn.core import EOPatch

    from lcms_tasks.features.indices import FEATURE_NAMES

    patch = EOPatch.load(str(FIVE_DATES))
    feats, n_valid, dates, _ = features_stage.compute_tile_features(
        patch.data["BANDS-S2-L1C"].astype(np.float32),
        patch.mask["IS_VALID"][..., 0].astype(bool),
        [t.date() for t in patch.timestamps or []],
        list(S2_BANDS),
        SEASON_START,
        SEASON_END,
        features_stage.Options(step_days=10),
    )
    assert len(dates) == feats.shape[0] == 7
    return feats, list(FEATURE_NAMES), n_valid, patch.mask_timeless["LULC"][..., 0].astype(np.uint8)


def _ctx(project_dir: Path) -> RunContext:
    import yaml

    data: dict[str, Any] = yaml.safe_load((project_dir / "project.yaml").read_text())
    data["legends"] = {"land_cover": LEGEND}
    data["seasons"] = {"2015": {"start": SEASON_START.isoformat(), "end": SEASON_END.isoformat()}}
    # artificial surface has only 22 labelled pixels in the left half; the default 20 would fail on it
    # once the validation rows are set apart.
    data["stages"] = {"training": {"min_samples_per_class": 10, "n_jobs": 2}}
    return RunContext.create(parse_config(data, base_dir=project_dir), season="2015", run_id="slovenia")


def test_train_left_test_right_predict_whole_patch(
    patch_features: tuple[np.ndarray, list[str], np.ndarray, np.ndarray],
    project_dir: Path,
    record_property: Any,
) -> None:
    feats, names, n_valid, lulc = patch_features
    h, w = lulc.shape
    ctx = _ctx(project_dir)

    rows, cols = np.nonzero(lulc > 0)
    left = cols < w // 2
    # Left half: train, with every 4th block of 10 rows held out for early stopping; right half: test.
    split = np.where(left, np.where((rows // 10) % 4 == 3, 1, 0), 2).astype(np.uint8)
    X = sample_matrix(feats, rows, cols)
    write_dataset(ctx, X, lulc[rows, cols], split, names=flat_feature_names(names, feats.shape[0]))
    uri = training.run(ctx)[0]
    meta = ctx.storage.read_marker(uri)
    m = meta["metrics"]

    test_truth = lulc[rows, cols][split == 2]
    majority_rate = np.bincount(test_truth).max() / len(test_truth)
    log.info(
        "Slovenia: test OA %.3f, kappa %.3f, macro F1 %.3f, majority rate %.3f, best iteration %s, classes %s",
        m["overall_accuracy"], m["kappa"], m["macro_f1"], majority_rate, meta["best_iteration"],
        meta["label_encoding"]["class_ids"],
    )  # fmt: skip
    for key in ("overall_accuracy", "kappa", "macro_f1"):
        record_property(key, m[key])
    record_property("majority_rate", float(majority_rate))

    # Cultivated land has no pixel in the left half: it is absent from the model but its 11 test
    # pixels still count (as errors) in the metrics.
    assert meta["label_encoding"]["class_ids"] == [2, 3, 4, 8]
    assert meta["data"]["absent_classes"] == [1]
    assert m["n"] == len(test_truth) == int((split == 2).sum())
    assert {c["id"]: c["support"] for c in m["per_class"]}[1] == 11
    assert 0.0 <= m["overall_accuracy"] <= 1.0 and -1.0 <= m["kappa"] <= 1.0
    assert m["overall_accuracy"] > majority_rate - 0.1
    assert m["kappa"] > 0.0  # better than chance on held-out ground
    per_class = {c["id"]: c for c in m["per_class"]}
    assert per_class[2]["recall"] > 0.8  # forest, the dominant and most distinct class

    # Whole patch: every pixel has valid observations, so every pixel gets one of the model's classes.
    model = LcmsModel.load(ctx.storage, uri)
    legend_ids = [int(c["id"]) for c in LEGEND]
    result = prediction.predict_tile(feats, n_valid == 0, model, legend_ids, chunk_pixels=1000)
    assert result.classes.shape == (h, w) and (n_valid > 0).all()
    assert set(np.unique(result.classes).tolist()) <= {2, 3, 4, 8}
    assert (result.confidence > 0.2).all() and (result.confidence <= 1.0).all()
    # Labelled left-half pixels were mostly training data: the map agrees with them closely.
    left_mask = (lulc > 0) & (np.arange(w)[None, :] < w // 2)
    agreement_left = float(np.mean(result.classes[left_mask] == lulc[left_mask]))
    agreement_right = float(np.mean(result.classes[(lulc > 0) & ~left_mask] == lulc[(lulc > 0) & ~left_mask]))
    log.info("Slovenia map agreement: left (training side) %.3f, right (held out) %.3f", agreement_left,
             agreement_right)  # fmt: skip
    record_property("map_agreement_right", agreement_right)
    assert agreement_left > agreement_right - 0.02
    assert agreement_right == pytest.approx(m["overall_accuracy"], abs=1e-9)
