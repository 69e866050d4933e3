"""The operator application: ``/`` serves its page, ``/static/...`` its files (``lcms_service/static``).

The page is plain HTML with ES modules and the vendored MapLibre GL JS (see ``static/vendor/VENDOR.md``):
no build step and no CDN, so it works offline. Every URL in it is relative to its ``<base href>``, which is
set here to the app's mount point (``/`` under ``lcms serve``, ``/lcms/`` inside Airflow's API server), so
the same files serve both. A Content-Security-Policy restricts the page to the service's own origin
(MapLibre's worker starts from a ``blob:`` URL).

The static files are served by a route rather than a ``Mount``: an ``APIRouter`` hands its routes to the
app (``include_router``), and mounts are not among what it hands over.
"""

from __future__ import annotations

import posixpath
from html import escape
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

#: The application's files: index.html, app.css, js/*.js, vendor/*.
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
INDEX_FILE = STATIC_DIR / "index.html"
#: The placeholder in index.html that :func:`home` replaces with the mount point.
BASE_PLACEHOLDER = '<base href="/">'

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",  # MapLibre and the swipe set element styles
        "img-src 'self' data: blob:",  # MapLibre's control icons are data: URIs; decoded tiles are blobs
        "worker-src 'self' blob:",  # MapLibre starts its worker from a blob: URL
        "child-src 'self' blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'self'",
    ]
)

router = APIRouter(tags=["Operator application"])
_static = StaticFiles(directory=STATIC_DIR)


def page(root_path: str) -> str:
    """index.html with its base URL set to ``root_path`` (the app's mount point, '' at the server's root)."""
    html = INDEX_FILE.read_text(encoding="utf-8")
    if BASE_PLACEHOLDER not in html:
        raise RuntimeError(f"{INDEX_FILE} has lost its {BASE_PLACEHOLDER} placeholder")
    base = escape(root_path.rstrip("/") + "/", quote=True)
    return html.replace(BASE_PLACEHOLDER, f'<base href="{base}">', 1)


@router.get(
    "/",
    response_class=HTMLResponse,
    summary="The operator application (Viewer and Validation Tool)",
    operation_id="operatorHome",
)
def home(request: Request) -> HTMLResponse:
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": CONTENT_SECURITY_POLICY}
    return HTMLResponse(page(request.scope.get("root_path", "")), headers=headers)


@router.api_route("/static/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def static_file(path: str, request: Request) -> Response:
    """A file of the application (404 for anything outside ``lcms_service/static``)."""
    # As StaticFiles.get_path does: '.' and '..' resolved first; lookup_path then refuses anything outside.
    normalised = posixpath.normpath(path.lstrip("/"))
    response: Response = await _static.get_response(normalised, request.scope)
    return response
