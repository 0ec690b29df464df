"""Requests counted by endpoint and status, and their latency by endpoint: a pure ASGI middleware.

The endpoint is the route's template (``/v1/items/{item_id:path}``, ``/v1/campaigns/{campaign_id}``), read from
``scope["route"]`` once the router has matched the request, never the raw path, so the label's values are the
app's routes and nothing a client can invent. A request answered before routing (the key check's 401/403, the
rate limit's 429, a CORS preflight) or matching no route (404) counts as ``unrouted``. An exception out of the
app (answered 500 by Starlette's outermost error middleware) counts as 500.

Outermost of the app's own middleware, so every answer is counted. Per request it costs two clock reads, one
wrapper of ``send`` and a dict lookup of the label children (``bench/request_metrics.py``: ~2 µs per request).
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["UNROUTED", "RequestMetricsMiddleware"]

UNROUTED = "unrouted"
"""The endpoint of a request that matched no route or was answered before routing."""


class RequestMetricsMiddleware:
    """Counts each HTTP request in ``requests`` (labels ``endpoint``, ``status``) and observes its time to the
    end of the app's answer, seconds, in ``latency`` (label ``endpoint``).

    Parameters
    ----------
    app : ASGI app
    requests : prometheus_client.Counter
        With labels ``["endpoint", "status"]`` (``ApiMetrics.requests``).
    latency : prometheus_client.Histogram
        With labels ``["endpoint"]`` (``ApiMetrics.latency``).
    """

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        """Label children by (endpoint, status): a lookup per request instead of ``labels()`` (lock, tuple of
        label strings); bounded by the routes times the statuses the app answers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        except Exception:
            self._record(scope, status or 500, time.perf_counter() - t0)
            raise
        self._record(scope, status or 500, time.perf_counter() - t0)

    def _record(self, scope: Scope, status: int, elapsed_s: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", UNROUTED) if route is not None else UNROUTED
        children = self._children.get((endpoint, status))
        if children is None:
            children = self._children[(endpoint, status)] = (self.requests.labels(endpoint, str(status)),
                                                             self.latency.labels(endpoint))
        children[0].inc()
        children[1].observe(elapsed_s)
