"""Kafka input that resumes each partition at the offset stored in that partition's RocksDB."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from bytewax.inputs import StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import OFFSET_BEGINNING

from operators.kafka import topic_partitions
from operators.parse import EventRules, kafka_timestamp_s, parse_event
from operators.schema import DeadLetter, Event
from state.errors import PartitionOwned
from state.partition import check_not_owned, partition_path, read_stored_offset

__all__ = ["AssignedKafkaSource", "ResumingKafkaSource", "PartitionWake", "parse_by_partition", "ReportSink"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionWake:
    """First item of every (re)started source partition: lets the partition's logic start even if
    no new message comes (e.g. to rescore users a crash left pending)."""

    partition: int


class _WakingPartition(StatefulSourcePartition):
    def __init__(self, inner: StatefulSourcePartition, partition: int) -> None:
        self.inner, self.partition, self.woken = inner, partition, False

    def next_batch(self) -> list:
        if not self.woken:
            self.woken = True
            return [PartitionWake(self.partition)]
        return self.inner.next_batch()

    def next_awake(self):  # noqa: ANN201
        return self.inner.next_awake()

    def snapshot(self):  # noqa: ANN201
        return self.inner.snapshot()

    def close(self) -> None:
        self.inner.close()


class AssignedKafkaSource(KafkaSource):
    """Bytewax's ``KafkaSource`` whose partition listing gets only the bootstrap servers.

    The listing uses an ``AdminClient``, a producer-type handle in librdkafka: given the consumer
    properties of ``add_config`` (``fetch.wait.max.ms``) it logs "is a consumer property and will
    be ignored by this producer instance" in every flow log. Consumers still get ``add_config``.
    """

    def list_parts(self) -> list[str]:
        brokers = ",".join(self._brokers)
        return [f"{p}-{topic}" for topic in self._topics for p in topic_partitions(brokers, topic)]


class ResumingKafkaSource(AssignedKafkaSource):
    """Bytewax's ``KafkaSource`` (``assign()``, no consumer group), started at our stored offsets.

    The offset committed atomically with a partition's state is the single source of truth;
    Bytewax's own recovery store is not needed. A partition without a database starts at the
    beginning of the topic.
    """

    def __init__(self, brokers: list[str], topic: str, state_dir: Path, *, tail: bool = True,
                 batch_size: int = 2000, also: dict[str, bytes] | None = None) -> None:
        """``also``: more topics read alongside ``topic`` (same partition numbers), each resumed at the
        offset stored under its meta key in the same partition's database."""
        self.also = dict(also or {})
        super().__init__(brokers, [topic, *self.also], tail=tail, starting_offset=OFFSET_BEGINNING,
                         batch_size=batch_size, raise_on_errors=False,
                         add_config={"fetch.wait.max.ms": "20", "statistics.interval.ms": "0"})
        self.state_dir = Path(state_dir)
        self.topic = topic

    def build_part(self, step_id: str, for_part: str, resume_state: int | None):  # noqa: ANN201
        idx, topic = for_part.split("-", 1)
        part = int(idx)
        if topic == self.topic:  # one writer per partition database: refuse at once, naming the owner's pid
            try:
                check_not_owned(partition_path(self.state_dir, self.topic, part))
            except PartitionOwned as exc:
                log.error("%s", exc)  # one clear line before Bytewax's traceback
                raise
        stored = read_stored_offset(self.state_dir, self.topic, part, **(
            {"key": self.also[topic]} if topic in self.also else {}))
        log.info("partition %d of %s resumes at offset %s", part, topic, stored)
        inner = super().build_part(step_id, for_part, stored if stored is not None else resume_state)
        return _WakingPartition(inner, part)


def parse_by_partition(rules: EventRules, msg: KafkaSourceMessage | KafkaError | PartitionWake, *,
                       wake: bool = True) -> tuple[str, tuple[int, int, Event | DeadLetter | None]] | None:
    """Key a source item by its Kafka partition: ``(partition, (partition, offset, Event | DeadLetter))``.

    A ``PartitionWake`` becomes ``(partition, (partition, -1, None))`` when ``wake`` (else it is
    dropped); a Kafka client error is logged and dropped (it is not an event).
    """
    if isinstance(msg, PartitionWake):
        return (str(msg.partition), (msg.partition, -1, None)) if wake else None
    if isinstance(msg, KafkaError):
        log.warning("kafka error in source: %s", msg.err)
        return None
    parsed = parse_event(msg.key, msg.value, rules, topic=msg.topic, partition=msg.partition, offset=msg.offset,
                         received_ts=kafka_timestamp_s(msg.timestamp))
    return str(msg.partition), (msg.partition, msg.offset, parsed)


class _LogReports(StatelessSinkPartition[tuple[str, object]]):
    def write_batch(self, items: list[tuple[str, object]]) -> None:
        for _, report in items:
            log.debug("%r", report)


class ReportSink(DynamicSink[tuple[str, object]]):
    """Per-batch reports of a stateful step, logged at debug level."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LogReports:
        return _LogReports()

