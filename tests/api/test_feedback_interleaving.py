"""The optimizer's feedback reader rewards the same lists whatever the order its two topics' records arrive in
(api/feedback_reader.py, operators/attribution.py rule 2), as the analytics flow does (its reads interleave
differently): last touch takes only lists served before the event was received, and an event is folded once
its partition's served lists have been read past that time plus ``SERVED_ORDER_SLACK_S``. Both credit only
items the list displayed (rule 3: the first ``rec_impression`` narrows it).

The records are handed to the reader's fold step directly, in chosen orders and batches (no broker: the
reader's thread is not started), so every interleaving is exercised, not only those a broker happens to give.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from api.feedback import FeedbackFold
from api.feedback_reader import FeedbackReader
from api.optimizer import OptimizerConfig, ThompsonOptimizer
from operators.analytics.apply import AnalyticsApplier
from operators.analytics.join import COUNTER_FIELDS, JoinRules
from operators.analytics.topic import CounterRow
from operators.attribution import LAST_TOUCH_LISTS, REQUEST_TYPE, SERVED_ORDER_SLACK_S
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


def _reader(path: Path, first_list: bool = True) -> FeedbackReader:
    """A reader whose history is read, that has read one list already (another user's) if ``first_list``."""
    fold = FeedbackFold(ThompsonOptimizer(np.random.default_rng(0)), lambda _c: OptimizerConfig(half_life_s=86400.0))
    r = FeedbackReader("127.0.0.1:1", "events", fold, BanditStore(path),
                       EventRules.from_specs(DEFAULT_EVENT_TYPES, 65536, future_skew_s=300.0, max_age_s=None),
                       served_topic="served", served_wait_s=3600.0)
    r._end = {("events", 0): 0, ("served", 0): 0}  # nothing written before start: the history is read
    r._restored.set()
    if first_list:
        _fold(r, [[_served(-1, "r0", T - 60.0, ["i1"], user="u2")]])
    return r


@pytest.fixture()
def new_reader(tmp_path: Path) -> Iterator[Callable[..., FeedbackReader]]:
    """``_reader`` in a fresh directory of ``tmp_path``; every store it opened is closed at the end."""
    made: list[FeedbackReader] = []

    def make(first_list: bool = True) -> FeedbackReader:
        made.append(_reader(tmp_path / str(len(made)), first_list))
        return made[-1]

    yield make
    for r in made:
        r.store.close()


def _fold(r: FeedbackReader, batches: list[list[Record]]) -> None:
    for batch in batches:
        r._queue.append([(t, 0, off + (t == "served"), k, v, ts) for t, off, k, v, ts in batch])
        r.drain(None)


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_the_reward_does_not_depend_on_how_the_topics_interleave(new_reader, order):
    served, events = _records()
    records = served + events
    # the served topic keeps its own order: only where the event falls among its lists varies
    served_order = iter(served)
    arrival = [next(served_order) if records[i][0] == "served" else records[i] for i in order]
    for split in (1, 4):  # one record per fetch, or all in one
        r = new_reader()
        _fold(r, [arrival[i:i + split] for i in range(0, len(arrival), split)])
        assert dict(r.fold.rewarded) == {"ra": T + 3600.0}, (order, split)
        assert r.offsets[("events", 0)] == 1  # folded, not waiting


def test_an_event_waits_for_a_list_past_its_receive_time(new_reader):
    served, events = _records()
    r = new_reader()
    _fold(r, [served[:1], events])  # only list a read: b, served before the slack ran out, may still come
    assert len(r._held) == 1 and r.fold.n_rewards == 0
    _fold(r, [served[1:2]])  # b was served after the purchase was received, but within the slack
    assert len(r._held) == 1
    _fold(r, [served[2:]])
    assert not r._held and dict(r.fold.rewarded) == {"ra": T + 3600.0}


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


def test_both_credit_only_what_the_list_displayed(new_reader, tmp_path):
    """List a served i1 and i2 and displayed only i2: a purchase of i1 naming a's request id rewards nothing
    (the optimizer and the analytics alike), a later purchase of i2 rewards it."""
    served, _ = _records()
    shown = Event("v1", T + 0.5, "rec_impression", "u1", request_id="ra", item_id="i2")
    wrong = Event("p1", T + 0.8, "purchase", "u1", item_id="i1", request_id="ra")
    right = Event("p2", T + 0.9, "purchase", "u1", item_id="i2", request_id="ra")
    events = [("events", o, b"u1", encode_event(e), e.ts) for o, e in enumerate([shown, wrong])]
    r = new_reader()
    _fold(r, [served[:1], events, served[2:]])
    assert r.fold.n_rewards == 0 and r.fold.open["ra"].items == ["i2"]
    _fold(r, [[("events", 2, b"u1", encode_event(right), right.ts)]])
    assert dict(r.fold.rewarded) == {"ra": T + 3600.0}
    rules = EventRules.from_specs(DEFAULT_EVENT_TYPES, 65536, future_skew_s=300.0, max_age_s=None)
    a = AnalyticsApplier(PartitionDB(tmp_path / "analytics"), 0, JoinRules(default_goal="purchase"))
    try:
        lists = [(off, parse_event(k, v, rules)) for _, off, k, v, _ in served]
        at = COUNTER_FIELDS.index("rewards")
        first = a.apply([(0, shown), (1, wrong)], lists, {0: shown.ts, 1: wrong.ts})
        a.commit(first)
        assert not any(isinstance(x, CounterRow) and x.values[at] for x in first.rows)
        then = a.apply([(2, right)], [], {2: right.ts})
        assert {x.arm: x.values[at] for x in then.rows if isinstance(x, CounterRow) and x.values[at]} == {"a": 1.0}
    finally:
        a.db.close()


def test_before_any_list_was_served_an_event_waits_too(new_reader):
    """As the analytics flow does: the purchase read before the first list ever still credits list a."""
    served, events = _records()
    r = new_reader(first_list=False)
    _fold(r, [events])
    assert len(r._held) == 1
    _fold(r, [served])
    assert not r._held and dict(r.fold.rewarded) == {"ra": T + 3600.0}


def test_an_impression_dated_before_its_list_still_narrows_it(new_reader):
    """An event naming a request id waits by its receive time, not its ``ts``: an impression dated before its
    list (a client's clock) is not folded before the list is read, in either reader."""
    served, _ = _records()
    shown = Event("v1", T - 30.0, "rec_impression", "u1", request_id="ra", item_id="i2")
    r = new_reader()
    _fold(r, [[("events", 0, b"u1", encode_event(shown), T + 0.2)], served[:1]])
    assert len(r._held) == 1  # the list is read, but nothing past the impression's receive time + slack yet
    _fold(r, [served[1:]])
    assert not r._held and r.fold.open["ra"].items == ["i2"] and r.fold.open["ra"].shown


def test_events_held_from_a_recreated_log_are_dropped(new_reader):
    served, events = _records()
    r = new_reader()
    _fold(r, [served[:1], events])
    assert len(r._held) == 1
    r._queue.append({("events", 0): 0})  # the events log was recreated: its partition starts again at 0
    r.drain(None)
    _fold(r, [served[1:]])
    assert not r._held and r.fold.n_rewards == 0 and r.offsets[("events", 0)] == 0


@pytest.mark.parametrize("n_lists", [60, LAST_TOUCH_LISTS + 50])
def test_last_touch_looks_as_far_back_in_both(new_reader, tmp_path, n_lists):
    """A user served many lists, the bought item only on the first: the optimizer and the analytics flow both look
    among the same number of a user's newest lists (``LAST_TOUCH_LISTS``), so both credit the first list when it
    is among them and neither does when it is not (with the optimizer's 20 before, it credited nothing at 60
    lists while the dashboard counted a reward; the dashboard looked at every list read since the user's last
    event)."""
    served = [_served(j, f"r{j:03d}{j % 2}", T + j / 10, ["i1"] if j == 0 else [f"x{j}"]) for j in range(n_lists)]
    served.append(_served(n_lists, "rlast0", T + 200.0, ["i9"]))  # past the purchase's receive time + slack
    buy = Event("p1", T + 100.0, "purchase", "u1", item_id="i1")
    events = [("events", 0, b"u1", encode_event(buy), T + 100.0)]
    credited = n_lists + 1 <= LAST_TOUCH_LISTS
    r = new_reader()
    _fold(r, [served, events])
    assert dict(r.fold.rewarded) == ({"r0000": T + 3600.0} if credited else {})
    db = PartitionDB(tmp_path / "analytics")
    try:
        a = AnalyticsApplier(db, 0, JoinRules(default_goal="purchase"))
        rules = EventRules.from_specs(DEFAULT_EVENT_TYPES, 65536, future_skew_s=300.0, max_age_s=None)
        applied = a.apply([(0, parse_event(k, v, rules)) for _, _, k, v, _ in events],
                          [(off, parse_event(k, v, rules)) for _, off, k, v, _ in served], {0: T + 100.0})
        at = COUNTER_FIELDS.index("rewards")
        got = {r.arm: r.values[at] for r in applied.rows if isinstance(r, CounterRow) and r.values[at]}
        assert got == ({"0": 1.0} if credited else {})
    finally:
        db.close()
