"""Parcel features, the CV rules, the model file and `lcms parcels evaluate | train | predict` on small tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lcms_tasks.cli import main
from lcms_tasks.parcels import classify
from lcms_tasks.parcels.features import FeatureOptions, parcel_features
from lcms_tasks.parcels.model import ParcelModel
from lcms_tasks.parcels.table import read_parcel_table

BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]
MONTHS = pd.date_range("2022-01-01", periods=8, freq="MS")
#: Greenness per month of each crop: winter crop early, summer crop late, meadow flat.
PHENOLOGY = {
    "winter": [0.3, 0.5, 0.8, 0.9, 0.6, 0.2, 0.1, 0.1],
    "summer": [0.1, 0.1, 0.1, 0.3, 0.6, 0.9, 0.8, 0.4],
    "meadow": [0.5, 0.5, 0.6, 0.7, 0.7, 0.6, 0.5, 0.5],
}
FAST = ["--threads", "1"]


def reflectance(green: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Plausible band reflectances (..., 9) from a greenness in [0, 1], with noise."""
    g = green[..., None]
    base = np.array([0.06, 0.09, 0.10, 0.14, 0.20, 0.22, 0.24, 0.28, 0.22])
    slope = np.array([-0.03, -0.02, -0.07, -0.04, 0.10, 0.16, 0.25, -0.06, -0.10])
    return base + slope * g + rng.normal(0.0, 0.012, (*g.shape[:-1], 9))


def crop_table(path: Path, per_class: dict[str, int], seed: int = 0, *, rare: int = 0, prefix: str = "S2-") -> Path:
    """A long parcel table (Parquet) of crops with their phenology; ``rare`` parcels of a rare class."""
    rng = np.random.default_rng(seed)
    rows = []
    counts = {**per_class, **({"orchard": rare} if rare else {})}
    for crop, n in counts.items():
        curve = np.array(PHENOLOGY.get(crop, PHENOLOGY["meadow"]))
        for i in range(n):
            shift = rng.normal(0.0, 0.05, curve.size)
            dn = np.clip(reflectance(np.clip(curve + shift, 0, 1), rng) * 10000, 1, 20000).astype(int)
            for t, month in enumerate(MONTHS):
                row = {"id": f"{crop}-{i}", "month": month, "label": crop}
                row.update({f"{prefix}{b}": int(dn[t, k]) for k, b in enumerate(BANDS)})
                rows.append(row)
    frame = pd.DataFrame(rows)
    frame.to_parquet(path)
    return path


def read(path: Path, **kw: object) -> object:
    return read_parcel_table(path, id_column="id", time_column="month", label_column="label", **kw)  # type: ignore[arg-type]


