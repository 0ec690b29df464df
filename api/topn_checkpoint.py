"""Checkpoints of the local ``user-topn`` store published to a compacted topic, so a new API node does not read every list.

A new node's serving store (``state/serving.py``) used to be filled from ``user-topn`` record by
record: one Kafka record per user (1 M users: 1 M records, ~1 GB; ~3.5 µs of broker CPU per record
on Tansu, and a RocksDB write each). A node whose store is caught up publishes, at most every
``publish_every_s``, a RocksDB checkpoint of the store (values and the ``user-topn`` offsets they
reflect, consistent by construction) as a tar stream of its files cut into chunks; a new node
(empty store) loads the newest one into its store, then reads ``user-topn`` from the checkpoint's
offsets: the cost is the store's compressed files (~220 MB at 1 M synthetic lists, in ~220 records)
plus the lists published since the checkpoint, not one record per user.

Topic ``kafka.topn_checkpoints_topic()`` (``<topn_topic>.checkpoint``), compacted, two partitions,
the layout of the optimizer's snapshot topic (``api/snapshot_topic.py``: a ``head`` per publication
in partition 0, chunks ``<generation>:<index>`` in partition 1, the publisher's previous generation
tombstoned once the new head is acknowledged); the head's ``size`` and ``sha256`` are those of the
tar stream. Several nodes publish without coordination: a node skips its turn while the newest
head (anyone's) is younger than ``publish_every_s``.

Readiness stays truthful: the node is ready only once its reader has caught up with ``user-topn``
from the checkpoint's offsets. A head whose chunks are missing, out of order, stall (no chunk for
10 s) or fail the checksum, or whose files are not a store, is logged as an error and the next
older head is tried; without any, the node reads ``user-topn`` from its start (as before this
topic existed).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from api.snapshot_topic import (
    CHUNK_PARTITION,
    HEAD_PARTITION,
    SnapshotChunk,
    SnapshotCorrupt,
    SnapshotHead,
    SnapshotTopic,
)
from operators.kafka import admin_client, high_watermarks, make_producer
from state.serving import ServingStore

__all__ = ["TopnCheckpoints", "CHECKPOINT_VERSION"]

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
"""Head version of a store checkpoint (a tar stream of a RocksDB checkpoint directory)."""
_HEAD_KEY = b"head"
_IN_FLIGHT = 32  # chunks produced but not yet acknowledged, at most (bounds the producer's memory)
_RETRY_S = 30.0  # wait after a failed checkpoint or publication, seconds
_STALL_S = 10.0  # a restore whose next chunk does not arrive this long gives up on that checkpoint, seconds


class _ChunkWriter:
    """A write-only file object that cuts what is written into ``size``-byte chunks for ``emit``."""

    def __init__(self, size: int, emit: Callable[[bytes], None]) -> None:
        self.size, self.emit = size, emit
        self._buf = bytearray()
        self.sha = hashlib.sha256()
        self.n_bytes = 0

    def write(self, data: bytes) -> int:
        self._buf += data
        self.sha.update(data)
        self.n_bytes += len(data)
        while len(self._buf) >= self.size:
            self.emit(bytes(self._buf[:self.size]))
            del self._buf[:self.size]
        return len(data)

    def close(self) -> None:
        if self._buf:
            self.emit(bytes(self._buf))
            self._buf.clear()


class _ChunkReader:
    """A read-only file object over the chunks an iterator yields; checks their size and SHA-256 at the end."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")
        self.sha = hashlib.sha256()
        self.n_bytes = 0

    def read(self, n: int = -1) -> bytes:
        """At most ``n`` bytes (fewer at a chunk's end; ``b""`` at the end of the chunks; all with ``n < 0``)."""
        if n < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        if not self._buf:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self.sha.update(chunk)
            self.n_bytes += len(chunk)
            self._buf = memoryview(chunk)
        out, self._buf = self._buf[:n], self._buf[n:]
        return out.tobytes()

    def drain(self) -> None:
        """Read what the tar reader left (end-of-archive padding), so the checksum covers every chunk."""
        while self.read(1 << 20):
            pass


