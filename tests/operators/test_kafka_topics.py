"""``operators.kafka.platform_topics``: every topic the platform uses, created by ``fusionrec topics`` and by
``fusionrec run`` at start and after its embedded broker came back empty (``flows/commands/platform.py`` ``_topics``)."""

from __future__ import annotations

import uuid

from typer.testing import CliRunner

import flows.commands.platform  # noqa: F401  (registers the platform's commands)
from flows.cli import app
from operators.kafka import TopicSpec, analytics_topic, platform_topics, topic_partitions
from tests.harness import make_settings


def test_the_analytics_topic_is_a_platform_topic(broker, tmp_path):
    """The analytics flow's and the API's spec: one compacted partition (trial 31, finding 1: after a broker
    restart it came back auto-created with the broker's default of 4 partitions, not compacted)."""
    s = make_settings(broker, tmp_path, create_topics=False)
    assert analytics_topic(s) == TopicSpec(s.analytics.topic, 1, compacted=True)
    assert analytics_topic(s) in platform_topics(s)


def test_fusionrec_topics_creates_the_analytics_topic_as_configured(broker, tmp_path, monkeypatch):
    """What ``run`` calls after the broker restarts: ``analytics`` with its 1 partition, before any client
    (a producer, or a reader asking for its partitions) makes the broker auto-create it with its default."""
    tag = uuid.uuid4().hex[:8]
    monkeypatch.chdir(tmp_path)
    for name, value in (("KAFKA__BROKERS", broker), ("KAFKA__EVENTS_TOPIC", f"ev-{tag}"),
                        ("KAFKA__SERVED_TOPIC", f"sv-{tag}"), ("KAFKA__TOPN_TOPIC", f"tn-{tag}"),
                        ("KAFKA__PARTITIONS", "2"), ("ANALYTICS__TOPIC", f"an-{tag}")):
        monkeypatch.setenv(f"FUSIONREC_{name}", value)
    result = CliRunner().invoke(app, ["topics"])
    assert result.exit_code == 0, result.output
    assert topic_partitions(broker, f"an-{tag}") == [0]
    assert topic_partitions(broker, f"ev-{tag}") == topic_partitions(broker, f"sv-{tag}") == [0, 1]
