"""``lcms serve``: the web service under uvicorn on one project's change store.

Before uvicorn starts, everything that can be wrong is checked and reported in one line (exit 2): the
config, the port, the database (resolved as :func:`lcms_service.database.resolve_database` says,
the embedded cluster started when none is configured, and stopped again on exit), its PostGIS.
Ctrl-C or SIGTERM stops uvicorn, closes the pool and stops the embedded cluster if it was started here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import uvicorn
from pydantic import SecretStr

from lcms_service.database import DatabaseUnavailableError, create_pool, resolve_database
from lcms_service.settings import ServiceSettings

log = logging.getLogger(__name__)


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise DatabaseUnavailableError(
                f"cannot listen on {host}:{port} ({err.strerror}); choose another with --port / --host"
            ) from err


async def _check_database(url: str, settings: ServiceSettings) -> None:
    pool = await create_pool(url, settings)
    await pool.close()


class _Server(uvicorn.Server):
    """uvicorn's server, stopping on SIGINT/SIGTERM without re-raising the signal afterwards.

    uvicorn re-raises the signal once it has shut down, which would end the process before ``serve``
    stops the embedded database and returns 0. A second signal forces the exit, as in uvicorn.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        def stop(signum: int, frame: FrameType | None) -> None:
            self.force_exit = self.should_exit
            self.should_exit = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(config: Path, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> int:
    """Serve the change store of ``config`` on ``host:port`` until interrupted; 0 after a clean stop."""
    from lcms_tasks.config import load_config

    load_config(config, check_files=False)  # a bad config is one line before anything starts
    _check_port(host, port)
    settings = ServiceSettings(config=config, require_database=True, embedded_database=True)
    resolved = resolve_database(settings)
    try:
        asyncio.run(_check_database(resolved.url, settings))
        app_settings = settings.model_copy(update={"database_url": SecretStr(resolved.url), "embedded_database": False})
        from lcms_service.app import create_app

        app = create_app(app_settings)
        shown = f"[{host}]" if ":" in host else host
        log.info("LCMS service on http://%s:%d/ (OGC API Features: http://%s:%d/ogc/)", shown, port, shown, port)
        _Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, proxy_headers=True)).run()
    finally:
        if resolved.embedded is not None:
            resolved.embedded.stop()
            log.info("stopped the embedded change store")
    return 0
