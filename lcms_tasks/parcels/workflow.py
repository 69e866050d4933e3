"""``lcms parcels evaluate | train | predict`` as functions: a table in, a JSON-able result out.

The read options (columns, band pattern, no-data values, layout) travel with a trained model, so
``predict`` reads a new table the way the training table was read unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from lcms_tasks.parcels import classify
from lcms_tasks.parcels.features import FeatureOptions, ParcelFeatures, parcel_features
from lcms_tasks.parcels.model import ParcelModel
from lcms_tasks.parcels.table import ParcelTable, ParcelTableError, read_parcel_table
from lcms_tasks.stages import training

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: The raw-band baseline: XGBoost's own defaults (those of ``XGBClassifier``: 100 rounds, eta 0.3,
#: depth 6, no class weights, no early stopping) on the raw band values of every date, no data as NaN.
BASELINE_ROUNDS = 100


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How a parcel table is read (see :func:`lcms_tasks.parcels.table.read_parcel_table`)."""

    id_column: str
    time_column: str | None = None
    label_column: str | None = None
    band_pattern: str | None = None
    nodata: tuple[float, ...] = ()
    layout: str = "auto"
    bands: tuple[str, ...] | None = None

    def read(self, path: str) -> ParcelTable:
        """Read the table at ``path`` with these options."""
        return read_parcel_table(
            path,
            id_column=self.id_column,
            time_column=self.time_column,
            label_column=self.label_column,
            band_pattern=self.band_pattern,
            nodata=self.nodata,
            layout=self.layout,  # type: ignore[arg-type]  # checked by argparse's choices
            bands=self.bands,
        )


def _features_report(features: ParcelFeatures, options: FeatureOptions) -> dict[str, Any]:
    return {
        "n_features": len(features.names),
        "per_date": features.per_date,
        "statistics": list(options.statistics),
        "time_series": options.time_series,
        "skipped_indices": features.skipped_indices,
        "grid": [d.isoformat() for d in features.grid],
        "options": options.model_dump(mode="json"),
    }


def _table_report(table: ParcelTable) -> dict[str, Any]:
    return {k: v for k, v in table.report.items() if k != "dates"}


def _require_two_classes(table: ParcelTable, selection: classify.Selection, min_class_count: int) -> None:
    if len(selection.classes) < 2:
        counts = {
            **selection.excluded_classes,
            **{c: int((selection.y == i).sum()) for i, c in enumerate(selection.classes)},
        }
        raise ParcelTableError(
            table.path,
            f"fewer than 2 classes have >= {min_class_count} labelled parcels with data (--min-class-count); "
            f"parcels per class: {counts}",
        )


_FIGURES = ("overall_accuracy", "macro_f1", "kappa")


