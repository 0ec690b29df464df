"""The client key's trust boundary over HTTP against a real broker (issue 13).

An attacker holding only the client key tries what the issue found: forged served lists,
feedback with forged, altered or replayed request ids, timestamps far from now, oversize
events and ids. Every attempt is a 4xx naming the field, and the optimizer counts only the lists
the server served and the feedback on them.
"""

from __future__ import annotations

import base64
import time

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from operators.kafka import make_producer
from simulators.producer import EventProducer
from simulators.shop import SyntheticShop
from tests.harness import ApiServer, FlowProcess, make_settings, wait_caught_up, wait_for

pytestmark = pytest.mark.integration

ADMIN, CLIENT = {"X-API-Key": "admin-t"}, {"X-API-Key": "client-t"}
# visual arms: their lists hold items without any event (rewards need one of a list's items: attribution rule 3)
CAMPAIGN = {"scenario": "visual", "goal": "purchase", "window_s": 600,
            "arms": [{"name": "popular", "strategy": "visual"}, {"name": "other", "strategy": "visual"}]}




@pytest.fixture()
def api(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=2)
    s = s.model_copy(update={"api": s.api.model_copy(update={
        "require_keys": True, "admin_keys": ["admin-t"], "client_keys": ["client-t"]})})
    with EventProducer.from_settings(s.kafka) as producer:
        producer.send_catalog(SyntheticShop(n_items=50, n_users=5, seed=3).catalog())
    with ApiServer(s) as server, httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.put("/v1/campaigns/home-ab", json=CAMPAIGN, headers=ADMIN).status_code == 201
        wait_for(lambda: c.get("/healthz").json().get("catalog_items", 0) >= 50, what="the catalog")
        yield c


def _pulls(c: httpx.Client) -> dict[str, tuple[int, int]]:
    arms = c.get("/v1/campaigns/home-ab/arms", headers=ADMIN).json()["arms"]
    return {a["arm"]: (a["pulls"], a["rewards"]) for a in arms if a["arm"] != "control"}


def _post(c: httpx.Client, event: dict) -> httpx.Response:
    return c.post("/v1/events", json=event, headers=CLIENT)


def test_a_server_only_type_is_refused_first_whatever_else_it_lacks(api):
    """A bare ``rec_request`` was refused for a missing ``request_id``, then with one for a missing ``campaign_id``:
    the errors walked a client through the fields of a type it may never send (trial 36). The type is refused
    first, as a 422 on ``type`` (``events[i].type`` in a batch)."""
    for event in ({"type": "rec_request", "user_id": "u1"}, {"type": "rec_request", "user_id": "u1", "request_id": "r"}):
        r = _post(api, event)
        assert r.status_code == 422 and r.json()["error"]["field"] == "type", r.text
        assert r.json()["error"]["reason"] == "only the server produces this event type", r.text
    r = api.post("/v1/events", json=[{"type": "view", "user_id": "u1", "item_id": "i1"}, {"type": "rec_request"}],
                 headers=CLIENT)
    assert (r.status_code, r.json()["error"]["field"]) == (422, "events[1].type"), r.text
    r = _post(api, {"type": ["rec_request"], "user_id": "u1", "item_id": "i1"})  # not a string: the usual 422
    assert (r.status_code, r.json()["error"]["field"]) == (422, "type"), r.text


