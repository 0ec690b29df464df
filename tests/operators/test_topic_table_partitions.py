"""``TopicTable`` follows its topic's partitions: a topic recreated with more of them is read whole (trial 31,
finding 1: after the embedded broker restarted, ``analytics`` came back with 4 partitions and the API's
reader kept reading partition 0 only, so the dashboard lost ~75 % of its rows without a word)."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from confluent_kafka import Producer

from operators.broker import LocalBroker
from operators.kafka import TopicSpec, ensure_topics
from operators.topic_table import TopicTable


def _wait(cond, timeout_s: float = 30.0) -> bool:  # noqa: ANN001 (a predicate)
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(cond())


def _produce(bootstrap: str, topic: str, records: list[tuple[int, str]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap})  # a new one each time: it knows no old partition count
    for partition, key in records:
        p.produce(topic, key=key.encode(), value=key[:3].encode(), partition=partition)
    assert p.flush(10) == 0


def test_a_topic_back_with_more_partitions_after_a_broker_restart_is_read_whole(caplog: pytest.LogCaptureFixture):
    """The broker comes back empty and the topic with 4 partitions (as auto-created with Tansu's default):
    the reader reads all 4, each new one from its start, and says so."""
    topic = f"parts-{uuid.uuid4().hex[:8]}"
    b = LocalBroker().start()  # its own: it is restarted
    seen: dict[str, object] = {}
    table = TopicTable(b.bootstrap, topic, bytes.decode, on_update=seen.__setitem__)
    table.guard.check_every_s = 0.5  # the partitions are listed again at the guard's interval (10 s by default)
    caplog.set_level(logging.WARNING, logger="operators.topic_table")
    try:
        ensure_topics(b.bootstrap, [TopicSpec(topic, 1, compacted=True)])
        _produce(b.bootstrap, topic, [(0, f"old{j}") for j in range(3)])
        table.start()
        assert table.wait_caught_up(20) and _wait(lambda: len(seen) == 3)
        b.stop()
        b.start()  # empty, on the same port
        ensure_topics(b.bootstrap, [TopicSpec(topic, 4, compacted=True)])
        _produce(b.bootstrap, topic, [(part, f"new{part}") for part in range(4)])
        new = {f"new{part}" for part in range(4)}
        assert _wait(lambda: new <= seen.keys()), sorted(seen)
        assert {k: v for k, v in seen.items() if k.startswith("new")} == dict.fromkeys(sorted(new), "new")
        assert f"topic {topic} now has partitions [0, 1, 2, 3] (it had [0])" in caplog.text
    finally:
        table.stop()
        b.stop()
