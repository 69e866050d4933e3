"""``lcms``: the command line. Runs one stage on one tile or batch, validates
configs, lists tiles. An ECS container or a Celery worker calls the same
entry point as an engineer at a terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lcms_tasks.errors import LcmsError

log = logging.getLogger("lcms")


def _cmd_config_validate(args: argparse.Namespace) -> int:
    from lcms_tasks.checks import check_project
    from lcms_tasks.config import load_config
    from lcms_tasks.grid import project_tiles

    cfg = load_config(args.file)
    seasons = args.season or list(cfg.seasons)
    for season in seasons:
        cfg.season(season)
    check_project(cfg, config_path=args.file, seasons=seasons)
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


def _refuse_inapplicable(args: argparse.Namespace, mapped: bool) -> None:
    """Refuse option combinations that would not do what they say (one line: why)."""
    from lcms_tasks.errors import ConfigError

    if not mapped:
        if args.batch:
            raise ConfigError(
                f"--batch: stage {args.stage!r} runs once per season, not per batch of tiles "
                "(use --tile to restrict it to a tile subset)"
            )
        if args.skip_existing:
            raise ConfigError(
                f"--skip-existing: stage {args.stage!r} runs once per season and has no per-tile outputs to skip"
            )
    if args.subset and not args.batch:
        raise ConfigError(
            "--subset only says which tiles the batches of --batch were planned on; to process chosen tiles use --tile"
        )


def _cmd_run(args: argparse.Namespace) -> int:
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.stages import stage_info

    info = stage_info(args.stage)
    _refuse_inapplicable(args, info.mapped)
    params = _parse_params(args.param)
    cfg = load_config(args.config)
    ctx = RunContext.create(
        cfg,
        season=args.season,
        run_id=args.run_id,
        config_path=str(Path(args.config).resolve()),
        skip_existing=args.skip_existing,
        upstream_run_id=args.upstream_run_id,
        params=params,
        # --batch numbers the batches of the tiles they were planned on (--subset); --tile picks tiles.
        subset=args.subset if args.batch else args.tile,
        excluded=_parse_excluded(args.exclude),
        rerun_of=args.rerun_of,
    )
    return _run_checked(args.stage, ctx, args.config, batch=args.batch)


def _run_checked(stage: str, ctx: Any, config_path: str, *, batch: str | None = None) -> int:
    """Check the run before any work, run it, print what it did; 1 when tiles failed (within tolerance)."""
    from lcms_tasks import runner, tolerance
    from lcms_tasks.checks import check_project
    from lcms_tasks.preflight import check_run
    from lcms_tasks.stages import stage_info

    info = stage_info(stage)
    # Everything that can be checked without imagery, before any work: the config and what it points to,
    # the batch, the tile subset, the run parameters, and that this stage's inputs exist.
    check_project(ctx.config, config_path=config_path, seasons=[ctx.season])
    if batch:
        runner.tiles_of_batch(ctx, batch)
    check_run(stage, ctx)
    out: dict[str, Any]
    if not info.mapped:
        out = {
            "stage": stage,
            "season": ctx.season,
            "run_id": ctx.run_id,
            **ctx.coverage(),
            "written": runner.run_stage(stage, ctx),
        }
    elif batch:  # one batch of a DAG run: the DAG's publish task assesses the whole run
        out = runner.run_batch(stage, batch, ctx).to_dict()
    else:
        result = runner.run_tiles(stage, ctx.tiles(), ctx, raise_on_failure=False)
        out = result.to_dict()
        # The whole run: its failed tiles within the stage's tolerance, or TooManyFailedTilesError (exit 1).
        out["summary"] = tolerance.finish_stage_run(stage, ctx)
        if info.finalize:  # the season-level step after the tiles (a --batch run leaves it to the DAG)
            out["finalized"] = runner.finalize_stage(stage, ctx)
        if result.failed:
            print(json.dumps(out, indent=1))
            summary = out["summary"]
            print(
                f"error: stage {stage!r}: {len(result.failed)} of {summary['n_planned']} tile(s) failed, within the "
                f"{summary['allowed_failures']} {summary['tolerance']} tolerates: the run is usable, the stages "
                f"below leave these tiles out (pass them --exclude, as the DAGs do). Once the cause is fixed: "
                f"`{tolerance.rerun_command(ctx, stage)}`",
                file=sys.stderr,
            )
            for tile, message in sorted(result.failed.items()):
                print(f"  {tile}: {message}", file=sys.stderr)
            return EXIT_FAILED
    print(json.dumps(out, indent=1))
    return 0


def _parse_excluded(items: list[str] | None) -> dict[str, str]:
    """``--exclude TILE[=REASON]`` values as tile -> reason."""
    out: dict[str, str] = {}
    for item in items or []:
        tile, _, reason = item.partition("=")
        if tile.strip():
            out[tile.strip()] = reason.strip() or "excluded from the command line"
    return out


def _cmd_rerun_failed(args: argparse.Namespace) -> int:
    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext
    from lcms_tasks.tolerance import rerun_spec

    cfg = load_config(args.config)
    found = rerun_spec(args.stage, RunContext.create(cfg, season=args.season, run_id=args.run_id), args.run_id)
    ctx = RunContext.create(
        cfg,
        season=args.season,
        run_id=args.new_run_id,
        config_path=str(Path(args.config).resolve()),
        # The run's other tiles are complete: only the failed ones run, and the summary covers the whole scope.
        skip_existing=True,
        params=found["params"],
        subset=found["tiles"] or None,
        excluded=found["excluded"],
        rerun_of=args.run_id,
    )
    print(
        f"re-running {len(found['failed'])} failed tile(s) of run {args.run_id} of {args.stage} "
        f"(season {ctx.season}): {', '.join(found['failed'])}",
        file=sys.stderr,
    )
    return _run_checked(args.stage, ctx, args.config)


def _parse_params(items: list[str]) -> dict[str, str]:
    from lcms_tasks.errors import ConfigError

    params: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--param takes NAME=VALUE, got {item!r}")
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
    from lcms_tasks.errors import EmptyResultError
    from lcms_tasks.reference.crosswalk import CrosswalkSpec, read_chain
    from lcms_tasks.reference.ingest import IngestOptions, empty_ingest_message, ingest_file, write_outputs

    cfg, legend = _reference_legend(args)
    crosswalk = read_chain([CrosswalkSpec(Path(step["path"]), *step["columns"]) for step in args.crosswalk])
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
    if result.report["kept"] == 0:
        message = empty_ingest_message(result.report)
        log.warning("%s", message)
        if not args.allow_empty:
            raise EmptyResultError(f"{message}; nothing written")
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
        allow_empty=args.allow_empty,
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


def _cmd_reference_export_validated(args: argparse.Namespace) -> int:
    from lcms_tasks.config import load_config
    from lcms_tasks.reference.validated import STATUSES, export_validated
    from lcms_tasks.stages.add_reference import ChangeStoreSource
    from lcms_tasks.store import project_database

    cfg = load_config(args.config, check_files=False)
    if args.season is not None:
        cfg.season(args.season)  # an unknown season is bad input (exit 2), named with the known ones
    # Defaults: the config's change_store source, so that --season writes what add_reference reads.
    source = next((s for s in cfg.stages.add_reference.sources if isinstance(s, ChangeStoreSource)), None)
    statuses = args.status or (list(source.statuses) if source else list(STATUSES))
    later = args.max_seasons_later
    if later is None and source is not None:
        later = source.max_seasons_later
    with project_database(cfg, say=log.info) as url:
        result = export_validated(
            url,
            cfg,
            Path(args.out),
            season=args.season,
            statuses=statuses,
            max_seasons_later=later,
        )
    print(json.dumps(result))
    return 0


def _add_reference_parser(sub: Any) -> None:
    """The ``lcms reference`` subcommands: ingest, fuse, quality, export-validated."""

    class CrosswalkSteps(argparse.Action):
        """``--crosswalk FILE`` adds a step to the chain; ``--crosswalk-columns CODE,TARGET`` names the
        columns of the ``--crosswalk`` just before it (default ``code,class``)."""

        def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
            steps = [dict(step) for step in getattr(namespace, self.dest, None) or []]
            if option_string == "--crosswalk":
                steps.append({"path": str(values), "columns": ("code", "class"), "named": False})
            else:
                code, sep, target = str(values).partition(",")
                if not steps:
                    parser.error("--crosswalk-columns must follow the --crosswalk whose columns it names")
                if steps[-1]["named"]:
                    parser.error(f"--crosswalk {steps[-1]['path']}: --crosswalk-columns given twice")
                if not sep or not code.strip() or not target.strip() or "," in target:
                    parser.error(f"--crosswalk-columns takes CODE,TARGET (two column names), got {values!r}")
                steps[-1].update(columns=(code.strip(), target.strip()), named=True)
            setattr(namespace, self.dest, steps)

    ref = sub.add_parser(
        "reference",
        help="ingest, fuse and assess reference data (LPIS, cadastre, OSM, labels); export validated changes",
    )
    ref_sub = ref.add_subparsers(dest="action", required=True)
    p = ref_sub.add_parser("ingest", help="crosswalk and clean one vector source into a reference GeoPackage")
    p.add_argument("source", help="vector file (GeoPackage, Shapefile, .zip, GeoJSON, GeoParquet, .osm.pbf)")
    p.add_argument(
        "--crosswalk",
        required=True,
        action=CrosswalkSteps,
        metavar="FILE",
        help="CSV (code,class[,year][,source]) or YAML {code: class}; repeat to chain crosswalks in order "
        "(national code -> HCAT3 code -> class): every step's target is the next step's code, the last step's "
        "a legend class",
    )
    p.add_argument(
        "--crosswalk-columns",
        dest="crosswalk",
        action=CrosswalkSteps,
        metavar="CODE,TARGET",
        help="the code and target columns of the --crosswalk before it, e.g. original_code,HCAT3_code "
        "(default code,class)",
    )
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
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="keeping 0 records is not an error: write the (empty) outputs and exit 0 with the warning",
    )
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
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="no polygon inside the AOI is not an error: write the report and exit 0 with the warning",
    )
    p.set_defaults(func=_cmd_reference_quality)
    p = ref_sub.add_parser(
        "export-validated",
        help="the change store's validated changes (confirmed, corrected, rejected) as a reference GeoPackage",
        description="Writes the operators' decided changes of the project as reference polygons (EPSG:4326, layer "
        "'validated'): confirmed ones with their after class, corrected ones with the corrected class and geometry, "
        "rejected ones with their before class ('no change'), each with its change id and decision id. With "
        "--season: the polygons that are reference for that season (decisions of that season and earlier ones, cut "
        "where later changes say otherwise), as add_reference reads them.",
    )
    p.add_argument("--config", required=True, help="project config (its project, seasons, legend and database)")
    p.add_argument("--season", help="the season the polygons serve (default: every decision in its own season)")
    p.add_argument("--out", required=True, help="output GeoPackage")
    p.add_argument(
        "--status",
        action="append",
        choices=["confirmed", "corrected", "rejected"],
        help="only changes of this status (repeatable; default: the config's change_store source's, else all three)",
    )
    p.add_argument(
        "--max-seasons-later",
        type=int,
        help="with --season: use decisions of at most this many seasons before it (default: the config's "
        "change_store source's, else every earlier season)",
    )
    p.set_defaults(func=_cmd_reference_export_validated)


def _add_db_parser(sub: Any) -> None:
    """The ``lcms db`` subcommands: the change store (PostgreSQL + PostGIS) and its embedded default."""

    def embedded(args: argparse.Namespace) -> Any:
        from lcms_tasks.store import EmbeddedPostgres

        return EmbeddedPostgres(port=args.port)

    def config_of(args: argparse.Namespace) -> Any:
        from lcms_tasks.config import load_config

        return load_config(args.config, check_files=False) if getattr(args, "config", None) else None

    def cmd_start(args: argparse.Namespace) -> int:
        db = embedded(args)
        print(db.start())
        log.info("embedded change store running (data %s, log %s); `lcms db stop` stops it", db.data_dir, db.log_file)
        return 0

    def cmd_stop(args: argparse.Namespace) -> int:
        db = embedded(args)
        print("stopped" if db.stop() else f"not running ({db.data_dir})")
        return 0

    def cmd_status(args: argparse.Namespace) -> int:
        from lcms_tasks.store import ChangeStoreError, current_revision

        state = embedded(args).status()
        if state["running"]:
            try:
                state["revision"] = current_revision(embedded(args).url)
            except ChangeStoreError as err:
                state["revision_error"] = str(err)
        print(json.dumps(state, indent=1))
        return 0 if state["running"] else 1

    def cmd_url(args: argparse.Namespace) -> int:
        from lcms_tasks.store.db import hide_password, resolve_database_url

        found = resolve_database_url(config_of(args))
        if found is None:
            db = embedded(args)
            print(db.url)
            print(
                f"warning: nothing configured and the embedded database ({db.data_dir}) is not running: "
                "`lcms db start` starts it",
                file=sys.stderr,
            )
            return 1
        url, origin = found
        print(url if args.show_password else hide_password(url))
        log.info("change store URL from %s", origin)
        return 0

    def cmd_upgrade(args: argparse.Namespace) -> int:
        from lcms_tasks.store import describe, require_database_url, upgrade

        url = require_database_url(config_of(args))
        revision = upgrade(url)
        print(f"{describe(url)}: change store schema at revision {revision}")
        return 0

    def cmd_load(args: argparse.Namespace) -> int:
        from lcms_tasks.config import load_config
        from lcms_tasks.context import RunContext
        from lcms_tasks.store import load_season, require_database_url

        cfg = load_config(args.config)
        ctx = RunContext.create(
            cfg, season=args.season, run_id=args.run_id, config_path=str(Path(args.config).resolve()), subset=args.tile
        )
        print(json.dumps(load_season(require_database_url(cfg), ctx), indent=1, default=str))
        return 0

    def cmd_load_parcel_checks(args: argparse.Namespace) -> int:
        from lcms_tasks.config import load_config
        from lcms_tasks.context import RunContext
        from lcms_tasks.store import require_database_url
        from lcms_tasks.store.parcel_checks import load_parcel_checks

        cfg = load_config(args.config)
        product = args.product or cfg.product_of_legend("crop_type")
        cfg.product(product)  # unknown: ConfigError naming the products
        ctx = RunContext.create(
            cfg, season=args.season, run_id=args.run_id, config_path=str(Path(args.config).resolve())
        ).for_product(product)
        print(json.dumps(load_parcel_checks(require_database_url(cfg), ctx), indent=1, default=str))
        return 0

    db = sub.add_parser(
        "db",
        help="the change store: PostgreSQL + PostGIS (the embedded default, migrations, loading a season)",
        description="The change store. Which database: database.url of --config, else LCMS_DATABASE_URL, else "
        "(in Airflow tasks) the connection database.airflow_conn_id, else the embedded cluster when it runs. "
        "The embedded cluster lives in $LCMS_STATE_DIR (default <repo>/.lcms)/postgres on 127.0.0.1:$LCMS_DB_PORT "
        "(default 54329).",
    )
    db_sub = db.add_subparsers(dest="action", required=True)
    for name, func, text in (
        ("start", cmd_start, "start the embedded cluster (created on first use) and migrate it; prints its URL"),
        ("stop", cmd_stop, "stop the embedded cluster"),
        ("status", cmd_status, "the embedded cluster's state as JSON (exit 0 running, 1 not)"),
    ):
        p = db_sub.add_parser(name, help=text)
        p.add_argument("--port", type=int, help="port of the embedded cluster (default $LCMS_DB_PORT or 54329)")
        _add_debug(p)
        p.set_defaults(func=func)
    p = db_sub.add_parser("url", help="print the change store URL that would be used (password hidden)")
    p.add_argument("--config", help="project config (its database.url comes first)")
    p.add_argument("--port", type=int, help="port of the embedded cluster (default $LCMS_DB_PORT or 54329)")
    p.add_argument("--show-password", action="store_true", help="print the password too")
    _add_debug(p)
    p.set_defaults(func=cmd_url)
    p = db_sub.add_parser("upgrade", help="migrate the change store schema to the newest revision (idempotent)")
    p.add_argument("--config", help="project config whose database to migrate (default: as `lcms db url`)")
    _add_debug(p)
    p.set_defaults(func=cmd_upgrade, port=None)
    p = db_sub.add_parser(
        "load-parcel-checks",
        help="load a season's parcel disagreements (parcel markers) into the Validation Tool's queue",
        description="The parcels whose predicted crop differs from the declared one with high confidence (the "
        "season's parcel markers of --product) become parcel checks in the Validation Tool's queue: the season's "
        "undecided checks are replaced, decided ones kept; one transaction.",
    )
    p.add_argument("--config", required=True, help="project config YAML")
    p.add_argument("--season", help="the season (default: the latest season)")
    p.add_argument("--product", help="the product of the markers (default: the first product with a crop_type legend)")
    p.add_argument("--run-id", help="run id recorded with the load (default: manual__<UTC time>)")
    _add_debug(p)
    p.set_defaults(func=cmd_load_parcel_checks)
    p = db_sub.add_parser("load", help="load a season's change polygons (change_detection output) into the store")
    p.add_argument("--config", required=True, help="project config YAML")
    p.add_argument("--season", help="the after season (default: the latest season)")
    p.add_argument("--tile", action="append", metavar="TILE", help="load only these tiles (repeatable)")
    p.add_argument("--run-id", help="run id recorded with the load (default: manual__<UTC time>)")
    _add_debug(p)
    p.set_defaults(func=cmd_load)


def _stages_epilog() -> str:
    from lcms_tasks.stages import STAGES

    lines = ["stages (in pipeline order):"]
    for info in STAGES:
        per = "per tile  " if info.mapped else "per season"
        lines.append(f"  {info.name:17s} {per}  {info.summary}")
        for param in info.params:
            lines.append(f"  {'':17s} --param {param.name}=...: {param.description}")
    lines += [
        "",
        "per-tile stages run on every tile, the tiles of --tile, or one --batch; per-season stages read",
        "the outputs of every tile, or of the --tile subset. Exit status: 0 done, 1 some tiles failed",
        "(each listed, errors recorded under <stage>/_run/failures/; within the stage's tolerance,",
        "`failures` in the config, the run is usable: the stages below take the gaps with --exclude and",
        "`lcms rerun-failed` re-runs them), 2 bad input (config, options, parameters or a missing",
        "upstream: one line says what to do).",
    ]
    return "\n".join(lines)


def _add_run_parser(sub: Any) -> None:
    from lcms_tasks.stages import stage_names

    p = sub.add_parser(
        "run",
        help="run one stage on tiles, a batch, or the season",
        description="Run one pipeline stage: the entry point an engineer, a Celery worker and an ECS task all call.",
        epilog=_stages_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("stage", choices=stage_names(), metavar="STAGE", help="the stage to run (listed below)")
    p.add_argument("--config", required=True, help="project config YAML")
    p.add_argument("--season", help="season id of the config (default: the latest season)")
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--tile",
        action="append",
        metavar="TILE",
        help="tile id (repeatable): per-tile stages process these tiles; per-season stages read only these "
        "tiles' outputs (a tile subset). Default: every tile of the project",
    )
    target.add_argument(
        "--batch",
        metavar="BATCH",
        help="per-tile stages only: process one batch (b0000, b0001, ... as `lcms tiles list` numbers them)",
    )
    p.add_argument(
        "--subset",
        action="append",
        metavar="TILE",
        help="with --batch only: a tile of the subset the batches were planned on (repeatable; the DAGs pass it)",
    )
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="per-tile stages only: skip tiles whose output is already complete (resume a run)",
    )
    p.add_argument("--run-id", help="run id recorded with the outputs (default: manual__<UTC time>)")
    p.add_argument("--upstream-run-id", help="run id of the upstream stage run this run follows (lineage)")
    p.add_argument(
        "--exclude",
        action="append",
        metavar="TILE[=REASON]",
        help="leave this tile out (repeatable): a gap an upstream run left (its failed tile); per-season stages "
        "read the other tiles and the report lists the gap with REASON",
    )
    p.add_argument("--rerun-of", help=argparse.SUPPRESS)  # the run whose failed tiles a DAG run re-runs
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="run parameter of the stage (repeatable; see the list below); unknown names and invalid values "
        "are refused before any work",
    )
    _add_debug(p)
    p.set_defaults(func=_cmd_run)

    r = sub.add_parser(
        "rerun-failed",
        help="re-run the failed tiles of an earlier run of a per-tile stage",
        description="Re-run exactly the tiles that failed in run RUN_ID of STAGE (its run summary lists them), "
        "over that run's tiles with its parameters and gaps; the tiles that succeeded are complete and skipped. "
        "Then run the stages below with --skip-existing to fill the gaps (in Airflow: trigger lcms_STAGE with "
        "rerun_failed=RUN_ID and the chain does it). Exit status as `lcms run`.",
    )
    r.add_argument("stage", choices=[s for s in stage_names() if _mapped(s)], metavar="STAGE", help="a per-tile stage")
    r.add_argument("--config", required=True, help="project config YAML")
    r.add_argument("--season", help="season id of the config (default: the latest season)")
    r.add_argument("--run-id", required=True, help="the run whose failed tiles to re-run (its summary names them)")
    r.add_argument("--new-run-id", help="run id of the re-run (default: manual__<UTC time>)")
    _add_debug(r)
    r.set_defaults(func=_cmd_rerun_failed)


def _mapped(stage: str) -> bool:
    from lcms_tasks.stages import stage_info

    return stage_info(stage).mapped


def _add_debug(p: argparse.ArgumentParser) -> None:
    """``--debug`` after the subcommand too (SUPPRESS: an absent flag keeps the top-level value)."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")


