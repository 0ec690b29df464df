"""The API's producer, made honest: ``POST /v1/events`` answers 202 only after the broker acknowledged.

A poller thread serves the producer's delivery reports and resolves the waiting requests'
futures on the event loop; a probe thread asks the broker for metadata every ``probe_every_s``
(waiting up to 2 s, at most ``ack_timeout_s``, for the answer).
The broker is *known down* (``broker_up`` False: ``/readyz`` says so and events are refused at
once with 503 instead of queueing) only on evidence as strong as the acknowledgement timeout
itself: ``down_after_probes`` (3) probes in a row without an answer, spanning at least
``ack_timeout_s``, or an acknowledgement that timed out. One slow probe (a loaded broker or box)
only makes it *suspect*: events are still produced and each request waits up to ``ack_timeout_s``
for its acknowledgement. The first probe answered makes it up again. The producer's
``message.timeout.ms`` equals the acknowledgement timeout, so an event refused with 503 is not
delivered later behind the client's back (except one whose acknowledgement was lost in flight: a
client that retries with the same ``event_id`` lets the flow drop the copy).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka.admin import AdminClient

from operators.kafka import client_config, make_producer

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
    down_after_probes : int
        Failed probes in a row (spanning at least ``ack_timeout_s``) that make the broker known down.
    clock : callable
        Monotonic seconds (tests pass their own).

    Attributes
    ----------
    producer : Producer
        The underlying producer (also used for fire-and-forget records, e.g. served lists).
    broker_up : bool
        False while the broker is known down (see the module): events are refused at once.
    failed_probes : int
        Probes in a row without an answer (0 after one answered); > 0 with ``broker_up``: suspect.
    down_since_s : float or None
        ``clock()`` when the broker stopped answering (the first failed probe of the run), None while
        it is not known down.
    """

    def __init__(self, brokers: str, ack_timeout_s: float = 5.0, probe_every_s: float = 1.0,
                 down_after_probes: int = 3, clock: Callable[[], float] = time.monotonic) -> None:
        self.brokers, self.ack_timeout_s, self.probe_every_s = brokers, ack_timeout_s, probe_every_s
        self.down_after_probes, self._clock = max(1, down_after_probes), clock
        self.producer = make_producer(brokers, **{"message.timeout.ms": max(int(ack_timeout_s * 1000), 1000)})
        self._admin = AdminClient(client_config(brokers))  # long-lived: each probe also serves its log lines
        self.broker_up = True
        self.failed_probes = 0
        self._failing_since_s: float | None = None  # start of the first failed probe of the run
        self.down_since_s: float | None = None
        self._state = threading.Lock()  # probe thread and event loop both change the state
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stop_at: float | None = None  # the server stops: ``loop.time()`` when waits end (``begin_stop``)
        self._waiting: set[asyncio.Future[object]] = set()  # the requests' acknowledgement futures

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
            At once while the broker is known down; else (also while it is only suspect) if any
            record failed or was not acknowledged within ``ack_timeout_s`` (a timeout makes the
            broker known down until a probe gets an answer).
        """
        if not self.broker_up:
            raise BrokerUnavailable("the event broker is unreachable; events are not accepted until it is back")
        loop = asyncio.get_running_loop()
        wait_s = self.ack_timeout_s + 0.5
        if self._stop_at is not None:  # the server stops: a healthy broker still acknowledges within the grace
            wait_s = min(wait_s, max(0.0, self._stop_at - loop.time()))
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
        self._waiting.add(done)  # type: ignore[arg-type]
        try:
            err = await asyncio.wait_for(asyncio.shield(done), wait_s)
        except TimeoutError as exc:
            if self._stop_at is not None:
                raise BrokerUnavailable(_STOPPING_REASON) from exc
            self._ack_timed_out()
            raise BrokerUnavailable(f"the broker did not acknowledge within {self.ack_timeout_s:g} s") from exc
        finally:
            self._waiting.discard(done)  # type: ignore[arg-type]
        if err is _STOPPED:
            raise BrokerUnavailable(_STOPPING_REASON)
        if err is not None:
            if err.code() in (KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT):
                self._ack_timed_out()
                raise BrokerUnavailable(f"the broker did not acknowledge within {self.ack_timeout_s:g} s")
            raise BrokerUnavailable(f"the broker did not acknowledge: {err}")

    def begin_stop(self, grace_s: float) -> None:
        """The server stops (called on the event loop when it stops taking requests, before it waits for those in
        flight): a request still waiting for its acknowledgement ``grace_s`` seconds from now is answered 503 (nothing
        of it was accepted; its events may still arrive, and a retry with the same ``event_id`` is dropped by the
        flow as a copy), and so is one produced later that is not acknowledged by then. Without it, a broker that
        stopped answering held the stop for up to ``ack_timeout_s`` before ``api.stop_timeout_s`` even began."""
        if self._stop_at is not None:
            return
        loop = asyncio.get_running_loop()
        self._stop_at = loop.time() + max(0.0, grace_s)
        for fut in list(self._waiting):
            loop.call_at(self._stop_at, _resolve, fut, _STOPPED)

    def request_stop(self) -> None:
        """Ask the poller and probe threads to stop, without waiting (``stop`` waits)."""
        self._stop.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the threads and deliver what is still queued, within ``timeout_s`` seconds in all.

        Events answered 202 were acknowledged before the answer, so what may be queued here is only what nobody
        waits for: served lists (fire-and-forget) and events already answered 503. Left undelivered when the broker
        does not answer in time (logged with their count), not waited for up to ``message.timeout.ms``."""
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        for t in self._threads:  # the probe may be waiting up to 2 s for the broker: a daemon, left if it is
            t.join(min(5.0, max(0.0, deadline - time.monotonic())))
        left = self.producer.flush(max(0.0, deadline - time.monotonic()))
        if left:
            log.warning("%d records (served lists, events answered 503) not delivered at stop: the broker %s did not "
                        "acknowledge them within the stop's %.1f s", left, self.brokers, timeout_s)

    def _poll_forever(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def _probe_forever(self) -> None:
        while not self._stop.wait(self.probe_every_s):
            self._probe()

    def _probe(self) -> None:
        started = self._clock()
        try:
            # 2 s (at most the ack timeout), however often it probes: a loaded broker's metadata may take a second
            self._admin.list_topics(timeout=min(2.0, self.ack_timeout_s))
            ok = True
        except KafkaException:
            ok = False
        self._admin.poll(0)  # its librdkafka lines go to Python logging here (else they pile up in its queue)
        self._probed(ok, started)

    def _probed(self, ok: bool, started: float) -> None:
        """Count one probe's outcome (``started``: its ``clock()`` at the start)."""
        with self._state:
            if ok:
                if not self.broker_up:
                    log.warning("the event broker %s answers again after %.1f s; POST /v1/events accepts events",
                                self.brokers, self._clock() - (self.down_since_s or started))
                elif self.failed_probes:
                    log.info("the event broker %s answers again after %d probes without an answer", self.brokers,
                             self.failed_probes)
                self.broker_up, self.failed_probes, self._failing_since_s, self.down_since_s = True, 0, None, None
                return
            self.failed_probes += 1
            if self._failing_since_s is None:
                self._failing_since_s = started
                if self.broker_up:
                    log.info("the event broker %s did not answer a probe; events are still produced (503 once it "
                             "does not answer for %g s, or an acknowledgement times out)", self.brokers,
                             self.ack_timeout_s)
            span = self._clock() - self._failing_since_s
            if self.broker_up and self.failed_probes >= self.down_after_probes and span >= self.ack_timeout_s:
                self._mark_down(f"no answer to {self.failed_probes} probes in {span:.1f} s")

    def _ack_timed_out(self) -> None:
        """An acknowledgement did not come within ``ack_timeout_s``: known down until a probe is answered."""
        with self._state:
            if self.broker_up:
                if self._failing_since_s is None:
                    self._failing_since_s = self._clock() - self.ack_timeout_s
                self._mark_down(f"no acknowledgement within {self.ack_timeout_s:g} s")

    def _mark_down(self, why: str) -> None:
        """Known down (with ``_state`` held)."""
        self.broker_up = False
        self.down_since_s = self._failing_since_s
        log.error("the event broker %s does not answer (%s); POST /v1/events answers 503 until it does",
                  self.brokers, why)


_STOPPED = object()
"""The result of an acknowledgement future that ``begin_stop`` ended."""

_STOPPING_REASON = "the API is stopping and the broker had not acknowledged the events yet"


def _resolve(fut: asyncio.Future[KafkaError | None], err: KafkaError | None | object) -> None:
    if not fut.done():
        fut.set_result(err)
