"""api/topn_checkpoint.py: a new node's user-topn store from a published checkpoint plus the tail (real broker, RocksDB).

A node whose store caught up publishes a checkpoint of it; a new node (empty store) restores the
newest one and reads only the lists published after it, and ends with the same lists as a node
that read the whole topic. An unusable checkpoint falls back to reading the topic from its start.
"""

from __future__ import annotations

import hashlib
import time
import uuid

import msgspec

from api.snapshot_topic import CHUNK_PARTITION, HEAD_PARTITION, SnapshotHead
from api.topn_checkpoint import TopnCheckpoints, _ChunkReader, _ChunkWriter
from operators.kafka import TopicSpec, ensure_topics, make_producer
from operators.score import POPULAR_KEY_PREFIX, TopN, decode_topn, encode_topn
from operators.topic_table import TopicTable
from state.serving import ServingStore


def _list(user: str, k: int) -> TopN:
    return TopN(user_id=user, items=[f"i{k}", f"i{k + 1}"], scores=[2.0, 1.0], source="model", model_version="v1",
                updated_ts=1.7e9 + k)


def _produce(broker: str, topic: str, records: list[tuple[str, TopN | None]]) -> None:
    p = make_producer(broker)
    for key, t in records:
        p.produce(topic, key=key.encode(), value=None if t is None else encode_topn(t))
    assert p.flush(10) == 0