def test_forged_and_replayed_feedback_is_refused_and_never_counted(api):
    c = api
    now = time.time()
    served = c.get("/v1/recommendations", params={"campaign": "home-ab", "user_id": "victim", "item_id": "i000000"},
                   headers=CLIENT).json()
    rid, arm = served["request_id"], served["arm"]
    wait_for(lambda: sum(p for p, _ in _pulls(c).values()) == 1, what="the served list's pull")

    # a forged served list: the type is the server's alone
    r = _post(c, {"type": "rec_request", "user_id": "attacker", "request_id": "r-forged", "campaign_id": "home-ab",
                  "arm": "popular"})
    assert (r.status_code, r.json()["error"]["field"]) == (422, "type")
    # feedback on request ids the server never issued, or altered ones
    for forged in ("r-forged", rid[:-2] + ("AA" if not rid.endswith("AA") else "BB"), "r1.x.y", "r1..", rid + "."):
        r = _post(c, {"type": "rec_click", "user_id": "victim", "request_id": forged, "item_id": "i1"})
        assert (r.status_code, r.json()["error"]["field"]) == (403, "request_id"), forged
    # a real id replayed by another user
    r = _post(c, {"type": "purchase", "user_id": "attacker", "request_id": rid, "item_id": "i1"})
    assert (r.status_code, r.json()["error"]["field"]) == (403, "request_id")
    # a real id with another campaign or arm, before serving, after the window
    other_arm = "other" if arm == "popular" else "popular"
    for field, extra in (("campaign_id", {"campaign_id": "home-x"}), ("arm", {"arm": other_arm}),
                         ("ts", {"ts": now - 400}), ("ts", {"ts": now + 700})):
        r = _post(c, {"type": "purchase", "user_id": "victim", "request_id": rid, "item_id": "i1", **extra})
        assert r.status_code in (403, 422) and r.json()["error"]["field"] == field, (extra, r.text)
    # feedback naming no item of the list earns it nothing (attribution rule 3)
    listed = [i["item_id"] for i in served["items"]]
    assert listed, served
    absent = next(f"i{k}" for k in range(10_000) if f"i{k}" not in listed)
    r = _post(c, {"type": "purchase", "user_id": "victim", "request_id": rid, "item_id": absent, "event_id": "q"})
    assert r.status_code == 202, r.text
    # the real feedback of the real user on an item of its list counts, once however often it is sent
    for i in range(5):
        r = _post(c, {"type": "purchase", "user_id": "victim", "request_id": rid, "item_id": listed[-1],
                      "event_id": f"p{i}"})
        assert r.status_code == 202, r.text
    wait_for(lambda: sum(w for _, w in _pulls(c).values()) == 1, what="the one reward")
    time.sleep(1.0)
    assert _pulls(c)[arm] == (1, 1) and sum(p for p, _ in _pulls(c).values()) == 1


def test_timestamps_far_from_now_are_refused(api):
    c = api
    for ts, why in ((4_070_908_800, "ahead"), (time.time() + 3600, "ahead"), (time.time() - 30 * 86400, "older"),
                    ("2099-01-01T00:00:00Z", "ahead")):
        r = _post(c, {"type": "view", "user_id": "u1", "item_id": "i1", "ts": ts})
        assert (r.status_code, r.json()["error"]["field"]) == (422, "ts"), ts
        assert why in r.json()["error"]["reason"]
    assert _post(c, {"type": "view", "user_id": "u1", "item_id": "i1", "ts": time.time() + 60}).status_code == 202
    metrics = c.get("/metrics", headers=ADMIN).text
    assert 'fusionrec_api_events_rejected_total{reason="bad_timestamp"} 4.0' in metrics


def test_money_out_of_range_is_a_422_naming_the_field(api):
    """A purchase of price 1e308 was accepted (202) and froze its campaign's analytics row for good."""
    c = api
    for body, field in (({"price": 1e308, "quantity": 10}, "price"), ({"price": -1e9}, "price"),
                        ({"quantity": 0}, "quantity"), ({"item_id": None, "items": [{"item_id": "i1", "price": 1e200}]},
                                                        "items[0].price")):
        r = _post(c, {"type": "purchase", "user_id": "u1", "item_id": "i1", "ts": time.time(), **body})
        assert (r.status_code, r.json()["error"]["field"]) == (422, field), body
    assert _post(c, {"type": "purchase", "user_id": "u1", "ts": time.time(),
                     "items": ["i1"] * 2500}).status_code == 202  # merged into one line of quantity 2,500
    # one line of price 1e9 x quantity 1e6 was a 202 (tester31, 8.3): [stream] max_price / max_quantity bound
    # what one event adds to the analytics' revenue (defaults 1e6 and 100,000)
    for body, field in (({"price": 1e9, "quantity": 1e6}, "price"), ({"price": 1.0, "quantity": 1e6}, "quantity"),
                        ({"item_id": None, "items": [{"item_id": "i1", "price": 2e6}]}, "items[0].price"),
                        ({"item_id": None, "items": [{"item_id": "i1", "quantity": 200_000}]}, "items[0].quantity")):
        r = _post(c, {"type": "purchase", "user_id": "u1", "item_id": "i1", "ts": time.time(), **body})
        assert (r.status_code, r.json()["error"]["field"]) == (422, field), body
        assert "stream.max_" in r.json()["error"]["reason"], r.text
    assert _post(c, {"type": "purchase", "user_id": "u1", "item_id": "i1", "ts": time.time(),
                     "price": 1e6, "quantity": 100_000}).status_code == 202


