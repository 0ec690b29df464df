"""Bytewax stateful logic that owns one Kafka partition's RocksDB: apply, publish, commit.

Per batch: apply the messages (``operators.user_update``; changed users are marked pending
in the same write batch; new items' co-occurrence rows are published to ``item-links``), and when the debounce interval (``stream.rescore_interval_s``) has
passed, score every pending user once (``operators.score``); produce their top-N, the
partition's popular list, the dead letters and (at most every ``stream.window_publish_s``) the
changed pieces of windowed popularity (``operators/window_topic.py``), flush the producer, and only then commit the
state, the cleared markers and the next offset in one write batch. A timer (``notify_at``)
scores users left pending when no batch follows. So outputs are at-least-once (a crash between
flush and commit republishes the same lists, harmless on the compacted topic; pending markers
survive a crash, so nothing stays unscored) and state is exactly-once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from bytewax.operators import StatefulBatchLogic
from confluent_kafka import Producer
from rocksdict import WriteBatch

from flows.source import apply_offset_reset, split_at_resets
from operators.catalog_overlay import CatalogOverlay, encode_links, links_key, supports_links
from operators.delivery import Record, deliver_all
from operators.kafka import make_producer
from operators.model_version import ModelVersion, ModelWatcher
from operators.schema import DeadLetter, Event, encode_dead_letter
from operators.score import POPULAR_KEY_PREFIX, TopN, encode_topn, score_users
from operators.settings import Settings
from operators.sketch_state import SketchUpdater, supports_sketches
from operators.topic_table import TopicTable
from operators.user_embedding import EmbeddingUpdater
from operators.user_update import PartitionApplier
from operators.window_topic import encode_window_piece, window_key
from state.partition import PartitionDB, partition_path

__all__ = ["Parsed", "BatchReport", "WorkerResources", "PartitionLogic"]

log = logging.getLogger(__name__)

Parsed = tuple[int, int, Event | DeadLetter | None]  # (partition, offset, parsed message); None = wake-up


@dataclass(frozen=True)
class BatchReport:
    partition: int
    next_offset: int
    n_applied: int
    n_dead: int
    n_duplicates: int
    n_replayed: int
    n_users_scored: int
    apply_s: float
    score_s: float
    publish_s: float


@dataclass
class FlowStats:
    """What a partition publishes to the stats topic (``kafka.flow_stats_topic()``) for the API's /metrics.

    Applied, duplicate and dead-letter counts come from the partition's database (exactly once,
    they survive restarts); scoring time is this worker's since it opened the partition.
    """

    score_s_sum: float = 0.0
    score_batches: int = 0
    users_scored: int = 0
    published_ts: float = 0.0
    pending: bool = False  # something changed since the last publication

    def scored(self, seconds: float, n_users: int) -> None:
        self.score_s_sum += seconds
        self.score_batches += 1
        self.users_scored += n_users

    def encode(self, partition: int, applier: PartitionApplier, model_version: str | None, now: float) -> bytes:
        """``{"partition", "next_offset", "applied", "duplicates", "dead": {reason: n}, "score_s_sum",
        "score_batches", "users_scored", "model_version", "pid", "updated_ts"}`` as JSON."""
        return orjson.dumps({
            "partition": partition, "next_offset": applier.next_offset, "applied": applier.n_applied_total,
            "duplicates": applier.n_duplicates_total, "dead": applier.dead_counts(),
            "score_s_sum": self.score_s_sum, "score_batches": self.score_batches, "users_scored": self.users_scored,
            "model_version": model_version, "pid": os.getpid(), "updated_ts": now})


@dataclass
class WorkerResources:
    """Per-process things shared by the partitions a worker owns (created on first use)."""

    settings: Settings
    _producer: Producer | None = None
    _watcher: ModelWatcher | None = None
    _sketcher: SketchUpdater | None = None
    _embedder: EmbeddingUpdater | None = None
    _overlay: CatalogOverlay | None = None

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = make_producer(self.settings.kafka.brokers)
        return self._producer

    @property
    def watcher(self) -> ModelWatcher:
        if self._watcher is None:
            self._watcher = ModelWatcher(self.settings.stream.model_dir)
        return self._watcher

    @property
    def overlay(self) -> CatalogOverlay:
        """New catalog items for scoring (starts the ``catalog`` reader on first use)."""
        if self._overlay is None:
            k = self.settings.kafka
            self._overlay = CatalogOverlay(
                TopicTable(k.brokers, k.catalog_topic, orjson.loads, reader="flow").start(),
                links=TopicTable(k.brokers, k.item_links_topic, orjson.loads, reader="flow").start())
        return self._overlay

    def known_items(self) -> Mapping[str, int] | None:
        """The trained version's item index when its model codes new items by M′·Q, else None."""
        version = self.watcher.current()
        return version.item_index if version is not None and supports_links(version) else None

    def embedder(self) -> EmbeddingUpdater | None:
        """The M′·Q updater of the trained version, when it carries Cleora item vectors."""
        version = self.watcher.current()
        if version is None or version.item_vectors is None:
            return None
        if self._embedder is None or self._embedder.version is not version:
            self._embedder = EmbeddingUpdater(version)
        return self._embedder

    def model(self) -> tuple[ModelVersion | None, SketchUpdater | None]:
        """The version to score with and, for EMDE, the sketch updater of the trained version.

        For EMDE, scoring sees the catalog's new items (``operators.catalog_overlay``) while the
        sketches are folded with the trained version only, so state does not depend on when the
        catalog was read.
        """
        version = self.watcher.current()
        if not supports_sketches(version):
            return version, None
        if self._sketcher is None or self._sketcher.version is not version:
            self._sketcher = SketchUpdater(version)  # type: ignore[arg-type]
        return self.overlay.apply(version), self._sketcher


