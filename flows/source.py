"""Kafka input that resumes each partition at the offset stored in that partition's RocksDB."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from bytewax.inputs import StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka import KafkaError as ConfluentKafkaError
from prometheus_client import Counter

from flows.routing import parse_part_name, partition_key, source_part_name
from operators.kafka import client_config, topic_partitions
from operators.offset_guard import CONNECTION_LOST_CODES, OffsetGuard, OffsetPolicy
from operators.parse import EventRules, kafka_timestamp_s, parse_event
from operators.schema import DeadLetter, Event
from state.errors import PartitionOwned
from state.partition import PartitionDB, check_not_owned, partition_path, read_stored_offset

__all__ = ["AssignedKafkaSource", "ResumingKafkaSource", "GuardedPartition", "GUARDED_CONSUMER_CONFIG", "PartitionWake", "OffsetReset", "parse_by_partition",
           "ReportSink", "FLOW_OFFSET_BEYOND_END", "split_at_resets", "apply_offset_reset"]

log = logging.getLogger(__name__)


FLOW_OFFSET_BEYOND_END = Counter(
    "fusionrec_flow_offset_beyond_log_end", "Partitions whose stored offset was beyond the log end (topic recreated)",
    ["topic", "policy"])
"""In the process-wide registry, beside Bytewax's own metrics (its dataflow API serves them at
``/metrics`` with ``BYTEWAX_DATAFLOW_API_ENABLED=true``); the durable count is in each partition's
RocksDB (``meta:offset_resets``)."""


GUARDED_CONSUMER_CONFIG = {"fetch.wait.max.ms": "20", "statistics.interval.ms": "0",
                           "topic.metadata.refresh.interval.ms": "5000", "enable.partition.eof": "false"}
"""Consumer settings of a ``GuardedPartition`` (the realtime and the archiving flow)."""


@dataclass(frozen=True)
class PartitionWake:
    """First item of every (re)started source partition: lets the partition's logic start even if
    no new message comes (e.g. to rescore users a crash left pending)."""

    partition: int


@dataclass(frozen=True)
class OffsetReset:
    """The source found ``from_offset`` beyond the log end and resumes at ``to_offset`` (by the
    ``stream.offset_beyond_end`` policy): the partition's logic commits the new offset before
    it applies anything read after it."""

    partition: int
    from_offset: int
    to_offset: int
    log_end: int
    topic: str = ""


class GuardedPartition(StatefulSourcePartition):
    """One Kafka partition read with ``assign()`` from the stored offset, checked against the log end.

    Emits a ``PartitionWake`` first, then batches of ``KafkaSourceMessage``; an ``OffsetReset``
    precedes the messages of a recreated log. Connection loss is not an error here: librdkafka
    reconnects, and the positions are checked again once the broker answers.
    """

    def __init__(self, brokers: list[str], topic: str, partition: int, start: int | None, batch_size: int,
                 policy: OffsetPolicy, add_config: dict[str, str]) -> None:
        self.topic, self.partition, self.batch_size, self.policy = topic, partition, batch_size, policy
        self.guard = OffsetGuard(",".join(brokers), topic, policy)
        cfg: dict[str, object] = {**client_config(",".join(brokers)), "group.id": "BYTEWAX_IGNORED",
                                  "enable.auto.commit": "false", "error_cb": self._on_error, **add_config}
        self.consumer = Consumer(cfg)
        self.next_offset = start if start is not None else 0
        self.consumer.assign([TopicPartition(topic, partition, start if start is not None else OFFSET_BEGINNING)])
        self.woken = False
        self.last_message_s = time.monotonic()
        self.last_timestamp_ms: int | None = None  # Kafka timestamp of the last record read (recreated-log check)

    def _on_error(self, err: ConfluentKafkaError) -> None:
        if err.name() in CONNECTION_LOST_CODES:
            self.guard.connection_lost()

    def next_batch(self) -> list:
        if not self.woken:
            self.woken = True
            return [PartitionWake(self.partition)]
        out: list = []
        idle = time.monotonic() - self.last_message_s >= self.guard.check_every_s
        if self.guard.due(idle):
            last = {self.partition: self.last_timestamp_ms} if self.last_timestamp_ms is not None else None
            for b in self.guard.check({self.partition: self.next_offset}, last):
                FLOW_OFFSET_BEYOND_END.labels(self.topic, self.policy).inc()
                if self.policy == "fail":
                    raise RuntimeError(
                        f"stored offset {b.next_offset} of {self.topic}[{self.partition}] is beyond the log end "
                        f"{b.log_end} and stream.offset_beyond_end = 'fail': restore the topic, or set the policy "
                        "to 'earliest'/'latest' (or remove the partition's state) to go on")
                self.consumer.assign([TopicPartition(self.topic, self.partition, b.resume_at)])
                out.append(OffsetReset(self.partition, b.next_offset, b.resume_at, b.log_end, self.topic))
                self.next_offset = b.resume_at
        if self.guard.suspect:  # at start or after a lost connection: nothing is read before a check passed
            return out
        for m in self.consumer.consume(self.batch_size, 0.001):
            err = m.error()
            if err is not None:
                if err.code() != ConfluentKafkaError._PARTITION_EOF:
                    log.warning("kafka error in source %s[%d]: %s", self.topic, self.partition, err)
                continue
            out.append(KafkaSourceMessage(key=m.key(), value=m.value(), topic=m.topic(), headers=m.headers() or [],
                                          latency=m.latency(), offset=m.offset(), partition=m.partition(),
                                          timestamp=m.timestamp()))
            self.next_offset = m.offset() + 1
            self.last_message_s = time.monotonic()
            self.last_timestamp_ms = m.timestamp()[1]
        return out

    def snapshot(self) -> int:
        return self.next_offset

    def close(self) -> None:
        self.consumer.close()


class AssignedKafkaSource(KafkaSource):
    """Bytewax's ``KafkaSource`` whose partition listing gets only the bootstrap servers.

    The listing uses an ``AdminClient``, a producer-type handle in librdkafka: given the consumer
    properties of ``add_config`` (``fetch.wait.max.ms``) it logs "is a consumer property and will
    be ignored by this producer instance" in every flow log. Consumers still get ``add_config``.
    Partitions are named by :func:`flows.routing.source_part_name`, so partition ``p`` of the
    first topic is read by worker ``p % worker_count``, where its stateful work is keyed to.
    """

    def list_parts(self) -> list[str]:
        brokers = ",".join(self._brokers)
        return [source_part_name(p, topic, main=i == 0) for i, topic in enumerate(self._topics)
                for p in topic_partitions(brokers, topic)]


class ResumingKafkaSource(AssignedKafkaSource):
    """Bytewax's ``KafkaSource`` (``assign()``, no consumer group), started at our stored offsets.

    The offset committed atomically with a partition's state is the single source of truth;
    Bytewax's own recovery store is not needed. A partition without a database starts at the
    beginning of the topic. A stored offset beyond the log end (the topic was recreated, e.g. by
    an empty broker) is detected at start and after a lost connection, logged as an error,
    counted, and handled by ``offset_policy`` (``stream.offset_beyond_end``).
    """

    def __init__(self, brokers: list[str], topic: str, state_dir: Path, *, tail: bool = True,
                 batch_size: int = 2000, also: dict[str, bytes] | None = None,
                 offset_policy: OffsetPolicy = "earliest") -> None:
        """``also``: more topics read alongside ``topic`` (same partition numbers), each resumed at the
        offset stored under its meta key in the same partition's database."""
        self.also = dict(also or {})
        super().__init__(brokers, [topic, *self.also], tail=tail, starting_offset=OFFSET_BEGINNING,
                         batch_size=batch_size, raise_on_errors=False,
                         add_config={"fetch.wait.max.ms": "20", "statistics.interval.ms": "0"})
        self.state_dir = Path(state_dir)
        self.topic = topic
        self.offset_policy = offset_policy

    def build_part(self, step_id: str, for_part: str, resume_state: int | None):  # noqa: ANN201
        part, topic = parse_part_name(for_part)
        if topic == self.topic:  # one writer per partition database: refuse at once, naming the owner's pid
            try:
                check_not_owned(partition_path(self.state_dir, self.topic, part))
            except PartitionOwned as exc:
                log.error("%s", exc)  # one clear line before Bytewax's traceback
                raise
        stored = read_stored_offset(self.state_dir, self.topic, part, **(
            {"key": self.also[topic]} if topic in self.also else {}))
        log.info("partition %d of %s resumes at offset %s", part, topic, stored)
        return GuardedPartition(self._brokers, topic, part, stored if stored is not None else resume_state,
                                self._batch_size, self.offset_policy, GUARDED_CONSUMER_CONFIG)


