"""Parcel classification on real parcels: the raw-band baseline and the effect of each feature and default.

``make bench-parcels`` runs LCMS's parcel cross-validation (:func:`lcms_tasks.parcels.workflow.evaluate`) on
the real French parcels (``../shared/data/worldcereal_france_2022_monthly``) with a sequence of feature and
classifier settings, each adding one thing to the one before, on the same folds (``--repeats`` fold
assignments, seeds 0..R-1), and the raw-band XGBoost baseline on those folds. It writes ``parcels.json`` and
``parcels.md`` to ``--out`` and prints the JSON's path last.

The steps are those the README's table reports: a step that does not raise mean macro-F1 by at least
``KEEP_GAIN`` is not in the defaults (it is still measured, so a later data set can change the verdict).
Every figure is an out-of-fold one: nothing is tuned on a test fold.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO.parent / "shared" / "data" / "worldcereal_france_2022_monthly" / "2022_FRA_LPIS_POLY_110.geoparquet"
SIX = ("NDVI", "NDWI", "NDBI", "TC_BRIGHTNESS", "TC_GREENNESS", "TC_WETNESS")
#: The smallest gain in mean macro-F1 that keeps an addition (one fold assignment moves it by about 0.02).
KEEP_GAIN = 0.005

#: (name, feature options, classifier options): each step adds one thing to the one before it, up to the
#: defaults; the steps after the defaults each add one thing to the defaults. The classifier options of the
#: first steps are the training stage's former defaults (eta 0.3, 300 rounds).
OLD_CLASSIFIER: dict[str, Any] = {"learning_rate": 0.3, "n_estimators": 300}
STEPS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("six indices (former features), former training defaults", {"bands": False, "indices": SIX}, OLD_CLASSIFIER),
    ("+ interpolated bands", {"indices": SIX}, OLD_CLASSIFIER),
    ("+ training defaults for small sets (eta 0.1, 1000 rounds)", {"indices": SIX}, {}),
    ("+ red-edge indices NDRE, NDVI705 (the defaults)", {}, {}),
    ("+ SWIR indices NBR, NDTI", {"indices": (*SIX, "NDRE", "NDVI705", "NBR", "NDTI")}, {}),
    ("+ temporal statistics (p10..p90, amplitude, peak/trough day)", {"statistics": ("all",)}, {}),
]
STATISTICS = ("mean", "std", "min", "p10", "p25", "p50", "p75", "p90", "max", "amplitude", "peak_day", "trough_day")
FIGURES = ("macro_f1", "overall_accuracy", "kappa")
DEFAULTS_MARK = "(the defaults)"


def run(table_path: Path, repeats: int, threads: int) -> dict[str, Any]:
    from lcms_tasks.parcels.features import FeatureOptions
    from lcms_tasks.parcels.workflow import ReadOptions, evaluate
    from lcms_tasks.stages import training

    read = ReadOptions(
        id_column="sample_id",
        time_column="timestamp",
        label_column="ewoc_code",
        band_pattern=r"S2-L2A-(?P<band>B\d[\dA])",
        nodata=(65535.0,),
    )
    table = read.read(str(table_path))
    steps: list[dict[str, Any]] = []
    baseline: dict[str, Any] | None = None
    for i, (name, features, classifier) in enumerate(STEPS):
        if features.get("statistics") == ("all",):
            features = {**features, "statistics": STATISTICS}
        t0 = time.perf_counter()
        result = evaluate(
            table,
            FeatureOptions(**features),
            training.Options(n_jobs=threads, **classifier),
            folds=5,
            repeats=repeats,
            seed=0,
            baseline=i == 0,
        )
        if i == 0:
            baseline = {m: result["baseline"][m] for m in FIGURES}
        row = {
            "step": name,
            **{m: result[m] for m in FIGURES},
            "macro_f1_sd_over_repeats": result["sd_over_repeats"]["macro_f1"],
            "n_features": result["features"]["n_features"],
            "seconds": round(time.perf_counter() - t0, 1),
        }
        defaults = next((s for s in steps if DEFAULTS_MARK in s["step"]), None)
        against = defaults if defaults is not None else (steps[-1] if steps else None)
        if against is not None:
            row["gain_macro_f1"] = row["macro_f1"] - against["macro_f1"]
            row["against"] = against["step"]
        steps.append(row)
        logging.info("%s: macro-F1 %.3f OA %.3f kappa %.3f", name, *(row[m] for m in FIGURES))
    assert baseline is not None
    return {
        "table": str(table_path),
        "n_parcels": result["n_parcels"],
        "n_classes": result["n_classes"],
        "folds": 5,
        "repeats": repeats,
        "keep_gain": KEEP_GAIN,
        "baseline": {"step": "raw bands, plain XGBoost (baseline)", **baseline},
        "steps": steps,
        "defaults": next(s for s in steps if DEFAULTS_MARK in s["step"]),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Parcel classification, {result['n_parcels']} real parcels, {result['n_classes']} classes",
        "",
        f"5-fold CV, {result['repeats']} repeats (same folds for every row); gain = macro-F1 change from the row "
        "above (after the defaults' row: from the defaults).",
        "",
        "| step | macro-F1 | OA | kappa | gain | features |",
        "|---|---|---|---|---|---|",
    ]
    b = result["baseline"]
    lines.append(f"| {b['step']} | {b['macro_f1']:.3f} | {b['overall_accuracy']:.3f} | {b['kappa']:.3f} | | |")
    for s in result["steps"]:
        gain = f"{s['gain_macro_f1']:+.3f}" if "gain_macro_f1" in s else ""
        lines.append(
            f"| {s['step']} | {s['macro_f1']:.3f} | {s['overall_accuracy']:.3f} | {s['kappa']:.3f} | {gain} "
            f"| {s['n_features']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="XGBoost threads (1: fastest for 400 rows)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.table.is_file():
        parser.error(f"{args.table}: the real parcel table is absent (expected as ../shared/data/...)")
    result = run(args.table, args.repeats, args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parcels.md").write_text(markdown(result), encoding="utf-8")
    path = args.out / "parcels.json"
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(markdown(result))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
