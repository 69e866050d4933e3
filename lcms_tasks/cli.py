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
