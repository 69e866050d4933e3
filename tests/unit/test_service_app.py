"""The app factory without a database: the URL layout, the OpenAPI 3.0 document, a database that is down."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from lcms_service.app import create_app
from lcms_service.database import DatabaseUnavailableError
from lcms_service.openapi import openapi_30
from lcms_service.settings import ServiceSettings, redact_url

# Nothing listens on port 1: connecting fails at once.
DOWN = "postgresql://lcms:s3cret@127.0.0.1:1/lcms"


def down_app(**kwargs: Any) -> FastAPI:
    return create_app(ServiceSettings(database_url=DOWN, require_database=False, retry_interval_s=0, **kwargs))


def test_url_layout() -> None:
    paths = set(create_app(ServiceSettings(database_url=DOWN)).openapi()["paths"])
    assert {"/", "/healthz", "/ogc/", "/ogc/conformance", "/ogc/collections"} <= paths
    assert "/ogc/collections/{collectionId}/items" in paths
    assert "/ogc/collections/{collectionId}/tiles/{tileMatrixSetId}/{z}/{x}/{y}" in paths
    # The operator application's own API lives under /api/ (auth, maps, validation); nothing else.
    assert {"/api/auth/login", "/api/projects", "/api/changes", "/api/changes/{change_id}/decisions"} <= paths
    assert not [p for p in paths if not (p in ("/", "/healthz") or p.startswith(("/ogc/", "/api/", "/static/")))]


def test_openapi_document_is_valid_openapi_30() -> None:
    doc = create_app(ServiceSettings(database_url=DOWN)).openapi()
    assert doc["openapi"] == "3.0.3"
    validate(doc)  # openapi-spec-validator picks the 3.0 schema from the version
    items = doc["paths"]["/ogc/collections/{collectionId}/items"]["get"]
    params = {p["name"]: p["schema"] for p in items["parameters"]}
    # the LCMS filters are documented, with their constraints
    assert params["min_confidence"] == {
        "type": "number",
        "maximum": 1.0,
        "minimum": 0.0,
        "description": "Smallest change confidence (0-1).",
        "title": "Min Confidence",
        "nullable": True,
    }
    assert params["status"]["nullable"] and params["status"]["allOf"] == [{"$ref": "#/components/schemas/ChangeStatus"}]
    assert {"400", "404", "503"} <= set(items["responses"])


def test_openapi_30_rewrites_the_31_constructs() -> None:
    doc = {
        "openapi": "3.1.0",
        "paths": {},
        "components": {
            "schemas": {
                "A": {
                    "type": "object",
                    "properties": {
                        "opt": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
                        "ref": {"anyOf": [{"$ref": "#/components/schemas/B"}, {"type": "null"}]},
                        "pair": {"type": "array", "prefixItems": [{"type": "number"}, {"type": "number"}]},
                        "kind": {"const": "Feature"},
                        "gt0": {"type": "number", "exclusiveMinimum": 0},
                        "many": {"type": ["string", "null"], "examples": ["x"]},
                        "described": {"$ref": "#/components/schemas/B", "description": "with a sibling"},
                    },
                },
                "B": {"type": "string"},
            }
        },
    }
    props = openapi_30(doc)["components"]["schemas"]["A"]["properties"]
    assert props["opt"] == {"type": "integer", "default": None, "nullable": True}
    assert props["ref"] == {"allOf": [{"$ref": "#/components/schemas/B"}], "nullable": True}
    assert props["pair"] == {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number"}}
    assert props["kind"] == {"enum": ["Feature"]}
    assert props["gt0"] == {"type": "number", "minimum": 0, "exclusiveMinimum": True}
    assert props["many"] == {"type": "string", "nullable": True, "example": "x"}
    assert props["described"] == {"allOf": [{"$ref": "#/components/schemas/B"}], "description": "with a sibling"}


def test_database_down_answers_503_and_the_rest_still_works() -> None:
    with TestClient(down_app()) as client:
        landing = client.get("/ogc/")
        assert landing.status_code == 200
        assert {link["rel"] for link in landing.json()["links"]} >= {"self", "service-desc", "conformance", "data"}
        assert client.get("/ogc/conformance").status_code == 200
        assert client.get("/").status_code == 200
        assert client.get("/openapi.json").headers["content-type"].startswith("application/vnd.oai.openapi+json")
        for path in ("/ogc/collections", "/ogc/collections/lcms.changes/items"):
            resp = client.get(path)
            assert resp.status_code == 503, path
            assert resp.headers["retry-after"]
            assert "change store unavailable" in resp.json()["detail"]
        health = client.get("/healthz")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "unavailable" and body["database"] == "unavailable"
        assert "s3cret" not in health.text and "127.0.0.1:1" in body["detail"]  # names the database, not the password


def test_required_database_down_fails_the_startup_with_its_name() -> None:
    app = create_app(ServiceSettings(database_url=DOWN, require_database=True))
    with pytest.raises(DatabaseUnavailableError, match=r"127\.0\.0\.1:1.*cannot connect") as info, TestClient(app):
        pass
    assert "s3cret" not in str(info.value)


def test_mounted_under_a_prefix_links_carry_it() -> None:
    parent = FastAPI()
    parent.mount("/lcms", down_app())
    with TestClient(parent) as client:
        landing = client.get("/lcms/ogc/")
        assert landing.status_code == 200
        hrefs = {link["rel"]: link["href"] for link in landing.json()["links"]}
        assert hrefs["self"] == "http://testserver/lcms/ogc/"
        assert hrefs["service-desc"] == "http://testserver/lcms/openapi.json"
        assert hrefs["conformance"] == "http://testserver/lcms/ogc/conformance"
        assert client.get("/lcms/ogc/collections").status_code == 503
        assert client.get("/lcms/openapi.json").json()["openapi"] == "3.0.3"


def test_redact_url() -> None:
    assert redact_url("postgresql://u:pw@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redact_url("postgresql://u@db/x") == "postgresql://u@db/x"


def test_settings_refuse_an_unqualified_collection() -> None:
    with pytest.raises(ValueError, match=r"schema\.table"):
        ServiceSettings(collection="changes")
