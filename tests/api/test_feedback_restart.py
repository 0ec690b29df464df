"""api/feedback_reader.py restarts from its snapshot plus the tail of ``events`` (real broker, real RocksDB).

Windowed popularity is in the optimizer's snapshot, so a restarted API process no longer folds
the whole events topic: it loads the snapshot and reads only what was written after it, and
ends with the same popularity and arm counts as a process that read everything.
"""

from __future__ import annotations

import time
import uuid

import numpy as np

from api.feedback import FeedbackFold
from api.feedback_reader import FeedbackReader
from api.optimizer import ThompsonOptimizer
from api.window_popularity import WindowPopularity
from operators.kafka import TopicSpec, ensure_topics, make_producer
from operators.parse import EventRules
from operators.schema import Event, encode_event
from operators.settings import DEFAULT_EVENT_TYPES
from state.bandit import BanditStore

WEIGHTS = {t.name: t.weight for t in DEFAULT_EVENT_TYPES}


def _reader(broker: str, topic: str, path) -> FeedbackReader:  # noqa: ANN001
    fold = FeedbackFold(ThompsonOptimizer(np.random.default_rng(0)), WindowPopularity(3600.0, 30 * 86400.0),
                        lambda _c: None, WEIGHTS)  # type: ignore[arg-type,return-value]
    return FeedbackReader(broker, topic, fold, BanditStore(path), EventRules.from_specs(DEFAULT_EVENT_TYPES, 65536),
                          snapshot_every_s=0.2).start()


def _produce(broker: str, topic: str, events: list[Event]) -> None:
    p = make_producer(broker)
    for e in events:
        p.produce(topic, key=e.user_id.encode(), value=encode_event(e))
    assert p.flush(10) == 0


def _events(n: int, start: int) -> list[Event]:
    return [Event(event_id=f"e{start + j}", ts=1.7e9 + (start + j) * 30.0, type=["view", "purchase"][j % 2],
                  user_id=f"u{j % 11}", item_id=f"i{(start + j) % 17}") for j in range(n)]


def _fold_all(reader: FeedbackReader, timeout_s: float = 20.0) -> None:
    assert reader.wait_caught_up(timeout_s)
    reader.drain(None)


def test_a_restart_reads_the_snapshot_and_only_the_tail(broker, tmp_path):
    topic = f"events-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker, [TopicSpec(topic, 2)])
    _produce(broker, topic, _events(3000, 0))
    first = _reader(broker, topic, tmp_path / "bandit")
    _fold_all(first)
    first.stop()  # drains and writes the snapshot with its offsets

    _produce(broker, topic, _events(200, 3000))  # written while the process is down
    again = _reader(broker, topic, tmp_path / "bandit")
    fresh = _reader(broker, topic, tmp_path / "fresh")  # a new node: no snapshot, reads everything
    try:
        _fold_all(again)
        _fold_all(fresh)
        deadline = time.monotonic() + 10
        while sum(again.offsets.values()) < 3200 and time.monotonic() < deadline:
            again.drain(None)
            time.sleep(0.05)
        assert first.n_folded == fresh.n_folded - 200 == 3000
        assert again.n_folded == 200  # only the tail
        for window in (3600.0, 86400.0, 30 * 86400.0):
            ids_a, w_a = again.fold.popularity.top(window)
            ids_f, w_f = fresh.fold.popularity.top(window)
            assert ids_a == ids_f and np.allclose(w_a, w_f)
        assert again.fold.popularity.clock == fresh.fold.popularity.clock == 1.7e9 + 3199 * 30.0
    finally:
        again.stop()
        fresh.stop()
