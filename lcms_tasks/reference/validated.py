"""Validated changes as reference data: what operators decided in the change store, as labelled polygons.

Operators decide detected changes in the Validation Tool (``lcms.changes.status``, every decision
appended to ``lcms.decisions``). This module turns those decisions into reference polygons for the
add_reference stage (source type ``change_store``) and for ``lcms reference export-validated``:

* **confirmed** — the change is real: its after-season class (``to_class``) over its geometry;
* **corrected** — the change is real but the map was wrong about it: the corrected after class
  (``corrected_to_class``, else ``to_class``) over the corrected geometry (``corrected_geom``, else
  ``geom``);
* **rejected** — a false positive: nothing changed, so the *before* class (``from_class``) still holds
  over the polygon in the after season (a real "no change" sample). These have their own priority
  (``rejected_priority``), below the validated ones by default.

Each polygon carries its lineage: the change id and the id of the decision that set its current status
(the latest ``confirm`` / ``reject`` / ``correct`` row of the change in ``lcms.decisions``; None for a
status set without a decision, e.g. by hand in SQL).

The feedback rule (which decisions serve which season)
------------------------------------------------------
A change decided for the season pair A→B says what the land was in season B. It is reference for
season B (a re-run of B's add_reference) and for every later season S (B < S, by the seasons' start
dates in the project config), up to ``max_seasons_later`` seasons after B when that is set: land
cover persists, so the decided class is the best evidence there is until something says otherwise.

Something *says otherwise* when another change of the same project in the store, whose after season
B' is later than B and not later than S (B < B' ≤ S), overlaps the polygon and claims a different
class there. The class a change claims for its after season: a detected (undecided) or confirmed
change its ``to_class``, a corrected change its corrected after class, a rejected change its before
class (nothing changed). The overlapping part is cut out of the older polygon (a polygon cut away
entirely is *superseded* and not used); a later change that claims the same class agrees and cuts
nothing. The later change's own decision, if any, is reference in its own right (it is newer).
Undecided later detections cut too: the model then thinks the land changed and no operator has said
it did not, so the contested ground is not trained on. Changes whose after season is later than S, or
that is not a season of the config, are ignored. The store is read as it is at the time of the run; the
add_reference metadata records exactly which changes and decisions were used.

Decisions are only used forwards: a change decided for A→B is not reference for season A (or earlier),
even though a confirmation implies that the before class was right there too.

Parcel checks (crop products)
-----------------------------
A parcel check (``kind = 'parcel_check'``, :mod:`lcms_tasks.store.parcel_checks`) is a declared parcel
whose predicted crop differed from the declared one. Its decision gives the parcel's crop in that season:
confirmed, the predicted crop (``to_class``); corrected, the corrected crop; rejected, the declared crop
(``from_class``: the declaration held). The same three statuses, read as for changes; but a parcel check
is reference for its own season only, and of its own product's legend (the product's add_reference
reads it; the primary product reads the changes): crops rotate, so nothing is carried forward.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lcms_tasks.errors import ChangeStoreError, ConfigError

if TYPE_CHECKING:
    from lcms_tasks.config import ProjectConfig
    from lcms_tasks.reference.rasterize import LabelledPolygon
    from lcms_tasks.reference.sources import SourceStats

log = logging.getLogger(__name__)

Status = Literal["confirmed", "corrected", "rejected"]
#: Statuses that make reference polygons, and what kind of sample each gives.
STATUSES: tuple[Status, ...] = ("confirmed", "corrected", "rejected")
KIND_OF: dict[str, str] = {"confirmed": "validated", "corrected": "validated", "rejected": "no_change"}
#: Default priorities: validated changes outrank every other source (ingest's ``confirmed_changes`` rank),
#: rejected ones ("no change" samples) come next, above manual labels.
DEFAULT_PRIORITY = 50
DEFAULT_REJECTED_PRIORITY = 45
#: Decision actions that set a status a reference polygon is made from.
DECIDING_ACTIONS = ("confirm", "reject", "correct")
#: Layer and columns of the exported GeoPackage.
EXPORT_LAYER = "validated"
EXPORT_COLUMNS: tuple[str, ...] = (
    "change_id",
    "decision_id",
    "status",
    "kind",
    "class_id",
    "class_name",
    "season_before",
    "season_after",
    "serves_season",
    "carried_forward",
    "trimmed",
    "from_class",
    "to_class",
    "corrected_from_class",
    "corrected_to_class",
    "geometry_corrected",
    "decided_by",
    "decided_at",
)


@dataclass(frozen=True)
class StoreChange:
    """One row of ``lcms.changes`` as the rule needs it (geometry: the effective one, shapely, EPSG:4326)."""

    id: str
    status: str
    season_before: str
    season_after: str
    from_class: int
    to_class: int
    geometry: Any
    corrected_from_class: int | None = None
    corrected_to_class: int | None = None
    geometry_corrected: bool = False
    decision_id: int | None = None
    decided_by: str | None = None
    decided_at: dt.datetime | None = None

    @property
    def claimed_class(self) -> int:
        """The class this change says the land has in its after season (see the module docstring)."""
        if self.status == "rejected":
            return self.from_class
        if self.status == "corrected" and self.corrected_to_class is not None:
            return self.corrected_to_class
        return self.to_class


@dataclass(frozen=True)
class ValidatedPolygon:
    """A decided change as a reference polygon for one season, with its lineage."""

    change: StoreChange
    class_id: int
    kind: str  # 'validated' (confirmed, corrected) or 'no_change' (rejected)
    geometry: Any  # shapely (Multi)Polygon, EPSG:4326: the change's effective geometry minus what later changes cut
    serves_season: str | None  # the season it is reference for (None: its own after season, no rule applied)
    carried_forward: bool = False  # decided for an earlier season than the one it serves
    trimmed: bool = False  # later changes cut part of it away

    @property
    def change_id(self) -> str:
        return self.change.id

    @property
    def decision_id(self) -> int | None:
        return self.change.decision_id

    @property
    def status(self) -> str:
        return self.change.status


@dataclass
class RuleCounts:
    """What the feedback rule did with the candidates of one read."""

    candidates: int = 0
    carried_forward: int = 0
    trimmed: int = 0
    superseded: int = 0
    later_changes: int = 0

    def plus(self, other: RuleCounts) -> RuleCounts:
        """The counts of two reads together."""
        return RuleCounts(
            candidates=self.candidates + other.candidates,
            carried_forward=self.carried_forward + other.carried_forward,
            trimmed=self.trimmed + other.trimmed,
            superseded=self.superseded + other.superseded,
            later_changes=self.later_changes + other.later_changes,
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "candidates": self.candidates,
            "carried_forward": self.carried_forward,
            "trimmed": self.trimmed,
            "superseded": self.superseded,
            "later_changes_read": self.later_changes,
        }


# -- seasons ----------------------------------------------------------------------------------------


def season_order(cfg: ProjectConfig) -> list[str]:
    """The config's season ids by start date."""
    return cfg.season_ids_ordered()


