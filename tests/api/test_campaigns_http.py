"""Campaigns over HTTP against a real broker: CRUD, IQL errors at save time, persistence, keys and scopes."""

from __future__ import annotations

import gzip
import time

import httpx
import orjson
import pytest

from operators.settings import Settings
from simulators.producer import EventProducer
from simulators.shop import SyntheticShop
from tests.harness import ApiServer, make_settings, wait_for

pytestmark = pytest.mark.integration

ADMIN, CLIENT = {"X-API-Key": "admin-1"}, {"X-API-Key": "client-1"}


def _with_api(s: Settings, **api: object) -> Settings:
    return s.model_copy(update={"api": s.api.model_copy(update=api)})




@pytest.fixture()
def shop_settings(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=2)
    shop = SyntheticShop(n_items=200, n_users=30, seed=3)
    with EventProducer.from_settings(s.kafka) as producer:
        producer.send_catalog(shop.catalog())
    return s


def _ready(client: httpx.Client) -> bool:
    r = client.get("/healthz")
    return r.status_code == 200 and r.json()["catalog_items"] > 0


def test_crud_validation_iql_errors_and_restart(shop_settings):
    s = shop_settings
    body = {"campaign_id": "home", "scenario": "top", "filter": "price < 80 AND category != \"toys\"",
            "boosters": "BOOST 2 IF on_sale == true", "n": 5, "goal": "add_to_cart", "window_s": 3600,
            "arms": [{"name": "day", "strategy": "top", "params": {"window": "1d"}},
                     {"name": "pop", "strategy": "popular"}],
            "optimizer": {"prior_alpha": 1, "prior_beta": 9, "floor": 0.05}}
    with ApiServer(s) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        wait_for(lambda: _ready(c), what="catalog")
        r = c.post("/v1/campaigns", json=body)
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["version"] == 1 and [a["name"] for a in created["arms"]] == ["day", "pop"]
        assert c.post("/v1/campaigns", json=body).status_code == 409
        assert c.get("/v1/campaigns/home").json() == created
        assert [x["campaign_id"] for x in c.get("/v1/campaigns").json()["campaigns"]] == ["home"]
        put = c.put("/v1/campaigns/home", json={**body, "n": 7})
        assert put.status_code == 200 and put.json()["version"] == 2 and put.json()["n"] == 7

        # IQL errors are caught when the campaign is saved: 400 with line and column
        r = c.put("/v1/campaigns/bad", json={**body, "campaign_id": None, "filter": "price < 80\nAND brand =="})
        assert r.status_code == 400
        err = r.json()["error"]
        assert (err["field"], err["line"], err["column"]) == ("filter", 2, 13)
        assert "expected" in err["reason"]
        r = c.put("/v1/campaigns/bad", json={**body, "campaign_id": None, "filter": "colour == \"red\""})
        assert r.status_code == 400 and r.json()["error"]["line"] == 1 and "colour" in r.json()["error"]["reason"]
        r = c.put("/v1/campaigns/bad", json={**body, "campaign_id": None, "filter": "price == \"cheap\""})
        assert r.status_code == 400 and r.json()["error"]["field"] == "filter"
        r = c.put("/v1/campaigns/bad", json={**body, "campaign_id": None, "boosters": "BOOST 2 IF nope == 1"})
        assert r.status_code == 400 and r.json()["error"]["field"] == "boosters"
        # every other field is validated and named
        r = c.put("/v1/campaigns/bad", json={**body, "arms": [{"name": "x", "strategy": "magic"}]})
        assert r.status_code == 422 and r.json()["error"]["field"] == "arms.0.strategy"
        r = c.put("/v1/campaigns/bad", json={**body, "goal": "teleport"})
        assert r.status_code == 422 and r.json()["error"]["field"] == "goal"
        r = c.put("/v1/campaigns/bad", json={**body, "goal": "rec_request"})  # server-only: every served list would reach it
        assert r.status_code == 422 and r.json()["error"]["field"] == "goal", r.text
        r = c.put("/v1/campaigns/bad", json={**body, "control_share": 1.5})
        assert r.status_code == 422 and r.json()["error"]["field"] == "control_share"
        r = c.put("/v1/campaigns/b%20d", json=body)
        assert r.status_code == 422 and r.json()["error"]["field"] == "campaign_id"
        assert c.post("/v1/campaigns", content=b"{nope").json()["error"]["field"] == "body"
        assert c.get("/v1/campaigns/bad").status_code == 404

        # serve a few lists: pulls are counted per arm
        for _ in range(6):
            r = c.get("/v1/recommendations", params={"campaign": "home", "user_id": "u00001"})
            assert r.status_code == 200, r.text
            assert r.json()["campaign"] == "home" and r.json()["arm"] in ("day", "pop")
        r = c.get("/v1/recommendations", params={"campaign": "nope"})
        assert r.status_code == 404 and r.json()["error"]["field"] == "campaign"
        wait_for(lambda: sum(a["pulls"] for a in c.get("/v1/campaigns/home/arms").json()["arms"]) == 6, what="pulls")
        arms_before = c.get("/v1/campaigns/home/arms").json()["arms"]
        time.sleep(s.api.snapshot_every_s + 0.5)

    with ApiServer(s) as api:  # restart: campaigns and optimizer state survive
        c = httpx.Client(base_url=api.url, timeout=10)
        assert c.get("/v1/campaigns/home").json()["version"] == 2
        arms_after = c.get("/v1/campaigns/home/arms").json()["arms"]
        assert [(a["arm"], a["pulls"]) for a in arms_after] == [(a["arm"], a["pulls"]) for a in arms_before]
        assert c.delete("/v1/campaigns/home").status_code == 204
        assert c.get("/v1/campaigns/home").status_code == 404
        assert c.delete("/v1/campaigns/home").status_code == 404


