"""Feedback events parked for a list not read yet are part of the optimizer's snapshot (api/feedback.py,
api/feedback_reader.py, state/bandit.py, api/snapshot_topic.py).

A purchase can be folded before the list it names (its list's record delayed past ``served_wait_s``,
or on another partition): it is parked and attributed when the list arrives. A fold restored from a
snapshot taken between the two, local (RocksDB, written in deltas) or published (the topic's payload),
and fed the rest of the topics ends in the state of a fold fed everything from offset 0: every field,
bit for bit. Snapshots of format version 1 (no parked events) are rejected with an error and the
history is folded.

The first tests hand records to the reader's fold step directly (no broker, as
``test_feedback_interleaving.py`` does), so the folds compared see the same interleaving; the last
ones run readers on the real broker through ``start``.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest

from api.feedback import FeedbackFold
from api.feedback_reader import FeedbackReader
from api.optimizer import OptimizerConfig, ThompsonOptimizer
from api.snapshot_topic import (
    CHUNK_PARTITION,
    HEAD_PARTITION,
    SnapshotChunk,
    SnapshotHead,
    decode_snapshot,
    encode_snapshot,
)
from operators.attribution import IMPRESSION_TYPE, REQUEST_TYPE
from operators.kafka import TopicSpec, ensure_topics, high_watermarks, make_producer
from operators.parse import EventRules
from operators.schema import Event, encode_event
from operators.settings import DEFAULT_EVENT_TYPES
from state.bandit import FORMAT_VERSION, ArmStats, BanditStore
from tests.harness import fold_feedback

T = 1.7e9  # epoch s of the first list
Record = tuple[str, bytes, bytes, float]  # (topic, key, value, Kafka timestamp s)


def _list(rid: str, ts: float, user: str, items: list[str], arm: str = "a") -> Record:
    ev = Event(f"s-{rid}", ts, REQUEST_TYPE, user, campaign_id="home", arm=arm, request_id=rid,
               extra={"goal": "purchase", "window_s": 3600.0, "served_items": items})
    return ("served", user.encode(), encode_event(ev), ts)


def _event(eid: str, ts: float, kind: str, user: str, item: str, rid: str | None = None) -> Record:
    ev = Event(eid, ts, kind, user, item_id=item, request_id=rid)
    return ("events", user.encode(), encode_event(ev), ts + 1.0)


def _dump(fold: FeedbackFold) -> bytes:
    """Every field of the fold's state, encoded (floats as float64: equal bytes are equal bits)."""
    state = {
        "arms": sorted((list(k), msgspec.structs.astuple(st)) for k, st in fold.optimizer.arms.items()),
        "open": list(fold.open.items()), "rewarded": list(fold.rewarded.items()),
        "orphans": [(rid, evs) for rid, evs in fold.orphans.items()],
        "by_user": sorted((u, list(q)) for u, q in fold.by_user.items()),
        "segments": sorted((c, sorted(s)) for c, s in fold._segments.items()),
        "skipped": sorted(fold.skipped.items()),
        "by_campaign": sorted((c, sorted(row.items())) for c, row in fold.by_campaign.items()),
        "n": (fold.n_served, fold.n_rewards), "clocks": (fold.clock, fold.event_clock),
    }
    return msgspec.msgpack.encode(state)