def _mean_sd(rows: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample standard deviation (0 for a single row) of each figure over ``rows``."""
    table = np.array([[row[m] for m in _FIGURES] for row in rows], dtype=np.float64)
    sd = table.std(axis=0, ddof=1) if len(rows) > 1 else np.zeros(len(_FIGURES))
    return dict(zip(_FIGURES, table.mean(axis=0).tolist(), strict=True)), dict(zip(_FIGURES, sd.tolist(), strict=True))


def evaluate(
    table: ParcelTable,
    feature_options: FeatureOptions,
    classifier: training.Options,
    *,
    folds: int = 5,
    repeats: int = 1,
    min_class_count: int = 10,
    seed: int = 0,
    baseline: bool = False,
) -> dict[str, Any]:
    """Cross-validated accuracy of LCMS's parcel classifier on ``table`` (rules: :mod:`.classify`).

    ``repeats`` stratified K-fold cross-validations with the fold seeds ``seed, seed + 1, ...`` (repeated
    CV: on a few hundred parcels one fold assignment moves macro-F1 by a few hundredths). The figures
    are the means over the repeats of the pooled out-of-fold figures; ``repeats`` lists each one.
    """
    if min_class_count < folds:
        raise ValueError(
            f"--min-class-count {min_class_count} is below --folds {folds}: every class must be in every test fold"
        )
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    features = parcel_features(table, feature_options)
    selection = classify.select(table.labels, features.n_valid, min_class_count)
    _require_two_classes(table, selection, min_class_count)
    X = features.X[selection.rows]
    runs = []
    for r in range(repeats):
        options = classifier.model_copy(update={"seed": seed + r})
        runs.append(classify.cross_validate(X, selection.y, selection.classes, options, folds=folds, seed=seed + r))
    per_repeat = [{"repeat": r, "seed": seed + r, **{m: cv[m] for m in _FIGURES}} for r, cv in enumerate(runs)]
    per_fold = [{"repeat": r, **f} for r, cv in enumerate(runs) for f in cv["per_fold"]]
    mean, sd = _mean_sd(per_repeat)
    fold_mean, fold_sd = _mean_sd(per_fold)
    per_class = {
        c: {
            **{m: float(np.mean([cv["per_class"][c][m] for cv in runs])) for m in ("precision", "recall", "f1")},
            "support": runs[0]["per_class"][c]["support"],
        }
        for c in selection.classes
    }
    confusion = np.sum([cv["confusion_matrix"]["rows_truth_columns_predicted"] for cv in runs], axis=0)
    ids = [str(table.ids[r]) for r in selection.rows]
    result: dict[str, Any] = {
        **mean,
        "per_class": per_class,
        "n_parcels": int(selection.rows.size),
        "n_classes": len(selection.classes),
        "classes": selection.classes,
        "min_class_count": min_class_count,
        "excluded_classes": selection.excluded_classes,
        "excluded_parcels": selection.excluded_parcels,
        "confusion_matrix": {
            "labels": selection.classes,
            "rows_truth_columns_predicted": confusion.tolist(),
            "counts": f"summed over {repeats} repeat(s)",
        },
        "repeats": per_repeat,
        "sd_over_repeats": sd,
        "folds": {
            "k": folds,
            "repeats": repeats,
            "seeds": [seed + r for r in range(repeats)],
            "stratified": True,
            "mean": fold_mean,
            "sd": fold_sd,
            "per_fold": per_fold,
            "assignment": {pid: [int(cv["fold_of"][i]) for cv in runs] for i, pid in enumerate(ids)},
        },
        "features": _features_report(features, feature_options),
        "classifier": {
            "model": "xgboost (the training stage's classifier and defaults)",
            "hyperparameters": classifier.model_copy(update={"seed": seed}).model_dump(mode="json"),
            "seeds": "fold k of repeat r: seed + r + k (inner split and XGBoost)",
            "early_stopping": f"on a stratified inner {classify.VALIDATION_FRACTION:.0%} of each training fold, "
            "then refitted on the whole training fold with the rounds chosen",
        },
        "table": _table_report(table),
        "seed": seed,
        "libraries": training.library_versions(),
    }
    if baseline:
        base = [
            raw_band_baseline(table, selection, cv["fold_of"], seed=seed + r, n_jobs=classifier.n_jobs)
            for r, cv in enumerate(runs)
        ]
        base_mean, base_sd = _mean_sd(base)
        result["baseline"] = {
            "description": base[0]["description"],
            "n_features": base[0]["n_features"],
            **base_mean,
            "sd_over_repeats": base_sd,
            "repeats": [{"repeat": r, "seed": seed + r, **{m: b[m] for m in _FIGURES}} for r, b in enumerate(base)],
        }
    return result


def raw_band_baseline(
    table: ParcelTable, selection: classify.Selection, fold_of: np.ndarray, *, seed: int, n_jobs: int = 0
) -> dict[str, Any]:
    """The baseline to beat on the same folds: plain XGBoost on the raw band values (:data:`BASELINE_ROUNDS`)."""
    import xgboost as xgb

    from lcms_tasks.ml.metrics import classification_report

    raw = np.ascontiguousarray(table.values.transpose(1, 0, 2)).reshape(len(table.ids), -1)[selection.rows]
    n_classes = len(selection.classes)
    params: dict[str, Any] = {"tree_method": "hist", "seed": seed}
    params.update(
        {"objective": "binary:logistic"} if n_classes == 2 else {"objective": "multi:softprob", "num_class": n_classes}
    )
    if n_jobs > 0:
        params["nthread"] = n_jobs
    predicted = np.full(selection.y.size, -1, dtype=np.int64)
    per_fold = []
    for k in range(int(fold_of.max()) + 1):
        test = fold_of == k
        booster = xgb.train(params, xgb.DMatrix(raw[~test], label=selection.y[~test], missing=np.nan), BASELINE_ROUNDS)
        predicted[test] = np.argmax(classify.predict_proba(booster, raw[test], n_classes), axis=1)
        report = classification_report(selection.y[test], predicted[test], list(range(n_classes)))
        per_fold.append({m: report[m] for m in _FIGURES})
    pooled = classification_report(selection.y, predicted, list(range(n_classes)))
    return {
        "description": f"plain XGBoost ({BASELINE_ROUNDS} rounds, eta 0.3, depth 6, no class weights) on the raw band "
        "values of every date, no data as NaN, same folds",
        "n_features": raw.shape[1],
        **{m: pooled[m] for m in _FIGURES},
        "per_fold": per_fold,
    }


def train(
    table: ParcelTable,
    read: ReadOptions,
    feature_options: FeatureOptions,
    classifier: training.Options,
    *,
    min_class_count: int = 10,
    seed: int = 0,
) -> tuple[ParcelModel, dict[str, Any]]:
    """A production model on every usable parcel of ``table`` (the CV's procedure, without test folds)."""
    features = parcel_features(table, feature_options)
    selection = classify.select(table.labels, features.n_valid, min_class_count)
    _require_two_classes(table, selection, min_class_count)
    options = classifier.model_copy(update={"seed": seed})
    booster, info = classify.fit(features.X[selection.rows], selection.y, len(selection.classes), options)
    metadata: dict[str, Any] = {
        "feature_names": features.names,
        "classes": selection.classes,
        "class_counts": {c: int((selection.y == i).sum()) for i, c in enumerate(selection.classes)},
        "excluded_classes": selection.excluded_classes,
        "excluded_parcels": selection.excluded_parcels,
        "min_class_count": min_class_count,
        "bands": list(table.bands),
        "band_columns": dict(table.columns),
        "per_date": features.per_date,
        "grid_offsets": features.grid_offsets,
        "grid": [d.isoformat() for d in features.grid],
        "feature_options": feature_options.model_dump(mode="json"),
        "read_options": dataclasses.asdict(read),
        "seed": seed,
        "hyperparameters": options.model_dump(mode="json"),
        "training": info,
        "trained_on": {"path": table.path, "n_parcels": int(selection.rows.size)},
        "libraries": training.library_versions(),
    }
    model = ParcelModel(booster, metadata)
    summary = {k: metadata[k] for k in ("classes", "class_counts", "excluded_classes", "excluded_parcels", "training")}
    summary.update(n_parcels=int(selection.rows.size), n_features=len(features.names), table=_table_report(table))
    return model, summary


def predict(
    model: ParcelModel, table: ParcelTable, *, threshold: float = 0.8, id_column: str | None = None
) -> pd.DataFrame:
    """One row per parcel: predicted class and probability (none for a parcel without data), declared class
    and the high-confidence disagreement flag when the table has labels."""
    import pandas as pd

    missing = [b for b in model.metadata["bands"] if b not in table.bands]
    if missing:
        dropped = {b: table.report["bands_dropped"][b] for b in missing if b in table.report.get("bands_dropped", {})}
        raise ParcelTableError(
            table.path,
            f"the table lacks band(s) {missing} that the model {model.path or ''} was trained with "
            f"(found bands {table.bands}{f'; {dropped}' if dropped else ''}); band pattern "
            f"{model.metadata['read_options'].get('band_pattern') or 'default'}",
        )
    # Only the model's bands: an extra band would change the tasselled cap's terms and the valid mask.
    table = table.with_bands(model.metadata["bands"])
    options = FeatureOptions.model_validate(model.metadata["feature_options"])
    features = parcel_features(
        table, options, grid_offsets=model.metadata["grid_offsets"], per_date=model.metadata["per_date"]
    )
    if features.names != model.feature_names:
        raise ParcelTableError(
            table.path, "the features computed from the table do not match the model's feature order"
        )
    has_data = features.n_valid > 0
    proba = np.full((len(table.ids), len(model.classes)), np.nan, dtype=np.float32)
    proba[has_data] = model.predict_proba(features.X[has_data])
    best = np.argmax(np.nan_to_num(proba, nan=-1.0), axis=1)
    predicted = np.array(model.classes, dtype=object)[best]
    predicted[~has_data] = None
    out = pd.DataFrame({id_column or model.metadata["read_options"]["id_column"]: table.ids})
    out["predicted"] = predicted
    out["probability"] = np.where(has_data, proba[np.arange(len(best)), best], np.nan)
    out["n_valid_observations"] = features.n_valid
    out["status"] = np.where(has_data, "ok", "no_valid_observation")
    if table.labels is not None:
        declared = table.labels
        out["declared"] = declared
        known = np.array([d is not None for d in declared]) & has_data
        agrees = np.array([d == p for d, p in zip(declared, out["predicted"], strict=True)])
        out["agrees"] = pd.array(np.where(known, agrees, False), dtype="boolean")
        out.loc[~known, "agrees"] = pd.NA
        out["disagreement"] = known & ~agrees & (out["probability"].to_numpy() >= threshold)
    for i, c in enumerate(model.classes):
        out[f"p_{c}"] = proba[:, i]
    return out
