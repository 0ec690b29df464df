"""``create_app(settings)``: the Starlette application, routes listed in one place.

Run: ``uvicorn --factory api.app:create_app`` (settings from ``fusionrec.toml`` / ``FUSIONREC_*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from api.analytics.endpoints import analytics_routes, build_analytics
from api.auth import ApiKeyMiddleware, exposure_problem
from api.campaigns.endpoints import (
    create_campaign,
    delete_campaign,
    get_arms,
    get_campaign,
    list_campaigns,
    put_campaign,
)
from api.catalog import sync_forever
from api.dashboard import dashboard_routes
from api.errors import exception_handlers
from api.events import post_events
from api.feedback_reader import drain_forever
from api.health import healthz, metrics, readyz
from api.http_protocol import SERVER_STOPPING
from api.items import IdPathRoute, get_catalog, get_item
from api.loop_lag import CollectorPauses, LoopLagProbe, StallWatchdog
from api.openapi import openapi
from api.rate_limit import RateLimitMiddleware
from api.raw_path_route import RawPathRoute
from api.recommendations import get_recommendations
from api.request_metrics import RequestMetricsMiddleware
from api.services import ApiMetrics, Services, build_services
from api.unread_body import CloseUnreadBodyMiddleware
from operators.scheduling import set_own_session_nice
from operators.settings import Settings

__all__ = ["create_app", "load_model_then_build_vectors"]

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1


def _tune_gc() -> None:
    """Shorter, rarer cycle-collector pauses under load: what startup built (catalog index, model,
    caches) moves out of the collector's sight, and young objects are collected in larger batches."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 1000)


def _limit_malloc_arenas(arenas: int) -> None:
    """At most ``arenas`` glibc malloc arenas for this process (``mallopt(M_ARENA_MAX)``; 0 or not glibc: unchanged).

    Each thread that allocates gets an arena of its own (up to 8 per core), and memory freed in one is
    reused only by the threads on it: what the catalog reader thread frees after its bulk build stays in the
    reader's arena while the event loop grows another. Threads already attached keep their arena, so this
    runs before the app starts any (its lifespan); Python code allocates under the GIL, so one arena is
    hardly contended.
    """
    if arenas > 0:
        _mallopt(_M_ARENA_MAX, arenas, "M_ARENA_MAX")


def _mallopt(param: int, value: int, name: str) -> bool:
    """``mallopt(param, value)``; False if this is not glibc (nothing set), a warning if glibc refuses it."""
    try:
        ok = ctypes.CDLL(None).mallopt(param, value)
    except (OSError, AttributeError):  # not glibc
        return False
    if not ok:
        log.warning("mallopt(%s, %d) was refused", name, value)
    return True


def _fix_malloc_thresholds(mmap_threshold_bytes: int, trim_threshold_bytes: int) -> None:
    """Fixed glibc thresholds (``mallopt(M_MMAP_THRESHOLD)``, ``mallopt(M_TRIM_THRESHOLD)``; 0 or not glibc: unchanged).

    By default glibc raises its mmap threshold to the size of each mmapped block freed, up to 32 MB (and the
    trim threshold to twice that): after the first large numpy temporaries are freed, later ones up to 32 MB
    come from the heap, and what they leave free among long-lived blocks stays in RSS (~70 MB in a worker at
    1M items, and ~180 MB more at the peak while the vector index builds beside the first requests;
    bench/RESULTS.md, issue 14 session 26). A fixed threshold (setting either stops the adjustment) keeps each
    block from ``mmap_threshold_bytes`` on in a mapping of its own, returned to the OS when freed, and the
    heap's free top is returned beyond ``trim_threshold_bytes``.
    """
    for param, value, name in ((_M_MMAP_THRESHOLD, mmap_threshold_bytes, "M_MMAP_THRESHOLD"),
                               (_M_TRIM_THRESHOLD, trim_threshold_bytes, "M_TRIM_THRESHOLD")):
        if value > 0 and not _mallopt(param, value, name):
            return


async def load_model_then_build_vectors(svc: Services, poll_s: float = 0.05) -> None:
    """Start-up order: the catalog's initial build swapped in (with the vector index's first inverted lists, laid
    out on the reader thread before the swap: ``CatalogView.load_initial``), then the model version loaded, then
    ``CatalogView.vector_build_gate`` opened (nothing to order without one). The gate holds only a background
    build of the lists that starts before the version is in (a catalog that reaches ``vector_exact_below`` by
    live changes): its layout waits until the version has loaded.

    At 1M items a worker held ~1.1 GB at its peak when the version (~250 MB while it loads) came with the first
    requests while the lists were laid out (~100 MB beside the row matrix); one after the other they stay
    under 1 GB (bench/RESULTS.md, issue 14 sessions 27-28). The version is loaded as the first request would load
    it, on the loop, after the swap, so its ids become the catalog's strings at once (``CatalogView.intern_ids``).
    The gate is opened whatever happens here (a version that cannot be loaded, a cancelled start-up).
    """
    view = svc.catalog_view
    gate = view.vector_build_gate
    if gate is None:
        return
    try:
        while not view.initial_built:
            await asyncio.sleep(poll_s)
        view.sync()  # the built index in use: the version's ids are interned as it loads
        svc.models.current()
    finally:
        gate.set()


