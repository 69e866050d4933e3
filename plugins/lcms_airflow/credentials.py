"""Sentinel Hub credentials from Airflow connections.

:func:`install` registers :func:`airflow_connection_credentials` with
:mod:`lcms_tasks.sources.credentials`, so sources running inside an Airflow
task read the connection named by their config (``source.airflow_conn_id``,
``sentinel_hub_default`` by default): login = OAuth client id, password =
client secret. ``lcms_tasks`` never imports Airflow itself; outside Airflow
(CLI, ECS tasks) the environment variables ``SH_CLIENT_ID``/``SH_CLIENT_SECRET``
are used instead.

The change store's database URL comes the same way from the connection named by
``database.airflow_conn_id`` (``lcms_change_store``; e.g.
``AIRFLOW_CONN_LCMS_CHANGE_STORE=postgresql://user:pass@host:5432/lcms``) when neither the
config nor ``LCMS_DATABASE_URL`` give one.

Create the Sentinel Hub connection e.g. with
``airflow connections add sentinel_hub_default --conn-type generic --conn-login <id> --conn-password <secret>``
or the environment variable ``AIRFLOW_CONN_SENTINEL_HUB_DEFAULT``.
"""

from __future__ import annotations

import logging

LOGGER = logging.getLogger(__name__)


def airflow_connection_credentials(conn_id: str) -> tuple[str, str] | None:
    """(login, password) of the Airflow connection ``conn_id``; None if Airflow does not define it."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        LOGGER.debug("Airflow connection %r is not defined; falling back to the environment", conn_id)
        return None
    return (conn.login or "", conn.password or "")


def airflow_database_url(conn_id: str) -> str | None:
    """The change store's URL from the Airflow connection ``conn_id`` (a postgres connection), or None."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        LOGGER.debug("Airflow connection %r is not defined; the change store URL comes from elsewhere", conn_id)
        return None
    uri: str = conn.get_uri()
    # Airflow spells the scheme "postgres://"; libpq and SQLAlchemy want "postgresql://".
    return "postgresql://" + uri.split("://", 1)[1] if uri.startswith("postgres://") else uri


def install() -> None:
    """Register the Airflow-connection providers (idempotent); call it in the task before running a stage."""
    from lcms_tasks.sources.credentials import register_provider
    from lcms_tasks.store.db import register_url_provider

    register_provider(airflow_connection_credentials)
    register_url_provider(airflow_database_url)
