"""Parcel checks: the season's parcel disagreements into the Validation Tool's queue, in one transaction.

The reporting stage's parcel markers (:mod:`lcms_tasks.parcels.raster`) flag every declared parcel whose
predicted crop differs from the declared one with at least the disagreement threshold's probability.
:func:`load_parcel_checks` puts those parcels into ``lcms.changes`` as rows of kind ``parcel_check``
(revision 0004), where operators check them like detected changes:

* ``from_class`` / ``from_name`` — the declared crop; ``to_class`` / ``to_name`` — the predicted crop;
  ``confidence`` — the predicted crop's probability; ``season_before = season_after`` — the season;
  ``product`` — the crop product; ``parcel_id`` — the declaration's id; the parcel's outline;
* **confirm** — the prediction is right (the declaration is wrong): the parcel is of the predicted crop;
  **reject** — the declaration is right; **correct** — the parcel is of a third crop (``to_class``).
  :mod:`lcms_tasks.reference.validated` turns these into crop reference of that season (and of no
  other: crops rotate).

A load replaces the season's *undecided* parcel checks of the product (``detected``, no decision) by the
new disagreements; a decided one is never touched, and a disagreement flagged again for a parcel already
decided keeps the decision (the ids are stable: uuid5 of project, product, season and parcel id). One
``lcms.loads`` row records the counts. Loads of one project, product and season take turns (advisory lock);
any failure rolls everything back.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcms_tasks.errors import ChangeStoreError, StageError, UpstreamMissingError
from lcms_tasks.store.db import SCHEMA, connect, describe, require_schema
from lcms_tasks.store.load import _polygonal

if TYPE_CHECKING:
    import geopandas as gpd

    from lcms_tasks.context import RunContext

log = logging.getLogger(__name__)

#: Namespace of the stable parcel check ids (uuid5).
PARCEL_CHECK_NAMESPACE = uuid.UUID("3f6d1c8e-2a47-4b9e-8c15-6e0a9d2b7f41")
KIND = "parcel_check"
GPKG = "parcels.gpkg"


@dataclass(frozen=True)
class ParcelCheck:
    """One row to store: a flagged parcel (geometry as EPSG:4326 MultiPolygon WKB)."""

    id: uuid.UUID
    parcel_id: str
    declared: int
    declared_name: str
    predicted: int
    predicted_name: str
    probability: float
    area_m2: float
    wkb: bytes


def check_id(project: str, product: str, season: str, parcel_id: str) -> uuid.UUID:
    """The stable id of a parcel's check: the same parcel flagged again is the same row."""
    return uuid.uuid5(PARCEL_CHECK_NAMESPACE, "\x1f".join((project, product, season, parcel_id)))


def read_markers(ctx: RunContext) -> tuple[gpd.GeoDataFrame, str, dict[str, Any], dict[str, Any]]:
    """The season's parcel markers of ``ctx``'s product: (table, its file's URI, the artefact's marker, summary).

    :class:`UpstreamMissingError` when they were not computed; ``CorruptArtefactError`` for a complete
    artefact whose files are absent or unreadable; :class:`StageError` when the markers are of another legend
    than the product's (their classes would be read as the product's).
    """
    import json

    import geopandas as gpd

    from lcms_tasks.errors import CorruptArtefactError
    from lcms_tasks.parcels.raster import NAME

    uri = ctx.run_uri(NAME)
    if not ctx.storage.is_complete(uri):
        raise UpstreamMissingError(
            f"parcel markers of season {ctx.season} (product {ctx.product_name}) are missing: {uri}; compute them "
            "first (the reporting stage with `parcel_markers` in the product's reporting options, or `lcms parcels "
            "markers`)",
            stage="reporting",
            season=ctx.season,
        )
    meta = ctx.storage.read_marker(uri)
    with ctx.storage.reading_dir(uri) as folder:
        path = Path(folder) / GPKG
        for name in (GPKG, "summary.json"):
            if not (Path(folder) / name).is_file():
                raise CorruptArtefactError(f"{uri}/{name}: marked complete but the file is absent")
        try:
            summary = json.loads((Path(folder) / "summary.json").read_text(encoding="utf-8"))
            frame = gpd.read_file(path, layer="parcels")
        except Exception as err:  # GDAL's and json's errors vary: name the file
            raise CorruptArtefactError(f"{uri}: unreadable parcel markers: {err}") from err
    legend = (summary.get("options") or {}).get("legend")
    own = ctx.config.classification.legend
    if legend != own:
        raise StageError(
            f"{uri}: the parcel markers are of legend {legend!r} but product {ctx.product_name!r} maps legend "
            f"{own!r}; compute them for the product of that legend (`lcms parcels markers --product ...`; a crop "
            "legend needs its own product in the config's `products`)"
        )
    return frame, f"{uri}/{GPKG}", meta, summary