def test_a_campaign_id_with_an_encoded_slash_is_a_422_naming_campaign_id(shop_settings):
    """``DELETE /v1/campaigns/nope%2Fx`` was a 404 naming ``path`` (the server decodes the slash before routing, so
    no route matched), and ``GET /v1/campaigns/home%2Farms`` answered campaign ``home``'s arms. The whole id reaches
    the handler, which refuses it as any other invalid id: a 422 naming ``campaign_id`` and giving the id."""
    body = {"scenario": "top", "arms": [{"name": "pop", "strategy": "popular"}]}
    with ApiServer(shop_settings) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        wait_for(lambda: _ready(c), what="catalog")
        assert c.put("/v1/campaigns/home", json=body).status_code == 201
        invalid = c.delete("/v1/campaigns/b%20d").json()["error"]  # an id the pattern refuses, no slash in it
        assert invalid["field"] == "campaign_id" and invalid["value"] == "b d", invalid
        for method, path, sent in (("DELETE", "/v1/campaigns/nope%2Fx", "nope/x"),
                                   ("DELETE", "/v1/campaigns/nope%2fx", "nope/x"),
                                   ("GET", "/v1/campaigns/nope%2Fx", "nope/x"),
                                   ("PUT", "/v1/campaigns/nope%2Fx", "nope/x"),
                                   ("GET", "/v1/campaigns/nope%2Fx/arms", "nope/x"),
                                   ("GET", "/v1/campaigns/home%2Farms", "home/arms"),
                                   ("DELETE", "/v1/campaigns/home%2F%2E%2E%2Fhome", "home/../home")):
            r = c.request(method, path, json=body if method == "PUT" else None)
            assert r.status_code == 422, (method, path, r.text)
            assert r.json()["error"] == {**invalid, "value": sent}, (method, path, r.text)
        r = c.post("/v1/campaigns/nope%2Fx", json=body)  # the path exists, the method does not
        assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET, HEAD, PUT", r.text
        assert c.get("/v1/campaigns/nope%2Fx", params={"a": "b/c%2Fd"}).json()["error"]["value"] == "nope/x"
        # with a trailing slash: no 307 to campaign home (the slash decoded, the trailing ones stripped), and a
        # PUT that followed it replaced home (trial 36)
        for method, path in (("GET", "/v1/campaigns/home%2F/"), ("PUT", "/v1/campaigns/home%2F/"),
                             ("GET", "/v1/campaigns/home%2F%2F/"), ("GET", "/v1/campaigns/home%2Farms/")):
            r = c.request(method, path, json=body if method == "PUT" else None)
            assert r.status_code == 404 and "location" not in r.headers, (method, path, r.status_code, r.text)
        assert c.get("/v1/campaigns/home/").status_code == 307  # a plain trailing slash is redirected as before
        # to a relative Location from the path as sent and the query, never from the client's Host header (Starlette's
        # own redirect answered Host: evil.example with Location: http://evil.example/v1/campaigns/home)
        r = c.get("/v1/campaigns/home/", params={"a": "b c"}, headers={"Host": "evil.example"})
        assert (r.status_code, r.headers["location"]) == (307, "/v1/campaigns/home?a=b+c"), r.headers
        r = c.get("/v1/campaigns/home/arms/", headers={"Host": "evil.example"})
        assert (r.status_code, r.headers["location"]) == (307, "/v1/campaigns/home/arms")
        r = c.get("/dashboard/", headers={"Host": "evil.example"})
        assert (r.status_code, r.headers["location"]) == (307, "/dashboard")
        r = c.get("/dashboard/static/no-such-file.js")  # a route that answers 404 itself is not redirected
        assert r.status_code == 404 and "location" not in r.headers
        assert c.get("/v1/no-such-route/").status_code == 404
        assert [x["campaign_id"] for x in c.get("/v1/campaigns").json()["campaigns"]] == ["home"]  # nothing changed
        assert c.get("/v1/campaigns/home/arms").status_code == 200
        assert c.delete("/v1/campaigns/home").status_code == 204
        assert c.delete("/v1/campaigns/home").json()["error"] == {"field": "campaign_id",
                                                                  "reason": "unknown campaign 'home'"}


