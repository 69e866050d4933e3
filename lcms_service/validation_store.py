"""The Validation API's queries on the change store: the queue, one change, decisions and statistics.

Every query is parameterised (``$n``); the only SQL assembled from a request are fixed fragments
chosen by the filters given (never the values) and an ORDER BY picked from :data:`ORDERS`.

Decisions (:func:`decide`) run in one transaction on a read-write connection: the change's row is
locked (``SELECT ... FOR UPDATE``), its ``version`` compared with the one the decision was made on (a
mismatch raises :class:`StaleVersionError` carrying the current state; nothing is written), the
decision checked against the change's project (classes in its legend, the outline in its AOI), the
row updated (``version = version + 1``) and the decision appended to ``lcms.decisions`` with who,
when (the transaction's time), the previous and the new state and the comment. A decision
supersedes the earlier ones; none is ever changed or deleted (the table's triggers refuse it).

State after each action:

* ``confirm`` / ``reject`` — status ``confirmed`` / ``rejected``; corrections cleared;
* ``correct`` — status ``corrected``; ``from_class`` / ``to_class`` / ``geometry`` given replace the
  current corrections, those omitted keep them (a class equal to the detected one is stored as no
  correction); the result must differ from the detection and its from and to classes must differ;
* ``reopen`` — back to ``detected``, corrections cleared;
* ``comment`` — a note in the audit trail (``comment`` required); state and version unchanged.

Statistics (:func:`stats`): the time per decision is the time between an operator's consecutive
decisions (any action) when they are at most :data:`SESSION_GAP_S` apart — within one working
session; the first decision after a longer pause has no time. The service does not record when an
operator opened a change, so this is the time an operator spends per change while working through
the queue.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from lcms_service.validation_models import (
    Action,
    ChangeDetail,
    ChangeItem,
    ChangePage,
    Counts,
    DecisionRecord,
    Direction,
    OperatorStats,
    Order,
    Stats,
    TransitionStats,
)

#: Consecutive decisions of one operator further apart than this (s) are in different sessions.
SESSION_GAP_S = 1800.0
TIMING = (
    "median seconds between an operator's consecutive decisions (any action) at most "
    f"{SESSION_GAP_S / 60:g} minutes apart (one working session); the first decision after a longer pause is not "
    "timed (the service does not record when a change was opened)"
)
#: The queue's default order: largest uncertain changes first (an unknown confidence counts as 0).
PRIORITY_SQL = "c.area_m2 * (1 - COALESCE(c.confidence, 0))"
#: ORDER BY of each order (on alias ``c``): (expression, default direction).
ORDERS: dict[str, tuple[str, Direction]] = {
    "priority": (PRIORITY_SQL, "desc"),
    "area": ("c.area_m2", "desc"),
    "confidence": ("COALESCE(c.confidence, 0)", "asc"),
    "date": ("c.datetime", "desc"),
}
DECIDING = ("confirm", "reject", "correct")
STATUS_OF: dict[str, str] = {"confirm": "confirmed", "reject": "rejected", "correct": "corrected", "reopen": "detected"}

_ITEM_COLUMNS = f"""
    c.id, c.project, c.season_before, c.season_after, c.from_class, c.from_name, c.to_class, c.to_name,
    c.area_m2, c.confidence, {PRIORITY_SQL} AS priority, c.status, c.version,
    c.corrected_from_class, c.corrected_to_class, c.datetime, c.updated_at, c.kind, c.product, c.parcel_id,
    ST_XMin(b.box) AS w, ST_YMin(b.box) AS s, ST_XMax(b.box) AS e, ST_YMax(b.box) AS n
"""
_BOX_JOIN = (
    "CROSS JOIN LATERAL (SELECT COALESCE(ST_CombineBBox(c.geom::box2d, c.corrected_geom), c.geom::box2d) AS box) b"
)


class ChangeNotFoundError(LookupError):
    """No change with that id."""


class StaleVersionError(Exception):
    """A decision made on another version than the change's current one; nothing was written."""

    def __init__(self, seen: int, current: ChangeDetail) -> None:
        self.seen = seen
        self.current = current
        super().__init__(
            f"change {current.id} is at version {current.version}, the decision was made on version {seen}: "
            "someone decided it meanwhile; look at its current state and decide again"
        )


