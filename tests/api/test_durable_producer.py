"""``POST /v1/events``' producer (``api/durable_producer.py``): when is the broker *known down*?

A 503 is promised only when the broker cannot acknowledge within ``api.event_ack_timeout_s`` or is
known to be down. One probe without an answer (a loaded broker or box) must not refuse events: the
broker is then only suspect, events are still produced and acknowledged. Known down takes
``down_after_probes`` failed probes in a row spanning at least the ack timeout, or an
acknowledgement that timed out; then events are refused at once, until a probe is answered.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaException

from api.durable_producer import BrokerUnavailable, DurableProducer
from operators.broker import free_port
from operators.kafka import TopicSpec, ensure_topics

pytestmark = pytest.mark.integration


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def topic(broker: str) -> str:
    name = f"durable-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker, [TopicSpec(name, 1)])
    return name


@pytest.fixture
def producer(broker: str) -> Iterator[tuple[DurableProducer, Clock, list[bool]]]:
    """A producer on the real broker whose probe answers as the test says (``answers[0]``); the probe
    thread sleeps (the test calls ``_probe`` itself)."""
    clock = Clock()
    dp = DurableProducer(broker, ack_timeout_s=5.0, probe_every_s=3600.0, clock=clock).start()
    answers = [True]
    real = dp._admin.list_topics

    def list_topics(*args: object, **kwargs: object) -> object:
        if not answers[0]:
            raise KafkaException("probe: no answer within 1 s (the test's)")
        return real(*args, **kwargs)

    dp._admin.list_topics = list_topics  # type: ignore[method-assign]
    try:
        yield dp, clock, answers
    finally:
        dp.stop()


def _produce(dp: DurableProducer, topic: str, n: int = 3) -> float:
    """Produce ``n`` records and wait for their acknowledgement; the seconds it took."""
    t0 = time.monotonic()
    asyncio.run(dp.produce_acked([(topic, b"u", f"v{i}".encode()) for i in range(n)]))
    return time.monotonic() - t0


def test_a_probe_without_an_answer_does_not_refuse_events(producer, topic):
    dp, clock, answers = producer
    answers[0] = False
    for _ in range(10):  # many failed probes, but within less than the ack timeout: suspect, not down
        dp._probe()
        clock.t += 0.4
    assert dp.broker_up and dp.failed_probes == 10 and dp.down_since_s is None
    _produce(dp, topic)  # produced and acknowledged: no 503
    answers[0] = True
    dp._probe()
    assert dp.broker_up and dp.failed_probes == 0


def test_failed_probes_spanning_the_ack_timeout_make_the_broker_known_down_until_one_answers(producer, topic):
    dp, clock, answers = producer
    answers[0] = False
    for _ in range(3):  # 3 in a row, but over 4 s < 5 s
        dp._probe()
        clock.t += 2.0
    assert dp.broker_up
    dp._probe()  # the 4th, 6 s after the first began
    assert not dp.broker_up and dp.down_since_s == 1000.0
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="unreachable"):
        asyncio.run(dp.produce_acked([(topic, b"u", b"v")]))
    assert time.monotonic() - t0 < 0.5  # at once, not after the ack timeout
    answers[0] = True
    dp._probe()  # one answer: up again
    assert dp.broker_up and dp.failed_probes == 0 and dp.down_since_s is None
    _produce(dp, topic)


def test_one_failed_probe_spanning_the_ack_timeout_is_not_enough():
    clock = Clock()
    dp = DurableProducer(f"127.0.0.1:{free_port()}", ack_timeout_s=5.0, probe_every_s=3600.0, clock=clock)
    try:
        dp._probed(False, clock.t)
        clock.t += 30.0  # one probe, however long ago: still only suspect
        dp._probed(False, clock.t - 1.0)
        assert dp.broker_up and dp.failed_probes == 2  # two: still suspect
        dp._probed(False, clock.t)
        assert not dp.broker_up
    finally:
        dp.stop(timeout_s=0.1)


def test_an_acknowledgement_that_timed_out_makes_the_broker_known_down():
    """The real outage: nobody listens at the broker's address. The first request waits the ack
    timeout and gets a 503; the next ones are refused at once."""
    dp = DurableProducer(f"127.0.0.1:{free_port()}", ack_timeout_s=1.0, probe_every_s=3600.0).start()
    try:
        assert dp.broker_up and dp.failed_probes == 1  # the start's probe: suspect only
        t0 = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="did not acknowledge within 1 s"):
            asyncio.run(dp.produce_acked([("events", b"u", b"v")]))
        assert 0.9 < time.monotonic() - t0 < 3.0
        assert not dp.broker_up and dp.down_since_s is not None
        t0 = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="unreachable"):
            asyncio.run(dp.produce_acked([("events", b"u", b"v")]))
        assert time.monotonic() - t0 < 0.5
    finally:
        dp.stop(timeout_s=0.1)


def test_a_stop_ends_a_wait_for_an_acknowledgement_after_its_grace():
    """``fusionrec serve`` stopped while a request waited on a broker that no longer answered (not yet known down):
    uvicorn waits for requests in flight before the lifespan stops, so the stop took the ack timeout (5 s) plus
    ``api.stop_timeout_s``, 7-9 s (new-user trial). ``begin_stop`` (the server stops taking requests) ends the wait
    after its grace with a 503 reason, and a later one by the same deadline; it is no outage (``broker_up`` stays)."""
    dp = DurableProducer(f"127.0.0.1:{free_port()}", ack_timeout_s=5.0, probe_every_s=3600.0).start()

    async def stopped_while_waiting() -> None:
        waiting = asyncio.create_task(dp.produce_acked([("events", b"u", b"v")]))
        await asyncio.sleep(0.1)
        dp.begin_stop(0.2)
        with pytest.raises(BrokerUnavailable, match="the API is stopping"):
            await waiting

    try:
        t0 = time.monotonic()
        asyncio.run(stopped_while_waiting())
        assert time.monotonic() - t0 < 1.5
        assert dp.broker_up
        t0 = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="the API is stopping"):
            asyncio.run(dp.produce_acked([("events", b"u", b"v")]))
        assert time.monotonic() - t0 < 0.5
    finally:
        dp.stop(timeout_s=0.1)