def test_api_keys_and_scopes(shop_settings):
    s = _with_api(shop_settings, require_keys=True, admin_keys=["admin-1"], client_keys=["client-1"])
    with ApiServer(s) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        assert c.get("/healthz").status_code in (200, 503)  # open
        assert c.get("/openapi.json").status_code == 200
        r = c.get("/v1/campaigns")
        assert r.status_code == 401 and r.json()["error"]["field"] == "api_key"
        assert c.get("/v1/campaigns", headers={"X-API-Key": "wrong"}).status_code == 401
        r = c.get("/v1/campaigns", headers=CLIENT)
        assert r.status_code == 403 and "admin" in r.json()["error"]["reason"]
        assert c.get("/v1/campaigns", headers=ADMIN).status_code == 200
        assert c.get("/v1/campaigns", headers={"Authorization": "Bearer admin-1"}).status_code == 200
        assert c.get("/v1/items/i000001", headers=CLIENT).status_code == 403
        assert c.get("/v1/recommendations", params={"user_id": "u1"}).status_code == 401
        assert c.get("/v1/recommendations", params={"user_id": "u1"}, headers=CLIENT).status_code == 200
        assert c.get("/v1/recommendations", params={"user_id": "u1"}, headers=ADMIN).status_code == 200
        r = c.post("/v1/events", json={"type": "view", "user_id": "u1", "item_id": "i000001"}, headers=CLIENT)
        assert r.status_code == 202
        assert c.post("/v1/events", json={"type": "view", "user_id": "u1", "item_id": "i1"}).status_code == 401


