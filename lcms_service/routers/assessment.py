"""The blind assessment mode: operators label the points of a season's accuracy sample design from imagery.

The design is the one the reporting stage reads, ``<project>/<season>/accuracy/`` (``design.json``,
``points.csv``; :mod:`lcms_service.assessment_design`). What this API says of a point is its id, where
it is and its pixel's outline: **never** the map's class, the stratum, the change label, the inclusion
probability or the confidence, so the map cannot steer the label.

* ``GET /api/assessment/designs`` — the seasons with a design, their points and the caller's progress.
* ``GET /api/assessment/{season}`` — the design's legend and blind points, each with the caller's own
  label (or null), and done / left.
* ``POST /api/assessment/{season}/points/{point_id}/label`` — the caller's label of a point: a class of
  the legend (``reference_class``) or ``cannot_tell`` with a comment, made on ``design_id`` (409 when
  the season's design has been redrawn since). One label per point per labeller: labelling again
  updates it; every version is kept in ``lcms.accuracy_label_history``.
* ``POST /api/assessment/{season}/export`` — writes ``labels.csv`` beside the design (temporary name,
  then renamed), in the format ``lcms accuracy assess`` and the reporting stage read, so the next report
  shows the area-adjusted accuracy from the operators' labels.

Roles: reading and labelling need ``validator`` (a viewer gets 403), the export ``admin``; every POST
needs the CSRF header. Labels go through the read-write pool (:mod:`lcms_service.rw`).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any

import anyio.to_thread
import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from lcms_service import assessment_store as store
from lcms_service.assessment_design import (
    DesignNotFoundError,
    DesignProblemError,
    SeasonDesign,
    labels_csv,
    legend_check,
    load_design,
    write_labels,
)
from lcms_service.auth import AUTH_RESPONSES, AUTHENTICATED_CACHE_CONTROL, User, csrf_protect, require_role
from lcms_service.maps_catalog import MapsCatalog
from lcms_service.routers.maps import MapsRoute, maps_catalog
from lcms_service.rw import rw_connection
from lcms_service.validation_models import NO_NUL, Problem

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/assessment", tags=["Assessment"], route_class=MapsRoute, responses=AUTH_RESPONSES)

Labeller = Annotated[User, Depends(require_role("validator"))]
Admin = Annotated[User, Depends(require_role("admin"))]
Catalog = Annotated[MapsCatalog, Depends(maps_catalog)]
RwConnection = Annotated[asyncpg.Connection, Depends(rw_connection)]
SeasonId = Annotated[str, Path(max_length=100, pattern=r"^[A-Za-z0-9_.-]+$", description="Season id.")]
PointId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="Point id of the design.")]
_404 = {"model": Problem, "description": "Unknown season, no design for it, or no such point."}
_503 = {"model": Problem, "description": "The project config or the design cannot be read."}


# -- models ------------------------------------------------------------------------------------------------


class LegendClass(BaseModel):
    """A class a labeller may choose."""

    id: int
    name: str
    key: str | None = Field(description="The keyboard shortcut of the class in the page (1..9), if any.")


class Progress(BaseModel):
    """The caller's points: labelled (a class or cannot tell) and not yet."""

    done: int
    left: int
    total: int


class MyLabel(BaseModel):
    """The caller's current label of a point."""

    reference_class: int | None = Field(description="Class id; null when the labeller cannot tell.")
    reference_name: str | None
    cannot_tell: bool
    comment: str | None
    version: int = Field(description="1 for the first label; each re-label adds one (all versions are kept).")
    labelled_at: dt.datetime


class BlindPoint(BaseModel):
    """A point as a labeller sees it: where it is, nothing the map says about it."""

    model_config = ConfigDict(extra="forbid")

    point_id: str
    lon: float
    lat: float
    pixel: list[list[float]] = Field(description="The pixel's outline: a closed ring of [lon, lat] (EPSG:4326).")
    label: MyLabel | None = Field(description="The caller's own label, null while unlabelled.")


class BlindDesign(BaseModel):
    """A season's design for labelling: its legend and points, blind to the map."""

    model_config = ConfigDict(extra="forbid")

    project: str
    season: str
    design_id: str = Field(description="SHA-256 of design.json and points.csv; labels are made on it.")
    resolution_m: float = Field(description="The map's pixel size (m).")
    legend: list[LegendClass]
    points: list[BlindPoint] = Field(description="In the design's (random) order.")
    progress: Progress


