"""The service's OpenAPI document as OpenAPI 3.0 (what OGC API Features' ``oas30`` conformance class names).

FastAPI writes OpenAPI 3.1 (JSON Schema 2020-12): ``anyOf [X, {"type": "null"}]`` for optional values,
``prefixItems`` for tuples, numeric ``exclusiveMinimum``, ``const``, ``examples`` lists, ``$ref`` with
sibling keywords. :func:`openapi_30` rewrites exactly those into their 3.0 forms (``nullable``,
``items`` + ``minItems``/``maxItems``, boolean ``exclusiveMinimum``, ``enum``, ``example``, ``allOf``)
so 3.0 clients (GDAL, QGIS, schemathesis in 3.0 mode) read the same constraints the app enforces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

OPENAPI_VERSION = "3.0.3"

#: The keywords of OpenAPI 3.0's Schema Object; anything else (JSON Schema 2020-12 keywords, or a library's
#: typo such as morecantile's "exemples") is dropped, as 3.0 forbids unknown keys (but ``x-`` extensions).
_SCHEMA_KEYWORDS = frozenset(
    {
        *("title", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength"),
        *("minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxProperties", "minProperties"),
        *("required", "enum", "type", "allOf", "oneOf", "anyOf", "not", "items", "properties"),
        *("additionalProperties", "description", "format", "default", "nullable", "discriminator", "readOnly"),
        *("writeOnly", "xml", "externalDocs", "example", "deprecated", "$ref"),
    }
)


_NULL = {"nullable": True, "enum": [None]}  # what {"type": "null"} becomes


def _is_null(schema: Any) -> bool:
    return schema == _NULL or schema == {"type": "null"}


def _schema(node: Any) -> Any:
    """One JSON Schema 2020-12 schema as an OpenAPI 3.0 schema object (recursively)."""
    if isinstance(node, list):
        return [_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "$defs", "definitions"):
            out[key] = {name: _schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "contains"):
            out[key] = _schema(value)
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [_schema(sub) for sub in value]
        else:
            out[key] = value
    if isinstance(out.get("type"), list):  # "type": ["string", "null"]
        types = [t for t in out["type"] if t != "null"]
        if len(types) < len(out["type"]):
            out["nullable"] = True
        if len(types) == 1:
            out["type"] = types[0]
        else:
            out.pop("type")
            if types:
                out["anyOf"] = [{"type": t} for t in types]
    if out.get("type") == "null":
        out.pop("type")
        out.update(_NULL)
    for key in ("anyOf", "oneOf"):
        if key in out and any(_is_null(s) for s in out[key]):
            rest = [s for s in out[key] if not _is_null(s)]
            out["nullable"] = True
            if len(rest) == 1:
                del out[key]
                only = rest[0]
                if "$ref" in only:
                    out["allOf"] = [only]
                else:
                    out = {**only, **out}
            else:
                out[key] = rest
    if "prefixItems" in out:
        prefix = [_schema(s) for s in out.pop("prefixItems")]
        out.setdefault("minItems", len(prefix))
        if out.get("items") is False or "items" not in out:
            out["maxItems"] = len(prefix)
        out["items"] = prefix[0] if all(p == prefix[0] for p in prefix) else {"anyOf": prefix}
    elif out.get("items") is False:
        out.pop("items")
    if "const" in out:
        out["enum"] = [out.pop("const")]
    for key, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(key), int | float) and not isinstance(out.get(key), bool):
            out[bound] = out.pop(key)
            out[key] = True
    if isinstance(out.get("examples"), list):
        examples = out.pop("examples")
        if examples:
            out["example"] = examples[0]
    if "$ref" in out and len(out) > 1:  # 3.0 ignores a $ref's siblings: keep them through allOf
        ref = out.pop("$ref")
        out = {"allOf": [{"$ref": ref}], **out}
    if out.get("type") == "array" and "items" not in out:
        out["items"] = {}
    return {key: value for key, value in out.items() if key in _SCHEMA_KEYWORDS or key.startswith("x-")}


def _walk(node: Any, convert: Callable[[Any], Any]) -> Any:
    """Convert every ``schema`` of the document (parameters, media types, components)."""
    if isinstance(node, list):
        return [_walk(item, convert) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "schema" and isinstance(value, dict):
            out[key] = convert(value)
        elif key == "schemas" and isinstance(value, dict):
            out[key] = {name: convert(sub) for name, sub in value.items()}
        elif key == "examples" and isinstance(value, list):
            continue  # a 3.1 list on a parameter; 3.0 wants a map of Example objects
        else:
            out[key] = _walk(value, convert)
    return out


def openapi_30(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (OpenAPI 3.1 as FastAPI writes it) as OpenAPI 3.0.3."""
    out = _walk(document, _schema)
    out["openapi"] = OPENAPI_VERSION
    out.pop("webhooks", None)
    out.pop("jsonSchemaDialect", None)
    return out


def use_openapi_30(app: FastAPI, *fixes: Callable[[dict[str, Any]], None]) -> None:
    """Make ``app`` generate (and cache) its OpenAPI document as 3.0, after ``fixes`` edit it in place."""

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            document = openapi_30(FastAPI.openapi(app))
            for fix in fixes:
                fix(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise it