def serving_seasons(order: Sequence[str], season: str, max_seasons_later: int | None = None) -> list[str]:
    """The after seasons whose decisions are reference for ``season``: itself and the ones before it.

    ``max_seasons_later``: at most that many seasons before ``season`` (0: ``season`` only; None: all).
    ``ConfigError`` if ``season`` is not in ``order``.
    """
    if season not in order:
        raise ConfigError(f"unknown season {season!r}; this project has {', '.join(order)}", field="seasons")
    stop = list(order).index(season) + 1
    start = 0 if max_seasons_later is None else max(0, stop - 1 - max_seasons_later)
    return list(order[start:stop])


# -- the rule (pure) --------------------------------------------------------------------------------


def reference_class(change: StoreChange) -> int:
    """The class a decided change gives as reference: the (corrected) after class, or the before class if rejected."""
    return change.claimed_class


def apply_rule(
    candidates: Iterable[StoreChange],
    later: Iterable[StoreChange],
    order: Sequence[str],
    season: str,
) -> tuple[list[ValidatedPolygon], RuleCounts]:
    """The reference polygons of ``candidates`` for ``season`` under the feedback rule of the module docstring.

    ``candidates``: decided changes (confirmed, corrected, rejected) with an after season in ``order`` up to
    ``season``; ``later``: every change (any status) that may say otherwise (after seasons after the earliest
    candidate's, up to ``season``). Geometries in one CRS (EPSG:4326 from the store).
    """
    import shapely

    rank = {s: i for i, s in enumerate(order)}
    if season not in rank:
        raise ConfigError(f"unknown season {season!r}; this project has {', '.join(order)}", field="seasons")
    here = rank[season]
    later_list = [c for c in later if c.season_after in rank and rank[c.season_after] <= here]
    counts = RuleCounts(later_changes=len(later_list))
    tree = shapely.STRtree([c.geometry for c in later_list]) if later_list else None
    out: list[ValidatedPolygon] = []
    for change in candidates:
        if change.status not in KIND_OF or change.season_after not in rank or rank[change.season_after] > here:
            continue
        counts.candidates += 1
        cls = reference_class(change)
        geom = change.geometry
        carried = rank[change.season_after] < here
        trimmed = False
        if carried and tree is not None:
            hits = tree.query(geom, predicate="intersects")
            cutters = [
                later_list[i].geometry
                for i in hits.tolist()
                if later_list[i].id != change.id
                and rank[later_list[i].season_after] > rank[change.season_after]
                and later_list[i].claimed_class != cls
            ]
            if cutters:
                rest = shapely.difference(geom, shapely.union_all(cutters))
                rest = _polygonal(rest)
                if rest is None:
                    counts.superseded += 1
                    continue
                trimmed = not shapely.equals(rest, geom)
                geom = rest
        counts.carried_forward += int(carried)
        counts.trimmed += int(trimmed)
        out.append(
            ValidatedPolygon(
                change=change,
                class_id=cls,
                kind=KIND_OF[change.status],
                geometry=geom,
                serves_season=season,
                carried_forward=carried,
                trimmed=trimmed,
            )
        )
    return out, counts


