"""The service's connection to the change store: which database, the connection pool, staying up when it is down.

Which database (:func:`resolve_database`): ``ServiceSettings.database_url`` if set, else the change
store's own resolution (:func:`lcms_tasks.store.database_url`: the config's ``database.url``,
``LCMS_DATABASE_URL``, the Airflow connection, the embedded cluster if it runs), else — with
``embedded_database`` — the project-local embedded cluster (:class:`lcms_tasks.store.EmbeddedPostgres`),
started (and migrated: it belongs to the project) here and stopped again on shutdown.

The pool's sessions are read-only (``default_transaction_read_only``, lifted only while tipg installs its
catalog functions in ``pg_temp``) and have a ``statement_timeout``: whatever a request makes of its
filters, it can neither write nor run for ever. (In production, also give the service a role that may
only SELECT ``lcms.changes``.)

:class:`StoreState` holds the pool and the collection catalog; :class:`DatabaseMiddleware` answers 503
on the OGC collection routes while the database is unreachable, reconnects (at most every
``retry_interval_s``) and refreshes the catalog in the background once it is older than
``catalog_ttl_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import asyncpg
from starlette.types import ASGIApp, Receive, Scope, Send
from tipg.database import connection_factory

from lcms_service.changes import load_catalog
from lcms_service.settings import ServiceSettings, redact_url
from lcms_tasks.errors import LcmsError

log = logging.getLogger(__name__)


class DatabaseUnavailableError(LcmsError, RuntimeError):
    """The change store cannot be reached or used; the message names the database and the fix."""


@dataclass
class ResolvedDatabase:
    """The database URL to serve, where it came from, and the embedded cluster started for it (to stop)."""

    url: str
    source: str
    embedded: Any = None


def resolve_database(settings: ServiceSettings, *, start_embedded: bool | None = None) -> ResolvedDatabase:
    """Which database to serve (blocking: may start and migrate the embedded cluster).

    In order: ``settings.database_url``; the change store's own resolution
    (:func:`lcms_tasks.store.database_url`: the config's ``database.url``, ``LCMS_DATABASE_URL``, an
    Airflow connection, the embedded cluster if it is running); else, with ``embedded_database`` (or
    ``start_embedded``), the embedded cluster, started here and migrated.
    """
    if settings.database_url is not None:
        return ResolvedDatabase(settings.database_url.get_secret_value(), source="the service settings")
    from lcms_tasks.store import database_url

    cfg = None
    if settings.config is not None:
        from lcms_tasks.config import load_config

        cfg = load_config(settings.config, check_files=False)
    url = database_url(cfg)
    if url:
        return ResolvedDatabase(url, source=f"config {settings.config}" if cfg else "the environment")
    if not (settings.embedded_database if start_embedded is None else start_embedded):
        raise DatabaseUnavailableError(
            "no change store configured: set LCMS_DATABASE_URL or `database.url` in the project config "
            "(or start the project-local one with `lcms db start`)"
        )
    from lcms_tasks.store import EmbeddedPostgres

    embedded = EmbeddedPostgres()
    url = embedded.start()  # creates the cluster on first use, and migrates it: it belongs to the project
    log.info("started the embedded change store: %s", redact_url(url))
    return ResolvedDatabase(url, source="the embedded cluster, started by the service", embedded=embedded)


async def create_pool(url: str, settings: ServiceSettings) -> asyncpg.Pool:
    """A pool of read-only sessions with tipg's catalog functions; a clear error if the database is unusable."""
    tipg_init = connection_factory([settings.schema_name], "pg_temp")

    async def init(conn: asyncpg.Connection) -> None:
        # tipg creates its catalog functions in pg_temp: the one write the session makes, before it is
        # back to read-only. (The pool's RESET ALL on release returns to the startup settings, so these
        # are connection parameters, not SETs.)
        await conn.execute("SET default_transaction_read_only = off")
        await tipg_init(conn)
        await conn.execute("RESET default_transaction_read_only")

    server_settings = {
        "application_name": "lcms-service",
        "default_transaction_read_only": "on",
        "statement_timeout": str(settings.statement_timeout_ms),
        # ST_Intersects' high cost makes the planner start a parallel worker for a page of ~1,000 rows, and a
        # worker's start-up (~10 ms here) is most of such a query: the API's queries are small, run them serially.
        "max_parallel_workers_per_gather": "0",
    }
    where = redact_url(url)
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            init=init,
            server_settings=server_settings,
            timeout=10,
        )
    except asyncpg.InvalidPasswordError as err:
        raise DatabaseUnavailableError(f"{where}: authentication failed ({err}); check the user and password") from err
    except asyncpg.InvalidCatalogNameError as err:
        raise DatabaseUnavailableError(f"{where}: {err}; create it and run `lcms db upgrade`") from err
    except asyncpg.UndefinedFunctionError as err:
        raise DatabaseUnavailableError(
            f"{where}: the PostGIS extension is missing ({err}); run `lcms db upgrade` (CREATE EXTENSION postgis)"
        ) from err
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        raise DatabaseUnavailableError(f"{where}: cannot connect ({type(err).__name__}: {err})") from err
    assert pool is not None
    try:
        async with pool.acquire() as conn:
            if not await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'postgis'"):
                raise DatabaseUnavailableError(
                    f"{where}: the PostGIS extension is not installed; run `lcms db upgrade` on it"
                )
    except BaseException:
        await pool.close()
        raise
    return pool


