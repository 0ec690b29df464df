"""EventProducer against a real broker: keys, values, and Java-murmur2 partitions."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from operators.schema import encode_event
from simulators.producer import EventProducer
from simulators.shop import SyntheticShop

pytestmark = pytest.mark.integration

PARTITIONS = 4


def java_murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` (Java client): 32-bit signed result, seed 0x9747b28c."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = data[4 * n4 :]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def java_partition(key: bytes, partitions: int) -> int:
    """``DefaultPartitioner``/``BuiltInPartitioner``: ``toPositive(murmur2(key)) % partitions``."""
    return (java_murmur2(key) & 0x7FFFFFFF) % partitions


def test_java_murmur2_known_values() -> None:
    # values from Kafka's UtilsTest.testMurmur2
    assert java_murmur2(b"21") == -973932308
    assert java_murmur2(b"foobar") == -790332482
    assert java_murmur2(b"a-little-bit-long-string") == -985981536
    assert java_murmur2(b"a-little-bit-longer-string") == -1486304829
    assert java_murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971
    assert java_murmur2(b"abc") == 479470107


def _consume_all(bootstrap: str, topic: str, partitions: int, expected: int, timeout_s: float = 20.0) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    import time

    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                assert msg.error() is None, msg.error()
                out.append(msg)
    finally:
        consumer.close()
    return out


def test_events_land_on_java_murmur2_partitions(tansu_bootstrap: str, make_topic) -> None:
    topic = make_topic("events-producer-test", PARTITIONS)
    events = SyntheticShop(n_items=200, n_users=100, seed=3).history(1000)
    with EventProducer(tansu_bootstrap, events_topic=topic) as producer:
        n = producer.send_events(events, progress=False)
    assert n == 1000
    assert producer.delivered == 1000 and not producer.errors

    msgs = _consume_all(tansu_bootstrap, topic, PARTITIONS, 1000)
    assert len(msgs) == 1000
    for msg in msgs:
        assert msg.partition() == java_partition(msg.key(), PARTITIONS)
    by_id = {e.event_id: e for e in events}
    for msg in msgs:
        d = orjson.loads(msg.value())
        ev = by_id[d["event_id"]]
        assert msg.key() == ev.user_id.encode()
        assert msg.value() == encode_event(ev)
    # per user, order is kept (one user -> one partition)
    for p in range(PARTITIONS):
        got = [orjson.loads(m.value())["event_id"] for m in msgs if m.partition() == p]
        want = [e.event_id for e in events if java_partition(e.user_id.encode(), PARTITIONS) == p]
        assert got == want


def test_catalog_items_keyed_by_item_id(tansu_bootstrap: str, make_topic) -> None:
    topic = make_topic("catalog-producer-test", 1)
    items = SyntheticShop(n_items=50, n_users=5, seed=1).catalog()
    with EventProducer(tansu_bootstrap, catalog_topic=topic) as producer:
        assert producer.send_catalog(items) == 50
    msgs = _consume_all(tansu_bootstrap, topic, 1, 50)
    assert [m.key().decode() for m in msgs] == [d["item_id"] for d in items]
    assert [orjson.loads(m.value()) for m in msgs] == items


def test_paced_send_respects_rate(tansu_bootstrap: str, make_topic) -> None:
    import time

    topic = make_topic("events-paced-test", 2)
    events = SyntheticShop(n_items=50, n_users=10, seed=2).history(200)
    with EventProducer(tansu_bootstrap, events_topic=topic) as producer:
        t0 = time.monotonic()
        producer.send_events(events, rate_per_s=400.0, progress=False)
        elapsed = time.monotonic() - t0
    assert 0.45 <= elapsed < 3.0


def test_send_events_rejects_two_paces() -> None:
    producer = EventProducer("127.0.0.1:1")
    with pytest.raises(ValueError, match="rate_per_s or speed, not both"):
        producer.send_events([], rate_per_s=1.0, speed=2.0)
    with pytest.raises(ValueError, match="speed: must be > 0"):
        producer.send_events([], speed=0.0)


def test_delivery_errors_are_counted() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    events = SyntheticShop(n_items=50, n_users=10, seed=2).history(5)
    producer = EventProducer(f"127.0.0.1:{port}", config={"message.timeout.ms": 300})
    assert producer.send_events(events, progress=False) == 5
    assert producer.delivered == 0
    assert producer.errors == {"_MSG_TIMED_OUT": 5}
    producer.close()