def parse_by_partition(rules: EventRules, msg: KafkaSourceMessage | KafkaError | PartitionWake | OffsetReset, *,
                       wake: bool = True, layout: tuple[int, int] = (1, 1)
                       ) -> tuple[str, tuple[int, int, Event | DeadLetter | OffsetReset | None]] | None:
    """Key a source item by its Kafka partition: ``(key, (partition, offset, Event | DeadLetter))``.

    The key is :func:`flows.routing.partition_key` of the partition for the Bytewax ``layout``
    ``(processes, workers_per_process)``: partitions spread over processes, one worker each.

    A ``PartitionWake`` becomes ``(partition, (partition, -1, None))`` when ``wake`` (else it is
    dropped); an ``OffsetReset`` ``(partition, (partition, -2, reset))``; a Kafka client error is
    logged and dropped (it is not an event).
    """
    if isinstance(msg, PartitionWake):
        return (partition_key(msg.partition, *layout), (msg.partition, -1, None)) if wake else None
    if isinstance(msg, OffsetReset):
        return partition_key(msg.partition, *layout), (msg.partition, -2, msg)
    if isinstance(msg, KafkaError):
        log.warning("kafka error in source: %s", msg.err)
        return None
    parsed = parse_event(msg.key, msg.value, rules, topic=msg.topic, partition=msg.partition, offset=msg.offset,
                         received_ts=kafka_timestamp_s(msg.timestamp))
    return partition_key(msg.partition, *layout), (msg.partition, msg.offset, parsed)


