"""The optimizer's feedback reader rewards the same lists whatever the order its two topics' records arrive in
(api/feedback_reader.py, operators/attribution.py rule 2), as the analytics flow does (its reads interleave
differently): last touch takes only lists served before the event was received, and an event is folded once
its partition's served lists have been read past that time plus ``SERVED_ORDER_SLACK_S``.

The records are handed to the reader's fold step directly, in chosen orders and batches (no broker: the
reader's thread is not started), so every interleaving is exercised, not only those a broker happens to give.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from api.feedback import FeedbackFold
from api.feedback_reader import FeedbackReader
from api.optimizer import OptimizerConfig, ThompsonOptimizer
from operators.analytics.apply import AnalyticsApplier
from operators.analytics.join import COUNTER_FIELDS, JoinRules
from operators.analytics.topic import CounterRow
from operators.attribution import REQUEST_TYPE, SERVED_ORDER_SLACK_S
from operators.parse import EventRules, parse_event
from operators.schema import Event, encode_event
from operators.settings import DEFAULT_EVENT_TYPES
from state.bandit import BanditStore
from state.partition import PartitionDB

T = 1.7e9  # epoch s of the first list
Record = tuple[str, int, bytes, bytes, float]  # (topic, offset, key, value, Kafka timestamp s)


def _served(offset: int, rid: str, ts: float, items: list[str], user: str = "u1") -> Record:
    ev = Event(f"s-{rid}", ts, REQUEST_TYPE, user, campaign_id="home", arm=rid[-1], request_id=rid,
               extra={"goal": "purchase", "window_s": 3600.0, "served_items": items})
    return ("served", offset, user.encode(), encode_event(ev), ts)


def _records() -> tuple[list[Record], list[Record]]:
    """Lists a (before the purchase reached the log) and b (after it), both holding the bought item; the
    purchase is dated a minute ahead, so by its ``ts`` alone b would be its last touch. List b comes within
    the slack after the purchase was received; a later list c, past it, lets the reader know that every
    list served before the purchase has been read."""
    served = [_served(0, "ra", T, ["i1", "i2"]), _served(1, "rb", T + 1.0 + SERVED_ORDER_SLACK_S / 2, ["i1", "i3"]),
              _served(2, "rc", T + 1.0 + SERVED_ORDER_SLACK_S, ["i9"])]
    buy = Event("p1", T + 60.0, "purchase", "u1", item_id="i1")
    events = [("events", 0, b"u1", encode_event(buy), T + 1.0)]
    return served, events


def _reader(path: Path) -> FeedbackReader:
    """A reader whose history is read, that has read one list already (another user's): until the first list
    ever, events are folded without waiting (a shop without campaigns parses nothing)."""
    fold = FeedbackFold(ThompsonOptimizer(np.random.default_rng(0)), lambda _c: OptimizerConfig(half_life_s=86400.0))
    r = FeedbackReader("127.0.0.1:1", "events", fold, BanditStore(path),
                       EventRules.from_specs(DEFAULT_EVENT_TYPES, 65536, future_skew_s=300.0, max_age_s=None),
                       served_topic="served", served_wait_s=3600.0)
    r._end = {("events", 0): 0, ("served", 0): 0}  # nothing written before start: the history is read
    r._restored.set()
    _fold(r, [[_served(-1, "r0", T - 60.0, ["i1"], user="u2")]])
    return r


def _fold(r: FeedbackReader, batches: list[list[Record]]) -> None:
    for batch in batches:
        r._queue.append([(t, 0, off + (t == "served"), k, v, ts) for t, off, k, v, ts in batch])
        r.drain(None)


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_the_reward_does_not_depend_on_how_the_topics_interleave(tmp_path, order):
    served, events = _records()
    records = served + events
    # the served topic keeps its own order: only where the event falls among its lists varies
    served_order = iter(served)
    arrival = [next(served_order) if records[i][0] == "served" else records[i] for i in order]
    for split in (1, 4):  # one record per fetch, or all in one
        r = _reader(tmp_path / f"{''.join(map(str, order))}-{split}")
        try:
            _fold(r, [arrival[i:i + split] for i in range(0, len(arrival), split)])
            assert dict(r.fold.rewarded) == {"ra": T + 3600.0}, (order, split)
            assert r.offsets[("events", 0)] == 1  # folded, not waiting
        finally:
            r.store.close()


def test_an_event_waits_for_a_list_past_its_receive_time(tmp_path):
    served, events = _records()
    r = _reader(tmp_path / "wait")
    try:
        _fold(r, [served[:1], events])  # only list a read: b, served before the slack ran out, may still come
        assert len(r._held) == 1 and r.fold.n_rewards == 0
        _fold(r, [served[1:2]])  # b was served after the purchase was received, but within the slack
        assert len(r._held) == 1
        _fold(r, [served[2:]])
        assert not r._held and dict(r.fold.rewarded) == {"ra": T + 3600.0}
    finally:
        r.store.close()


def test_the_analytics_flow_credits_the_same_list(tmp_path):
    served, events = _records()
    db = PartitionDB(tmp_path / "analytics")
    try:
        a = AnalyticsApplier(db, 0, JoinRules(default_goal="purchase"))
        rules = EventRules.from_specs(DEFAULT_EVENT_TYPES, 65536, future_skew_s=300.0, max_age_s=None)
        lists = [(off, parse_event(k, v, rules)) for _, off, k, v, _ in served]
        evs = [(off, parse_event(k, v, rules)) for _, off, k, v, _ in events]
        at = COUNTER_FIELDS.index("rewards")
        without = AnalyticsApplier(PartitionDB(tmp_path / "by_ts"), 0, JoinRules(default_goal="purchase"))
        by_ts = without.apply(evs, lists)  # no receive time: the purchase's ts makes b its last touch
        assert {r.arm: r.values[at] for r in by_ts.rows if isinstance(r, CounterRow) and r.values[at]} == {"b": 1.0}
        without.db.close()
        applied = a.apply(evs, lists, {0: T + 1.0})
        assert {r.arm: r.values[at] for r in applied.rows if isinstance(r, CounterRow) and r.values[at]} == {"a": 1.0}
    finally:
        db.close()
