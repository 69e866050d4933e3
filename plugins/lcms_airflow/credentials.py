"""Sentinel Hub credentials from Airflow connections.

:func:`install` registers :func:`airflow_connection_credentials` with
:mod:`lcms_tasks.sources.credentials`, so sources running inside an Airflow
task read the connection named by their config (``source.airflow_conn_id``,
``sentinel_hub_default`` by default): login = OAuth client id, password =
client secret. ``lcms_tasks`` never imports Airflow itself; outside Airflow
(CLI, ECS tasks) the environment variables ``SH_CLIENT_ID``/``SH_CLIENT_SECRET``
are used instead.

Create the connection e.g. with
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


def install() -> None:
    """Register the Airflow-connection provider (idempotent); call it in the task before running a stage."""
    from lcms_tasks.sources.credentials import register_provider

    register_provider(airflow_connection_credentials)
