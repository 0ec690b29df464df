"""api/feedback_reader.py restarts from its snapshot plus the tails (real broker, real RocksDB).

A restarted API process loads the optimizer's snapshot and reads only what was written after it,
and ends with the same arm counts as a new node that read both topics from the start. Events
that change nothing for the optimizer (no request id, their user has no open list) are skipped
before parsing; a reader that parses every event ends with the same state.
"""

from __future__ import annotations

import time
import uuid

import numpy as np

from api.feedback import FeedbackFold
from api.feedback_reader import FeedbackReader
from api.optimizer import OptimizerConfig, ThompsonOptimizer
from operators.attribution import REQUEST_TYPE
from operators.kafka import TopicSpec, ensure_topics, make_producer
from operators.parse import EventRules
from operators.schema import Event, encode_event
from operators.settings import DEFAULT_EVENT_TYPES
from state.bandit import BanditStore

NOW = time.time()


class _ParseAll(FeedbackReader):
    """The reader without the unparsed skip: every event is parsed and folded."""

    def _no_effect(self, k: bytes | None, value: bytes | None) -> bool:
        return False


def _reader(broker: str, topics: tuple[str, str], path, cls: type[FeedbackReader] = FeedbackReader) -> FeedbackReader:  # noqa: ANN001
    fold = FeedbackFold(ThompsonOptimizer(np.random.default_rng(0)), lambda _c: OptimizerConfig(half_life_s=86400.0))
    return cls(broker, topics[0], fold, BanditStore(path), EventRules.from_specs(DEFAULT_EVENT_TYPES, 65536),
               snapshot_every_s=0.2, served_topic=topics[1], served_wait_s=10.0).start()


def _produce(broker: str, topics: tuple[str, str], start: int, n: int) -> int:
    """``n`` events of 40 users, and a served list to one of 20 users every 10th; clicks by those users.
    Returns the number of records written."""
    p = make_producer(broker)
    written = 0
    for j in range(start, start + n):
        ts = NOW - 86400 + j * 5.0
        user = f"u{j % 40}"
        if j % 10 == 0:
            rid = f"r{j}"
            served = f"u{j // 10 % 20}"
            ev = Event(event_id=rid, ts=ts, type=REQUEST_TYPE, user_id=served, campaign_id="c", arm="ab"[j % 20 // 10],
                       request_id=rid, extra={"goal": "click", "window_s": 3600.0, "served_items": [f"i{j % 13}"]})
            p.produce(topics[1], key=served.encode(), value=encode_event(ev))
            written += 1
        kind = "click" if j % 3 == 0 else "view"
        ev = Event(event_id=f"e{j}", ts=ts + 1.0, type=kind, user_id=user, item_id=f"i{j % 13}")
        p.produce(topics[0], key=user.encode(), value=encode_event(ev))
        written += 1
    assert p.flush(10) == 0
    return written


def _fold_all(reader: FeedbackReader, total: int, timeout_s: float = 30.0) -> None:
    assert reader.wait_caught_up(timeout_s)
    deadline = time.monotonic() + timeout_s
    while (reader._held or sum(reader._pos.values()) < total) and time.monotonic() < deadline:
        reader.drain(None)
        time.sleep(0.05)
    reader.drain(None)
    assert not reader._held


def _arms(reader: FeedbackReader) -> dict[tuple[str, str, str], tuple[int, int, float, float]]:
    return {k: (st.total_pulls, st.total_rewards, round(st.pulls, 9), round(st.rewards, 9))
            for k, st in reader.fold.optimizer.arms.items()}


def test_a_restart_reads_the_snapshot_and_only_the_tail(broker, tmp_path):
    tag = uuid.uuid4().hex[:8]
    topics = (f"events-{tag}", f"served-{tag}")
    # one partition each: with several, which lists are open when an event is folded depends on how
    # the partitions' reads interleave (README, Scaling: what is not guaranteed)
    ensure_topics(broker, [TopicSpec(topics[0], 1), TopicSpec(topics[1], 1)])
    n_first = _produce(broker, topics, 0, 3000)
    first = _reader(broker, topics, tmp_path / "bandit")
    _fold_all(first, n_first)
    first.stop()  # drains and writes the snapshot with its offsets

    n_tail = _produce(broker, topics, 3000, 200)  # written while the process is down
    again = _reader(broker, topics, tmp_path / "bandit")
    fresh = _reader(broker, topics, tmp_path / "fresh")  # a new node: no snapshot, reads everything
    parsed = _reader(broker, topics, tmp_path / "parsed", _ParseAll)
    try:
        for r in (again, fresh, parsed):
            _fold_all(r, n_first + n_tail)
        assert first.n_folded == n_first and again.n_folded == n_tail  # only the tail
        assert fresh.n_folded == parsed.n_folded == n_first + n_tail
        assert fresh.fold.n_rewards > 0 and fresh.fold.n_served == 320
        assert _arms(again) == _arms(fresh) == _arms(parsed)
        assert fresh.fold.n_rewards == parsed.fold.n_rewards
        # events of the 20 users who never get a list name no request: not parsed
        assert fresh.n_unparsed > 0.4 * 3200 and parsed.n_unparsed == 0
    finally:
        again.stop()
        fresh.stop()
        parsed.stop()
