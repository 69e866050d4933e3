"""``/api/projects``, ``/api/maps/...``, ``/api/imagery/...``, ``/api/pixel``: the viewer's maps and imagery.

* ``GET /api/projects`` — the service's project: products with their legend, seasons (published or not,
  with imagery or not), bounds (EPSG:4326) and the CHANGE band's transition codes with their colours.
* ``GET /api/maps/{season}/{band}/tiles/{z}/{x}/{y}.png`` — WebMercatorQuad PNG of ``CLASS`` (legend
  colours), ``CONFIDENCE`` (grey levels, black 0 % to white 100 %) or ``CHANGE`` (each transition in the
  colour of the class changed into), mosaicked over every published tile of the season.
* ``GET /api/imagery/{season}/dates`` — the acquisition dates with imagery.
* ``GET /api/imagery/{season}/tiles/{z}/{x}/{y}.png?render=true_color|false_color&date=composite|YYYY-MM-DD``
  — the season's cloud-free composite or one date, true colour (B04, B03, B02) or false colour (B08,
  B04, B03), digital numbers 0..3000 (B08: 0..5000) mapped to 0..255.
* ``GET /api/pixel?lon=&lat=&seasons=`` — class, class name and confidence per season at the point, and
  its NDVI series over each season.

Tiles outside the published data answer 204 (no content), always; inside it a PNG, transparent where
there is no data (0 and no-data values are transparent in every band). An unknown season, band or date,
an unpublished season or a point outside every tile answer 404 naming it (so does everything on a
service without a project config: ``/api/projects`` is then ``[]``); a config that does not load, 503.
The rendering lives in :mod:`lcms_service.tiles`, the project's state in :mod:`lcms_service.maps_catalog`.

Auth: every endpoint needs a logged-in user of at least the ``viewer`` role (``require_role("viewer")``
of :mod:`lcms_service.auth`, on :func:`~lcms_service.auth.current_user`): 401 without a session. The
JSON answers get the auth module's ``Cache-Control: private, no-cache``; tiles, which change only when
a season is published again, ``private, max-age=60`` (a browser may keep them, no shared cache may).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from lcms_service.auth import AUTH_RESPONSES, require_role
from lcms_service.maps_catalog import MapsCatalog, MapsError, MapsNotFoundError, MapsUnavailableError
from lcms_service.routers.ogc import ErrorDetail  # one error schema in the OpenAPI document
from lcms_service.tiles import (
    MAX_ZOOM,
    NoDataError,
    color_table,
    confidence_table,
    render_categorical,
    render_imagery,
    tile_in_matrix,
)
from lcms_tasks.publish.imagery import COMPOSITE, COMPOSITE_FILE, date_file

#: The published map bands served as tiles.
MAP_BANDS = ("CLASS", "CONFIDENCE", "CHANGE")
#: Cache-Control of a tile: the user's browser may keep it a minute (tiles change only on republishing).
TILE_CACHE_CONTROL = "private, max-age=60"


class MapsRoute(APIRoute):
    """Routes whose :class:`~lcms_service.maps_catalog.MapsError` becomes a ``{"detail": ...}`` 404 or 503."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except MapsError as err:
                status = 503 if isinstance(err, MapsUnavailableError) else 404
                # an error may go away (a season published meanwhile): no cache keeps it
                return JSONResponse({"detail": str(err)}, status_code=status, headers={"Cache-Control": "no-store"})

        return route


router = APIRouter(
    prefix="/api",
    tags=["Maps and imagery"],
    route_class=MapsRoute,
    dependencies=[Depends(require_role("viewer"))],
    responses=AUTH_RESPONSES,
)
_catalog_lock = threading.Lock()