def create_app(settings: Settings | None = None) -> Starlette:
    """The app; raises ``RuntimeError`` if ``api.host`` is not loopback and the keys leave it open (``exposure_problem``)."""
    settings = settings or Settings()
    a = settings.api
    problem = exposure_problem(a.host, a.require_keys, a.admin_keys, a.client_keys)
    if problem:
        raise RuntimeError(problem)
    _limit_malloc_arenas(a.malloc_arenas)
    _fix_malloc_thresholds(a.malloc_mmap_threshold_bytes, a.malloc_trim_threshold_bytes)
    api_metrics = ApiMetrics()  # made here: the request middleware is built before the lifespan runs

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        if a.autogroup_nice is not None:  # the whole session (every worker) at this CPU weight, if it is ours
            set_own_session_nice(a.autogroup_nice)
        app.state.services = build_services(settings, api_metrics)
        app.state.analytics = build_analytics(settings)
        reader = app.state.services.reader
        drain = asyncio.create_task(drain_forever(reader)) if reader is not None else None
        catalog_sync = asyncio.create_task(sync_forever(app.state.services.catalog_view))
        start_order = asyncio.create_task(load_model_then_build_vectors(app.state.services))
        collections = CollectorPauses(api_metrics.gc_pause).install()
        watchdog = (StallWatchdog(a.loop_stall_log_ms / 1000, collections=collections).start()
                    if a.loop_stall_log_ms > 0 else None)
        lag_probe = asyncio.create_task(LoopLagProbe(api_metrics.loop_lag, watchdog=watchdog).run_forever())
        if settings.api.gc_tuning:
            _tune_gc()
        durable = app.state.services.durable
        try:  # the server's protocol calls this when it stops taking requests (api/http_protocol.py)
            yield {SERVER_STOPPING: lambda: durable.begin_stop(min(1.0, a.stop_timeout_s / 2))}
        finally:
            if drain is not None:
                drain.cancel()
            catalog_sync.cancel()
            start_order.cancel()
            lag_probe.cancel()
            collections.uninstall()
            if watchdog is not None:
                watchdog.stop()
            app.state.analytics.request_stop()  # its reader ends while the services' readers do
            stop_by = time.monotonic() + a.stop_timeout_s  # one bound for both (a broker that is down held it ~45 s)
            app.state.services.close(a.stop_timeout_s)
            app.state.analytics.close(max(0.0, stop_by - time.monotonic()))

    routes = [
        Route("/v1/recommendations", get_recommendations, methods=["GET"]),
        Route("/v1/events", post_events, methods=["POST"]),
        IdPathRoute("/v1/items/{item_id:path}", get_item, methods=["GET"]),  # an id with a line break: a 422
        Route("/v1/catalog", get_catalog, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/campaigns", list_campaigns, methods=["GET"]),
        Route("/v1/campaigns", create_campaign, methods=["POST"]),
        # an id with an encoded slash (nope%2Fx) reaches the handler whole: a 422 naming campaign_id
        RawPathRoute("/v1/campaigns/{campaign_id}", get_campaign, methods=["GET"]),
        RawPathRoute("/v1/campaigns/{campaign_id}", put_campaign, methods=["PUT"]),
        RawPathRoute("/v1/campaigns/{campaign_id}", delete_campaign, methods=["DELETE"]),
        RawPathRoute("/v1/campaigns/{campaign_id}/arms", get_arms, methods=["GET"]),
        *analytics_routes(),
        *dashboard_routes(),
    ]
    middleware = [Middleware(ApiKeyMiddleware, admin_keys=a.admin_keys, client_keys=a.client_keys)] if a.require_keys else []
    if a.rate_limit:  # outermost: a flood is refused before anything else runs
        middleware.insert(0, Middleware(RateLimitMiddleware, limits=a.rate_limit,
                                        keys=[*a.admin_keys, *a.client_keys] if a.require_keys else []))
    if a.cors_origins:  # a shop's pages on another origin: preflights answered before the key check (they carry no key)
        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=a.cors_origins, allow_methods=["GET", "POST"],
                                        allow_headers=["X-API-Key", "Authorization", "Content-Type"], max_age=600))
    # outermost: every answer is counted, the key check's and the rate limit's too
    middleware.insert(0, Middleware(RequestMetricsMiddleware, requests=api_metrics.requests, latency=api_metrics.latency))
    # outside all of them: whichever answers before the body was read to its end closes the connection
    middleware.insert(0, Middleware(CloseUnreadBodyMiddleware))
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=exception_handlers,  # type: ignore[arg-type]
                    lifespan=lifespan)
    app.router.redirect_slashes = False  # redirected by the 404 handler, to a relative Location (api/errors.py)
    return app