def test_parcel_features_interpolate_no_data_months_and_mark_empty_parcels(tmp_path: Path) -> None:
    path = crop_table(tmp_path / "t.parquet", {"winter": 2, "summer": 2})
    frame = pd.read_parquet(path)
    # winter-0: month 3 cloudy; winter-1: no valid first two months; summer-1: never valid.
    frame.loc[(frame.id == "winter-0") & (frame.month == MONTHS[3]), "S2-B04"] = 65535
    frame.loc[(frame.id == "winter-1") & frame.month.isin(MONTHS[:2]), "S2-B08"] = 65535
    frame.loc[frame.id == "summer-1", "S2-B02"] = 65535
    frame.to_parquet(path)
    table = read(path, nodata=[65535])
    options = FeatureOptions(indices=("NDVI",), statistics=("p50", "peak_day"))
    f = parcel_features(table, options)
    assert f.per_date == [*BANDS, "NDVI"] and len(f.grid) == 8
    assert f.names[:10] == [f"{b}_t00" for b in BANDS] + ["NDVI_t00"]
    assert f.names[-2:] == ["NDVI_p50", "NDVI_peak_day"] and f.X.shape == (4, 8 * 10 + 10 * 2)
    row = {pid: i for i, pid in enumerate(table.ids)}
    ndvi = {t: f.X[:, f.names.index(f"NDVI_t{t:02d}")] for t in range(8)}
    days = [(m - MONTHS[0]).days for m in MONTHS]
    # The cloudy month is the linear interpolation of its neighbours, in time.
    w = (days[3] - days[2]) / (days[4] - days[2])
    w0 = row["winter-0"]
    assert ndvi[3][w0] == pytest.approx((1 - w) * ndvi[2][w0] + w * ndvi[4][w0], rel=1e-5)
    # No valid month at the start: the first valid one is held.
    w1 = row["winter-1"]
    assert ndvi[0][w1] == ndvi[2][w1] and ndvi[1][w1] == ndvi[2][w1]
    # Never valid: NaN everywhere and n_valid 0; the others are complete.
    s1 = row["summer-1"]
    assert np.isnan(f.X[s1]).all() and f.n_valid[s1] == 0
    assert not np.isnan(np.delete(f.X, s1, axis=0)).any()
    assert f.n_valid[w0] == 7 and f.n_valid[w1] == 6
    # peak_day of NDVI: days since the grid's first date.
    assert f.X[row["summer-0"], f.names.index("NDVI_peak_day")] in days[4:8]
    # A 30-day grid from the table's first date instead of its own dates.
    f30 = parcel_features(table, options.model_copy(update={"step_days": 30}))
    assert f30.grid_offsets == list(range(0, days[-1] + 1, 30))


def test_indices_the_bands_do_not_allow_are_skipped_and_reported(tmp_path: Path) -> None:
    path = crop_table(tmp_path / "t.parquet", {"winter": 2})
    pd.read_parquet(path).drop(columns=["S2-B12"]).to_parquet(path)
    f = parcel_features(read(path), FeatureOptions(indices=("NDVI", "NBR", "NDTI", "NDRE", "TC_BRIGHTNESS")))
    assert f.per_date == [b for b in BANDS if b != "B12"] + ["NDVI", "NDRE"]
    assert f.skipped_indices == {"NBR": ["B12"], "NDTI": ["B12"], "TC_BRIGHTNESS": ["B12"]}


def test_selection_rules_rare_classes_unlabelled_and_empty_parcels() -> None:
    labels = np.array(["a"] * 6 + ["b"] * 5 + ["c"] * 2 + [None], dtype=object)
    n_valid = np.full(14, 8)
    n_valid[0] = 0  # an "a" parcel without data
    sel = classify.select(labels, n_valid, min_class_count=5)
    assert sel.classes == ["a", "b"] and sel.excluded_classes == {"c": 2}
    assert sel.excluded_parcels == {"unlabelled": 1, "no_valid_observation": 1, "rare_class": 2}
    assert sel.rows.tolist() == list(range(1, 11)) and sel.y.tolist() == [0] * 5 + [1] * 5
    # "a" has 5 parcels with data: still in at 5, out at 6.
    assert classify.select(labels, n_valid, min_class_count=6).classes == []


