"""Bytewax stateful logic that owns one partition's analytics database: join, publish, commit.

Input: partition ``p`` of ``events`` and partition ``p`` of the server-only ``served`` topic
(same key, so the same users). Served lists are registered as they are read; an event waits
until the served lists that can be its last touch have been read (the newest served list's
``ts`` is past its attribution time plus a slack: ``operators.attribution.served_lists_read``),
at most ``analytics.served_wait_s`` of wall time, so last-touch attribution does not depend on
how the two topics' reads interleave (a restart after ``kill -9`` counts the same).

Per batch: ``operators.analytics.apply`` stages the join's changes; the changed rows (absolute
values) go to the compacted ``analytics`` topic; after the producer has flushed, the batch is
committed with both next offsets in one RocksDB write (the events offset stops at the first
event still waiting: it is re-read after a crash). Counters are exactly-once, the published
rows at-least-once (a crash between flush and commit republishes the same absolute values).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bytewax.operators import StatefulBatchLogic
from confluent_kafka import Producer

from flows.source import OffsetReset, apply_offset_reset
from operators.analytics.apply import SERVED_OFFSET, AnalyticsApplier
from operators.analytics.join import JoinRules
from operators.analytics.topic import encode_record, record_key
from operators.attribution import served_lists_read
from operators.delivery import deliver_all
from operators.kafka import make_producer
from operators.schema import DeadLetter, Event
from operators.settings import Settings
from state.partition import PartitionDB, partition_path

__all__ = ["Parsed", "AnalyticsReport", "AnalyticsResources", "AnalyticsLogic", "analytics_state_dir",
           "join_rules"]

log = logging.getLogger(__name__)

Parsed = tuple[int, int, Event | DeadLetter, bool, float | None]
"""(partition, offset, parsed message, from the served topic, the record's Kafka timestamp in epoch s)"""


def analytics_state_dir(settings: Settings) -> Path:
    """``state_dir/analytics``: the analytics flow's databases, apart from the real-time flow's."""
    return Path(settings.stream.state_dir) / "analytics"


def join_rules(settings: Settings) -> JoinRules:
    a = settings.analytics
    return JoinRules(bucket_s=a.bucket_s, window_s=a.attribution_window_s,
                     campaign_windows_s=dict(a.campaign_windows_s), default_goal=a.default_goal,
                     cart_types=frozenset(a.cart_types), order_types=frozenset(a.order_types))


@dataclass(frozen=True)
class AnalyticsReport:
    partition: int
    next_offset: int
    n_applied: int
    n_dead: int
    n_rows: int
    skipped: dict[str, int]


@dataclass
class AnalyticsResources:
    """Per-process things shared by the partitions a worker owns (the producer, created on first use)."""

    settings: Settings
    _producer: Producer | None = field(default=None)

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = make_producer(self.settings.kafka.brokers)
        return self._producer


class AnalyticsLogic(StatefulBatchLogic[Parsed, AnalyticsReport, None]):
    """The single writer of one partition's analytics database (key of the stateful step = partition)."""

    def __init__(self, res: AnalyticsResources) -> None:
        self.res = res
        self.applier: AnalyticsApplier | None = None
        # (offset, message, monotonic time read, Kafka timestamp of the record)
        self.held: list[tuple[int, Event | DeadLetter, float, float | None]] = []

    def _open(self, partition: int) -> AnalyticsApplier:
        s = self.res.settings
        db = PartitionDB(partition_path(analytics_state_dir(s), s.kafka.events_topic, partition))
        log.info("opened analytics state of partition %d at offset %s", partition, db.stored_offset())
        return AnalyticsApplier(db, partition, join_rules(s), s.analytics.top_items)

    def on_batch(self, values: list[Parsed]) -> tuple[list[AnalyticsReport], bool]:
        if self.applier is None:
            self.applier = self._open(values[0][0])
        for _, _, reset, served_topic, _ in values:  # a recreated log: commit its new offset first
            if isinstance(reset, OffsetReset):
                self._reset(reset, served_topic)
        values = [v for v in values if not isinstance(v[2], OffsetReset)]
        now = time.monotonic()
        last = self.held[-1][0] if self.held else self.applier.next_offset - 1
        self.held += [(o, m, now, r) for o, m, r in sorted(((o, m, r) for _, o, m, srv, r in values if not srv),
                                                            key=lambda x: x[0]) if o > last]
        served = sorted(((o, m) for _, o, m, srv, _ in values if srv), key=lambda x: x[0])
        return self._apply(served)

    def _reset(self, reset: OffsetReset, served_topic: bool) -> None:
        """Resume a recreated topic's partition at ``reset.to_offset`` (committed at once)."""
        a = self.applier
        assert a is not None
        if served_topic:
            apply_offset_reset(a.db, reset, SERVED_OFFSET)
            a.served_next_offset = reset.to_offset
        else:
            apply_offset_reset(a.db, reset)
            a.next_offset = reset.to_offset
            if self.held:  # read from the old log, never applied: that log is gone
                log.error("partition %d: %d events read from the old log before it was recreated are dropped",
                          reset.partition, len(self.held))
                self.held.clear()

    def notify_at(self) -> datetime | None:
        """When the oldest waiting event stops waiting for served lists."""
        if not self.held:
            return None
        wait = self.res.settings.analytics.served_wait_s - (time.monotonic() - self.held[0][2])
        return datetime.now(UTC) + timedelta(seconds=max(0.0, wait))

    def on_notify(self) -> tuple[list[AnalyticsReport], bool]:
        return self._apply([])

    def _release(self, served_wm: float) -> tuple[list[tuple[int, Event | DeadLetter]], dict[int, float]]:
        """The waiting events, oldest first, up to the first whose lists may not all have been read, and
        the Kafka timestamps of those that have one (offset -> epoch s)."""
        deadline = time.monotonic() - self.res.settings.analytics.served_wait_s
        n = 0
        for _, m, read_at, received in self.held:
            if isinstance(m, Event) and not served_lists_read(m, received, served_wm) and read_at > deadline:
                break
            n += 1
        out = [(o, m) for o, m, _, _ in self.held[:n]]
        received_ts = {o: r for o, _, _, r in self.held[:n] if r is not None}
        del self.held[:n]
        return out, received_ts

    def _apply(self, served: list[tuple[int, Event | DeadLetter]]) -> tuple[list[AnalyticsReport], bool]:
        a = self.applier
        if a is None:
            return [], StatefulBatchLogic.RETAIN
        wm = max([a.served_wm] + [m.ts for o, m in served if isinstance(m, Event) and o >= a.served_next_offset])
        released, received_ts = self._release(wm)
        applied = a.apply(released, served, received_ts)
        if applied.next_offset == a.next_offset and applied.served_next_offset == a.served_next_offset:
            return [], StatefulBatchLogic.RETAIN
        topic = self.res.settings.analytics.topic
        deliver_all(self.res.producer, [(topic, record_key(r), encode_record(r)) for r in applied.rows],
                    what=f"analytics rows of partition {a.partition}")  # waits through a broker outage
        a.commit(applied)
        return [AnalyticsReport(a.partition, applied.next_offset, applied.n_applied, applied.n_dead,
                                len(applied.rows), applied.skipped)], StatefulBatchLogic.RETAIN

    def snapshot(self) -> None:
        return None  # state lives in RocksDB with its offset; nothing for Bytewax to keep
