"""OGC API Features (Part 1 core, Part 3 CQL2 filtering) and OGC API Tiles (Mapbox vector tiles) of the changes.

tipg's endpoint factory builds the routes; this module chooses what they serve: the one change
collection (see :mod:`lcms_service.changes`), the tile matrix sets a web map and GDAL use
(``WebMercatorQuad``, ``WorldCRS84Quad``), tipg's HTML pages and its tile viewer. It also replaces
tipg's parsers of ``bbox``, ``datetime`` and ``filter`` (:data:`DEPENDENCY_OVERRIDES`: same parameters,
so the OpenAPI document is unchanged) with ones that answer a malformed value with a 400 naming it
instead of a 500, and documents the error answers (:data:`ERROR_RESPONSES`). Mounted under
:data:`OGC_PREFIX`: ``/ogc/``, ``/ogc/conformance``, ``/ogc/collections/lcms.changes/items``,
``/ogc/collections/lcms.changes/tiles/WebMercatorQuad/{z}/{x}/{y}``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import jinja2
import morecantile
from ciso8601 import parse_rfc3339
from cql2 import Expr
from fastapi import APIRouter, Query, Request
from morecantile.defaults import TileMatrixSets
from pydantic import BaseModel
from starlette.templating import Jinja2Templates
from tipg import dependencies as tipg_dependencies
from tipg import factory as tipg_factory
from tipg.extensions.viewer import viewerExtension
from tipg.factory import Endpoints, OGCFeaturesFactory, OGCTilesFactory

from lcms_service.changes import InvalidFilterError, make_collection_dependency, parse_filter
from lcms_service.settings import ServiceSettings

OGC_PREFIX = "/ogc"
#: Tile matrix sets of the vector tiles: web maps (MapLibre, QGIS's XYZ) and the CRS84 quad.
SUPPORTED_TMS = TileMatrixSets({name: morecantile.tms.get(name) for name in ("WebMercatorQuad", "WorldCRS84Quad")})


_tipg_csv_rows = tipg_factory.create_csv_rows


def _csv_rows(data: Iterable[dict[Any, Any]]) -> Generator[str, None, None]:
    """tipg's CSV writer, except that no rows make an empty body (tipg's raises StopIteration: a 500)."""
    rows = iter(data)
    first = next(rows, None)
    if first is None:
        return
    yield from _tipg_csv_rows(itertools.chain([first], rows))


# tipg's items route looks create_csv_rows up in its module at each request: an empty result as ?f=csv
# gets the version above (tipg 1.6.1 fails on it).
tipg_factory.create_csv_rows = _csv_rows


class _TemplatedUrls:
    """tipg's ``url_for`` with each route's path template resolved once, not on every call.

    tipg builds two links per feature with ``url_for``, which walks the router and parses URLs each
    time: on a page of 1,000 features that was most of the request's time. The result is the same URL:
    the base URL (with the mount point) + the router prefix + the route's path with its parameters put
    in (Starlette's default ``str`` path convertor writes values as they are).
    """

    router: APIRouter
    router_prefix: str

    def url_for(self, request: Request, name: str, **path_params: Any) -> str:
        templates: dict[tuple[str, ...], str] = self.__dict__.setdefault("_url_templates", {})
        key = (name, *path_params)  # keyword order is fixed at each call site
        template = templates.get(key)
        if template is None:
            template = str(self.router.url_path_for(name, **{k: f"{{{k}}}" for k in path_params}))
            templates[key] = template
        path = template
        for k, v in path_params.items():
            path = path.replace(f"{{{k}}}", str(v))
        return str(request.base_url).rstrip("/") + self.router_prefix + path


@dataclass
class _Features(_TemplatedUrls, OGCFeaturesFactory):
    pass


@dataclass
class _Tiles(_TemplatedUrls, OGCTilesFactory):
    pass


@dataclass
class _Endpoints(_TemplatedUrls, Endpoints):
    """tipg's Features + Tiles endpoints, built from the factories above (as ``Endpoints.register_routes``)."""

    def register_routes(self) -> None:
        self.ogc_features = _Features(
            collections_dependency=self.collections_dependency,
            collection_dependency=self.collection_dependency,
            router_prefix=self.router_prefix,
            templates=self.templates,
            with_common=False,
        )
        self.router.include_router(self.ogc_features.router)
        self.ogc_tiles = _Tiles(
            collection_dependency=self.collection_dependency,
            router_prefix=self.router_prefix,
            templates=self.templates,
            supported_tms=self.supported_tms,
            with_viewer=self.with_tiles_viewer,
            with_common=False,
        )
        self.router.include_router(self.ogc_tiles.router)


def ogc_router(settings: ServiceSettings) -> APIRouter:
    """The OGC API's routes (to include under :data:`OGC_PREFIX`)."""
    templates = Jinja2Templates(env=jinja2.Environment(loader=jinja2.PackageLoader("tipg", "templates")))
    endpoints = _Endpoints(
        title=settings.title,
        router_prefix=OGC_PREFIX,
        templates=templates,
        collection_dependency=make_collection_dependency(SUPPORTED_TMS),
        supported_tms=SUPPORTED_TMS,
        with_tiles_viewer=True,
        extensions=[viewerExtension()],
    )
    return endpoints.router


class ErrorDetail(BaseModel):
    """An error: what was wrong and, where there is one, what to do."""

    detail: str


#: Media type of each value of tipg's ``f`` parameter.
FORMAT_MEDIA_TYPES = {
    "json": "application/json",
    "html": "text/html",
    "geojson": "application/geo+json",
    "csv": "text/csv",
    "geojsonseq": "application/geo+json-seq",
    "ndjson": "application/ndjson",
    "schemajson": "application/schema+json",
}


def document_output_formats(document: dict[str, Any]) -> None:
    """Add to each operation's 200 answer the media types its ``f`` parameter offers.

    Some tipg routes answer ``f=html`` with HTML but document JSON only (e.g. a collection's tilesets).
    """
    for path in document.get("paths", {}).values():
        operation = path.get("get")
        if not operation or "200" not in operation.get("responses", {}):
            continue
        formats = [
            value
            for param in operation.get("parameters", [])
            if param.get("name") == "f" and param.get("in") == "query"
            for value in param.get("schema", {}).get("enum", [])
            if value
        ]
        content = operation["responses"]["200"].setdefault("content", {})
        for value in formats:
            content.setdefault(FORMAT_MEDIA_TYPES.get(value, value), {})


def _error(description: str) -> dict[str, Any]:
    # "model" registers the schema (FastAPI files it under the route's media type, e.g. application/geo+json);
    # "content" says what the error handlers actually send: JSON.
    ref = {"$ref": "#/components/schemas/ErrorDetail"}
    return {"model": ErrorDetail, "description": description, "content": {"application/json": {"schema": ref}}}


#: Error answers of every OGC route (documented, so clients and schemathesis know them).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("A parameter or filter the collection cannot evaluate."),
    404: _error("No such collection, item, property, column or tile."),
    503: _error("The change store is unavailable, or the query took too long."),
}


