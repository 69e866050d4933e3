"""The service's read-write connection to the change store, for the application's own tables.

The tipg pool of :mod:`lcms_service.database` is read-only (its sessions run with
``default_transaction_read_only``) and stays so: users, sessions and operator decisions are written
through a second asyncpg pool on the same database (the URL :class:`~lcms_service.database.StoreState`
resolved: the settings, the config, ``LCMS_DATABASE_URL``, the Airflow connection, the embedded
cluster), opened in the app's lifespan by :func:`open_rw_pool` and closed by :func:`close_rw_pool`.

Like the read-only pool, a database that is down does not stop the app from starting (inside
Airflow): the pool is opened on a later request (at most every ``retry_interval_s``) and until then
:func:`rw_connection` answers 503 — so do the endpoints that need a user, since sessions live here.

Use in an endpoint (a connection from the pool for the request; a transaction is the endpoint's)::

    from lcms_service.rw import rw_connection

    @router.post("/api/things")
    async def add_thing(conn: asyncpg.Connection = Depends(rw_connection)) -> Thing:
        async with conn.transaction():
            ...
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from fastapi import FastAPI, Request

from lcms_service.database import DatabaseUnavailableError, StoreState
from lcms_service.settings import redact_url
from lcms_tasks.errors import LcmsError

log = logging.getLogger(__name__)

#: Longest wait for a free connection of the pool before the request answers 503.
ACQUIRE_TIMEOUT_S = 10.0


@dataclass
class ReadWritePool:
    """The read-write pool of one app, on the database its :class:`StoreState` resolved, and its last error."""

    store: StoreState
    pool: asyncpg.Pool | None = None
    error: str | None = None
    last_attempt: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def connect(self) -> bool:
        """Open the pool (the store resolves the database if it has not yet); False and :attr:`error` if not."""
        async with self._lock:
            if self.pool is not None:
                return True
            self.last_attempt = time.monotonic()
            if self.store.url is None:
                await self.store.connect()  # resolves the URL (and retries the read-only pool) on the same terms
            url = self.store.url
            if url is None:
                self.error = self.store.error or "no change store configured"
                return False
            settings = self.store.settings
            try:
                from lcms_tasks.store.db import libpq_url

                self.pool = await asyncpg.create_pool(
                    libpq_url(url),
                    min_size=min(settings.pool_min_size, 1),
                    max_size=settings.pool_max_size,
                    server_settings={
                        "application_name": "lcms-service-rw",
                        "statement_timeout": str(settings.statement_timeout_ms),
                    },
                    timeout=10,
                )
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, LcmsError) as err:
                self.error = f"{redact_url(url)}: cannot open the read-write pool ({type(err).__name__}: {err})"
                log.error("change store (read-write) unavailable: %s", self.error)
                return False
            self.error = None
            return True

    async def get(self) -> asyncpg.Pool:
        """The open pool; reconnects when due, else :class:`DatabaseUnavailableError` (a 503)."""
        if self.pool is not None:
            return self.pool
        due = time.monotonic() - self.last_attempt >= self.store.settings.retry_interval_s
        if due and await self.connect():
            assert self.pool is not None
            return self.pool
        raise DatabaseUnavailableError(self.error or "the change store is not connected")

    async def close(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            await pool.close()


async def open_rw_pool(app: FastAPI) -> ReadWritePool:
    """In the lifespan, after the store: the app's read-write pool (``app.state.rw``); never raises when it is down."""
    rw = ReadWritePool(app.state.store)
    app.state.rw = rw
    if app.state.store.ready:  # else the store has logged why it is down; the first request that needs it retries
        await rw.connect()
    return rw


async def close_rw_pool(app: FastAPI) -> None:
    """In the lifespan, before the store closes (it may stop the embedded cluster): close the read-write pool."""
    rw: ReadWritePool | None = getattr(app.state, "rw", None)
    if rw is not None:
        await rw.close()


async def rw_pool(request: Request) -> asyncpg.Pool:
    """The app's read-write pool (503 while the database is down)."""
    rw: ReadWritePool | None = getattr(request.app.state, "rw", None)
    if rw is None:
        raise DatabaseUnavailableError("the read-write pool is not open (the app's lifespan has not run)")
    return await rw.get()


async def rw_connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """Dependency: a read-write connection of the app's pool for the request (back to the pool after it)."""
    pool = await rw_pool(request)
    try:
        conn: Any = await pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
    except TimeoutError as err:
        raise DatabaseUnavailableError(
            f"no free read-write connection within {ACQUIRE_TIMEOUT_S:g} s; try again"
        ) from err
    try:
        yield conn
    finally:
        await pool.release(conn)