def _topics(broker: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    topic, checkpoints = f"topn-{tag}", f"topn-{tag}.checkpoint"
    ensure_topics(broker, [TopicSpec(topic, 2, compacted=True), TopicSpec(checkpoints, 2, compacted=True)])
    return topic, checkpoints


def _node(broker: str, topic: str, checkpoints: str, root, every_s: float = 300.0,  # noqa: ANN001
          chunk_bytes: int = 4096) -> tuple[TopicTable, TopnCheckpoints, dict[str, object]]:
    store = ServingStore(root)
    ck = TopnCheckpoints(broker, checkpoints, store, topic, every_s, chunk_bytes=chunk_bytes, timeout_s=20)
    popular: dict[str, object] = {}
    table = TopicTable(broker, topic, decode_topn, on_update=popular.__setitem__, update_prefix=POPULAR_KEY_PREFIX,
                       store=store, restore=ck.restore, on_batch=ck.on_batch)
    return table.start(), ck, popular


def _wait(cond, timeout_s: float = 20.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)
    return cond()


def test_chunk_writer_and_reader_round_trip_any_cut():
    data = bytes(range(256)) * 41 + b"tail"
    chunks: list[bytes] = []
    w = _ChunkWriter(1000, chunks.append)
    for i in range(0, len(data), 333):
        w.write(data[i:i + 333])
    w.close()
    assert all(len(c) == 1000 for c in chunks[:-1]) and b"".join(chunks) == data
    r = _ChunkReader(iter(chunks))
    got = r.read(10) + r.read(5000) + r.read()
    assert got == data and r.n_bytes == len(data) and r.sha.hexdigest() == w.sha.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_new_node_restores_the_published_checkpoint_and_reads_only_the_tail(broker, tmp_path):
    topic, checkpoints = _topics(broker)
    _produce(broker, topic, [(f"u{j}", _list(f"u{j}", j)) for j in range(400)]
             + [(f"{POPULAR_KEY_PREFIX}0", _list("p", 1000)), ("u5", None)])
    first, ck, _ = _node(broker, topic, checkpoints, tmp_path / "a", every_s=300.0)
    try:
        assert first.wait_caught_up(20)
        assert _wait(lambda: ck.n_published == 1), "a caught-up node publishes its first checkpoint"
        assert ck.wait_idle(20) and ck.restored_from == "topic"
    finally:
        first.stop()
    # lists published after the checkpoint: a change, a new user, a tombstone
    _produce(broker, topic, [("u7", _list("u7", 7000)), ("new", _list("new", 1)), ("u8", None)])

    second, ck2, popular = _node(broker, topic, checkpoints, tmp_path / "b", every_s=300.0)
    try:
        assert second.wait_caught_up(20) and ck2.restored_from == "published"
        assert second.n_messages == 1 + 3  # the stored popular list replayed to the hook, then only the tail
        assert second.get("u7") == _list("u7", 7000) and second.get("new") == _list("new", 1)
        assert second.get("u8") is None and second.get("u5") is None and second.get("u42") == _list("u42", 42)
        assert set(popular) == {f"{POPULAR_KEY_PREFIX}0"}
        assert ck2.n_published == 0  # the checkpoint it restored is younger than publish_every_s
    finally:
        second.stop()
    # the same lists as a node that read the whole topic
    full = TopicTable(broker, topic, decode_topn, store=ServingStore(tmp_path / "c")).start()
    restored = ServingStore(tmp_path / "b")
    try:
        assert full.wait_caught_up(20) and full.store is not None
        assert list(restored.scan(b"")) == list(full.store.scan(b"")) and restored.offsets() == full.store.offsets()
    finally:
        restored.close()
        full.stop()


def test_an_unusable_checkpoint_is_skipped_and_the_topic_read_from_its_start(broker, tmp_path):
    topic, checkpoints = _topics(broker)
    _produce(broker, topic, [(f"u{j}", _list(f"u{j}", j)) for j in range(100)])
    first, ck, _ = _node(broker, topic, checkpoints, tmp_path / "a")
    try:
        assert first.wait_caught_up(20) and _wait(lambda: ck.n_published == 1) and ck.wait_idle(20)
    finally:
        first.stop()
    head = ck._topic.heads()[-1][1]
    good = msgspec.msgpack.decode(head, type=SnapshotHead)
    bad = msgspec.structs.replace(good, sha256="0" * 64, published_ts=time.time())  # newer, but its data does not match
    p = make_producer(broker)
    p.produce(checkpoints, key=b"head", partition=HEAD_PARTITION, value=msgspec.msgpack.encode(bad))
    assert p.flush(10) == 0

    second, ck2, _ = _node(broker, topic, checkpoints, tmp_path / "b")
    try:
        assert second.wait_caught_up(20) and ck2.restored_from == "published"  # the older, good head
        assert second.n_messages == 0 and second.get("u42") == _list("u42", 42)
    finally:
        second.stop()
    # only unusable heads (here: its one chunk does not decode): the topic is read from its start
    other = f"{checkpoints}-bad"
    ensure_topics(broker, [TopicSpec(other, 2, compacted=True)])
    p.produce(other, key=b"g:0", partition=CHUNK_PARTITION, value=b"\xc1junk")
    assert p.flush(10) == 0
    p.produce(other, key=b"head", partition=HEAD_PARTITION, value=msgspec.msgpack.encode(msgspec.structs.replace(
        good, generation="g", n_chunks=1, first_offset=0, last_offset=0)))
    assert p.flush(10) == 0
    third, ck3, _ = _node(broker, topic, other, tmp_path / "c", every_s=0)
    try:
        assert third.wait_caught_up(20) and ck3.restored_from == "topic"
        assert third.n_messages == 100 and third.get("u42") == _list("u42", 42)
        assert ck3.n_published == 0  # every_s = 0: never publishes
    finally:
        third.stop()


def test_without_the_checkpoint_topic_a_node_reads_the_topic(broker, tmp_path):
    topic = f"topn-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker, [TopicSpec(topic, 2, compacted=True)])
    _produce(broker, topic, [(f"u{j}", _list(f"u{j}", j)) for j in range(50)])
    table, ck, _ = _node(broker, topic, f"{topic}.checkpoint", tmp_path / "a")
    try:
        assert table.wait_caught_up(20) and ck.restored_from == "topic" and table.get("u3") == _list("u3", 3)
        assert ck.wait_idle(20)  # (a broker that creates topics on demand, as Tansu does, then gets a checkpoint)
    finally:
        table.stop()
