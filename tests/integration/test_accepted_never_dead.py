"""What POST /v1/events answers 202 to is never dead-lettered by the flow (issue 13): the API applies
the flow's own rules (fields, types, ids, size, ts, price and quantity bounds), so events at the edge of
every bound pass both, and events just past a bound are refused by the API with a 4xx."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.harness import ApiServer, FlowProcess, make_settings, wait_caught_up

pytestmark = pytest.mark.integration


def test_events_at_every_bound_are_accepted_and_applied(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=2)
    now = time.time()
    room = s.stream.max_event_bytes - 400
    edge = [
        {"type": "view", "user_id": "u1", "item_id": "i1", "ts": now + s.stream.future_skew_s - 30},
        {"type": "view", "user_id": "u2", "item_id": "i2", "ts": now - s.api.max_age_s + 60},
        {"type": "view", "user_id": "u3", "item_id": "i3", "note": "x" * room},
        {"type": "purchase", "user_id": "u4", "items": [f"i{i}" for i in range(min(room // 40, s.api.max_basket_items))]},
        {"type": "add_to_cart", "user_id": 12345, "item_id": 67890.0},
        {"type": "purchase", "user_id": "u6", "item_id": "i6", "price": s.stream.max_price,
         "quantity": s.stream.max_quantity},
        {"type": "view", "user_id": "u" * 256, "item_id": "i5", "ts": "2026-01-01T00:00:00Z"} if
        now - 1_767_225_600 < s.api.max_age_s else {"type": "view", "user_id": "u" * 256, "item_id": "i5"},
    ]
    past = [
        {"type": "view", "user_id": "u1", "item_id": "i1", "ts": now + s.stream.future_skew_s + 30},
        {"type": "view", "user_id": "u2", "item_id": "i2", "ts": now - s.api.max_age_s - 60},
        {"type": "view", "user_id": "u3", "item_id": "i3", "note": "x" * (s.stream.max_event_bytes + 10)},
        {"type": "view", "user_id": "u" * 257, "item_id": "i5"},
        {"type": "purchase", "user_id": "u4", "items": [f"i{i}" for i in range(s.api.max_basket_items + 1)]},
        {"type": "purchase", "user_id": "u6", "item_id": "i6", "price": s.stream.max_price * 1.01},
        {"type": "purchase", "user_id": "u6", "items": [{"item_id": "i6", "quantity": s.stream.max_quantity + 1}]},
    ]
    with ApiServer(s) as api, httpx.Client(base_url=api.url, timeout=10) as c:
        for ev in edge:
            r = c.post("/v1/events", content=orjson.dumps(ev))
            assert r.status_code == 202, (str(ev)[:80], r.text[:300])
        for ev in past:
            r = c.post("/v1/events", content=orjson.dumps(ev))
            assert 400 <= r.status_code < 500, (str(ev)[:80], r.status_code)
    flow = FlowProcess(s, tmp_path / "flow.toml").start()
    try:
        wait_caught_up(s, flow, timeout_s=120)
    finally:
        flow.stop()
    cons = Consumer({"bootstrap.servers": s.kafka.brokers, "group.id": "t", "enable.auto.commit": False})
    cons.assign([TopicPartition(s.kafka.dead_topic, 0, 0)])
    dead = [m for m in cons.consume(100, 3.0) if not m.error()]
    cons.close()
    assert dead == [], [orjson.loads(m.value())["reason"] for m in dead]
