"""Request and response models of the Validation API (``/api/changes``, ``/api/stats``).

They are the contract's Validation section as pydantic models, so the OpenAPI document says exactly
what the endpoints take and answer (schemathesis checks the answers against it).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ChangeStatus = Literal["detected", "confirmed", "rejected", "corrected"]
NO_NUL = r"^[^\x00]*$"
"""A text that PostgreSQL can store: no NUL character (a 422 names the parameter, never a database error)."""

Action = Literal["confirm", "reject", "correct", "reopen", "comment"]
Order = Literal["priority", "area", "confidence", "date"]
Direction = Literal["asc", "desc"]
Kind = Literal["change", "parcel_check"]


class GeoJSONPolygonal(BaseModel):
    """A GeoJSON Polygon or MultiPolygon in EPSG:4326 (longitude, latitude)."""

    type: Literal["Polygon", "MultiPolygon"]
    coordinates: list[Any] = Field(description="GeoJSON coordinates: rings of [longitude, latitude] positions.")


class GeometryInput(BaseModel):
    """A GeoJSON geometry as sent: checked by the service (a Polygon or MultiPolygon, valid, in EPSG:4326)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="'Polygon' or 'MultiPolygon'.")
    coordinates: Any = Field(description="GeoJSON coordinates in EPSG:4326: [longitude, latitude] positions.")


class ChangeItem(BaseModel):
    """One change of the queue."""

    id: uuid.UUID
    project: str
    season_before: str
    season_after: str
    from_class: int
    from_name: str
    to_class: int
    to_name: str
    area_m2: float = Field(description="Area of the detected polygon (m², in its UTM zone).")
    confidence: float | None = Field(description="Confidence of the detection in [0, 1] (None: unknown).")
    priority: float = Field(description="area_m2 × (1 − confidence); an unknown confidence counts as 0.")
    status: ChangeStatus
    version: int = Field(description="Send it back with a decision: a decision on another version is refused (409).")
    bbox: list[float] = Field(
        min_length=4,
        max_length=4,
        description="[west, south, east, north] (EPSG:4326) of the polygon and its correction.",
    )
    corrected_from_class: int | None = None
    corrected_to_class: int | None = None
    datetime: dt.datetime = Field(description="Start of the after season.")
    updated_at: dt.datetime
    kind: Kind = Field(
        "change",
        description="change: a land cover change between two seasons; parcel_check: a declared parcel whose "
        "predicted crop differs from the declared one (from_class/from_name the declared crop, to_class/to_name the "
        "predicted one, confidence its probability, one season: season_before = season_after).",
    )
    product: str | None = Field(None, description="The map product whose legend the classes are of (None: primary).")
    parcel_id: str | None = Field(None, description="parcel_check: the declaration's parcel id.")


class Counts(BaseModel):
    """Progress over the queue's filters (the status filter aside)."""

    done: int = Field(description="Decided changes: confirmed, rejected or corrected.")
    left: int = Field(description="Changes still to decide (detected).")


class ChangePage(BaseModel):
    """A page of the queue."""

    items: list[ChangeItem]
    total: int = Field(description="Changes matching every filter.")
    counts: Counts
    limit: int
    offset: int
    order: Order
    direction: Direction


class DecisionRecord(BaseModel):
    """One entry of a change's audit trail (``lcms.decisions``; never updated nor deleted)."""

    id: int
    action: str
    decided_by: str
    decided_at: dt.datetime
    previous: dict[str, Any] = Field(description="The change's state before (status, corrections, version).")
    new: dict[str, Any] = Field(description="The change's state after.")
    comment: str | None


class ChangeDetail(ChangeItem):
    """One change with its geometry, corrections and decision history."""

    geometry: GeoJSONPolygonal = Field(description="The detected polygon (EPSG:4326).")
    corrected_from_name: str | None = None
    corrected_to_name: str | None = None
    corrected_geometry: GeoJSONPolygonal | None = Field(None, description="The operator's geometry (EPSG:4326).")
    tiles: list[str]
    run_id: str
    detected_at: dt.datetime
    decisions: list[DecisionRecord] = Field(description="Oldest first; the last one set the current state.")


class DecisionRequest(BaseModel):
    """A decision on one change, made on the version the operator saw."""

    model_config = ConfigDict(extra="forbid")

    action: Action = Field(
        description="confirm (the change is real), reject (false positive: nothing changed), correct (the change is "
        "real but its classes and/or outline are wrong: give from_class, to_class and/or geometry), reopen (back to "
        "detected), comment (a note; the state and version stay)."
    )
    version: int = Field(ge=1, le=2**31 - 1, description="The change's version the decision was made on.")
    from_class: int | None = Field(None, ge=-(2**31), le=2**31 - 1, description="correct: the true before class.")
    to_class: int | None = Field(None, ge=-(2**31), le=2**31 - 1, description="correct: the true after class.")
    geometry: GeometryInput | None = Field(
        None, description="correct: the true outline, a GeoJSON Polygon or MultiPolygon in EPSG:4326."
    )
    comment: str | None = Field(
        None, max_length=4000, pattern=NO_NUL, description="Optional note (required for 'comment')."
    )


class Problem(BaseModel):
    """An error answer: ``detail`` names the problem (a list of them for a malformed request)."""

    detail: str | list[Any]


class Conflict(BaseModel):
    """A decision on a stale version: nothing was written; ``current`` is the change as it is now."""

    detail: str
    current: ChangeDetail


class OperatorStats(BaseModel):
    """One operator's decisions (confirm, reject, correct) on the changes of the filters."""

    operator: str
    decided: int
    confirmed: int
    rejected: int
    corrected: int
    confirmed_share: float | None = Field(description="confirmed / decided (None with no decision).")
    median_seconds_per_decision: float | None = Field(
        description="Median time between this operator's consecutive decisions within a session (see `timing`)."
    )


class TransitionStats(BaseModel):
    """Changes of one detected transition, by their current status."""

    from_class: int
    from_name: str
    to_class: int
    to_name: str
    changes: int
    decided: int
    confirmed: int
    rejected: int
    corrected: int
    confirmed_share: float | None = Field(
        description="confirmed / decided: the change map's user's accuracy for this transition as operators see it."
    )
    median_seconds_per_decision: float | None


class Stats(BaseModel):
    """Validation statistics per operator and per transition."""

    operators: list[OperatorStats]
    transitions: list[TransitionStats]
    decided: int
    changes: int
    timing: str = Field(description="How the time per decision is measured.")
