"""One translation of sentinelhub-py / oauthlib failures into LCMS errors, for every Sentinel Hub client.

The Process API source and BYOC registration call the same services through the same libraries; what
a failure means for an operator (a 401: the credentials, naming the client id; a 429 after the last
retry; a token URL that is not https) is the same for both, and no message may carry a secret.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

#: Builds the error raised for an HTTP status (with the redacted detail), or None for the generic one.
StatusHook = Callable[[int | None, str], Exception | None]


@contextlib.contextmanager
def sentinelhub_errors(
    what: str,
    *,
    error: Callable[[str], Exception],
    auth_error: Callable[[str], Exception],
    token_url: str,
    max_retries: int,
    base_url: str | None = None,
    by_status: StatusHook | None = None,
) -> Iterator[None]:
    """Run the block; raise ``error(message)`` / ``auth_error(what)`` for the library's failures of ``what``.

    ``by_status`` may map an HTTP status to a more specific error (a 403, a 409); the generic message
    names the status and the redacted response.
    """
    from oauthlib.oauth2.rfc6749.errors import InsecureTransportError, OAuth2Error
    from sentinelhub.exceptions import (
        DownloadFailedException,
        MissingDataInRequestException,
        OutOfRequestsException,
        SHRateLimitWarning,
    )

    from lcms_tasks.sources.credentials import redact

    try:
        with warnings.catch_warnings():
            # 429s are handled (Retry-After honoured, attempts bounded); sentinelhub-py also warns on each.
            warnings.simplefilter("ignore", SHRateLimitWarning)
            yield
    except InsecureTransportError as exc:
        raise error(
            f"{what}: token URL {token_url} is not https; OAuth2 refuses plain http "
            "(set OAUTHLIB_INSECURE_TRANSPORT=1 only for a local test server)"
        ) from exc
    except OAuth2Error as exc:
        if exc.error in {"invalid_client", "unauthorized_client"} or exc.status_code == 401:
            raise auth_error(f"token request to {token_url}") from exc
        raise error(f"{what}: token request failed: {exc.error}: {redact(str(exc.description))}") from exc
    except OutOfRequestsException as exc:
        raise error(f"{what}: Sentinel Hub still rate-limits (HTTP 429) after {max_retries + 1} attempts") from exc
    except MissingDataInRequestException as exc:
        where = f" from {base_url}" if base_url else ""
        raise error(f"{what}: unexpected response{where}: {redact(str(exc))}") from exc
    except DownloadFailedException as exc:
        response = getattr(exc.request_exception, "response", None)
        status = getattr(response, "status_code", None)
        if status == 401:
            raise auth_error(what) from exc
        detail = redact(str(exc)).replace("\n", " ")
        specific = by_status(status, detail) if by_status is not None else None
        if specific is not None:
            raise specific from exc
        raise error(f"{what}: HTTP {status or 'error'}: {detail}") from exc
