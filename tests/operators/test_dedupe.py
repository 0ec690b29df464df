"""operators/dedupe.py through the applier (real RocksDB): retries within minutes are skipped.

Producers retry what they are not sure was delivered, seconds to minutes later, while the user
goes on. Before, only the user's last 64 event ids were remembered: 15 of 1,000 re-sent
duplicates were applied twice.
"""

from __future__ import annotations

import random

from operators.dedupe import remember_event
from operators.schema import Event
from operators.score import shaped_ts
from operators.settings import DEFAULT_EVENT_TYPES
from operators.user_update import PartitionApplier
from state.partition import PartitionDB
from state.users import UserStore

WEIGHTS = {t.name: t.weight for t in DEFAULT_EVENT_TYPES}


def _apply(tmp_path, events: list[Event], batch: int = 50, **kw: object) -> PartitionApplier:
    ap = PartitionApplier(PartitionDB(tmp_path / "p"), WEIGHTS, history_len=50, half_life_s=3600.0, **kw)
    for i in range(0, len(events), batch):
        ap.commit(ap.apply([(i + j, e) for j, e in enumerate(events[i:i + batch])]))
    return ap


def test_retries_within_minutes_are_skipped_even_behind_hundreds_of_events(tmp_path):
    rng = random.Random(0)
    originals = [Event(event_id=f"e{j}", ts=1.7e9 + j * 0.5, type="view", user_id="busy", item_id=f"i{j % 40}")
                 for j in range(1000)]  # one busy user: 2 events/s, far more than 64 in a few minutes
    stream, resent = [], 0
    for j, e in enumerate(originals):
        stream.append(e)
        if rng.random() < 0.3 and j > 0:  # a retry of an event sent up to ~4 minutes (500 events) earlier
            stream.append(originals[rng.randrange(max(0, j - 500), j)])
            resent += 1
    ap = _apply(tmp_path, stream)
    st = UserStore(ap.db).get("busy")
    assert resent > 250
    assert st.counts == {"view": 1000}  # every original once, every retry skipped
    assert len(st.recent_event_ids) == len(st.recent_event_ts) <= 2000


def test_what_is_not_guaranteed_an_id_re_sent_after_the_window_and_64_events_counts_again(tmp_path):
    first = Event(event_id="old", ts=1.7e9, type="view", user_id="u", item_id="a")
    later = [Event(event_id=f"n{j}", ts=1.7e9 + 1000 + j, type="view", user_id="u", item_id="b") for j in range(70)]
    ap = _apply(tmp_path, [first, *later, first], dedupe_window_s=900.0)
    assert UserStore(ap.db).get("u").counts == {"view": 72}


def test_remembered_ids_stay_bounded_and_old_states_without_times_still_dedupe():
    ids, tss = [f"x{j}" for j in range(10)], []  # a state written before event times were kept
    assert remember_event(ids, tss, "x3", 5.0, 5.0) is False
    assert remember_event(ids, tss, "y", 5.0, 5.0) is True and len(tss) == len(ids) == 11
    ids, tss = [], []
    for j in range(5000):  # 5,000 events within one second: the newest keep_max are kept
        remember_event(ids, tss, f"z{j}", 1.0, 1.0, keep_max=300)
    assert len(ids) == 300 and ids[-1] == "z4999" and ids[0] == "z4700"


def test_last_event_ts_is_the_newest_event_that_shaped_the_list_not_a_later_search(tmp_path):
    view = Event(event_id="v", ts=100.0, type="view", user_id="u", item_id="a")
    search = Event(event_id="s", ts=200.0, type="search", user_id="u", query="shoes")
    together = UserStore(_apply(tmp_path / "1", [view, search], batch=2).db).get("u")
    apart = UserStore(_apply(tmp_path / "2", [view, search], batch=1).db).get("u")
    assert shaped_ts(together) == shaped_ts(apart) == 100.0
    assert together.last_ts == 200.0  # the user's clock still moves (dedupe window, sessions)
