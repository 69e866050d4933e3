"""The service's request parsing: CQL2 checking, bbox / datetime / filter parameters, property filters."""

from __future__ import annotations

import pytest
from tipg.collections import Column

from lcms_service.changes import ChangesCollection, InvalidFilterError, check_cql2, parse_filter
from lcms_service.routers.ogc import bbox_query, datetime_query, filter_query

PROPERTIES = {"status", "confidence", "area_m2", "from_class", "to_class", "geom", "datetime", "tiles"}


def checked(text: str) -> object:
    expr = parse_filter(text, "cql2-text")
    assert expr is not None
    return check_cql2(expr.to_json(), PROPERTIES)


@pytest.mark.parametrize(
    "text",
    [
        "confidence >= 0.8 AND status = 'detected'",
        "from_class IN (1, 2) OR NOT (to_class = 3)",
        "area_m2 BETWEEN 100 AND 5000",
        "status LIKE 'det%'",
        "confidence IS NULL",
        "CASEI(status) = casei('DETECTED')",
        "S_INTERSECTS(geom, POLYGON((47 40, 47.1 40, 47.1 40.1, 47 40.1, 47 40)))",
        "T_AFTER(datetime, TIMESTAMP('2024-01-01T00:00:00Z'))",
        "A_CONTAINS(tiles, ('32638_498_3440'))",
        "area_m2 * 2 > confidence + 1",
    ],
)
def test_cql2_operators_of_part_3_pass(text: str) -> None:
    checked(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # cql2 would hand any function name to PostgreSQL: reading another table, sleeping, writing files.
        ("query_to_xml('select * from lcms.decisions', true, true, '') = 'x'", "unsupported function"),
        ("pg_sleep(10) = 1", "unsupported function"),
        ("foo(status) = 'x'", "unsupported function"),
        ("ACCENTI(status) = 'x'", "unsupported function"),  # needs the unaccent extension
        ("decided_by = 'me'", "unknown property 'decided_by'"),
        ("S_INTERSECTS(geom, POLYGON((0 0, 1 1, 1 0, 0 1, 0 0)))", "not valid"),  # a bow tie
    ],
)
def test_cql2_outside_part_3_or_the_columns_is_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidFilterError, match=message) as info:
        checked(text)
    assert info.value.status_code == 400


def test_bbox_literal_becomes_a_crs84_polygon() -> None:
    # cql2 writes BBOX(...) as an SRID-0 envelope, which PostGIS refuses to compare with EPSG:4326 geometries.
    out = checked("S_INTERSECTS(geom, BBOX(47, 40, 47.5, 40.5))")
    assert out == {
        "op": "s_intersects",
        "args": [
            {"property": "geom"},
            {"type": "Polygon", "coordinates": [[[47, 40], [47.5, 40], [47.5, 40.5], [47, 40.5], [47, 40]]]},
        ],
    }


@pytest.mark.parametrize("text", ["confidence >>> 2", "status = ", "(("])
def test_filter_that_is_not_cql2_is_a_400(text: str) -> None:
    with pytest.raises(InvalidFilterError, match="not valid cql2-text"):
        filter_query(text, None)


def test_filter_in_cql2_json() -> None:
    expr = filter_query('{"op": "=", "args": [{"property": "status"}, "detected"]}', "cql2-json")
    assert expr is not None and expr.to_json()["op"] == "="


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("47,40,48,41", [47, 40, 48, 41]), ("47,40,0,48,41,100", [47, 40, 0, 48, 41, 100])],
)
def test_bbox_parameter(value: str | None, expected: list[float] | None) -> None:
    assert bbox_query(value) == expected


@pytest.mark.parametrize("value", ["abc", "1,2,3", "nan,1,2,3", "1,2,inf,4", "-200,0,0,1", "10,0,5,1", "0,10,1,5"])
def test_bad_bbox_is_a_400(value: str) -> None:
    with pytest.raises(InvalidFilterError, match="bbox"):
        bbox_query(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-03-01T00:00:00Z", ["2024-03-01T00:00:00Z"]),
        ("2024-01-01T00:00:00Z/..", ["2024-01-01T00:00:00Z", ".."]),
        ("../2024-12-31T00:00:00Z", ["..", "2024-12-31T00:00:00Z"]),
    ],
)
def test_datetime_parameter(value: str, expected: list[str]) -> None:
    assert datetime_query(value) == expected


@pytest.mark.parametrize("value", ["2024-13-01", "yesterday", "2024-01-01T00:00:00Z/x", "a/b/c", ".."])
def test_bad_datetime_is_a_400(value: str) -> None:
    with pytest.raises(InvalidFilterError, match="datetime"):
        datetime_query(value)


def _collection() -> ChangesCollection:
    columns = [
        Column(name="id", type="uuid"),
        Column(name="status", type="text"),
        Column(name="from_class", type="integer"),
        Column(name="confidence", type="float8"),
        Column(name="tiles", type="text[]"),
        Column(name="datetime", type="timestamptz"),
        Column(name="geom", type="geometry", geometry_type="MULTIPOLYGON", srid=4326),
    ]
    return ChangesCollection(
        type="Table",
        id="lcms.changes",
        table="changes",
        schema="lcms",
        table_columns=columns,
        properties=columns,
        id_column=columns[0],
        geometry_column=columns[-1],
        datetime_column=columns[-2],
    )


def test_property_filters_are_typed_by_column() -> None:
    where = _collection().cql_where(properties=[("from_class", "2"), ("tiles", "t1"), ("confidence", "0.5")])
    assert where is not None
    sql = where.to_sql()
    assert "from_class = 2" in sql  # a number, not the text '2'
    assert "tiles @> ARRAY['t1']" in sql  # an array column: "contains"
    assert "confidence = 0.5" in sql


@pytest.mark.parametrize(
    ("prop", "value", "message"),
    [
        ("from_class", "abc", "not a valid integer"),
        ("id", "nope", "not a valid uuid"),
        ("datetime", "soon", "not a valid timestamptz"),
        ("geom", "x", "a geometry"),
    ],
)
def test_bad_property_filter_is_a_400(prop: str, value: str, message: str) -> None:
    with pytest.raises(InvalidFilterError, match=message):
        _collection().cql_where(properties=[(prop, value)])


def test_lcms_filters_join_the_where_clause() -> None:
    collection = _collection().model_copy(
        update={"extra_filters": [{"op": ">=", "args": [{"property": "confidence"}, 0.9]}]}
    )
    where = collection.cql_where(cql=parse_filter("status = 'detected'", None))
    assert where is not None
    sql = where.to_sql()
    assert "confidence >= 0.9" in sql and "status = 'detected'" in sql
