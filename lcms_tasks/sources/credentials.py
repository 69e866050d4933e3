"""Credentials of remote imagery services, without importing Airflow.

Secrets never live in code or config files. A source asks
:func:`get_credentials` for a connection id and gets ``(client_id, client_secret)``
from, in order:

1. the providers registered with :func:`register_provider` — in Airflow,
   ``lcms_airflow.credentials.install()`` registers one that reads the
   Airflow connection of that id (login = client id, password = secret);
2. the environment: ``SH_CLIENT_ID`` and ``SH_CLIENT_SECRET`` (CLI, workers,
   ECS tasks).

Secrets must not reach logs either: :func:`redact_in_logs` installs a filter
on the loggers of the HTTP/OAuth libraries that log request bodies and
tokens at DEBUG level (``requests_oauthlib`` logs the token request body,
client secret included), replacing every registered secret and every
``client_secret=``/``access_token`` value with ``***``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from typing import NamedTuple

from lcms_tasks.errors import LcmsError

LOGGER = logging.getLogger(__name__)

#: Environment variables read when no provider knows the connection.
ENV_CLIENT_ID = "SH_CLIENT_ID"
ENV_CLIENT_SECRET = "SH_CLIENT_SECRET"

REDACTED = "***"


class Credentials(NamedTuple):
    """An OAuth client: ``(client_id, client_secret)``; the secret never shows in its repr."""

    client_id: str
    client_secret: str
    origin: str = "environment"

    def __repr__(self) -> str:
        return f"Credentials(client_id={self.client_id!r}, client_secret='{REDACTED}', origin={self.origin!r})"

    def __str__(self) -> str:
        return self.__repr__()


class CredentialsError(LcmsError, LookupError):
    """No credentials could be found for a connection (the message never contains a secret)."""


#: A provider maps a connection id to (client_id, client_secret), or None when it does not know the id.
CredentialProvider = Callable[[str], "tuple[str, str] | None"]

_PROVIDERS: list[CredentialProvider] = []
_LOCK = threading.Lock()


def register_provider(provider: CredentialProvider) -> None:
    """Ask ``provider`` first for credentials (registering the same function twice is a no-op)."""
    with _LOCK:
        if provider not in _PROVIDERS:
            _PROVIDERS.append(provider)


def unregister_provider(provider: CredentialProvider) -> None:
    """Forget ``provider`` (no-op if it was not registered)."""
    with _LOCK:
        if provider in _PROVIDERS:
            _PROVIDERS.remove(provider)


def registered_providers() -> list[CredentialProvider]:
    """The providers asked before the environment, in order."""
    with _LOCK:
        return list(_PROVIDERS)


def get_credentials(conn_id: str | None) -> Credentials:
    """Credentials for ``conn_id`` from the registered providers, else from the environment.

    Raises :class:`CredentialsError` naming the connection and the variables to set.
    """
    problems: list[str] = []
    if conn_id:
        for provider in registered_providers():
            name = getattr(provider, "__qualname__", repr(provider))
            try:
                found = provider(conn_id)
            except Exception as exc:  # a broken provider must not hide the environment fallback
                LOGGER.warning("credential provider %s failed for connection %r: %s", name, conn_id, type(exc).__name__)
                problems.append(f"provider {name} failed ({type(exc).__name__})")
                continue
            if found is not None:
                client_id, secret = found
                if client_id and secret:
                    redact_in_logs(secret)
                    return Credentials(client_id, secret, origin=f"connection {conn_id!r}")
                problems.append(f"connection {conn_id!r} has an empty login or password")
    client_id = os.environ.get(ENV_CLIENT_ID, "")
    secret = os.environ.get(ENV_CLIENT_SECRET, "")
    if client_id and secret:
        redact_in_logs(secret)
        return Credentials(client_id, secret, origin="environment")
    where = f"the Airflow connection {conn_id!r} (login = client id, password = client secret) or " if conn_id else ""
    detail = f" ({'; '.join(problems)})" if problems else ""
    raise CredentialsError(
        f"no Sentinel Hub credentials found: set {where}the environment variables "
        f"{ENV_CLIENT_ID} and {ENV_CLIENT_SECRET}{detail}"
    )


# --------------------------------------------------------------------------------------------- log redaction

#: Loggers known to log request bodies, headers or tokens at DEBUG level.
_NOISY_LOGGERS = (
    "requests_oauthlib.oauth2_session",
    "requests_oauthlib.oauth2_auth",
    "oauthlib",
    "oauthlib.oauth2.rfc6749.parameters",
    "oauthlib.oauth2.rfc6749.clients.base",
    "urllib3.connectionpool",
    "sentinelhub.download.session",
    "sentinelhub.download.sentinelhub_client",
    "sentinelhub.download.handlers",
)

_PATTERNS = (
    re.compile(r"(client_secret=)[^&\s'\"]+"),
    re.compile(r"""(['"](?:access_token|refresh_token|client_secret)['"]\s*:\s*['"])[^'"]+"""),
    re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+"),
)


class SecretRedactingFilter(logging.Filter):
    """Replaces known secrets and token-like values in a record's message with ``***``."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def redact(self, text: str) -> str:
        """``text`` with every known secret and token-like value replaced."""
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error handling
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True


_FILTER = SecretRedactingFilter()
_INSTALLED = False


def redact_in_logs(secret: str) -> None:
    """Keep ``secret`` (and any OAuth token) out of the records of the HTTP/OAuth libraries' loggers."""
    global _INSTALLED
    with _LOCK:
        _FILTER.secrets.add(secret)
        if not _INSTALLED:
            for name in _NOISY_LOGGERS:
                logging.getLogger(name).addFilter(_FILTER)
            _INSTALLED = True


def redact(text: str) -> str:
    """``text`` with every secret registered so far replaced by ``***`` (for error messages)."""
    return _FILTER.redact(text)
