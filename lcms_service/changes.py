"""The change polygons as one tipg collection: what it exposes, how filters are checked, how it is catalogued.

tipg serves any PostGIS table it finds; this module narrows that to the change store's table
(``lcms.changes``) and hardens the three ways a request reaches SQL:

* **CQL2** (``filter=``): cql2 turns any unknown function name into an SQL function call
  (``query_to_xml('select * from lcms.decisions', ...)`` would run), so every operator must be one of
  OGC API Features Part 3's and every property a column of the collection; ``BBOX(...)`` literals become
  polygons in CRS84 (cql2 would emit an SRID-0 envelope that PostGIS refuses to compare).
* **property filters** (``status=confirmed``, ``from_class=2``, ``tiles=<tile id>``): values are parsed
  to the column's type (a bad value is a 400 naming the property, not a database error); on array
  columns they mean "contains".
* **LCMS filters** declared by :func:`changes_collection` (and so documented in the OpenAPI):
  ``season``, ``transition``, ``min_confidence``, ``min_area_m2``, plus typed declarations of the
  property filters above.

The collection's extent is that of its primary geometry (``geom``) and its datetime (``datetime``: the
after season's start), not of every geometry and timestamp column.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import re
import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from cql2 import Expr
from fastapi import HTTPException, Path, Query, Request
from morecantile.defaults import TileMatrixSets
from pydantic import Field
from tipg.collections import Catalog, Collection, PgCollection, pg_get_collection_index
from tipg.errors import MissingCollectionCatalog, NotFound
from tipg.model import Extent
from tipg.settings import DatabaseSettings

log = logging.getLogger(__name__)

GEOMETRY_COLUMN = "geom"
DATETIME_COLUMN = "datetime"
ID_COLUMN = "id"

#: OGC API Features Part 3 (CQL2) operators the service evaluates; anything else in a filter is refused.
CQL2_OPERATORS = frozenset(
    {
        *("and", "or", "not", "=", "<>", "<", "<=", ">", ">=", "like", "between", "in", "isNull", "casei"),
        *("s_intersects", "s_equals", "s_disjoint", "s_touches", "s_within", "s_overlaps", "s_crosses"),
        "s_contains",
        *("t_after", "t_before", "t_contains", "t_disjoint", "t_during", "t_equals", "t_finishedby"),
        *("t_finishes", "t_intersects", "t_meets", "t_metby", "t_overlappedby", "t_overlaps", "t_startedby"),
        "t_starts",
        *("a_equals", "a_contains", "a_containedby", "a_overlaps"),
        *("+", "-", "*", "/", "%", "div", "^"),
    }
)
_LITERAL_KEYS = ("timestamp", "date", "interval")
_GEOJSON_TYPES = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon", "GeometryCollection"}
)
_INT_TYPES = frozenset({"smallint", "integer", "bigint", "smallserial", "serial", "bigserial"})
_FLOAT_TYPES = frozenset({"real", "float8", "double precision", "numeric", "decimal"})


class ChangeStatus(StrEnum):
    """Where a change stands in the operators' review."""

    detected = "detected"
    confirmed = "confirmed"
    rejected = "rejected"
    corrected = "corrected"


class InvalidFilterError(HTTPException):
    """A filter the collection cannot evaluate (400, with the reason)."""

    def __init__(self, detail: str) -> None:
        super().__init__(status_code=400, detail=detail)


def check_cql2(node: Any, properties: set[str]) -> Any:
    """``node`` (cql2-json) with only known operators and properties, BBOX literals made CRS84 polygons.

    Raises :class:`InvalidFilterError` naming the first unknown operator or property.
    """
    if isinstance(node, list):
        return [check_cql2(item, properties) for item in node]
    if not isinstance(node, dict):
        return node
    if "op" in node:
        op = node["op"]
        if op not in CQL2_OPERATORS:
            raise InvalidFilterError(
                f"filter: unsupported function or operator {op!r} (CQL2 comparison, spatial, temporal and array "
                "operators only)"
            )
        return {"op": op, "args": check_cql2(node.get("args", []), properties)}
    if "property" in node:
        name = node["property"]
        if name not in properties:
            raise InvalidFilterError(
                f"filter: unknown property {name!r}; queryable properties: {', '.join(sorted(properties))}"
            )
        return {"property": name}
    if "bbox" in node:
        box = node["bbox"]
        if len(box) == 6:
            box = [box[0], box[1], box[3], box[4]]
        if len(box) != 4:
            raise InvalidFilterError(f"filter: BBOX takes 4 or 6 numbers, got {len(node['bbox'])}")
        w, s, e, n = (float(v) for v in box)
        return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    if node.get("type") in _GEOJSON_TYPES:
        _check_geometry(node)
        return node
    if any(key in node for key in _LITERAL_KEYS):
        return node
    raise InvalidFilterError(f"filter: unsupported expression {str(node)[:200]}")


