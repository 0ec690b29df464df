"""Bad input goes to the dead-letter topic with its reason; valid events around it are all applied."""

from __future__ import annotations

import time

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from operators.kafka import make_producer
from tests.harness import FlowProcess, dump_state, make_settings, wait_caught_up

pytestmark = pytest.mark.integration

TS = 1_764_400_000.0


def _valid(i: int) -> tuple[bytes, bytes]:
    u = f"user-{i % 13}"
    return u.encode(), orjson.dumps({"event_id": f"e{i}", "ts": TS + i, "type": "view", "user_id": u,
                                     "item_id": f"item-{i % 37}"})


BAD: list[tuple[bytes | None, bytes | None, str, str]] = [
    (b"u1", b"{not json", "malformed_json", "value"),
    (b"u1", orjson.dumps({"event_id": "b1", "ts": TS, "type": "view", "item_id": "a"}), "invalid_field", "user_id"),
    (b"u1", orjson.dumps({"event_id": "b2", "ts": "yesterday", "type": "view", "user_id": "u1", "item_id": "a"}),
     "bad_timestamp", "ts"),
    (b"u1", orjson.dumps({"event_id": "b3", "ts": TS, "type": "view", "user_id": "u1", "item_id": 1.5}),
     "invalid_field", "item_id"),
    (b"u1", orjson.dumps({"event_id": "b4", "ts": TS, "type": "teleport", "user_id": "u1", "item_id": "a"}),
     "unknown_event_type", "type"),
    (b"u1", orjson.dumps({"event_id": "b5", "ts": TS * 1000, "type": "view", "user_id": "u1", "item_id": "a"}),
     "bad_timestamp", "ts"),
    (b"u1", b'{"pad": "' + b"x" * 1_000_000 + b'"}', "too_large", "value"),
    (None, orjson.dumps({"event_id": "b6", "ts": TS, "type": "view", "user_id": "u1", "item_id": "a"}),
     "missing_key", "key"),
    (b"u2", orjson.dumps({"event_id": "b7", "ts": TS, "type": "view", "user_id": "u1", "item_id": "a"}),
     "key_mismatch", "key"),
]


def test_bad_events_are_dead_lettered_and_valid_ones_applied(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=2)
    p = make_producer(broker)
    n_valid = 0
    for i in range(3000):
        if i % 300 == 150:
            key, value, _, _ = BAD[(i // 300) % len(BAD)]
            p.produce(s.kafka.events_topic, key=key, value=value)
        k, v = _valid(i)
        p.produce(s.kafka.events_topic, key=k, value=v)
        n_valid += 1
    for key, value, _, _ in BAD:  # every kind at least once
        p.produce(s.kafka.events_topic, key=key, value=value)
    assert p.flush(30) == 0
    flow = FlowProcess(s, tmp_path / "flow.toml").start()
    try:
        wait_caught_up(s, flow, timeout_s=90)
        assert flow.alive(), "the flow stopped on bad input"
    finally:
        flow.stop()

    c = Consumer({"bootstrap.servers": broker, "group.id": "t", "enable.auto.commit": False})
    c.assign([TopicPartition(s.kafka.dead_topic, 0, 0)])
    dead, deadline = [], time.monotonic() + 20
    n_bad = 10 + len(BAD)
    while len(dead) < n_bad and time.monotonic() < deadline:
        dead += [orjson.loads(m.value()) for m in c.consume(100, 0.2) if not m.error()]
    c.close()
    assert len(dead) == n_bad
    got = {(d["reason"], d["field"]) for d in dead}
    assert got == {(r, f) for _, _, r, f in BAD}
    assert all(d["offset"] is not None and d["raw"] and d["detail"] for d in dead)

    state = dump_state(s)
    applied = sum(sum(st.counts.values()) for part in state.values() for st in part["users"].values())
    assert applied == n_valid
