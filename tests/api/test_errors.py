"""Error bodies (api/errors.py): what a 4xx echoes of the input is bounded, however long the input was."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.campaigns.schema import CampaignIn
from api.errors import MAX_ECHO_CHARS, ApiError, exception_handlers, validate_params
from api.recommendations import CampaignRequestParams


async def _query(request: Request) -> Response:
    validate_params(CampaignRequestParams, dict(request.query_params))
    return Response()


async def _body(request: Request) -> Response:
    validate_params(CampaignIn, await request.json())
    return Response()


async def _iql(request: Request) -> Response:  # an IQL error quoting a long string literal of the filter
    found = "string '" + "x" * 3990 + "'"
    raise ApiError(400, "filter", f"IQL error at line 1, column 9: expected a number, found {found}", found=found,
                   message=f"... found {found}", line=1, column=9)


class _Client:
    """The app in process over ASGI (httpx), one call at a time."""

    def __init__(self) -> None:
        routes = [Route("/q", _query), Route("/b", _body, methods=["POST"]), Route("/iql", _iql)]
        self.app = Starlette(routes=routes, exception_handlers=exception_handlers)  # type: ignore[arg-type]

    def _call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://api") as c:
                return await c.request(method, url, **kw)
        return asyncio.run(go())

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self._call("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self._call("POST", url, **kw)


def _client() -> _Client:
    return _Client()


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_long_inputs_are_echoed_cut_and_marked():
    c = _client()
    cart = ",".join(f"i{k:06d}" for k in range(500))  # 3,999 characters; 4,100 with the rest: over the 4,000 limit
    r = c.get("/q", params={"campaign": "home", "cart": cart + "," + "y" * 100})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == "cart" and "at most 4000 characters" in err["reason"]
    assert err["value"] == cart[:MAX_ECHO_CHARS] + f"… ({len(cart) + 101 - MAX_ECHO_CHARS} more characters)"
    r = c.get("/q", params={"campaign": "c" * 5000})  # a long query value
    assert r.status_code == 422 and r.json()["error"]["value"].endswith("… (4500 more characters)"), r.text
    r = c.post("/b", json={"scenario": "top", "goal": "g" * 5000})  # a long body field
    assert r.status_code == 422 and r.json()["error"]["field"] == "goal", r.text
    assert r.json()["error"]["value"] == "g" * MAX_ECHO_CHARS + "… (4500 more characters)"
    r = c.get("/iql")
    assert r.status_code == 400
    err = r.json()["error"]
    assert (err["line"], err["column"]) == (1, 9) and err["found"].startswith("string 'xxx")
    for body in (c.get("/q", params={"campaign": "home", "cart": cart * 2}).json(), err):
        assert max(len(s) for s in _strings(body)) <= MAX_ECHO_CHARS + len("… (99999 more characters)"), body


def test_short_inputs_are_echoed_whole():
    r = _client().get("/q", params={"campaign": "bad id!"})
    assert r.status_code == 422 and r.json()["error"]["value"] == "bad id!", r.text
