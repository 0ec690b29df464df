"""What the API's handlers share, built once in the app's lifespan: readers, producer, metrics."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import orjson
from confluent_kafka import KafkaException, Producer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from api.campaigns.registry import CampaignRegistry
from api.candidate_cache import CandidateCache
from api.catalog import CatalogView
from api.durable_producer import DurableProducer
from api.feedback import FeedbackFold
from api.feedback_reader import FeedbackReader
from api.loop_lag import LAG_BUCKETS_S
from api.optimizer import ThompsonOptimizer
from api.rate_limit import EventRateLimiter
from api.request_ids import RequestSigner, load_request_secret
from api.snapshot_topic import SnapshotTopic
from api.topn_checkpoint import TopnCheckpoints
from api.window_popularity import PopularitySnapshots, WindowPopularity
from operators.attribution import ANONYMOUS_USER, REQUEST_TYPE, Impression
from operators.catalog_overlay import CatalogModelWatcher, CatalogOverlay
from operators.kafka import check_co_partitioned
from operators.model_version import ModelWatcher
from operators.offset_guard import BeyondLogEnd
from operators.parse import EventRules
from operators.schema import Event, encode_event
from operators.score import POPULAR_KEY_PREFIX, TopN, decode_topn
from operators.settings import Settings
from operators.topic_table import BACKGROUND_FETCH_WAIT_MS, TopicTable
from operators.window_topic import decode_window_piece
from state.bandit import BanditStore
from state.campaigns import CampaignStore
from state.serving import ServingOptions, ServingStore

__all__ = ["ApiMetrics", "Services", "build_services"]

log = logging.getLogger(__name__)


@dataclass
class ApiMetrics:
    """Prometheus metrics of one app instance (own registry: no global state)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        ProcessCollector(registry=r)  # process_*: CPU seconds, resident memory, open files, start time
        # recorded by api/request_metrics.py: endpoint = the route's template (``unrouted``: none matched)
        self.requests = Counter("fusionrec_api_requests", "HTTP requests by endpoint (route template) and status",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("fusionrec_api_latency_seconds", "Time to answer a request, by endpoint",
                                 ["endpoint"], registry=r,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5))
        self.events_accepted = Counter("fusionrec_api_events_accepted", "Events produced to Kafka", registry=r)
        self.events_rejected = Counter("fusionrec_api_events_rejected", "Events refused", ["reason"], registry=r)
        self.recs_source = Counter("fusionrec_api_recommendations", "Lists served by source", ["source"], registry=r)
        self.topn_users = Gauge("fusionrec_api_topn_users", "Users with a published top-N, RocksDB's "
                                "estimate of the user-topn store's keys (exact only after a compaction)", registry=r)
        self.catalog_items = Gauge("fusionrec_api_catalog_items", "Items in the catalog", registry=r)
        self.events_unavailable = Counter("fusionrec_api_events_unavailable",
                                          "Events refused with 503: the broker did not acknowledge them", registry=r)
        self.offset_beyond_end = Counter("fusionrec_api_offset_beyond_log_end",
                                         "Reader positions found beyond the log end (topic recreated); re-read from "
                                         "the new log's start", ["topic"], registry=r)
        self.broker_up = Gauge("fusionrec_api_broker_up", "1 while the event broker answers", registry=r)
        self.loop_lag = Histogram("fusionrec_api_event_loop_lag_seconds",
                                  "How late the event loop woke a 10 ms sleeper (api/loop_lag.py): the wait a "
                                  "request arriving then had before its handler ran", registry=r, buckets=LAG_BUCKETS_S)
        self.gc_pause = Histogram("fusionrec_api_gc_pause_seconds",
                                  "Cyclic garbage collections by generation: every thread waits for one",
                                  ["generation"], registry=r, buckets=LAG_BUCKETS_S)
        self.catalog_rejected = Gauge("fusionrec_api_catalog_rejected",
                                      "Catalog items whose latest version the schema rule rejected (not served)",
                                      registry=r)


