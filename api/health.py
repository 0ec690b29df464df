"""``GET /healthz`` (readiness) and ``GET /metrics`` (Prometheus text format)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.flow_metrics import flow_metrics_text
from api.json import json_response
from api.services import Services
from api.trainer_view import trainer_metrics_text

__all__ = ["healthz", "metrics"]


async def healthz(request: Request) -> Response:
    svc: Services = request.app.state.services
    ready = svc.topn.wait_caught_up(0) and svc.catalog.wait_caught_up(0)
    return json_response({"status": "ok" if ready else "starting", "users_with_topn": len(svc.topn),
                          "catalog_items": len(svc.catalog)}, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    svc: Services = request.app.state.services
    svc.metrics.topn_users.set(len(svc.topn))
    svc.metrics.catalog_items.set(len(svc.catalog))
    svc.metrics.catalog_rejected.set(len(svc.catalog_view.rejected))
    body = (generate_latest(svc.metrics.registry) + trainer_metrics_text(svc.settings.stream.model_dir)
            + await run_in_threadpool(flow_metrics_text, svc))  # the flow's counters, lag, model (api/flow_metrics.py)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