def test_stratified_folds_balance_classes_and_follow_the_seed() -> None:
    y = np.array([0] * 23 + [1] * 11 + [2] * 5)
    folds = classify.stratified_folds(y, 5, seed=3)
    for c in range(3):
        per_fold = np.bincount(folds[y == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1
    np.testing.assert_array_equal(folds, classify.stratified_folds(y, 5, seed=3))
    assert not np.array_equal(folds, classify.stratified_folds(y, 5, seed=4))
    with pytest.raises(ValueError, match="folds must be >= 2"):
        classify.stratified_folds(y, 1, seed=0)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_cli_writes_the_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = crop_table(tmp_path / "crops.parquet", {"winter": 12, "summer": 12, "meadow": 12}, rare=3)
    out = tmp_path / "cv.json"
    argv = ["parcels", "evaluate", str(path), "--id-column", "id", "--time-column", "month", "--label-column", "label"]
    code, printed, _ = _run([*argv, "--folds", "3", "--min-class-count", "5", "--json", str(out), *FAST], capsys)
    assert code == 0
    result = json.loads(out.read_text())
    assert json.loads(printed) == result
    assert (
        result["n_parcels"] == 36 and result["n_classes"] == 3 and result["classes"] == ["meadow", "summer", "winter"]
    )
    assert result["excluded_classes"] == {"orchard": 3}
    assert result["overall_accuracy"] > 0.9 and result["macro_f1"] > 0.9 and result["kappa"] > 0.85
    assert set(result["per_class"]["winter"]) == {"precision", "recall", "f1", "support"}
    assert sum(c["support"] for c in result["per_class"].values()) == 36
    folds = result["folds"]
    assert folds["k"] == 3 and len(folds["per_fold"]) == 3 and len(folds["assignment"]) == 36
    assert result["repeats"] == [
        {"repeat": 0, "seed": 0, **{m: result[m] for m in ("overall_accuracy", "macro_f1", "kappa")}}
    ]
    assert all(f["n_rounds"] >= 1 for f in folds["per_fold"]) and set(folds["sd"]) == {
        "overall_accuracy",
        "macro_f1",
        "kappa",
    }
    assert "orchard-0" not in folds["assignment"]
    feats = result["features"]
    # The defaults: the bands, the features stage's six indices and the red-edge ones on every date, no statistics.
    six = ["NDVI", "NDWI", "NDBI", "TC_BRIGHTNESS", "TC_GREENNESS", "TC_WETNESS"]
    assert feats["per_date"] == [*BANDS, *six, "NDRE", "NDVI705"]
    assert feats["n_features"] == 17 * 8 and feats["statistics"] == []
    assert result["table"]["bands"]["B08"] == "S2-B08"
    # Same seed, same figures; the confusion matrix adds up.
    assert np.array(result["confusion_matrix"]["rows_truth_columns_predicted"]).sum() == 36
    # Repeated CV: the first repeat is the run above (same seed), the figures are the repeats' means.
    code, printed, _ = _run(
        [*argv, "--folds", "3", "--min-class-count", "5", "--repeats", "2", "--baseline", *FAST], capsys
    )
    again = json.loads(printed)
    assert again["repeats"][0]["macro_f1"] == result["macro_f1"] and again["repeats"][1]["seed"] == 1
    assert again["macro_f1"] == pytest.approx(np.mean([r["macro_f1"] for r in again["repeats"]]))
    assert [a[0] for a in again["folds"]["assignment"].values()] == [a[0] for a in folds["assignment"].values()]
    assert all(len(a) == 2 for a in again["folds"]["assignment"].values()) and len(again["folds"]["per_fold"]) == 6
    assert np.array(again["confusion_matrix"]["rows_truth_columns_predicted"]).sum() == 72
    # The raw-band baseline on the same folds: 8 dates x 9 bands of raw values.
    assert again["baseline"]["n_features"] == 72 and len(again["baseline"]["repeats"]) == 2
    assert 0.0 <= again["baseline"]["macro_f1"] <= 1.0


def test_evaluate_cli_bad_input_exits_2_naming_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = crop_table(tmp_path / "crops.parquet", {"winter": 6, "summer": 6})
    base = ["parcels", "evaluate", str(path), "--id-column", "id", "--time-column", "month"]
    code, _, err = _run([*base, "--label-column", "crop", *FAST], capsys)
    assert code == 2 and str(path) in err and "--label-column 'crop' is not a column" in err
    code, _, err = _run([*base, "--label-column", "label", "--folds", "5", "--min-class-count", "3", *FAST], capsys)
    assert code == 2 and "--min-class-count 3 is below --folds 5" in err
    code, _, err = _run([*base, "--label-column", "label", "--min-class-count", "7", *FAST], capsys)
    assert code == 2 and "fewer than 2 classes have >= 7" in err and "'winter': 6" in err
    code, _, err = _run([*base, "--label-column", "label", "--indices", "NDVI,EVI", *FAST], capsys)
    assert code == 2 and "unknown index(es) ['EVI']" in err


def test_train_predict_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_path = crop_table(tmp_path / "train.parquet", {"winter": 15, "summer": 15, "meadow": 15}, seed=1, rare=2)
    model_path = tmp_path / "model.ubj"
    common = ["--id-column", "id", "--time-column", "month", "--label-column", "label", "--nodata", "65535"]
    code, printed, _ = _run(
        ["parcels", "train", str(train_path), *common, "--model", str(model_path), "--seed", "5", *FAST], capsys
    )
    assert code == 0 and model_path.is_file()
    summary = json.loads(printed)
    assert summary["classes"] == ["meadow", "summer", "winter"] and summary["excluded_classes"] == {"orchard": 2}
    model = ParcelModel.load(model_path)
    meta = model.metadata
    assert meta["bands"] == BANDS and meta["band_columns"]["B05"] == "S2-B05" and meta["seed"] == 5
    assert meta["read_options"]["nodata"] == [65535.0] and meta["read_options"]["id_column"] == "id"
    assert len(meta["feature_names"]) == model.booster.num_features() and {"xgboost", "lcms"} <= set(meta["libraries"])

    # A new season's table: other parcels; one without data; an extra band the model ignores.
    test_path = crop_table(tmp_path / "test.parquet", {"winter": 8, "summer": 8, "meadow": 8}, seed=2)
    frame = pd.read_parquet(test_path)
    frame.loc[frame.id == "summer-3", [f"S2-{b}" for b in BANDS]] = 65535
    frame["S2-B8A"] = frame["S2-B08"]
    frame.to_parquet(test_path)
    out = tmp_path / "pred.parquet"
    code, printed, _ = _run(
        [
            "parcels",
            "predict",
            str(test_path),
            "--model",
            str(model_path),
            "--out",
            str(out),
            "--label-column",
            "label",
        ],
        capsys,
    )
    assert code == 0
    pred = pd.read_parquet(out)
    assert len(pred) == 24 and list(pred.columns[:5]) == [
        "id",
        "predicted",
        "probability",
        "n_valid_observations",
        "status",
    ]
    empty = pred.set_index("id").loc["summer-3"]
    assert empty["status"] == "no_valid_observation" and empty["predicted"] is None and np.isnan(empty["probability"])
    ok = pred[pred.status == "ok"]
    assert (ok["predicted"] == ok["declared"]).mean() > 0.9
    np.testing.assert_allclose(ok[["p_meadow", "p_summer", "p_winter"]].sum(axis=1), 1.0, atol=1e-5)
    assert json.loads(printed)["no_valid_observation"] == 1
    # The extra band changes nothing: predictions equal those of the table without it (and CSV output works).
    frame.drop(columns=["S2-B8A"]).to_parquet(test_path)
    out_csv = tmp_path / "pred.csv"
    assert main(["parcels", "predict", str(test_path), "--model", str(model_path), "--out", str(out_csv)]) == 0
    capsys.readouterr()
    again = pd.read_csv(out_csv)
    assert "declared" not in again.columns
    np.testing.assert_allclose(again["probability"].to_numpy(), pred["probability"].to_numpy(), rtol=1e-6)

    # A table lacking a band of the model is refused, naming the band and the model.
    frame.drop(columns=["S2-B8A", "S2-B05"]).to_parquet(test_path)
    code, _, err = _run(["parcels", "predict", str(test_path), "--model", str(model_path), "--out", str(out)], capsys)
    assert code == 2 and "lacks band(s) ['B05']" in err and str(model_path) in err and str(test_path) in err


def test_model_file_checks(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ubj"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not an XGBoost model file"):
        ParcelModel.load(bad)
    with pytest.raises(FileNotFoundError, match="no such parcel model"):
        ParcelModel.load(tmp_path / "absent.ubj")
    import xgboost as xgb

    plain = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(np.eye(4), label=[0, 1, 0, 1]), 2)
    plain.save_model(str(tmp_path / "plain.ubj"))
    with pytest.raises(ValueError, match="without LCMS parcel metadata"):
        ParcelModel.load(tmp_path / "plain.ubj")
