"""The Validation API: the queue of detected changes, one change with its history, decisions, statistics.

* ``GET /api/changes`` — the queue: filters (project, seasons, transition, region of the AOI,
  status, confidence and area ranges), order (priority = area × (1 − confidence), the default;
  area; confidence; date), a page of items, the total and the done/left counts. Needs ``viewer``.
* ``GET /api/changes/{id}`` — the change with its geometry, corrections and decisions. ``viewer``.
* ``POST /api/changes/{id}/decisions`` — confirm, reject, correct (classes and/or geometry),
  reopen or comment, made on the version the operator saw: 200 the updated change; 409 with the
  current state on a stale version (nothing written); 422 naming the problem (an invalid, empty,
  non-polygonal geometry, one outside the project's AOI or in projected coordinates; a class not in
  the legend; a correction that corrects nothing). Needs ``validator`` and the CSRF header.
* ``GET /api/stats`` — per operator and per transition: decided, confirmed share, median seconds
  per decision (see :mod:`lcms_service.validation_store` for how time is measured). ``viewer``.

Reads go through the read-only pool of the change store (:mod:`lcms_service.database`), decisions
through the read-write one (:mod:`lcms_service.rw`), in one transaction each
(:func:`lcms_service.validation_store.decide`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse

from lcms_service import validation_store as store
from lcms_service.auth import AUTH_RESPONSES, AUTHENTICATED_CACHE_CONTROL, User, csrf_protect, require_role
from lcms_service.database import DatabaseUnavailableError
from lcms_service.rw import rw_connection
from lcms_service.validation_models import (
    NO_NUL,
    ChangeDetail,
    ChangePage,
    ChangeStatus,
    Conflict,
    DecisionRequest,
    Direction,
    Kind,
    Order,
    Problem,
    Stats,
)
from lcms_service.validation_project import GeometryProblemError, ProjectInfo, check_geometry, project_info

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["Validation"], responses=AUTH_RESPONSES)

Viewer = Annotated[User, Depends(require_role("viewer"))]
Validator = Annotated[User, Depends(require_role("validator"))]
ChangeId = Annotated[uuid.UUID, Path(description="The change's id.")]
_422 = {"model": Problem, "description": "A parameter or body the service cannot use; `detail` names it."}
_404 = {"model": Problem, "description": "No change with this id."}


async def ro_connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """Dependency: a connection of the read-only pool (503 while the change store is down)."""
    state = request.app.state.store
    if state.pool is None:
        due = time.monotonic() - state.last_attempt >= state.settings.retry_interval_s
        if not due or not await state.connect() or state.pool is None:
            raise DatabaseUnavailableError(state.error or "the change store is not connected")
    async with state.pool.acquire() as conn:
        yield conn


RoConnection = Annotated[asyncpg.Connection, Depends(ro_connection)]
RwConnection = Annotated[asyncpg.Connection, Depends(rw_connection)]


KindQuery = Annotated[
    Kind,
    Query(
        description="change: land cover changes (the default); parcel_check: declared parcels whose predicted crop "
        "differs from the declared one (from = declared, to = predicted; confirm: the prediction is right, reject: "
        "the declaration is right, correct: another crop, with to_class)."
    ),
]


def _legends(info: ProjectInfo) -> dict[str, dict[int, str]]:
    """:func:`store.legend_key` -> legend, for the project the config knows: its changes' (the primary product's)
    and each product's parcel checks' (other projects fall back to the classes their rows use)."""
    if not info.project or not info.legend:
        return {}
    return {
        info.project: info.legend,
        **{store.legend_key(info.project, name): legend for name, legend in info.product_legends.items()},
    }


def _range(name: str, low: float | None, high: float | None) -> None:
    if low is not None and high is not None and low > high:
        raise HTTPException(422, f"min_{name} ({low:g}) is greater than max_{name} ({high:g})")


@router.get(
    "/changes",
    response_model=ChangePage,
    summary="The queue of changes to validate",
    operation_id="listChanges",
    responses={422: _422},
)
async def list_changes(
    request: Request,
    user: Viewer,
    conn: RoConnection,
    project: Annotated[str | None, Query(max_length=200, pattern=NO_NUL, description="Project name.")] = None,
    kind: KindQuery = "change",
    product: Annotated[
        str | None, Query(max_length=64, pattern=NO_NUL, description="Parcel checks of this map product only.")
    ] = None,
    season_before: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
    season_after: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
    status: Annotated[
        list[ChangeStatus] | None, Query(description="Only changes of these statuses (repeat the parameter).")
    ] = None,
    from_class: Annotated[int | None, Query(ge=0, le=255, description="Transition: the detected before class.")] = None,
    to_class: Annotated[int | None, Query(ge=0, le=255, description="Transition: the detected after class.")] = None,
    region: Annotated[
        str | None,
        Query(max_length=200, pattern=NO_NUL, description="An AOI region (the config's `aoi.region_column`)."),
    ] = None,
    min_confidence: Annotated[float | None, Query(ge=0, le=1)] = None,
    max_confidence: Annotated[float | None, Query(ge=0, le=1)] = None,
    min_area_m2: Annotated[float | None, Query(ge=0, le=1e15)] = None,
    max_area_m2: Annotated[float | None, Query(ge=0, le=1e15)] = None,
    order: Annotated[
        Order,
        Query(
            description="priority (area × (1 − confidence), largest first), area (largest first), confidence "
            "(least confident first) or date (newest after season first)."
        ),
    ] = "priority",
    direction: Annotated[Direction | None, Query(description="Override the order's direction.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> ChangePage:
    _range("confidence", min_confidence, max_confidence)
    _range("area_m2", min_area_m2, max_area_m2)
    region_wkb: bytes | None = None
    if region is not None:
        info = await project_info(request.app.state)
        if project is not None and info.project is not None and project != info.project:
            raise HTTPException(422, f"region {region!r}: regions are those of project {info.project!r} only")
        try:
            region_wkb = info.region_wkb(region)
        except LookupError as err:
            raise HTTPException(422, str(err.args[0])) from err
        project = project or info.project
    filters = store.QueueFilter(
        project=project,
        kind=kind,
        product=product,
        season_before=season_before,
        season_after=season_after,
        status=status,
        from_class=from_class,
        to_class=to_class,
        region_wkb=region_wkb,
        min_confidence=min_confidence,
        max_confidence=max_confidence,
        min_area_m2=min_area_m2,
        max_area_m2=max_area_m2,
    )
    return await store.queue(conn, filters, order=order, direction=direction, limit=limit, offset=offset)


@router.get(
    "/changes/{change_id}",
    response_model=ChangeDetail,
    summary="One change with its geometry and decisions",
    operation_id="getChange",
    responses={404: _404, 422: _422},
)
async def get_change(request: Request, change_id: ChangeId, user: Viewer, conn: RoConnection) -> ChangeDetail:
    info = await project_info(request.app.state)
    try:
        return await store.change_detail(conn, change_id, legends=_legends(info))
    except store.ChangeNotFoundError as err:
        raise HTTPException(404, str(err)) from err


@router.post(
    "/changes/{change_id}/decisions",
    response_model=ChangeDetail,
    summary="Decide a change: confirm, reject, correct (or reopen, comment)",
    operation_id="decideChange",
    dependencies=[Depends(csrf_protect)],
    responses={
        400: {"model": Problem, "description": "The body is not JSON."},
        404: _404,
        409: {"model": Conflict, "description": "The decision was made on a stale version; nothing was written."},
        422: _422,
    },
)
async def decide_change(
    request: Request, change_id: ChangeId, body: DecisionRequest, user: Validator, conn: RwConnection
) -> Any:
    geometry = None
    if body.geometry is not None:
        try:
            geometry = check_geometry(body.geometry.model_dump())
        except GeometryProblemError as err:
            raise HTTPException(422, str(err)) from err
    info = await project_info(request.app.state)
    decision = store.Decision(
        action=body.action,
        version=body.version,
        decided_by=user.name,
        from_class=body.from_class,
        to_class=body.to_class,
        geometry=geometry,
        comment=body.comment,
    )
    try:
        detail, decision_id = await store.decide(
            conn, change_id, decision, legends=_legends(info), check_geometry=info.check_in_aoi
        )
    except store.ChangeNotFoundError as err:
        raise HTTPException(404, str(err)) from err
    except store.StaleVersionError as err:
        log.info("decision %s on change %s by %r refused: %s", body.action, change_id, user.name, err)
        conflict = Conflict(detail=str(err), current=err.current)
        return JSONResponse(
            conflict.model_dump(mode="json"), status_code=409, headers={"Cache-Control": AUTHENTICATED_CACHE_CONTROL}
        )
    except (store.DecisionProblemError, GeometryProblemError) as err:
        raise HTTPException(422, str(err)) from err
    log.info("decision %d: %s change %s by %r", decision_id, body.action, change_id, user.name)
    return detail


@router.get(
    "/stats",
    response_model=Stats,
    summary="Validation statistics per operator and per transition",
    operation_id="validationStats",
)
async def validation_stats(
    user: Viewer,
    conn: RoConnection,
    project: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
    season_before: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
    season_after: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
    kind: KindQuery = "change",
) -> Stats:
    return await store.stats(conn, project=project, season_before=season_before, season_after=season_after, kind=kind)
