"""Bytewax stateful logic that owns one partition's analytics database: join, publish, commit.

Per batch: ``operators.analytics_apply`` stages the join's changes; the changed rows (absolute
values) go to the compacted ``analytics`` topic; after the producer has flushed, the batch is
committed with the next offset in one RocksDB write. Counters are exactly-once, the published
rows at-least-once (a crash between flush and commit republishes the same absolute values).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from bytewax.operators import StatefulBatchLogic
from confluent_kafka import Producer

from flows.source import apply_offset_reset, split_at_resets
from operators.analytics_apply import AnalyticsApplier
from operators.analytics_join import JoinRules
from operators.analytics_topic import encode_record, record_key
from operators.delivery import deliver_all
from operators.kafka import make_producer
from operators.schema import DeadLetter, Event
from operators.settings import Settings
from state.partition import PartitionDB, partition_path

__all__ = ["Parsed", "AnalyticsReport", "AnalyticsResources", "AnalyticsLogic", "analytics_state_dir",
           "join_rules"]

log = logging.getLogger(__name__)

Parsed = tuple[int, int, Event | DeadLetter]  # (partition, offset, parsed message)


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

    def _open(self, partition: int) -> AnalyticsApplier:
        s = self.res.settings
        db = PartitionDB(partition_path(analytics_state_dir(s), s.kafka.events_topic, partition))
        log.info("opened analytics state of partition %d at offset %s", partition, db.stored_offset())
        return AnalyticsApplier(db, partition, join_rules(s), s.analytics.top_items)

    def on_batch(self, values: list[Parsed]) -> tuple[list[AnalyticsReport], bool]:
        if self.applier is None:
            self.applier = self._open(values[0][0])
        reports: list[AnalyticsReport] = []
        for segment, reset in split_at_resets(values):  # a recreated log: commit its offset first
            if segment:
                reports += self._on_messages(segment)
            if reset is not None:
                apply_offset_reset(self.applier.db, reset)
                self.applier.next_offset = reset.to_offset
        return reports, StatefulBatchLogic.RETAIN

    def _on_messages(self, values: list[Parsed]) -> list[AnalyticsReport]:
        a = self.applier
        assert a is not None
        applied = a.apply(sorted(((o, m) for _, o, m in values), key=lambda x: x[0]))
        if applied.next_offset == a.next_offset:
            return []
        topic = self.res.settings.analytics.topic
        deliver_all(self.res.producer, [(topic, record_key(r), encode_record(r)) for r in applied.rows],
                    what=f"analytics rows of partition {a.partition}")  # waits through a broker outage
        a.commit(applied)
        return [AnalyticsReport(a.partition, applied.next_offset, applied.n_applied, applied.n_dead,
                                len(applied.rows), applied.skipped)]

    def snapshot(self) -> None:
        return None  # state lives in RocksDB with its offset; nothing for Bytewax to keep
