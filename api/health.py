"""``GET /healthz`` (liveness), ``GET /readyz`` (readiness) and ``GET /metrics`` (Prometheus text format).

Liveness says the process works: the event loop answers and its background threads (topic
readers, producer poller, broker probe) run; an orchestrator restarts a process that fails it.
It stays 200 through a broker outage, which a restart would not cure. Readiness says requests
get right answers now: the broker answers (events can be made durable) and the readers have
caught up with what was written before start (top-N lists, catalog, the flow's windowed
popularity, feedback for the optimizer); 503 with the reasons otherwise.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.flow_metrics import flow_metrics_text
from api.json import json_response
from api.services import Services
from api.trainer_view import trainer_metrics_text

__all__ = ["healthz", "readyz", "metrics", "not_ready_reasons"]


def not_ready_reasons(svc: Services) -> list[str]:
    """Why the API is not ready (empty when it is)."""
    reasons = []
    if not svc.durable.broker_up:
        reasons.append("broker: the event broker does not answer")
    if not svc.topn.wait_caught_up(0):
        reasons.append("user-topn: still reading the published lists")
    # the index is built on the reader thread before it reports caught up (TopicTable.on_caught_up): one reason
    if not svc.catalog.wait_caught_up(0) or not svc.catalog_view.initial_built:
        reasons.append("catalog: still reading the catalog and building its index")
    if not svc.window_table.wait_caught_up(0):
        reasons.append("popularity: still reading the flow's windowed popularity")
    if svc.reader is not None and not svc.reader.wait_caught_up(0):
        reasons.append("feedback: still folding the served lists and events (optimizer)")
    return reasons


def _catalog_items(svc: Services) -> int:
    """Catalog items applied (``CatalogView.n_items``: deleted ones not counted), or 0 while the initial
    catalog index is being built (until then a request sees none of them: a client that waits for this
    count can rely on it)."""
    return svc.catalog_view.n_items if svc.catalog_view.initial_built else 0


def _topn_estimate(svc: Services) -> dict[str, int]:
    """``users_with_topn_estimate``: the keys the user-topn store holds (users, plus a popular list per
    partition), as RocksDB estimates them (``rocksdb.estimate-num-keys``: it can jump between calls, e.g.
    1761 -> 13565 -> 3288 while users only grew, and is exact only after a compaction; counting exactly
    would scan the store on every probe; exact with ``api.topn_store`` ``memory``). ``users_with_topn`` is
    its former name, the same estimate, kept for checks that read it (trial 31, defect 8.4)."""
    n = len(svc.topn)
    return {"users_with_topn_estimate": n, "users_with_topn": n}


async def healthz(request: Request) -> Response:
    svc: Services = request.app.state.services
    threads = {"producer": svc.durable.alive(), "user-topn": svc.topn.alive(), "catalog": svc.catalog.alive(),
               "item-links": svc.item_links.alive(), "popularity": svc.window_table.alive()}
    if svc.reader is not None:
        threads["feedback"] = svc.reader.alive()
    dead = sorted(k for k, ok in threads.items() if not ok)
    return json_response({"status": "ok" if not dead else "failing", "dead_threads": dead,
                          "ready": not not_ready_reasons(svc), "broker_up": svc.durable.broker_up,
                          **_topn_estimate(svc), "catalog_items": _catalog_items(svc),
                          # the newest model version could not be loaded: lists come from the previous one or popularity
                          "model_error": svc.models.load_error},
                         status_code=200 if not dead else 503)


async def readyz(request: Request) -> Response:
    svc: Services = request.app.state.services
    reasons = not_ready_reasons(svc)
    return json_response({"status": "ready" if not reasons else "not_ready", "reasons": reasons,
                          **_topn_estimate(svc), "catalog_items": _catalog_items(svc),
                          # where the optimizer's state came from: local snapshot, published one, or the history
                          "optimizer_from": svc.reader.restored_from if svc.reader is not None else None,
                          # where the local user-topn store started from: a published checkpoint or the topic
                          "topn_from": svc.topn_checkpoints.restored_from if svc.topn_checkpoints is not None else None,
                          "model_error": svc.models.load_error},
                         status_code=200 if not reasons else 503)


async def metrics(request: Request) -> Response:
    svc: Services = request.app.state.services
    svc.metrics.topn_users.set(len(svc.topn))
    svc.metrics.catalog_items.set(_catalog_items(svc))
    svc.metrics.broker_up.set(1 if svc.durable.broker_up else 0)
    svc.metrics.catalog_rejected.set(len(svc.catalog_view.rejected))
    body = (generate_latest(svc.metrics.registry) + trainer_metrics_text(svc.settings.stream.model_dir)
            + await run_in_threadpool(flow_metrics_text, svc))  # the flow's counters, lag, model (api/flow_metrics.py)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