def _check_geometry(node: dict[str, Any]) -> None:
    """A 400 for a geometry literal GEOS would refuse (too few points, self-intersecting rings)."""
    import json

    import shapely

    try:
        geom = shapely.from_geojson(json.dumps(node))
    except (shapely.errors.GEOSException, ValueError, TypeError) as err:
        raise InvalidFilterError(f"filter: geometry literal is not valid GeoJSON/WKT: {err}") from err
    if not shapely.is_valid(geom):
        raise InvalidFilterError(f"filter: geometry literal is not valid: {shapely.is_valid_reason(geom)}")


def parse_filter(text: str | None, lang: str | None) -> Expr | None:
    """Parse a ``filter`` query parameter (cql2-text or cql2-json), as a 400 when it is not CQL2."""
    if text is None:
        return None
    try:
        # Through cql2-json: geometry literals then carry SRID 4326 in the SQL (see tipg's filter_query).
        return Expr(Expr(text).to_json())
    except Exception as err:  # cql2 raises plain Exception (and ValueError) on syntax errors
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InvalidFilterError(f"filter is not valid {lang or 'cql2-text'}: {first}") from err


class ChangesCollection(PgCollection):
    """``lcms.changes`` as tipg serves it, with checked filters and the LCMS filters of one request."""

    extra_filters: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def extent(self) -> Extent | None:
        extent: dict[str, Any] = {}
        geom = self.geometry_column
        if geom is not None and geom.bounds:
            extent["spatial"] = {"bbox": [geom.bounds], "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}
        when = self.datetime_column
        if when is not None and (when.mindt or when.maxdt):
            extent["temporal"] = {"interval": [[when.mindt, when.maxdt]]}
        return Extent(**extent) if extent else None

    def cql_where(
        self,
        ids: list[str] | None = None,
        datetime: list[str] | None = None,
        bbox: list[float] | None = None,
        properties: list[tuple[str, Any]] | None = None,
        cql: Expr | None = None,
        geom: str | None = None,
        dt: str | None = None,
        tile: Any = None,
        tms: Any = None,
    ) -> Expr | None:
        names = {c.name for c in self.properties}
        exprs: list[dict[str, Any]] = []
        if cql is not None:
            exprs.append(check_cql2(cql.to_json(), names))
        for prop, value in properties or []:
            exprs.append(self._property_filter(prop, value))
        exprs.extend(self.extra_filters)
        if ids:
            for value in ids:
                if self.id_column is not None and self.id_column.type == "uuid" and not _is_uuid(value):
                    raise NotFound(f"Item {value!r} does not exist in {self.id} (ids are UUIDs).")
        combined: Expr | None = None
        if exprs:
            combined = Expr(exprs[0] if len(exprs) == 1 else {"op": "and", "args": exprs})
        return super().cql_where(
            ids=ids, datetime=datetime, bbox=bbox, properties=None, cql=combined, geom=geom, dt=dt, tile=tile, tms=tms
        )

    def _property_filter(self, prop: str, value: str) -> dict[str, Any]:
        column = self.get_column(prop)
        if column is None:
            raise InvalidFilterError(f"unknown property {prop!r}")
        arg = {"property": prop}
        kind = column.type
        try:
            if kind.endswith("[]"):
                return {"op": "a_contains", "args": [arg, [value]]}
            if kind in _INT_TYPES:
                number = int(value)
                if not -(2**63) <= number < 2**63:
                    raise ValueError(value)
                return {"op": "=", "args": [arg, number]}
            if kind in _FLOAT_TYPES:
                real = float(value)
                if not math.isfinite(real):
                    raise ValueError(value)
                return {"op": "=", "args": [arg, real]}
            if kind == "uuid":
                return {"op": "=", "args": [arg, str(uuid.UUID(value))]}
            if kind in ("timestamp", "timestamptz"):
                dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
                return {"op": "=", "args": [arg, {"timestamp": value}]}
            if kind.startswith("bool"):
                if value.lower() not in ("true", "false"):
                    raise ValueError(value)
                return {"op": "=", "args": [arg, value.lower() == "true"]}
        except ValueError as err:
            raise InvalidFilterError(f"property filter {prop}={value!r}: not a valid {kind}") from err
        if column.is_geometry:
            raise InvalidFilterError(f"property filter {prop}: a geometry; filter it with bbox or a CQL2 filter")
        return {"op": "=", "args": [arg, value]}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def as_changes_collection(col: Collection) -> ChangesCollection:
    """tipg's catalog entry of the change table, as a :class:`ChangesCollection` with its columns chosen."""
    data = col.model_dump(by_alias=True)
    data["title"] = "Land cover changes"
    data["description"] = data.get("description") or (
        "Land cover change polygons detected between two seasons, with their review status "
        "(detected, confirmed, rejected, corrected)."
    )
    columns = {c["name"]: c for c in data["table_columns"]}
    for key, name in (("geometry_column", GEOMETRY_COLUMN), ("datetime_column", DATETIME_COLUMN)):
        if name in columns:
            data[key] = columns[name]
    if ID_COLUMN in columns:
        data["id_column"] = columns[ID_COLUMN]
    return ChangesCollection.model_validate(data)


async def load_catalog(pool: Any, collection_id: str) -> Catalog:
    """The catalog tipg's endpoints read (``app.state.collection_catalog``): only ``collection_id``."""
    schema = collection_id.partition(".")[0]
    settings = DatabaseSettings(
        schemas=[schema],
        tables=[collection_id],
        functions=[],  # functions of the schema are not collections: an empty list matches none
        only_spatial_tables=True,
        spatial_extent=True,
        datetime_extent=True,
    )
    async with pool.acquire() as conn:
        found = await pg_get_collection_index(conn, settings=settings)
    collections = {c.id: as_changes_collection(c) for c in found if c.id == collection_id}
    if not collections:
        log.warning("the database has no table %s: run `lcms db upgrade` on it (no collection)", collection_id)
    return Catalog(collections=collections, last_updated=dt.datetime.now())  # type: ignore[typeddict-item]


_INT4_MAX = 2**31 - 1  # class ids are PostgreSQL integers
_TRANSITION = re.compile(r"^(\d{1,9})-(\d{1,9})$")


def _tile_in_matrix(request: Request, supported_tms: TileMatrixSets) -> None:
    """A 404 for a tile outside its tile matrix set (morecantile would extrapolate or fail)."""
    params = request.path_params
    if not {"z", "x", "y", "tileMatrixSetId"} <= params.keys():
        return
    try:
        tms = supported_tms.get(params["tileMatrixSetId"])
        z, x, y = int(params["z"]), int(params["x"]), int(params["y"])
    except Exception:  # an unknown tile matrix set or a non-integer index: FastAPI's validation answers
        return
    if not tms.minzoom <= z <= tms.maxzoom:
        raise NotFound(f"zoom {z} is outside {tms.id} (zooms {tms.minzoom}-{tms.maxzoom})")
    matrix = tms.matrix(z)
    if not (0 <= x < matrix.matrixWidth and 0 <= y < matrix.matrixHeight):
        raise NotFound(f"tile {z}/{x}/{y} is outside {tms.id} at zoom {z}")


def _check_query_numbers(request: Request, supported_tms: TileMatrixSets) -> None:
    """400s for what tipg would pass on unchecked: NUL characters, ``simplify``, ``minzoom``, ``maxzoom``."""
    query = request.query_params
    for name, value in query.multi_items():
        if "\x00" in value:  # PostgreSQL text cannot hold NUL: the server would drop the connection
            raise InvalidFilterError(f"query parameter {name!r}: NUL characters are not allowed")
    if (raw := query.get("simplify")) is not None:
        try:
            tolerance = float(raw)
        except ValueError:
            tolerance = 0.0  # not a number: FastAPI's own validation answers
        if not math.isfinite(tolerance) or tolerance < 0:
            raise InvalidFilterError(f"simplify={raw!r}: the tolerance must be a finite number >= 0")
    lowest, highest = 0, 30  # TileJSON's range
    with contextlib.suppress(Exception):  # an unknown tile matrix set: FastAPI's validation answers
        tms = supported_tms.get(request.path_params["tileMatrixSetId"])
        lowest, highest = tms.minzoom, tms.maxzoom
    for name in ("minzoom", "maxzoom"):
        if (raw := query.get(name)) is None:
            continue
        try:
            zoom = int(raw)
        except ValueError:
            continue  # FastAPI's own validation answers
        if not lowest <= zoom <= highest:
            raise InvalidFilterError(f"{name}={raw}: zoom levels go from {lowest} to {highest}")


def make_collection_dependency(supported_tms: TileMatrixSets) -> Any:
    """The collection dependency of every collection route: the catalog entry with this request's filters."""

    def changes_collection(
        request: Request,
        collectionId: Annotated[str, Path(description="Collection identifier (`lcms.changes`).")],
        status: Annotated[ChangeStatus | None, Query(description="Review status.")] = None,
        project: Annotated[str | None, Query(description="Project name.")] = None,
        season: Annotated[str | None, Query(description="Season id of the later map (= `season_after`).")] = None,
        season_after: Annotated[str | None, Query(description="Season id of the later map.")] = None,
        season_before: Annotated[str | None, Query(description="Season id of the earlier map.")] = None,
        from_class: Annotated[int | None, Query(ge=0, le=_INT4_MAX, description="Class id before the change.")] = None,
        to_class: Annotated[int | None, Query(ge=0, le=_INT4_MAX, description="Class id after the change.")] = None,
        transition: Annotated[
            str | None,
            Query(description="`FROM-TO` class ids, e.g. `2-1` (forest to cropland).", pattern=_TRANSITION.pattern),
        ] = None,
        run_id: Annotated[str | None, Query(description="Run id of the change detection that found it.")] = None,
        min_confidence: Annotated[
            float | None, Query(ge=0.0, le=1.0, allow_inf_nan=False, description="Smallest change confidence (0-1).")
        ] = None,
        min_area_m2: Annotated[
            float | None, Query(ge=0.0, allow_inf_nan=False, description="Smallest area in m².")
        ] = None,
        kind: Annotated[
            Literal["change", "parcel_check"],
            Query(
                description="`change` (land cover changes, the default) or `parcel_check` (declared parcels whose "
                "predicted crop differs from the declared one: `from_class` declared, `to_class` predicted)."
            ),
        ] = "change",
    ) -> Collection:
        # status, project, season_after, season_before, from_class, to_class and run_id are table columns:
        # tipg applies them as property filters (typed by ChangesCollection); they are declared here so
        # they are validated and documented.
        _tile_in_matrix(request, supported_tms)
        _check_query_numbers(request, supported_tms)
        catalog: Catalog | None = getattr(request.app.state, "collection_catalog", None)
        if not catalog:
            raise MissingCollectionCatalog("the collection catalog is not loaded (is the database up?)")
        collection = catalog["collections"].get(collectionId)
        if collection is None:
            published = ", ".join(catalog["collections"]) or "no collection (the change table is missing)"
            raise HTTPException(
                status_code=404, detail=f"collection {collectionId!r} not found; this service publishes {published}"
            )
        # Parcel checks share the table: only the kind asked for (changes unless told) is served.
        extra: list[dict[str, Any]] = [{"op": "=", "args": [{"property": "kind"}, kind]}]
        if season is not None:
            extra.append({"op": "=", "args": [{"property": "season_after"}, season]})
        if transition is not None:
            match = _TRANSITION.match(transition)
            assert match is not None  # the Query pattern has checked it
            extra.append({"op": "=", "args": [{"property": "from_class"}, int(match[1])]})
            extra.append({"op": "=", "args": [{"property": "to_class"}, int(match[2])]})
        if min_confidence is not None:
            extra.append({"op": ">=", "args": [{"property": "confidence"}, min_confidence]})
        if min_area_m2 is not None:
            extra.append({"op": ">=", "args": [{"property": "area_m2"}, min_area_m2]})
        if isinstance(collection, ChangesCollection):
            return collection.model_copy(update={"extra_filters": extra})
        return collection

    return changes_collection