class DesignSummary(BaseModel):
    """A season that has a design."""

    season: str
    design_id: str
    points: int
    labelled_by_anyone: int = Field(description="Points with a label of at least one labeller.")
    progress: Progress = Field(description="The caller's own.")


class LabelRequest(BaseModel):
    """A label: a class of the legend, or cannot tell (then a comment saying why is required)."""

    model_config = ConfigDict(extra="forbid")

    design_id: str = Field(pattern=r"^[0-9a-f]{64}$", description="The design the point was seen in.")
    reference_class: int | None = Field(None, ge=0, le=65535, description="Class id of the legend.")
    cannot_tell: bool = False
    comment: str | None = Field(None, max_length=2000, pattern=NO_NUL)


class LabelAnswer(BaseModel):
    point_id: str
    label: MyLabel
    progress: Progress


class StaleDesign(BaseModel):
    """The season's design changed since the page read it: nothing was written."""

    detail: str
    design_id: str


class ExportAnswer(BaseModel):
    """What the export wrote."""

    uri: str = Field(description="Where labels.csv was written (beside design.json).")
    design_id: str
    points: int
    labelled: int = Field(description="Points with a reference class.")
    cannot_tell: int = Field(description="Points only 'cannot tell' was said of (empty reference).")
    unlabelled: int
    disagreements: int = Field(description="Points labellers gave different classes (the latest is exported).")
    labellers: list[str]


# -- helpers -----------------------------------------------------------------------------------------------


async def season_design(catalog: MapsCatalog, season: str) -> SeasonDesign:
    """The season's design (404 without one, 503 when it cannot be used)."""

    def read() -> SeasonDesign:
        catalog.season(season)  # 404 for a season the project does not have
        return load_design(catalog.storage, catalog.project, season)

    try:
        return await anyio.to_thread.run_sync(read)
    except DesignNotFoundError as err:
        raise HTTPException(404, str(err)) from err
    except DesignProblemError as err:
        raise HTTPException(503, str(err)) from err


def _key(design: SeasonDesign) -> store.LabelKey:
    return store.LabelKey(design.project, design.season, design.design_id)


def _my_label(row: Any) -> MyLabel:
    return MyLabel(
        reference_class=row["reference_class"],
        reference_name=row["reference_name"],
        cannot_tell=row["cannot_tell"],
        comment=row["comment"],
        version=row["version"],
        labelled_at=row["labelled_at"],
    )


def _progress(design: SeasonDesign, mine: dict[str, Any]) -> Progress:
    done = sum(1 for p in design.point_ids if p in mine)
    return Progress(done=done, left=len(design.points) - done, total=len(design.points))


# -- endpoints ---------------------------------------------------------------------------------------------


@router.get(
    "/designs",
    response_model=list[DesignSummary],
    summary="The seasons with an accuracy sample design to label",
    operation_id="listAssessmentDesigns",
    responses={503: _503},
)
async def list_designs(user: Labeller, catalog: Catalog, conn: RwConnection) -> list[DesignSummary]:
    def read_all() -> list[SeasonDesign]:
        found = []
        for season in catalog.config.season_ids_ordered():
            try:
                found.append(load_design(catalog.storage, catalog.project, season))
            except DesignNotFoundError:
                continue
            except DesignProblemError as err:
                log.warning("assessment: season %s: %s", season, err)
        return found

    designs = await anyio.to_thread.run_sync(read_all)
    out = []
    for design in designs:
        mine = await store.labels_of(conn, _key(design), user.name)
        out.append(
            DesignSummary(
                season=design.season,
                design_id=design.design_id,
                points=len(design.points),
                labelled_by_anyone=await store.labelled_points(conn, _key(design)),
                progress=_progress(design, mine),
            )
        )
    return out


