"""Every decayed score stays finite for any accepted input (issue 13: a `ts` in 2099 made popularity `inf`).

Property tests over extreme timestamps: the whole range ``parse`` accepts (2000..2100), events
in any order, and ranking times before, between or after them.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from api.window_popularity import WindowPopularity
from operators.parse import EventRules, parse_event
from operators.schema import DeadLetter
from operators.settings import DEFAULT_EVENT_TYPES
from state.bandit import ArmStats
from state.partition import PartitionDB
from state.popularity import PopularityStore

TS = st.floats(min_value=946_684_800.0, max_value=4_102_444_800.0, allow_nan=False)
EVENTS = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from([0.0, 1.0, 3.0, 5.0]), TS),
                  min_size=1, max_size=30)
HALF_LIFE = st.sampled_from([60.0, 3600.0, 7 * 86400.0])


@settings(max_examples=200, deadline=None)
@given(EVENTS, TS, HALF_LIFE)
def test_item_popularity_is_finite(events, now_ts, half_life_s):
    with tempfile.TemporaryDirectory() as d, PartitionDB(Path(d) / "p") as db:
        pop = PopularityStore(db, half_life_s)
        for item, w, ts in events:
            pop.add(item, w, ts)
        ids, scores = pop.top(3, now_ts)
        assert np.isfinite(scores).all() and (scores >= 0).all()
        assert float(scores.max(initial=0.0)) <= sum(w for _, w, _ in events) + 1e-6  # decay never grows a score
        assert set(ids) <= {"a", "b", "c"}


@settings(max_examples=200, deadline=None)
@given(EVENTS, st.floats(min_value=1.0, max_value=30 * 86400.0))
def test_window_popularity_is_finite(events, window_s):
    wp = WindowPopularity(3600.0, 30 * 86400.0, cache_s=0.0)
    for item, w, ts in events:
        wp.add([item], w, ts)
    _, scores = wp.top(window_s)
    assert np.isfinite(scores).all() and (scores >= 0).all()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(TS, st.integers(0, 1)), min_size=1, max_size=30), TS, HALF_LIFE)
def test_optimizer_counts_are_finite(observations, now_ts, half_life_s):
    arm = ArmStats()
    for ts, reward in observations:
        arm.add(ts, half_life_s, pulls=1, rewards=reward)
    pulls, rewards = arm.decayed(now_ts, half_life_s)
    assert math.isfinite(pulls) and math.isfinite(rewards)
    assert 0.0 <= rewards <= pulls <= len(observations) + 1e-9


def test_far_future_event_is_a_bad_timestamp_dead_letter():
    """The flow bounds ``ts`` by the message's receiving clock (its Kafka timestamp): deterministic on re-reads."""
    rules = EventRules.from_specs(DEFAULT_EVENT_TYPES, future_skew_s=300.0, max_age_s=86400.0)
    received = 1_800_000_000.0
    for ts, ok in ((4_070_908_800, False), (received + 301, False), (received + 299, True),
                   (received - 86401, False), (received - 86399, True)):
        out = parse_event(b"u1", b'{"event_id":"e","ts":%r,"type":"view","user_id":"u1","item_id":"i"}' % ts,
                          rules, received_ts=received)
        assert isinstance(out, DeadLetter) != ok, (ts, out)
        if not ok:
            assert (out.reason, out.field) == ("bad_timestamp", "ts")
