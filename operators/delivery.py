"""Produce a set of records and wait until the broker acknowledged every one, through outages.

The flows publish their outputs (top-N lists, dead letters, links, analytics rows) *before* they
commit the state and offset that produced them. When the broker is gone, committing anyway would
lose outputs, and giving up would stop the flow; so :func:`deliver_all` waits, re-producing what
the client gave up on, until the broker is back (an outage of minutes is ridden out without a
restart). The caller commits only after it returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, Message, Producer

__all__ = ["Record", "deliver_all"]

log = logging.getLogger(__name__)

Record = tuple[str, bytes | None, bytes | None]
"""(topic, key, value); value ``None`` is a tombstone."""


def _on_delivery(rec: Record, failed: list[Record], errors: list[KafkaError]
                 ) -> Callable[[KafkaError | None, Message], None]:
    def cb(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failed.append(rec)
            errors.append(err)
    return cb


def deliver_all(producer: Producer, records: Sequence[Record], *, what: str = "outputs",
                retry_s: float = 1.0, warn_every_s: float = 10.0,
                give_up: Callable[[], bool] | None = None) -> None:
    """Produce ``records`` and block until the broker acknowledged all of them.

    Records whose delivery failed (message timeout, unknown topic while a restarted broker has
    no topics yet, a full local queue) are produced again every ``retry_s``; a warning is logged
    every ``warn_every_s`` while some are pending.

    Raises
    ------
    RuntimeError
        If ``give_up()`` becomes true while records are still undelivered (e.g. shutdown).
    """
    pending: list[Record] = list(records)
    started = time.monotonic()
    warned = started
    while pending:
        failed: list[Record] = []
        errors: list[KafkaError] = []

        for rec in pending:
            while True:
                try:
                    producer.produce(rec[0], key=rec[1], value=rec[2], on_delivery=_on_delivery(rec, failed, errors))
                    break
                except BufferError:  # the local queue is full: let deliveries (or failures) drain it
                    producer.poll(0.1)
        while producer.flush(retry_s) > 0:
            if time.monotonic() - warned >= warn_every_s:
                warned = time.monotonic()
                log.warning("%s: %d records not acknowledged by the broker for %.0f s; waiting (nothing is "
                            "committed until they are)", what, len(producer), warned - started)
            if give_up is not None and give_up():
                raise RuntimeError(f"{what}: {len(producer)} records undelivered; giving up")
        pending = failed
        if pending:
            if time.monotonic() - warned >= warn_every_s:
                warned = time.monotonic()
                log.warning("%s: %d records failed (%s); producing them again", what, len(pending), errors[-1])
            if give_up is not None and give_up():
                raise RuntimeError(f"{what}: {len(pending)} records undelivered ({errors[-1]}); giving up")
            time.sleep(retry_s)
    if time.monotonic() - started > warn_every_s:
        log.warning("%s: delivered after %.0f s", what, time.monotonic() - started)
