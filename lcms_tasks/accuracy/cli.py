"""``lcms accuracy``: area and accuracy estimates with confidence intervals, sample designs, assessments.

* ``lcms accuracy area --confusion CONFUSION.csv --mapped-area AREAS.csv [--json OUT]``: the
  Olofsson et al. (2014) estimates of anyone's own sample counts and mapped areas;
* ``lcms accuracy design --config CONFIG --season SEASON --out DIR``: a stratified random sample of
  points over a season's map, for labelling;
* ``lcms accuracy assess --design DIR --labels LABELS.csv [--json OUT]``: the Stehman (2014)
  estimates of a labelled design.

Each prints its JSON on stdout (``--json OUT`` writes the same to a file too). Bad input is one line
on stderr naming the file, the line and the problem, and exit status 2 (``lcms_tasks.cli.main``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("lcms.accuracy")


def _emit(result: dict[str, Any], out: str | None) -> None:
    from lcms_tasks.storage import atomic_write_bytes

    text = json.dumps(result, indent=2, allow_nan=False)
    if out:
        atomic_write_bytes(Path(out), (text + "\n").encode())
        log.info("written to %s", out)
    print(text)


def _cmd_area(args: argparse.Namespace) -> int:
    from lcms_tasks.accuracy.estimate import AccuracyInputError
    from lcms_tasks.accuracy.olofsson import olofsson_estimates
    from lcms_tasks.accuracy.tables import mapped_areas_for, read_areas, read_confusion

    table = read_confusion(args.confusion)
    areas, area_lines = read_areas(args.mapped_area)
    mapped = mapped_areas_for(table, areas, str(args.mapped_area))
    # The estimator refuses these too; here the message can name the line of the file to fix.
    for name, line, row, area in zip(table.rows, table.lines, table.counts, mapped, strict=True):
        if area > 0 and row.sum() == 0:
            raise AccuracyInputError(
                f"map class {name!r} has no sample unit (a row of zeros) but mapped area {area:g} in "
                f"{args.mapped_area}: its area cannot be attributed to reference classes",
                path=table.path,
                line=line,
            )
        if area == 0 and row.sum() > 0:
            raise AccuracyInputError(
                f"class {name!r} has mapped area 0 but {int(row.sum())} sample unit(s) in {table.path}: a stratified "
                "sample cannot draw units from an empty stratum (an area rounded to 0? use a finer unit)",
                path=str(args.mapped_area),
                line=area_lines[name],
            )
    estimate = olofsson_estimates(table.counts, mapped, table.rows)
    for note in estimate.notes:
        log.warning("%s", note)
    result = {
        "confusion": str(args.confusion),
        "mapped_area_file": str(args.mapped_area),
        "area_unit": f"the unit of {args.mapped_area}",
        **estimate.to_dict(),
    }
    _emit(result, args.json)
    return 0


def _expected_ua(items: list[str]) -> tuple[float | None, dict[str, float]]:
    """``--expected-ua`` values: a bare number (every stratum) or NAME=NUMBER (one stratum, or ``change``)."""
    default: float | None = None
    by: dict[str, float] = {}
    for item in items:
        name, sep, text = item.rpartition("=")
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"--expected-ua {item!r}: expected a number or NAME=NUMBER (e.g. 0.8 or forest=0.9)"
            ) from None
        if sep:
            if not name.strip():
                raise ValueError(f"--expected-ua {item!r}: no stratum name before '='")
            by[name.strip()] = value
        else:
            default = value
    return default, by


def _cmd_design(args: argparse.Namespace) -> int:
    from lcms_tasks.accuracy.design import DesignOptions, make_design, write_design
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext

    default_ua, by_stratum = _expected_ua(args.expected_ua)
    options = DesignOptions(
        target_se=args.target_se,
        min_per_stratum=args.min_per_stratum,
        expected_ua=0.85 if default_ua is None else default_ua,
        expected_ua_by_stratum=by_stratum,
        seed=args.seed,
        buffer_px=args.buffer_px,
        change_strata=not args.no_change_strata,
        sample_size=args.sample_size,
        source=args.source,
    )
    if not 0 < options.target_se < 1:
        raise ValueError(f"--target-se {options.target_se}: must be between 0 and 1 (e.g. 0.01)")
    cfg = load_config(args.config)
    ctx = RunContext.create(
        cfg, season=args.season, run_id="accuracy-design", config_path=args.config, subset=args.tile
    )
    design = make_design(ctx, options)
    paths = write_design(design, Path(args.out))
    meta = design.meta
    summary = {
        "out": str(args.out),
        "files": [str(p) for p in paths],
        "project": meta["project"],
        "season": meta["season"],
        "source": meta["source"],
        "n_tiles": len(meta["tiles"]),
        **meta["allocation"],
        "strata": {s["name"]: {k: s[k] for k in ("pixels", "weight", "expected_ua", "n")} for s in meta["strata"]},
    }
    _emit(summary, None)
    return 0


def _cmd_assess(args: argparse.Namespace) -> int:
    from lcms_tasks.accuracy.assess import assess_folder

    result = assess_folder(args.design, args.labels)
    for note in result["notes"]:
        log.warning("%s", note)
    _emit(result, args.json)
    return 0


def add_accuracy_parser(sub: Any) -> None:
    """The ``lcms accuracy`` subcommands (registered by :func:`lcms_tasks.cli.build_parser`)."""
    acc = sub.add_parser(
        "accuracy",
        help="area-adjusted accuracy and class areas with confidence intervals; sample designs and assessments",
    )
    acc_sub = acc.add_subparsers(dest="action", required=True)
    p = acc_sub.add_parser(
        "area",
        help="area and accuracy estimates (Olofsson et al. 2014) of a sample confusion matrix and mapped areas",
        description="Stratified estimates when the strata are the map classes: the area of each class with its "
        "standard error and 95 % confidence interval (half-width, 1.96 SE), user's, producer's and overall accuracy "
        "with their standard errors. CONFUSION.csv: a header row of reference class names (first cell: any label) "
        "and one row per map class (its name, then sample counts); rows and header name the same classes. "
        "AREAS.csv: columns class,area (mapped area of each class, any unit: the estimated areas are in it).",
    )
    p.add_argument(
        "--confusion", required=True, metavar="CONFUSION.csv", help="sample counts, rows map, columns reference"
    )
    p.add_argument(
        "--mapped-area", required=True, metavar="AREAS.csv", help="mapped area per class (columns class,area)"
    )
    p.add_argument("--json", metavar="OUT", help="also write the JSON to this file")
    p.set_defaults(func=_cmd_area)

    p = acc_sub.add_parser(
        "design",
        help="draw a stratified random sample of points over a season's map, for reference labelling",
        description="Strata: the map classes; with the season's change map also one stratum per transition and a "
        "buffer stratum of --buffer-px pixels around changes. Total n = ceil((sum_h W_h S_h / target_se)^2) with "
        "S_h = sqrt(U_h (1 - U_h)) from the anticipated user's accuracies U_h; each stratum gets at least "
        "--min-per-stratum points (all of its pixels if fewer), the rest proportional to area. Writes DIR/design.json "
        "(strata, sizes, inclusion probabilities), DIR/points.csv and DIR/points.gpkg (with an empty 'reference' "
        "column to fill) and DIR/points_blind.csv (without the map's labels). Deterministic given --seed.",
    )
    p.add_argument("--config", required=True, help="project config YAML")
    p.add_argument("--season", help="season id of the config (default: the latest season)")
    p.add_argument("--tile", action="append", metavar="TILE", help="sample these tiles only (repeatable; default: all)")
    p.add_argument("--target-se", type=float, default=0.01, help="target standard error of overall accuracy (0.01)")
    p.add_argument("--min-per-stratum", type=int, default=50, help="minimum points per stratum (50)")
    p.add_argument(
        "--expected-ua",
        action="append",
        default=[],
        metavar="[NAME=]U",
        help="anticipated user's accuracy: U for every stratum (default 0.85), NAME=U for one stratum "
        "(a class name, 'buffer', a change stratum's name, or 'change' for every change stratum); repeatable",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (0): the same seed gives the same points")
    p.add_argument("--buffer-px", type=int, default=2, help="width of the buffer stratum around changes, pixels (2)")
    p.add_argument("--no-change-strata", action="store_true", help="strata are the map classes only")
    p.add_argument("--sample-size", type=int, help="a fixed total number of points instead of the one for --target-se")
    p.add_argument(
        "--source",
        choices=["auto", "published", "postprocessing"],
        default="auto",
        help="the map to sample: the published COGs, the post-processed EOPatches, or auto (published if every "
        "tile is, else post-processed)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the design and points into")
    p.set_defaults(func=_cmd_design)

    p = acc_sub.add_parser(
        "assess",
        help="area and accuracy estimates (Stehman 2014) of a labelled sample design",
        description="Joins LABELS.csv (columns point_id and reference: a class name or id; other columns ignored, so "
        "the design's points.csv with its reference column filled in will do) to the design's points and prints the "
        "estimates: overall, user's and producer's accuracy and class areas (ha) with standard errors and 95 % "
        "confidence intervals. Points without a label are left out and counted.",
    )
    p.add_argument("--design", required=True, metavar="DIR", help="a folder written by `lcms accuracy design`")
    p.add_argument("--labels", required=True, metavar="LABELS.csv", help="reference labels per point id")
    p.add_argument("--json", metavar="OUT", help="also write the JSON to this file")
    p.set_defaults(func=_cmd_assess)