class TopnCheckpoints:
    """Publishes checkpoints of one serving store and restores an empty one from the newest published.

    Parameters
    ----------
    brokers, topic : str
        Where (``kafka.topn_checkpoints_topic()``, two partitions, compacted).
    store : ServingStore
        The ``user-topn`` serving store (its reader thread calls ``restore`` and ``on_batch``).
    source_topic : str
        The topic the store materialises (its offsets are in the head, for operators).
    publish_every_s : float
        Least interval between two publications by any node, seconds (0 = never publish).
    chunk_bytes : int
        Largest chunk record, bytes (below the broker's message size limit).
    timeout_s : float
        Bound of one publication's or one load's broker waits, seconds.

    Attributes
    ----------
    n_published : int
        Checkpoints this process published.
    restored_from : str
        ``"published"`` once the store was restored from a checkpoint, else ``"topic"`` (read from the topic).
    """

    def __init__(self, brokers: str, topic: str, store: ServingStore, source_topic: str,
                 publish_every_s: float = 300.0, chunk_bytes: int = 1 << 20, timeout_s: float = 60.0) -> None:
        self.brokers, self.topic, self.store, self.source_topic = brokers, topic, store, source_topic
        self.publish_every_s, self.chunk_bytes, self.timeout_s = publish_every_s, chunk_bytes, timeout_s
        self._topic = SnapshotTopic(brokers, topic, chunk_bytes, timeout_s)
        self.n_published = 0
        self.restored_from = "topic"
        self._last_published_ts = 0.0  # wall clock of the newest checkpoint this node knows of
        self._retry_at = 0.0  # monotonic: no new attempt before, after a failed one
        self._busy = threading.Lock()
        self._producer = None
        self._previous: tuple[str, int] | None = None
        _remove_stale(self.store.path.parent)

    # ---- restoring ----------------------------------------------------------------------

    def restore(self) -> bool:
        """Fill the empty store from the newest usable checkpoint; False if there is none (read the topic).

        Call on the store's reader thread, before it reads the topic.

        Raises
        ------
        KafkaException
            If the broker could not be asked (the caller retries: no answer is not "no checkpoint").
        """
        t0 = time.monotonic()
        md = admin_client(self.brokers).list_topics(self.topic, timeout=self.timeout_s)
        meta = md.topics.get(self.topic)
        if meta is None or meta.error is not None or len(meta.partitions) < 2:
            log.info("no user-topn checkpoint topic %s: reading %s from its start", self.topic, self.source_topic)
            return False
        for at, raw in reversed(self._topic.heads()):
            try:
                head = msgspec.msgpack.decode(raw, type=SnapshotHead)
                if head.version != CHECKPOINT_VERSION:
                    raise SnapshotCorrupt(f"unknown version {head.version}")
                if any(t != self.source_topic for t, _p, _o in head.offsets):
                    raise SnapshotCorrupt(f"a checkpoint of another topic ({head.offsets[0][0]})")
                self._load(head)
            except Exception as exc:  # whatever is wrong with it (chunks, checksum, files, a stalled read), the topic is still there
                log.error("user-topn checkpoint (head at offset %d of %s[%d]) unusable: %s; trying an older one",
                          at, self.topic, HEAD_PARTITION, exc)
                continue
            self.restored_from = "published"
            self._last_published_ts = head.published_ts
            log.info("user-topn store restored from the checkpoint %s published by %s at %.0f (%d bytes, %.1f s); "
                     "reading %s from %s", head.generation, head.writer, head.published_ts, head.size,
                     time.monotonic() - t0, self.source_topic, head.offsets)
            return True
        return False

    def _load(self, head: SnapshotHead) -> None:
        """Stream the head's chunks into a directory next to the store, check them, make the store that copy."""
        end = high_watermarks(self.brokers, self.topic, self.timeout_s).get(CHUNK_PARTITION, 0)
        if head.last_offset >= end:
            raise SnapshotCorrupt(f"its chunks ({head.first_offset}..{head.last_offset}) lie beyond the log end {end}")
        target = self.store.path.parent / f"restore.{os.getpid()}.{head.generation}"
        reader = _ChunkReader(self._chunks(head))
        try:
            with tarfile.open(fileobj=reader, mode="r|", bufsize=self.chunk_bytes,  # type: ignore[call-overload]
                              copybufsize=self.chunk_bytes) as tar:
                tar.extractall(target, filter="data")
            reader.drain()
            if reader.n_bytes != head.size or reader.sha.hexdigest() != head.sha256:
                raise SnapshotCorrupt(f"checksum mismatch ({reader.n_bytes} bytes, head says {head.size})")
            self.store.restore(target)
        finally:
            shutil.rmtree(target, ignore_errors=True)

    def _chunks(self, head: SnapshotHead) -> Iterator[bytes]:
        """The data of the head's chunks in index order, fetched as they are needed.

        Raises
        ------
        SnapshotCorrupt
            If a chunk is missing or out of order, or does not decode.
        KafkaException
            If no chunk arrived for ``_STALL_S`` seconds (the checkpoint is given up: the topic is read).
        """
        c = self._topic.consumer()
        try:
            c.assign([TopicPartition(self.topic, CHUNK_PARTITION, head.first_offset)])
            want, deadline = 0, time.monotonic() + _STALL_S
            while want < head.n_chunks:
                if time.monotonic() > deadline:
                    raise KafkaException(f"no chunk of the checkpoint from {self.topic} for {_STALL_S} s "
                                         f"({want} of {head.n_chunks} read)")
                for m in c.consume(64, 0.2):
                    if want == head.n_chunks:
                        return
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            raise SnapshotCorrupt(f"{head.n_chunks - want} of {head.n_chunks} chunks missing")
                        continue
                    if m.value() is not None and m.offset() <= head.last_offset:
                        try:
                            ch = msgspec.msgpack.decode(m.value(), type=SnapshotChunk)
                        except msgspec.DecodeError as exc:
                            raise SnapshotCorrupt(f"undecodable chunk: {exc}") from exc
                        if ch.generation == head.generation:
                            if ch.index != want:
                                raise SnapshotCorrupt(f"chunk {ch.index} where {want} was expected (compacted or lost)")
                            want += 1
                            deadline = time.monotonic() + _STALL_S
                            yield ch.data
                    if m.offset() >= head.last_offset and want < head.n_chunks:
                        raise SnapshotCorrupt(f"{head.n_chunks - want} of {head.n_chunks} chunks missing")
        finally:
            c.close()

    # ---- publishing ---------------------------------------------------------------------

    def on_batch(self, offsets: dict[int, int], caught_up: bool) -> None:
        """The store's reader hook (its thread, between writes): once caught up, checkpoint the store
        every ``publish_every_s`` and publish it on a background thread."""
        if (not caught_up or self.publish_every_s <= 0 or time.time() - self._last_published_ts < self.publish_every_s
                or time.monotonic() < self._retry_at or not self._busy.acquire(blocking=False)):
            return
        try:
            source = self.store.path.parent / f"checkpoint.{os.getpid()}.{uuid.uuid4().hex}"
            offsets = self.store.checkpoint(source)
        except Exception:
            self._busy.release()
            self._retry_at = time.monotonic() + _RETRY_S
            log.exception("checkpointing the user-topn store failed (tried again in %.0f s)", _RETRY_S)
            return

        def run() -> None:
            try:
                self.publish(source, offsets)
            except Exception:
                self._retry_at = time.monotonic() + _RETRY_S
                log.exception("publishing the user-topn checkpoint to %s failed (tried again in %.0f s)", self.topic,
                              _RETRY_S)
            finally:
                shutil.rmtree(source, ignore_errors=True)
                self._busy.release()

        threading.Thread(target=run, name="topn-checkpoint-publish", daemon=True).start()

    def publish(self, source: Path, offsets: dict[int, int]) -> SnapshotHead | None:
        """Publish the checkpoint directory ``source`` (reflecting ``offsets``) unless another node's
        checkpoint is younger than ``publish_every_s``; returns the head, or None when skipped.

        Raises
        ------
        KafkaException
            If the broker did not acknowledge every record within ``timeout_s``.
        """
        newest = self._newest_published_ts()
        if newest is None:
            log.warning("no user-topn checkpoint topic %s (2 partitions, compacted): not publishing; tried again in "
                        "%.0f s", self.topic, _RETRY_S)
            self._retry_at = time.monotonic() + _RETRY_S
            return None
        if time.time() - newest < self.publish_every_s:
            self._last_published_ts = newest
            return None
        if self._producer is None:
            self._producer = make_producer(self.brokers, **{"linger.ms": 0})
        p = self._producer
        gen = uuid.uuid4().hex
        acked: dict[int, int] = {}
        errors: list[KafkaError] = []
        n = 0

        def delivered(i: int) -> Callable[[KafkaError | None, object], None]:
            def cb(err: KafkaError | None, msg) -> None:  # noqa: ANN001
                if err is not None:
                    errors.append(err)
                else:
                    acked[i] = msg.offset()
            return cb

        def emit(data: bytes) -> None:
            nonlocal n
            p.produce(self.topic, key=f"{gen}:{n}".encode(), partition=CHUNK_PARTITION,
                      value=msgspec.msgpack.encode(SnapshotChunk(gen, n, data)), on_delivery=delivered(n))
            n += 1
            deadline = time.monotonic() + self.timeout_s
            while n - len(acked) - len(errors) > _IN_FLIGHT and time.monotonic() < deadline:
                p.poll(0.05)

        out = _ChunkWriter(self.chunk_bytes, emit)
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                          bufsize=self.chunk_bytes) as tar:
            for f in sorted(source.iterdir()):
                tar.add(f, arcname=f.name, recursive=False)
        out.close()
        if p.flush(self.timeout_s) != 0 or errors or len(acked) != n:
            raise KafkaException(f"chunks of the user-topn checkpoint not acknowledged by {self.topic}: {errors[:1]}")
        head = SnapshotHead(version=CHECKPOINT_VERSION, generation=gen, n_chunks=n, first_offset=min(acked.values()),
                            last_offset=max(acked.values()), size=out.n_bytes, sha256=out.sha.hexdigest(),
                            published_ts=time.time(), writer=self._topic.writer,
                            offsets=[(self.source_topic, part, off) for part, off in sorted(offsets.items())])
        p.produce(self.topic, key=_HEAD_KEY, partition=HEAD_PARTITION, value=msgspec.msgpack.encode(head),
                  on_delivery=delivered(-1))
        if p.flush(self.timeout_s) != 0 or errors:
            raise KafkaException(f"head of the user-topn checkpoint not acknowledged by {self.topic}: {errors[:1]}")
        if self._previous is not None:  # compaction may drop the previous generation now
            old, n_old = self._previous
            for i in range(n_old):
                p.produce(self.topic, key=f"{old}:{i}".encode(), partition=CHUNK_PARTITION, value=None)
            p.flush(self.timeout_s)
        self._previous = (gen, n)
        self._last_published_ts = head.published_ts
        self.n_published += 1
        log.info("user-topn checkpoint published to %s: %d bytes in %d chunks, offsets %s", self.topic, out.n_bytes, n,
                 offsets)
        return head

    def _newest_published_ts(self) -> float | None:
        """Publication time of the newest decodable head (0 without one; None without the topic)."""
        md = admin_client(self.brokers).list_topics(self.topic, timeout=self.timeout_s)
        meta = md.topics.get(self.topic)
        if meta is None or meta.error is not None or len(meta.partitions) < 2:
            return None
        for _at, raw in reversed(self._topic.heads()):
            try:
                return msgspec.msgpack.decode(raw, type=SnapshotHead).published_ts
            except msgspec.DecodeError:
                continue
        return 0.0

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no publication is under way (at most ``timeout_s``); True if none is."""
        if not self._busy.acquire(timeout=timeout_s):
            return False
        self._busy.release()
        return True


def _remove_stale(root: Path) -> None:
    """Remove checkpoint and restore directories that processes no longer running left under ``root``."""
    for d in root.glob("*.*.*"):
        kind, pid, _gen = d.name.split(".", 2)
        if kind not in ("checkpoint", "restore") or not pid.isdigit() or not d.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # its process still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(d, ignore_errors=True)
