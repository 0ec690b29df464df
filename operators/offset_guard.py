"""Detect a consumer position beyond its partition's log end (a topic that was recreated).

When a broker comes back empty (the embedded Tansu broker keeps topics in memory) or a topic is
deleted and created again, the offsets a reader stored lie above the new log's end. Kafka
clients then wait silently for offsets that the new log reaches only much later: every new
event would be skipped without a warning. Every reader of fusionrec (the flows' sources, the
API's topic tables and feedback reader) checks its positions with :class:`OffsetGuard`, logs
an error when one is beyond the end and applies a policy (``stream.offset_beyond_end`` for the
flows; the API's readers always re-read the new log from its start).

Checks are cheap (one watermark request) and run: when a reader starts, after its client
reported a lost connection (until a check succeeds), and every ``check_every_s`` while a
partition is idle.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import Consumer, KafkaException, TopicPartition

__all__ = ["OffsetPolicy", "BeyondLogEnd", "OffsetGuard", "CONNECTION_LOST_CODES"]

log = logging.getLogger(__name__)

OffsetPolicy = Literal["earliest", "latest", "fail"]
"""What a reader does with a stored offset beyond the log end: resume at the new log's start
(``earliest``: every event written since the topic was recreated is read), at its end
(``latest``: only events written from now on), or stop with an error (``fail``)."""

CONNECTION_LOST_CODES = frozenset({"_TRANSPORT", "_ALL_BROKERS_DOWN", "_TIMED_OUT", "_RESOLVE"})
"""librdkafka error names (``KafkaError.name()``) after which positions are checked again."""


@dataclass(frozen=True, slots=True)
class BeyondLogEnd:
    """A partition whose next offset lies beyond its log: what was found and where to resume."""

    topic: str
    partition: int
    next_offset: int
    log_start: int
    log_end: int
    resume_at: int


def _confirmed_end(brokers: str, topic: str, partition: int, reported: int, timeout_s: float) -> int:
    """The log end, checked by reading from the reported one (Tansu 0.6 reports the *base* offset of
    the newest record batch as the high watermark; on Apache Kafka the reported end is exact)."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": "fusionrec-offset-guard", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 10})
    try:
        c.assign([TopicPartition(topic, partition, max(reported, 0))])
        end = reported
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msgs = c.consume(10000, 0.2)
            if not msgs:
                break
            for m in msgs:
                if not m.error():
                    end = max(end, m.offset() + 1)
        return end
    finally:
        c.close()


class OffsetGuard:
    """Checks one reader's partitions for positions beyond the log end.

    Parameters
    ----------
    brokers, topic : str
        Where the reader reads.
    policy : OffsetPolicy
        Where to resume (``BeyondLogEnd.resume_at``); with ``fail`` the caller stops.
    check_every_s : float
        Interval of the periodic check of an idle partition, seconds.

    Attributes
    ----------
    detected : int
        Partitions found beyond their log end so far (logged as errors).
    """

    def __init__(self, brokers: str, topic: str, policy: OffsetPolicy = "earliest",
                 check_every_s: float = 10.0) -> None:
        self.brokers, self.topic, self.policy = brokers, topic, policy
        self.check_every_s = check_every_s
        self.detected = 0
        self._suspect = True  # check at start
        self._last_check = 0.0

    def connection_lost(self) -> None:
        """The client lost its broker: check again (until a check succeeds)."""
        self._suspect = True

    def due(self, idle: bool) -> bool:
        """Whether to check now: after a lost connection (at most once a second) or when idle."""
        since = time.monotonic() - self._last_check
        return (self._suspect and since >= 1.0) or (idle and since >= self.check_every_s)

    def check(self, consumer: Consumer, positions: dict[int, int]) -> list[BeyondLogEnd]:
        """Compare ``positions`` (partition -> next offset to read) with the log ends.

        Returns the partitions beyond their end (each logged as an error); an empty list when
        all are fine or the broker cannot answer yet (then the check is repeated later).
        """
        self._last_check = time.monotonic()
        found = []
        try:
            for p, nxt in positions.items():
                if nxt <= 0:
                    continue
                low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=2.0, cached=False)
                if nxt <= high:
                    continue
                end = _confirmed_end(self.brokers, self.topic, p, high, 2.0)
                if nxt <= end:
                    continue
                resume = low if self.policy == "earliest" else end
                found.append(BeyondLogEnd(self.topic, p, nxt, low, end, resume))
        except KafkaException as exc:
            log.info("offset check of %s postponed: %s", self.topic, exc)
            return []
        self._suspect = False
        for b in found:
            self.detected += 1
            log.error("stored offset %d of %s[%d] is beyond the log end %d (start %d): the topic was recreated or "
                      "the broker lost its data; policy %r: %s", b.next_offset, b.topic, b.partition, b.log_end,
                      b.log_start, self.policy,
                      "stopping" if self.policy == "fail" else f"resuming at offset {b.resume_at}")
        return found
