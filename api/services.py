"""What the API's handlers share, built once in the app's lifespan: readers, producer, metrics."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import orjson
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from api.topic_table import TopicTable
from operators.kafka import make_producer
from operators.parse import EventRules
from operators.score import POPULAR_KEY_PREFIX, TopN, decode_topn
from operators.settings import Settings

__all__ = ["ApiMetrics", "Services", "build_services"]

log = logging.getLogger(__name__)


@dataclass
class ApiMetrics:
    """Prometheus metrics of one app instance (own registry: no global state)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("fusionrec_api_requests", "HTTP requests", ["endpoint", "status"], registry=r)
        self.latency = Histogram("fusionrec_api_latency_seconds", "Handler latency", ["endpoint"], registry=r,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5))
        self.events_accepted = Counter("fusionrec_api_events_accepted", "Events produced to Kafka", registry=r)
        self.events_rejected = Counter("fusionrec_api_events_rejected", "Events refused", ["reason"], registry=r)
        self.recs_source = Counter("fusionrec_api_recommendations", "Lists served by source", ["source"], registry=r)
        self.topn_users = Gauge("fusionrec_api_topn_users", "Users with a published top-N", registry=r)
        self.catalog_items = Gauge("fusionrec_api_catalog_items", "Items in the catalog", registry=r)


@dataclass
class Services:
    settings: Settings
    rules: EventRules
    topn: TopicTable
    catalog: TopicTable
    producer: Producer
    metrics: ApiMetrics
    _popular: tuple[float, list[tuple[str, float]]] = (0.0, [])

    def popular(self, n: int) -> list[tuple[str, float]]:
        """Items popular across all partitions (sum of the partitions' decayed scores), cached 1 s."""
        at, ranked = self._popular
        if time.monotonic() - at > 1.0:
            total: dict[str, float] = {}
            for key, t in self.topn.items():
                if key.startswith(POPULAR_KEY_PREFIX) and isinstance(t, TopN):
                    for item, s in zip(t.items, t.scores):
                        total[item] = total.get(item, 0.0) + s
            ranked = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))
            self._popular = (time.monotonic(), ranked)
        return ranked[:n]

    def close(self) -> None:
        self.topn.stop()
        self.catalog.stop()
        self.producer.flush(10)


def build_services(settings: Settings) -> Services:
    """Start the readers of ``user-topn`` and ``catalog`` and a producer for ``events``."""
    k = settings.kafka
    return Services(
        settings=settings,
        rules=EventRules.from_specs(settings.event_types, settings.stream.max_event_bytes),
        topn=TopicTable(k.brokers, k.topn_topic, decode_topn).start(),
        catalog=TopicTable(k.brokers, k.catalog_topic, orjson.loads).start(),
        producer=make_producer(k.brokers),
        metrics=ApiMetrics(),
    )