class DecisionProblemError(ValueError):
    """A decision that cannot apply (a class not in the legend, nothing corrected, ...): the message says why."""


# ------------------------------------------------------------------------------------------ queue
@dataclass
class QueueFilter:
    """The queue's filters (None: not filtered)."""

    project: str | None = None
    #: ``change`` or ``parcel_check`` (None: both).
    kind: str | None = "change"
    product: str | None = None
    season_before: str | None = None
    season_after: str | None = None
    status: Sequence[str] | None = None
    from_class: int | None = None
    to_class: int | None = None
    region_wkb: bytes | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None
    min_area_m2: float | None = None
    max_area_m2: float | None = None

    def where(self, *, with_status: bool = True, first: int = 1) -> tuple[str, list[Any]]:
        """``WHERE`` clause (on alias ``c``) and its parameters, numbered from ``$first``."""
        clauses: list[str] = []
        params: list[Any] = []

        def add(fragment: str, value: Any) -> None:
            params.append(value)
            clauses.append(fragment.replace("$?", f"${first + len(params) - 1}"))

        for column in ("project", "kind", "product", "season_before", "season_after", "from_class", "to_class"):
            value = getattr(self, column)
            if value is not None:
                add(f"c.{column} = $?", value)
        if with_status and self.status:
            add("c.status = ANY($?::text[])", list(self.status))
        if self.min_confidence is not None:
            add("c.confidence >= $?", self.min_confidence)
        if self.max_confidence is not None:
            add("c.confidence <= $?", self.max_confidence)
        if self.min_area_m2 is not None:
            add("c.area_m2 >= $?", self.min_area_m2)
        if self.max_area_m2 is not None:
            add("c.area_m2 <= $?", self.max_area_m2)
        if self.region_wkb is not None:
            add("ST_Intersects(c.geom, ST_GeomFromWKB($?, 4326))", self.region_wkb)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _item_kwargs(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "project": row["project"],
        "season_before": row["season_before"],
        "season_after": row["season_after"],
        "from_class": row["from_class"],
        "from_name": row["from_name"],
        "to_class": row["to_class"],
        "to_name": row["to_name"],
        "area_m2": row["area_m2"],
        "confidence": row["confidence"],
        "priority": row["priority"],
        "status": row["status"],
        "version": row["version"],
        "bbox": [row["w"], row["s"], row["e"], row["n"]],
        "corrected_from_class": row["corrected_from_class"],
        "corrected_to_class": row["corrected_to_class"],
        "datetime": row["datetime"],
        "updated_at": row["updated_at"],
        "kind": row["kind"],
        "product": row["product"],
        "parcel_id": row["parcel_id"],
    }


async def queue(
    conn: asyncpg.Connection,
    filters: QueueFilter,
    *,
    order: Order = "priority",
    direction: Direction | None = None,
    limit: int = 50,
    offset: int = 0,
) -> ChangePage:
    """One page of the queue, the number of changes matching the filters and the done/left counts."""
    expr, default = ORDERS[order]
    way = direction or default
    nulls = "NULLS LAST" if way == "desc" else "NULLS FIRST"
    where_all, params_all = filters.where()
    where_counts, params_counts = filters.where(with_status=False)
    status_filter = "true"
    if filters.status:
        params_counts.append(list(filters.status))
        status_filter = f"c.status = ANY(${len(params_counts)}::text[])"
    counts = await conn.fetchrow(
        f"""SELECT count(*) FILTER (WHERE {status_filter}) AS total,
                   count(*) FILTER (WHERE c.status <> 'detected') AS done,
                   count(*) FILTER (WHERE c.status = 'detected') AS left
            FROM lcms.changes c {where_counts}""",
        *params_counts,
    )
    n = len(params_all)
    # The page's ids first (a top-N sort of narrow rows), then their columns: bounding boxes are computed
    # for the page only.
    rows = await conn.fetch(
        f"""WITH page AS (
                SELECT c.id, row_number() OVER () AS k FROM (
                    SELECT c.id FROM lcms.changes c {where_all}
                    ORDER BY {expr} {way} {nulls}, c.id {way}
                    LIMIT ${n + 1} OFFSET ${n + 2}
                ) c
            )
            SELECT {_ITEM_COLUMNS} FROM page p JOIN lcms.changes c ON c.id = p.id {_BOX_JOIN}
            ORDER BY p.k""",
        *params_all,
        limit,
        offset,
    )
    return ChangePage(
        items=[ChangeItem(**_item_kwargs(r)) for r in rows],
        total=counts["total"],
        counts=Counts(done=counts["done"], left=counts["left"]),
        limit=limit,
        offset=offset,
        order=order,
        direction=way,
    )


