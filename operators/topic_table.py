"""A compacted Kafka topic read into memory: latest value per key, kept fresh by a thread.

This is how API processes read data owned by the flow (DESIGN.md: one writer per RocksDB;
readers get the data another way). ``user-topn`` and ``catalog`` are read this way; every API
replica keeps its own copy, so replicas scale without touching the flow's databases. The flow's
workers read ``catalog`` the same way (new items, ``operators.catalog_overlay``).
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from operators.kafka import PatientEnds, client_config, topic_partitions
from operators.offset_guard import CONNECTION_LOST_CODES, BeyondLogEnd, OffsetGuard
from operators.spilled_values import SpilledValues
from operators.value_packer import ValuePacker
from state.serving import ServingStore

__all__ = ["TopicTable", "FETCH_BYTES", "CONSUME_BATCH", "FETCH_WAIT_MS", "BACKGROUND_FETCH_WAIT_MS", "release_free_heap"]

log = logging.getLogger(__name__)

FETCH_BYTES = 16 * 1024 * 1024
"""``max.partition.fetch.bytes`` of the readers (librdkafka's default, 1 MB, made a cold read of 1M
top-N lists from Tansu ~2x slower: one round trip per MB and partition)."""
FETCH_WAIT_MS = 10
"""``fetch.wait.max.ms`` of a reader on the event -> visible path (``user-topn``): how long the broker may hold
an empty fetch. Each idle reader makes ~1 / wait fetches a second per broker connection."""
BACKGROUND_FETCH_WAIT_MS = 250
"""``fetch.wait.max.ms`` of the readers whose changes are not on the event -> visible path (catalog, item links,
windowed popularity, the flow's statistics, analytics): ~4 empty fetches a second each instead of ~100. At 10 ms
the API's idle readers kept the embedded broker busy (bench/RESULTS.md, issue 14). The optimizer's feedback reader
keeps ``FETCH_WAIT_MS`` (``api.feedback_reader``)."""
CONSUME_BATCH = 10_000
"""Messages taken from the consumer's queue per call (values and offsets written to a serving store together)."""


def release_free_heap() -> None:
    """Give the C heap's free pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    A cold read frees hundreds of MB (fetched records, RocksDB write buffers, decoded pieces) that
    glibc otherwise keeps in the process's RSS: ~330 MB of 900 MB after reading 1M top-N lists and
    the popularity pieces of 10M events. Takes ~50 ms then; called once per reader when it catches up.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class TopicTable:
    """Latest value per key of a compacted topic.

    Parameters
    ----------
    brokers : str
        Bootstrap servers.
    topic : str
        Topic to read from the beginning (``assign()``, no consumer group), every partition: they are
        listed again every ``guard.check_every_s`` (10 s), busy or idle, so a partition that appears later
        (the topic recreated with another count, e.g. auto-created with a broker's default after it came
        back empty) is read from its start too, with a warning, instead of never.
    decode : callable bytes -> object
        Turns a value into what ``get`` returns; a value that fails to decode is logged and skipped.
    on_update : callable (key, value or None), optional
        Called on the reader thread after each change (``None`` = tombstone).
    keep : bool
        Keep the latest value per key (``get``/``items``); False when ``on_update`` folds the
        values into its own structure (the analytics view), so they are not held twice.
    keep_raw : bool
        With ``keep``: hold each value as the bytes read, packed (``packer``), and decode it in every
        ``get`` and ``items`` (a new object per call). A catalog item with a 16-float vector is ~350 B
        of JSON and ~1.5 KB decoded: 1M items held decoded cost ~1.1 GB more per process; packed, the
        JSON costs ~170 B per item instead of ~350 B.
    packer : ValuePacker, optional
        With ``keep_raw``: how values are packed (default ``ValuePacker()``: DEFLATE against a
        dictionary learned from the first 64 values, ``operators.value_packer``).
    spill_dir : Path, optional
        With ``keep_raw`` and no serving store: hold the packed values in an unlinked file under this
        directory (``operators.spilled_values.SpilledValues``, the same answers and order as the
        dict) instead of in memory; each ``get`` then reads one value from the file. At 1M catalog items
        ~42 B per key stay in memory instead of ~200 (bench/RESULTS.md, issue 14 session 25).
    reader : str
        Names the reader in the consumer's ``group.id`` (``fusionrec-<reader>-<topic>``; no
        group is joined, offsets are assigned).
    store : ServingStore, optional
        Keep the values in this local RocksDB instead of a dict (``state/serving.py``): memory
        stays bounded by its block cache, values are decoded when read, and a restarted process
        resumes from the offsets stored with them, reading only the tail. ``on_update`` is then
        called for the stored keys under ``update_prefix`` once at start, before any new message.
    update_prefix : str
        ``on_update`` is called only for keys that start with it ("" = every key).
    on_beyond_end : callable (BeyondLogEnd), optional
        Called when a position was found beyond the log end (the topic was recreated, e.g. by a
        broker that came back empty); the reader then re-reads the new log from its start and
        keeps the values it holds until they are replaced.
    start_offsets : dict partition -> offset, optional
        Where to start reading without a serving store: the offsets a snapshot of what
        ``on_update`` folded reflects (e.g. windowed popularity); default the topic's start.
    on_batch : callable (offsets, caught_up), optional
        Called on the reader thread after every applied batch and once when caught up, with
        every partition's next offset (what has been applied so far) and whether the reader has
        caught up: a consistent point to snapshot what ``on_update`` folded.
    fetch_wait_ms : int
        ``fetch.wait.max.ms`` of its consumer: ``FETCH_WAIT_MS`` (10) for a table on the event -> visible path,
        ``BACKGROUND_FETCH_WAIT_MS`` (250) for the others, so idle readers do not keep the broker busy.
    on_caught_up : callable (TopicTable), optional
        Called once on the reader thread when it has first caught up, before ``wait_caught_up``
        returns True and before any later message is applied: a consistent point to bulk-build from
        what the table holds (``raw_items``; the catalog view's initial load). An exception is
        logged and the call retried with the reader's reconnect.
    restore : callable () -> bool, optional
        With a serving store that is empty (a new node): called once on the reader thread before
        anything is read, to fill the store from a copy of another node's (e.g.
        ``api.topn_checkpoint.TopnCheckpoints.restore``); True if it did, and the reader then
        reads the topic from the offsets stored with the copy. An exception is retried (the
        broker did not answer); False reads the topic from its start.

    Attributes
    ----------
    n_messages : int
        Messages applied so far (grows with every change: a cheap "has it changed" check).
    last_update_s : float
        Wall-clock epoch seconds of the last applied message.
    """

    def __init__(self, brokers: str, topic: str, decode: Callable[[bytes], object],
                 on_update: Callable[[str, object | None], None] | None = None, keep: bool = True,
                 reader: str = "api", on_beyond_end: Callable[[BeyondLogEnd], None] | None = None,
                 store: ServingStore | None = None, update_prefix: str = "",
                 start_offsets: dict[int, int] | None = None,
                 on_batch: Callable[[dict[int, int], bool], None] | None = None,
                 restore: Callable[[], bool] | None = None, keep_raw: bool = False,
                 on_caught_up: Callable[[TopicTable], None] | None = None, fetch_wait_ms: int = FETCH_WAIT_MS,
                 packer: ValuePacker | None = None, spill_dir: Path | None = None) -> None:
        self.brokers, self.topic, self.decode, self.on_update = brokers, topic, decode, on_update
        self.on_beyond_end = on_beyond_end
        self.store, self.update_prefix = store, update_prefix
        self.start_offsets, self.on_batch = dict(start_offsets or {}), on_batch
        self.restore, self._restore_done = restore, restore is None or store is None
        self.guard = OffsetGuard(brokers, topic, "earliest")
        self.keep, self.reader, self.keep_raw = keep, reader, keep_raw
        self.packer = (packer or ValuePacker()) if keep_raw else None
        self.on_caught_up = on_caught_up
        self.fetch_wait_ms = fetch_wait_ms
        self._data: dict[str, object] | SpilledValues = {}
        if spill_dir is not None and keep_raw and store is None:
            self._data = SpilledValues(spill_dir)
        self._tombstoned: set[str] = set()  # keep_raw: keys whose latest record deletes them (tombstoned_keys)
        self._pending: list[tuple[bytes, bytes | None]] = []  # changes for the serving store, per poll
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._ends = PatientEnds()  # the log end at start, asked until the broker answers
        self._thread: threading.Thread | None = None
        self.n_messages = 0
        self.last_update_s = 0.0

    def get(self, key: str) -> object | None:
        if self.store is None:
            value = self._data.get(key)
            if self.packer is None or value is None:
                return value
            return self.decode(self.packer.unpack(value))  # type: ignore[arg-type]  # decoded when read: it decodes
        raw = self.store.get(key.encode())
        if raw is None:
            return None
        try:
            return self.decode(raw)
        except Exception as exc:  # stored before a codec change: skip it, as the reader would
            log.warning("undecodable stored value for key %r of %s: %s", key, self.topic, exc)
            return None

    def items(self) -> list[tuple[str, object]]:
        if self.store is not None:
            raise TypeError(f"{self.topic}: a table kept in a serving store is not iterated (bounded memory); use get")
        if self.packer is not None:  # O(n) decodes: for background work (the catalog overlay's rebuilds)
            unpack = self.packer.unpack
            return [(k, self.decode(unpack(v))) for k, v in list(self._data.items())]  # type: ignore[arg-type]
        return list(self._data.items())

    def raw_items(self) -> Iterator[tuple[str, bytes]]:
        """(key, value bytes) of every key held, unpacked but not decoded, in the order keys first arrived.

        Only for ``on_caught_up`` (the reader thread, the dict's one writer) of a table with
        ``keep_raw`` and no serving store.

        Raises
        ------
        TypeError
            Without ``keep_raw``, or with a serving store.
        """
        self._require_raw("raw_items")
        assert self.packer is not None
        unpack = self.packer.unpack
        return ((k, unpack(v)) for k, v in self._data.items())  # type: ignore[arg-type]  # keep_raw: packed bytes

    def tombstoned_keys(self) -> list[str]:
        """Keys whose latest record read is a tombstone (or an undecodable value), as a node reading the
        topic now sees them until compaction removes the tombstones; only for ``on_caught_up`` of a table
        with ``keep_raw`` and no serving store (the catalog view's initial load).

        Raises
        ------
        TypeError
            Without ``keep_raw``, or with a serving store.
        """
        self._require_raw("tombstoned_keys")
        return list(self._tombstoned)

    def _require_raw(self, what: str) -> None:
        """TypeError unless the table keeps raw values in its dict (``keep_raw``, no serving store)."""
        if not self.keep_raw or self.store is not None:
            raise TypeError(f"{self.topic}: {what} needs keep_raw=True and no serving store")

    def __len__(self) -> int:
        """Keys held (with a serving store: RocksDB's estimate)."""
        return len(self._data) if self.store is None else self.store.estimated_len()

    def start(self) -> TopicTable:
        self._replay_stored()
        self._thread = threading.Thread(target=self._run, name=f"topic-table-{self.topic}", daemon=True)
        self._thread.start()
        return self

    def _replay_stored(self) -> None:
        """``on_update`` for the stored keys under ``update_prefix`` (e.g. the partitions' popular lists)."""
        if self.store is not None and self.on_update is not None and self.update_prefix:
            for k, raw in self.store.scan(self.update_prefix.encode()):
                self._apply(k, raw, write=False)

    def alive(self) -> bool:
        """The reader thread runs (it retries its own failures; only a bug ends it)."""
        return self._thread is not None and self._thread.is_alive()

    def wait_caught_up(self, timeout_s: float) -> bool:
        """True once everything written before ``start`` has been read."""
        return self._caught_up.wait(timeout_s)

    def request_stop(self) -> None:
        """Ask the reader thread to stop, without waiting (``stop`` waits): a process stopping several
        readers asks them all first, so readers blocked on a broker that does not answer end together."""
        self._stop.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the reader thread (waiting up to ``timeout_s`` seconds for it); close the serving store (its offsets
        are already written) once the thread has ended. A thread still waiting on a broker that does not answer is
        left (a daemon): the store stays open for it, and its offsets and data were written together."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(0.0, timeout_s))
        if self.store is not None and (self._thread is None or not self._thread.is_alive()):
            self.store.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._restore_done:
                    assert self.restore is not None and self.store is not None
                    if self.store.is_empty() and self.restore():
                        self._replay_stored()
                    self._restore_done = True
                self._consume()
            except KafkaException as exc:  # the broker is down or slow: one line, not a traceback per retry
                log.warning("reader of %s: %s; retrying in 1 s", self.topic, exc)
                self._stop.wait(1.0)
            except Exception:
                log.exception("reader of %s failed; retrying in 1 s", self.topic)
                self._stop.wait(1.0)

    def _consume(self) -> None:
        parts = topic_partitions(self.brokers, self.topic)
        end = self._ends.ends(self.brokers, self.topic)
        c = Consumer({**client_config(self.brokers), "group.id": f"fusionrec-{self.reader}-{self.topic}",
                      "enable.auto.commit": False, "fetch.wait.max.ms": self.fetch_wait_ms,
                      "fetch.error.backoff.ms": 10, "max.partition.fetch.bytes": FETCH_BYTES, "error_cb": self._on_error})
        stored = self.store.offsets() if self.store is not None else self.start_offsets
        offsets = {p: stored.get(p, 0) for p in parts}
        c.assign([TopicPartition(self.topic, p, offsets[p] or OFFSET_BEGINNING) for p in parts])
        if all(offsets[p] >= end.get(p, 0) for p in parts):
            if self.store is not None:
                self.store.end_bulk_load()
            self._call_caught_up()
            self._caught_up.set()
            if self.on_batch is not None:
                self.on_batch(dict(offsets), True)
        elif self.store is not None and not self._caught_up.is_set() and self.store.is_empty():
            self.store.begin_bulk_load()  # a new node's first fill: ended once caught up
        last_message_s = parts_listed_s = time.monotonic()
        last_ts: dict[int, int] = {}  # Kafka timestamp (ms) of the last record read per partition
        try:
            while not self._stop.is_set():
                idle = time.monotonic() - last_message_s >= self.guard.check_every_s
                found: list[BeyondLogEnd] = []
                if self.guard.due(idle):
                    found = self.guard.check(offsets, last_ts)
                    for b in found:
                        offsets[b.partition] = b.resume_at
                        if self.on_beyond_end is not None:
                            self.on_beyond_end(b)
                    if found:
                        c.assign([TopicPartition(self.topic, p, off) for p, off in offsets.items()])
                if found or time.monotonic() - parts_listed_s >= self.guard.check_every_s:  # busy or idle
                    parts_listed_s = time.monotonic()
                    parts = self._follow_partitions(c, parts, offsets)
                if self.guard.suspect:  # at start or after a lost connection: read nothing before a check passed
                    time.sleep(0.05)
                    continue
                batch = [m for m in c.consume(CONSUME_BATCH, 0.05) if m.error() is None]
                changed: dict[int, int] = {}
                if batch:
                    last_message_s = time.monotonic()
                    last = {m.partition(): m for m in batch}  # the last of each partition
                    changed = {p: m.offset() + 1 for p, m in last.items()}
                    offsets.update(changed)
                    last_ts.update({p: m.timestamp()[1] for p, m in last.items()})
                    self._apply_batch(batch)
                if self.store is not None and (changed or self._pending):
                    self.store.write(self._pending, changed)  # values and their offsets in one batch
                    self._pending = []
                caught_up_now = not self._caught_up.is_set() and all(offsets[p] >= end.get(p, 0) for p in parts)
                if caught_up_now:
                    if self.store is not None:
                        self.store.end_bulk_load()
                    self._call_caught_up()
                    release_free_heap()
                    self._caught_up.set()
                if self.on_batch is not None and (batch or caught_up_now):
                    self.on_batch(dict(offsets), self._caught_up.is_set())
        finally:
            c.close()

    def _follow_partitions(self, c: Consumer, parts: list[int], offsets: dict[int, int]) -> list[int]:
        """The topic's partitions now, read by ``c``: a partition that appeared (the topic was recreated with
        another count, e.g. auto-created by a client after the broker came back empty, or grown) is logged and
        read from its start, one that went away is dropped; ``parts`` while the topic is not listed.

        The topic is looked up in a listing of all topics: asking for it by name makes a broker that
        auto-creates topics create a missing one with its defaults (seen with Tansu).
        """
        try:
            listed = c.list_topics(timeout=2.0).topics.get(self.topic)  # the reader's own client, no new one
        except KafkaException as exc:
            log.info("partition listing of %s postponed: %s", self.topic, exc)
            return parts
        now = sorted(listed.partitions) if listed is not None and listed.error is None else []
        if not now or now == parts:  # not listed: deleted or being created (the offset guard handles a new log)
            return parts
        log.warning("topic %s now has partitions %s (it had %s): recreated or grown; reading all of them, "
                    "each new one from its start", self.topic, now, parts)
        for p in set(parts) - set(now):
            offsets.pop(p, None)
        c.assign([TopicPartition(self.topic, p, offsets.setdefault(p, 0) or OFFSET_BEGINNING) for p in now])
        return now

    def _call_caught_up(self) -> None:
        """``on_caught_up``, the first time the reader catches up (an exception propagates: retried)."""
        if self.on_caught_up is not None and not self._caught_up.is_set():
            self.on_caught_up(self)

    def _on_error(self, err: KafkaError) -> None:
        if err.name() in CONNECTION_LOST_CODES:
            self.guard.connection_lost()

    def _apply_batch(self, batch: list) -> None:  # noqa: ANN001 (confluent_kafka Messages)
        """Apply consumed messages in order. With a serving store, values go to it undecoded and only
        the keys under ``update_prefix`` are decoded for ``on_update`` (one pass, no per-message call)."""
        if self.store is None:
            for m in batch:
                self._apply(m.key(), m.value())
            return
        keyed = [(m.key(), m.value()) for m in batch if m.key() is not None]
        self._pending.extend(keyed)
        self.n_messages += len(keyed)
        self.last_update_s = time.time()
        if self.on_update is not None:
            prefix = self.update_prefix.encode()
            for k, v in keyed:
                if k.startswith(prefix):
                    self._apply(k, v, write=False, count=False)

    def _apply(self, key: bytes | None, value: bytes | None, write: bool = True, count: bool = True) -> None:
        """Apply one message; it is counted in ``n_messages`` only once applied, so a reader that waits for
        the count sees the value (and the tombstone set) it brought."""
        if key is None:
            return
        self._apply_value(key.decode(errors="replace"), key, value, write)
        if count:
            self.n_messages += 1
            self.last_update_s = time.time()

    def _apply_value(self, k: str, key: bytes, value: bytes | None, write: bool) -> None:
        if self.store is not None:
            if write:
                self._pending.append((key, value))
            if self.on_update is None or not k.startswith(self.update_prefix):
                return
        if value is None:
            self._data.pop(k, None)
            if self.keep_raw:
                self._tombstoned.add(k)
            obj = None
        else:
            try:
                obj = self.decode(value)
            except Exception as exc:  # a bad value must not stop the reader
                # the key's latest value is unusable: as a node that reads the topic afresh (only that value,
                # after compaction) would have nothing for it, the key is dropped (as a tombstone), not left
                # at its previous value
                log.warning("undecodable value for key %r in %s, treated as deleted: %s", k, self.topic, exc)
                self._data.pop(k, None)
                if self.keep_raw:
                    self._tombstoned.add(k)
                obj = None
            else:
                if self.keep and self.store is None:
                    self._data[k] = obj if self.packer is None else self.packer.pack(value)
                    if self.keep_raw:
                        self._tombstoned.discard(k)
        if self.on_update is not None and k.startswith(self.update_prefix):
            self.on_update(k, obj)