def prepare(
    frame: gpd.GeoDataFrame, *, where: str, project: str, product: str, season: str, legend: dict[str, int]
) -> tuple[list[ParcelCheck], dict[str, int]]:
    """The flagged parcels of a markers table as rows (pure). Returns the rows and the counts
    ``read`` (flagged parcels), ``fixed`` (outlines repaired) and ``rejected`` (no area left).

    :class:`StageError` naming ``where`` and the parcel for a missing column, a crop not in ``legend``
    (class name -> id) or a probability outside [0, 1].
    """
    import numpy as np
    import shapely

    needed = ("parcel_id", "declared", "predicted", "probability", "disagreement")
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise StageError(f"{where}: no column {', '.join(missing)}; columns: {list(frame.columns)}")
    if frame.crs is None:
        raise StageError(f"{where}: the parcels have no coordinate reference system")
    flagged = frame[frame["disagreement"].fillna(False).astype(bool)]
    counts = {"read": len(flagged), "fixed": 0, "rejected": 0}
    if flagged.empty:
        return [], counts
    metric = flagged.to_crs(flagged.estimate_utm_crs()) if flagged.crs.is_geographic else flagged
    wgs84 = flagged.to_crs(4326)
    rows: list[ParcelCheck] = []
    seen: set[str] = set()
    for i, (record, geom, geom_metric) in enumerate(
        zip(flagged.itertuples(index=False), wgs84.geometry, metric.geometry, strict=True)
    ):
        pid = str(record.parcel_id)
        what = f"{where}: parcel {pid!r} (flagged row {i + 1})"
        if pid in seen:
            raise StageError(f"{what}: the parcel id is given twice")
        seen.add(pid)
        names = {}
        for column in ("declared", "predicted"):
            name = getattr(record, column)
            if not isinstance(name, str) or name not in legend:
                shown = ", ".join(sorted(legend))
                raise StageError(
                    f"{what}: {column} crop {name!r} is not in the legend of product {product!r} ({shown})"
                )
            names[column] = name
        if names["declared"] == names["predicted"]:
            raise StageError(
                f"{what}: flagged as a disagreement but declared and predicted are both {names['declared']!r}"
            )
        probability = float(record.probability)
        if not np.isfinite(probability) or not 0.0 <= probability <= 1.0:
            raise StageError(f"{what}: probability {record.probability!r} is not within [0, 1]")
        if geom is None or geom.is_empty:
            counts["rejected"] += 1
            continue
        if not geom.is_valid:
            geom = _polygonal(shapely.make_valid(geom))
            geom_metric = _polygonal(shapely.make_valid(geom_metric))
            if geom is None or geom_metric is None:
                counts["rejected"] += 1
                continue
            counts["fixed"] += 1
        geom = _polygonal(geom)
        if geom is None or geom_metric.area <= 0:
            counts["rejected"] += 1
            continue
        rows.append(
            ParcelCheck(
                id=check_id(project, product, season, pid),
                parcel_id=pid,
                declared=legend[names["declared"]],
                declared_name=names["declared"],
                predicted=legend[names["predicted"]],
                predicted_name=names["predicted"],
                probability=probability,
                area_m2=float(geom_metric.area),
                wkb=shapely.to_wkb(shapely.MultiPolygon([geom]) if geom.geom_type == "Polygon" else geom),
            )
        )
    return rows, counts


_UNDECIDED = "c.status = 'detected' AND NOT EXISTS (SELECT 1 FROM lcms.decisions d WHERE d.change_id = c.id)"
_SCOPE = (
    "c.kind = 'parcel_check' AND c.project = %(project)s AND c.product = %(product)s AND c.season_after = %(season)s"
)
_INSERT = f"""
INSERT INTO {SCHEMA}.changes (id, kind, project, product, parcel_id, season_before, season_after, from_class,
    from_name, to_class, to_name, area_m2, confidence, geom, run_id, datetime)
VALUES (%s, 'parcel_check', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, ST_GeomFromWKB(%s, 4326), %s, %s)
ON CONFLICT (id) DO NOTHING
"""


