"""The catalog rule at the API (issue 15): coerced values are indexed and served as coerced; an item
whose value does not fit is rejected whole (not filtered, not recommended, /v1/items says why),
counted in /metrics. Real broker, HTTP."""

from __future__ import annotations

import time

import httpx
import pytest

from operators.score import POPULAR_KEY_PREFIX, TopN, encode_topn
from simulators.producer import EventProducer
from tests.harness import ApiServer, make_settings, wait_for

pytestmark = pytest.mark.integration


def test_rule_at_the_api(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=1)
    s = s.model_copy(update={"api": s.api.model_copy(update={"require_keys": False})})
    ids = [f"i{k}" for k in range(6)]
    with EventProducer.from_settings(s.kafka) as p:
        p.send_catalog([{"item_id": i, "price": 10.0 + k} for k, i in enumerate(ids[:4])])
        p.send_item({"item_id": "i4", "price": "3.5"})  # a numeric string: coerced
        p.send_item({"item_id": "i5", "price": "cheap"})  # does not fit: rejected
        p.produce(s.kafka.topn_topic, f"{POPULAR_KEY_PREFIX}0".encode(),
                  encode_topn(TopN(f"{POPULAR_KEY_PREFIX}0", ids[::-1], [6.0 - j for j in range(6)], "popular", None, 1.0)))
        p.flush()
    with ApiServer(s) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        wait_for(lambda: c.get("/healthz").json().get("catalog_items", 0) >= 6, what="the catalog")
        deadline = time.monotonic() + 20  # the published popular list is read (the API caches popular lists 1 s)
        while not c.get("/v1/recommendations", params={"n": 1}).json()["items"] and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.1)
        r = c.get("/v1/items/i5")
        assert r.status_code == 404 and "rejected by the catalog schema rule" in r.json()["error"]["reason"]
        assert "'price' must be a number" in r.json()["error"]["reason"]
        assert c.get("/v1/items/i4").status_code == 200
        assert c.put("/v1/campaigns/cheap", json={"scenario": "popular", "n": 6, "filter": "price < 11"}).status_code == 201
        got = [i["item_id"] for i in c.get("/v1/recommendations", params={"campaign": "cheap"}).json()["items"]]
        assert got == ["i4", "i0"]  # 3.5 was indexed as a number
        plain = [i["item_id"] for i in c.get("/v1/recommendations", params={"n": 6}).json()["items"]]
        assert "i5" not in plain and len(plain) == 5
        metrics = c.get("/metrics", headers={"X-API-Key": s.api.admin_keys[0]} if s.api.admin_keys else {}).text
        assert "fusionrec_api_catalog_rejected 1.0" in metrics
        with EventProducer.from_settings(s.kafka) as p:  # fixed: accepted again
            p.send_item({"item_id": "i5", "price": 1.0})
        deadline = time.monotonic() + 20
        while c.get("/v1/items/i5").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.get("/v1/items/i5").json()["price"] == 1.0
        # records published to the topic directly: "deleted": true is a tombstone, false no attribute (a
        # fresh-user try found /v1/items answering the deleted record with its "deleted": true)
        with EventProducer.from_settings(s.kafka) as p:
            p.send_item({"item_id": "i6", "price": 2.0, "deleted": True})
            p.send_item({"item_id": "i7", "price": 2.0, "deleted": False})
        deadline = time.monotonic() + 20
        while c.get("/v1/items/i7").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.get("/v1/items/i7").json() == {"item_id": "i7", "price": 2.0}
        r = c.get("/v1/items/i6")
        assert r.status_code == 404 and r.json()["error"]["reason"] == "unknown item 'i6'"
        # the counts say how many items the catalog holds: the record that deleted itself is not one (they
        # counted the table's 8 keys), a rejected item is (i5 was, and is indexed now)
        admin = {"X-API-Key": s.api.admin_keys[0]} if s.api.admin_keys else {}
        assert c.get("/healthz").json()["catalog_items"] == 7
        assert c.get("/v1/catalog", headers=admin).json()["items"] == 7
        assert "fusionrec_api_catalog_items 7.0" in c.get("/metrics", headers=admin).text
        with EventProducer.from_settings(s.kafka) as p:
            p.send_item({"item_id": "i8", "price": "cheap"})  # rejected: still an item of the catalog
        deadline = time.monotonic() + 20
        while c.get("/healthz").json()["catalog_items"] != 8 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.get("/v1/catalog", headers=admin).json()["items"] == 8
