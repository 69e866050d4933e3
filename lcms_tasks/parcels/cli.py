"""``lcms parcels evaluate | train | predict``: crop type per parcel from a parcel time-series table.

Registered in :func:`lcms_tasks.cli.build_parser` by :func:`add_parcels_parser`. Bad input (a
missing column, an unreadable value, an unknown band, a table lacking the model's bands) exits 2
with one line naming the file, the column and the record; see :mod:`lcms_tasks.cli`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from lcms_tasks.parcels.defaults import DEFAULT_INDICES, DEFAULT_STATISTICS

log = logging.getLogger(__name__)


def _csv_list(text: str) -> tuple[str, ...]:
    """``'a,b, c'`` -> ``('a', 'b', 'c')``; ``'none'`` or ``''`` -> ``()``."""
    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _read_options(args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> Any:
    from lcms_tasks.parcels.workflow import ReadOptions

    d = defaults or {}

    def pick(name: str) -> Any:
        value = getattr(args, name, None)
        return value if value is not None else d.get(name)

    id_column = pick("id_column")
    if id_column is None:
        raise ValueError("--id-column is required (the parcel id column)")
    nodata = args.nodata if args.nodata is not None else d.get("nodata", ())
    bands = _csv_list(args.bands) if getattr(args, "bands", None) else None
    return ReadOptions(
        id_column=id_column,
        time_column=pick("time_column"),
        label_column=pick("label_column"),
        band_pattern=pick("band_pattern"),
        nodata=tuple(float(v) for v in nodata),
        layout=args.layout or d.get("layout", "auto"),
        bands=bands,
    )


def _feature_options(args: argparse.Namespace) -> Any:
    from lcms_tasks.parcels.features import FeatureOptions

    values: dict[str, Any] = {}
    if args.indices is not None:
        values["indices"] = _csv_list(args.indices)
    if args.statistics is not None:
        values["statistics"] = _csv_list(args.statistics)
    if args.no_bands:
        values["bands"] = False
    if args.no_time_series:
        values["time_series"] = False
    if args.step_days is not None:
        values["step_days"] = args.step_days
    if args.quantification is not None:
        values["quantification"] = args.quantification
    return FeatureOptions(**values)


def _classifier(args: argparse.Namespace) -> Any:
    from lcms_tasks.stages.training import Options

    return Options(n_jobs=args.threads)


def _write_json(result: dict[str, Any], out: str | None) -> None:
    text = json.dumps(result, indent=1, default=str)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n", encoding="utf-8")
        log.info("parcels: wrote %s", out)
    print(text)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from lcms_tasks.parcels.workflow import evaluate

    read = _read_options(args)
    if read.label_column is None:
        raise ValueError("--label-column is required to evaluate (the declared crop of each parcel)")
    features = _feature_options(args)
    table = read.read(args.table)
    result = evaluate(
        table,
        features,
        _classifier(args),
        folds=args.folds,
        repeats=args.repeats,
        min_class_count=args.min_class_count,
        seed=args.seed,
        baseline=args.baseline,
    )
    _write_json(result, args.json)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from lcms_tasks.parcels.workflow import train

    read = _read_options(args)
    if read.label_column is None:
        raise ValueError("--label-column is required to train (the declared crop of each parcel)")
    features = _feature_options(args)
    table = read.read(args.table)
    model, summary = train(
        table, read, features, _classifier(args), min_class_count=args.min_class_count, seed=args.seed
    )
    model.save(args.model)
    summary["model"] = args.model
    _write_json(summary, args.json)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from lcms_tasks.parcels.model import ParcelModel
    from lcms_tasks.parcels.workflow import predict

    out = Path(args.out)
    suffix = "".join(out.suffixes[-2:]).lower()
    if not (suffix.endswith((".parquet", ".csv")) or suffix == ".csv.gz"):
        raise ValueError(f"--out {args.out}: write a .parquet or a .csv file")
    if not 0.0 <= args.disagreement_threshold <= 1.0:
        raise ValueError(f"--disagreement-threshold must be within [0, 1], got {args.disagreement_threshold}")
    model = ParcelModel.load(args.model)
    stored = dict(model.metadata["read_options"])
    if args.label_column is None:
        stored.pop("label_column", None)  # predict reads labels only when asked (to flag disagreements)
    read = _read_options(args, stored)
    table = read.read(args.table)
    frame = predict(model, table, threshold=args.disagreement_threshold, id_column=read.id_column)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed: a failed write leaves no half file behind.
    partial = out.with_name(f".{out.name}.partial")
    try:
        if suffix.endswith(".parquet"):
            frame.to_parquet(partial, index=False)
        else:
            frame.to_csv(partial, index=False, compression="gzip" if suffix == ".csv.gz" else None)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    summary: dict[str, Any] = {
        "out": str(out),
        "n_parcels": len(frame),
        "predicted": int((frame["status"] == "ok").sum()),
        "no_valid_observation": int((frame["status"] != "ok").sum()),
        "predicted_per_class": {str(k): int(v) for k, v in frame["predicted"].value_counts().items()},
    }
    if "disagreement" in frame:
        known = frame["agrees"].dropna()
        summary["agreement_rate"] = float(known.astype(bool).mean()) if len(known) else None
        summary["disagreements"] = int(frame["disagreement"].sum())
    print(json.dumps(summary, indent=1))
    return 0


def _cmd_markers(args: argparse.Namespace) -> int:
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.parcels import raster

    declarations: dict[str, Any]
    if args.declarations is not None:
        if args.class_column is None:
            raise ValueError("--declarations needs --class-column (the declared crop of each parcel)")
        declarations = {
            "type": "file",
            "path": str(Path(args.declarations).resolve()),
            "layer": args.layer,
            "class_column": args.class_column,
            "id_column": args.id_column,
            "crosswalk_file": str(Path(args.crosswalk_file).resolve()) if args.crosswalk_file else None,
        }
    else:
        declarations = {"type": "synthetic", "misdeclared_fraction": args.misdeclared_fraction, "seed": args.seed}
    values = {
        "declarations": declarations,
        "legend": args.legend,
        "inner_buffer_px": args.inner_buffer_px,
        "min_pixels": args.min_pixels,
        "train_fraction": args.train_fraction,
        "block_m": args.block_m,
        "disagreement_threshold": args.disagreement_threshold,
        "min_class_count": args.min_class_count,
        "seed": args.seed,
        "threads": args.threads,
    }
    options = raster.Options.model_validate({k: v for k, v in values.items() if v is not None})
    cfg = load_config(args.config)
    ctx = RunContext.create(cfg, season=args.season, run_id="parcel-markers")
    # The outputs belong to a product: the one named, else the first mapping the markers' legend.
    product = args.product or cfg.product_of_legend(options.legend)
    cfg.product(product)  # unknown: ConfigError naming the products
    summary = raster.run(ctx.for_product(product), options)
    _write_json(summary, args.json)
    return 0


def _add_table_arguments(p: argparse.ArgumentParser, *, for_predict: bool = False) -> None:
    p.add_argument("table", metavar="TABLE", help="parcel time-series table: .parquet / .geoparquet / .csv")
    model_default = " (default: as the model was trained)" if for_predict else ""
    p.add_argument("--id-column", required=not for_predict, help=f"parcel id column{model_default}")
    p.add_argument(
        "--time-column", help=f"date column of a long table (one row per parcel and date){model_default or ''}"
    )
    p.add_argument(
        "--label-column",
        required=not for_predict,
        help="declared class of each parcel" + (" (optional: flags disagreements)" if for_predict else ""),
    )
    p.add_argument(
        "--band-pattern",
        metavar="REGEX",
        help="regular expression finding the band in a column name, with a named group 'band' (and 'date' for a wide "
        r"table), e.g. 'S2-L2A-(?P<band>B\d[\dA])'; default: a band name B01..B12/B8A standing alone" + model_default,
    )
    p.add_argument(
        "--nodata",
        metavar="V",
        type=float,
        action="append",
        help="band value meaning no data (repeatable), e.g. 65535; NaN and empty cells always are" + model_default,
    )
    p.add_argument(
        "--layout",
        choices=("auto", "long", "wide"),
        help="long (one row per parcel and date), wide (one row per parcel, band-and-date columns); "
        "default auto: long when --time-column is given",
    )
    if not for_predict:
        p.add_argument("--bands", metavar="LIST", help="use only these bands (comma list, e.g. B02,B03,B04,B08)")
        p.add_argument(
            "--indices",
            metavar="LIST",
            help=f"spectral indices per date (comma list or 'none'): default {','.join(DEFAULT_INDICES)}; also "
            "NDMI, NBR, NDTI; those the table's bands do not allow are skipped and reported",
        )
        p.add_argument(
            "--statistics",
            metavar="LIST",
            help="temporal statistics of each feature over the date grid (comma list or 'none'): mean, std, min, "
            "p10, p25, p50, p75, p90, max, amplitude, peak_day, trough_day; "
            f"default {','.join(DEFAULT_STATISTICS) or 'none'}",
        )
        p.add_argument("--no-bands", action="store_true", help="leave the bands themselves out of the features")
        p.add_argument("--no-time-series", action="store_true", help="only the temporal statistics, not every date")
        p.add_argument(
            "--step-days", type=int, help="date grid every N days from the table's first date (default: its dates)"
        )
        p.add_argument("--quantification", type=float, help="band values are reflectance x this (default 10000)")
        p.add_argument(
            "--min-class-count",
            type=int,
            default=10,
            metavar="N",
            help="classes with fewer usable parcels are left out and reported (default 10; at least --folds)",
        )
        p.add_argument("--seed", type=int, default=0, help="seed of the folds, the inner split and XGBoost (default 0)")
    p.add_argument("--threads", type=int, default=0, help="XGBoost threads (default 0: all cores)")
    # SUPPRESS: an absent flag keeps the top-level `lcms --debug` value (as lcms_tasks.cli._add_debug does)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")


def add_parcels_parser(sub: Any) -> None:
    """The ``lcms parcels`` subcommands: evaluate, train, predict, markers."""
    parcels = sub.add_parser(
        "parcels",
        help="crop type per parcel from a parcel time-series table: evaluate (cross-validation), train, predict",
        description="Parcel markers from per-parcel Sentinel-2 time series (a table of parcel id, date, band values "
        "and label, long or wide): LCMS's features (bands, indices, temporal interpolation onto a date grid, temporal "
        "statistics) and the training stage's classifier.",
    )
    parcels_sub = parcels.add_subparsers(dest="action", required=True)

    p = parcels_sub.add_parser(
        "evaluate",
        help="stratified K-fold cross-validation; prints (and writes) JSON with OA, macro-F1, kappa, per class",
    )
    _add_table_arguments(p)
    p.add_argument("--folds", type=int, default=5, metavar="K", help="number of folds (default 5)")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        metavar="R",
        help="repeated cross-validation: R fold assignments (seeds S, S+1, ...), figures averaged (default 1)",
    )
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also cross-validate plain XGBoost on the raw band values on the same folds (JSON key 'baseline')",
    )
    p.add_argument("--json", metavar="OUT", help="also write the JSON to this file")
    p.set_defaults(func=_cmd_evaluate)

    p = parcels_sub.add_parser("train", help="train a parcel model on every usable parcel of TABLE")
    _add_table_arguments(p)
    p.add_argument("--model", required=True, metavar="OUT", help="model file to write (.ubj; .json for XGBoost JSON)")
    p.add_argument("--json", metavar="OUT", help="also write the training summary to this file")
    p.set_defaults(func=_cmd_train)

    p = parcels_sub.add_parser("predict", help="predict the class of every parcel of TABLE with a trained model")
    _add_table_arguments(p, for_predict=True)
    p.add_argument("--model", required=True, metavar="M", help="model file written by `lcms parcels train`")
    p.add_argument("--out", required=True, metavar="OUT", help="predictions: .parquet or .csv")
    p.add_argument(
        "--disagreement-threshold",
        type=float,
        default=0.8,
        help="with --label-column: flag a parcel whose predicted class differs from the declared one with at least "
        "this probability (default 0.8)",
    )
    p.set_defaults(func=_cmd_predict)

    p = parcels_sub.add_parser(
        "markers",
        help="crop type per declared parcel from the features stage's tiles: predicted crop, probability, flags",
        description="Rasterise the season's declarations on every tile, aggregate the features stage's FEATURES over "
        "each parcel's clean pixels after an inner buffer, train the training stage's classifier on a spatially "
        "grouped share of the parcels and predict every parcel that is not too small. Writes a GeoParquet, a "
        "GeoPackage, a CSV of disagreements and summary.json under <project>/<season>/parcel_markers/_run/ (for a "
        "product other than the primary one: <project>/<season>/products/<product>/parcel_markers/_run/).",
    )
    p.add_argument("--config", required=True, metavar="C", help="project config")
    p.add_argument("--season", required=True, metavar="S", help="season id")
    p.add_argument("--declarations", metavar="FILE", help="vector file of declared parcels (default: synthetic)")
    p.add_argument("--class-column", metavar="COL", help="declared crop column of --declarations")
    p.add_argument("--id-column", metavar="COL", help="parcel id column of --declarations (default: record number)")
    p.add_argument("--layer", help="layer of a multi-layer --declarations file")
    p.add_argument("--crosswalk-file", metavar="CSV", help="CSV code,class mapping the declared codes to the legend")
    p.add_argument("--legend", help="legend of the crops (default crop_type)")
    p.add_argument("--product", help="the product the markers belong to (default: the first product mapping --legend)")
    p.add_argument("--inner-buffer-px", type=int, metavar="N", help="inner buffer in pixels (default 1)")
    p.add_argument("--min-pixels", type=int, metavar="N", help="fewer clean pixels: status too_small (default 4)")
    p.add_argument("--train-fraction", type=float, metavar="F", help="share of parcels used for training (0.5)")
    p.add_argument("--block-m", type=float, metavar="M", help="side of the cells grouping parcels for the split (2000)")
    p.add_argument("--disagreement-threshold", type=float, metavar="P", help="flag threshold (default 0.8)")
    p.add_argument("--min-class-count", type=int, metavar="N", help="rarer training crops are left out (default 5)")
    p.add_argument(
        "--misdeclared-fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="synthetic declarations only: share of parcels declared with another crop (default 0)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and XGBoost (default 0)")
    p.add_argument("--threads", type=int, default=0, help="XGBoost threads (default 0: all cores)")
    p.add_argument("--json", metavar="OUT", help="also write the summary JSON to this file")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    p.set_defaults(func=_cmd_markers)


if __name__ == "__main__":  # pragma: no cover
    from lcms_tasks.cli import main

    sys.exit(main(["parcels", *sys.argv[1:]]))
