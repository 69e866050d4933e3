"""The blind assessment mode's queries: labels of sample points (``lcms.accuracy_labels`` and its history).

One row per point per labeller holds the current label; :func:`save_label` inserts it, or updates it
(``version = version + 1``, ``labelled_at`` now) when the labeller labels the point again, and appends
the new version to ``lcms.accuracy_label_history`` in the same transaction (that table's triggers refuse
updates and deletes, as ``lcms.decisions``' do). Every query is parameterised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from lcms_service.assessment_design import StoredLabel


@dataclass(frozen=True)
class LabelKey:
    """Which design a label belongs to."""

    project: str
    season: str
    design_id: str


_UPSERT_SQL = """
INSERT INTO lcms.accuracy_labels AS l
    (project, season, design_id, point_id, labelled_by, reference_class, reference_name, cannot_tell, comment)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (project, season, design_id, point_id, labelled_by) DO UPDATE
SET reference_class = EXCLUDED.reference_class, reference_name = EXCLUDED.reference_name,
    cannot_tell = EXCLUDED.cannot_tell, comment = EXCLUDED.comment,
    version = l.version + 1, labelled_at = now()
RETURNING id, point_id, labelled_by, reference_class, reference_name, cannot_tell, comment, version,
          first_labelled_at, labelled_at
"""
_HISTORY_SQL = """
INSERT INTO lcms.accuracy_label_history
    (label_id, version, labelled_by, labelled_at, reference_class, reference_name, cannot_tell, comment)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
_COLUMNS = (
    "point_id, labelled_by, reference_class, reference_name, cannot_tell, comment, version, first_labelled_at, "
    "labelled_at"
)


async def save_label(
    conn: asyncpg.Connection,
    key: LabelKey,
    point_id: str,
    labelled_by: str,
    *,
    reference_class: int | None,
    reference_name: str | None,
    cannot_tell: bool,
    comment: str | None,
) -> asyncpg.Record:
    """Insert or update ``labelled_by``'s label of ``point_id`` and append the version to the history."""
    async with conn.transaction():
        row = await conn.fetchrow(
            _UPSERT_SQL,
            key.project,
            key.season,
            key.design_id,
            point_id,
            labelled_by,
            reference_class,
            reference_name,
            cannot_tell,
            comment,
        )
        await conn.execute(
            _HISTORY_SQL,
            row["id"],
            row["version"],
            labelled_by,
            row["labelled_at"],
            reference_class,
            reference_name,
            cannot_tell,
            comment,
        )
    return row


async def labels_of(conn: asyncpg.Connection, key: LabelKey, labelled_by: str) -> dict[str, asyncpg.Record]:
    """Point id -> ``labelled_by``'s current label, for the design ``key``."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM lcms.accuracy_labels "
        "WHERE project = $1 AND season = $2 AND design_id = $3 AND labelled_by = $4",
        key.project,
        key.season,
        key.design_id,
        labelled_by,
    )
    return {r["point_id"]: r for r in rows}


async def all_labels(conn: asyncpg.Connection, key: LabelKey) -> list[StoredLabel]:
    """Every labeller's current labels of the design ``key``."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM lcms.accuracy_labels WHERE project = $1 AND season = $2 AND design_id = $3 "
        "ORDER BY point_id, labelled_at, labelled_by",
        key.project,
        key.season,
        key.design_id,
    )
    return [
        StoredLabel(
            point_id=r["point_id"],
            labelled_by=r["labelled_by"],
            reference_name=r["reference_name"],
            cannot_tell=r["cannot_tell"],
            comment=r["comment"],
            labelled_at=r["labelled_at"],
        )
        for r in rows
    ]


async def labelled_points(conn: asyncpg.Connection, key: LabelKey) -> int:
    """How many points of the design ``key`` have a label of anyone."""
    value: Any = await conn.fetchval(
        "SELECT count(DISTINCT point_id) FROM lcms.accuracy_labels WHERE project = $1 AND season = $2 "
        "AND design_id = $3",
        key.project,
        key.season,
        key.design_id,
    )
    return int(value or 0)
