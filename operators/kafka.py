"""Kafka plumbing shared by the flow, the API and the simulators: producer, topics, offsets.

One partitioner for every producer: ``murmur2_random``, the Java client's murmur2, so a shop's
own JVM producers put a user on the same partition as ours.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from operators.settings import KafkaSettings

__all__ = ["TopicSpec", "producer_config", "make_producer", "ensure_topics", "high_watermarks",
           "topic_partitions", "platform_topics"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False


def platform_topics(kafka: KafkaSettings) -> list[TopicSpec]:
    """The topics fusionrec needs; ``user-topn``, ``catalog`` and ``item-links`` are compacted
    (latest value per key)."""
    return [
        TopicSpec(kafka.events_topic, kafka.partitions),
        TopicSpec(kafka.served_topic, kafka.partitions),  # served lists: the API's alone, same key and partitions
        TopicSpec(kafka.dead_topic, 1),
        TopicSpec(kafka.topn_topic, kafka.partitions, compacted=True),
        TopicSpec(kafka.catalog_topic, 1, compacted=True),
        TopicSpec(kafka.item_links_topic, 1, compacted=True),
        TopicSpec(kafka.flow_stats_topic(), 1, compacted=True),
        TopicSpec(kafka.window_topic(), 1, compacted=True),  # windowed popularity, keyed by partition
        TopicSpec(kafka.optimizer_topic(), 2, compacted=True),  # the API's optimizer snapshots: heads, chunks
        TopicSpec(kafka.topn_checkpoints_topic(), 2, compacted=True),  # checkpoints of the API's user-topn store
    ]


def producer_config(brokers: str, **overrides: str | int) -> dict[str, str | int]:
    """librdkafka producer settings: Java-compatible murmur2 partitioner, small linger, no compression.

    Compression is off by default: the Tansu broker (0.6) gives a compressed record batch a
    single offset, which breaks per-message offsets (checked: 1,000 lz4 messages -> log end 1).
    Pass ``**{"compression.type": "lz4"}`` for Apache Kafka.
    """
    cfg: dict[str, str | int] = {
        "bootstrap.servers": brokers,
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "compression.type": "none",
        "acks": "all",
        "message.max.bytes": 2_000_000,
    }
    cfg.update(overrides)
    return cfg


def make_producer(brokers: str, **overrides: str | int) -> Producer:
    return Producer(producer_config(brokers, **overrides))


def ensure_topics(brokers: str, topics: list[TopicSpec], timeout_s: float = 15.0) -> None:
    """Create the topics that do not exist yet and wait until their metadata is visible.

    Raises
    ------
    KafkaException
        If a topic cannot be created (other than "already exists").
    """
    admin = AdminClient({"bootstrap.servers": brokers})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    new = [NewTopic(t.name, num_partitions=t.partitions, replication_factor=1,
                    config={"cleanup.policy": "compact"} if t.compacted else {})
           for t in topics if t.name not in existing]
    if new:
        for name, fut in admin.create_topics(new).items():
            try:
                fut.result(timeout_s)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
            log.info("created topic %s", name)
    deadline = time.monotonic() + timeout_s
    want = {t.name: t.partitions for t in topics}
    while True:
        md = admin.list_topics(timeout=timeout_s).topics
        if all(n in md and len(md[n].partitions) >= p for n, p in want.items()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {sorted(want)} not visible after {timeout_s} s")
        time.sleep(0.05)


def topic_partitions(brokers: str, topic: str, timeout_s: float = 10.0) -> list[int]:
    md = AdminClient({"bootstrap.servers": brokers}).list_topics(topic, timeout=timeout_s)
    return sorted(md.topics[topic].partitions)


def high_watermarks(brokers: str, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
    """Log end offset (next offset to be written) per partition.

    The broker's answer is checked by reading from it: Tansu 0.6 reports the *base* offset of
    the newest record batch as the high watermark (checked: 7,350 reported, 7,588 stored), so any
    records found at or after the reported offset move the end forward.
    """
    c = Consumer({"bootstrap.servers": brokers, "group.id": "fusionrec-watermarks", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 10})
    try:
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
                for p in topic_partitions(brokers, topic, timeout_s)}
        c.assign([TopicPartition(topic, p, max(hw, 0)) for p, hw in ends.items()])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msgs = c.consume(10000, 0.2)
            if not msgs:
                break
            for m in msgs:
                if not m.error():
                    ends[m.partition()] = max(ends[m.partition()], m.offset() + 1)
        return ends
    finally:
        c.close()