@router.get(
    "/{season}",
    response_model=BlindDesign,
    summary="A season's sample points to label, blind to the map",
    operation_id="getAssessmentDesign",
    responses={404: _404, 503: _503},
)
async def get_design(season: SeasonId, user: Labeller, catalog: Catalog, conn: RwConnection) -> BlindDesign:
    design = await season_design(catalog, season)
    mine = await store.labels_of(conn, _key(design), user.name)
    return BlindDesign(
        project=design.project,
        season=design.season,
        design_id=design.design_id,
        resolution_m=design.resolution_m,
        legend=[LegendClass(id=c, name=n, key=str(i + 1) if i < 9 else None) for i, (c, n) in enumerate(design.legend)],
        points=[
            BlindPoint(
                point_id=p.point_id,
                lon=p.lon,
                lat=p.lat,
                pixel=p.pixel,
                label=_my_label(mine[p.point_id]) if p.point_id in mine else None,
            )
            for p in design.points
        ],
        progress=_progress(design, mine),
    )


@router.post(
    "/{season}/points/{point_id}/label",
    response_model=LabelAnswer,
    summary="Label a point: a class of the legend, or cannot tell (with a comment)",
    operation_id="labelAssessmentPoint",
    dependencies=[Depends(csrf_protect)],
    responses={
        400: {"model": Problem, "description": "The body is not JSON."},
        404: _404,
        409: {"model": StaleDesign, "description": "The season's design was redrawn; nothing was written."},
        422: {"model": Problem, "description": "No class and not 'cannot tell', both, an unknown class, no comment."},
        503: _503,
    },
)
async def label_point(
    season: SeasonId, point_id: PointId, body: LabelRequest, user: Labeller, catalog: Catalog, conn: RwConnection
) -> Any:
    comment = (body.comment or "").strip() or None
    if body.cannot_tell and body.reference_class is not None:
        raise HTTPException(422, "give either reference_class or cannot_tell, not both")
    if not body.cannot_tell and body.reference_class is None:
        raise HTTPException(422, "give reference_class (a class of the legend) or cannot_tell: true with a comment")
    if body.cannot_tell and comment is None:
        raise HTTPException(422, "cannot_tell needs a comment saying why (clouds, no imagery, mixed pixel, ...)")
    design = await season_design(catalog, season)
    if body.design_id != design.design_id:
        stale = StaleDesign(
            detail=f"season {season}'s sample design has changed since it was read (design {body.design_id[:12]}…, "
            f"now {design.design_id[:12]}…): nothing was saved; reload the assessment",
            design_id=design.design_id,
        )
        return JSONResponse(
            stale.model_dump(mode="json"), status_code=409, headers={"Cache-Control": AUTHENTICATED_CACHE_CONTROL}
        )
    if point_id not in set(design.point_ids):
        raise HTTPException(404, f"season {season}'s design has no point {point_id!r}")
    name = None
    if body.reference_class is not None:
        try:
            name = legend_check(design, body.reference_class)
        except ValueError as err:
            raise HTTPException(422, str(err)) from err
    row = await store.save_label(
        conn,
        _key(design),
        point_id,
        user.name,
        reference_class=body.reference_class,
        reference_name=name,
        cannot_tell=body.cannot_tell,
        comment=comment,
    )
    mine = await store.labels_of(conn, _key(design), user.name)
    log.info("assessment: %r labelled point %s of season %s (version %d)", user.name, point_id, season, row["version"])
    return LabelAnswer(point_id=point_id, label=_my_label(row), progress=_progress(design, mine))


@router.post(
    "/{season}/export",
    response_model=ExportAnswer,
    summary="Write the season's labels.csv beside its design (for `lcms accuracy assess` and the report)",
    operation_id="exportAssessmentLabels",
    dependencies=[Depends(csrf_protect)],
    responses={404: _404, 503: _503},
)
async def export_labels(season: SeasonId, user: Admin, catalog: Catalog, conn: RwConnection) -> ExportAnswer:
    design = await season_design(catalog, season)
    labels = await store.all_labels(conn, _key(design))
    data, summary = labels_csv(design, labels)
    uri = await anyio.to_thread.run_sync(write_labels, catalog.storage, design, data)
    log.info(
        "assessment: %r exported %d labelled point(s) of %d of season %s to %s",
        user.name,
        summary.labelled,
        summary.points,
        season,
        uri,
    )
    return ExportAnswer(
        uri=uri,
        design_id=design.design_id,
        points=summary.points,
        labelled=summary.labelled,
        cannot_tell=summary.cannot_tell,
        unlabelled=summary.unlabelled,
        disagreements=summary.disagreements,
        labellers=summary.labellers,
    )
