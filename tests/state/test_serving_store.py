"""state/serving.py behind operators/topic_table.py: user-topn on local disk, real broker and RocksDB.

Each API process keeps the compacted ``user-topn`` in its own RocksDB (bounded memory), and a
restarted process resumes from the offsets stored with the values, reading only the tail.
"""

from __future__ import annotations

import time
import uuid

import msgspec
import pytest

from operators.kafka import TopicSpec, ensure_topics, make_producer
from operators.score import POPULAR_KEY_PREFIX, TopN, decode_topn, encode_topn
from operators.topic_table import TopicTable
from state.serving import ServingStore


def _produce(broker: str, topic: str, lists: list[TopN]) -> None:
    p = make_producer(broker)
    for t in lists:
        p.produce(topic, key=t.user_id.encode(), value=encode_topn(t))
    assert p.flush(10) == 0


def _list(user: str, k: int) -> TopN:
    return TopN(user_id=user, items=[f"i{k}", f"i{k + 1}"], scores=[2.0, 1.0], source="model", model_version="v1",
                updated_ts=1.7e9 + k)


def test_a_restarted_reader_resumes_from_its_stored_offsets_and_keeps_popular_lists(broker, tmp_path):
    topic = f"topn-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker, [TopicSpec(topic, 2, compacted=True)])
    first = [_list(f"u{j}", j) for j in range(500)] + [_list(f"{POPULAR_KEY_PREFIX}{p}", 100 + p) for p in range(2)]
    _produce(broker, topic, first)
    popular: dict[str, object] = {}
    table = TopicTable(broker, topic, decode_topn, on_update=popular.__setitem__, update_prefix=POPULAR_KEY_PREFIX,
                       store=ServingStore(tmp_path / topic)).start()
    try:
        assert table.wait_caught_up(20)
        assert table.get("u42") == first[42] and table.get("nobody") is None
        assert set(popular) == {f"{POPULAR_KEY_PREFIX}0", f"{POPULAR_KEY_PREFIX}1"}  # only the prefix, decoded
        assert len(table) == 502
    finally:
        table.stop()

    _produce(broker, topic, [_list("u42", 7), _list("new", 9)])  # while the process is down
    popular.clear()
    again = TopicTable(broker, topic, decode_topn, on_update=popular.__setitem__, update_prefix=POPULAR_KEY_PREFIX,
                       store=ServingStore(tmp_path / topic)).start()
    try:
        assert again.wait_caught_up(20)
        deadline = time.monotonic() + 10
        while again.get("new") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert again.get("u42") == _list("u42", 7) and again.get("new") == _list("new", 9)
        assert again.get("u7") == first[7]  # from disk, not re-read
        assert again.n_messages == 2 + 2  # the tail, plus the two stored popular lists replayed to the hook
        assert len(popular) == 2
    finally:
        again.stop()


def test_two_processes_on_one_host_take_separate_slots(tmp_path):
    a, b = ServingStore(tmp_path), ServingStore(tmp_path)
    try:
        assert a.path != b.path
        a.write([(b"k", b"v")], {0: 3})
        assert b.get(b"k") is None and a.offsets() == {0: 3}
    finally:
        a.close()
        b.close()
    c = ServingStore(tmp_path)  # the first free slot again: what slot-0 stored
    try:
        assert c.get(b"k") == b"v"
    finally:
        c.close()


class _Watched(ServingStore):
    """A real store that notes what its reader had done when a bulk load began and ended."""

    table: TopicTable | None = None
    events: list[tuple[str, bool, int]]

    def begin_bulk_load(self) -> None:
        self.events.append(("begin", self.table is not None and self.table.wait_caught_up(0), self.estimated_len()))
        super().begin_bulk_load()

    def end_bulk_load(self) -> None:
        if self.bulk_loading:
            stored = sum(1 for _ in self.scan(b""))
            self.events.append(("end", self.table is not None and self.table.wait_caught_up(0), stored))
        super().end_bulk_load()


