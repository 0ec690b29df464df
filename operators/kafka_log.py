"""librdkafka's log lines in Python logging, each kind of line at most once a minute (issue 14)."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

__all__ = ["KafkaLog", "KAFKA_LOG", "line_kind"]

log = logging.getLogger(__name__)

_MAX_KINDS = 1024  # distinct kinds remembered; more (never seen) and the memory starts over
_VARYING = (
    (re.compile(r"rdkafka#\w+-\d+"), "rdkafka"),  # which client
    (re.compile(r"(\S+?:\d+)/(?:bootstrap|-?\d+)"), r"\1"),  # the broker as bootstrap server or as node id
    (re.compile(r" \(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\)"), ""),  # timing, count
)


def line_kind(line: str) -> str:
    """``line`` without what differs between repeats of the same event: the client, the broker's
    node id and the timings ("Connect to ipv4#127.0.0.1:9092 failed: Connection refused" of any
    client is one kind)."""
    for pattern, repl in _VARYING:
        line = pattern.sub(repl, line)
    return line


class KafkaLog:
    """The ``logger`` of our librdkafka clients (``operators.kafka.client_config``).

    Each line goes to Python logging at its level, except a line of a kind (:func:`line_kind`)
    already logged less than ``repeat_s`` seconds ago: that one is counted, and the next line of
    its kind logged says how many were left out. librdkafka (2.16, ``metadata.recovery.strategy``
    ``rebootstrap``) replaces a broker that refused a connection with a fresh one, so its own
    suppression of repeated errors never applies: while the broker was down, each client wrote
    "Connect to ... failed" every ~50 ms, ``fusionrec serve`` ~160 lines/s.

    Lines reach Python only when their client is served (``poll``, ``consume``, ``flush``), on the
    thread serving it: a client never served logs nothing (its caller reports what failed).
    ``metadata.recovery.strategy=none`` would restore librdkafka's own suppression, but then a
    long-lived client crashed (SIGSEGV in ``rd_kafka_metadata_cache_find``) when the broker came
    back empty (``tests/integration/test_broker_outage.py``).

    Parameters
    ----------
    repeat_s : float
        Seconds during which a line of a kind already logged is only counted.
    clock : callable
        Monotonic seconds (tests pass their own).
    """

    def __init__(self, repeat_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.repeat_s, self._clock = repeat_s, clock
        self._logged: dict[str, tuple[float, int]] = {}  # kind -> (when last logged, left out since)
        self._lock = threading.Lock()  # clients are served on many threads

    def log(self, level: int, fmt: str, *args: object) -> None:
        """Log one librdkafka line (the signature of ``logging.Logger.log``, which confluent-kafka calls)."""
        line = fmt % args if args else fmt
        kind, now = line_kind(line), self._clock()
        with self._lock:
            at, left_out = self._logged.get(kind, (None, 0))
            if at is not None and now - at < self.repeat_s:
                self._logged[kind] = (at, left_out + 1)
                return
            if len(self._logged) >= _MAX_KINDS:
                self._logged.clear()
            self._logged[kind] = (now, 0)
        if at is not None and left_out:
            log.log(level, "%s (and %d more like it in the last %.0f s)", line, left_out, now - at)
        else:
            log.log(level, "%s", line)


KAFKA_LOG = KafkaLog()
"""The one router of the process: a line's kind is logged once a minute, whichever client it came from."""