def maps_catalog(request: Request) -> MapsCatalog:
    """The app's :class:`MapsCatalog` (made on first use from the service settings' ``config``)."""
    state = request.app.state
    catalog: MapsCatalog | None = getattr(state, "maps", None)
    if catalog is None:
        with _catalog_lock:
            catalog = getattr(state, "maps", None)
            if catalog is None:
                store = getattr(state, "store", None)
                settings = getattr(store, "settings", None)
                catalog = MapsCatalog(getattr(settings, "config", None))
                state.maps = catalog
    return catalog


Catalog = Annotated[MapsCatalog, Depends(maps_catalog)]


# -- models ------------------------------------------------------------------------------------------


class LegendEntry(BaseModel):
    """One class of a legend."""

    id: int = Field(description="Class id (the value in CLASS).")
    name: str
    color: str = Field(description="`#rrggbb`.")


class Product(BaseModel):
    """A map product of the project (what its CLASS band holds)."""

    id: str = Field(description="Product name of the config's `products` (e.g. `land_cover`, `crop_type`).")
    legend: list[LegendEntry]
    primary: bool = Field(description="The primary product: change detection and validation work on it.")
    bands: list[str] = Field(description="Its map bands: CLASS, CONFIDENCE and (primary product) CHANGE.")
    published_seasons: list[str] = Field(description="Seasons with at least one published tile of this product.")


class SeasonInfo(BaseModel):
    """One season of the project."""

    id: str
    start: dt.date
    end: dt.date
    published: bool = Field(description="At least one tile of the season is published (map tiles exist).")
    imagery: bool = Field(description="At least one tile of the season has published imagery.")


class Transition(BaseModel):
    """One code of the CHANGE band."""

    model_config = ConfigDict(populate_by_name=True)

    code: int
    from_: int = Field(alias="from", description="Class id before.")
    to: int = Field(description="Class id after.")
    from_name: str
    to_name: str
    color: str = Field(description="`#rrggbb` the CHANGE tiles draw it in (the colour of the class after).")


class ProjectInfo(BaseModel):
    """A project as the viewer needs it."""

    project: str
    products: list[Product]
    seasons: list[SeasonInfo] = Field(description="In time order.")
    bounds: list[float] = Field(min_length=4, max_length=4, description="[west, south, east, north], EPSG:4326.")
    transitions: list[Transition]


class PixelSeason(BaseModel):
    """The published map of one season at a pixel."""

    model_config = ConfigDict(populate_by_name=True)

    class_: int | None = Field(alias="class", description="Class id; null where unmapped or unpublished.")
    class_name: str | None
    confidence: float | None = Field(description="Confidence of the class, 0..1.")
    published: bool = Field(description="Whether the tile is published for the season.")


class NdviPoint(BaseModel):
    """NDVI at one date of the features' regular date grid."""

    date: dt.date
    ndvi: float | None = Field(description="null where the pixel has no valid observation.")


class PixelInfo(BaseModel):
    """What the maps say about one pixel."""

    lon: float
    lat: float
    tile: str = Field(description="The project tile containing the point.")
    product: str = Field(description="The map product the classes are of.")
    seasons: dict[str, PixelSeason]
    ndvi: dict[str, list[NdviPoint]]


PNG_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "A 256 x 256 PNG (RGBA; transparent where no data)."},
    204: {"description": "The tile is outside the published data."},
    404: {"model": ErrorDetail, "description": "Unknown season, band or date; unpublished season; no such tile."},
    503: {"model": ErrorDetail, "description": "The service's project config does not load."},
}
JSON_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorDetail, "description": "Unknown season, or a point outside every tile."},
    503: {"model": ErrorDetail, "description": "The service's project config does not load."},
}

Zoom = Annotated[int, Path(ge=0, le=MAX_ZOOM, description="Zoom level of WebMercatorQuad.")]
ProductQuery = Annotated[
    str | None,
    Query(max_length=64, description="Map product (see `products` of /api/projects); default: the primary one."),
]
Column = Annotated[int, Path(ge=0, description="Tile column.")]
Row = Annotated[int, Path(ge=0, description="Tile row.")]


