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
