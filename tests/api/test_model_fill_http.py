"""Campaign lists steered by the filter (issue 15): when the arm's candidates run out under a
selective filter, the filtered catalog is scored with the arm's model before the fallback, and
a short list says why (``reason``). Real broker, trained co-visitation model, API over HTTP."""

from __future__ import annotations

import time

import httpx
import pytest

from operators.model_version import latest_version_path, load_version
from operators.score import POPULAR_KEY_PREFIX, TopN, encode_topn
from operators.training import train_covisitation
from operators.window_topic import encode_window_piece, window_key
from simulators.producer import EventProducer
from simulators.shop import SyntheticShop
from tests.harness import ApiServer, make_settings

pytestmark = pytest.mark.integration

FILTER = "category == context.item.category AND price < $max_price"


def _ready(c: httpx.Client, n: int) -> None:
    deadline = time.monotonic() + 30
    while c.get("/healthz").json().get("catalog_items", 0) < n:
        assert time.monotonic() < deadline, "catalog not loaded"
        time.sleep(0.1)
    while (r := c.get("/readyz")).status_code != 200:  # the popular list (the fallback) is read too
        assert time.monotonic() < deadline, r.json()
        time.sleep(0.1)


def test_filter_steers_the_arm_and_short_lists_say_why(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=1)
    shop = SyntheticShop(n_items=600, n_users=80, seed=5, start_ts=time.time() - 86400)
    train_covisitation(shop.history(12_000), s)
    in_model = set(load_version(latest_version_path(s.stream.model_dir)).item_ids)
    catalog = {d["item_id"]: d for d in shop.catalog(vectors=False)}
    with EventProducer.from_settings(s.kafka) as p:
        p.send_catalog(catalog.values())
        p.send_item({"item_id": "brand-new", "category": "toys", "price": 1.0})  # in the catalog, not in the model
        ranked = sorted(catalog)  # the flow's popular list (the fallback), published directly
        p.produce(s.kafka.topn_topic, f"{POPULAR_KEY_PREFIX}0".encode(),
                  encode_topn(TopN(f"{POPULAR_KEY_PREFIX}0", ranked, [float(-j) for j in range(len(ranked))], "popular", None, 1.0)))
    before = s.model_copy(update={"api": s.api.model_copy(update={"fill_from_model": False, "state_dir": tmp_path / "a"})})
    after = s.model_copy(update={"api": s.api.model_copy(update={"state_dir": tmp_path / "b"})})
    n = 10
    items = sorted(i for i in in_model if i in catalog)
    with ApiServer(before) as old, ApiServer(after) as new:
        clients = {"before": httpx.Client(base_url=old.url, timeout=10), "after": httpx.Client(base_url=new.url, timeout=10)}
        served = {"before": 0, "after": 0}
        eligible = 0
        for c in clients.values():
            _ready(c, len(catalog) + 1)
            assert c.put("/v1/campaigns/pdp", json={"scenario": "similar", "n": n, "filter": FILTER}).status_code == 201
        for item in items[:60]:
            cat = catalog[item]["category"]
            selected = {i for i, d in catalog.items() if d["category"] == cat and d["price"] < 60 and i != item}
            if len(selected & in_model) < n:
                continue
            eligible += 1
            last_eligible = item
            for k, c in clients.items():
                body = c.get("/v1/recommendations", params={"campaign": "pdp", "item_id": item, "max_price": 60}).json()
                got = [i["item_id"] for i in body["items"]]
                assert set(got) <= selected, body
                served[k] += body["from_arm"]
                assert len(got) == n or k == "before", body
                if k == "after":  # every item from the arm's model, none from the fallback
                    assert body["from_arm"] == n and body["topped_up"] == 0 and body["reason"] is None, body
        assert eligible >= 20
        assert served["after"] == eligible * n
        assert served["before"] < served["after"]  # the old path fell back to popular items

        c = clients["after"]
        # the list drawn from the model is reused (api/serving.py) while nothing it depends on changed:
        # the same answer again, and a catalog change is seen by the next request
        params = {"campaign": "pdp", "item_id": last_eligible, "max_price": 60}
        first = c.get("/v1/recommendations", params=params).json()
        again = c.get("/v1/recommendations", params=params).json()
        assert again["items"] == first["items"] and first["from_arm"] == n
        hidden = first["items"][-1]["item_id"]
        with EventProducer.from_settings(s.kafka) as p:
            p.send_item({**catalog[hidden], "hidden": True})
        deadline = time.monotonic() + 20
        while (body := c.get("/v1/recommendations", params=params).json()) == again or \
                hidden in [i["item_id"] for i in body["items"]]:
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
        assert len(body["items"]) == n and body["from_arm"] == n
        assert [i["item_id"] for i in body["items"]][: n - 1] == [i["item_id"] for i in first["items"]][: n - 1]
        # filter too selective: fewer servable items than n -> reason, the rest is what exists
        item = items[0]
        body = c.get("/v1/recommendations", params={"campaign": "pdp", "item_id": item, "max_price": 0.5}).json()
        assert body["reason"] == "filter_too_selective" and "selects" in body["reason_detail"], body
        cheap = {i for i, d in catalog.items() if d["category"] == catalog[item]["category"] and d["price"] < 0.5}
        assert len(body["items"]) == len(cheap - {item})
        # an item the model does not know: unknown_item, served from the fallback (filtered)
        body = c.get("/v1/recommendations", params={"campaign": "pdp", "item_id": "brand-new", "max_price": 1000}).json()
        assert body["reason"] == "unknown_item" and body["from_arm"] == 0 and body["topped_up"] == n, body
        assert all(catalog[i["item_id"]]["category"] == "toys" for i in body["items"])
        # an item neither the model nor the catalog knows: still unknown_item, though the filter (which reads the
        # request's item's category) selects nothing for it
        body = c.get("/v1/recommendations", params={"campaign": "pdp", "item_id": "nowhere", "max_price": 1000}).json()
        assert body["reason"] == "unknown_item" and body["from_arm"] == 0, body
        # a full list carries no reason
        assert c.put("/v1/campaigns/open", json={"scenario": "similar", "n": n}).status_code == 201
        body = c.get("/v1/recommendations", params={"campaign": "open", "item_id": item}).json()
        assert body["from_arm"] == n and body["reason"] is None