@dataclass
class Services:
    settings: Settings
    rules: EventRules
    topn: TopicTable
    catalog: TopicTable
    item_links: TopicTable
    flow_stats: TopicTable
    producer: Producer
    durable: DurableProducer
    metrics: ApiMetrics
    catalog_view: CatalogView
    models: ModelWatcher
    campaigns: CampaignRegistry
    optimizer: ThompsonOptimizer
    window_popularity: WindowPopularity
    window_table: TopicTable
    """Reader of the flow's windowed popularity (``kafka.window_topic()``) into ``window_popularity``."""
    fold: FeedbackFold
    signer: RequestSigner
    ingest_rules: EventRules
    candidates: CandidateCache[tuple[list[str], list[float]]] = field(default_factory=CandidateCache)
    filled: CandidateCache[tuple[list[str], np.ndarray, int]] = field(default_factory=CandidateCache)
    """The arm's part of campaign lists, filtered and filled from its model (``api/serving.py``), by everything it
    depends on."""
    reader: FeedbackReader | None = None
    event_limiter: EventRateLimiter | None = None
    """Events and the item ids they name per caller of ``POST /v1/events`` (``api.event_rate_limit``,
    ``api.event_item_rate_limit``; None: both off)."""
    popular_lists: dict[str, TopN] = field(default_factory=dict)
    """The partitions' popular lists (kept apart by the user-topn reader: ranking never scans users)."""
    _popular: tuple[float, list[tuple[str, float]]] = (0.0, [])
    topn_checkpoints: TopnCheckpoints | None = None
    """Checkpoints of the local user-topn store: published when due, restored by a new node."""
    popularity_snapshots: PopularitySnapshots | None = None
    """Local snapshots of the windowed popularity (a restart reads only the topic's tail)."""

    def publish_served(self, imp: Impression, scenario: str, strategy: str) -> None:
        """Record a served campaign list as a ``rec_request`` record in the server-only ``served`` topic
        (key = user_id, as on ``events``, so a user's lists and events share a partition number; every
        API worker folds it into the optimizer, the analytics flow joins it; user events never wait
        behind it); without the feedback reader, straight into this worker's fold."""
        if self.reader is None:
            self.fold.served(imp)
            return
        ev = Event(event_id=imp.request_id, ts=imp.ts, type=REQUEST_TYPE, user_id=imp.user_id or ANONYMOUS_USER,
                   campaign_id=imp.campaign_id, arm=imp.arm, request_id=imp.request_id,
                   extra={"scenario": scenario, "strategy": strategy, "goal": imp.goal, "window_s": imp.window_s,
                          "segment": imp.segment, "served_items": imp.items})
        self.producer.produce(self.settings.kafka.served_topic, key=ev.user_id.encode(), value=encode_event(ev))
        self.producer.poll(0)

    def popular(self, n: int) -> list[tuple[str, float]]:
        """Items popular across all partitions (sum of the partitions' decayed scores), cached 1 s."""
        return self._ranked_popular()[:n]

    def _ranked_popular(self) -> list[tuple[str, float]]:
        """All popular items, best first (the 1 s cache itself: do not mutate)."""
        at, ranked = self._popular
        if time.monotonic() - at > 1.0 or not ranked:  # nothing yet: look again at once (cheap)
            total: dict[str, float] = {}
            for t in list(self.popular_lists.values()):
                if isinstance(t, TopN):
                    for item, s in zip(t.items, t.scores):
                        total[item] = total.get(item, 0.0) + s
            ranked = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))
            self._popular = (time.monotonic(), ranked)
        return ranked

    def servable_popular(self, n: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, float]]:
        """The ``n`` most popular items the catalog lets us serve (not deleted, hidden or out of
        stock), skipping ``exclude``: scans the ranked list in chunks, O(n) while few items are unservable."""
        self.catalog_view.sync()
        ranked = self._ranked_popular()
        out: list[tuple[str, float]] = []
        start, chunk = 0, max(2 * n, 16)
        while len(out) < n and start < len(ranked):
            part = ranked[start:start + chunk]
            mask = self.catalog_view.servable([i for i, _ in part])
            out += [kv for kv, ok in zip(part, mask.tolist(), strict=True) if ok and kv[0] not in exclude]
            start, chunk = start + chunk, chunk * 2
        return out[:n]

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the readers, the producer and the feedback reader, within ``timeout_s`` seconds in all.

        Every thread is asked to stop first, so threads waiting on a broker that does not answer end together, and
        then waited for against one deadline: a broker that is down delays the stop by ``timeout_s`` at most, not by
        each reader's wait plus the snapshot's and the producer's timeouts (~45 s). What a thread still waiting on
        the broker had not done is left (daemon threads); local state (the optimizer and popularity snapshots) is
        written whatever happens.
        """
        deadline = time.monotonic() + timeout_s

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        tables = (self.topn, self.catalog, self.item_links, self.flow_stats, self.window_table)
        for table in tables:  # all at once: each may be waiting on a broker that does not answer
            table.request_stop()
        self.durable.request_stop()
        if self.reader is not None:
            self.reader.request_stop()
        for table in tables:
            table.stop(left())
        if self.popularity_snapshots is not None and not self.window_table.alive():
            try:
                self.popularity_snapshots.save()
            except OSError:
                log.exception("saving the popularity snapshot at stop failed")
        if self.reader is not None:  # its snapshot hand-over gets half of what is left, the producer the rest
            self.reader.stop(left() / 2)
        self.durable.stop(left())


def _keep_popular(popular: dict[str, TopN], key: str, value: object | None) -> None:
    """``user-topn`` reader hook: keep the partitions' popular lists apart (O(1) per message)."""
    if key.startswith(POPULAR_KEY_PREFIX):
        if isinstance(value, TopN):
            popular[key] = value
        else:
            popular.pop(key, None)