def store_parcel_checks(
    url: str,
    rows: list[ParcelCheck],
    *,
    project: str,
    product: str,
    season: str,
    datetime: dt.datetime,
    run_id: str,
    source_run_ids: list[str],
    counts: dict[str, int],
) -> dict[str, int]:
    """Replace the undecided parcel checks of (project, product, season) by ``rows``: one transaction.

    Returns ``inserted``, ``replaced`` (undecided checks removed), ``kept`` (decided checks of the season, left
    as they were; a row whose parcel is among them is not inserted again). :class:`ChangeStoreError` (nothing
    changed) on any failure.
    """
    import psycopg2
    import psycopg2.extras

    require_schema(url)
    started = dt.datetime.now(dt.UTC)
    scope = {"project": project, "product": product, "season": season}
    conn = connect(url, application_name="lcms-parcel-checks")
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"lcms.parcel_checks\x1f{project}\x1f{product}\x1f{season}",),
            )
            cur.execute(f"DELETE FROM {SCHEMA}.changes c WHERE {_SCOPE} AND {_UNDECIDED}", scope)
            replaced = cur.rowcount
            cur.execute(f"SELECT count(*) FROM {SCHEMA}.changes c WHERE {_SCOPE}", scope)
            kept = int(cur.fetchone()[0])
            before = kept
            psycopg2.extras.execute_batch(
                cur,
                _INSERT,
                [
                    (
                        str(r.id),
                        project,
                        product,
                        r.parcel_id,
                        season,
                        season,
                        r.declared,
                        r.declared_name,
                        r.predicted,
                        r.predicted_name,
                        r.area_m2,
                        r.probability,
                        psycopg2.Binary(r.wkb),
                        run_id,
                        datetime,
                    )
                    for r in rows
                ],
                page_size=500,
            )
            cur.execute(f"SELECT count(*) FROM {SCHEMA}.changes c WHERE {_SCOPE}", scope)
            inserted = int(cur.fetchone()[0]) - before
            cur.execute(
                f"INSERT INTO {SCHEMA}.loads (project, season_before, season_after, run_id, source_run_ids, n_read,"
                " n_merged, n_inserted, n_replaced, n_linked, n_kept, n_fixed, n_rejected, started_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, 0, %s, %s, 0, %s, %s, %s, %s)",
                (
                    project,
                    season,
                    season,
                    run_id,
                    source_run_ids,
                    counts.get("read", len(rows)),
                    inserted,
                    replaced,
                    kept,
                    counts.get("fixed", 0),
                    counts.get("rejected", 0),
                    started,
                ),
            )
    except psycopg2.Error as err:
        raise ChangeStoreError(
            f"{describe(url)}: loading the parcel checks of {project} {product} {season} failed, nothing was "
            f"changed: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}"
        ) from err
    finally:
        conn.close()
    return {"inserted": inserted, "replaced": replaced, "kept": kept}


def load_parcel_checks(url: str, ctx: RunContext) -> dict[str, Any]:
    """Load the flagged parcels of the season's markers (``ctx``'s product) as parcel checks; the counts."""
    t0 = time.perf_counter()
    frame, where, meta, _ = read_markers(ctx)
    legend = {c.name: c.id for c in ctx.config.legend()}
    project, product, season = ctx.config.project, ctx.product_name, ctx.season
    rows, counts = prepare(frame, where=where, project=project, product=product, season=season, legend=legend)
    start = ctx.config.season(season).start
    stored = store_parcel_checks(
        url,
        rows,
        project=project,
        product=product,
        season=season,
        datetime=dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC),
        run_id=ctx.run_id,
        source_run_ids=[str(meta["run_id"])] if meta.get("run_id") else [],
        counts=counts,
    )
    out = {
        "project": project,
        "product": product,
        "season": season,
        "database": describe(url),
        "markers": where,
        **counts,
        "checks": len(rows),
        **stored,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    log.info(
        "parcel checks %s: %s %s %s: %d flagged parcels, %d inserted, %d replaced, %d decided kept",
        out["database"],
        project,
        product,
        season,
        out["read"],
        out["inserted"],
        out["replaced"],
        out["kept"],
    )
    return out