def split_at_resets(values: list[tuple[int, int, object]]) -> list[tuple[list, OffsetReset | None]]:
    """Split a stateful batch ``[(partition, offset, item)]`` at its ``OffsetReset`` items, in
    arrival order: ``[(items before the reset, reset), ..., (the rest, None)]``."""
    out: list[tuple[list, OffsetReset | None]] = []
    segment: list = []
    for v in values:
        if isinstance(v[2], OffsetReset):
            out.append((segment, v[2]))
            segment = []
        else:
            segment.append(v)
    out.append((segment, None))
    return out


def apply_offset_reset(db: PartitionDB, reset: OffsetReset, meta_key: bytes | None = None) -> int:
    """Commit the reset's offset in the partition's database (under ``meta_key`` for a topic read
    alongside the main one); returns the partition's reset count."""
    n = db.reset_offset(reset.to_offset, meta_key)
    log.error("partition %d of %s now resumes at offset %d (stored %d was beyond the log end %d; reset #%d)",
              reset.partition, reset.topic, reset.to_offset, reset.from_offset, reset.log_end, n)
    return n


class _LogReports(StatelessSinkPartition[tuple[str, object]]):
    def write_batch(self, items: list[tuple[str, object]]) -> None:
        for _, report in items:
            log.debug("%r", report)


class ReportSink(DynamicSink[tuple[str, object]]):
    """Per-batch reports of a stateful step, logged at debug level."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LogReports:
        return _LogReports()