@dataclass
class StoreState:
    """The database, pool and catalog of one app, and what went wrong last."""

    settings: ServiceSettings
    app_state: Any = None
    url: str | None = None
    source: str | None = None
    embedded: Any = None
    pool: asyncpg.Pool | None = None
    error: str | None = None
    last_attempt: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _refreshing: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.pool is not None and getattr(self.app_state, "collection_catalog", None) is not None

    async def connect(self) -> bool:
        """Resolve the database, open the pool, load the catalog; False (and :attr:`error`) if it cannot."""
        async with self._lock:
            if self.ready:
                return True
            self.last_attempt = time.monotonic()
            try:
                if self.url is None:
                    resolved = await anyio.to_thread.run_sync(resolve_database, self.settings)
                    self.url, self.source, self.embedded = resolved.url, resolved.source, resolved.embedded
                    log.info("change store: %s (from %s)", redact_url(self.url), self.source)
                if self.pool is None:
                    self.pool = await create_pool(self.url, self.settings)
                    self.app_state.pool = self.pool  # tipg's endpoints read app.state.pool
                await self.refresh()
            except (LcmsError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                where = redact_url(self.url) + ": " if self.url and not isinstance(err, LcmsError) else ""
                self.error = f"{where}{err}"
                log.error("change store unavailable: %s", self.error)
                return False
            self.error = None
            return True

    async def refresh(self) -> None:
        """Reload the collection catalog (columns, extent) from the database."""
        assert self.pool is not None
        self.app_state.collection_catalog = await load_catalog(self.pool, self.settings.collection)

    def refresh_if_stale(self) -> None:
        """Reload the catalog in the background once it is older than ``catalog_ttl_s``."""
        ttl = self.settings.catalog_ttl_s
        catalog = getattr(self.app_state, "collection_catalog", None)
        if not ttl or catalog is None or (self._refreshing is not None and not self._refreshing.done()):
            return
        if (time.time() - catalog["last_updated"].timestamp()) > ttl:
            self._refreshing = asyncio.get_running_loop().create_task(self._background_refresh())

    async def _background_refresh(self) -> None:
        try:
            await self.refresh()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            log.warning("catalog refresh failed (the previous one stays): %s: %s", type(err).__name__, err)

    async def close(self) -> None:
        """Close the pool; stop the embedded cluster if this service started it."""
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refreshing
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        if self.embedded is not None:
            embedded, self.embedded = self.embedded, None
            await anyio.to_thread.run_sync(embedded.stop)
            log.info("stopped the embedded change store")


class DatabaseMiddleware:
    """503 on the routes that need the database while it is down; reconnects and refreshes the catalog."""

    def __init__(self, app: ASGIApp, *, store: StoreState, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.store = store
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._needs_database(scope):
            store = self.store
            if not store.ready:
                due = time.monotonic() - store.last_attempt >= store.settings.retry_interval_s
                if not due or not await store.connect():
                    await self._unavailable(send, store.error or "the change store is not connected")
                    return
            store.refresh_if_stale()
        await self.app(scope, receive, send)

    def _needs_database(self, scope: Scope) -> bool:
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return path.startswith(self.prefixes)

    @staticmethod
    async def _unavailable(send: Send, reason: str) -> None:
        body = json.dumps({"detail": f"change store unavailable: {reason}"}).encode()
        headers = [(b"content-type", b"application/json"), (b"retry-after", b"5")]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
