"""The LCMS web service: OGC API Features and vector tiles of the change store, on the domain library.

Never imports Airflow; the Airflow plugin mounts the same app into Airflow's API server.
``lcms_service.app.create_app(settings)`` builds it; ``lcms serve`` runs it (:mod:`lcms_service.server`).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lcms")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0.0.0"
