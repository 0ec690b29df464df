"""``fusionrec_api_requests`` and ``fusionrec_api_latency_seconds`` are recorded (trial 31, finding 5: defined, never
recorded): by route template and status, on a tiny app and on the real one over HTTP."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from api.request_metrics import UNROUTED, RequestMetricsMiddleware
from api.services import ApiMetrics
from tests.harness import ApiServer, make_settings


def _sample(m: ApiMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def _tiny_app(m: ApiMetrics) -> Starlette:
    async def item(request: Request) -> PlainTextResponse:
        if request.path_params["item_id"] == "missing":
            raise HTTPException(404)
        return PlainTextResponse("ok")

    async def boom(request: Request) -> PlainTextResponse:
        raise RuntimeError("a bug")

    return Starlette(routes=[Route("/items/{item_id}", item), Route("/boom", boom)],
                     middleware=[Middleware(RequestMetricsMiddleware, requests=m.requests, latency=m.latency)])


def test_requests_are_counted_by_route_template_and_status_with_their_latency():
    m = ApiMetrics()

    async def calls() -> list[int]:
        transport = httpx.ASGITransport(app=_tiny_app(m), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            return [(await c.request(method, path)).status_code for method, path in (
                ("GET", "/items/i0"), ("GET", "/items/i1"), ("GET", "/items/i2"), ("GET", "/items/missing"),
                ("POST", "/items/i1"), ("GET", "/boom"), ("GET", "/nope/0"), ("GET", "/nope/1"))]

    assert asyncio.run(calls()) == [200, 200, 200, 404, 405, 500, 404, 404]
    count = "fusionrec_api_requests_total"
    assert _sample(m, count, endpoint="/items/{item_id}", status="200") == 3  # the template, never /items/i0
    assert _sample(m, count, endpoint="/items/{item_id}", status="404") == 1
    assert _sample(m, count, endpoint="/items/{item_id}", status="405") == 1
    assert _sample(m, count, endpoint="/boom", status="500") == 1  # raised in the handler: Starlette's 500
    assert _sample(m, count, endpoint=UNROUTED, status="404") == 2
    assert _sample(m, "fusionrec_api_latency_seconds_count", endpoint="/items/{item_id}") == 5
    assert 0 < _sample(m, "fusionrec_api_latency_seconds_sum", endpoint="/items/{item_id}") < 5
    endpoints = {s.labels["endpoint"] for f in m.registry.collect() if f.name == "fusionrec_api_requests"
                 for s in f.samples}
    assert endpoints == {"/items/{item_id}", "/boom", UNROUTED}  # bounded: no raw path is a label


@pytest.mark.integration
def test_the_api_exports_its_request_counters_and_latency(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=1)
    with ApiServer(s) as api, httpx.Client(base_url=api.url, timeout=10) as c:
        assert c.get("/v1/recommendations", params={"user_id": "u1"}).status_code == 200
        assert c.get("/v1/recommendations", params={"user_id": "u1", "n": "0"}).status_code == 422
        assert c.get("/v1/items/a%2Fb").status_code == 404
        assert c.get("/v1/nope").status_code == 404
        text = c.get("/metrics").text
    assert 'fusionrec_api_requests_total{endpoint="/v1/recommendations",status="200"} 1.0' in text
    assert 'fusionrec_api_requests_total{endpoint="/v1/recommendations",status="422"} 1.0' in text
    assert 'fusionrec_api_requests_total{endpoint="/v1/items/{item_id:path}",status="404"} 1.0' in text
    assert f'fusionrec_api_requests_total{{endpoint="{UNROUTED}",status="404"}} 1.0' in text
    assert 'fusionrec_api_latency_seconds_count{endpoint="/v1/recommendations"} 2.0' in text
    assert "a%2Fb" not in text and "/v1/nope" not in text