def bbox_query(
    bbox: Annotated[str | None, Query(description="Spatial Filter.")] = None,
) -> list[float] | None:
    """tipg's ``bbox`` parameter, parsed strictly: 4 or 6 finite numbers, west <= east, south <= north (CRS84)."""
    if not bbox:
        return None
    try:
        bounds = [float(v) for v in bbox.split(",")]
    except ValueError as err:
        raise InvalidFilterError(f"bbox {bbox!r}: expected 4 (or 6) comma-separated numbers") from err
    if len(bounds) not in (4, 6) or not all(math.isfinite(v) for v in bounds):
        raise InvalidFilterError(f"bbox {bbox!r}: expected 4 (or 6) comma-separated finite numbers")
    west, south, east, north = (bounds[0], bounds[1], bounds[3], bounds[4]) if len(bounds) == 6 else bounds
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= 90 and -90 <= north <= 90):
        raise InvalidFilterError(f"bbox {bbox!r}: longitudes must lie in [-180, 180] and latitudes in [-90, 90]")
    if west > east or south > north:
        raise InvalidFilterError(
            f"bbox {bbox!r}: west must not exceed east nor south north (boxes across the antimeridian are "
            "not supported)"
        )
    return bounds


def datetime_query(
    datetime: Annotated[str | None, Query(description="Temporal Filter.")] = None,
) -> list[str] | None:
    """tipg's ``datetime`` parameter, checked: an RFC 3339 instant or an interval ``start/end`` (``..`` open)."""
    if not datetime:
        return None
    parts = datetime.split("/")
    if len(parts) > 2:
        raise InvalidFilterError(f"datetime {datetime!r}: an instant or one interval START/END")
    for part in parts:
        if len(parts) == 2 and part in ("", ".."):
            continue
        try:
            parse_rfc3339(part)
        except ValueError as err:
            raise InvalidFilterError(
                f"datetime {datetime!r}: {part!r} is not an RFC 3339 date-time (e.g. 2024-03-01T00:00:00Z)"
            ) from err
    return parts


def filter_query(
    query: Annotated[str | None, Query(description="CQL2 Filter", alias="filter")] = None,
    filter_lang: Annotated[
        Literal["cql2-text", "cql2-json"] | None,
        Query(description="CQL2 Language (cql2-text, cql2-json). Defaults to cql2-text.", alias="filter-lang"),
    ] = None,
) -> Expr | None:
    """tipg's ``filter`` parameter, a 400 (not a 500) when it is not CQL2."""
    return parse_filter(query, filter_lang)


#: Stricter versions of tipg's parameter parsers, with the same parameters (the OpenAPI document is tipg's).
DEPENDENCY_OVERRIDES: dict[Any, Any] = {
    tipg_dependencies.bbox_query: bbox_query,
    tipg_dependencies.datetime_query: datetime_query,
    tipg_dependencies.filter_query: filter_query,
}
