"""IQL list parameters and parameter errors over HTTP (issue 15): a repeated key is a list, one value
is a list of one, campaign parameters may be lists (defaults of ``$params``), and a parameter that
is missing or does not fit its use is a 400 naming it, never an empty list. Real broker, HTTP."""

from __future__ import annotations

import time

import httpx
import pytest

from operators.score import POPULAR_KEY_PREFIX, TopN, encode_topn
from simulators.producer import EventProducer
from tests.harness import ApiServer, make_settings, wait_for

pytestmark = pytest.mark.integration

BRANDS = ["Acme", "Bolt", "Core"]
ITEMS = [{"item_id": f"i{k:02d}", "brand": BRANDS[k % 3], "price": float(k), "tags": [f"t{k % 4}"]} for k in range(30)]


def test_list_parameters_and_errors(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=1)
    with EventProducer.from_settings(s.kafka) as p:
        p.send_catalog(ITEMS)
        ids = [i["item_id"] for i in ITEMS]
        p.produce(s.kafka.topn_topic, f"{POPULAR_KEY_PREFIX}0".encode(),
                  encode_topn(TopN(f"{POPULAR_KEY_PREFIX}0", ids, [30.0 - j for j in range(30)], "popular", None, 1.0)))
        p.flush()
    brand = {i["item_id"]: i["brand"] for i in ITEMS}
    with ApiServer(s) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        wait_for(lambda: c.get("/healthz").json().get("catalog_items", 0) >= 30, what="the catalog")
        deadline = time.monotonic() + 20  # the published popular list is read (the API caches popular lists 1 s)
        while not c.get("/v1/recommendations", params={"n": 1}).json()["items"] and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.1)
        r = c.put("/v1/campaigns/lp", json={"scenario": "popular", "n": 30,
                                            "filter": "brand IN $bs AND price < $max_price AND tags ANY $tags",
                                            "params": {"tags": ["t0", "t1", "t2", "t3"], "max_price": 100}})
        assert r.status_code == 201, r.text

        def get(q: str) -> httpx.Response:
            return c.get(f"/v1/recommendations?campaign=lp&{q}")

        got = get("bs=Acme").json()["items"]
        assert got and {brand[i["item_id"]] for i in got} == {"Acme"} and len(got) == 10
        got = get("bs=Acme&bs=Bolt").json()["items"]
        assert {brand[i["item_id"]] for i in got} == {"Acme", "Bolt"} and len(got) == 20
        got = get("bs=Acme&tags=t0&max_price=20").json()["items"]  # request values override the campaign's
        assert {i["item_id"] for i in got} == {"i00", "i12"}
        for q, field in (("bs=Acme&max_price=cheap", "max_price"), ("max_price=5", "bs"),
                         ("bs=Acme&max_price=1&max_price=2", "max_price")):
            r = get(q)
            assert r.status_code == 400, (q, r.text)
            assert r.json()["error"]["field"] == field and r.json()["error"]["param"] == field, r.text
        # a control character (Unicode category Cc) in any $param value is a 422 naming the parameter, whether
        # the filter reads it or not (before, "5\t" was read as 5 and "Ac\x00me" matched nothing)
        for q, field, char in (("bs=Ac%00me", "bs", "U+0000"), ("bs=Acme&bs=Bo%0Alt", "bs", "U+000A"),
                               ("bs=Acme&max_price=5%09", "max_price", "U+0009"),
                               ("bs=Acme&user.segment=vip%C2%85", "user.segment", "U+0085"),
                               ("bs=Acme&utm=%7F", "utm", "U+007F")):
            r = get(q)
            assert r.status_code == 422, (q, r.text)
            err = r.json()["error"]
            assert (err["field"], err["param"]) == (field, field) and "control characters" in err["reason"], r.text
            assert err["reason"].endswith(f"found {char}"), r.text
        assert get("bs=Acme&max_price=5%20").status_code == 200  # white space is not a control character here
        # a campaign over a strategy with no candidates still checks its parameters
        assert c.put("/v1/campaigns/empty", json={"scenario": "top", "filter": "price < $p"}).status_code == 201
        r = c.get("/v1/recommendations?campaign=empty&p=x")
        assert r.status_code == 400 and r.json()["error"]["field"] == "p"
        # a context.user.<a> given as user.<a> that does not fit its use names that parameter (was "filter")
        assert c.put("/v1/campaigns/budget", json={"scenario": "popular",
                                                   "filter": "price < context.user.budget"}).status_code == 201
        for q in ("user.budget=abc", "user.budget=1&user.budget=2", "user.budget=1e999", "user.budget=nan"):
            r = c.get(f"/v1/recommendations?campaign=budget&{q}")
            assert r.status_code == 400, (q, r.text)
            assert (r.json()["error"]["field"], r.json()["error"]["param"]) == ("user.budget", "user.budget"), r.text
        # a request's own query parameters (n, category, window, cart, ...) never reach IQL: a campaign whose
        # filter or boosters read one could never be served with it, so it is refused when saved
        for body, field, name in (({"scenario": "popular", "filter": "price < $n"}, "filter", "$n"),
                                  ({"scenario": "popular", "filter": "brand == $category"}, "filter", "$category"),
                                  ({"scenario": "popular", "boosters": "BOOST 2 IF brand == $explain"}, "boosters",
                                   "$explain")):
            r = c.put("/v1/campaigns/reserved", json=body)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["field"] == field and name in r.json()["error"]["reason"], r.text
        assert c.get("/v1/campaigns/reserved").status_code == 404


