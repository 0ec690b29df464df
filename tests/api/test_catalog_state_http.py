"""Catalog state on every list (issue 15): hidden, deleted and out-of-stock items are never served,
by the user's published top-N, the popular fallback or a campaign, including lists published
before the catalog changed. Real broker, API over HTTP; the flow's lists are produced directly."""

from __future__ import annotations

import httpx
import orjson
import pytest

from operators.score import POPULAR_KEY_PREFIX, TopN, encode_topn
from simulators.producer import EventProducer
from tests.harness import ApiServer, make_settings, wait_for

pytestmark = pytest.mark.integration

ITEMS = [f"i{k:02d}" for k in range(30)]




def _served(r: httpx.Response) -> list[str]:
    assert r.status_code == 200, r.text
    return [i["item_id"] for i in r.json()["items"]]


def test_unservable_items_never_served(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=1)
    k = s.kafka
    with EventProducer.from_settings(k) as p:
        p.send_catalog({"item_id": i, "category": "a", "price": 10.0 + n} for n, i in enumerate(ITEMS))
        # lists the flow published before the catalog changed
        p.produce(k.topn_topic, b"u1", encode_topn(TopN("u1", ITEMS[:10], [10.0 - j for j in range(10)], "model", "v1", 1.0)))
        p.produce(k.topn_topic, f"{POPULAR_KEY_PREFIX}0".encode(),
                  encode_topn(TopN(f"{POPULAR_KEY_PREFIX}0", ITEMS, [30.0 - j for j in range(30)], "popular", "v1", 1.0)))
        p.flush()
    with ApiServer(s) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        wait_for(lambda: c.get("/healthz").json().get("catalog_items") == 30, what="catalog")
        wait_for(lambda: _served(c.get("/v1/recommendations", params={"user_id": "u1", "n": 5})) == ITEMS[:5], what="top-N")
        # the popular lists are cached for 1 s: wait for the published one
        wait_for(lambda: _served(c.get("/v1/recommendations", params={"n": 5})) == ITEMS[:5], what="popular")

        with EventProducer.from_settings(k) as p:
            p.send_item({"item_id": "i00", "category": "a", "price": 10.0, "hidden": True})
            p.send_item({"item_id": "i02", "category": "a", "price": 12.0, "in_stock": False})
            p.send_item({"item_id": "i03", "category": "a", "price": 13.0, "stock": 0})
            p.produce(k.catalog_topic, b"i01", None)  # deleted: a tombstone
            p.flush()
        gone = {"i00", "i01", "i02", "i03"}
        wait_for(lambda: not gone & set(_served(c.get("/v1/recommendations", params={"user_id": "u1", "n": 5}))),
              what="catalog change")
        r = c.get("/v1/recommendations", params={"user_id": "u1", "n": 8})
        assert _served(r) == ITEMS[4:10] + ITEMS[10:12]  # the published list, then topped up from popular
        assert r.json()["source"] == "model+popular" and [i.get("fallback", False) for i in r.json()["items"]] == [False] * 6 + [True] * 2
        # the popular fallback (unknown user, no user) skips them too, and still fills n
        assert _served(c.get("/v1/recommendations", params={"user_id": "nobody", "n": 5})) == ITEMS[4:9]
        assert _served(c.get("/v1/recommendations", params={"n": 26})) == ITEMS[4:30]

        # every scenario and fallback of a campaign: with and without a filter
        for body in ({"scenario": "popular", "arms": [{"name": "p", "strategy": "popular"}], "n": 6},
                     {"scenario": "personalized", "arms": [{"name": "m", "strategy": "personalized"}], "n": 12,
                      "filter": "category == \"a\""}):
            assert c.put("/v1/campaigns/cs", json=body).status_code in (200, 201)
            for _ in range(3):
                got = _served(c.get("/v1/recommendations", params={"campaign": "cs", "user_id": "u1"}))
                assert got and not gone & set(got), got
        # back in stock: served again
        with EventProducer.from_settings(k) as p:
            p.send_item({"item_id": "i02", "category": "a", "price": 12.0, "in_stock": True, "stock": 4})
            p.flush()
        wait_for(lambda: "i02" in _served(c.get("/v1/recommendations", params={"user_id": "u1", "n": 5})), what="restock")
        assert orjson.loads(c.get("/v1/items/i02").content)["in_stock"] is True


