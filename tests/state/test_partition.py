"""state/: real RocksDB in tmp_path; state and offset commit together; codecs round-trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.parse import EventRules
from operators.schema import DeadLetter, Event
from operators.settings import DEFAULT_EVENT_TYPES
from operators.user_update import PartitionApplier
from state import keys
from state.codec import decode_value, encode_value
from state.errors import StateCorrupted
from state.partition import PartitionDB, list_partitions, partition_path, read_stored_offset
from state.users import UserState, UserStore

WEIGHTS = {t.name: t.weight for t in DEFAULT_EVENT_TYPES}
del EventRules


def event(i: int, user: str = "u1", item: str = "a", type_: str = "view") -> Event:
    return Event(event_id=f"e{i}", ts=1.7e9 + i, type=type_, user_id=user, item_id=item)


@given(st.text(min_size=1), st.integers(-2**63, 2**63 - 1))
def test_keys_round_trip(user_id, n):
    assert keys.strip_prefix(keys.user_key(user_id), keys.USER) == user_id
    assert keys.decode_int(keys.encode_int(n)) == n


@given(st.lists(st.text(max_size=8), max_size=5), st.dictionaries(st.text(max_size=5), st.integers(0, 10**9), max_size=4))
def test_user_state_codec_round_trip(items, counts):
    s = UserState(items=items, ts=[1.0] * len(items), types=["view"] * len(items), counts=counts, last_ts=3.5)
    assert decode_value(b"k", encode_value(s), UserState) == s


def test_corrupt_value_names_the_key():
    with pytest.raises(StateCorrupted, match=r"b'u:x'.*version"):
        decode_value(b"u:x", b"\x09garbage", UserState)


def test_commit_writes_state_and_offset_together(tmp_path):
    path = partition_path(tmp_path, "events", 2)
    with PartitionDB(path) as db:
        store = UserStore(db)
        batch = db.new_batch()
        store.stage(batch, "alice", UserState(items=["a"]))
        assert db.stored_offset() is None and store.get("alice") is None  # nothing before commit
        db.commit(batch, 17)
        assert db.stored_offset() == 17 and store.get("alice").items == ["a"]
    assert read_stored_offset(tmp_path, "events", 2) == 17
    assert read_stored_offset(tmp_path, "events", 3) is None
    assert list_partitions(tmp_path, "events") == [2]


def test_read_stored_offset_retries_a_listing_that_races_a_compaction(tmp_path, monkeypatch):
    """Listing column families can name a MANIFEST the writer has just replaced (a CI failure)."""
    import state.partition as partition

    with PartitionDB(partition_path(tmp_path, "events", 0)) as db:
        db.commit(db.new_batch(), 5)
    real, calls = partition._column_families, []

    def racy(path):
        calls.append(path)
        if len(calls) < 3:
            raise Exception("IO error: No such file or directory: MANIFEST-000023")
        return real(path)

    monkeypatch.setattr(partition, "_column_families", racy)
    monkeypatch.setattr(partition.time, "sleep", lambda s: None)
    assert read_stored_offset(tmp_path, "events", 0) == 5 and len(calls) == 3


def test_applier_skips_replayed_offsets_and_duplicate_event_ids(tmp_path):
    db = PartitionDB(tmp_path / "p")
    ap = PartitionApplier(db, WEIGHTS, history_len=3, half_life_s=3600.0)
    msgs = [(0, event(0)), (1, event(1, item="b")), (2, DeadLetter("malformed_json", "value", "x", b"{")),
            (3, event(1, item="b"))]  # offset 3 repeats event_id e1 (a producer retry)
    a = ap.apply(msgs)
    ap.commit(a)
    assert (a.n_applied, a.n_duplicates, len(a.dead), a.next_offset) == (2, 1, 1, 4)
    replay = ap.apply(msgs + [(4, event(4, item="c")), (5, event(5, item="d")), (6, event(6, item="e"))])
    ap.commit(replay)
    assert (replay.n_replayed, replay.n_applied) == (4, 3)
    st_ = UserStore(db).get("u1")
    assert st_.items == ["c", "d", "e"]  # history_len = 3
    assert st_.counts == {"view": 5}
    assert ap.dead_counts() == {"malformed_json": 1}
    db.close()
    # reopening resumes at the committed offset
    with PartitionDB(tmp_path / "p") as db2:
        assert PartitionApplier(db2, WEIGHTS, 3, 3600.0).next_offset == 7


def test_popularity_decays_with_half_life(tmp_path):
    with PartitionDB(tmp_path / "p") as db:
        ap = PartitionApplier(db, WEIGHTS, 10, half_life_s=100.0)
        a = ap.apply([(0, Event("1", 1000.0 + 1e9, "view", "u", item_id="old")),
                      (1, Event("2", 1100.0 + 1e9, "view", "u", item_id="new"))])
        ap.commit(a)
        ids, scores = ap.popularity.top(2, 1100.0 + 1e9)
        assert ids == ["new", "old"]
        assert scores.tolist() == pytest.approx([1.0, 0.5])


def test_zero_weight_events_count_but_neither_shape_history_nor_rescore(tmp_path):
    with PartitionDB(tmp_path / "p") as db:
        ap = PartitionApplier(db, WEIGHTS, history_len=10, half_life_s=3600.0)
        served = Event("s1", 1.7e9, "rec_impression", "u1", items=(), request_id="r1", item_id="shown")
        a = ap.apply([(0, event(0)), (1, served)])
        ap.commit(a)
        st_ = UserStore(db).get("u1")
        assert st_.items == ["a"] and st_.counts == {"view": 1, "rec_impression": 1}
        ap.take_dirty(db.new_batch())
        b = ap.apply([(2, Event("s2", 1.7e9 + 5, "rec_impression", "u1", item_id="shown2", request_id="r2"))])
        ap.commit(b)
        assert ap.dirty == {} and UserStore(db).get("u1").items == ["a"]
        assert ap.popularity.top(5, 1.7e9)[0] == ["a"]
