"""The optimizer's snapshot published to a compacted topic, so a new API node does not fold the history.

Every API worker folds the same ``served`` and ``events`` topics into the same optimizer state
(``api/feedback_reader.py``), so the snapshot of any node, with the offsets it reflects, is a
valid start for another: a new node (no local snapshot) loads the newest published one and
reads only the tails from its offsets, exactly as a restarted node does with its local snapshot.

Topic ``kafka.optimizer_topic()`` (``<events_topic>.optimizer``), compacted, two partitions:

=========  ==========================  =================================================
partition  key                         value (msgpack)
=========  ==========================  =================================================
0          ``head``                    :class:`SnapshotHead`: generation, where its
                                       chunks are, their size and SHA-256
1          ``<generation>:<index>``    :class:`SnapshotChunk`: a slice of the encoded
                                       snapshot (at most ``chunk_bytes``)
=========  ==========================  =================================================

A publication writes its chunks, waits for their acknowledgement, writes the head, then
tombstones the chunks of the publisher's previous generation (so compaction keeps one
generation per publisher plus the newest head). A reader takes the newest head from the tail of
partition 0 (never the whole partition) and reads partition 1 from the head's first to its last
chunk offset: the cost is the snapshot's size, not the history's length nor the number of
publications. A head whose chunks are missing or fail their checksum, or that does not decode,
is logged as an error and the next older head in the tail is tried; without any, the node
folds the topics from their start (as before this topic existed). So is a head of another format
version (``SnapshotHead.version``): version 1 held no parked feedback events and no fold counters, so
a node restored from it would end in another state than one that folded the topics.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from operators.kafka import admin_client, client_config, high_watermarks, make_producer
from state.bandit import ArmKey, ArmStats, BanditSnapshot

__all__ = ["SnapshotHead", "SnapshotChunk", "SnapshotTopic", "HEAD_PARTITION", "CHUNK_PARTITION"]

log = logging.getLogger(__name__)

HEAD_PARTITION, CHUNK_PARTITION = 0, 1
_HEAD_KEY = b"head"
_VERSION = 2  # 2: the payload holds the parked feedback events and the fold's counters
_HEAD_TAIL = 64  # records of the head partition read from its end when looking for the newest head


class SnapshotHead(msgspec.Struct, frozen=True):
    """Where one published snapshot is: its chunks are records ``first_offset..last_offset`` of partition 1.

    ``size`` bytes and ``sha256`` (hex) of the concatenated chunk data; ``published_ts`` epoch
    seconds; ``writer`` names the publishing process (host:pid); ``offsets`` the Kafka offsets the
    snapshot reflects, as ``[topic, partition, next offset]`` (also inside the snapshot: here for
    operators reading the topic).
    """

    version: int
    generation: str
    n_chunks: int
    first_offset: int
    last_offset: int
    size: int
    sha256: str
    published_ts: float
    writer: str
    offsets: list[tuple[str, int, int]]


class SnapshotChunk(msgspec.Struct, frozen=True, array_like=True):
    """One slice (``index`` of the head's ``n_chunks``) of a generation's encoded snapshot."""

    generation: str
    index: int
    data: bytes


class _Payload(msgspec.Struct, array_like=True):
    """The snapshot itself (``state/bandit.py``'s ``BanditSnapshot``; impressions, parked events and
    counters stay encoded)."""

    arms: list[tuple[str, str, str, ArmStats]]
    impressions: list[tuple[str, bytes]]
    rewarded: list[tuple[str, float]]
    offsets: list[tuple[str, int, int]]
    parked: list[tuple[str, bytes]]
    counters: bytes


class SnapshotCorrupt(ValueError):
    """A published snapshot that cannot be used (missing chunk, wrong checksum, undecodable record)."""


def encode_snapshot(snap: BanditSnapshot) -> bytes:
    """The payload of a publication (msgpack)."""
    return msgspec.msgpack.encode(_Payload(
        arms=[(c, a, s, st) for (c, a, s), st in snap.arms.items()],
        impressions=list(snap.impressions.items()),
        rewarded=list(snap.rewarded.items()),
        offsets=[(t, p, off) for (t, p), off in snap.offsets.items()],
        parked=list(snap.parked.items()), counters=snap.counters))


def decode_snapshot(raw: bytes) -> BanditSnapshot:
    """Inverse of :func:`encode_snapshot`.

    Raises
    ------
    SnapshotCorrupt
        If ``raw`` is not a payload.
    """
    try:
        p = msgspec.msgpack.decode(raw, type=_Payload)
    except msgspec.DecodeError as exc:
        raise SnapshotCorrupt(f"undecodable snapshot payload: {exc}") from exc
    arms: dict[ArmKey, ArmStats] = {(c, a, s): st for c, a, s, st in p.arms}
    return BanditSnapshot(arms=arms, impressions=dict(p.impressions), rewarded=dict(p.rewarded),
                          offsets={(t, part): off for t, part, off in p.offsets}, parked=dict(p.parked),
                          counters=p.counters)


class SnapshotTopic:
    """Publishes this node's optimizer snapshots and loads the newest published one.

    Parameters
    ----------
    brokers, topic : str
        Where (``kafka.optimizer_topic()``, two partitions, compacted).
    chunk_bytes : int
        Largest chunk record, bytes (below the broker's message size limit).
    timeout_s : float
        Bound of one publication's or one load's broker round trips, seconds.

    Attributes
    ----------
    n_published : int
        Publications acknowledged by the broker.
    last_head : SnapshotHead or None
        The newest head this process published.
    """

    def __init__(self, brokers: str, topic: str, chunk_bytes: int = 512 * 1024, timeout_s: float = 30.0) -> None:
        self.brokers, self.topic, self.chunk_bytes, self.timeout_s = brokers, topic, chunk_bytes, timeout_s
        self.writer = f"{socket.gethostname()}:{os.getpid()}"
        self.n_published = 0
        self.last_head: SnapshotHead | None = None
        self._producer = None
        self._busy = threading.Lock()
        self._previous: tuple[str, int] | None = None  # (generation, n_chunks) of this publisher's last head

    # ---- publishing -----------------------------------------------------------------------

    def publish_async(self, build: Callable[[], BanditSnapshot]) -> bool:
        """Publish ``build()`` on a background thread unless a publication is still under way.

        ``build`` runs on that thread (encode there, copy the state before calling). Returns
        whether a publication was started.
        """
        if not self._busy.acquire(blocking=False):
            return False

        def run() -> None:
            try:
                self._publish(build())
            except Exception:
                log.exception("publishing the optimizer snapshot to %s failed (the next one is tried later)", self.topic)
            finally:
                self._busy.release()

        threading.Thread(target=run, name="optimizer-snapshot-publish", daemon=True).start()
        return True

    def publish(self, snap: BanditSnapshot, timeout_s: float | None = None) -> SnapshotHead:
        """Publish ``snap`` now (waits for a publication under way first).

        Raises
        ------
        KafkaException
            If the broker did not acknowledge every record within ``timeout_s`` (default: the topic's).
        """
        with self._busy:
            return self._publish(snap, timeout_s)

    def _publish(self, snap: BanditSnapshot, timeout_s: float | None = None) -> SnapshotHead:
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)  # one for every flush

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        if self._producer is None:
            self._producer = make_producer(self.brokers, **{"linger.ms": 0})
        p = self._producer
        data = encode_snapshot(snap)
        gen = uuid.uuid4().hex
        pieces = [data[i:i + self.chunk_bytes] for i in range(0, len(data), self.chunk_bytes)] or [b""]
        offsets: dict[int, int] = {}
        errors: list[KafkaError] = []

        def delivered(i: int) -> Callable[[KafkaError | None, object], None]:
            def cb(err: KafkaError | None, msg) -> None:  # noqa: ANN001
                if err is not None:
                    errors.append(err)
                else:
                    offsets[i] = msg.offset()
            return cb

        for i, piece in enumerate(pieces):
            p.produce(self.topic, key=f"{gen}:{i}".encode(), partition=CHUNK_PARTITION,
                      value=msgspec.msgpack.encode(SnapshotChunk(gen, i, piece)), on_delivery=delivered(i))
            p.poll(0)
        if p.flush(left()) != 0 or errors or len(offsets) != len(pieces):
            raise KafkaException(f"chunks of the optimizer snapshot not acknowledged by {self.topic}: {errors[:1]}")
        head = SnapshotHead(version=_VERSION, generation=gen, n_chunks=len(pieces), first_offset=min(offsets.values()),
                            last_offset=max(offsets.values()), size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                            published_ts=time.time(), writer=self.writer,
                            offsets=[(t, part, off) for (t, part), off in sorted(snap.offsets.items())])
        p.produce(self.topic, key=_HEAD_KEY, partition=HEAD_PARTITION, value=msgspec.msgpack.encode(head),
                  on_delivery=delivered(-1))
        if p.flush(left()) != 0 or errors:
            raise KafkaException(f"head of the optimizer snapshot not acknowledged by {self.topic}: {errors[:1]}")
        if self._previous is not None:  # compaction may drop the previous generation now
            old, n = self._previous
            for i in range(n):
                p.produce(self.topic, key=f"{old}:{i}".encode(), partition=CHUNK_PARTITION, value=None)
            p.flush(left())
        self._previous = (gen, len(pieces))
        self.n_published += 1
        self.last_head = head
        log.info("optimizer snapshot published to %s: %d bytes in %d chunks (%d arms, %d open lists)",
                 self.topic, len(data), len(pieces), len(snap.arms), len(snap.impressions))
        return head

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no publication is under way (at most ``timeout_s``); True if none is."""
        if not self._busy.acquire(timeout=timeout_s):
            return False
        self._busy.release()
        return True

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(5.0)

    # ---- loading --------------------------------------------------------------------------

    def load(self) -> tuple[BanditSnapshot, SnapshotHead] | None:
        """The newest usable published snapshot, or None when there is none (no topic, no head, or
        every head in the tail unusable: each such head is logged as an error).

        Raises
        ------
        KafkaException
            If the broker could not be asked (the caller retries: no answer is not "no snapshot").
        """
        md = admin_client(self.brokers).list_topics(self.topic, timeout=self.timeout_s)
        meta = md.topics.get(self.topic)
        if meta is None or meta.error is not None or len(meta.partitions) < 2:
            log.info("no optimizer snapshot topic %s (%s)", self.topic,
                     "missing" if meta is None or meta.error is not None else "fewer than 2 partitions")
            return None
        heads = self.heads()
        for at, raw in reversed(heads):
            try:
                head = msgspec.msgpack.decode(raw, type=SnapshotHead)
                if head.version != _VERSION:
                    raise SnapshotCorrupt(f"format version {head.version}, this build reads {_VERSION} (version 1 "
                                          "holds no parked feedback events)")
                return self._chunks(head), head
            except (msgspec.DecodeError, SnapshotCorrupt) as exc:
                log.error("published optimizer snapshot (head at offset %d of %s[%d]) unusable: %s; trying an older one",
                          at, self.topic, HEAD_PARTITION, exc)
        if heads:
            log.error("no usable optimizer snapshot among the %d newest heads of %s: folding from the start",
                      len(heads), self.topic)
        return None

    def consumer(self) -> Consumer:
        return Consumer({**client_config(self.brokers), "group.id": "fusionrec-api-optimizer-snapshot",
                         "enable.auto.commit": False, "enable.partition.eof": True, "fetch.wait.max.ms": 10,
                         "auto.offset.reset": "error",
                         "fetch.message.max.bytes": 4 * self.chunk_bytes})

    def read_partition(self, partition: int, start: int, stop: Callable[[int], bool]) -> list[tuple[int, bytes | None]]:
        """(offset, value) of ``partition`` from ``start`` until its end or ``stop(offset)``.

        Raises
        ------
        KafkaException
            If the end was not reached within ``timeout_s``.
        SnapshotCorrupt
            If ``start`` lies beyond the partition's log (a head pointing past a recreated topic).
        """
        c = self.consumer()
        out: list[tuple[int, bytes | None]] = []
        try:
            c.assign([TopicPartition(self.topic, partition, start)])
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                for m in c.consume(1000, 0.2):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            return out
                        if err.code() == KafkaError._AUTO_OFFSET_RESET:
                            raise SnapshotCorrupt(f"offset {start} of {self.topic}[{partition}] is out of range: {err.str()}")
                        continue
                    if m.key() is not None:
                        out.append((m.offset(), m.value()))
                    if stop(m.offset()):
                        return out
            raise KafkaException(f"reading {self.topic}[{partition}] took more than {self.timeout_s} s")
        finally:
            c.close()

    def heads(self) -> list[tuple[int, bytes]]:
        """The values of the newest head records (the tail of partition 0), oldest first."""
        c = self.consumer()
        try:
            low, high = c.get_watermark_offsets(TopicPartition(self.topic, HEAD_PARTITION), timeout=self.timeout_s,
                                                cached=False)
        finally:
            c.close()
        # Tansu reports the newest batch's base offset as the high watermark: read from before it to EOF
        start = OFFSET_BEGINNING if high - _HEAD_TAIL <= low else high - _HEAD_TAIL
        return [(at, v) for at, v in self.read_partition(HEAD_PARTITION, start, lambda _o: False) if v is not None]

    def _chunks(self, head: SnapshotHead) -> BanditSnapshot:
        end = high_watermarks(self.brokers, self.topic, self.timeout_s).get(CHUNK_PARTITION, 0)
        if head.last_offset >= end:  # a fetch beyond the end waits for ever (Tansu answers nothing)
            raise SnapshotCorrupt(f"its chunks ({head.first_offset}..{head.last_offset}) lie beyond the log end {end} "
                                  f"of {self.topic}[{CHUNK_PARTITION}] (the topic was recreated)")
        got: dict[int, bytes] = {}
        for _at, v in self.read_partition(CHUNK_PARTITION, head.first_offset, lambda o: o >= head.last_offset):
            if v is None:
                continue
            try:
                ch = msgspec.msgpack.decode(v, type=SnapshotChunk)
            except msgspec.DecodeError as exc:
                raise SnapshotCorrupt(f"undecodable chunk: {exc}") from exc
            if ch.generation == head.generation:
                got[ch.index] = ch.data
        missing = [i for i in range(head.n_chunks) if i not in got]
        if missing:
            raise SnapshotCorrupt(f"{len(missing)} of {head.n_chunks} chunks missing (compacted or lost), first {missing[0]}")
        data = b"".join(got[i] for i in range(head.n_chunks))
        if len(data) != head.size or hashlib.sha256(data).hexdigest() != head.sha256:
            raise SnapshotCorrupt(f"checksum mismatch ({len(data)} bytes, head says {head.size})")
        return decode_snapshot(data)