def _polygonal(geom: Any) -> Any:
    """The areal part of ``geom`` (None when it has no area)."""
    import shapely

    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom if geom.area > 0 else None
    parts = [g for g in getattr(geom, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon") and g.area > 0]
    return shapely.union_all(parts) if parts else None


# -- reading the store ------------------------------------------------------------------------------

_CANDIDATES_SQL = """
SELECT c.id::text, c.status, c.season_before, c.season_after, c.from_class, c.to_class,
       c.corrected_from_class, c.corrected_to_class, c.corrected_geom IS NOT NULL,
       ST_AsBinary(COALESCE(c.corrected_geom, c.geom)), d.id, d.decided_by, d.decided_at
FROM lcms.changes c
LEFT JOIN LATERAL (
    SELECT id, decided_by, decided_at FROM lcms.decisions
    WHERE change_id = c.id AND action = ANY(%(actions)s)
    ORDER BY id DESC LIMIT 1
) d ON true
WHERE c.project = %(project)s AND c.status = ANY(%(statuses)s) AND c.season_after = ANY(%(seasons)s)
  AND c.kind = %(kind)s AND c.product IS NOT DISTINCT FROM %(product)s
  AND (%(envelope)s::text IS NULL OR ST_Intersects(COALESCE(c.corrected_geom, c.geom), ST_GeomFromEWKT(%(envelope)s)))
ORDER BY c.season_after, c.id
"""

# Two halves so that both use an index: original geometries through the GiST index, corrected geometries
# (decided changes only) through the partial index on decided statuses.
_LATER_SQL = """
SELECT c.id::text, c.status, c.season_before, c.season_after, c.from_class, c.to_class,
       c.corrected_from_class, c.corrected_to_class, c.corrected_geom IS NOT NULL,
       ST_AsBinary(COALESCE(c.corrected_geom, c.geom))
FROM lcms.changes c
WHERE c.project = %(project)s AND c.season_after = ANY(%(seasons)s) AND c.kind = 'change'
  AND (%(envelope)s::text IS NULL OR c.geom && ST_GeomFromEWKT(%(envelope)s))
UNION ALL
SELECT c.id::text, c.status, c.season_before, c.season_after, c.from_class, c.to_class,
       c.corrected_from_class, c.corrected_to_class, true, ST_AsBinary(c.corrected_geom)
FROM lcms.changes c
WHERE c.project = %(project)s AND c.season_after = ANY(%(seasons)s) AND c.status <> 'detected'
  AND c.kind = 'change' AND c.corrected_geom IS NOT NULL AND %(envelope)s::text IS NOT NULL
  AND c.corrected_geom && ST_GeomFromEWKT(%(envelope)s) AND NOT c.geom && ST_GeomFromEWKT(%(envelope)s)
"""


def _row_change(row: Sequence[Any], *, with_decision: bool) -> StoreChange:
    import shapely

    return StoreChange(
        id=str(row[0]),
        status=str(row[1]),
        season_before=str(row[2]),
        season_after=str(row[3]),
        from_class=int(row[4]),
        to_class=int(row[5]),
        corrected_from_class=None if row[6] is None else int(row[6]),
        corrected_to_class=None if row[7] is None else int(row[7]),
        geometry_corrected=bool(row[8]),
        geometry=shapely.from_wkb(bytes(row[9])),
        decision_id=int(row[10]) if with_decision and row[10] is not None else None,
        decided_by=str(row[11]) if with_decision and row[11] is not None else None,
        decided_at=row[12] if with_decision else None,
    )


def tile_envelope(bounds: tuple[float, float, float, float], crs: str) -> str:
    """EWKT of a tile's box (``bounds`` in ``crs``) in EPSG:4326, edges densified, grown by a hair for rounding."""
    import geopandas as gpd
    import shapely

    box = shapely.box(*bounds)
    side = max(bounds[2] - bounds[0], bounds[3] - bounds[1])
    dense = shapely.segmentize(box, max(side / 32.0, 1e-9))
    out = gpd.GeoSeries([dense], crs=crs).to_crs(4326).iloc[0].buffer(1e-7)
    return f"SRID=4326;{out.wkt}"


def _require_tables(cur: Any, where: str) -> None:
    cur.execute("SELECT to_regclass('lcms.changes') IS NOT NULL AND to_regclass('lcms.decisions') IS NOT NULL")
    if not cur.fetchone()[0]:
        raise ChangeStoreError(
            f"{where}: the change store has no lcms.changes/lcms.decisions tables. Fix: run `lcms db upgrade`",
            database=where,
            permanent=True,
        )


def read_validated(
    url: str,
    *,
    project: str,
    season: str,
    order: Sequence[str],
    statuses: Sequence[str] = STATUSES,
    max_seasons_later: int | None = None,
    envelope: str | None = None,
    changes: bool = True,
    parcel_checks_of: str | None = None,
) -> tuple[list[ValidatedPolygon], RuleCounts]:
    """The reference polygons for ``season`` from the change store at ``url`` (rule of the module docstring).

    ``order``: the project's seasons by start date; ``envelope``: EWKT in EPSG:4326 of the area to read
    (:func:`tile_envelope`; None: everywhere). ``changes``: read the decided changes (the primary product's
    reference); ``parcel_checks_of``: also read the decided parcel checks of that product, each for its own
    season only ("Parcel checks" in the module docstring). One read-only transaction on one connection.
    ``ChangeStoreError`` naming the database if it cannot be read.
    """
    from lcms_tasks.store.db import connect, describe

    bad = sorted(set(statuses) - set(STATUSES))
    if bad:
        raise ConfigError(f"statuses {bad} do not make reference; use some of {', '.join(STATUSES)}")
    seasons = serving_seasons(order, season, max_seasons_later)
    params = {
        "project": project,
        "statuses": list(statuses),
        "seasons": seasons,
        "actions": list(DECIDING_ACTIONS),
        "envelope": envelope,
        "kind": "change",
        "product": None,
    }
    candidates: list[StoreChange] = []
    later: list[StoreChange] = []
    checks: list[StoreChange] = []
    conn = connect(url, application_name="lcms-reference")
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            _require_tables(cur, describe(url))
            if changes:
                cur.execute(_CANDIDATES_SQL, params)
                candidates = [_row_change(r, with_decision=True) for r in cur.fetchall()]
                earliest = min((seasons.index(c.season_after) for c in candidates), default=len(seasons) - 1)
                later_seasons = seasons[earliest + 1 :]
                if later_seasons:
                    cur.execute(_LATER_SQL, {**params, "seasons": later_seasons})
                    later = [_row_change(r, with_decision=False) for r in cur.fetchall()]
            if parcel_checks_of is not None:  # crops rotate: a parcel's checked crop is of its season only
                own = {**params, "seasons": [season], "kind": "parcel_check", "product": parcel_checks_of}
                cur.execute(_CANDIDATES_SQL, own)
                checks = [_row_change(r, with_decision=True) for r in cur.fetchall()]
        conn.rollback()
    except ChangeStoreError:
        raise
    except Exception as err:  # psycopg2 errors of every kind: name the database
        import psycopg2

        if isinstance(err, psycopg2.Error):
            raise ChangeStoreError(
                f"cannot read validated changes from {describe(url)}: {' '.join(str(err).split())}",
                database=describe(url),
            ) from err
        raise
    finally:
        conn.close()
    found, counts = apply_rule(candidates, later, order, season)
    checked, check_counts = apply_rule(checks, [], order, season)
    return [*found, *checked], counts.plus(check_counts)


# -- per tile (the add_reference source) ------------------------------------------------------------


@dataclass
class TileValidated:
    """What the change store gave one tile: labelled polygons, the reader's statistics and the lineage."""

    polygons: list[LabelledPolygon] = field(default_factory=list)
    stats: SourceStats | None = None
    used: list[ValidatedPolygon] = field(default_factory=list)
    rule: RuleCounts = field(default_factory=RuleCounts)
    skipped: str | None = None

    def lineage(self, rasterised_keys: Iterable[int] = ()) -> dict[str, Any]:
        """The metadata block of the tile's add_reference marker (``validated``)."""
        keys = set(rasterised_keys)
        by_status = Counter(p.status for p in self.used)
        out: dict[str, Any] = {
            "polygons_used": len(self.used),
            "polygons_rasterised": sum(1 for p in self.used if polygon_key(p.change_id) in keys),
            "by_status": {s: by_status.get(s, 0) for s in STATUSES},
            "carried_forward": sum(1 for p in self.used if p.carried_forward),
            "rule": self.rule.to_dict(),
            "change_ids": [p.change_id for p in self.used],
            "decision_ids": sorted({p.decision_id for p in self.used if p.decision_id is not None}),
            "without_decision": [p.change_id for p in self.used if p.decision_id is None],
            "polygons": [
                {
                    "change_id": p.change_id,
                    "decision_id": p.decision_id,
                    "status": p.status,
                    "class": p.class_id,
                    "season_after": p.change.season_after,
                    "decided_by": p.change.decided_by,
                    "decided_at": p.change.decided_at.isoformat() if p.change.decided_at else None,
                    "carried_forward": p.carried_forward,
                    "trimmed": p.trimmed,
                    "rasterised": polygon_key(p.change_id) in keys,
                }
                for p in self.used
            ],
        }
        if self.skipped:
            out["skipped"] = self.skipped
        return out


def polygon_key(change_id: str) -> int:
    """The stable polygon key of a change's reference polygon (the same in every tile and season)."""
    from lcms_tasks.reference.sources import stable_key

    return stable_key("change_store", change_id)


def tile_polygons(
    validated: Sequence[ValidatedPolygon],
    *,
    bounds: tuple[float, float, float, float],
    crs: str,
    legend_ids: set[int],
    priority: int,
    rejected_priority: int,
    min_area_m2: float = 0.0,
) -> TileValidated:
    """``validated`` (EPSG:4326) reprojected to a tile's ``crs``, clipped to its ``bounds``, as labelled polygons."""
    import geopandas as gpd
    import shapely

    from lcms_tasks.reference.rasterize import LabelledPolygon
    from lcms_tasks.reference.sources import SourceStats

    out = TileValidated(stats=SourceStats(polygons_read=len(validated)))
    stats = out.stats
    assert stats is not None
    if not validated:
        return out
    projected = gpd.GeoSeries([p.geometry for p in validated], crs=4326).to_crs(crs).make_valid().to_numpy()
    tile_box = shapely.box(*bounds)
    for p, geom in zip(validated, projected, strict=True):
        geom = _polygonal(geom)
        if geom is None:
            stats.non_polygon += 1
            continue
        if p.class_id not in legend_ids:
            stats.unknown_codes[str(p.class_id)] += 1
            continue
        if min_area_m2 > 0 and geom.area < min_area_m2:
            stats.too_small += 1
            continue
        clipped = _polygonal(shapely.intersection(geom, tile_box))
        if clipped is None:
            continue
        prio = rejected_priority if p.kind == "no_change" else priority
        out.polygons.append(LabelledPolygon(clipped, int(p.class_id), prio, polygon_key(p.change_id)))
        out.used.append(p)
    stats.polygons_used = len(out.polygons)
    return out


# -- export -----------------------------------------------------------------------------------------


def validated_frame(validated: Sequence[ValidatedPolygon], class_names: Mapping[int, str]) -> Any:
    """A GeoDataFrame (EPSG:4326, MultiPolygons) of ``validated`` with the columns of :data:`EXPORT_COLUMNS`."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    def opt(value: int | None) -> float:
        return math.nan if value is None else float(value)

    rows = [
        {
            "change_id": p.change_id,
            "decision_id": opt(p.decision_id),
            "status": p.status,
            "kind": p.kind,
            "class_id": int(p.class_id),
            "class_name": class_names.get(int(p.class_id), f"class {p.class_id}"),
            "season_before": p.change.season_before,
            "season_after": p.change.season_after,
            "serves_season": p.serves_season or p.change.season_after,
            "carried_forward": bool(p.carried_forward),
            "trimmed": bool(p.trimmed),
            "from_class": int(p.change.from_class),
            "to_class": int(p.change.to_class),
            "corrected_from_class": opt(p.change.corrected_from_class),
            "corrected_to_class": opt(p.change.corrected_to_class),
            "geometry_corrected": bool(p.change.geometry_corrected),
            "decided_by": p.change.decided_by or "",
            "decided_at": p.change.decided_at.isoformat() if p.change.decided_at else "",
        }
        for p in validated
    ]
    geoms = [shapely.multipolygons(shapely.get_parts(p.geometry)) for p in validated]
    frame = pd.DataFrame(rows, columns=list(EXPORT_COLUMNS))
    # Integer columns that may be null are stored as nullable integers (GeoPackage INTEGER, NULL where none).
    for col in ("decision_id", "corrected_from_class", "corrected_to_class"):
        frame[col] = frame[col].astype("Int64")
    return gpd.GeoDataFrame(frame, geometry=geoms, crs=4326)


def export_validated(
    url: str,
    cfg: ProjectConfig,
    out: Path,
    *,
    season: str | None = None,
    statuses: Sequence[str] = STATUSES,
    max_seasons_later: int | None = None,
) -> dict[str, Any]:
    """Write the validated reference polygons of ``cfg``'s project to the GeoPackage ``out`` (layer ``validated``).

    With ``season``: the polygons that are reference for that season under the feedback rule (carried
    forward from earlier seasons, cut where later changes say otherwise), exactly what add_reference reads.
    Without: every decided change as the reference of its own after season (no rule applied). Written to a
    temporary name and renamed. Returns the counts (``polygons``, ``by_status``, ``decision_ids``).
    """
    import os
    import tempfile

    order = season_order(cfg)
    names = {c.id: c.name for c in cfg.legend()}
    if season is not None:
        polygons, counts = read_validated(
            url,
            project=cfg.project,
            season=season,
            order=order,
            statuses=statuses,
            max_seasons_later=max_seasons_later,
        )
        rule: dict[str, Any] | None = counts.to_dict()
    else:
        polygons = []
        for s in order:  # each season's own decisions, none carried forward
            found, _ = read_validated(
                url, project=cfg.project, season=s, order=order, statuses=statuses, max_seasons_later=0
            )
            polygons.extend(replace(p, serves_season=None) for p in found)
        rule = None
    frame = validated_frame(polygons, names)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=".gpkg", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()  # GDAL creates the file itself
        frame.to_file(tmp, layer=EXPORT_LAYER, driver="GPKG")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    by_status = Counter(p.status for p in polygons)
    return {
        "out": str(out),
        "layer": EXPORT_LAYER,
        "project": cfg.project,
        "season": season,
        "polygons": len(polygons),
        "by_status": {s: by_status.get(s, 0) for s in STATUSES},
        "decision_ids": sorted({p.decision_id for p in polygons if p.decision_id is not None}),
        "rule": rule,
    }
