"""``create_app(settings)``: the Starlette application, routes listed in one place.

Run: ``uvicorn --factory api.app:create_app`` (settings from ``fusionrec.toml`` / ``FUSIONREC_*``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import Route

from api.analytics import analytics_routes, build_analytics
from api.dashboard import dashboard_routes
from api.errors import exception_handlers
from api.events import post_events
from api.health import healthz, metrics
from api.items import get_item
from api.recommendations import get_recommendations
from api.services import build_services
from operators.settings import Settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.services = build_services(settings)
        app.state.analytics = build_analytics(settings)
        try:
            yield
        finally:
            app.state.analytics.close()
            app.state.services.close()

    routes = [
        Route("/v1/recommendations", get_recommendations, methods=["GET"]),
        Route("/v1/events", post_events, methods=["POST"]),
        Route("/v1/items/{item_id}", get_item, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *analytics_routes(),
        *dashboard_routes(),
    ]
    return Starlette(routes=routes, exception_handlers=exception_handlers, lifespan=lifespan)  # type: ignore[arg-type]
