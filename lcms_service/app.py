"""The app factory: ``create_app(settings)`` assembles the LCMS web service.

URL layout (relative to wherever the app is mounted: ``/`` under ``lcms serve``, ``/lcms`` inside
Airflow's API server):

* ``/`` — the operator application (for now a page linking the rest);
* ``/ogc/`` — OGC API Features + Tiles of the change polygons (landing page, ``/ogc/conformance``,
  ``/ogc/collections/lcms.changes/items``, ``.../tiles/WebMercatorQuad/{z}/{x}/{y}``);
* ``/openapi.json`` (OpenAPI 3.0), ``/docs`` (Swagger UI), ``/healthz``.

The lifespan resolves and opens the database (:mod:`lcms_service.database`); with
``require_database`` off (inside Airflow) a database that is down does not stop the app from
starting: the OGC routes answer 503 until it is back.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette_cramjam.middleware import CompressionMiddleware
from tipg.middleware import CacheControlMiddleware
from tipg.openapi import _update_openapi

from lcms_service import __version__
from lcms_service.database import DatabaseMiddleware, DatabaseUnavailableError, StoreState
from lcms_service.errors import add_exception_handlers
from lcms_service.openapi import use_openapi_30
from lcms_service.routers import assessment, auth, health, maps, operator, validation
from lcms_service.routers.ogc import (
    DEPENDENCY_OVERRIDES,
    ERROR_RESPONSES,
    OGC_PREFIX,
    document_output_formats,
    ogc_router,
)
from lcms_service.rw import close_rw_pool, open_rw_pool
from lcms_service.settings import ServiceSettings

log = logging.getLogger(__name__)


class MountedAppScope:
    """Make URLs the app builds point into the app wherever it is mounted (e.g. ``/lcms`` in Airflow).

    Starlette builds ``request.base_url`` from the *outermost* app's root path and resolves
    ``request.url_for`` on the outermost router, so inside a mount tipg's links would lose the mount's
    prefix (``/ogc/...`` instead of ``/lcms/ogc/...``) and ``url_for("openapi")`` would find the parent's
    OpenAPI document. This sets the app root to the mount point and lets the app's own router resolve names.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("root_path"):
            scope = {k: v for k, v in scope.items() if k != "router"}
            scope["app_root_path"] = scope["root_path"]
        await self.app(scope, receive, send)


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """The LCMS web service on ``settings`` (default: from the environment)."""
    settings = settings or ServiceSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store: StoreState = app.state.store
        if not await store.connect():
            if settings.require_database:
                await store.close()
                raise DatabaseUnavailableError(store.error or "the change store is unavailable")
            log.error("LCMS service: %s; the OGC API answers 503 until the change store is back", store.error)
        await open_rw_pool(app)  # users, sessions, decisions; like the store, a database that is down is retried
        if settings.freeze_gc:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await close_rw_pool(app)  # before the store, which may stop the embedded cluster
            await store.close()

    app = FastAPI(
        title=settings.title,
        version=__version__,
        description="Land cover change polygons of LCMS as OGC API Features (GeoJSON, CQL2 filters) and "
        "vector tiles. OGC API landing page: `/ogc/`.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.store = StoreState(settings, app_state=app.state)
    app.include_router(operator.router)
    app.include_router(health.router)
    app.include_router(maps.router)
    app.include_router(auth.router)
    app.include_router(validation.router)
    app.include_router(assessment.router)
    app.include_router(ogc_router(settings), prefix=OGC_PREFIX, responses=ERROR_RESPONSES)
    app.dependency_overrides.update(DEPENDENCY_OVERRIDES)
    use_openapi_30(app, document_output_formats)
    _update_openapi(app)  # serve it as application/vnd.oai.openapi+json;version=3.0, as the landing page says

    app.add_middleware(DatabaseMiddleware, store=app.state.store, prefixes=(f"{OGC_PREFIX}/collections",))
    app.add_middleware(
        CacheControlMiddleware,
        cachecontrol="public, max-age=60",
        exclude_path={r".*/healthz$", r"^/$"},
    )
    if settings.compression_level:
        app.add_middleware(CompressionMiddleware, compression_level=settings.compression_level)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET"], allow_headers=["*"]
        )
    app.add_middleware(MountedAppScope)  # outermost: every layer below sees the mount point as the app's root
    add_exception_handlers(app)
    return app