class _Feed:
    """Readers on one pair of partitions (``served`` 0, ``events`` 0), fed records by hand in chosen batches."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.made: list[FeedbackReader] = []
        self.next_offset = {"served": 0, "events": 0}
        self.offsets: dict[int, int] = {}  # id(record) -> its offset in its topic

    def reader(self, name: str, max_orphans: int = 10_000) -> FeedbackReader:
        fold = FeedbackFold(ThompsonOptimizer(np.random.default_rng(0)), lambda _c: OptimizerConfig(half_life_s=86400.0),
                            max_orphans=max_orphans)
        # served_wait_s 0: an event whose list is not read yet is folded at once (its list's record is late): parked
        r = FeedbackReader("127.0.0.1:1", "events", fold, BanditStore(self.tmp_path / name),
                           EventRules.from_specs(DEFAULT_EVENT_TYPES, 65536, future_skew_s=300.0, max_age_s=None),
                           served_topic="served", served_wait_s=0.0, snapshot_every_s=3600.0)
        r._end = {("events", 0): 0, ("served", 0): 0}  # nothing written before start: no history to read first
        self.made.append(r)
        return r

    def from_zero(self, name: str, max_orphans: int = 10_000) -> FeedbackReader:
        r = self.reader(name, max_orphans)
        r._restored.set()
        return r

    def restored_local(self, name: str, max_orphans: int = 10_000) -> FeedbackReader:
        """A restart: the reader's ``start`` without its fetching thread."""
        r = self.reader(name, max_orphans)
        r._restore(r._load_local(), "local")
        return r

    def offset(self, rec: Record) -> int:
        """The record's offset in its topic (records are numbered the first time they are seen)."""
        if id(rec) not in self.offsets:
            self.offsets[id(rec)] = self.next_offset[rec[0]]
            self.next_offset[rec[0]] += 1
        return self.offsets[id(rec)]

    def fold(self, r: FeedbackReader, batches: list[list[Record]]) -> None:
        """Queue and drain ``batches`` in order, as fetched batches of the two topics."""
        for batch in batches:
            r._queue.append([(t, 0, self.offset(rec), k, v, ts) for rec in batch for t, k, v, ts in (rec,)])
            r.drain(None)
        assert not r._held


@pytest.fixture()
def feed(tmp_path: Path) -> Iterator[_Feed]:
    f = _Feed(tmp_path)
    yield f
    for r in f.made:
        r.store.close()


def test_feedback_parked_across_a_snapshot_is_restored_bit_for_bit(feed):
    """Purchases naming lists a and b are read before those lists; the snapshot is taken between them. A
    restart from the local snapshot (two delta writes after the first full one) and a new node from the
    published payload, fed the rest, equal the fold of everything from offset 0 on every field."""
    first = [[_list("r0", T, "u2", ["i1"])],
             [_event("e1", T + 10, "purchase", "u1", "i1", "ra"),  # a's list not read yet: parked
              _event("v1", T + 11, IMPRESSION_TYPE, "u1", "i2", "rb")],  # b displayed only i2: parked
             [_event("e2", T + 12, "purchase", "u1", "i3", "rb"),  # i3 is on b but not displayed: parked
              _event("e3", T + 13, "purchase", "u1", "i2", "rb"),  # parked, rewards b
              _event("e4", T + 14, "purchase", "u3", "i5", "rc"),  # rc never holds i5: parked, then not_in_list
              _event("x1", T + 15, "purchase", "u2", "i9")]]  # no request, no match: no_request
    tail = [[_list("ra", T + 5, "u1", ["i1", "i4"], "b"), _list("rb", T + 6, "u1", ["i2", "i3"]),
             _list("rc", T + 7, "u3", ["i7"])],
            [_event("e5", T + 20, "purchase", "u1", "i1", "ra"),  # a rewarded already
             _event("e6", T + 21, "purchase", "u1", "i1", "rd")],  # d is never read: still parked at the end
            [_list("r1", T + 30, "u4", ["i1"])]]

    ref = feed.from_zero("ref")
    feed.fold(ref, first + tail)
    assert ref.fold.n_rewards == 2 and dict(ref.fold.rewarded) == {"ra": T + 5 + 3600.0, "rb": T + 6 + 3600.0}
    assert list(ref.fold.orphans) == ["rd"]
    assert ref.fold.skipped == {"already_rewarded": 1, "not_in_list": 2, "no_request": 1}

    writer = feed.from_zero("writer")
    feed.fold(writer, first[:1])
    assert writer.snapshot()  # the first snapshot: the whole state
    feed.fold(writer, first[1:2])
    assert writer.snapshot()  # then deltas: two lists parked
    feed.fold(writer, first[2:])
    assert writer.snapshot()  # b's second and third event, c parked
    assert sorted(writer.fold.orphans) == ["ra", "rb", "rc"] and writer.fold.n_rewards == 0
    published = decode_snapshot(encode_snapshot(writer._state()()))
    writer.store.close()  # a process killed after its last snapshot

    restarted = feed.restored_local("writer")
    new_node = feed.reader("new")
    new_node._restore(published, "published")
    assert restarted.n_folded == new_node.n_folded == 0
    for r in (restarted, new_node):
        assert list(r.fold.orphans) == ["ra", "rb", "rc"]
        feed.fold(r, tail)
        assert r.n_folded == sum(map(len, tail))
        assert _dump(r.fold) == _dump(ref.fold)
        assert r.offsets == ref.offsets