def test_items_over_a_size_limit_are_not_served(broker, tmp_path):
    """A new user's trial (F2): an item with a 200,000-character title, published by anyone, was indexed and
    served back; the API's index applies the size rule (``api.catalog_max_*``) as ``fusionrec catalog`` does,
    at the initial load and for a live change: GET /v1/items answers 404 naming the attribute and the limit."""
    s = make_settings(broker, tmp_path, partitions=1)
    s = s.model_copy(update={"api": s.api.model_copy(update={"catalog_max_attributes": 3})})
    with EventProducer.from_settings(s.kafka) as p:  # the producer has no rule: the API's index must refuse them
        p.send_catalog([{"item_id": "ok", "title": "Red wool scarf"}, {"item_id": "long", "title": "x" * 200_000}])
    with ApiServer(s) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        wait_for(lambda: c.get("/v1/catalog").json()["items"] == 2, what="catalog")
        assert c.get("/v1/items/ok").status_code == 200
        r = c.get("/v1/items/long")
        assert r.status_code == 404 and r.json()["error"]["field"] == "item_id", r.text
        assert r.json()["error"]["reason"] == ("item 'long' was rejected by the catalog schema rule: attribute 'title' is "
                                               "200,000 bytes (UTF-8); at most 16,384 (api.catalog_max_value_bytes)")
        with EventProducer.from_settings(s.kafka) as p:  # live changes
            p.send_catalog([{"item_id": "wide", "a": 1, "b": 2, "c": 3, "d": 4},
                            {"item_id": "ok", "title": "y" * 70_000}, {"item_id": "new", "title": "Blue hat"}])
        wait_for(lambda: c.get("/v1/items/new").status_code == 200, what="live catalog change")
        body = c.get("/v1/catalog").json()
        assert body["servable"] == 1 and body["rejected_items"] == [
            {"item_id": "long", "reason": "attribute 'title' is 200,000 bytes (UTF-8); at most 16,384 "
                                          "(api.catalog_max_value_bytes)"},
            {"item_id": "wide", "reason": "the item has 4 attributes besides item_id; at most 3 "
                                          "(api.catalog_max_attributes)"},
            {"item_id": "ok", "reason": "attribute 'title' is 70,000 bytes (UTF-8); at most 16,384 "
                                        "(api.catalog_max_value_bytes)"}], body
        assert c.get("/v1/items/ok").status_code == 404  # its latest version is over the limit: not served


def test_items_adding_names_beyond_the_catalog_limit_are_not_served(broker, tmp_path):
    """A new user's trial (catalog defect 1): 100 items of 500 names each, all within the per-item limits, froze the
    API (115 s for one request, 3 GB); ``api.catalog_max_attribute_names`` rejects an item that would add a name
    beyond it, at the initial load and live, with a 404 naming why, counted as rejected."""
    s = make_settings(broker, tmp_path, partitions=1)
    s = s.model_copy(update={"api": s.api.model_copy(update={"catalog_max_attribute_names": 4})})
    with EventProducer.from_settings(s.kafka) as p:
        p.send_catalog([{"item_id": "a", "brand": "x", "price": 1},
                        {"item_id": "wide", "brand": "y", "w1": 1, "w2": 2, "w3": 3}])
    with ApiServer(s) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        wait_for(lambda: c.get("/v1/catalog").json()["items"] == 2, what="catalog")
        assert c.get("/v1/items/a").status_code == 200
        r = c.get("/v1/items/wide")
        assert r.status_code == 404 and r.json()["error"]["reason"] == (
            "item 'wide' was rejected by the catalog schema rule: item 'wide': attribute 'w1' (and 2 more new names) "
            "would make 5 distinct attribute names in the catalog; at most 4 (api.catalog_max_attribute_names)"), r.text
        with EventProducer.from_settings(s.kafka) as p:  # live: one new name fits (4), two more do not
            p.send_catalog([{"item_id": "b", "color": "red", "price": 2}, {"item_id": "c", "size": 3, "weight": 1},
                            {"item_id": "d", "brand": "z", "color": "blue"}])
        wait_for(lambda: c.get("/v1/items/d").status_code == 200, what="live catalog change")
        assert c.get("/v1/items/b").status_code == 200 and c.get("/v1/items/c").status_code == 404
        assert [r["item_id"] for r in c.get("/v1/catalog").json()["rejected_items"]] == ["wide", "c"]
