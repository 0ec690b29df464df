"""A second flow on the same state stops at once with "partition N is owned by another process (pid …)"
(issue 15), instead of a RocksDB LOCK traceback after the first batch."""

from __future__ import annotations

import time

import pytest

from operators.kafka import make_producer
from tests.harness import FlowProcess, make_settings, wait_caught_up

pytestmark = pytest.mark.integration


def test_second_flow_names_the_owner(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=2)
    p = make_producer(broker)
    now = time.time()
    for i in range(20):
        u = f"u{i}"
        p.produce(s.kafka.events_topic, key=u.encode(),
                  value=(f'{{"event_id": "e{i}", "ts": {now}, "type": "view", "user_id": "{u}", "item_id": "i{i}"}}').encode())
    p.flush(10)
    first = FlowProcess(s, tmp_path / "a.toml").start()
    second = None
    try:
        wait_caught_up(s, first, timeout_s=120)
        t0 = time.monotonic()
        second = FlowProcess(s, tmp_path / "b.toml").start()
        deadline = t0 + 30
        while second.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        took = time.monotonic() - t0
        assert not second.alive(), "the second flow kept running"
        log = second.log_text()
        assert f"is owned by another process (pid {first.procs[0].pid} on" in log, log[-2000:]
        assert "partition 0 is owned" in log or "partition 1 is owned" in log
        assert took < 15, took  # at start-up, not after the first batch
        assert first.alive()
    finally:
        if second is not None:
            second.stop()
        first.stop()