def test_eviction_at_the_bound_is_in_the_snapshot(feed):
    """With room for two awaited lists, the third evicts the oldest: the snapshot written in deltas drops it,
    a restart rewards the two kept like the fold from zero, and a restart with a smaller bound keeps the newest."""
    first = [[_list("r0", T, "u2", ["i1"])],
             [_event("e1", T + 10, "purchase", "u1", "i1", "r1")],
             [_event("e2", T + 11, "purchase", "u1", "i1", "r2"), _event("e3", T + 12, "purchase", "u1", "i1", "r3")]]
    tail = [[_list(f"r{k}", T + k, "u1", ["i1"]) for k in (1, 2, 3)]]
    ref = feed.from_zero("ref", max_orphans=2)
    feed.fold(ref, first + tail)
    assert dict(ref.fold.rewarded) == {"r2": T + 2 + 3600.0, "r3": T + 3 + 3600.0}  # r1's purchase was evicted

    writer = feed.from_zero("writer", max_orphans=2)
    feed.fold(writer, first[:1])
    writer.snapshot()
    feed.fold(writer, first[1:2])
    writer.snapshot()
    assert set(writer.store.load().parked) == {"r1"}
    feed.fold(writer, first[2:])
    writer.snapshot()
    assert set(writer.store.load().parked) == {"r2", "r3"}  # r1's key deleted by the delta
    writer.store.close()

    restarted = feed.restored_local("writer", max_orphans=2)
    assert list(restarted.fold.orphans) == ["r2", "r3"]
    feed.fold(restarted, tail)
    assert _dump(restarted.fold) == _dump(ref.fold)
    restarted.store.close()

    smaller = feed.restored_local("writer", max_orphans=1)
    assert list(smaller.fold.orphans) == ["r3"]


def test_attribution_and_eviction_are_deltas(feed):
    """A parked list attributed, and one evicted, between two snapshots: their keys go; a list parked again
    after its eviction is stored with its new place in the order."""
    w = feed.from_zero("w", max_orphans=2)
    feed.fold(w, [[_list("r0", T, "u2", ["i1"])]])
    w.snapshot()
    feed.fold(w, [[_event("e1", T + 10, "purchase", "u1", "i1", "r1"), _event("e2", T + 10, "purchase", "u1", "i1", "r2")]])
    w.snapshot()
    feed.fold(w, [[_list("r1", T + 1, "u1", ["i1"])],  # attributed
                  [_event("e3", T + 11, "purchase", "u1", "i1", "r3"),  # evicts nothing: r1 went
                   _event("e4", T + 12, "purchase", "u1", "i1", "r4"),  # evicts r2
                   _event("e5", T + 13, "purchase", "u1", "i1", "r2")]])  # r2 parked again, evicts r3
    w.snapshot()
    assert list(w.fold.orphans) == ["r4", "r2"]
    w.store.close()
    restarted = feed.restored_local("w", max_orphans=2)
    assert [(rid, [e.event_id for e in evs]) for rid, evs in restarted.fold.orphans.items()] == [("r4", ["e4"]), ("r2", ["e5"])]
    assert _dump(restarted.fold) == _dump(w.fold)


