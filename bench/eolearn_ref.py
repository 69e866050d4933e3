"""The reference path: the same computation as eo-learn's land-cover example does it.

eo-learn's ``examples/land-cover-map`` (SI_LULC pipeline) builds features and a classifier with
stock tasks. This module recomputes our features stage and our classifier that way, on the same
stored inputs, so the benchmark can compare speed and check the results:

* valid data: ``IS_DATA & ~CLM`` with a :class:`~eolearn.core.ZipFeatureTask` (the benchmark's
  project disables our cloud dilation, so this equals our ``IS_VALID``);
* date filter: :class:`~eolearn.features.SimpleFilterTask` with a valid-coverage predicate in the
  spirit of the example's ``ValidDataFractionPredicate`` (not shipped in eo-learn 1.5.7), but
  with our ``>=`` convention (the example's predicate uses ``>``), so both keep the same dates.
  The example filters after computing the indices; we filter first (less work for eo-learn);
* digital numbers to reflectance with a :class:`~eolearn.core.MapFeatureTask` (same float32
  product as our stage);
* NDVI (B08, B04), NDWI (B03, B08), NDBI (B11, B08):
  :class:`~eolearn.features.NormalizedDifferenceIndexTask`;
* tasselled cap: there is no stock eo-learn task, so a :class:`~eolearn.core.MapFeatureTask`
  applies plain numpy: ``reflectance @ C`` with the project's Sentinel-2 coefficient table
  (:mod:`lcms_tasks.features.indices`, Nedkov 2017), a column per component;
* features concatenated with :class:`~eolearn.core.MergeFeatureTask`;
* :class:`~eolearn.features.extra.interpolation.LinearInterpolationTask` with the valid mask and
  ``resample_range`` set to *our* regular date list (its ``(start, end, step)`` form excludes the
  end date, ours includes it). It does not extrapolate: before a pixel's first / after its last
  valid observation the result is NaN (its ``unknown_value``), whereas our stage extrapolates
  with the nearest valid value. Features are therefore compared only where eo-learn defines them.
  Its numba function is compiled on a tiny patch before the clock starts (compilation is a
  once-per-process cost);
* classifier: ``lgb.LGBMClassifier(objective="multiclass", num_class=C, metric="multi_logloss")``
  with LightGBM's defaults (100 trees, 31 leaves, learning rate 0.1) and an explicit
  ``random_state``, trained on the same training split as our XGBoost model (the example has no
  validation split or early stopping), predicting a tile as the example's prediction task does:
  the (T, H, W, F) features reshaped to (H*W, T*F) and ``model.predict``.

eo-learn's interpolation module imports ``numba`` and ``scikit-learn``, and ``LGBMClassifier``
needs ``scikit-learn``; neither is pinned in ``uv.lock``. :func:`check_available` says so clearly.
"""

from __future__ import annotations

import datetime as dt
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Extra packages the reference path needs beyond the project's lock.
REFERENCE_PACKAGES = ("numba", "sklearn", "lightgbm")


class ReferenceUnavailableError(RuntimeError):
    """The eo-learn / LightGBM reference path cannot run in this environment."""