# ------------------------------------------------------------------------------------ one change
_DETAIL_SQL = f"""
SELECT {_ITEM_COLUMNS}, ST_AsGeoJSON(c.geom)::text AS geometry, ST_AsGeoJSON(c.corrected_geom)::text AS corrected,
       c.tiles, c.run_id, c.detected_at
FROM lcms.changes c {_BOX_JOIN}
WHERE c.id = $1
"""
_DECISIONS_SQL = """
SELECT id, action, decided_by, decided_at, previous::text AS previous, new::text AS new, comment
FROM lcms.decisions WHERE change_id = $1 ORDER BY id
"""


def legend_key(project: str, product: str | None) -> str:
    """The key of a legend in the ``legends`` mappings: the project (its primary product's legend, the one of
    its changes), or ``project/product`` for another product's (the one of its parcel checks)."""
    return project if product is None else f"{project}/{product}"


def _legend(legends: Mapping[str, dict[int, str]] | None, row: asyncpg.Record) -> dict[int, str] | None:
    return (legends or {}).get(legend_key(row["project"], row["product"]))


async def class_names(
    conn: asyncpg.Connection, project: str, legend: dict[int, str] | None, product: str | None = None
) -> dict[int, str]:
    """Class id -> name for ``project`` (``product``): the config's legend if given, else the classes its rows use."""
    if legend:
        return legend
    rows = await conn.fetch(
        "SELECT DISTINCT from_class AS id, from_name AS name FROM lcms.changes "
        "WHERE project = $1 AND product IS NOT DISTINCT FROM $2 "
        "UNION SELECT DISTINCT to_class, to_name FROM lcms.changes "
        "WHERE project = $1 AND product IS NOT DISTINCT FROM $2",
        project,
        product,
    )
    return {int(r["id"]): str(r["name"]) for r in rows}


async def change_detail(
    conn: asyncpg.Connection, change_id: uuid.UUID, *, legends: Mapping[str, dict[int, str]] | None = None
) -> ChangeDetail:
    """The change with its geometry, corrections and decisions (:class:`ChangeNotFoundError` if absent).

    ``legends``: :func:`legend_key` -> {class id: name} for the corrected classes' names (else the classes the
    project's rows use).
    """
    row = await conn.fetchrow(_DETAIL_SQL, change_id)
    if row is None:
        raise ChangeNotFoundError(f"no change {change_id}")
    decisions = await conn.fetch(_DECISIONS_SQL, change_id)
    names = _legend(legends, row) or {}
    corrected_class = row["corrected_from_class"] is not None or row["corrected_to_class"] is not None
    if corrected_class and not names:
        names = await class_names(conn, row["project"], None, row["product"])
    return ChangeDetail(
        **_item_kwargs(row),
        geometry=json.loads(row["geometry"]),
        corrected_geometry=json.loads(row["corrected"]) if row["corrected"] else None,
        corrected_from_name=_name(row["corrected_from_class"], names),
        corrected_to_name=_name(row["corrected_to_class"], names),
        tiles=list(row["tiles"] or []),
        run_id=row["run_id"],
        detected_at=row["detected_at"],
        decisions=[
            DecisionRecord(
                id=d["id"],
                action=d["action"],
                decided_by=d["decided_by"],
                decided_at=d["decided_at"],
                previous=json.loads(d["previous"]),
                new=json.loads(d["new"]),
                comment=d["comment"],
            )
            for d in decisions
        ],
    )


