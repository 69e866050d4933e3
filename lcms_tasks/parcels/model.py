"""The parcel model file: one XGBoost model file that carries its own metadata.

``lcms parcels train`` writes the booster (UBJSON, or XGBoost JSON when the
file name ends in ``.json``) with the LCMS metadata stored as the booster
attribute ``lcms_parcels`` (XGBoost keeps attributes inside the model file), so
the model cannot be separated from what it needs to be applied: the feature
order, the band mapping (bands, the columns and pattern they were read with,
no-data values, quantification), the date grid, the classes (labels) in the
encoded order, the rare classes left out, the seed, the hyperparameters and the
library versions. The file is written atomically (a temporary file renamed).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lcms_tasks.errors import LcmsError

if TYPE_CHECKING:
    import xgboost as xgb

FORMAT = "lcms-parcels-model"
FORMAT_VERSION = 1
ATTRIBUTE = "lcms_parcels"


class ParcelModelError(LcmsError, ValueError):
    """A file is not a readable LCMS parcel model (the message names it)."""

    permanent = True


class ParcelModel:
    """A booster and its metadata; predicts class probabilities of parcel feature rows."""

    def __init__(self, booster: xgb.Booster, metadata: dict[str, Any], *, path: str | None = None) -> None:
        where = f" {path}" if path else ""
        for key in ("feature_names", "classes", "bands", "per_date", "grid_offsets", "feature_options"):
            if key not in metadata:
                raise ParcelModelError(f"parcel model{where}: metadata lacks {key!r}")
        if booster.num_features() != len(metadata["feature_names"]):
            raise ParcelModelError(
                f"parcel model{where}: booster has {booster.num_features()} features but the metadata lists "
                f"{len(metadata['feature_names'])}"
            )
        self.booster = booster
        self.metadata = metadata
        self.path = path

    @property
    def classes(self) -> list[str]:
        """Labels in the encoded order (column order of :meth:`predict_proba`)."""
        return [str(c) for c in self.metadata["classes"]]

    @property
    def feature_names(self) -> list[str]:
        """Feature columns in the order the booster expects."""
        return [str(n) for n in self.metadata["feature_names"]]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, C) float32 class probabilities."""
        from lcms_tasks.parcels.classify import predict_proba

        return predict_proba(self.booster, X, len(self.classes))

    def save(self, path: str | Path) -> None:
        """Write the model file (atomically); the metadata travels inside it."""
        path = Path(path)
        metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.metadata}
        self.booster.set_attr(**{ATTRIBUTE: json.dumps(metadata, sort_keys=True, default=str)})
        raw = self.booster.save_raw("json" if path.suffix.lower() == ".json" else "ubj")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(bytes(raw))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | Path) -> ParcelModel:
        """Read a model file written by :meth:`save`."""
        import xgboost as xgb

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such parcel model file")
        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(path.read_bytes()))
        except xgb.core.XGBoostError as err:
            raise ParcelModelError(f"{path}: not an XGBoost model file: {str(err).splitlines()[0]}") from err
        text = booster.attr(ATTRIBUTE)
        if text is None:
            raise ParcelModelError(
                f"{path}: an XGBoost model without LCMS parcel metadata (not from `lcms parcels train`)"
            )
        metadata = json.loads(text)
        if metadata.get("format") != FORMAT or metadata.get("format_version") != FORMAT_VERSION:
            raise ParcelModelError(
                f"{path}: format {metadata.get('format')!r} version {metadata.get('format_version')!r}; "
                f"expected {FORMAT!r} version {FORMAT_VERSION}"
            )
        return cls(booster, metadata, path=str(path))
