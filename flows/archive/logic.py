"""Bytewax pieces of the archiving flow: a source resuming at the lake's offsets and the per-partition writer.

Per (table, partition) a :class:`ArchiveLogic` buffers rows and writes them to the lake when
``lake.flush_rows`` rows are waiting or the oldest has waited ``lake.flush_interval_s`` (a
timer, ``notify_at``, flushes a quiet partition). A flush writes the files and then commits
the partition's manifest with the next offset (``operators/lake/store.py``): a ``kill -9``
loses only the buffer, which the source reads again from the manifest's offset. After a flush,
small files are compacted and old dates dropped (``lake.retention_days``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.operators import StatefulBatchLogic
from confluent_kafka import OFFSET_BEGINNING

from flows.routing import parse_part_name
from flows.source import (
    GUARDED_CONSUMER_CONFIG,
    AssignedKafkaSource,
    GuardedPartition,
    OffsetReset,
    PartitionWake,
)
from operators.lake.schema import catalog_table, events_table
from operators.lake.store import LakePartition, read_manifest
from operators.offset_guard import OffsetPolicy
from operators.parse import EventRules, kafka_timestamp_s, parse_event
from operators.schema import Event
from operators.settings import LakeSettings

__all__ = ["LakeSource", "ArchiveRow", "to_archive_row", "ArchiveLogic", "ArchiveReport"]

log = logging.getLogger(__name__)

ArchiveRow = tuple[str, int, int, object]
"""``(table, partition, offset, payload)``: payload an ``Event``, ``(ts_s, key, value)`` of a
catalog message, or ``None`` for a message that is not archived (a dead letter)."""


class LakeSource(AssignedKafkaSource):
    """Bytewax's ``KafkaSource`` (``assign()``, no consumer group) over ``events`` and ``catalog``,
    each partition started at the ``next_offset`` of its lake manifest (the beginning when none).

    Partitions are read by the realtime flow's ``GuardedPartition``: through a broker outage the
    reader waits and reconnects, and a manifest offset beyond the log end (a recreated topic) is
    detected at start, after a lost connection and while idle, logged, counted and handled by
    ``stream.offset_beyond_end`` (an ``OffsetReset`` item tells the writer to move its manifest).
    """

    def __init__(self, brokers: list[str], topics: dict[str, str], lake_dir: str, *, batch_size: int = 2000,
                 offset_policy: OffsetPolicy = "earliest") -> None:
        super().__init__(brokers, list(topics), tail=True, starting_offset=OFFSET_BEGINNING, batch_size=batch_size,
                         raise_on_errors=False, add_config={"fetch.wait.max.ms": "20", "statistics.interval.ms": "0"})
        self.tables = topics  # topic -> lake table
        self.lake_dir = lake_dir
        self.offset_policy = offset_policy

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> GuardedPartition:
        idx, topic = parse_part_name(for_part)
        m = read_manifest(self.lake_dir, self.tables[topic], idx)
        log.info("lake: %s partition %s resumes at offset %s", topic, idx, m.next_offset if m else 0)
        return GuardedPartition(self._brokers, topic, idx, m.next_offset if m else resume_state,
                                self._batch_size, self.offset_policy, GUARDED_CONSUMER_CONFIG)


def to_archive_row(tables: dict[str, str], rules: EventRules,
                   msg: KafkaSourceMessage | KafkaError | PartitionWake | OffsetReset) -> tuple[str, ArchiveRow] | None:
    """Key a source message by ``"<table>:<partition>"`` for the stateful writer.

    ``events`` messages are parsed with the flow's own rules: a dead letter keeps its offset
    (the partition moves past it) but is not archived. An ``OffsetReset`` (a recreated topic) is
    passed on with offset -2; a ``PartitionWake`` and a Kafka client error are dropped (logged).
    """
    if isinstance(msg, PartitionWake):
        return None
    if isinstance(msg, OffsetReset):
        return f"{tables[msg.topic]}:{msg.partition}", (tables[msg.topic], msg.partition, -2, msg)
    if isinstance(msg, KafkaError):
        log.warning("kafka error in the archiver's source: %s", msg.err)
        return None
    table = tables[msg.topic]
    payload: object
    if table == "events":
        parsed = parse_event(msg.key, msg.value, rules, topic=msg.topic, partition=msg.partition, offset=msg.offset,
                             received_ts=kafka_timestamp_s(msg.timestamp))
        payload = parsed if isinstance(parsed, Event) else None
    else:
        ts_ms = msg.timestamp[1] if msg.timestamp and msg.timestamp[1] > 0 else time.time() * 1000
        payload = (ts_ms / 1000.0, msg.key, msg.value)
    return f"{table}:{msg.partition}", (table, msg.partition, msg.offset, payload)


@dataclass(frozen=True)
class ArchiveReport:
    table: str
    partition: int
    next_offset: int
    rows: int
    files: int
    write_s: float


class ArchiveLogic(StatefulBatchLogic[ArchiveRow, ArchiveReport, None]):
    """The single writer of one (table, partition) of the lake."""

    def __init__(self, lake: LakeSettings) -> None:
        self.lake = lake
        self.writer: LakePartition | None = None
        self.rows: list[ArchiveRow] = []
        self.next_offset = -1
        self.first_buffered_s: float | None = None

    def on_batch(self, values: list[ArchiveRow]) -> tuple[list[ArchiveReport], bool]:
        if self.writer is None:
            table, part = values[0][0], values[0][1]
            self.writer = LakePartition(self.lake.lake_dir, table, part)
            self.next_offset = self.writer.next_offset
        reports: list[ArchiveReport] = []
        for row in values:
            if isinstance(row[3], OffsetReset):  # a recreated log: archive what is buffered, then move on
                reports += self._flush()
                assert self.writer is not None
                self.writer.reset(row[3].to_offset)
                self.next_offset = row[3].to_offset
                log.error("lake: %s partition %d now resumes at offset %d (manifest offset %d was beyond the log "
                          "end %d)", row[0], row[1], row[3].to_offset, row[3].from_offset, row[3].log_end)
                continue
            if row[2] < self.next_offset:  # already archived (a re-delivered message)
                continue
            self.next_offset = row[2] + 1
            if row[3] is not None:
                self.rows.append(row)
            if self.first_buffered_s is None:
                self.first_buffered_s = time.monotonic()
        if len(self.rows) >= self.lake.flush_rows or self._due():
            reports += self._flush()
        return reports, StatefulBatchLogic.RETAIN

    def _due(self) -> bool:
        return self.first_buffered_s is not None and time.monotonic() - self.first_buffered_s >= self.lake.flush_interval_s

    def notify_at(self) -> datetime | None:
        if self.first_buffered_s is None:
            return None
        wait = self.first_buffered_s + self.lake.flush_interval_s - time.monotonic()
        return datetime.now(UTC) + timedelta(seconds=max(wait, 0.0))

    def on_notify(self) -> tuple[list[ArchiveReport], bool]:
        return (self._flush() if self._due() else []), StatefulBatchLogic.RETAIN

    def _flush(self) -> list[ArchiveReport]:
        w = self.writer
        if w is None or self.next_offset <= w.next_offset:
            self.first_buffered_s = None
            return []
        t0 = time.perf_counter()
        if w.table == "events":
            table = events_table([(p, o, e) for _, p, o, e in self.rows])  # type: ignore[misc]
        else:
            table = catalog_table([(p, o, *payload) for _, p, o, payload in self.rows])  # type: ignore[misc]
        files = w.append(table, self.next_offset)
        self.rows, self.first_buffered_s = [], None
        w.compact(self.lake.compact_min_files, self.lake.compact_small_rows)
        w.retain(self.lake.retention_days)
        return [ArchiveReport(w.table, w.partition, w.next_offset, table.num_rows, len(files),
                              time.perf_counter() - t0)]

    def snapshot(self) -> None:
        return None  # the manifest holds the offset; nothing for Bytewax to keep
