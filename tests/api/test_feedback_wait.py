"""api/feedback_reader.py: an event that may convert a served list not read yet waits for the served lists by
offsets, not by wall time (real broker, real RocksDB).

An event without a request id, newer than the newest served list, waits until the served lists the broker
held when the event was fetched have been folded. Before, it waited at most ``served_wait_s`` (2 s) of wall
time: under load, with the fold behind the served topic, the event was folded before its list and earned
no reward; how far behind decided the optimizer's counts.
"""

from __future__ import annotations

import time
import uuid

import numpy as np

from api.feedback import FeedbackFold
from api.feedback_reader import SERVED_GRACE_S, FeedbackReader, _ServedEnds
from api.optimizer import OptimizerConfig, ThompsonOptimizer
from operators.attribution import REQUEST_TYPE
from operators.kafka import TopicSpec, ensure_topics, make_producer
from operators.parse import EventRules
from operators.schema import Event, encode_event
from operators.settings import DEFAULT_EVENT_TYPES
from state.bandit import BanditStore
from tests.platform import wait_for

NOW = time.time()


def _served(rid: str, user: str, ts: float) -> Event:
    return Event(event_id=rid, ts=ts, type=REQUEST_TYPE, user_id=user, campaign_id="c", arm="a", request_id=rid,
                 extra={"goal": "click", "window_s": 3600.0, "served_items": ["i1"]})


def test_an_event_waits_for_the_lists_fetched_before_it_however_late_they_are_folded(broker, tmp_path):
    tag = uuid.uuid4().hex[:8]
    events, served = f"events-{tag}", f"served-{tag}"
    ensure_topics(broker, [TopicSpec(events, 1), TopicSpec(served, 1)])
    fold = FeedbackFold(ThompsonOptimizer(np.random.default_rng(0)), lambda _c: OptimizerConfig())
    reader = FeedbackReader(broker, events, fold, BanditStore(tmp_path / "bandit"),
                            EventRules.from_specs(DEFAULT_EVENT_TYPES, 65536), served_topic=served)
    reader.start(drain_on_loop=True)  # its thread only fetches: the test folds, as slowly as it likes
    p = make_producer(broker)
    try:
        def fold_all() -> bool:
            reader.drain(None)
            return reader.wait_caught_up(0) and not reader._queue

        wait_for(fold_all, what="start")
        p.produce(served, key=b"u9", value=encode_event(_served("r0", "u9", NOW - 100)))  # the served clock runs
        assert p.flush(10) == 0
        wait_for(lambda: reader.drain(None) >= 0 and fold.n_served == 1, what="first list")

        p.produce(served, key=b"u1", value=encode_event(_served("r1", "u1", NOW)))
        assert p.flush(10) == 0  # on the broker before the click is written
        click = Event(event_id="e1", ts=NOW + 1, type="click", user_id="u1", item_id="i1")  # no request id: last touch
        p.produce(events, key=b"u1", value=encode_event(click))
        assert p.flush(10) == 0
        p.produce(events, key=b"u2", value=encode_event(Event(event_id="e2", ts=NOW + 2, type="view", user_id="u2",
                                                              item_id="i1")))
        assert p.flush(10) == 0
        wait_for(lambda: reader._queued.get((events, 0)) == 2 and reader._queued.get((served, 0)) == 2, what="fetch")

        # the served partition's records come last, as when its reads lag behind the events'
        queued = list(reader._queue)
        reader._queue.clear()
        lists = [[r] for b in queued if isinstance(b, list) for r in b if r[0] == served]
        marks = [b for b in queued if isinstance(b, _ServedEnds)]
        assert marks and marks[-1].ends == {(served, 0): 2}  # the click was fetched after r1 was written
        reader._queue.extend([marks[-1]] + [[r] for b in queued if isinstance(b, list) for r in b if r[0] == events]
                             + lists)

        assert reader.drain(1) == 1 and len(reader._held) == 1  # the click waits for r1
        time.sleep(2.5)  # longer than the former wall-clock limit (served_wait_s = 2 s)
        assert reader.drain(1) == 1 and len(reader._held) == 2  # still waiting: r1 is not folded
        assert fold.n_rewards == 0
        assert reader.drain(None) == 1 and len(reader._held) == 1  # r1, then the click; e2, read just now, waits
        assert fold.n_served == 2 and fold.n_rewards == 1          # out SERVED_GRACE_S (cached log ends may lag)
        time.sleep(SERVED_GRACE_S)
        assert reader.drain(None) == 0 and not reader._held
        assert fold.optimizer.arms[("c", "a", "")].total_rewards == 1
    finally:
        reader.stop()
