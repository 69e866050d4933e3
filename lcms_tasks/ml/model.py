"""A trained LCMS classifier: an XGBoost booster plus the metadata that makes it usable.

The model folder (``training/_run/model``) holds ``model.ubj`` (the booster,
already truncated to its best iteration) and ``metadata.json`` (feature names
in order, class ids of the encoded labels, legend, metrics...). The booster is
used directly (``inplace_predict`` on float32 arrays) because prediction runs
over every pixel of a country and the scikit-learn wrapper adds copies.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lcms_tasks.errors import ArtefactMissingError, StageError

if TYPE_CHECKING:
    import xgboost as xgb

    from lcms_tasks.storage import Storage

MODEL_FILE = "model.ubj"
METADATA_FILE = "metadata.json"


def describe_feature_difference(expected: Sequence[str], actual: Sequence[str]) -> str | None:
    """A readable description of how ``actual`` differs from ``expected`` (``None`` if identical)."""
    expected, actual = list(expected), list(actual)
    if expected == actual:
        return None
    missing = [n for n in expected if n not in set(actual)]
    extra = [n for n in actual if n not in set(expected)]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} feature(s): {_short_list(missing)}")
    if extra:
        parts.append(f"unexpected {len(extra)} feature(s): {_short_list(extra)}")
    if not missing and not extra:
        first = next(i for i, (a, b) in enumerate(zip(expected, actual, strict=True)) if a != b)
        parts.append(
            f"same features in a different order (first difference at column {first}: "
            f"model expects {expected[first]!r}, got {actual[first]!r})"
        )
    elif len(expected) != len(actual):
        parts.append(f"model expects {len(expected)} features, got {len(actual)}")
    return "; ".join(parts)


def _short_list(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


class LcmsModel:
    """A booster with its feature order and class ids; predicts class ids and probabilities."""

    def __init__(self, booster: xgb.Booster, metadata: dict[str, Any], *, uri: str | None = None) -> None:
        try:
            self.feature_names: list[str] = [str(n) for n in metadata["feature_names"]]
            self.class_ids: np.ndarray = np.asarray(metadata["label_encoding"]["class_ids"], dtype=np.int64)
        except (KeyError, TypeError) as err:
            raise StageError(f"model metadata{f' at {uri}' if uri else ''} lacks {err}") from err
        if len(self.class_ids) < 2:
            raise StageError(f"model{f' at {uri}' if uri else ''} has fewer than 2 classes: {self.class_ids.tolist()}")
        self.booster = booster
        self.metadata = metadata
        self.uri = uri
        self.run_id: str | None = None  # run id of the training run that wrote the model (set by load)
        n_booster = booster.num_features()
        if n_booster != len(self.feature_names):
            raise StageError(
                f"model{f' at {uri}' if uri else ''}: booster has {n_booster} features but metadata "
                f"lists {len(self.feature_names)}"
            )

    @classmethod
    def load(cls, storage: Storage, uri: str) -> LcmsModel:
        """Load the complete model folder at ``uri`` (``ArtefactMissingError`` if absent or incomplete)."""
        import xgboost as xgb

        marker = storage.read_marker(uri)
        with storage.reading_dir(uri) as path:
            model_path = path / MODEL_FILE
            meta_path = path / METADATA_FILE
            if not model_path.is_file() or not meta_path.is_file():
                raise ArtefactMissingError(f"model folder {uri} lacks {MODEL_FILE} or {METADATA_FILE}")
            metadata = json.loads(meta_path.read_text(encoding="utf-8"))
            booster = xgb.Booster(model_file=str(model_path))
        model = cls(booster, metadata, uri=uri)
        model.run_id = marker.get("run_id")
        return model

    @property
    def n_classes(self) -> int:
        """Number of classes the model predicts."""
        return len(self.class_ids)

    def set_threads(self, n_threads: int) -> None:
        """Use ``n_threads`` for prediction (0: all cores)."""
        self.booster.set_param({"nthread": int(n_threads) if n_threads > 0 else 0})

    def check_features(self, names: Sequence[str], *, where: str = "input") -> None:
        """Raise ``StageError`` naming the missing / extra / reordered features if ``names`` differ."""
        diff = describe_feature_difference(self.feature_names, names)
        if diff is not None:
            source = f" (model {self.uri})" if self.uri else ""
            raise StageError(f"{where}: features do not match the model{source}: {diff}")

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, C) float32 class probabilities, columns in :attr:`class_ids` order; NaN = missing value."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise StageError(f"expected a (n, {len(self.feature_names)}) feature matrix, got shape {X.shape}")
        if X.shape[0] == 0:
            return np.zeros((0, self.n_classes), dtype=np.float32)
        # The booster is already truncated to its best iteration, so all trees are used.
        out = np.asarray(self.booster.inplace_predict(X, missing=np.nan, validate_features=False))
        if out.ndim == 1:  # binary:logistic gives P(class 1) only
            p1 = out.astype(np.float32)
            out = np.stack([1.0 - p1, p1], axis=1)
        return out.astype(np.float32, copy=False)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class ids (n,) of the most probable class."""
        return self.class_ids[np.argmax(self.predict_proba(X), axis=1)]
