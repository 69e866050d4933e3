"""``lcms``: the command line. Runs one stage on one tile or batch, validates
configs, lists tiles. An ECS container or a Celery worker calls the same
entry point as an engineer at a terminal.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from lcms_tasks.errors import LcmsError

log = logging.getLogger("lcms")


def _cmd_config_validate(args: argparse.Namespace) -> int:
    from lcms_tasks.config import load_config
    from lcms_tasks.grid import project_tiles

    cfg = load_config(args.file)
    tiles = project_tiles(cfg)
    print(f"{args.file}: valid — project {cfg.project!r}, {len(tiles)} tiles, seasons {', '.join(cfg.seasons)}")
    return 0


def _cmd_config_template(args: argparse.Namespace) -> int:
    from lcms_tasks.template import config_template

    sys.stdout.write(config_template())
    return 0


def _cmd_tiles_list(args: argparse.Namespace) -> int:
    from lcms_tasks.config import load_config
    from lcms_tasks.grid import make_batches, project_tiles, write_tiles_geojson

    cfg = load_config(args.config)
    tiles = project_tiles(cfg)
    batch_of = {t: b.id for b in make_batches(tiles, cfg.grid.batch_size) for t in b.tile_ids}
    if args.json:
        print(json.dumps([{**t.to_dict(), "batch": batch_of[t.id]} for t in tiles], indent=1))
    else:
        print("tile\tbatch\tepsg\tmin_x\tmin_y\tmax_x\tmax_y")
        for t in tiles:
            print("\t".join([t.id, batch_of[t.id], str(t.epsg), *(f"{v:.0f}" for v in t.bounds)]))
    if args.geojson:
        write_tiles_geojson(tiles, Path(args.geojson))
        print(f"grid written to {args.geojson}", file=sys.stderr)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from lcms_tasks import runner
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.grid import project_tiles, select_tiles
    from lcms_tasks.stages import stage_info

    cfg = load_config(args.config)
    ctx = RunContext.create(
        cfg,
        season=args.season,
        run_id=args.run_id,
        config_path=str(Path(args.config).resolve()),
        skip_existing=args.skip_existing,
        upstream_run_id=args.upstream_run_id,
    )
    out: dict[str, Any]
    if not stage_info(args.stage).mapped:
        out = {
            "stage": args.stage,
            "season": ctx.season,
            "run_id": ctx.run_id,
            "written": runner.run_stage(args.stage, ctx),
        }
    elif args.batch:
        out = runner.run_batch(args.stage, args.batch, ctx, args.subset).to_dict()
    else:
        all_tiles = project_tiles(cfg)
        tiles = select_tiles(all_tiles, args.tile) if args.tile else all_tiles
        out = runner.run_tiles(args.stage, tiles, ctx).to_dict()
    print(json.dumps(out, indent=1))
    return 0


def _parse_params(items: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--param takes NAME=VALUE, got {item!r}")
        params[name.strip()] = value.strip()
    return params


def _cmd_stages(args: argparse.Namespace) -> int:
    from lcms_tasks.stages import STAGES

    for info in STAGES:
        after = f"after {info.upstream}" if info.upstream else "first"
        print(f"{info.name:18s} {'per tile' if info.mapped else 'per season':10s} {after:22s} {info.summary}")
    return 0


def _reference_legend(args: argparse.Namespace) -> tuple[Any, list[Any] | None]:
    """(config or None, legend or None) of ``--config``/``--legend``."""
    if not args.config:
        if args.legend:
            raise ValueError("--legend needs --config (the project whose legend it names)")
        return None, None
    from lcms_tasks.config import load_config

    cfg = load_config(args.config, check_files=False)
    return cfg, cfg.legend(args.legend)


def _cmd_reference_ingest(args: argparse.Namespace) -> int:
    from lcms_tasks.reference.crosswalk import read_crosswalk
    from lcms_tasks.reference.ingest import IngestOptions, ingest_file, write_outputs

    cfg, legend = _reference_legend(args)
    crosswalk = read_crosswalk(args.crosswalk)
    legend_name = args.legend or (cfg.classification.legend if cfg is not None else "legend")
    crosswalk.resolve(legend, legend_name=legend_name)
    if legend is None:
        log.warning("no --config: crosswalk classes are not checked against a legend (names get ids 1, 2, ...)")
    source = Path(args.source)
    source_type = args.source_type or ("osm" if source.name.lower().endswith((".pbf", ".osm")) else "manual")
    options = IngestOptions(
        code_columns=tuple(c.strip() for c in args.code_column.split(",") if c.strip()),
        source_type=source_type,
        source_file=str(source),
        year=args.year,
        date_column=args.date_column,
        min_area_m2=args.min_area_m2,
        priority=args.priority,
    )
    result = ingest_file(source, crosswalk, options, layer=args.layer, to_crs=args.to_crs)
    result.report["legend"] = legend_name if legend is not None else None
    write_outputs(result.frame, Path(args.out), result.report, Path(args.report))
    r = result.report
    print(json.dumps({"out": args.out, "read": r["read"], "kept": r["kept"], "dropped": r["dropped"]}))
    return 0


def _cmd_reference_fuse(args: argparse.Namespace) -> int:
    from lcms_tasks.reference.ingest import fuse_frames, read_ingested, write_outputs

    inputs = [(name, read_ingested(Path(name))) for name in args.inputs]
    result = fuse_frames(inputs, to_crs=args.to_crs)
    write_outputs(result.frame, Path(args.out), result.report, Path(args.report))
    r = result.report
    print(json.dumps({"out": args.out, "read": r["read"], "kept": r["kept"], "dropped": r["dropped"]}))
    return 0


def _cmd_reference_quality(args: argparse.Namespace) -> int:
    from lcms_tasks.config import load_config
    from lcms_tasks.reference.quality import write_quality

    cfg = load_config(args.config)
    report = write_quality(
        Path(args.ref),
        cfg,
        Path(args.out_dir),
        legend_name=args.legend,
        previous_map=Path(args.previous_map) if args.previous_map else None,
        under_ratio=args.under_ratio,
    )
    spread = report["spread"]
    print(
        json.dumps(
            {
                "out_dir": args.out_dir,
                "n_polygons": report["n_polygons"],
                "tiles_with_reference": spread["tiles_with_reference"],
                "n_tiles": spread["n_tiles"],
                "under_represented": report.get("under_represented", []),
            }
        )
    )
    return 0


def _add_reference_parser(sub: Any) -> None:
    """The ``lcms reference`` subcommands: ingest, fuse, quality."""
    ref = sub.add_parser("reference", help="ingest, fuse and assess reference data (LPIS, cadastre, OSM, labels)")
    ref_sub = ref.add_subparsers(dest="action", required=True)
    p = ref_sub.add_parser("ingest", help="crosswalk and clean one vector source into a reference GeoPackage")
    p.add_argument("source", help="vector file (GeoPackage, Shapefile, .zip, GeoJSON, GeoParquet, .osm.pbf)")
    p.add_argument("--crosswalk", required=True, help="CSV (code,class[,year][,source]) or YAML {code: class}")
    p.add_argument("--code-column", required=True, help="column of the class code (comma-separated: first non-null)")
    p.add_argument("--year", type=int, help="keep records of this year (with --date-column) / label records with it")
    p.add_argument("--date-column", help="column of dates/years/ranges (a range serves its last year)")
    p.add_argument("--config", help="project config: crosswalk classes are checked against its legend")
    p.add_argument("--legend", choices=["land_cover", "crop_type"], help="legend of --config (default: its own)")
    p.add_argument("--layer", help="layer of a multi-layer source")
    p.add_argument("--source-type", choices=["lpis", "cadastre", "osm", "manual", "confirmed_changes"])
    p.add_argument("--min-area-m2", type=float, default=0.0, help="drop polygons smaller than this (sliver)")
    p.add_argument("--priority", type=int, help="fusion priority (default by source type)")
    p.add_argument("--to-crs", help="output CRS (default: the source's)")
    p.add_argument("--out", required=True, help="output GeoPackage")
    p.add_argument("--report", required=True, help="output JSON report")
    p.set_defaults(func=_cmd_reference_ingest)
    p = ref_sub.add_parser("fuse", help="merge ingested reference files by priority")
    p.add_argument("out", help="output GeoPackage")
    p.add_argument("inputs", nargs="+", help="ingested GeoPackages")
    p.add_argument("--report", required=True, help="output JSON report")
    p.add_argument("--to-crs", help="output CRS (default: the first input's)")
    p.set_defaults(func=_cmd_reference_fuse)
    p = ref_sub.add_parser("quality", help="quality report (JSON, HTML, plots) of a reference file for a project")
    p.add_argument("ref", help="ingested (or fused) reference GeoPackage")
    p.add_argument("--config", required=True, help="project config (grid, AOI regions, legend)")
    p.add_argument("--out-dir", required=True, help="folder for quality.json, quality.html and the PNGs")
    p.add_argument("--legend", choices=["land_cover", "crop_type"], help="legend (default: the classifier's)")
    p.add_argument("--previous-map", help="a reporting report.json or a class raster, for class representation")
    p.add_argument("--under-ratio", type=float, default=0.5, help="under-represented: ref share < ratio x map share")
    p.set_defaults(func=_cmd_reference_quality)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lcms", description="LCMS - Land Cover Monitoring System")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    cfg = sub.add_parser("config", help="validate a project config or print a template")
    cfg_sub = cfg.add_subparsers(dest="action", required=True)
    p = cfg_sub.add_parser("validate", help="validate FILE (exit 0 if valid; else the field and the problem)")
    p.add_argument("file")
    p.set_defaults(func=_cmd_config_validate)
    p = cfg_sub.add_parser("template", help="print a commented config template generated from the schema")
    p.set_defaults(func=_cmd_config_template)

    tiles = sub.add_parser("tiles", help="the project's tiles")
    tiles_sub = tiles.add_subparsers(dest="action", required=True)
    p = tiles_sub.add_parser("list", help="print the tiles (and write the grid as GeoJSON)")
    p.add_argument("config")
    p.add_argument("--geojson", help="write the grid (WGS84) to this GeoJSON file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_tiles_list)

    p = sub.add_parser("run", help="run one stage on tiles, a batch, or the season")
    p.add_argument("stage")
    p.add_argument("--config", required=True)
    p.add_argument("--season", help="season id (default: the latest season of the config)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--tile", action="append", help="tile id (repeatable); default: all tiles")
    target.add_argument("--batch", help="batch id, as `lcms tiles list` numbers them")
    p.add_argument("--subset", action="append", help="with --batch: the tile subset the batches were planned on")
    p.add_argument("--skip-existing", action="store_true", help="skip tiles whose output is complete")
    p.add_argument("--run-id", help="run id recorded with the outputs (default: manual__<time>)")
    p.add_argument("--upstream-run-id", help="run id of the upstream stage this run follows")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="stage parameter, e.g. before_season=2023 for change_detection (repeatable)",
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("stages", help="list the pipeline stages")
    p.set_defaults(func=_cmd_stages)

    _add_reference_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except LcmsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
