"""How the service answers errors: a JSON ``{"detail": ...}`` with the status the client can act on.

tipg's own errors keep tipg's status codes (404 unknown item or property), except that its 422s
(bad bbox, datetime, limit) are 400s.
Database errors are sorted by cause: a filter that does not type-check against the table (a
``DataError`` or ``SyntaxOrAccessError`` from PostgreSQL, e.g. comparing a text column with a
number) is the client's 400; a query cancelled by ``statement_timeout`` is a 503 saying to narrow
it; a lost connection a 503. Anything else is a 500 whose body says only "internal error" — the
traceback goes to the log, not to the client.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from tipg import errors as tipg_errors
from tipg.errors import DEFAULT_STATUS_CODES

from lcms_service.database import DatabaseUnavailableError

log = logging.getLogger(__name__)


def _json(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


def _client_error(status: int) -> Any:
    """A handler answering ``status`` with the exception's message (tipg's client errors)."""

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        log.info("%s %s -> %d: %s", request.method, request.url.path, status, exc)
        return _json(status, str(exc))

    return handler


async def _bad_filter(request: Request, exc: Exception) -> JSONResponse:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return _json(400, f"the request's filters do not apply to this collection: {message}")


async def _timeout(request: Request, exc: Exception) -> JSONResponse:
    detail = "the query took too long and was cancelled; narrow it (bbox, filter, limit)"
    return _json(503, detail, **{"Retry-After": "5"})


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("change store unavailable during %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return _json(503, "change store unavailable; try again", **{"Retry-After": "5"})


async def _missing_table(request: Request, exc: Exception) -> JSONResponse:
    log.error("change store table missing during %s: %s", request.url.path, exc)
    return _json(503, f"the change store's table is missing ({exc}); run `lcms db upgrade`")


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json(500, "internal error (see the service log)")


def add_exception_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app`` (most specific class wins)."""
    handlers: dict[Any, Any] = {
        # tipg's 422s (bad bbox, datetime, limit) become 400: 422 is FastAPI's documented validation error,
        # whose body (a list of errors) is not tipg's {"detail": "..."}.
        exc: _client_error(400 if code == 422 else code)
        for exc, code in DEFAULT_STATUS_CODES.items()
        if code < 500  # tipg's 500 handlers would echo internal messages to the client
    }
    handlers.update(
        {
            # tipg answers these with 500s, but a client caused them: ?geom-column= naming no geometry
            # column (tipg says "missing"), a datetime filter on a table without one; no catalog = no database.
            tipg_errors.MissingGeometryColumn: _client_error(404),
            tipg_errors.MissingDatetimeColumn: _client_error(400),
            tipg_errors.MissingCollectionCatalog: _unavailable,
            asyncpg.DataError: _bad_filter,
            asyncpg.SyntaxOrAccessError: _bad_filter,
            asyncpg.UndefinedTableError: _missing_table,
            asyncpg.QueryCanceledError: _timeout,
            asyncpg.PostgresConnectionError: _unavailable,
            asyncpg.InterfaceError: _unavailable,
            asyncpg.PostgresError: _internal,
            DatabaseUnavailableError: _unavailable,
            ConnectionError: _unavailable,
            Exception: _internal,
        }
    )
    for exc, handler in handlers.items():
        app.add_exception_handler(exc, handler)