def test_oversize_events_ids_and_batches_are_4xx(api):
    c = api
    big = "x" * (1 << 20)
    cases = {
        "1 MB field": {"type": "view", "user_id": "u1", "item_id": "i1", "note": big},
        "2 MB event": {"type": "view", "user_id": "u1", "item_id": "i1", "note": big * 2},  # the case
        "1 MB user_id": {"type": "view", "user_id": big, "item_id": "i1"},
        "basket of 900 long ids": {"type": "purchase", "user_id": "u1", "items": [f"{i:0100d}" for i in range(900)]},
    }
    for what, ev in cases.items():
        r = _post(c, ev)
        if what == "1 MB user_id":  # the id rule (length) refuses it before the size rule
            assert (r.status_code, r.json()["error"]["field"]) == (422, "user_id"), r.text[:200]
            continue
        assert r.status_code == 413, (what, r.status_code, r.text[:200])
        assert "max_event_bytes" in r.json()["error"]["reason"], what
    # a 10,000-item basket is refused by its item count (api.max_basket_items), before its size is looked at
    r = _post(c, {"type": "purchase", "user_id": "u1", "items": [f"i{i}" for i in range(10_000)]})
    assert (r.status_code, r.json()["error"]) == (422, {"field": "items",
                                                        "reason": "10000 distinct items > api.max_basket_items=1000"})
    r = c.post("/v1/events", json=[{"type": "view", "user_id": "u1", "item_id": "i1"}] * 1001, headers=CLIENT)
    assert (r.status_code, r.json()["error"]["field"]) == (422, "events")
    r = c.post("/v1/events", content=b"[" + b" " * (5 << 20) + b"]", headers=CLIENT)
    assert (r.status_code, r.json()["error"]["field"]) == (413, "body")
    r = c.get("/v1/recommendations", params={"user_id": big[:10_000]}, headers=CLIENT)
    assert 400 <= r.status_code < 500


def test_deeply_nested_json_is_a_4xx_never_a_500_nor_an_accepted_event(api):
    """Extra fields nested past 16 levels would stop the lake's archiver (orjson's 255-level limit)
    or hit the Python stack; they are refused at the door (a new user found a 202 and a 500)."""
    c = api

    def nested(depth: int) -> bytes:
        return b"[" * depth + b"1" + b"]" * depth

    ok = b'{"type":"view","user_id":"u1","item_id":"i1","tags":' + nested(16) + b"}"
    assert c.post("/v1/events", content=ok, headers=CLIENT).status_code == 202
    for depth in (17, 260, 1000, 1023, 5000):
        body = b'{"type":"view","user_id":"u1","item_id":"i1","tags":' + nested(depth) + b"}"
        r = c.post("/v1/events", content=body, headers=CLIENT)
        assert 400 <= r.status_code < 500, (depth, r.status_code, r.text[:200])
        if depth < 1024:  # deeper is refused by the JSON parser itself ("body")
            assert r.json()["error"]["field"] in ("tags", "events[0].tags"), r.text[:200]
    for depth in (300, 1000):
        body = b'{"scenario":"popular","params":' + nested(depth) + b"}"
        r = c.put("/v1/campaigns/deep", content=body, headers={**ADMIN, "content-type": "application/json"})
        assert 400 <= r.status_code < 500, (depth, r.status_code, r.text[:200])


def test_hostile_iql_is_a_400_naming_the_place(api):
    c = api
    for flt in (r'brand == "\x4"', r'brand == "\N{NO SUCH}"', 'brand == "a\x00b"', "NOT " * 300 + "on_sale",
                "price < " + "+".join(["1"] * 1900)):
        r = c.put("/v1/campaigns/bad", json={"scenario": "popular", "filter": flt}, headers=ADMIN)
        assert r.status_code == 400, (flt[:40], r.status_code, r.text[:300])
        err = r.json()["error"]
        assert err["field"] == "filter" and err["line"] == 1 and err["column"] >= 1, err


