"""``/``: the operator application's place. Until it lands (next issue), a small page linking what is served."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["Operator application"])


@router.get("/", response_class=HTMLResponse, summary="Operator application (start page)", operation_id="operatorHome")
def home(request: Request) -> HTMLResponse:
    settings = request.app.state.store.settings
    base = str(request.base_url).rstrip("/")
    collection = escape(settings.collection)
    links = [
        (f"{base}/ogc/", "OGC API Features landing page (QGIS: add an OGC API Features connection to this URL)"),
        (f"{base}/ogc/collections/{collection}/items?f=html", "The change polygons (HTML)"),
        (f"{base}/ogc/collections/{collection}/viewer.html", "Map of the changes (vector tiles)"),
        (f"{base}/docs", "API documentation"),
        (f"{base}/openapi.json", "OpenAPI document"),
        (f"{base}/healthz", "Health"),
    ]
    items = "\n".join(f'    <li><a href="{href}">{escape(text)}</a></li>' for href, text in links)
    page = f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{escape(settings.title)}</title></head>
<body>
  <h1>{escape(settings.title)}</h1>
  <p>The operator application comes here; meanwhile the change store is served at:</p>
  <ul>
{items}
  </ul>
</body>
</html>
"""
    return HTMLResponse(page)
