"""``make demo``: the whole LCMS chain through a real Airflow, on the embedded default.

Starts Airflow's API server, scheduler (LocalExecutor) and DAG processor on the
project's metadata database (SQLite under ``AIRFLOW_HOME``), triggers
``lcms_download`` once per season of the demo config and lets the assets chain
every stage through reporting. It prints progress, then a summary, and as its
last line the path of a JSON summary with ``overall_accuracy`` (the map against
the synthetic truth on tiles not used for training), ``area_adjusted_overall_accuracy``
with its 95 % confidence interval (``..._ci95``: the half-width, ``..._interval95``:
[low, high]; from the report's stratified sample, labelled by the synthetic truth),
``change_precision``, ``change_recall``, ``stage_seconds``, ``report_html`` and
``application`` (URL, user, password file); the line before it is the URL of
the operator application on the demo's results (``make serve`` starts it) and
how to log in: the ``demo`` user (admin) whose generated password is in the
state folder's ``app_passwords.json``. ``make airflow`` shows the runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from lcms_airflow.local_stack import REPO, LocalAirflow
from lcms_tasks.stages import stage_names

STAGE_ORDER = tuple(stage_names())


def _say(msg: str) -> None:
    print(f"[{dt.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def _seconds(run: dict[str, Any]) -> float:
    start, end = run.get("start_date"), run.get("end_date")
    if not start or not end:
        return 0.0
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def run_season(af: LocalAirflow, config: str, season: str, timeout: float) -> dict[str, float]:
    """Trigger one season's chain and wait for every stage; returns seconds per stage."""
    seen = {f"lcms_{s}": len(af.runs(f"lcms_{s}")) for s in STAGE_ORDER}
    run_id = af.trigger("lcms_download", {"config": config, "season": season})
    _say(f"season {season}: triggered lcms_download ({run_id})")
    seconds: dict[str, float] = {}
    for stage in STAGE_ORDER:
        dag_id = f"lcms_{stage}"
        run = (
            af.wait_for_run(dag_id, run_id=run_id, timeout=timeout)
            if stage == "download"
            else af.wait_for_run(dag_id, after=seen[dag_id], timeout=timeout)
        )
        seconds[stage] = _seconds(run)
        if run["state"] != "success":
            failed = [t for t in af.task_states(dag_id, run["run_id"]) if t.get("state") == "failed"]
            raise RuntimeError(
                f"{dag_id} {run['run_id']} {run['state']}; failed tasks: {failed}; logs under {af.home / 'logs'}"
            )
        _say(f"season {season}: {stage:17s} done in {seconds[stage]:6.1f} s")
    return seconds


def _change_store(cfg: Any) -> tuple[Any, str]:
    """(embedded cluster this demo started or None, the change store's URL) for the publish stage."""
    from lcms_tasks.store import EmbeddedPostgres, database_url, upgrade

    url = database_url(cfg)
    embedded = None
    if url is None:
        embedded = EmbeddedPostgres()
        _say(f"starting the project-local change store (PostgreSQL + PostGIS) in {embedded.data_dir}")
        embedded.start()
        url = embedded.url
    upgrade(url)
    return embedded, url


