"""Kafka plumbing shared by the flow, the API and the simulators: producer, topics, offsets.

One partitioner for every producer: ``murmur2_random``, the Java client's murmur2, so a shop's
own JVM producers put a user on the same partition as ours.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from operators.kafka_log import KAFKA_LOG
from operators.settings import Settings

__all__ = ["TopicSpec", "client_config", "admin_client", "producer_config", "make_producer", "ensure_topics",
           "high_watermarks", "confirmed_ends", "topic_partitions", "platform_topics", "analytics_topic", "PatientEnds",
           "TopicLayoutError", "check_co_partitioned"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic to create: its name, partition count and cleanup policy. ``partitions_like`` names a topic
    it is joined with by partition number: when that one already exists, this one is created with its
    count instead of ``partitions`` (``check_co_partitioned`` refuses the pair otherwise)."""

    name: str
    partitions: int
    compacted: bool = False
    partitions_like: str | None = None


def platform_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic fusionrec uses, as ``fusionrec topics`` and ``fusionrec run`` create them at start and
    after the embedded broker came back empty; ``user-topn``, ``catalog``, ``item-links``, the derived
    topics and ``analytics`` are compacted (latest value per key).

    The analytics flow and the API ensure their ``analytics`` topic with the same spec
    (:func:`analytics_topic`): a topic left out here came back after a broker restart auto-created by its
    first client, with the broker's default partition count and no compaction (trial 31, finding 1).
    """
    kafka = settings.kafka
    return [
        TopicSpec(kafka.events_topic, kafka.partitions),
        # served lists: the API's alone, keyed and partitioned as the events they are joined with
        TopicSpec(kafka.served_topic, kafka.partitions, partitions_like=kafka.events_topic),
        TopicSpec(kafka.dead_topic, 1),
        TopicSpec(kafka.topn_topic, kafka.partitions, compacted=True),
        TopicSpec(kafka.catalog_topic, 1, compacted=True),
        TopicSpec(kafka.item_links_topic, 1, compacted=True),
        TopicSpec(kafka.flow_stats_topic(), 1, compacted=True),
        TopicSpec(kafka.window_topic(), 1, compacted=True),  # windowed popularity, keyed by partition
        TopicSpec(kafka.optimizer_topic(), 2, compacted=True),  # the API's optimizer snapshots: heads, chunks
        TopicSpec(kafka.topn_checkpoints_topic(), 2, compacted=True),  # checkpoints of the API's user-topn store
        analytics_topic(settings),
    ]


def analytics_topic(settings: Settings) -> TopicSpec:
    """``[analytics] topic``: the analytics flow's counters, compacted, one partition (the API reads it whole)."""
    return TopicSpec(settings.analytics.topic, 1, compacted=True)


def client_config(brokers: str) -> dict[str, object]:
    """Settings every librdkafka client of ours (producer, consumer, admin) starts from: the
    bootstrap servers, and librdkafka's log lines through :data:`operators.kafka_log.KAFKA_LOG`
    (Python logging, a repeated line at most once a minute) instead of straight to stderr, where a
    broker that is down made each client write one line per reconnect, ~20 a second (issue 14)."""
    return {"bootstrap.servers": brokers, "logger": KAFKA_LOG}


def admin_client(brokers: str) -> AdminClient:
    """A new admin client with :func:`client_config`, for one metadata request or topic creation.

    It is never polled, so it logs nothing: the ``KafkaException`` its call raises is the report
    (each caller retries and logs it). Short-lived on purpose: a long-lived client may keep
    metadata of a topic that was since recreated (``operators/offset_guard.py``).
    """
    return AdminClient(client_config(brokers))


MAX_MESSAGE_BYTES = 2_000_000
"""A producer's largest record (librdkafka's ``message.max.bytes``): a larger one is refused at ``produce``."""


def producer_config(brokers: str, **overrides: object) -> dict[str, object]:
    """librdkafka producer settings: Java-compatible murmur2 partitioner, small linger, no compression.

    Compression is off by default: the Tansu broker (0.6) gives a compressed record batch a
    single offset, which breaks per-message offsets (checked: 1,000 lz4 messages -> log end 1).
    Pass ``**{"compression.type": "lz4"}`` for Apache Kafka.
    """
    cfg: dict[str, object] = {
        **client_config(brokers),
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "compression.type": "none",
        "acks": "all",
        "message.max.bytes": MAX_MESSAGE_BYTES,
    }
    cfg.update(overrides)
    return cfg


