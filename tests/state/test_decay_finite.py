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
from operators.window_topic import decode_window_piece, encode_window_piece, window_key
from state.bandit import ArmStats
from state.partition import PartitionDB
from state.popularity import PopularityStore
from state.window_popularity import WindowStore

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
    """The flow's windowed counts, published as pieces and ranked by the API, stay finite and
    equal a recount over the buckets of the window (from a database re-opened after the writes)."""
    with tempfile.TemporaryDirectory() as d:
        with PartitionDB(Path(d) / "p") as db:
            store = WindowStore(db, 3600.0, 30 * 86400.0, n_shards=2)
            batch = db.new_batch()
            for item, w, ts in events:
                store.add(item, w, ts)
            store.stage(batch)
            db.commit(batch, 1)
        with PartitionDB(Path(d) / "p") as db:  # what a restarted flow loads
            store = WindowStore(db, 3600.0, 30 * 86400.0, n_shards=2)
            wp = WindowPopularity(3600.0, 30 * 86400.0, cache_s=0.0)
            for (b, shard), weights in store.take_unpublished(db.new_batch()).items():
                key = window_key(0, b, shard).decode()
                wp.apply(key, None if weights is None else decode_window_piece(
                    encode_window_piece(0, b, shard, store.clock, weights)))
    ids, scores = wp.top(window_s)
    assert np.isfinite(scores).all() and (scores > 0).all()
    counted = [(i, w, ts) for i, w, ts in events if w > 0]
    if not counted:
        assert ids == []
        return
    clock = max(ts for _, _, ts in counted)
    oldest, first = int((clock - 30 * 86400.0) // 3600.0), int((clock - window_s) // 3600.0) + 1
    total: dict[str, float] = {}
    for n, (i, w, ts) in enumerate(counted):  # events older than the horizon when they arrived are not counted
        seen_clock = max(t for _, _, t in counted[:n + 1])
        if int(ts // 3600.0) >= max(first, oldest) and int(ts // 3600.0) >= int((seen_clock - 30 * 86400.0) // 3600.0):
            total[i] = total.get(i, 0.0) + w
    assert ids == sorted(total, key=lambda i: (-total[i], i))
    assert np.allclose(scores, [total[i] for i in ids])


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