def test_a_new_nodes_store_is_bulk_loaded_and_caught_up_only_once_every_list_is_stored(broker, tmp_path):
    """An empty store is filled in bulk-load mode, which ends before the reader says it caught up (what
    ``/readyz`` waits for) and only once every published list is stored; old JSON values read as new ones."""
    topic = f"topn-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker, [TopicSpec(topic, 3, compacted=True)])
    lists = [_list(f"u{j}", j) for j in range(3000)]
    p = make_producer(broker)
    for t in lists:  # a third as an older flow published them (JSON)
        p.produce(topic, key=t.user_id.encode(), value=msgspec.json.encode(t) if int(t.user_id[1:]) % 3 == 0 else
                  encode_topn(t))
    assert p.flush(10) == 0
    store = _Watched(tmp_path / topic)
    store.events = []
    table = TopicTable(broker, topic, decode_topn, store=store)
    store.table = table
    table.start()
    try:
        assert table.wait_caught_up(30)
        assert [e[:2] for e in store.events] == [("begin", False), ("end", False)]
        assert store.events[1][2] == len(lists) and not store.bulk_loading  # every list, before "caught up"
        assert all(table.get(t.user_id) == t for t in lists)
    finally:
        table.stop()
    again = _Watched(tmp_path / topic)  # a restart: the store has data, no bulk load
    again.events = []
    table = TopicTable(broker, topic, decode_topn, store=again).start()
    try:
        assert table.wait_caught_up(30) and again.events == [] and table.get("u7") == lists[7]
    finally:
        table.stop()


def test_topn_values_are_messagepack_and_old_json_values_still_read():
    t = TopN(user_id="u1", items=["a", "é"], scores=[0.1, 1e-300], source="model+popular", model_version=None,
             updated_ts=1.7e9 + 0.25, last_event_ts=1.7e9, recent=["z"])
    raw = encode_topn(t)
    assert raw[:1] != b"{" and msgspec.msgpack.decode(raw)["items"] == ["a", "é"]
    assert decode_topn(raw) == t and decode_topn(msgspec.json.encode(t)) == t
    assert len(raw) < len(msgspec.json.encode(t))
    with pytest.raises(msgspec.DecodeError):
        decode_topn(b"\xc1 not a list")
    with pytest.raises(msgspec.ValidationError):
        decode_topn(b'{"user_id": "u1"}')


def _contents(store: ServingStore) -> list[tuple[bytes, bytes]]:
    return list(store.scan(b""))


def test_a_checkpoint_restored_into_an_empty_store_has_the_same_values_and_offsets(tmp_path):
    src = ServingStore(tmp_path / "a")
    src.write([(b"u%03d" % j, b"v%d" % j) for j in range(300)], {0: 150, 1: 151})
    src.write([(b"u007", b"new"), (b"u008", None)], {0: 152})  # a later value and a tombstone
    offsets = src.checkpoint(tmp_path / "a" / "copy")
    assert offsets == {0: 152, 1: 151}
    dst = ServingStore(tmp_path / "b")
    dst.begin_bulk_load()
    dst.restore(tmp_path / "a" / "copy")
    try:
        assert _contents(dst) == _contents(src) and len(_contents(dst)) == 299
        assert dst.get(b"u007") == b"new" and dst.get(b"u008") is None
        assert dst.offsets() == {0: 152, 1: 151} and dst.bulk_loading
        dst.write([(b"u009", b"after")], {1: 160})  # the restored store is written to as any other
        assert dst.get(b"u009") == b"after" and dst.offsets() == {0: 152, 1: 160}
        assert not (tmp_path / "a" / "copy").exists()  # moved, not copied
    finally:
        src.close()
        dst.close()
    again = ServingStore(tmp_path / "b")  # and survives a reopen
    try:
        assert again.get(b"u009") == b"after" and again.offsets() == {0: 152, 1: 160}
    finally:
        again.close()


def test_restore_refuses_a_store_with_data_and_survives_files_that_are_no_store(tmp_path):
    full = ServingStore(tmp_path / "full")
    full.write([(b"k", b"v")], {0: 1})
    full.checkpoint(tmp_path / "copy")
    with pytest.raises(ValueError, match="not empty"):
        full.restore(tmp_path / "copy")
    assert full.get(b"k") == b"v"
    full.close()
    empty = ServingStore(tmp_path / "empty")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "CURRENT").write_text("MANIFEST-999999\n")  # points at nothing
    with pytest.raises(Exception):  # noqa: B017 (RocksDB's own error type)
        empty.restore(junk)
    try:
        assert empty.is_empty()  # opened again, empty: the reader fills it from the topic
        empty.write([(b"k", b"v")], {0: 1})
        assert empty.get(b"k") == b"v"
    finally:
        empty.close()