def _store_summary(url: str, project: str) -> dict[str, Any]:
    """How many change polygons and parcel checks of ``project`` the store holds, the changes by status."""
    from lcms_tasks.store import connect, describe

    with contextlib.closing(connect(url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT kind, status, count(*) FROM lcms.changes WHERE project = %s GROUP BY kind, status", (project,)
        )
        rows = [(str(k), str(s), int(n)) for k, s, n in cur.fetchall()]
    by_status = {s: n for k, s, n in rows if k == "change"}
    return {
        "project": project,
        "database": describe(url),
        "changes": sum(by_status.values()),
        "by_status": by_status,
        "parcel_checks": sum(n for k, _, n in rows if k == "parcel_check"),
    }


#: The operator application's demo user and where its generated password is kept (never printed).
DEMO_USER, DEMO_ROLE = "demo", "admin"
APP_URL = "http://127.0.0.1:8000/"


def _demo_user(url: str) -> dict[str, Any]:
    """The application's ``demo`` user (admin), its password generated into ``<state dir>/app_passwords.json``."""
    from lcms_tasks.store import EmbeddedPostgres
    from lcms_tasks.users import ensure_generated_user

    secrets_file = EmbeddedPostgres().state_dir / "app_passwords.json"
    user, changed = ensure_generated_user(url, DEMO_USER, DEMO_ROLE, secrets_file)
    if changed:
        _say(f"operator application: user {user.name!r} ({user.role}), password generated into {secrets_file}")
    return {"user": user.name, "role": user.role, "password_file": str(secrets_file)}


def _published_summary(ctx: Any) -> dict[str, Any]:
    """What the publish stage wrote for the last season: tile folders, mosaic folder, STAC catalog."""
    from lcms_tasks.publish.stac import catalog_uri

    storage = ctx.storage
    return {
        "tiles": len(storage.complete_children(ctx.stage_uri("publish"))),
        "mosaic": str(storage.local_path(ctx.run_uri("publish", "mosaic"))),
        "stac_catalog": str(storage.local_path(catalog_uri(ctx))),
    }


def _area_adjusted_summary(block: dict[str, Any]) -> dict[str, Any]:
    """The report's area-adjusted overall accuracy, its SE and 95 % CI (None when the report has no labels)."""
    oa, se, ci = (block.get(k) for k in ("overall_accuracy", "overall_accuracy_se", "overall_accuracy_ci95"))
    return {
        "area_adjusted_overall_accuracy": oa,
        "area_adjusted_overall_accuracy_se": se,
        "area_adjusted_overall_accuracy_ci95": ci,
        "area_adjusted_overall_accuracy_interval95": None if oa is None or ci is None else [oa - ci, oa + ci],
        "area_adjusted_label_source": block.get("label_source"),
        "area_adjusted_n_points": block.get("n_labelled"),
    }


def _area_adjusted_line(block: dict[str, Any]) -> str:
    """The printed line beside the map accuracy against the truth."""
    if not block.get("available") or block.get("overall_accuracy") is None:
        return f"area-adjusted overall accuracy: none ({block.get('reason') or 'no reference labels'})"
    labels = "the synthetic truth" if block.get("label_source") == "synthetic_truth" else "reference labels"
    oa, ci = float(block["overall_accuracy"]), block.get("overall_accuracy_ci95")
    shown = f"{oa:.4f}" + ("" if ci is None else f" ± {float(ci):.4f} (95 % CI)")
    return (
        f"area-adjusted overall accuracy (stratified sample of {block.get('n_labelled')} points labelled by "
        f"{labels}): {shown}"
    )


def _product_summaries(ctx: Any) -> dict[str, Any]:
    """Each product's figures from its own report (the primary product's is the demo summary's top level)."""
    out: dict[str, Any] = {}
    for pctx in ctx.contexts_for("reporting"):
        folder = pctx.storage.local_path(pctx.run_uri("reporting", "report"))
        report = json.loads((folder / "report.json").read_text())
        evaluation = report.get("evaluation") or {}
        out[pctx.product_name] = {
            "legend": pctx.config.classification.legend,
            "overall_accuracy": evaluation.get("overall_accuracy"),
            "test_overall_accuracy": (report.get("metrics") or {}).get("overall_accuracy"),
            "area_adjusted_overall_accuracy": (report.get("area_adjusted") or {}).get("overall_accuracy"),
            "report_html": str(folder / "report.html"),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds to wait for one stage run")
    parser.add_argument("--keep-data", action="store_true", help="do not clear the demo's previous outputs first")
    args = parser.parse_args(argv)

    from lcms_tasks.config import load_config
    from lcms_tasks.context import RunContext

    cfg = load_config(args.config)
    seasons = cfg.season_ids_ordered()
    last = RunContext.create(cfg, season=seasons[-1])
    root = last.storage
    project_uri = root.uri(cfg.project)
    if not args.keep_data and root.scheme == "file" and root.local_path(project_uri).exists():
        shutil.rmtree(root.local_path(project_uri))
    home = Path(os.environ.get("AIRFLOW_HOME", REPO / ".airflow"))
    t0 = time.perf_counter()
    embedded, database = _change_store(cfg)
    af = LocalAirflow(
        home=home, extra_env={"LCMS_CONFIG": str(Path(args.config).resolve()), "LCMS_DATABASE_URL": database}
    )
    stage_seconds = dict.fromkeys(STAGE_ORDER, 0.0)
    try:
        _say(f"starting Airflow (API server, scheduler, DAG processor) with AIRFLOW_HOME={home}")
        af.start()
        af.wait_for_dags([f"lcms_{s}" for s in STAGE_ORDER])
        _say("DAGs loaded")
        for season in seasons:
            for stage, secs in run_season(af, str(Path(args.config).resolve()), season, args.timeout).items():
                stage_seconds[stage] += secs
        store = _store_summary(database, cfg.project)
        app_user = _demo_user(database)
    finally:
        af.stop()
        if embedded is not None:
            embedded.stop()
    wall = time.perf_counter() - t0

    report_dir = last.storage.local_path(last.run_uri("reporting", "report"))
    report = json.loads((report_dir / "report.json").read_text())
    evaluation = report.get("evaluation") or {}
    area_adjusted = report.get("area_adjusted") or {}
    metrics = report.get("metrics") or {}
    total = report.get("total") or {}
    class_areas = {
        row["name"]: round(float(row["area_km2"]), 3) for row in total.get("class_areas", []) if row.get("area_km2")
    }
    products = _product_summaries(last)
    crop = products.get("crop_type") or {}
    summary: dict[str, Any] = {
        "project": cfg.project,
        "seasons": seasons,
        "overall_accuracy": evaluation.get("overall_accuracy"),
        "change_precision": evaluation.get("change_precision"),
        "change_recall": evaluation.get("change_recall"),
        "change_precision_with_tolerance": ((evaluation.get("change_accuracy") or {}).get("detections") or {}).get(
            "precision_with_tolerance"
        ),
        "test_overall_accuracy": metrics.get("overall_accuracy"),
        **_area_adjusted_summary(area_adjusted),
        "crop_type_overall_accuracy": crop.get("overall_accuracy"),
        "crop_type_test_overall_accuracy": crop.get("test_overall_accuracy"),
        "products": products,
        "class_areas_km2": class_areas,
        "n_changes": (total.get("changes") or {}).get("n_polygons"),
        "stage_seconds": {k: round(v, 1) for k, v in stage_seconds.items()},
        "wall_seconds": round(wall, 1),
        "report_html": str(report_dir / "report.html"),
        "report_json": str(report_dir / "report.json"),
        "airflow_home": str(home),
        "published": _published_summary(last),
        "change_store": store,
        "application": {"url": APP_URL, "start": "make serve", **app_user},
    }
    out = last.storage.local_path(last.storage.uri(cfg.project, "demo_summary.json"))
    out.write_text(json.dumps(summary, indent=2))
    print("\n=== LCMS demo summary ===")
    print(f"map accuracy vs truth (tiles not used for training): {summary['overall_accuracy']}")
    print(_area_adjusted_line(area_adjusted))
    for name, figures in products.items():
        if name != cfg.primary_product:
            print(
                f"{name} map accuracy vs truth (tiles not used for training, where both say a class): "
                f"{figures['overall_accuracy']} (test split {figures['test_overall_accuracy']}); "
                f"report {figures['report_html']}"
            )
    print(f"change precision / recall (by area): {summary['change_precision']} / {summary['change_recall']}")
    print(f"change precision counting late detections: {summary['change_precision_with_tolerance']}")
    print(f"number of changes: {summary['n_changes']}")
    print(f"class areas (km²): {summary['class_areas_km2']}")
    print("seconds per stage: " + ", ".join(f"{k} {v}" for k, v in summary["stage_seconds"].items()))
    print(f"total: {wall:.0f} s; HTML report: {summary['report_html']}")
    published = summary["published"]
    print(
        f"published: {published['tiles']} tile folders of COGs, mosaics {published['mosaic']}, "
        f"STAC catalog {published['stac_catalog']}"
    )
    print(
        f"change store: {store['changes']} change polygon(s) and {store['parcel_checks']} parcel check(s) of "
        f"{store['project']} in {store['database']}"
    )
    print("look at the runs: make airflow  (then http://127.0.0.1:8080; the application also at /lcms/)")
    print(
        f"operator application (map viewer, Validation Tool) on these results: make serve, then {APP_URL}  "
        f"log in as {app_user['user']!r}, password in {app_user['password_file']}"
    )
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