def test_a_far_future_event_from_the_shops_producer_does_not_poison_top_lists_even_after_a_restart(broker, tmp_path):
    """The issue's case past the API: a ``view`` in 2099 written straight to ``events`` (a shop's own producer).
    The flow dead-letters it (``bad_timestamp`` against the Kafka timestamp), so the windowed popularity it
    publishes keeps the real items: a top/24h list is i1, i2, i3, before and after an API restart."""
    s = make_settings(broker, tmp_path, partitions=1, window_publish_s=0.2)
    now = time.time()
    with EventProducer.from_settings(s.kafka) as producer:
        producer.send_catalog([{"item_id": i, "price": 1.0} for i in ("i1", "i2", "i3", "poison")])
    p = make_producer(broker)
    for n, item in enumerate(["i1"] * 3 + ["i2"] * 2 + ["i3"]):
        p.produce(s.kafka.events_topic, key=f"u{n}".encode(), value=orjson.dumps(
            {"event_id": f"e{n}", "ts": now - 60, "type": "view", "user_id": f"u{n}", "item_id": item}))
    p.produce(s.kafka.events_topic, key=b"attacker", value=orjson.dumps(
        {"event_id": "poison", "ts": 4_070_908_800, "type": "view", "user_id": "attacker", "item_id": "poison"}))
    assert p.flush(30) == 0
    top24 = {"scenario": "top", "arms": [{"name": "day", "strategy": "top", "params": {"window": "24h"}}]}
    flow = FlowProcess(s, tmp_path / "flow.toml").start()
    try:
        wait_caught_up(s, flow, timeout_s=90)
        for start in ("first", "restart"):
            with ApiServer(s) as server, httpx.Client(base_url=server.url, timeout=10) as c:
                if start == "first":
                    assert c.put("/v1/campaigns/top24", json=top24).status_code == 201

                def ids() -> list[str]:
                    r = c.get("/v1/recommendations", params={"campaign": "top24", "user_id": "new-user"})
                    return [i["item_id"] for i in r.json()["items"]] if r.status_code == 200 else []

                got = wait_for(lambda: (lambda x: x if x[:3] == ["i1", "i2", "i3"] else None)(ids()), 30,
                               what=f"top/24h = i1, i2, i3 ({start}); last: {ids()}")
                assert "poison" not in got, (start, got)
    finally:
        flow.stop()
    c = Consumer({"bootstrap.servers": broker, "group.id": "t", "enable.auto.commit": False})
    c.assign([TopicPartition(s.kafka.dead_topic, 0, 0)])
    dead = [orjson.loads(m.value()) for m in c.consume(100, 5.0) if not m.error()]
    c.close()
    assert [(d["reason"], orjson.loads(base64.b64decode(d["raw"]))["event_id"]) for d in dead] == [
        ("bad_timestamp", "poison")], dead


def test_segment_values_a_campaign_does_not_declare_create_no_optimizer_keys(api):
    """The client key sends any segment value it likes: only the campaign's declared segments are
    learned apart; every other value counts for the global arm statistics (segment "") and adds no key,
    so junk values cannot fill the per-campaign bound and crowd out the real segments."""
    c = api
    seg = {"scenario": "popular", "arms": CAMPAIGN["arms"],
           "optimizer": {"segment_param": "device", "segments": ["mobile", "desktop", "mobile"]}}
    r = c.put("/v1/campaigns/seg-ab", json=seg, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["optimizer"]["segments"] == ["mobile", "desktop"]
    too_many = {**seg, "optimizer": {"segment_param": "device", "segments": [f"s{k}" for k in range(101)]}}
    r = c.put("/v1/campaigns/seg-many", json=too_many, headers=ADMIN)
    assert (r.status_code, r.json()["error"]["field"]) == (422, "optimizer.segments"), r.text

    sent = {"mobile": 0, "": 0}
    for k in range(120):
        device = "mobile" if k % 4 == 0 else f"junk-{k}"
        r = c.get("/v1/recommendations", params={"campaign": "seg-ab", "user_id": f"u{k}", "device": device},
                  headers=CLIENT)
        assert r.status_code == 200, r.text
        assert r.json()["segment"] == ("mobile" if device == "mobile" else ""), (device, r.json()["segment"])
        sent[r.json()["segment"]] += 1

    def pulls(segment: str) -> int:
        body = c.get("/v1/campaigns/seg-ab/arms", params={"segment": segment}, headers=ADMIN).json()
        return sum(a["pulls"] for a in body["arms"])

    wait_for(lambda: pulls("") + pulls("mobile") == 120, what="the 120 lists' pulls")
    assert (pulls("mobile"), pulls("")) == (sent["mobile"], sent[""]) == (30, 90)
    arms = c.get("/v1/campaigns/seg-ab/arms", headers=ADMIN).json()
    assert arms["segments"] == ["", "mobile"]  # no key for any junk value
    assert pulls("junk-1") == 0