def _add_serve_parser(sub: Any) -> None:
    """``lcms serve``: the web service (OGC API Features and vector tiles of the change store)."""

    def _cmd_serve(args: argparse.Namespace) -> int:
        from lcms_service.server import serve

        return serve(Path(args.config), host=args.host, port=args.port)

    p = sub.add_parser(
        "serve",
        help="serve the change polygons (OGC API Features, vector tiles) over HTTP",
        description="The LCMS web service: OGC API Features (GeoJSON, CQL2) and vector tiles of the change "
        "store under /ogc/, the OpenAPI document at /openapi.json. With no database configured (database.url, "
        "LCMS_DATABASE_URL) it starts the project-local embedded one, and stops it on exit.",
    )
    p.add_argument("--config", required=True, help="project config YAML (its `database` section)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    _add_debug(p)
    p.set_defaults(func=_cmd_serve)


def _add_users_parser(sub: Any) -> None:
    """The ``lcms users`` subcommands: the operator application's users and their roles (viewer < validator < admin)."""

    @contextlib.contextmanager
    def database(args: argparse.Namespace) -> Iterator[str]:
        """The users' database; the embedded cluster is started for the command when nothing is configured."""
        from lcms_tasks.store import project_database

        cfg = None
        if args.config:
            from lcms_tasks.config import load_config

            cfg = load_config(args.config, check_files=False)
        with project_database(cfg, say=log.info) as url:
            yield url

    def show(user: Any, action: str) -> int:
        print(f"{action} user {user.name!r} ({user.role}{', disabled' if user.disabled else ''})")
        return 0

    def cmd_add(args: argparse.Namespace) -> int:
        from lcms_tasks.users import add_user, check_name, read_new_password

        check_name(args.name)  # before asking for a password
        password = read_new_password(args.name)
        with database(args) as url:
            return show(add_user(url, args.name, args.role, password), "added")

    def cmd_list(args: argparse.Namespace) -> int:
        from lcms_tasks.users import list_users

        with database(args) as url:
            users = list_users(url)
        if args.json:
            print(json.dumps([u.to_dict() for u in users], indent=1))
            return 0
        width = max([len(u.name) for u in users] + [4])
        print(f"{'name':<{width}}  {'role':<9}  {'state':<8}  created")
        for u in users:
            state = "disabled" if u.disabled else "active"
            print(f"{u.name:<{width}}  {u.role:<9}  {state:<8}  {u.created_at:%Y-%m-%d %H:%M}")
        return 0

    def cmd_set_role(args: argparse.Namespace) -> int:
        from lcms_tasks.users import set_role

        with database(args) as url:
            return show(set_role(url, args.name, args.role), "set the role of")

    def cmd_disable(args: argparse.Namespace) -> int:
        from lcms_tasks.users import disable_user

        with database(args) as url:
            return show(disable_user(url, args.name), "disabled (and logged out)")

    def cmd_enable(args: argparse.Namespace) -> int:
        from lcms_tasks.users import enable_user

        with database(args) as url:
            return show(enable_user(url, args.name), "enabled")

    def cmd_set_password(args: argparse.Namespace) -> int:
        from lcms_tasks.users import get_user, read_new_password, set_password

        with database(args) as url:
            name = get_user(url, args.name).name  # an unknown user fails before the prompt
            user = set_password(url, name, read_new_password(name))
        return show(user, "set the password (and ended the sessions) of")

    roles = ("viewer", "validator", "admin")
    users = sub.add_parser(
        "users",
        help="users of the operator application: add, list, set-role, disable",
        description="Users of the operator application, in the change store (database.url of --config, else "
        "LCMS_DATABASE_URL, else the project-local embedded cluster, started for the command if it is not "
        "running). Roles: viewer (reads) < validator (decides "
        "changes) < admin (users, settings). A password is prompted twice on a terminal, else read from the first "
        "line of standard input (e.g. `lcms users add ana --role validator < pw.txt`); it is stored as an argon2 hash "
        "and never shown.",
    )
    users_sub = users.add_subparsers(dest="action", required=True)

    def command(name: str, func: Any, text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = users_sub.add_parser(name, help=text)
        p.add_argument("--config", help="project config whose database holds the users (default: as `lcms db url`)")
        _add_debug(p)
        p.set_defaults(func=func)
        return p

    p = command("add", cmd_add, "add a user (password prompted, or read from stdin when it is not a terminal)")
    p.add_argument("name", metavar="NAME", help="user name: 1-64 letters, digits, _ . @ - (case-insensitive)")
    p.add_argument("--role", required=True, choices=roles, help="viewer, validator or admin")
    p = command("list", cmd_list, "list the users (never their passwords)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = command("set-role", cmd_set_role, "change a user's role")
    p.add_argument("name", metavar="NAME")
    p.add_argument("role", metavar="ROLE", choices=roles, help="viewer, validator or admin")
    p = command("disable", cmd_disable, "stop a user from logging in and end their sessions")
    p.add_argument("name", metavar="NAME")
    p = command("enable", cmd_enable, "let a disabled user log in again")
    p.add_argument("name", metavar="NAME")
    p = command("set-password", cmd_set_password, "replace a user's password (prompted, or read from stdin)")
    p.add_argument("name", metavar="NAME")


def build_parser() -> argparse.ArgumentParser:
    from lcms_tasks.accuracy.cli import add_accuracy_parser
    from lcms_tasks.parcels.cli import add_parcels_parser

    parser = argparse.ArgumentParser(prog="lcms", description="LCMS - Land Cover Monitoring System")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also with LCMS_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    cfg = sub.add_parser("config", help="validate a project config or print a template")
    cfg_sub = cfg.add_subparsers(dest="action", required=True)
    p = cfg_sub.add_parser(
        "validate",
        help="validate FILE and everything it points to (exit 0 if valid; else 2 and one line per problem)",
    )
    p.add_argument("file")
    p.add_argument(
        "--season",
        action="append",
        help="check the per-season inputs (reference files) of this season only (repeatable; default: every season)",
    )
    _add_debug(p)
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

    _add_run_parser(sub)

    p = sub.add_parser("stages", help="list the pipeline stages")
    p.set_defaults(func=_cmd_stages)

    _add_reference_parser(sub)
    _add_db_parser(sub)
    _add_users_parser(sub)
    add_parcels_parser(sub)
    add_accuracy_parser(sub)
    _add_serve_parser(sub)
    return parser


#: Exit statuses: 1 some tiles failed (or an unexpected error), 2 bad input, 3 nothing useful produced.
EXIT_FAILED, EXIT_USAGE, EXIT_EMPTY = 1, 2, 3


def main(argv: list[str] | None = None) -> int:
    import os
    import traceback

    from lcms_tasks.errors import EmptyResultError, TileFailureError

    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(args.debug or os.environ.get("LCMS_DEBUG", "").strip() not in ("", "0", "false"))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except TileFailureError as err:
        if debug:
            traceback.print_exc()
        print(f"error: {err.headline}:", file=sys.stderr)
        for tile, message in sorted(err.failures.items()):
            print(f"  {tile}: {message}", file=sys.stderr)
        return EXIT_USAGE if err.permanent else EXIT_FAILED
    except EmptyResultError as err:
        if debug:
            traceback.print_exc()
        print(f"warning: {err} (--allow-empty accepts this)", file=sys.stderr)
        return EXIT_EMPTY
    except (LcmsError, ValueError, FileNotFoundError) as err:
        # A user can cause these: one line (or one per problem) naming the culprit, no traceback.
        if debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
