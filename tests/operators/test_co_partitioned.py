"""``events`` and ``served`` are joined by partition number: topics partitioned apart are refused at start,
by the check itself, the analytics flow and the API (a broker that does not answer is not a refusal there)."""

from __future__ import annotations

import uuid

import pytest

from flows.analytics.dataflow import build_flow
from operators.kafka import TopicLayoutError, TopicSpec, check_co_partitioned, ensure_topics
from tests.harness import make_settings


def _topics(broker: str, *counts: int) -> list[str]:
    names = [f"co-{uuid.uuid4().hex[:8]}" for _ in counts]
    ensure_topics(broker, [TopicSpec(n, c) for n, c in zip(names, counts, strict=True)])
    return names


def test_alike_or_missing_topics_pass(broker):
    a, b = _topics(broker, 3, 3)
    check_co_partitioned(broker, [a, b])
    check_co_partitioned(broker, [a, f"missing-{uuid.uuid4().hex[:8]}"])  # created alike later


def test_topics_partitioned_apart_are_refused(broker):
    a, b = _topics(broker, 4, 2)
    with pytest.raises(TopicLayoutError, match=rf"'{a}' has 4, '{b}' has 2.*with 4 partitions"):
        check_co_partitioned(broker, [a, b])


def test_the_analytics_flow_refuses_them(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=4, create_topics=False)
    s = s.model_copy(update={"analytics": s.analytics.model_copy(update={"topic": f"analytics-{uuid.uuid4().hex[:8]}"})})
    ensure_topics(broker, [TopicSpec(s.kafka.events_topic, 4), TopicSpec(s.kafka.served_topic, 1)])
    with pytest.raises(TopicLayoutError, match="same partition count"):
        build_flow(s)


def test_the_api_refuses_them_before_it_starts_a_reader(broker, tmp_path):
    from api.services import build_services

    s = make_settings(broker, tmp_path, partitions=2, create_topics=False)
    ensure_topics(broker, [TopicSpec(s.kafka.events_topic, 2), TopicSpec(s.kafka.served_topic, 3)])
    with pytest.raises(TopicLayoutError, match=s.kafka.served_topic):
        build_services(s)


def test_fusionrec_topics_says_so_in_one_line(broker, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import flows.commands.platform  # noqa: F401  (registers the platform's commands)
    from flows.cli import app

    tag = uuid.uuid4().hex[:8]
    ensure_topics(broker, [TopicSpec(f"ev-{tag}", 4), TopicSpec(f"sv-{tag}", 1)])
    monkeypatch.chdir(tmp_path)
    for name, value in (("BROKERS", broker), ("EVENTS_TOPIC", f"ev-{tag}"), ("SERVED_TOPIC", f"sv-{tag}"),
                        ("PARTITIONS", "4")):
        monkeypatch.setenv(f"FUSIONREC_KAFKA__{name}", value)
    result = CliRunner().invoke(app, ["topics"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    line, = result.output.strip().splitlines()
    assert line.startswith("fusionrec topics: topics") and f"'sv-{tag}' has 1" in line, line


def test_served_is_created_with_the_partitions_of_existing_events(broker, tmp_path):
    """A shop's broker already holds ``events`` with another count than ``kafka.partitions``: ``served`` is
    created like it, so ``fusionrec run`` and the API start instead of refusing the pair they made."""
    from operators.kafka import platform_topics, topic_partitions

    s = make_settings(broker, tmp_path, partitions=2, create_topics=False)
    ensure_topics(broker, [TopicSpec(s.kafka.events_topic, 3)])
    ensure_topics(broker, platform_topics(s))
    assert len(topic_partitions(broker, s.kafka.served_topic)) == 3
    assert len(topic_partitions(broker, s.kafka.topn_topic)) == 2  # not joined by partition number: as configured
    check_co_partitioned(broker, [s.kafka.events_topic, s.kafka.served_topic])
