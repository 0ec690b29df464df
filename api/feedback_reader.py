"""A thread that feeds ``FeedbackFold`` from the events topic and snapshots the optimizer to RocksDB.

Start: load the snapshot (``state/bandit.py``): arm counts, open and rewarded lists, windowed
popularity, and the offsets they reflect; then read only the tail of the events topic, from
those offsets (start-up costs the snapshot's size, not the history's length). A snapshot written
without popularity (older versions) makes the reader start from the beginning once: events
below the stored offset then count for popularity only, never twice for pulls or rewards. Every ``snapshot_every_s`` the
worker that owns the store writes the changes since the last snapshot in one batch, with the
offsets (the first time: the whole state).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from api.feedback import FeedbackFold
from operators.attribution import Impression
from operators.kafka import high_watermarks, topic_partitions
from operators.offset_guard import CONNECTION_LOST_CODES, BeyondLogEnd, OffsetGuard
from operators.parse import EventRules, kafka_timestamp_s, parse_event
from operators.schema import Event
from state.bandit import BanditSnapshot, BanditStore
from state.codec import decode_value, encode_value

__all__ = ["FeedbackReader", "drain_forever"]

log = logging.getLogger(__name__)


class FeedbackReader:
    """Consumes the events topic into a fold; owns the snapshot cadence.

    Parameters
    ----------
    brokers, events_topic : str
        Where to read.
    fold : FeedbackFold
        What to feed.
    store : BanditStore
        Snapshot persistence.
    rules : EventRules
        Event validation (invalid events are skipped: the flow dead-letters them).
    snapshot_every_s : float
        Snapshot interval.
    on_beyond_end : callable (BeyondLogEnd), optional
        Called when a position was found beyond the log end (the events topic was recreated,
        e.g. by a broker that came back empty); the reader then reads the new log from its start
        and counts it as new (pulls and rewards included).

    The thread only fetches; ``drain`` folds. Set ``drain_on_loop`` (the app does, and runs
    ``drain`` every few milliseconds on its event loop) to keep all Python work of the fold on
    the thread that serves requests; otherwise the reader thread drains.
    """

    def __init__(self, brokers: str, events_topic: str, fold: FeedbackFold,
                 store: BanditStore, rules: EventRules, snapshot_every_s: float = 2.0,
                 on_beyond_end: Callable[[BeyondLogEnd], None] | None = None) -> None:
        self.brokers, self.events_topic = brokers, events_topic
        self.on_beyond_end = on_beyond_end
        self.guard = OffsetGuard(brokers, events_topic, "earliest")
        self.fold, self.store, self.rules = fold, store, rules
        self.snapshot_every_s = snapshot_every_s
        self.offsets: dict[tuple[str, int], int] = {}
        self._stored: dict[tuple[str, int], int] = {}
        self._wrote_full = False
        self.drain_on_loop = False
        # fetched batches, and {partition: offset} resets of a recreated log, in order
        self._queue: deque[list[tuple[int, int, bytes | None, bytes | None, float | None]] | dict[int, int]] = deque()
        self._queued: dict[int, int] = {}
        self._last_ts: dict[int, int] = {}  # Kafka timestamp (ms) of the last record fetched per partition
        self._pos: dict[int, int] = {}
        self._end: dict[int, int] | None = None
        self._last_snapshot = time.monotonic()
        self.n_folded = 0  # messages folded by this process (a restart from a snapshot folds only the tail)
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, drain_on_loop: bool = False) -> FeedbackReader:
        # resolve the struct types once, on this thread, before the reader thread uses them
        decode_value(b"warm-up", encode_value(Impression("r", "c", "a", 0.0, "click", 1.0)), Impression)
        snap = self.store.load()
        self._restore(snap)
        self.drain_on_loop = drain_on_loop
        self._thread = threading.Thread(target=self._run, name="feedback-reader", daemon=True)
        self._thread.start()
        return self

    def _restore(self, snap: BanditSnapshot) -> None:
        self.fold.optimizer.arms.update(snap.arms)
        opened = [decode_value(rid.encode(), raw, Impression) for rid, raw in snap.impressions.items()]
        self.fold.restore(opened, snap.rewarded)
        self._stored = dict(snap.offsets)
        self.offsets = dict(snap.offsets)
        if snap.popularity_clock is not None:  # popularity is in the snapshot: read only the tail
            self.fold.popularity.restore(snap.popularity, snap.popularity_clock)
            tail = {p: off for (t, p), off in snap.offsets.items() if t == self.events_topic}
            self._queued.update(tail)
            self._pos.update(tail)

    def alive(self) -> bool:
        """The reader thread runs (it retries its own failures; only a bug ends it)."""
        return self._thread is not None and self._thread.is_alive()

    def wait_caught_up(self, timeout_s: float) -> bool:
        """True once every event written before ``start`` has been folded."""
        return self._caught_up.wait(timeout_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.drain(None)
            self.snapshot()
        finally:
            self.store.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._consume()
            except Exception:
                log.exception("feedback reader failed; retrying in 1 s")
                time.sleep(1.0)

    def _consume(self) -> None:
        """Fetch raw messages into the queue (the GIL is released while librdkafka waits).

        Resumes after what was already queued, so a reconnect never folds a message twice.
        """
        topic = self.events_topic
        parts = topic_partitions(self.brokers, topic)
        if self._end is None:
            self._end = high_watermarks(self.brokers, topic)
            ahead = {p: off for (t, p), off in self._stored.items() if t == topic and off > self._end.get(p, 0)}
            for p, off in sorted(ahead.items()):  # a recreated topic (e.g. a fresh in-memory broker) under an old snapshot
                b = BeyondLogEnd(topic, p, off, 0, self._end.get(p, 0), 0)
                log.error("the optimizer snapshot's offset %d of %s[%d] is beyond the log end %d: the topic was "
                          "recreated; its events count as new from offset 0", off, topic, p, b.log_end)
                self._stored[(topic, p)] = self.offsets[(topic, p)] = 0
                self._queued[p] = self._pos[p] = 0
                self.guard.detected += 1
                if self.on_beyond_end is not None:
                    self.on_beyond_end(b)
        c = Consumer({"bootstrap.servers": self.brokers, "group.id": "fusionrec-api-feedback",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 10, "fetch.error.backoff.ms": 10,
                      "error_cb": self._on_error})
        c.assign([TopicPartition(topic, p, self._queued.get(p, OFFSET_BEGINNING)) for p in parts])
        last_message_s = time.monotonic()
        try:
            while not self._stop.is_set():
                idle = time.monotonic() - last_message_s >= self.guard.check_every_s
                if self.guard.due(idle) and self._reset_beyond_end(c, parts):
                    continue
                if self.guard.suspect:  # at start or after a lost connection: read nothing before a check passed
                    time.sleep(0.05)
                    continue
                batch = [(m.partition(), m.offset(), m.key(), m.value(), kafka_timestamp_s(m.timestamp()))
                         for m in c.consume(1000, 0.05)
                         if not m.error()]
                if batch:
                    last_message_s = time.monotonic()
                    for m in batch:
                        if m[4] is not None:
                            self._last_ts[m[0]] = round(m[4] * 1000)  # back to the record's ms (exact)
                    self._queue.append(batch)
                    for p, off, *_ in batch:
                        self._queued[p] = off + 1
                if not self.drain_on_loop:
                    self.drain(None)
        finally:
            c.close()

    def _on_error(self, err: KafkaError) -> None:
        if err.name() in CONNECTION_LOST_CODES:
            self.guard.connection_lost()

    def _reset_beyond_end(self, c: Consumer, parts: list[int]) -> bool:
        """Check the fetch positions against the log ends; re-read a recreated log from its start.

        Offsets below the snapshot's count as already folded, so the reset travels through the
        queue (after what was fetched from the old log) and lowers the snapshot's offsets when
        ``drain`` reaches it: events of the new log are new events.
        """
        found = self.guard.check({p: off for p, off in self._queued.items() if off > 0}, self._last_ts)
        if not found:
            return False
        reset = {b.partition: b.resume_at for b in found}
        self._queued.update(reset)
        self._queue.append(reset)
        for b in found:
            if self.on_beyond_end is not None:
                self.on_beyond_end(b)
        c.assign([TopicPartition(self.events_topic, p, self._queued.get(p, OFFSET_BEGINNING)) for p in parts])
        return True

    def drain(self, max_messages: int | None = 2000) -> int:
        """Fold queued messages (at most about ``max_messages``), snapshot when due; returns how many.

        The app calls this from its event loop (``drain_on_loop``), so folding never competes
        with request handling for the GIL; otherwise the reader thread calls it itself.
        """
        n = 0
        topic = self.events_topic
        while self._queue and (max_messages is None or n < max_messages):
            batch = self._queue.popleft()
            if isinstance(batch, dict):  # a recreated log: its partitions start again at these offsets
                for p, off in batch.items():
                    self._pos[p] = off
                    self._stored[(topic, p)] = min(self._stored.get((topic, p), 0), off)
                    self.offsets[(topic, p)] = off
                continue
            if max_messages is not None and len(batch) > max_messages - n:
                self._queue.appendleft(batch[max_messages - n:])
                batch = batch[:max_messages - n]
            for p, off, k, v, received in batch:
                self._pos[p] = off + 1
                self._apply((topic, p), off, k, v, received)
            n += len(batch)
        self.n_folded += n
        if not self._caught_up.is_set() and self._end is not None and all(
                self._pos.get(p, 0) >= e for p, e in self._end.items()):
            self._caught_up.set()
        if time.monotonic() - self._last_snapshot >= self.snapshot_every_s:
            self._last_snapshot = time.monotonic()
            self.snapshot()
        return n

    def _apply(self, key: tuple[str, int], offset: int, k: bytes | None, value: bytes | None,
               received_ts: float | None = None) -> None:
        ev = parse_event(k, value, self.rules, received_ts=received_ts)
        if not isinstance(ev, Event):
            return  # the flow dead-letters it
        if offset >= self._stored.get(key, 0):
            self.fold.event(ev)
            self.offsets[key] = offset + 1
        else:  # already in the snapshot: popularity only
            self.fold.popularity.add(ev.item_ids(), self.fold.type_weights.get(ev.type, 0.0), ev.ts)

    def snapshot(self) -> bool:
        """Write the changes since the last snapshot if this process is the store's writer."""
        popularity = self.fold.popularity
        if not self.store.try_own():
            self.fold.take_deltas()  # another worker writes: nothing to keep
            self.fold.optimizer.take_dirty()
            popularity.take_dirty()
            return False
        if not self._wrote_full:
            self.fold.take_deltas()
            self.fold.optimizer.take_dirty()
            with self.fold.lock:
                _, _, clock = popularity.take_dirty()
                snap = BanditSnapshot(
                    arms=dict(self.fold.optimizer.arms),
                    impressions={rid: encode_value(imp) for rid, imp in self.fold.open.items()},
                    rewarded=dict(self.fold.rewarded), offsets=dict(self.offsets),
                    popularity=popularity.weights(), popularity_clock=clock)
            self.store.replace(snap)
            self._wrote_full = True
            return True
        with self.fold.lock:
            opened, rewarded = self.fold.take_deltas()
            arms = self.fold.optimizer.take_dirty()
            offsets = dict(self.offsets)
            weights, dropped, clock = popularity.take_dirty()
        batch = self.store.new_batch()
        self.store.stage_popularity(batch, weights, dropped, clock)
        for ak, st in arms.items():
            self.store.stage_arm(batch, ak, st)
        for rid, imp in opened.items():
            self.store.stage_impression(batch, rid, None if imp is None else encode_value(imp))
        for rid, end in rewarded.items():
            self.store.stage_rewarded(batch, rid, end)
        for (topic, part), off in offsets.items():
            self.store.stage_offset(batch, topic, part, off)
        self.store.commit(batch)
        return True


async def drain_forever(reader: FeedbackReader, interval_s: float = 0.005, max_messages: int = 200) -> None:
    """Fold the reader's queue on the app's event loop, a bounded slice at a time, until cancelled."""
    while True:
        n = reader.drain(max_messages)
        await asyncio.sleep(0 if n >= max_messages else interval_s)
