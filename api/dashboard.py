"""``GET /dashboard``: the operator's dashboard, one static page drawing the analytics API.

The page (``api/static/dashboard.html`` + ``dashboard.js``) fetches ``/v1/analytics/*`` and the
optimizer's ``/v1/campaigns/{id}/arms`` and draws with uPlot (MIT, vendored from the npm
registry into ``api/static/vendor/``; no CDN at run time). Data calls need an admin key when
``api.require_keys`` is on: the page asks for it in a form, keeps it in the tab's sessionStorage and
sends it as ``X-API-Key``; it never goes in a URL (where it would reach access logs, the browser's
history and Referer headers), and the page is served with ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "dashboard", "dashboard_routes"]

STATIC_DIR = Path(__file__).resolve().parent / "static"


async def dashboard(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html",
                        headers={"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})


def dashboard_routes() -> list[BaseRoute]:
    """``/dashboard`` and its static files under ``/dashboard/static``."""
    return [Route("/dashboard", dashboard, methods=["GET"]),
            Mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")]