def test_a_local_snapshot_of_format_version_1_is_rejected_and_the_history_folded(feed, caplog):
    """A store written before parked events were kept (no version key): logged as an error and not used;
    the reader folds from offset 0 and its first snapshot replaces the old store."""
    records = [[_list("r0", T, "u1", ["i1"])], [_event("e1", T + 10, "purchase", "u1", "i1", "r0")]]
    ref = feed.from_zero("ref")
    feed.fold(ref, records)
    old = BanditStore(feed.tmp_path / "old")
    assert old.try_own()
    batch = old.new_batch()  # what version 1 wrote: arms and offsets, no parked events, no version key
    old.stage_arm(batch, ("home", "a", ""), ArmStats(9.0, 9.0, T, 9, 9))
    old.stage_offset(batch, "served", 0, 1)
    old.stage_offset(batch, "events", 0, 1)
    old.commit(batch)
    old.close()
    assert BanditStore(feed.tmp_path / "old").load().version == 1

    with caplog.at_level(logging.ERROR, logger="api.feedback_reader"):
        r = feed.restored_local("old")
    assert any("format version 1" in m.getMessage() and m.levelname == "ERROR" for m in caplog.records)
    assert not r.fold.optimizer.arms and r.offsets == {}
    feed.fold(r, records)
    assert _dump(r.fold) == _dump(ref.fold)
    assert r.snapshot()
    r.store.close()
    assert BanditStore(feed.tmp_path / "old").load().version == FORMAT_VERSION


def test_an_undecodable_parked_value_is_rejected_and_the_history_folded(feed, caplog):
    w = feed.from_zero("w")
    feed.fold(w, [[_list("r0", T, "u2", ["i1"])], [_event("e1", T + 10, "purchase", "u1", "i1", "r1")]])
    snap = w._state()()
    snap.parked["r1"] = b"\x01\xc1"  # a version byte, then no msgpack
    r = feed.reader("r")
    with caplog.at_level(logging.ERROR, logger="api.feedback_reader"):
        r._restore(snap, "published")
    assert r.restored_from == "history" and r.offsets == {} and not r.fold.optimizer.arms
    assert any("unusable" in m.getMessage() for m in caplog.records)


# ---- on the real broker, through start(): a new node, a restart, an old published snapshot --------------

NOW = time.time()


def _topics(broker: str) -> tuple[tuple[str, str], str]:
    tag = uuid.uuid4().hex[:8]
    topics, opt = (f"events-{tag}", f"served-{tag}"), f"events-{tag}.optimizer"
    ensure_topics(broker, [TopicSpec(topics[0], 1), TopicSpec(topics[1], 1), TopicSpec(opt, 2, compacted=True)])
    return topics, opt


def _node(broker: str, topics: tuple[str, str], path: Path, opt: str | None) -> FeedbackReader:
    from api.snapshot_topic import SnapshotTopic

    fold = FeedbackFold(ThompsonOptimizer(np.random.default_rng(0)), lambda _c: OptimizerConfig(half_life_s=86400.0))
    return FeedbackReader(broker, topics[0], fold, BanditStore(path), EventRules.from_specs(DEFAULT_EVENT_TYPES, 65536),
                          snapshot_every_s=0.2, served_topic=topics[1], served_wait_s=0.3,
                          published=None if opt is None else SnapshotTopic(broker, opt, chunk_bytes=4096),
                          publish_every_s=3600.0).start()


def _produce(broker: str, topics: tuple[str, str], records: list[Event]) -> int:
    p = make_producer(broker)
    for ev in records:
        p.produce(topics[1] if ev.type == REQUEST_TYPE else topics[0], key=ev.user_id.encode(), value=encode_event(ev))
    assert p.flush(10) == 0
    return len(records)