def check_available() -> None:
    """Raise :class:`ReferenceUnavailableError` naming the missing packages and how to provide them."""
    import importlib.util

    missing = [name for name in REFERENCE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ReferenceUnavailableError(
            f"the eo-learn reference path needs {', '.join(missing)} (eo-learn's LinearInterpolationTask imports "
            "numba and scikit-learn; LGBMClassifier needs scikit-learn), which uv.lock does not pin. Install them "
            "outside the locked venv, e.g. `uv pip install --python .venv/bin/python --target /tmp/lcms-bench-deps "
            "--no-deps numba llvmlite scikit-learn joblib threadpoolctl cloudpickle` and run with "
            "PYTHONPATH=/tmp/lcms-bench-deps, or add them to the dev extras."
        )


class CoverageAtLeast:
    """Filter predicate: True when the share of valid pixels of a (H, W, 1) mask is >= ``threshold``."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def __call__(self, mask: np.ndarray) -> bool:
        return bool(np.count_nonzero(mask) / max(mask.size, 1) >= self.threshold)


def valid_data(is_data: np.ndarray, cloud_mask: np.ndarray) -> np.ndarray:
    """The example's valid-data mask: data and not cloud."""
    return is_data.astype(bool) & ~cloud_mask.astype(bool)


def tasselled_cap_matrix(band_names: list[str]) -> np.ndarray:
    """(n_bands, 3) float32 coefficients (brightness, greenness, wetness) in ``band_names`` order.

    Bands absent from the coefficient table get zero rows; optional table bands (B10) absent from
    ``band_names`` are left out, as in our stage.
    """
    from lcms_tasks.features import indices

    matrix = np.zeros((len(band_names), 3), dtype=np.float32)
    for col, band in enumerate(indices._TC_BANDS):
        if band in band_names:
            matrix[band_names.index(band)] = indices._TC_COEFFICIENTS[:, col]
        elif band not in indices._OPTIONAL_TC_BANDS:
            raise ValueError(f"band {band!r} of the tasselled cap is missing from {band_names}")
    return matrix


def features_tasks(
    band_names: list[str], quantification: float, target_dates: list[dt.datetime], min_coverage: float
) -> list[Any]:
    """The eo-learn tasks, in execution order, turning BANDS/IS_DATA/CLM into interpolated FEATURES."""
    from eolearn.core import FeatureType, MapFeatureTask, MergeFeatureTask, ZipFeatureTask
    from eolearn.features import NormalizedDifferenceIndexTask, SimpleFilterTask
    from eolearn.features.extra.interpolation import LinearInterpolationTask

    data, mask = FeatureType.DATA, FeatureType.MASK
    scale = np.float32(1.0 / quantification)
    tc = tasselled_cap_matrix(band_names)
    pos = {name: i for i, name in enumerate(band_names)}

    def to_reflectance(dn: np.ndarray) -> np.ndarray:
        out = np.empty(dn.shape, dtype=np.float32)
        np.multiply(dn, scale, out=out, casting="unsafe")
        return out

    def tasselled_cap(reflectance: np.ndarray) -> np.ndarray:
        return np.asarray(reflectance @ tc, dtype=np.float32)

    return [
        ZipFeatureTask({mask: ["IS_DATA", "CLM"]}, (mask, "VALID_DATA"), valid_data),
        SimpleFilterTask((mask, "VALID_DATA"), CoverageAtLeast(min_coverage)),
        MapFeatureTask((data, "BANDS"), (data, "REFLECTANCE"), to_reflectance),
        NormalizedDifferenceIndexTask((data, "REFLECTANCE"), (data, "NDVI"), bands=(pos["B08"], pos["B04"])),
        NormalizedDifferenceIndexTask((data, "REFLECTANCE"), (data, "NDWI"), bands=(pos["B03"], pos["B08"])),
        NormalizedDifferenceIndexTask((data, "REFLECTANCE"), (data, "NDBI"), bands=(pos["B11"], pos["B08"])),
        MapFeatureTask((data, "REFLECTANCE"), (data, "TC"), tasselled_cap),
        MergeFeatureTask({data: ["NDVI", "NDWI", "NDBI", "TC"]}, (data, "FEATURES")),
        LinearInterpolationTask((data, "FEATURES"), mask_feature=(mask, "VALID_DATA"), resample_range=target_dates),
    ]


def run_tasks(tasks: list[Any], patch: Any) -> tuple[Any, list[dt.datetime]]:
    """Execute ``tasks`` in order; returns (result patch, timestamps kept by the date filter)."""
    kept: list[dt.datetime] = []
    for task in tasks:
        patch = task.execute(patch)
        if type(task).__name__ == "SimpleFilterTask":
            kept = list(patch.timestamps or [])
    return patch, kept


def _warm_up_interpolation() -> None:
    """Compile eo-learn's numba interpolation on a 2 x 2 patch (so compilation is not timed)."""
    from eolearn.core import EOPatch, FeatureType
    from eolearn.features.extra.interpolation import LinearInterpolationTask
    from sentinelhub import CRS, BBox

    stamps = [dt.datetime(2020, 1, 1) + dt.timedelta(days=5 * i) for i in range(4)]
    patch = EOPatch(bbox=BBox((0, 0, 20, 20), crs=CRS(32638)), timestamps=stamps)
    patch[FeatureType.DATA, "F"] = np.ones((4, 2, 2, 1), dtype=np.float32)
    patch[FeatureType.MASK, "M"] = np.ones((4, 2, 2, 1), dtype=bool)
    LinearInterpolationTask((FeatureType.DATA, "F"), mask_feature=(FeatureType.MASK, "M"), resample_range=stamps[1:3])(
        patch
    )


def features_job(spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """Job: load the download EOPatch (as LoadTask does), run the tasks, save FEATURES (as SaveTask does).

    Spec keys: ``download_dir``, ``out_dir``, ``band_names``, ``quantification``, ``target_dates``
    (ISO dates), ``min_coverage``.
    """
    import time

    from eolearn.core import EOPatch, FeatureType, OverwritePermission

    check_available()
    _warm_up_interpolation()
    targets = [dt.datetime.fromisoformat(d) for d in spec["target_dates"]]
    tasks = features_tasks(list(spec["band_names"]), float(spec["quantification"]), targets, spec["min_coverage"])

    def job() -> dict[str, Any]:
        t0 = time.perf_counter()
        wanted = [(FeatureType.DATA, "BANDS"), (FeatureType.MASK, "IS_DATA"), (FeatureType.MASK, "CLM")]
        patch = EOPatch.load(spec["download_dir"], features=wanted, lazy_loading=False)
        t1, c1 = time.perf_counter(), time.process_time()
        result, kept = run_tasks(tasks, patch)
        t2, c2 = time.perf_counter(), time.process_time()
        out = EOPatch(bbox=result.bbox, timestamps=result.timestamps)
        out[FeatureType.DATA, "FEATURES"] = result[FeatureType.DATA, "FEATURES"]
        out.save(spec["out_dir"], overwrite_permission=OverwritePermission.OVERWRITE_FEATURES)
        t3 = time.perf_counter()
        return {
            "load_s": t1 - t0,
            "compute_wall_s": t2 - t1,
            "compute_cpu_s": c2 - c1,
            "save_s": t3 - t2,
            "kept_dates": [d.date().isoformat() for d in kept],
            "features_dtype": str(out[FeatureType.DATA, "FEATURES"].dtype),
        }

    return job


def lightgbm_train_job(spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """Job: train the example's LGBMClassifier on the train split of our merged dataset; test accuracy.

    Spec keys: ``dataset`` (dataset.npz), ``model_out`` (pickle path), ``seed``.
    """
    import time

    check_available()
    import lightgbm as lgb

    with np.load(spec["dataset"], allow_pickle=False) as npz:
        X, y, split = npz["X"], npz["y"].astype(np.int64), npz["split"]
    train, test = split == 0, split == 2

    def job() -> dict[str, Any]:
        t0 = time.perf_counter()
        model = lgb.LGBMClassifier(
            objective="multiclass",
            num_class=len(np.unique(y[train])),
            metric="multi_logloss",
            random_state=int(spec["seed"]),
            verbose=-1,
        )
        model.fit(X[train], y[train])
        train_s = time.perf_counter() - t0
        Path(spec["model_out"]).write_bytes(pickle.dumps(model))
        accuracy = float(np.mean(model.predict(X[test]) == y[test])) if test.any() else None
        return {
            "train_wall_s": train_s,
            "n_train": int(train.sum()),
            "n_test": int(test.sum()),
            "test_accuracy": accuracy,
            "model_bytes": Path(spec["model_out"]).stat().st_size,
            "n_trees": int(model.booster_.num_trees()),
        }

    return job


def pixel_rows(features: np.ndarray) -> np.ndarray:
    """(T, H, W, F) -> (H*W, T*F), time-major per pixel, as the example's prediction task reshapes."""
    t, h, w, f = features.shape
    return np.moveaxis(features, 0, 2).reshape(h * w, t * f)


def lightgbm_predict_job(spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """Job: load the features EOPatch, predict every pixel with the pickled LGBMClassifier, save the map.

    Spec keys: ``model`` (pickle), ``features_dir`` (our features EOPatch), ``out_dir``.
    """
    import time

    from eolearn.core import EOPatch, FeatureType, OverwritePermission

    check_available()
    import lightgbm  # noqa: F401  (imported before timing; unpickling needs it)

    model = pickle.loads(Path(spec["model"]).read_bytes())

    def job() -> dict[str, Any]:
        patch = EOPatch.load(spec["features_dir"], features=[(FeatureType.DATA, "FEATURES")], lazy_loading=False)
        features = patch[FeatureType.DATA, "FEATURES"]
        _, h, w, _ = features.shape
        t0, c0 = time.perf_counter(), time.process_time()
        labels = np.asarray(model.predict(pixel_rows(features))).reshape(h, w, 1).astype(np.uint8)
        t1, c1 = time.perf_counter(), time.process_time()
        out = EOPatch(bbox=patch.bbox)
        out[FeatureType.MASK_TIMELESS, "LULC_PRED"] = labels
        out.save(spec["out_dir"], overwrite_permission=OverwritePermission.OVERWRITE_FEATURES)
        return {"pixels": h * w, "compute_wall_s": t1 - t0, "compute_cpu_s": c1 - c0}

    return job