def _name(cid: int | None, names: dict[int, str]) -> str | None:
    if cid is None:
        return None
    return names.get(int(cid), f"class {cid}")


# -------------------------------------------------------------------------------------- decisions
@dataclass
class Decision:
    """A decision to record (validated by the router: the geometry is a valid (Multi)Polygon in EPSG:4326)."""

    action: Action
    version: int
    decided_by: str
    from_class: int | None = None
    to_class: int | None = None
    geometry: Any = None  # shapely Polygon/MultiPolygon, EPSG:4326
    comment: str | None = None


def check_request(decision: Decision) -> None:
    """:class:`DecisionProblemError` for a decision malformed whatever the change (before the database is asked)."""
    corrections = [name for name in ("from_class", "to_class", "geometry") if getattr(decision, name) is not None]
    if decision.action != "correct" and corrections:
        raise DecisionProblemError(
            f"{', '.join(corrections)}: only a 'correct' decision sets classes or a geometry "
            f"(this one is {decision.action!r})"
        )
    if decision.action == "correct" and not corrections:
        raise DecisionProblemError("a 'correct' decision needs from_class, to_class and/or geometry: nothing corrected")
    if decision.action == "comment" and not (decision.comment or "").strip():
        raise DecisionProblemError("a 'comment' decision needs a non-empty comment")