CATALOG_MAX_QUEUE = 10_000
"""Catalog changes queued for the event loop at most (``CatalogView.max_queue``; ``sync_forever`` drains it)."""


def build_services(settings: Settings, metrics: ApiMetrics | None = None) -> Services:
    """Start the readers of ``user-topn``, ``catalog``, ``item-links``, windowed popularity and (feedback)
    the served-list and events topics;
    open the campaign and optimizer stores under ``api.state_dir``; a producer for ``events``. ``metrics``: the
    app's (its request middleware records into them), else new ones.

    Raises
    ------
    operators.kafka.TopicLayoutError
        With the feedback reader on, if ``events`` and ``served`` exist with different partition counts.
    """
    k, a = settings.kafka, settings.api
    if a.feedback:
        try:  # the reader waits per partition: refuse topics partitioned apart (a broker not up yet: not checked)
            check_co_partitioned(k.brokers, [k.events_topic, k.served_topic], timeout_s=1.0)
        except KafkaException as exc:
            log.warning("could not check the partitions of %s and %s: %s", k.events_topic, k.served_topic, exc)
    state_dir = a.state_dir or settings.stream.state_dir.parent / "api"
    metrics = metrics or ApiMetrics()
    popular_lists: dict[str, TopN] = {}
    durable = DurableProducer(k.brokers, a.event_ack_timeout_s).start()

    def beyond_end(b: BeyondLogEnd) -> None:
        metrics.offset_beyond_end.labels(b.topic).inc()

    view = CatalogView.from_settings(a, initial_load=True, max_queue=CATALOG_MAX_QUEUE)
    campaigns = CampaignRegistry(CampaignStore(state_dir / "campaigns"), a.campaign_check_s)
    optimizer = ThompsonOptimizer(np.random.default_rng(settings.seed))
    popularity = WindowPopularity(a.popularity_bucket_s, a.popularity_horizon_s)
    rules = EventRules.from_settings(settings)
    # live ingestion (POST /v1/events): the flow's rules, and events no older than api.max_age_s
    ingest_rules = dataclasses.replace(rules, max_age_s=min(settings.stream.max_age_s or a.max_age_s, a.max_age_s))
    snapshots = PopularitySnapshots(popularity, state_dir / "popularity.snapshot", k.window_topic())
    window_table = TopicTable(k.brokers, k.window_topic(), decode_window_piece, on_update=popularity.apply,
                              keep=False, on_beyond_end=beyond_end, start_offsets=snapshots.load(),
                              on_batch=snapshots.on_batch, fetch_wait_ms=BACKGROUND_FETCH_WAIT_MS).start()
    fold = FeedbackFold(optimizer, campaigns.config_of, max_open=a.max_open_lists, declares=campaigns.declares,
                        segment_of=campaigns.segment_of)
    reader = None
    if a.feedback:
        reader = FeedbackReader(k.brokers, k.events_topic, fold, BanditStore(state_dir / "bandit"),
                                rules, a.snapshot_every_s, served_topic=k.served_topic,
                                served_wait_s=settings.analytics.served_wait_s,
                                on_beyond_end=beyond_end,
                                published=SnapshotTopic(k.brokers, k.optimizer_topic()),
                                publish_every_s=a.snapshot_publish_s or math.inf,
                                fetch_wait_ms=BACKGROUND_FETCH_WAIT_MS).start(drain_on_loop=True)
    # items kept as their JSON, packed (decoded per GET /v1/items/{id}): ~1.1 GB less per process at 1M items
    # than decoded, and the packing (operators/value_packer.py) ~180 MB less than the bytes as read;
    # the view is bulk-built from them on the reader thread once it has caught up (api/catalog.py)
    # and with catalog_store = "disk" the packed values in an unlinked file (operators/spilled_values.py): ~160 MB
    # less per process at 1M items
    catalog = TopicTable(k.brokers, k.catalog_topic, orjson.loads, on_update=view.on_update,
                         on_beyond_end=beyond_end, keep_raw=True, fetch_wait_ms=BACKGROUND_FETCH_WAIT_MS,
                         spill_dir=settings.stream.serving_dir / "catalog" if a.catalog_store == "disk" else None,
                         on_caught_up=lambda table: view.load_initial(table.raw_items(), table.decode,
                                                                      table.tombstoned_keys())).start()
    item_links = TopicTable(k.brokers, k.item_links_topic, orjson.loads, on_beyond_end=beyond_end,
                            fetch_wait_ms=BACKGROUND_FETCH_WAIT_MS).start()
    topn_store = checkpoints = None
    if a.topn_store == "rocksdb":
        topn_store = ServingStore(settings.stream.serving_dir / k.topn_topic, ServingOptions(block_cache_bytes=a.topn_cache_bytes))
        checkpoints = TopnCheckpoints(k.brokers, k.topn_checkpoints_topic(), topn_store, k.topn_topic, a.topn_checkpoint_s)
    return Services(
        settings=settings,
        rules=rules,
        topn=TopicTable(k.brokers, k.topn_topic, decode_topn, on_update=partial(_keep_popular, popular_lists),
                        update_prefix=POPULAR_KEY_PREFIX, on_beyond_end=beyond_end, store=topn_store,
                        restore=checkpoints.restore if checkpoints is not None else None,
                        on_batch=checkpoints.on_batch if checkpoints is not None else None).start(),
        topn_checkpoints=checkpoints,
        popular_lists=popular_lists,
        catalog=catalog,
        item_links=item_links,
        flow_stats=TopicTable(k.brokers, k.flow_stats_topic(), orjson.loads, on_beyond_end=beyond_end,
                              fetch_wait_ms=BACKGROUND_FETCH_WAIT_MS).start(),  # the flow's counters (/metrics)
        producer=durable.producer,
        durable=durable,
        metrics=metrics,
        catalog_view=view,
        # + new catalog items: title codes at once, graph codes by M′·Q once they have interactions
        # a version's item ids become the catalog index's own strings once the catalog is in use (checked on the loop,
        # where the index is read)
        models=CatalogModelWatcher(settings.stream.model_dir, CatalogOverlay(catalog, links=item_links),
                                   intern_ids=view.intern_ids),
        campaigns=campaigns,
        optimizer=optimizer,
        window_popularity=popularity,
        window_table=window_table,
        popularity_snapshots=snapshots,
        event_limiter=EventRateLimiter(a.event_rate_limit, [*a.admin_keys, *a.client_keys] if a.require_keys else [],
                                       item_limits=a.event_item_rate_limit)
        if a.event_rate_limit or a.event_item_rate_limit else None,
        fold=fold,
        signer=RequestSigner(load_request_secret(a.request_secret, state_dir)),
        ingest_rules=ingest_rules,
        reader=reader,
    )