class PartitionLogic(StatefulBatchLogic[Parsed, BatchReport, None]):
    """The single writer of one partition's database (key of the stateful step = partition)."""

    def __init__(self, res: WorkerResources) -> None:
        self.res = res
        self.applier: PartitionApplier | None = None
        self.partition = -1
        self.last_scored_s = 0.0  # time.monotonic() of the last scoring
        self.popular_published_s = 0.0  # time.time() the popular list was last published
        self.window_published_s = 0.0  # time.monotonic() windowed popularity was last published
        self.stats = FlowStats()  # this worker's scoring time, published with the partition's counters

    def _open(self, partition: int) -> PartitionApplier:
        s = self.res.settings
        db = PartitionDB(partition_path(s.stream.state_dir, s.kafka.events_topic, partition))
        self.partition = partition
        weights = {t.name: t.weight for t in s.event_types}
        log.info("opened state of partition %d at offset %s", partition, db.stored_offset())
        st = s.stream
        return PartitionApplier(db, weights, st.history_len, st.half_life_s, st.links_window, st.links_max_gap_s,
                                st.links_per_item, dedupe_window_s=st.dedupe_window_s,
                                dedupe_max_ids=st.dedupe_max_ids, window_bucket_s=s.api.popularity_bucket_s,
                                window_horizon_s=s.api.popularity_horizon_s, window_shards=st.window_shards)

    def on_batch(self, values: list[Parsed]) -> tuple[list[BatchReport], bool]:
        if self.applier is None:
            self.applier = self._open(values[0][0])
        reports: list[BatchReport] = []
        for segment, reset in split_at_resets(values):  # a recreated log: commit its offset first
            if segment:
                reports += self._on_messages(segment)
            if reset is not None:
                apply_offset_reset(self.applier.db, reset)
                self.applier.next_offset = reset.to_offset
        return reports, StatefulBatchLogic.RETAIN

    def _on_messages(self, values: list[Parsed]) -> list[BatchReport]:
        assert self.applier is not None
        msgs = sorted(((o, m) for _, o, m in values if m is not None), key=lambda x: x[0])
        if not msgs:  # a wake-up: a restarted partition rescores what a crash left pending
            return self.on_notify()[0]
        t0 = time.perf_counter()
        _, sketcher = self.res.model()
        applied = self.applier.apply(msgs, sketcher, self.res.embedder(), self.res.known_items())
        t1 = time.perf_counter()
        if applied.next_offset == self.applier.next_offset:
            return []
        due = time.monotonic() - self.last_scored_s >= self.res.settings.stream.rescore_interval_s
        lists = self._score(applied.batch, applied.max_event_ts) if due else []
        t2 = time.perf_counter()
        if lists:
            self.stats.scored(t2 - t1, len(lists))
        self._publish(lists, applied.dead, applied.links, self._window_records(applied.batch))
        self.applier.commit(applied)
        self._publish_stats()
        t3 = time.perf_counter()
        return [BatchReport(self.partition, applied.next_offset, applied.n_applied, len(applied.dead),
                            applied.n_duplicates, applied.n_replayed, len(lists), t1 - t0, t2 - t1, t3 - t2)]

    def _score(self, batch: WriteBatch, event_ts: float) -> list[TopN]:
        """Score every user changed since the last scoring (the debounce), once; stage their markers' removal."""
        assert self.applier is not None
        s = self.res.settings.stream
        version, sketcher = self.res.model()
        now = time.time()
        self.last_scored_s = time.monotonic()
        pop = self.applier.popularity.top(s.topn, event_ts or now)
        lists = score_users(self.applier.take_dirty(batch), version, pop, s.topn, now, sketcher)
        if now - self.popular_published_s >= 1.0:
            key = f"{POPULAR_KEY_PREFIX}{self.partition}"
            lists.append(TopN(user_id=key, items=pop[0], scores=pop[1].tolist(), source="popular",
                              model_version=None, updated_ts=now))
            self.popular_published_s = now
        return lists

    def _window_records(self, batch: WriteBatch) -> list[Record]:
        """The windowed-popularity pieces changed since they were last published, when
        ``stream.window_publish_s`` has passed (their markers' removal is staged in ``batch``)."""
        assert self.applier is not None
        window = self.applier.window
        if not window.unpublished or time.monotonic() - self.window_published_s < \
                self.res.settings.stream.window_publish_s:
            return []
        self.window_published_s = time.monotonic()
        topic = self.res.settings.kafka.window_topic()
        return [(topic, window_key(self.partition, b, shard),
                 None if weights is None else encode_window_piece(self.partition, b, shard, window.clock, weights))
                for (b, shard), weights in sorted(window.take_unpublished(batch).items())]

    def notify_at(self) -> datetime | None:
        """Wake up when pending users are due for rescoring (no new batch may come soon), or when
        unpublished windowed popularity or stats are due."""
        if self.applier is None:
            return None
        dues = []
        if self.applier.dirty:
            dues.append(self.last_scored_s + self.res.settings.stream.rescore_interval_s - time.monotonic())
        if self.applier.window.unpublished:
            dues.append(self.window_published_s + self.res.settings.stream.window_publish_s - time.monotonic())
        if self.stats.pending:
            dues.append(self.stats.published_ts + 1.0 - time.time())
        if not dues:
            return None
        return datetime.now(UTC) + timedelta(seconds=max(min(dues), 0.0))

    def on_notify(self) -> tuple[list[BatchReport], bool]:
        if self.applier is None:
            return [], StatefulBatchLogic.RETAIN
        batch = self.applier.db.new_batch()
        window = self._window_records(batch)
        if not self.applier.dirty and not window:
            self._publish_stats(changed=False)
            return [], StatefulBatchLogic.RETAIN
        lists: list[TopN] = []
        if self.applier.dirty:
            t0 = time.perf_counter()
            lists = self._score(batch, 0.0)
            self.stats.scored(time.perf_counter() - t0, len(lists))
        self._publish(lists, [], None, window)
        self.applier.db.commit(batch, self.applier.next_offset)
        self._publish_stats()
        return [], StatefulBatchLogic.RETAIN

    def _publish_stats(self, changed: bool = True) -> None:
        """After a commit: the partition's counters to the stats topic, at most once a second (when
        not yet due, ``notify_at`` wakes the partition later, so the last counters get out too).
        Not awaited: delivery rides on the producer's next flush (metrics, not state)."""
        now = time.time()
        if not changed and not self.stats.pending:
            return
        self.stats.pending = True
        if self.applier is None or now - self.stats.published_ts < 1.0:
            return
        self.stats.published_ts, self.stats.pending = now, False
        version, _ = self.res.model()
        value = self.stats.encode(self.partition, self.applier, None if version is None else version.version, now)
        self.res.producer.produce(self.res.settings.kafka.flow_stats_topic(), key=str(self.partition).encode(),
                                  value=value)
        self.res.producer.poll(0)

    def _publish(self, lists: list[TopN], dead: list[DeadLetter],
                 links: dict[str, dict[str, int] | None] | None = None, window: list[Record] | None = None) -> None:
        """Produce the lists, dead letters, changed new-item links and windowed-popularity pieces,
        and wait for delivery (before any commit)."""
        if not lists and not dead and not links and not window:
            return
        k = self.res.settings.kafka
        records: list[Record] = [(k.topn_topic, t.user_id.encode(), encode_topn(t)) for t in lists]
        records += [(k.dead_topic, d.reason.encode(), encode_dead_letter(d)) for d in dead]
        records += [(k.item_links_topic, links_key(item_id, self.partition),
                     None if counts is None else encode_links(item_id, counts))  # None: tombstone
                    for item_id, counts in (links or {}).items()]
        records += window or []
        # through a broker outage: wait (nothing is committed before the outputs are acknowledged)
        deliver_all(self.res.producer, records, what=f"outputs of partition {self.partition}")

    def snapshot(self) -> None:
        return None  # state lives in RocksDB with its offset; nothing for Bytewax to keep
