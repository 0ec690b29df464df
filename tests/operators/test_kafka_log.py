"""librdkafka's lines through Python logging (``operators/kafka_log.py``): one line per kind and minute, not per reconnect."""

from __future__ import annotations

import logging

import pytest

from operators.kafka_log import KafkaLog, line_kind

REFUSED = ("FAIL [rdkafka#{client}] [thrd:127.0.0.1:9092/{node}]: 127.0.0.1:9092/{node}: Connect to "
           "ipv4#127.0.0.1:9092 failed: Connection refused (after {ms}ms in state CONNECT{more})")


def _refused(client: str = "consumer-1", node: str = "bootstrap", ms: int = 0, more: str = "") -> str:
    return REFUSED.format(client=client, node=node, ms=ms, more=more)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_kind_leaves_out_the_client_the_node_id_and_the_timings():
    kinds = {line_kind(_refused()), line_kind(_refused("producer-17", "111", 12, ", 3 identical error(s) suppressed"))}
    assert kinds == {"FAIL [rdkafka] [thrd:127.0.0.1:9092]: 127.0.0.1:9092: Connect to ipv4#127.0.0.1:9092 failed: "
                     "Connection refused"}
    assert line_kind(_refused().replace("9092", "9093")) not in kinds  # another broker is another kind


def test_a_repeated_kind_is_logged_once_per_window_with_the_count_left_out(caplog: pytest.LogCaptureFixture):
    clock = Clock()
    router = KafkaLog(repeat_s=60.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="operators.kafka_log"):
        for i in range(200):  # 10 s of one client's reconnects, and of nine others
            fac, name, text = _refused(f"consumer-{i % 10}").split(" ", 2)  # as confluent-kafka passes it
            router.log(logging.ERROR, "%s %s %s", fac, name, text)
            clock.t += 0.05
        router.log(logging.INFO, "%s", "FAIL [rdkafka#consumer-1] [thrd:GroupCoordinator]: GroupCoordinator: "
                                       "Disconnected (after 5870ms in state UP)")
        clock.t += 60.0
        router.log(logging.ERROR, "%s", _refused())
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(records) == 3, records
    assert records[0][0] == logging.ERROR and "Connect to ipv4#127.0.0.1:9092 failed" in records[0][1]
    assert records[1][0] == logging.INFO and "Disconnected" in records[1][1]  # another kind: logged at once
    assert records[2][1].endswith("(and 199 more like it in the last 70 s)"), records[2]
