"""``/healthz``: is the service up, is the change store connected, is the change table there."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

router = APIRouter(tags=["Health"])


class Health(BaseModel):
    """The service's state."""

    status: Literal["ok", "unavailable"] = Field(description="ok: the OGC API can answer.")
    database: Literal["connected", "unavailable"]
    collection: str = Field(description="The published collection (`schema.table`).")
    collection_present: bool = Field(description="Whether the database has the collection's table.")
    detail: str | None = Field(None, description="Why the database is unavailable (no password in it).")


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "The change store is unavailable."}},
    summary="Health check",
    operation_id="healthCheck",
)
async def healthz(request: Request) -> JSONResponse:
    store = request.app.state.store
    if not store.ready:
        await store.connect()
    catalog = getattr(request.app.state, "collection_catalog", None) or {"collections": {}}
    health = Health(
        status="ok" if store.ready else "unavailable",
        database="connected" if store.ready else "unavailable",
        collection=store.settings.collection,
        collection_present=store.settings.collection in catalog["collections"],
        detail=None if store.ready else store.error,
    )
    return JSONResponse(health.model_dump(), status_code=200 if store.ready else 503)