def test_strategy_params_are_checked_when_saved(shop_settings):
    """A strategy parameter its strategy cannot use (``window``, ``category``, ``category_attribute`` of ``top``)
    is a 422 when the campaign is saved, naming the arm and the parameter, instead of a 201 and then a failure
    on every request that arm serves."""
    arms = [{"name": "day", "strategy": "top", "params": {"window": "1d"}}, {"name": "pop", "strategy": "popular"}]
    with ApiServer(shop_settings) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        wait_for(lambda: _ready(c), what="catalog")
        for arm_params, campaign_params, field, words in (
                ({"window": "soon"}, {}, "arms.1.params.window", "window of arm 'week' (strategy top): must be a duration"),
                ({"window": -3}, {}, "arms.1.params.window", "must be > 0"),
                ({"window": ["1d"]}, {}, "arms.1.params.window", "must be a duration"),
                ({"category": ["toys", "books"]}, {}, "arms.1.params.category", "must be one non-empty value"),
                ({"category": " "}, {}, "arms.1.params.category", "must be one non-empty value"),
                ({"category": "cheap", "category_attribute": "price"}, {}, "arms.1.params.category",
                 "must fit the catalog attribute 'price': expected a number for $category"),
                ({"category_attribute": "on sale"}, {}, "arms.1.params.category_attribute",
                 "must be the name of a catalog attribute"),
                ({}, {"window": "7 days"}, "params.window", "window of the campaign's params (every arm's)")):
            body = {"scenario": "top", "params": campaign_params,
                    "arms": [*arms[:1], {"name": "week", "strategy": "top", "params": arm_params}]}
            r = c.put("/v1/campaigns/bad", json=body)
            assert r.status_code == 422, (arm_params, r.text)
            err = r.json()["error"]
            assert err["field"] == field and words in err["reason"], (arm_params, err)
            assert err["param"] == field.rsplit(".", 1)[1] and err.get("arm") == ("week" if "arms" in field else None)
        assert c.get("/v1/campaigns/bad").status_code == 404
        # values the strategy can use are saved and served; a category attribute the catalog lacks is not an error
        for params in ({"window": "12h", "category": "bedding"}, {"window": 3600, "category": "x", "category_attribute": "colour"}):
            r = c.put("/v1/campaigns/ok", json={"scenario": "top", "arms": [{"name": "a", "strategy": "top", "params": params}]})
            assert r.status_code in (200, 201), (params, r.text)
            assert c.get("/v1/recommendations", params={"campaign": "ok"}).status_code == 200


def test_a_content_encoding_the_api_does_not_decode_is_a_415_as_for_events(shop_settings):
    """A gzip campaign was read as JSON and answered 400 "malformed JSON: str is not valid UTF-8"; POST and PUT
    refuse any content-coding but identity with the 415 of POST /v1/events (``api/json_body.py``), naming it."""
    body = orjson.dumps({"campaign_id": "zipped", "scenario": "top"})
    with ApiServer(shop_settings) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        wait_for(lambda: _ready(c), what="catalog")
        for coding, named in (("gzip", "gzip"), ("BR", "br"), ("identity, deflate", "deflate"), ("x-made-up", "x-made-up")):
            sent = gzip.compress(body) if named == "gzip" else body
            for r in (c.post("/v1/campaigns", content=sent, headers={"Content-Encoding": coding}),
                      c.put("/v1/campaigns/zipped", content=sent, headers={"Content-Encoding": coding})):
                assert r.status_code == 415, (coding, r.request.method, r.text)
                assert r.headers["accept-encoding"] == "identity"
                assert r.json()["error"] == {
                    "field": "content-encoding",
                    "reason": f"the API does not decode content-coding {named!r}: send the JSON body uncompressed "
                              "(no Content-Encoding, or identity)"}
        assert c.get("/v1/campaigns/zipped").status_code == 404  # nothing was saved
        r = c.post("/v1/campaigns", content=body, headers={"Content-Encoding": "identity"})
        assert r.status_code == 201, r.text
        r = c.put("/v1/campaigns/zipped", content=body, headers={"Content-Encoding": "identity"})
        assert r.status_code == 200, r.text