def _state(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    corrected = row["corrected"]
    return {
        "status": row["status"],
        "corrected_from_class": row["corrected_from_class"],
        "corrected_to_class": row["corrected_to_class"],
        "corrected_geometry": json.loads(corrected) if corrected else None,
        "version": row["version"],
    }


_LOCK_SQL = """
SELECT id, project, kind, product, status, version, from_class, to_class, corrected_from_class, corrected_to_class,
       ST_AsGeoJSON(corrected_geom)::text AS corrected
FROM lcms.changes WHERE id = $1 FOR UPDATE
"""
_UPDATE_SQL = """
UPDATE lcms.changes
SET status = $2, corrected_from_class = $3, corrected_to_class = $4,
    corrected_geom = CASE WHEN $5::bytea IS NULL THEN NULL ELSE ST_Multi(ST_GeomFromWKB($5::bytea, 4326)) END,
    version = version + 1
WHERE id = $1 AND version = $6
RETURNING version, ST_AsGeoJSON(corrected_geom)::text AS corrected
"""
_KEEP_GEOM_SQL = """
UPDATE lcms.changes
SET status = $2, corrected_from_class = $3, corrected_to_class = $4, version = version + 1
WHERE id = $1 AND version = $5
RETURNING version, ST_AsGeoJSON(corrected_geom)::text AS corrected
"""
_INSERT_SQL = """
INSERT INTO lcms.decisions (change_id, decided_by, action, previous, new, comment)
VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6)
RETURNING id
"""


async def decide(
    conn: asyncpg.Connection,
    change_id: uuid.UUID,
    decision: Decision,
    *,
    legends: Mapping[str, dict[int, str]] | None = None,
    check_geometry: Callable[[Any, str], None] | None = None,
) -> tuple[ChangeDetail, int]:
    """Apply ``decision`` to the change and append it to the audit trail, in one transaction.

    ``legends``: project -> {class id: name}, the classes a correction may set (a project without one: the
    classes its changes use); ``check_geometry``: a callable ``(geometry, project)`` raising for an outline
    outside the project. Returns the change as it is afterwards and the decision's id.
    :class:`ChangeNotFoundError`, :class:`StaleVersionError` (with the current state),
    :class:`DecisionProblemError` or what ``check_geometry`` raises: on any of them nothing is written.
    """
    import shapely

    check_request(decision)
    async with conn.transaction():
        row = await conn.fetchrow(_LOCK_SQL, change_id)
        if row is None:
            raise ChangeNotFoundError(f"no change {change_id}")
        if row["version"] != decision.version:
            current = await change_detail(conn, change_id, legends=legends)
            raise StaleVersionError(decision.version, current)
        previous = _state(row)
        status = row["status"]
        from_c, to_c = row["corrected_from_class"], row["corrected_to_class"]
        geometry_wkb: bytes | None = None
        keep_geometry = False
        if decision.action in ("confirm", "reject", "reopen"):
            status, from_c, to_c = STATUS_OF[decision.action], None, None
        elif decision.action == "correct":
            parcel = row["kind"] == "parcel_check"
            if parcel and (decision.from_class is not None or decision.geometry is not None):
                raise DecisionProblemError(
                    "a parcel check is corrected with to_class only (the parcel's true crop): the declared crop "
                    "(from_class) and the parcel's outline are the declaration's"
                )
            names = await class_names(conn, row["project"], _legend(legends, row), row["product"])
            whose = f"project {row['project']!r}" + (f", product {row['product']!r}" if row["product"] else "")
            for field_name in ("from_class", "to_class"):
                value = getattr(decision, field_name)
                if value is not None and value not in names:
                    shown = ", ".join(f"{k} {v}" for k, v in sorted(names.items()))
                    raise DecisionProblemError(f"{field_name} {value} is not in the legend of {whose} ({shown})")
            if decision.from_class is not None:
                from_c = None if decision.from_class == row["from_class"] else decision.from_class
            if decision.to_class is not None:
                to_c = None if decision.to_class == row["to_class"] else decision.to_class
            if decision.geometry is not None:
                if check_geometry is not None:
                    check_geometry(decision.geometry, row["project"])
                geometry_wkb = shapely.to_wkb(decision.geometry)
            else:
                keep_geometry = True
            effective_from = row["from_class"] if from_c is None else from_c
            effective_to = row["to_class"] if to_c is None else to_c
            if effective_from == effective_to:
                raise DecisionProblemError(
                    f"to_class {effective_to} is the declared crop: the declaration holds; reject the check instead"
                    if parcel
                    else f"from_class and to_class would both be {effective_from}: that is no change; reject it instead"
                )
            if from_c is None and to_c is None and geometry_wkb is None and previous["corrected_geometry"] is None:
                raise DecisionProblemError(
                    "nothing corrected: the classes given are the detected ones and there is no geometry"
                )
            status = "corrected"
        if decision.action == "comment":
            new_version, corrected = row["version"], row["corrected"]
        elif decision.action == "correct" and keep_geometry:
            updated = await conn.fetchrow(_KEEP_GEOM_SQL, change_id, status, from_c, to_c, decision.version)
            new_version, corrected = updated["version"], updated["corrected"]
        else:
            updated = await conn.fetchrow(_UPDATE_SQL, change_id, status, from_c, to_c, geometry_wkb, decision.version)
            new_version, corrected = updated["version"], updated["corrected"]
        new = _state(
            {
                "status": status,
                "corrected_from_class": from_c,
                "corrected_to_class": to_c,
                "corrected": corrected,
                "version": new_version,
            }
        )
        decision_id = await conn.fetchval(
            _INSERT_SQL,
            change_id,
            decision.decided_by,
            decision.action,
            json.dumps(previous),
            json.dumps(new),
            decision.comment,
        )
        detail = await change_detail(conn, change_id, legends=legends)
    return detail, int(decision_id)


# ------------------------------------------------------------------------------------------- stats
_STATS_DECISIONS_SQL = """
WITH timed AS (
    SELECT d.id, d.change_id, d.decided_by, d.action,
           extract(epoch FROM d.decided_at - lag(d.decided_at) OVER (
               PARTITION BY d.decided_by ORDER BY d.decided_at, d.id)) AS gap
    FROM lcms.decisions d
)
SELECT t.decided_by, t.action, c.from_class, c.to_class,
       CASE WHEN t.gap <= $1 THEN t.gap END AS seconds
FROM timed t JOIN lcms.changes c ON c.id = t.change_id
WHERE t.action = ANY($2::text[]) {filters}
"""
_STATS_CHANGES_SQL = """
SELECT c.from_class, c.from_name, c.to_class, c.to_name, count(*) AS changes,
       count(*) FILTER (WHERE c.status <> 'detected') AS decided,
       count(*) FILTER (WHERE c.status = 'confirmed') AS confirmed,
       count(*) FILTER (WHERE c.status = 'rejected') AS rejected,
       count(*) FILTER (WHERE c.status = 'corrected') AS corrected
FROM lcms.changes c {where}
GROUP BY c.from_class, c.from_name, c.to_class, c.to_name
ORDER BY c.from_class, c.to_class
"""


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return float(ordered[mid]) if len(ordered) % 2 else float((ordered[mid - 1] + ordered[mid]) / 2)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


async def stats(
    conn: asyncpg.Connection,
    *,
    project: str | None = None,
    season_before: str | None = None,
    season_after: str | None = None,
    kind: str = "change",
) -> Stats:
    """Per operator (their decisions) and per transition (the changes' current status) within the filters;
    ``kind``: of the changes, or of the parcel checks (transitions: declared -> predicted crop)."""
    filters = QueueFilter(project=project, kind=kind, season_before=season_before, season_after=season_after)
    where, params = filters.where()
    # $1 and $2 are the session gap and the deciding actions: the filters' placeholders come after them.
    shifted, _ = filters.where(first=3)
    sql = _STATS_DECISIONS_SQL.format(filters=shifted.replace("WHERE ", "AND ", 1))
    decisions = await conn.fetch(sql, SESSION_GAP_S, list(DECIDING), *params)
    changes = await conn.fetch(_STATS_CHANGES_SQL.format(where=where), *params)

    per_op: dict[str, dict[str, Any]] = {}
    per_transition_seconds: dict[tuple[int, int], list[float]] = {}
    for d in decisions:
        op = per_op.setdefault(d["decided_by"], {"confirm": 0, "reject": 0, "correct": 0, "seconds": []})
        op[d["action"]] += 1
        if d["seconds"] is not None:
            op["seconds"].append(float(d["seconds"]))
            per_transition_seconds.setdefault((d["from_class"], d["to_class"]), []).append(float(d["seconds"]))
    operators = [
        OperatorStats(
            operator=name,
            decided=v["confirm"] + v["reject"] + v["correct"],
            confirmed=v["confirm"],
            rejected=v["reject"],
            corrected=v["correct"],
            confirmed_share=_share(v["confirm"], v["confirm"] + v["reject"] + v["correct"]),
            median_seconds_per_decision=_median(v["seconds"]),
        )
        for name, v in sorted(per_op.items())
    ]
    transitions: dict[tuple[int, int], TransitionStats] = {}
    for r in changes:
        key = (r["from_class"], r["to_class"])
        if key in transitions:  # the same ids under two names (a renamed class): add them up
            t = transitions[key]
            for f in ("changes", "decided", "confirmed", "rejected", "corrected"):
                setattr(t, f, getattr(t, f) + r[f])
            t.confirmed_share = _share(t.confirmed, t.decided)
            continue
        transitions[key] = TransitionStats(
            from_class=r["from_class"],
            from_name=r["from_name"],
            to_class=r["to_class"],
            to_name=r["to_name"],
            changes=r["changes"],
            decided=r["decided"],
            confirmed=r["confirmed"],
            rejected=r["rejected"],
            corrected=r["corrected"],
            confirmed_share=_share(r["confirmed"], r["decided"]),
            median_seconds_per_decision=_median(per_transition_seconds.get(key, [])),
        )
    return Stats(
        operators=operators,
        transitions=list(transitions.values()),
        decided=sum(t.decided for t in transitions.values()),
        changes=sum(t.changes for t in transitions.values()),
        timing=TIMING,
    )