def _served(rid: str, ts: float, user: str, item: str) -> Event:
    return Event(f"s-{rid}", ts, REQUEST_TYPE, user, campaign_id="c", arm="a", request_id=rid,
                 extra={"goal": "purchase", "window_s": 3600.0, "served_items": [item]})


def test_a_new_node_and_a_restart_keep_feedback_parked_before_the_published_snapshot(broker, tmp_path):
    """The purchase is read before its list (the list's record comes after the publication): the published
    snapshot and the local one carry it, and both end as a node that folded the topics from the start."""
    topics, opt = _topics(broker)
    n = _produce(broker, topics, [_served("r0", NOW - 300, "u2", "i0"),
                                  Event("e1", NOW - 100, "purchase", "u1", item_id="i1", request_id="rx")])
    first = _node(broker, topics, tmp_path / "first", opt)
    fold_feedback(first, n)
    assert list(first.fold.orphans) == ["rx"] and first.fold.n_rewards == 0
    first.stop()  # writes its snapshot and publishes it
    n += _produce(broker, topics, [_served("rx", NOW - 200, "u1", "i1")])  # the list, after the snapshots

    new = _node(broker, topics, tmp_path / "new", opt)
    restarted = _node(broker, topics, tmp_path / "first", opt)
    fresh = _node(broker, topics, tmp_path / "fresh", None)
    try:
        for r in (new, restarted, fresh):
            fold_feedback(r, n)
        assert (new.restored_from, restarted.restored_from, fresh.restored_from) == ("published", "local", "history")
        assert new.n_folded == restarted.n_folded == 1
        assert fresh.fold.n_rewards == 1 and dict(fresh.fold.rewarded) == {"rx": NOW - 200 + 3600.0}
        assert _dump(new.fold) == _dump(fresh.fold) and _dump(restarted.fold) == _dump(fresh.fold)
    finally:
        for r in (new, restarted, fresh):
            r.stop()


def test_a_published_snapshot_of_format_version_1_is_rejected_and_the_history_folded(broker, tmp_path, caplog):
    """A head and payload as version 1 published them (four fields, no parked events), with offsets at the
    logs' ends: a new node logs it as unusable and folds both topics from their start."""
    topics, opt = _topics(broker)
    n = _produce(broker, topics, [_served("r0", NOW - 300, "u1", "i1"),
                                  Event("e1", NOW - 100, "purchase", "u1", item_id="i1", request_id="r0")])
    ends = {t: high_watermarks(broker, t, 10.0)[0] for t in topics}
    payload = msgspec.msgpack.encode([[], [], [], [[t, 0, off] for t, off in ends.items()]])
    p = make_producer(broker)
    p.produce(opt, key=b"g:0", partition=CHUNK_PARTITION, value=msgspec.msgpack.encode(SnapshotChunk("g", 0, payload)))
    assert p.flush(10) == 0
    chunk_at = high_watermarks(broker, opt, 10.0)[CHUNK_PARTITION] - 1
    head = SnapshotHead(version=1, generation="g", n_chunks=1, first_offset=chunk_at, last_offset=chunk_at,
                        size=len(payload), sha256=hashlib.sha256(payload).hexdigest(), published_ts=NOW, writer="old:1",
                        offsets=[(t, 0, off) for t, off in ends.items()])
    p.produce(opt, key=b"head", partition=HEAD_PARTITION, value=msgspec.msgpack.encode(head))
    assert p.flush(10) == 0

    new = _node(broker, topics, tmp_path / "new", opt)
    fresh = _node(broker, topics, tmp_path / "fresh", None)
    try:
        for r in (new, fresh):
            fold_feedback(r, n)
        assert new.restored_from == "history" and new.n_folded == n
        assert fresh.fold.n_rewards == 1 and _dump(new.fold) == _dump(fresh.fold)
    finally:
        new.stop()
        fresh.stop()
    assert any("format version 1" in m.getMessage() and m.levelname == "ERROR" for m in caplog.records)
