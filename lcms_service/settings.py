"""Settings of the LCMS web service, read from the environment (pydantic-settings) or given by the caller.

``create_app(ServiceSettings(...))`` is how tests and ``lcms serve`` build an app; the Airflow plugin builds
it from the environment of Airflow's API server (``LCMS_CONFIG``, ``LCMS_SERVICE_*``; the database itself is
found the way the change store finds it, see :func:`lcms_service.database.resolve_database`).
The database URL is a secret (it may carry a password): it is held as :class:`~pydantic.SecretStr` and only
ever logged through :func:`redact_url`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The one collection the service publishes: ``<schema>.<table>`` of the change store.
CHANGES_COLLECTION = "lcms.changes"


class ServiceSettings(BaseSettings):
    """Where the change store is and how the service serves it."""

    model_config = SettingsConfigDict(env_prefix="LCMS_SERVICE_", extra="ignore", populate_by_name=True)

    database_url: SecretStr | None = Field(
        None,
        description="PostgreSQL URL of the change store (postgresql://user:pass@host:5432/db), overriding the "
        "change store's own resolution. None: the config's `database.url`, else LCMS_DATABASE_URL, else the "
        "Airflow connection, else the embedded cluster (running, or started if `embedded_database`).",
    )
    config: Path | None = Field(
        None,
        validation_alias=AliasChoices("config", "LCMS_CONFIG"),
        description="Project config whose `database` section names the change store when `database_url` is unset.",
    )
    embedded_database: bool = Field(
        True,
        description="With no database configured, start the project-local embedded PostgreSQL (and stop it on "
        "shutdown if this service started it).",
    )
    require_database: bool = Field(
        True,
        description="Fail at startup when the database cannot be reached (`lcms serve`). False (inside Airflow's "
        "API server): start anyway, answer 503 on the OGC API and retry on later requests.",
    )
    title: str = Field("LCMS land cover changes", description="Title of the OGC API landing page.")
    collection: str = Field(CHANGES_COLLECTION, description="`schema.table` of the change polygons.")
    pool_min_size: int = Field(1, ge=0, description="Connections the pool keeps open.")
    pool_max_size: int = Field(10, ge=1, description="Most connections the pool opens.")
    statement_timeout_ms: int = Field(
        30_000, ge=0, description="Longest a query may run before PostgreSQL cancels it (0: no limit)."
    )
    catalog_ttl_s: float = Field(
        300.0, ge=0, description="Seconds before the collection's metadata (extent, columns) is refreshed (0: never)."
    )
    retry_interval_s: float = Field(5.0, ge=0, description="Seconds between reconnection attempts when down.")
    freeze_gc: bool = Field(
        True,
        description="After startup, move every object then alive out of the garbage collector's reach "
        "(gc.freeze): a full collection then walks only what requests allocate, not the ~100,000 objects "
        "of the loaded libraries (a 60 ms pause every few requests of 1,000 features). Off inside Airflow's "
        "API server, whose process is not the service's.",
    )
    compression_level: int = Field(
        1,
        ge=0,
        le=9,
        description="gzip/deflate level of compressed answers (0: no compression). 1 compresses GeoJSON about "
        "6-fold at a third of the time level 6 takes on a page of 1,000 features.",
    )
    cors_origins: list[str] = Field(default_factory=lambda: ["*"], description="Origins allowed to call the API.")

    @field_validator("collection")
    @classmethod
    def _schema_qualified(cls, value: str) -> str:
        schema, dot, table = value.partition(".")
        if not dot or not schema or not table:
            raise ValueError(f"collection must be `schema.table`, got {value!r}")
        return value

    @property
    def schema_name(self) -> str:
        return self.collection.partition(".")[0]


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and error messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable database URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query, parts.fragment))
