"""``high_watermarks`` gives the true log end on Tansu, whose reported high watermark is the base offset
of the newest record batch: a reader that trusted it took a just-published snapshot for one lying
beyond the log and folded the whole history again."""

from __future__ import annotations

import pytest

from operators.kafka import TopicSpec, ensure_topics, high_watermarks, make_producer

pytestmark = pytest.mark.integration


def test_end_counts_every_record_of_the_newest_batch(broker):
    topic = "watermarks-batch"
    ensure_topics(broker, [TopicSpec(topic, 2)])
    p = make_producer(broker, **{"linger.ms": 50})
    for i in range(500):  # lingered: a few batches, the newest holding many records
        p.produce(topic, value=b"x%d" % i, partition=0)
    for i in range(3):
        p.produce(topic, value=b"y%d" % i, partition=1)
    assert p.flush(10) == 0
    assert high_watermarks(broker, topic) == {0: 500, 1: 3}


def test_end_of_an_empty_topic_is_zero(broker):
    topic = "watermarks-empty"
    ensure_topics(broker, [TopicSpec(topic, 3)])
    assert high_watermarks(broker, topic) == {0: 0, 1: 0, 2: 0}


def test_a_reader_waits_longer_after_each_failure_and_resets_on_success(broker):
    """A reader asking for the log ends at start (api/feedback_reader.py, operators/topic_table.py)
    retries with a doubled timeout: a broker slow to serve a long partition's tail is waited for
    (trial 13: a fixed 10 s failed on every retry and the restarted API never became ready)."""
    import socket

    from confluent_kafka import KafkaException

    from operators.kafka import PatientEnds

    with socket.socket() as s:  # a port nobody listens on: no answer
        s.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{s.getsockname()[1]}"
    ends = PatientEnds(first_s=0.5, max_s=1.5)
    for expected_next in (1.0, 1.5, 1.5):
        with pytest.raises(KafkaException):
            ends.ends(nobody, "watermarks-patient")
        assert ends.timeout_s == expected_next
    ensure_topics(broker, [TopicSpec("watermarks-patient", 1)])
    assert ends.ends(broker, "watermarks-patient") == {0: 0} and ends.timeout_s == 0.5


def test_end_of_a_long_partition_is_confirmed_without_reading_its_tail(broker):
    """Tansu 0.6's in-memory storage lists every record batch of a partition on each fetch below its end
    and answers empty when the fetch's wait runs out first: reading the tail to EOF with a 10 ms wait
    never got there once a partition held a few 10,000 batches (GET /v1/analytics/ops answered 503
    after ~6 min of `fusionrec run` on a loaded box). The fetch answer's high watermark is the end."""
    topic = "watermarks-long"
    n = 50_000
    ensure_topics(broker, [TopicSpec(topic, 1)])
    one_per_batch = make_producer(broker, **{"linger.ms": 0, "batch.num.messages": 1})
    for i in range(n):
        one_per_batch.produce(topic, value=b"x", partition=0)
        if i % 5000 == 4999:
            assert one_per_batch.flush(30) == 0
    assert one_per_batch.flush(30) == 0
    lingered = make_producer(broker, **{"linger.ms": 50})  # newest batch of many: reported end < true end
    for i in range(50):
        lingered.produce(topic, value=b"y%d" % i, partition=0)
    assert lingered.flush(10) == 0
    assert high_watermarks(broker, topic, timeout_s=5.0) == {0: n + 50}


def test_one_deadline_bounds_the_whole_call(broker, monkeypatch):
    """``timeout_s`` bounds the whole call, not each step: a broker that takes 1 s per step (listing the
    partitions, confirming the ends) is given up on at the 1.5 s deadline; with a bound per step the call
    took 2 s and answered (trial: GET /v1/analytics/ops took 11-26 s under its 10 s bound, then 503)."""
    import time

    from confluent_kafka import KafkaException

    import operators.kafka as kafka

    topic = "watermarks-deadline"
    ensure_topics(broker, [TopicSpec(topic, 2)])

    def slow(step, delay_s: float):  # a broker that answers this step after delay_s (a fault injected)
        def answer(*args, **kwargs):
            *rest, timeout_s = args
            if timeout_s < delay_s:
                time.sleep(timeout_s)
                raise KafkaException(f"{step}: timed out after {timeout_s} s")
            time.sleep(delay_s)
            return step(*rest, timeout_s - delay_s, **kwargs)
        return answer

    monkeypatch.setattr(kafka, "topic_partitions", slow(kafka.topic_partitions, 1.0))
    monkeypatch.setattr(kafka, "confirmed_ends", slow(kafka.confirmed_ends, 1.0))
    t0 = time.monotonic()
    with pytest.raises(KafkaException):
        high_watermarks(broker, topic, timeout_s=1.5)
    assert time.monotonic() - t0 < 1.9
    assert high_watermarks(broker, topic, timeout_s=5.0) == {0: 0, 1: 0}  # time enough for both steps
