"""state/serving.py behind operators/topic_table.py: user-topn on local disk, real broker and RocksDB.

Each API process keeps the compacted ``user-topn`` in its own RocksDB (bounded memory), and a
restarted process resumes from the offsets stored with the values, reading only the tail.
"""

from __future__ import annotations

import time
import uuid

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