def test_a_model_version_that_cannot_be_loaded_is_named_by_healthz_and_readyz(broker, tmp_path):
    """A version saved by an older fusionrec (format changed) cannot be served: the API answers from
    popularity and says why on /healthz and /readyz instead of only in its log."""
    import json

    s = make_settings(broker, tmp_path, partitions=1)
    shop = SyntheticShop(n_items=100, n_users=20, seed=6, start_ts=time.time() - 86400)
    version = train_covisitation(shop.history(2_000), s)
    meta = version / "model" / "params.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "version": -1}))
    with ApiServer(s) as api, httpx.Client(base_url=api.url, timeout=10) as c:
        deadline = time.monotonic() + 20
        while (err := c.get("/healthz").json()["model_error"]) is None:
            assert time.monotonic() < deadline, "the failed load was never reported"
            assert c.get("/metrics").status_code == 200  # the model gauges ask for the current version
            time.sleep(0.2)
        assert version.name in err and "cannot be loaded" in err
        assert c.get("/readyz").json()["model_error"] == err


def test_a_top_list_in_a_category_without_items_says_so(broker, tmp_path):
    """A ``top`` arm whose ``category`` no catalog item has answered ``no_events_in_window`` (tester31, 8.6): the
    window had events, the category had no items. Windowed popularity is published directly, as the flow does."""
    s = make_settings(broker, tmp_path, partitions=1)
    shoes = [f"s{k}" for k in range(5)]
    catalog = [{"item_id": i, "category": "shoes", "price": 1.0} for i in shoes]
    catalog.append({"item_id": "h0", "category": "hats", "price": 1.0})
    now = time.time()
    bucket = int(now // s.api.popularity_bucket_s)
    with EventProducer.from_settings(s.kafka) as p:
        p.send_catalog(catalog)
        p.produce(s.kafka.window_topic(), window_key(0, bucket, 0),
                  encode_window_piece(0, bucket, 0, now, {i: float(5 - k) for k, i in enumerate(shoes)}))
        ranked = [d["item_id"] for d in catalog]  # the fallback's popular list
        p.produce(s.kafka.topn_topic, f"{POPULAR_KEY_PREFIX}0".encode(),
                  encode_topn(TopN(f"{POPULAR_KEY_PREFIX}0", ranked, [float(-j) for j in range(len(ranked))], "popular",
                                   None, 1.0)))
    with ApiServer(s) as api, httpx.Client(base_url=api.url, timeout=10) as c:
        _ready(c, len(catalog))
        assert c.put("/v1/campaigns/top", json={"scenario": "top", "n": 3, "params": {"window": "7d"}}).status_code == 201

        def rec(category: str) -> dict:
            return c.get("/v1/recommendations", params={"campaign": "top", "category": category}).json()

        deadline = time.monotonic() + 30
        while (body := rec("shoes"))["from_arm"] < 3:  # the window is read
            assert time.monotonic() < deadline, body
            time.sleep(0.2)
        assert [i["item_id"] for i in body["items"]] == shoes[:3] and body["reason"] is None, body
        body = rec("nosuch")
        assert (body["reason"], body["from_arm"]) == ("no_items_in_category", 0), body
        assert body["reason_detail"] == "the catalog has no item whose category is 'nosuch'", body
        body = rec("hats")  # the category has an item, the window no event of it
        assert (body["reason"], body["from_arm"]) == ("no_events_in_window", 0), body
