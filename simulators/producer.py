"""``EventProducer``: events (key = user_id) and catalog items (key = item_id) into Kafka, paced, with counts.

One partitioner for every producer: ``murmur2_random`` is librdkafka's name for the Java
client's murmur2 (``(murmur2(key) & 0x7fffffff) % partitions``; keyless messages go to a random
partition), so a shop's JVM producers put a user on the same partition as ours.

Compression defaults to ``none``: the local Tansu broker (0.6) gives a compressed record batch
a single offset, which breaks per-message offsets. Use ``compression="lz4"`` with Apache Kafka.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from tqdm import tqdm

from operators.attribution import REQUEST_TYPE
from operators.ids import BadId, canonical_id
from operators.kafka import producer_config
from operators.schema import Event, encode_event
from operators.settings import KafkaSettings

__all__ = ["EventProducer"]

log = logging.getLogger(__name__)

_POLL_EVERY = 1000
_MAX_SLEEP_S = 0.5


class EventProducer:
    """Produce ``Event``s and catalog items to Kafka; count deliveries and errors; flush on close.

    Parameters
    ----------
    brokers : str
        Bootstrap servers, ``host:port[,host:port]``.
    events_topic, catalog_topic : str
        Where events and item records go.
    linger_ms : int
        How long librdkafka waits to fill a batch.
    compression : {"none", "lz4", "zstd", "gzip", "snappy"}
        Batch compression (``none`` for the Tansu broker, see module docstring).
    config : mapping, optional
        Extra librdkafka settings (override the defaults).

    Attributes
    ----------
    sent : int
        Messages handed to librdkafka.
    delivered : int
        Messages the broker acknowledged (after ``flush``/``close`` this is final).
    errors : collections.Counter[str]
        Delivery errors by librdkafka error name (e.g. ``_MSG_TIMED_OUT``).

    Examples
    --------
    >>> with EventProducer("127.0.0.1:9092") as p:      # doctest: +SKIP
    ...     p.send_catalog(shop.catalog())
    ...     p.send_events(shop.events(10_000), rate_per_s=500)
    """

    def __init__(
        self,
        brokers: str,
        *,
        events_topic: str = "events",
        catalog_topic: str = "catalog",
        served_topic: str | None = "served",
        linger_ms: int = 5,
        compression: str = "none",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.events_topic = events_topic
        self.catalog_topic = catalog_topic
        self.served_topic = served_topic
        self._producer = Producer(
            producer_config(brokers, **{"linger.ms": linger_ms, "compression.type": compression,
                                        "queue.buffering.max.messages": 500_000, **dict(config or {})})
        )
        self.sent = 0
        self.delivered = 0
        self.errors: Counter[str] = Counter()
        self._closed = False

    @classmethod
    def from_settings(cls, kafka: KafkaSettings, **kwargs: Any) -> EventProducer:
        """Build from the ``kafka`` block of ``Settings`` (brokers and topic names)."""
        return cls(
            kafka.brokers, events_topic=kafka.events_topic, catalog_topic=kafka.catalog_topic,
            served_topic=kafka.served_topic, **kwargs
        )

    # ------------------------------------------------------------------ single messages
    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.errors[err.name()] += 1
            log.warning("delivery to %s failed: %s", msg.topic(), err)

    def produce(self, topic: str, key: bytes | None, value: bytes, timestamp_ms: int = 0) -> None:
        """Queue one message (``timestamp_ms`` 0 = now); waits (serving callbacks) while librdkafka's queue is full."""
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery,
                                       timestamp=timestamp_ms)
                break
            except BufferError:
                self._producer.poll(0.05)
        self.sent += 1
        if self.sent % _POLL_EVERY == 0:
            self._producer.poll(0)

    def send(self, event: Event, topic: str | None = None) -> None:
        """Queue one event: key = ``user_id``, value = ``encode_event(event)``; a served list
        (``rec_request``, as the API writes them: simulated A/B logs) goes to ``served_topic``."""
        if topic is None:
            topic = self.served_topic if event.type == REQUEST_TYPE and self.served_topic else self.events_topic
        # a simulated or replayed event ahead of the wall clock (a replay shifted to now, sent faster than
        # real time) is stamped with its own time: the flow bounds ts by the message's timestamp
        ahead = event.ts > time.time()
        self.produce(topic, event.user_id.encode(), encode_event(event), int(event.ts * 1000) if ahead else 0)

    def send_item(self, item: Mapping[str, Any]) -> None:
        """Queue one catalog record: key = ``item_id``, value = its orjson encoding.

        Raises
        ------
        ValueError
            If ``item`` has no valid ``item_id`` (the rule of ``operators.ids``; it is sent canonical).
        """
        try:
            item_id = canonical_id(item.get("item_id"))
        except BadId as exc:
            raise ValueError(f"item_id: {exc}") from exc
        if item_id != item["item_id"]:
            item = {**item, "item_id": item_id}
        self.produce(
            self.catalog_topic, item_id.encode(), orjson.dumps(item, option=orjson.OPT_SERIALIZE_NUMPY)
        )

    def send_catalog(self, items: Iterable[Mapping[str, Any]]) -> int:
        """Queue every item record and flush; returns how many were queued."""
        n = 0
        for item in items:
            self.send_item(item)
            n += 1
        self.flush()
        return n

    # ------------------------------------------------------------------ streams
    def send_events(
        self,
        events: Iterable[Event],
        *,
        rate_per_s: float | None = None,
        speed: float | None = None,
        progress: bool = True,
        total: int | None = None,
        flush: bool = True,
    ) -> int:
        """Queue ``events`` in order, paced, and (by default) flush at the end; returns how many were queued.

        Parameters
        ----------
        events : iterable of Event
            In time order when ``speed`` is used.
        rate_per_s : float, optional
            Fixed pace: at most this many events per wall-clock second.
        speed : float, optional
            Replay pace: event time × ``speed`` (``2.0`` replays an hour in 30 minutes), measured
            from the first event's ``ts``. Events whose ``ts`` goes backwards are sent at once.
        progress : bool
            Show a tqdm progress bar (on stderr).
        total : int, optional
            Length of ``events`` for the progress bar (taken from ``len(events)`` when it has one).
        flush : bool
            Wait for delivery of everything queued before returning.

        Raises
        ------
        ValueError
            If both ``rate_per_s`` and ``speed`` are given, or either is not > 0.

        Notes
        -----
        With neither ``rate_per_s`` nor ``speed`` events go as fast as librdkafka takes them.
        """
        if rate_per_s is not None and speed is not None:
            raise ValueError(
                f"give rate_per_s or speed, not both; got rate_per_s={rate_per_s}, speed={speed}"
            )
        for name, v in (("rate_per_s", rate_per_s), ("speed", speed)):
            if v is not None and not v > 0:
                raise ValueError(f"{name}: must be > 0; got {v}")
        if total is None and hasattr(events, "__len__"):
            total = len(events)  # type: ignore[arg-type]
        bar = tqdm(total=total, unit="ev", disable=not progress, mininterval=0.5, smoothing=0.1)
        t0 = time.monotonic()
        ts0: float | None = None
        n = 0
        try:
            for ev in events:
                if rate_per_s is not None:
                    self._wait_until(t0 + n / rate_per_s)
                elif speed is not None:
                    ts0 = ev.ts if ts0 is None else ts0
                    self._wait_until(t0 + (ev.ts - ts0) / speed)
                self.send(ev)
                n += 1
                if n % 256 == 0:
                    bar.update(256)
            bar.update(n % 256)
        finally:
            bar.close()
        if flush:
            self.flush()
        return n

    def _wait_until(self, t: float) -> None:
        """Serve delivery callbacks until monotonic time ``t``."""
        while (delay := t - time.monotonic()) > 0.001:
            self._producer.poll(min(delay, _MAX_SLEEP_S))

    # ------------------------------------------------------------------ lifecycle
    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still undelivered (0 on success)."""
        return self._producer.flush(timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush; raise if messages are still undelivered after ``timeout_s``.

        Raises
        ------
        confluent_kafka.KafkaException
            If messages remain in the queue after the timeout (the count is in the message).
        """
        if self._closed:
            return
        self._closed = True
        left = self.flush(timeout_s)
        if left:
            raise KafkaException(
                f"{left} messages still undelivered after {timeout_s} s (errors: {dict(self.errors)})"
            )

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