def _check_tile(z: int, x: int, y: int) -> None:
    if not tile_in_matrix(x, y, z):
        raise MapsNotFoundError(
            f"tile {z}/{x}/{y} is not in WebMercatorQuad (x and y must be below {2**z} at zoom {z})"
        )


def _png(render: Callable[[], bytes]) -> Response:
    headers = {"Cache-Control": TILE_CACHE_CONTROL}
    try:
        return Response(render(), media_type="image/png", headers=headers)
    except NoDataError:
        return Response(status_code=204, headers=headers)


# -- endpoints ---------------------------------------------------------------------------------------


@router.get(
    "/projects",
    response_model=list[ProjectInfo],
    responses={503: JSON_RESPONSES[503]},
    summary="The project: products, legend, seasons, bounds, transitions",
    operation_id="listProjects",
)
def projects(catalog: Catalog) -> list[ProjectInfo]:
    if not catalog.configured:
        return []
    cfg = catalog.config
    legend = [LegendEntry(id=c.id, name=c.name, color=c.color) for c in catalog.legend()]
    colors = {c.id: c.color for c in legend}
    seasons = [
        SeasonInfo(
            id=s,
            start=cfg.seasons[s].start,
            end=cfg.seasons[s].end,
            published=bool(catalog.published(s).tiles),
            imagery=bool(catalog.imagery(s).tiles),
        )
        for s in cfg.season_ids_ordered()
    ]
    transitions = [
        Transition(
            code=c.code,
            from_=c.from_id,
            to=c.to_id,
            from_name=c.from_name,
            to_name=c.to_name,
            color=colors.get(c.to_id, "#ff00ff"),
        )
        for c in catalog.transitions()
    ]
    products = [
        Product(
            id=name,
            legend=legend
            if i == 0
            else [LegendEntry(id=c.id, name=c.name, color=c.color) for c in catalog.legend(name)],
            primary=i == 0,
            bands=list(MAP_BANDS) if i == 0 else [b for b in MAP_BANDS if b != "CHANGE"],
            published_seasons=[s.id for s in seasons if catalog.published(s.id, name).tiles],
        )
        for i, name in enumerate(catalog.products())
    ]
    return [
        ProjectInfo(
            project=cfg.project,
            products=products,
            seasons=seasons,
            bounds=catalog.bounds(),
            transitions=transitions,
        )
    ]


@router.get(
    "/maps/{season}/{band}/tiles/{z}/{x}/{y}.png",
    response_class=Response,
    responses=PNG_RESPONSES,
    summary="A map tile (CLASS, CONFIDENCE or CHANGE) of a season",
    operation_id="getMapTile",
)
def map_tile(
    catalog: Catalog,
    season: Annotated[str, Path(description="Season id.")],
    band: Annotated[str, Path(description="CLASS, CONFIDENCE or CHANGE.")],
    z: Zoom,
    x: Column,
    y: Row,
    product: ProductQuery = None,
) -> Response:
    if band not in MAP_BANDS:
        raise MapsNotFoundError(f"unknown band {band!r}: the maps have {', '.join(MAP_BANDS)}")
    name = catalog.product_name(product)
    if band == "CHANGE" and name != catalog.products()[0]:
        raise MapsNotFoundError(
            f"product {name!r} has no CHANGE band: change detection works on the {catalog.products()[0]} product"
        )
    published = catalog.published_season(season, name)
    _check_tile(z, x, y)
    if band == "CLASS":
        table = color_table({int(c["id"]): str(c["color"]) for c in published.legend})
    elif band == "CHANGE":
        colors = {int(c["id"]): str(c["color"]) for c in published.legend}
        table = color_table({t.code: colors.get(t.to_id, "#ff00ff") for t in published.codes})
    else:
        table = confidence_table()
    filename = f"{band}.tiff"
    return _png(
        lambda: render_categorical(
            published.index, filename, x, y, z, colormap=table, threads=catalog.threads, env=catalog.gdal_env
        )
    )