def test_campaign_param_defaults_checked_when_saved(broker, tmp_path):
    """A default ``$param`` that no request could bind (``price < $p`` with ``"p": "abc"``) is refused when
    saved, naming ``params.p`` and the type its use needs, instead of a 201 and then a 400 on every request."""
    s = make_settings(broker, tmp_path, partitions=1)
    with EventProducer.from_settings(s.kafka) as p:
        p.send_catalog(ITEMS)
        p.flush()
    with ApiServer(s) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        wait_for(lambda: c.get("/healthz").json().get("catalog_items", 0) >= 30, what="the catalog")
        for body, field, needs in (
                ({"filter": "price < $p", "params": {"p": "abc"}}, "params.p", "a number for $p"),
                ({"filter": "price < $p", "params": {"p": [1, 2]}}, "params.p", "a single value for $p"),
                ({"boosters": "BOOST 2 IF brand == $b", "params": {"b": True}}, "params.b", "a string for $b"),
                ({"filter": "price < $p", "params": {"p": 5},
                  "arms": [{"name": "a", "strategy": "top"}, {"name": "b", "strategy": "top", "params": {"p": "x"}}]},
                 "arms.1.params.p", "a number for $p")):
            r = c.put("/v1/campaigns/bad", json={"scenario": "top", **body})
            assert r.status_code == 422, (body, r.text)
            err = r.json()["error"]
            assert err["field"] == field and needs in err["reason"] and err["param"] == field.rsplit(".", 1)[1], r.text
        for where, params in (("params", {"params": {"b": "Ac\u0000me"}}),
                              ("arms.0.params", {"arms": [{"name": "a", "strategy": "top", "params": {"b": ["x", "\n"]}}]})):
            r = c.put("/v1/campaigns/bad", json={"scenario": "top", "filter": "brand IN $b", **params})
            assert r.status_code == 422 and r.json()["error"]["field"] == f"{where}.b", r.text
            assert "control characters (Unicode category Cc)" in r.json()["error"]["reason"], r.text
        r = c.put("/v1/campaigns/bad", json={"scenario": "top", "filter": "price < $p", "params": {"p": {"a": 1}}})
        assert r.status_code == 422 and r.json()["error"]["field"] == "params.p", r.text
        assert "got an object" in r.json()["error"]["reason"] and ".str" not in r.json()["error"]["reason"], r.text
        assert c.get("/v1/campaigns/bad").status_code == 404
        # defaults that fit are saved and served; a parameter the filter does not read is not checked
        r = c.put("/v1/campaigns/ok", json={"scenario": "top", "filter": "price < $p AND brand IN $bs",
                                            "params": {"p": "12", "bs": ["Acme"], "unused": "abc"}})
        assert r.status_code == 201, r.text
        assert c.get("/v1/recommendations?campaign=ok").status_code == 200
