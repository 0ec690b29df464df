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

from operators.kafka import client_config, confirmed_ends

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
        self.suspect = True
        """A check must succeed before the reader consumes: at start and after a lost connection
        (so no message of a recreated log is read before the positions are checked)."""
        self._reconnected = False
        self._last_check = 0.0

    def connection_lost(self) -> None:
        """The client lost its broker: check again, comparing records, before consuming on."""
        self.suspect = self._reconnected = True

    def due(self, idle: bool) -> bool:
        """Whether to check now: while suspect (at most once a second) or when idle (every ``check_every_s``)."""
        since = time.monotonic() - self._last_check
        return (self.suspect and since >= 1.0) or (idle and since >= self.check_every_s)

    def check(self, positions: dict[int, int], last_timestamps: dict[int, int] | None = None) -> list[BeyondLogEnd]:
        """Compare ``positions`` (partition -> next offset to read) with the logs.

        A partition is beyond its log when its next offset exceeds the log end, or (after a lost
        connection, with ``last_timestamps``: partition -> Kafka timestamp in ms of the last record
        the reader consumed) when the record before its position is not the one it consumed: a
        recreated log that already grew past the position.

        Returns the partitions found (each logged as an error); an empty list when all are fine,
        or when the broker cannot answer yet (``suspect`` then stays set and the check is repeated).
        The check uses a short-lived client of its own: a long-lived one may cache that a
        recreated topic does not exist for minutes.
        """
        self._last_check = time.monotonic()
        found = []
        consumer = Consumer({**client_config(self.brokers), "group.id": "fusionrec-offset-guard",
                             "enable.auto.commit": False})
        try:
            marks: dict[int, tuple[int, int]] = {}
            for p, nxt in positions.items():
                if nxt <= 0:
                    continue
                low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=2.0, cached=False)
                if low < 0 or high < 0:
                    raise KafkaException(f"no offsets for {self.topic}[{p}] yet (the topic is being created)")
                marks[p] = (low, high)
            confirmed = confirmed_ends(self.brokers, self.topic,
                                        {p: high for p, (_low, high) in marks.items() if positions[p] > high}, 5.0)
            for p, (low, high) in marks.items():
                nxt = positions[p]
                end, why = confirmed.get(p, high), ""
                if nxt > end:
                    why = f"the log ends at {end}"
                last = (last_timestamps or {}).get(p)
                if not why and self._reconnected and last is not None:
                    ts = _timestamp_at(self.brokers, self.topic, p, nxt - 1)
                    if ts is not None and ts != last:  # None: compacted away or unreadable, cannot tell
                        why = "the record before it is not the one this reader consumed"
                if not why:
                    continue
                resume = low if self.policy == "earliest" else end
                found.append(BeyondLogEnd(self.topic, p, nxt, low, end, resume))
                log.error("stored offset %d of %s[%d] is beyond the log (%s; start %d): the topic was recreated or "
                          "the broker lost its data; policy %r: %s", nxt, self.topic, p, why, low, self.policy,
                          "stopping" if self.policy == "fail" else f"resuming at offset {resume}")
        except KafkaException as exc:
            log.info("offset check of %s postponed: %s", self.topic, exc)
            return []
        finally:
            consumer.close()
        self.suspect = self._reconnected = False
        self.detected += len(found)
        return found


def _timestamp_at(brokers: str, topic: str, partition: int, offset: int) -> int | None:
    """Kafka timestamp (ms) of the record at ``offset``, or None if it cannot be read."""
    c = Consumer({**client_config(brokers), "group.id": "fusionrec-offset-guard", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 10})
    try:
        c.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            for m in c.consume(1, 0.2):
                if not m.error() and m.offset() == offset:
                    return int(m.timestamp()[1])
        return None
    finally:
        c.close()
