"""The identifier rule at the API (issue 15): URL-encoded ids are fetchable, ``12345.0`` is ``12345``,
ids with control characters or over 256 characters are a 422 naming the field. Real broker, HTTP."""

from __future__ import annotations

import re
from urllib.parse import quote

import httpx
import pytest

from simulators.producer import EventProducer
from tests.harness import ApiServer, make_settings, wait_for

pytestmark = pytest.mark.integration

ODD_IDS = ["a/b", "x+y", "50%", "p&q", "sp ace", "a/../b", "ü?#"]


def test_ids_at_the_api(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=1)
    with EventProducer.from_settings(s.kafka) as p:
        p.send_catalog([{"item_id": i, "title": f"item {i}"} for i in ODD_IDS] + [{"item_id": 12345.0, "title": "n"}])
    with ApiServer(s) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        wait_for(lambda: c.get("/healthz").json().get("catalog_items", 0) >= len(ODD_IDS) + 1, what="the catalog")
        for item_id in ODD_IDS:
            r = c.get("/v1/items/" + quote(item_id, safe=""))
            assert r.status_code == 200, (item_id, r.text)
            assert r.json()["item_id"] == item_id
        assert c.get("/v1/items/12345").json()["item_id"] == "12345"
        assert c.get("/v1/items/12345.0").json()["item_id"] == "12345"
        assert c.get("/v1/items/nope%2Fx").status_code == 404
        r = c.get("/v1/items/a%09b")
        assert r.status_code == 422 and r.json()["error"]["field"] == "item_id"
        for bad in ("a%0Ab", "%0A", "a%0Db", "a%0A%0Ab"):  # a line break matched no route (404 naming path), trial 31
            r = c.get("/v1/items/" + bad)
            assert r.status_code == 422 and r.json()["error"]["field"] == "item_id", (bad, r.text)

        r = c.post("/v1/events", json={"type": "view", "user_id": 12345.0, "item_id": "777.0"})
        assert r.status_code == 202, r.text
        for bad, field in (({"user_id": "u\t1"}, "user_id"), ({"item_id": "x" * 10_000}, "item_id"),
                           ({"item_id": "a\nb"}, "item_id")):
            r = c.post("/v1/events", json={"type": "view", "user_id": "u1", "item_id": "i1", **bad})
            assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
        r = c.get("/v1/recommendations", params={"user_id": "12345.0"})
        assert r.status_code == 200 and r.json()["user_id"] == "12345"
        for params, field in (({"user_id": "u\t1"}, "user_id"), ({"user_id": "x" * 10_000}, "user_id"),
                              ({"user_id": "u1", "category": "\x00"}, "category")):  # session 29's trial, F6
            r = c.get("/v1/recommendations", params=params)
            assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
        r = c.get("/v1/recommendations?user_id=%ff%fe")  # not UTF-8: decoded to U+FFFD by the query parser
        assert r.status_code == 422 and r.json()["error"]["field"] == "user_id", r.text


def test_an_empty_id_in_cart_or_session_is_a_422_naming_it(broker, tmp_path):
    """``cart=a,b,,c`` was a 200 that skipped the empty id while ``session=`` was a 422 (a new user's trial,
    F1): every element of a comma-separated id list is an id, on the plain path and the campaign path."""
    s = make_settings(broker, tmp_path, partitions=1)
    with ApiServer(s) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        assert c.put("/v1/campaigns/home", json={"scenario": "personalized"}).status_code == 201
        params = c.get("/openapi.json").json()["paths"]["/v1/recommendations"]["get"]["parameters"]
        patterns = {p["name"]: re.compile(p["schema"]["pattern"]) for p in params if p["name"] in ("cart", "session")}
        assert set(patterns) == {"cart", "session"}  # the schema says what the API takes (the fuzzer's conformance)
        for path in ({"user_id": "u1"}, {"user_id": "u1", "campaign": "home"}):
            for field in ("cart", "session"):
                for value in ("a,b,,c", ",a", "a,", "a, ,b", " ", ",", "a,\t,b"):
                    r = c.get("/v1/recommendations", params={**path, field: value})
                    assert r.status_code == 422, (path, field, value, r.text)
                    assert r.json()["error"]["field"] == field, r.text
                    assert not patterns[field].search(value), (field, value)
                r = c.get("/v1/recommendations", params={**path, field: "a,b,,c"})
                assert "item id 3 of 4 is empty" in r.json()["error"]["reason"], r.text
                r = c.get("/v1/recommendations", params={**path, field: " a , b,c "})
                assert r.status_code == 200, (path, field, r.text)
                assert patterns[field].search(" a , b,c ")


def test_a_repeated_request_parameter_is_a_422_saying_to_give_it_once(broker, tmp_path):
    """``cart=a&cart=b`` was a 422 saying ``Input should be a valid string``: the request's own parameters are given
    once (``cart`` and ``session`` as one comma-separated list, as the README says); only IQL ``$params`` are lists
    when repeated. On the plain path and the campaign path."""
    s = make_settings(broker, tmp_path, partitions=1)
    with ApiServer(s) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        assert c.put("/v1/campaigns/home", json={"scenario": "personalized"}).status_code == 201
        for path in ("user_id=u1", "user_id=u1&campaign=home"):
            for field in ("cart", "session"):
                r = c.get(f"/v1/recommendations?{path}&{field}=a&{field}=b")
                assert r.status_code == 422, (path, r.text)
                err = r.json()["error"]
                assert err["field"] == field, r.text
                assert err["reason"] == (f"must be given once, as one comma-separated list of item ids ({field}=a,b); "
                                         f"got 2 {field}= parameters"), r.text
                assert c.get(f"/v1/recommendations?{path}&{field}=a,b").status_code == 200
            for q, field in (("n=3&n=4", "n"), ("explain=true&explain=false", "explain"), ("user_id=u2", "user_id")):
                r = c.get(f"/v1/recommendations?{path}&{q}")
                assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
                assert r.json()["error"]["reason"] == f"must be given once; got 2 {field}= parameters", r.text
        r = c.get("/v1/recommendations?campaign=home&campaign=home&user_id=u1")
        assert r.status_code == 422 and r.json()["error"]["field"] == "campaign", r.text