@router.get(
    "/imagery/{season}/dates",
    response_model=list[str],
    responses=JSON_RESPONSES,
    summary="The acquisition dates with imagery in a season",
    operation_id="listImageryDates",
)
def imagery_dates(catalog: Catalog, season: Annotated[str, Path(description="Season id.")]) -> list[str]:
    return catalog.imagery(season).dates


@router.get(
    "/imagery/{season}/tiles/{z}/{x}/{y}.png",
    response_class=Response,
    responses=PNG_RESPONSES,
    summary="An imagery tile: the season's composite or one date, true or false colour",
    operation_id="getImageryTile",
)
def imagery_tile(
    catalog: Catalog,
    season: Annotated[str, Path(description="Season id.")],
    z: Zoom,
    x: Column,
    y: Row,
    render: Annotated[
        Literal["true_color", "false_color"],
        Query(description="true_color: B04, B03, B02; false_color: B08, B04, B03."),
    ] = "true_color",
    date: Annotated[
        str, Query(description="`composite` (the season's cloud-free median) or an acquisition date YYYY-MM-DD.")
    ] = "composite",
) -> Response:
    imagery = catalog.imagery_season(season)
    if date != COMPOSITE and date not in imagery.dates:
        span = f"{imagery.dates[0]} .. {imagery.dates[-1]}, {len(imagery.dates)} dates" if imagery.dates else "none"
        raise MapsNotFoundError(
            f"no imagery of date {date!r} in season {season} (dates: {span}; see /api/imagery/{season}/dates, "
            f"or use date=composite)"
        )
    _check_tile(z, x, y)
    filename = COMPOSITE_FILE if date == COMPOSITE else date_file(date)
    only = None if date == COMPOSITE else date
    return _png(
        lambda: render_imagery(
            imagery.index, filename, x, y, z, render=render, date=only, threads=catalog.threads, env=catalog.gdal_env
        )
    )


@router.get(
    "/pixel",
    response_model=PixelInfo,
    responses=JSON_RESPONSES,
    summary="Class and confidence per season at a point, and its NDVI series",
    operation_id="getPixel",
)
def pixel(
    catalog: Catalog,
    lon: Annotated[float, Query(ge=-180.0, le=180.0, allow_inf_nan=False, description="Longitude (EPSG:4326).")],
    lat: Annotated[float, Query(ge=-90.0, le=90.0, allow_inf_nan=False, description="Latitude (EPSG:4326).")],
    seasons: Annotated[
        str | None, Query(description="Comma-separated season ids (e.g. `2023,2024`); default: every season.")
    ] = None,
    product: ProductQuery = None,
) -> PixelInfo:
    cfg = catalog.config
    wanted = [s.strip() for s in seasons.split(",") if s.strip()] if seasons else cfg.season_ids_ordered()
    for s in wanted:
        catalog.season(s)
    name = catalog.product_name(product)
    tile, x, y = catalog.locate(lon, lat)
    out_seasons: dict[str, PixelSeason] = {}
    ndvi: dict[str, list[NdviPoint]] = {}
    for s in dict.fromkeys(wanted):
        names = {int(c["id"]): str(c["name"]) for c in catalog.published(s, name).legend}
        found = catalog.class_at(s, tile, x, y, name)
        if found is None:
            out_seasons[s] = PixelSeason(class_=None, class_name=None, confidence=None, published=False)
        else:
            klass, confidence = found
            out_seasons[s] = PixelSeason(
                class_=klass,
                class_name=None if klass is None else names.get(klass),
                confidence=confidence,
                published=True,
            )
        ndvi[s] = [NdviPoint(date=dt.date.fromisoformat(d), ndvi=v) for d, v in catalog.ndvi_series(s, tile, x, y)]
    return PixelInfo(lon=lon, lat=lat, tile=tile.id, product=name, seasons=out_seasons, ndvi=ndvi)
