"""The API's producer, made honest: ``POST /v1/events`` answers 202 only after the broker acknowledged.

A poller thread serves the producer's delivery reports and resolves the waiting requests'
futures on the event loop; a probe thread asks the broker for metadata every ``probe_every_s``
and says whether it answers (``/readyz``; while it does not, events are refused at once with 503
instead of queueing). The producer's ``message.timeout.ms`` equals the acknowledgement timeout,
so an event refused with 503 is not delivered later behind the client's back (except one whose
acknowledgement was lost in flight: a client that retries with the same ``event_id`` lets the
flow drop the copy).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka.admin import AdminClient

from operators.kafka import make_producer

__all__ = ["BrokerUnavailable", "DurableProducer"]

log = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """Events could not be made durable: the broker did not acknowledge them in time."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DurableProducer:
    """A producer whose ``produce_acked`` returns once the broker acknowledged every record.

    Parameters
    ----------
    brokers : str
        Bootstrap servers.
    ack_timeout_s : float
        How long a request waits for the broker's acknowledgement (also the producer's
        ``message.timeout.ms``), seconds.
    probe_every_s : float
        Interval of the broker probe, seconds.

    Attributes
    ----------
    producer : Producer
        The underlying producer (also used for fire-and-forget records, e.g. served lists).
    broker_up : bool
        The last probe got an answer.
    down_since_s : float or None
        ``time.monotonic()`` when the broker stopped answering, None while it answers.
    """

    def __init__(self, brokers: str, ack_timeout_s: float = 5.0, probe_every_s: float = 1.0) -> None:
        self.brokers, self.ack_timeout_s, self.probe_every_s = brokers, ack_timeout_s, probe_every_s
        self.producer = make_producer(brokers, **{"message.timeout.ms": max(int(ack_timeout_s * 1000), 1000)})
        self._admin = AdminClient({"bootstrap.servers": brokers})
        self.broker_up = True
        self.down_since_s: float | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> DurableProducer:
        self._probe()  # the first answer before the app serves
        for target, name in ((self._poll_forever, "producer-poller"), (self._probe_forever, "broker-probe")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def alive(self) -> bool:
        """The poller and probe threads run (liveness)."""
        return all(t.is_alive() for t in self._threads)

    async def produce_acked(self, records: Sequence[tuple[str, bytes | None, bytes]]) -> None:
        """Produce ``(topic, key, value)`` records and wait for the broker's acknowledgement of all.

        Raises
        ------
        BrokerUnavailable
            At once while the probe finds the broker down; else if any record failed or was
            not acknowledged within ``ack_timeout_s``.
        """
        if not self.broker_up:
            raise BrokerUnavailable("the event broker is unreachable; events are not accepted until it is back")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[KafkaError | None] = loop.create_future()
        left = [len(records)]
        lock = threading.Lock()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:  # on whichever thread polls
            with lock:
                left[0] -= 1
                finished = left[0] == 0
            if finished or err is not None:
                loop.call_soon_threadsafe(_resolve, done, err)

        try:
            for topic, key, value in records:
                self.producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
        except (BufferError, KafkaException) as exc:
            raise BrokerUnavailable(f"the producer cannot take more events now ({exc})") from exc
        try:
            err = await asyncio.wait_for(asyncio.shield(done), self.ack_timeout_s + 0.5)
        except TimeoutError as exc:
            raise BrokerUnavailable(f"the broker did not acknowledge within {self.ack_timeout_s:g} s") from exc
        if err is not None:
            raise BrokerUnavailable(f"the broker did not acknowledge: {err}")

    def stop(self, flush_s: float = 10.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self.producer.flush(flush_s)

    def _poll_forever(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def _probe_forever(self) -> None:
        while not self._stop.wait(self.probe_every_s):
            self._probe()

    def _probe(self) -> None:
        try:
            self._admin.list_topics(timeout=min(self.probe_every_s, 2.0))
            ok = True
        except KafkaException:
            ok = False
        if ok != self.broker_up:
            if ok:
                log.warning("the event broker answers again after %.1f s", time.monotonic() - (self.down_since_s or 0))
            else:
                log.error("the event broker %s does not answer; POST /v1/events answers 503", self.brokers)
        self.broker_up = ok
        self.down_since_s = None if ok else (self.down_since_s or time.monotonic())


def _resolve(fut: asyncio.Future[KafkaError | None], err: KafkaError | None) -> None:
    if not fut.done():
        fut.set_result(err)
