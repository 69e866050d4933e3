"""The Airflow plugin that mounts the LCMS web service into Airflow's API server, under ``/lcms``.

One deployment serves both: Airflow's UI and REST API, and the LCMS service (OGC API Features and
vector tiles of the change store at ``/lcms/ogc/``, its OpenAPI document at ``/lcms/openapi.json``,
the operator application at ``/lcms/``). Airflow's API server mounts each ``fastapi_apps`` entry with
``app.mount(url_prefix, app)`` (``airflow/api_fastapi/app.py: init_plugins``; the keys are ``name``,
``app`` and ``url_prefix``, which must not be empty nor start with a prefix Airflow reserves:
``/api/v2``, ``/ui``, ``/execution``, ``/auth``, ``/pluginsv2``) and runs the mounted app's lifespan with
its own, so the service opens its database pool when the API server starts.

The service finds its database the way the change store does (``LCMS_CONFIG``'s ``database.url``,
``LCMS_DATABASE_URL``, the Airflow connection, a running embedded cluster); it never starts a cluster
inside Airflow's API server, and a database that is down does not keep Airflow from starting: the OGC
routes answer 503 until it is back. Airflow's authentication does not cover plugin apps: the service's
routes are read-only and public, like a WFS.

Airflow imports every plugin module in every component (scheduler, DAG processor, task processes):
the app is built on first use of ``fastapi_apps``, which only the API server asks for, so the other
components never import FastAPI or tipg because of this plugin.

A second plugin registers the season timetable (:mod:`lcms_airflow.timetables`), which Airflow's
serializer accepts only from a plugin.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from lcms_airflow.timetables import SeasonTimetable

#: Where the LCMS service lives inside Airflow's API server.
URL_PREFIX = "/lcms"

_apps: list[dict[str, Any]] | None = None


def service_apps() -> list[dict[str, Any]]:
    """The ``fastapi_apps`` entries (built once per process)."""
    global _apps
    if _apps is None:
        from lcms_service.app import create_app
        from lcms_service.settings import ServiceSettings

        app = create_app(ServiceSettings(require_database=False, embedded_database=False, freeze_gc=False))
        _apps = [{"name": "LCMS service", "app": app, "url_prefix": URL_PREFIX}]
    return _apps


class _LazyApps:
    """``fastapi_apps`` as a class attribute that builds the app when Airflow first reads it."""

    def __get__(self, obj: object, owner: type | None = None) -> list[dict[str, Any]]:
        return service_apps()


class LcmsServicePlugin(AirflowPlugin):
    """Mounts the LCMS web service at :data:`URL_PREFIX`."""

    name = "lcms_service"
    fastapi_apps = _LazyApps()  # a descriptor in place of the list


class LcmsTimetablesPlugin(AirflowPlugin):
    """Registers the season timetable: Airflow (de)serializes only the timetables a plugin registers."""

    name = "lcms_timetables"
    timetables = [SeasonTimetable]  # noqa: RUF012  (the attribute Airflow reads)