def test_wrong_json_types_are_named_in_json_terms(shop_settings):
    """A campaign body that is no object was a 422 naming a Python type (``got NoneType``, ``got list``), and a field
    of the wrong type said ``Input should be a valid dictionary or instance of ArmIn``; both speak JSON now."""
    with ApiServer(shop_settings) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        wait_for(lambda: _ready(c), what="catalog")
        for body, sent in ((b"null", "null"), (b"42", "number"), (b'"top"', "string"), (b"[]", "array"),
                           (b"true", "boolean")):
            for r in (c.post("/v1/campaigns", content=body), c.put("/v1/campaigns/typed", content=body)):
                assert r.status_code == 422, (body, r.text)
                assert r.json()["error"] == {"field": "body", "reason": f"must be a JSON object (a campaign); got {sent}"}
        for field, value, reason in (
                ("arms", [1], ("arms.0", "must be a JSON object; got number")),
                ("arms", "a", ("arms", "must be a JSON array; got string")),
                ("arms", [{"name": "a", "strategy": "top", "params": None}], ("arms.0.params", "must be a JSON object; got null")),
                ("params", [], ("params", "must be a JSON object; got array")),
                ("optimizer", None, ("optimizer", "must be a JSON object; got null")),
                ("optimizer", {"segments": [True]}, ("optimizer.segments.0", "must be a string; got boolean")),
                ("optimizer", {"prior_alpha": "1"}, ("optimizer.prior_alpha", "must be a number; got string")),
                ("campaign_id", 5, ("campaign_id", "must be a string; got number")),
                ("n", "5", ("n", "must be an integer; got string")),
                ("n", True, ("n", "must be an integer; got boolean")),
                ("window_s", None, ("window_s", "must be a number; got null")),
                ("control_share", False, ("control_share", "must be a number; got boolean")),
                ("filter", {}, ("filter", "must be a string; got object"))):
            body = {"campaign_id": "typed", "scenario": "top", field: value}
            r = c.post("/v1/campaigns", json=body)
            assert r.status_code == 422, (field, value, r.text)
            err = r.json()["error"]
            assert (err["field"], err["reason"]) == reason, (field, value, err)
        assert c.get("/v1/campaigns/typed").status_code == 404


def test_a_campaign_body_over_the_limit_is_refused_while_it_streams_in(shop_settings):
    """The campaign body was read whole into memory (``request.body()``) and only then compared with 64,000 bytes;
    it is read as ``POST /v1/events`` reads its body (``api/json_body.py`` ``read_body``): a declared length over the
    limit is refused before a byte is read, a chunked body as soon as it passes the limit. The answer says
    ``Connection: close`` and the server closes the connection (``api/unread_body.py``): before, it read and discarded the rest of the body
    until the keep-alive timeout, so a fast client sent all of it (CI, session 35: 1,000,000 bytes)."""
    sent: list[int] = []

    def chunks():
        for _ in range(1000):  # 1,000 x 1,000 bytes: far past the limit, stopped early
            sent.append(1000)
            yield b" " * 1000

    with ApiServer(shop_settings) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        r = c.put("/v1/campaigns/big", content=b" " * 64_001)
        assert r.status_code == 413
        assert r.json()["error"] == {"field": "body", "reason": "64001 bytes > the campaign limit=64000"}
        assert r.headers["connection"] == "close"
        try:
            r = c.post("/v1/campaigns", content=chunks())
        except httpx.TransportError:  # the server may answer and close while the client still sends
            pass
        else:
            assert r.status_code == 413, r.text
            assert r.json()["error"] == {"field": "body", "reason": "more than the campaign limit=64000 bytes"}
            assert r.headers["connection"] == "close"
        assert sum(sent) < 1_000_000  # the server closed the connection: measured 69,000-101,000 bytes sent
        body = orjson.dumps({"campaign_id": "padded", "scenario": "top"}) + b" " * 60_000
        wait_for(lambda: _ready(c), what="catalog")
        assert c.post("/v1/campaigns", content=body).status_code == 201