def make_producer(brokers: str, **overrides: str | int) -> Producer:
    return Producer(producer_config(brokers, **overrides))


def ensure_topics(brokers: str, topics: list[TopicSpec], timeout_s: float = 15.0) -> None:
    """Create the topics that do not exist yet and wait until their metadata is visible.

    A topic that already exists is left as it is: its partition count is not waited for (a topic
    created with fewer partitions never gets more), and a count other than the spec's is logged
    (``check_co_partitioned`` refuses the pairs that must match).

    Raises
    ------
    KafkaException
        If a topic cannot be created (other than "already exists").
    """
    admin = admin_client(brokers)
    existing = admin.list_topics(timeout=timeout_s).topics
    topics = [_like_existing(t, existing) for t in topics]
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
    want = {t.name: t.partitions if t.name not in existing else 1 for t in topics}
    for t in topics:  # fewer than configured is worth a warning; more (e.g. a broker's auto-created default) is not
        if t.name in existing and (n := len(existing[t.name].partitions)) != t.partitions:
            log.log(logging.WARNING if n < t.partitions else logging.INFO,
                    "topic %s exists with %d partitions (%d configured): used as it is", t.name, n, t.partitions)
    while True:
        md = admin.list_topics(timeout=timeout_s).topics
        if all(n in md and len(md[n].partitions) >= p for n, p in want.items()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {sorted(want)} not visible after {timeout_s} s")
        time.sleep(0.05)


def _like_existing(spec: TopicSpec, existing: dict[str, object]) -> TopicSpec:
    """``spec`` with the partition count of its existing ``partitions_like`` topic, if that one exists
    with a listed count (a topic listed with none is still being created)."""
    like = existing.get(spec.partitions_like) if spec.partitions_like else None
    n = len(like.partitions) if like is not None else 0  # type: ignore[attr-defined]
    if n and n != spec.partitions:
        log.info("topic %s is created with %d partitions, as %s has (%d configured)", spec.name, n,
                 spec.partitions_like, spec.partitions)
        return TopicSpec(spec.name, n, spec.compacted, spec.partitions_like)
    return spec


class TopicLayoutError(ValueError):
    """Topics that must be partitioned alike are not (e.g. ``events`` and ``served``)."""


def check_co_partitioned(brokers: str, topics: list[str], timeout_s: float = 10.0) -> None:
    """Refuse topics that share a key but not a partition count.

    ``served`` lists and ``events`` are keyed by user id and joined by partition number: the analytics flow
    joins a user's lists and events within one partition, and the optimizer's feedback reader waits per
    partition until the lists an event may credit are read. With different counts a user's lists and events
    land in different partitions: the flow would credit nothing and the reader would wait on unrelated
    partitions. Topics that do not exist yet are skipped (they are created alike).

    Raises
    ------
    TopicLayoutError
        Naming each topic's partition count and how to fix it.
    KafkaException
        If the broker does not answer within ``timeout_s``.
    """
    md = admin_client(brokers).list_topics(timeout=timeout_s).topics
    counts = {t: len(md[t].partitions) for t in topics if t in md}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{t!r} has {n}" for t, n in counts.items())
        raise TopicLayoutError(f"topics {sorted(counts)} are keyed alike and joined by partition number, so they need "
                               f"the same partition count; {listed}. Recreate the smaller ones with "
                               f"{max(counts.values())} partitions (or set kafka.partitions and start on new topics)")


def topic_partitions(brokers: str, topic: str, timeout_s: float = 10.0) -> list[int]:
    """The partition numbers of ``topic``, asked of the broker (KafkaException without an answer)."""
    md = admin_client(brokers).list_topics(topic, timeout=timeout_s)
    return sorted(md.topics[topic].partitions)


def high_watermarks(brokers: str, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
    """Log end offset (next offset to be written) per partition, confirmed by a fetch at each end.

    Tansu 0.6 reports the *base* offset of the newest record batch as the high watermark
    (checked: 7,350 reported, 7,588 stored); :func:`confirmed_ends` fetches from the reported end and
    takes the fetch answer's high watermark, so the answer is the true end on Tansu and Apache Kafka alike.

    ``timeout_s`` bounds the whole call: listing the partitions, each partition's reported end and the
    confirming fetch share one deadline, each step getting what is left of it (each step had the full
    ``timeout_s`` before, so a slow broker made a 10 s bound an 11-26 s wait).

    Raises
    ------
    KafkaException
        If the broker did not answer, or an end was not reached, within ``timeout_s`` (never a
        guess: a reader that trusted a low end would take a valid snapshot for a broken one).
    """
    deadline = time.monotonic() + timeout_s

    def left(step: str) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KafkaException(f"{step} of {topic}: no time left of {timeout_s:g} s")
        return remaining

    partitions = topic_partitions(brokers, topic, left("listing the partitions"))
    c = Consumer({**client_config(brokers), "group.id": "fusionrec-watermarks", "enable.auto.commit": False})
    try:
        reported = {}
        for p in partitions:
            _low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=left(f"the end of [{p}]"),
                                                 cached=False)
            if high < 0:
                raise KafkaException(f"no offsets for {topic}[{p}] yet (the topic is being created)")
            reported[p] = high
    finally:
        c.close()
    return confirmed_ends(brokers, topic, reported, left("confirming the ends") if reported else 0.0)


class PatientEnds:
    """:func:`high_watermarks` for a reader that retries until it gets an answer: each failure
    doubles the next attempt's timeout (``first_s``, 2×, … up to ``max_s`` seconds), so a broker that
    is merely slow to serve a long partition's tail (seen: 16 s on a loaded box) is waited for, where
    a fixed 10 s failed on every retry and the reader never caught up. A success resets it.

    Raises
    ------
    KafkaException
        From :meth:`ends`, as :func:`high_watermarks` does (the caller retries).
    """

    def __init__(self, first_s: float = 10.0, max_s: float = 160.0) -> None:
        self.first_s, self.max_s = first_s, max_s
        self.timeout_s = first_s

    def ends(self, brokers: str, topic: str) -> dict[int, int]:
        """Confirmed log end per partition of ``topic`` (see :func:`high_watermarks`)."""
        try:
            out = high_watermarks(brokers, topic, self.timeout_s)
        except KafkaException:
            self.timeout_s = min(self.max_s, 2 * self.timeout_s)
            raise
        self.timeout_s = self.first_s
        return out


def confirmed_ends(brokers: str, topic: str, reported: dict[int, int], timeout_s: float) -> dict[int, int]:
    """The log ends of the partitions in ``reported`` (partition -> reported end), confirmed by one
    client fetching from the reported end: a partition's end is the high watermark of the first fetch
    answer for it (or its EOF, whichever comes first).

    The answer's high watermark is the true end on Tansu and Apache Kafka alike, so the tail itself
    need not be read. Reading it to EOF starved on a long partition: Tansu 0.6's in-memory storage
    lists every record batch of a partition on each fetch below its end and gives up when the
    fetch's wait (10 ms here) runs out first, so the answer came back empty, again and again, yet
    always with the high watermark (``GET /v1/analytics/ops`` answered 503 on every call from ~7 min
    of ``fusionrec run`` on a 2-core box at load ~10; ``tests/integration/test_watermarks.py``).

    Raises
    ------
    KafkaException
        If no fetch answer (nor EOF) came for a partition within ``timeout_s``.
    """
    if not reported:
        return {}
    c = Consumer({**client_config(brokers), "group.id": "fusionrec-watermarks", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 10, "enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic, p, max(off, 0)) for p, off in reported.items()])
        ends = {p: max(off, 0) for p, off in reported.items()}
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m in c.consume(10000, max(0.0, min(0.2, deadline - time.monotonic()))):
                err, p = m.error(), m.partition()
                if err is None:
                    ends[p] = max(ends[p], m.offset() + 1)
                elif err.code() == KafkaError._PARTITION_EOF and p in ends:
                    ends[p] = max(ends[p], m.offset())
                    done.add(p)
            for p in set(ends) - done:
                _low, high = c.get_watermark_offsets(TopicPartition(topic, p), cached=True)
                if high >= ends[p]:  # a fetch answer's (-1001 until one came); a log only grows
                    ends[p] = high
                    done.add(p)
            if len(done) == len(ends):
                return ends
        raise KafkaException(f"end of {topic}{sorted(set(ends) - done)} not reached within {timeout_s} s")
    finally:
        c.close()
