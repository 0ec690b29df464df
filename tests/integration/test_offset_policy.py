"""A stored offset beyond the log end (the topic was recreated): detected, logged, counted, and
handled by ``stream.offset_beyond_end`` — with the real broker and the real flow.

Before this, a flow whose stored offsets lay above a recreated log's end waited silently for
offsets the new log reaches only much later, skipping every new event.
"""

from __future__ import annotations

import shutil
import time
import uuid

import pytest

from operators.kafka import TopicSpec, ensure_topics, make_producer
from operators.offset_guard import OffsetGuard
from operators.schema import Event, encode_event
from state import keys
from state.partition import PartitionDB, partition_path
from tests.harness import FlowProcess, dump_state, make_settings, wait_caught_up

pytestmark = pytest.mark.integration


def _produce(brokers: str, topic: str, events: list[Event]) -> None:
    p = make_producer(brokers)
    for e in events:
        p.produce(topic, key=e.user_id.encode(), value=encode_event(e))
    assert p.flush(10) == 0


def _events(n: int, tag: str) -> list[Event]:
    return [Event(event_id=f"{tag}-{j}", ts=1.7e9 + j, type="view", user_id=f"u{j % 7}", item_id=f"i{j % 13}")
            for j in range(n)]


@pytest.mark.parametrize("policy", ["earliest", "latest"])
def test_the_guard_finds_positions_beyond_the_end_and_says_where_to_resume(broker, policy):
    topic = f"guard-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker, [TopicSpec(topic, 1)])
    _produce(broker, topic, _events(10, "g"))
    guard = OffsetGuard(broker, topic, policy)
    assert guard.check({0: 10}) == [] and guard.check({0: 4}) == []  # at or before the end: fine
    [b] = guard.check({0: 250})
    assert (b.partition, b.next_offset, b.log_start, b.log_end) == (0, 250, 0, 10)
    assert b.resume_at == (0 if policy == "earliest" else 10) and guard.detected == 1


def _recreated(broker: str, tmp_path, policy: str):
    """Settings whose partition state (offsets 30 and up) lies beyond a freshly created topic's end.

    A first flow consumes 60 events of topic A; its state is then moved under the name of a new,
    empty topic B, as if A had been recreated (an empty broker on the same port).
    """
    a = make_settings(broker, tmp_path / "a", partitions=2)
    _produce(broker, a.kafka.events_topic, _events(60, "old"))
    flow = FlowProcess(a, tmp_path / "a.toml").start()
    try:
        wait_caught_up(a, flow, timeout_s=60)
    finally:
        flow.stop()
    b = make_settings(broker, tmp_path / "b", partitions=2, offset_beyond_end=policy)
    b = b.model_copy(update={"stream": b.stream.model_copy(update={"state_dir": a.stream.state_dir,
                                                                   "model_dir": a.stream.model_dir})})
    shutil.move(a.stream.state_dir / a.kafka.events_topic, a.stream.state_dir / b.kafka.events_topic)
    return a, b


def _resets(settings, p: int) -> int:
    db = PartitionDB(partition_path(settings.stream.state_dir, settings.kafka.events_topic, p), read_only=True)
    try:
        raw = db.get_meta(keys.META_OFFSET_RESETS)
        return 0 if raw is None else keys.decode_int(raw)
    finally:
        db.close()


def test_earliest_applies_every_event_of_the_recreated_log(broker, tmp_path):
    _, b = _recreated(broker, tmp_path, "earliest")
    new = _events(20, "new")  # fewer than the stored offsets: all would be skipped silently before
    _produce(broker, b.kafka.events_topic, new)
    flow = FlowProcess(b, tmp_path / "b.toml").start()
    try:
        deadline = time.monotonic() + 60
        while [_resets(b, p) for p in range(2)] != [1, 1]:  # the stored offsets look "caught up" until then
            assert time.monotonic() < deadline and flow.alive(), flow.log_text()[-3000:]
            time.sleep(0.1)
        wait_caught_up(b, flow, timeout_s=60)
    finally:
        flow.stop()
    counts = sum(sum(st.counts.values()) for p in dump_state(b).values() for st in p["users"].values())
    assert counts == 60 + 20  # the old state kept, every new event applied once
    assert [_resets(b, p) for p in range(2)] == [1, 1]
    log = flow.log_text()
    assert log.count("is beyond the log (") == 2 and "ERROR" in log


def test_fail_stops_the_flow_with_an_error_that_says_what_to_do(broker, tmp_path):
    _, b = _recreated(broker, tmp_path, "fail")
    flow = FlowProcess(b, tmp_path / "b.toml").start()
    try:
        flow.procs[0].wait(60)
    finally:
        flow.stop()
    assert flow.procs[0].returncode != 0
    log = flow.log_text()
    assert "is beyond the log end" in log and "stream.offset_beyond_end = 'fail'" in log
    assert [_resets(b, p) for p in range(2)] == [0, 0]  # nothing committed
