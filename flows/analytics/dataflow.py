"""The analytics dataflow: ``events`` + ``served`` -> per-partition attribution and counters -> ``analytics``.

Run: ``python -m bytewax.run flows.analytics.dataflow:flow -w 1`` (settings from ``fusionrec.toml`` and
``FUSIONREC_*``). A flow of its own, beside ``flows/realtime.py`` and built the same way: it
reads every partition of ``events`` from the offset stored in its own RocksDB
(``state_dir/analytics/<topic>/p0003``), joins feedback to served lists
(``operators/analytics/join.py``) and commits counters and offset in one write batch, so a
``kill -9`` changes nothing in the final counters. ``flow`` is built on first access.
"""

from __future__ import annotations

import logging
from functools import partial

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.dataflow import Dataflow

from flows.analytics.logic import (
    AnalyticsLogic,
    AnalyticsResources,
    analytics_state_dir,
)
from flows.entry import lazy_flow
from flows.routing import bytewax_workers, partition_key
from flows.source import OffsetReset, ReportSink, ResumingKafkaSource, parse_by_partition
from operators.analytics.apply import SERVED_OFFSET
from operators.kafka import analytics_topic, check_co_partitioned, ensure_topics
from operators.parse import EventRules, kafka_timestamp_s
from operators.schema import DeadLetter, Event
from operators.settings import Settings

__all__ = ["build_flow"]

log = logging.getLogger(__name__)


def build_flow(settings: Settings, layout: tuple[int, int] | None = None) -> Dataflow:
    """Wire the analytics dataflow (creates the compacted ``analytics`` topic if missing).

    ``layout``: Bytewax ``(processes, workers_per_process)`` (default: those of the ``bytewax.run``
    command line); partitions are spread over the processes (:mod:`flows.routing`)."""
    k, s = settings.kafka, settings.stream
    ensure_topics(k.brokers, [analytics_topic(settings)])
    check_co_partitioned(k.brokers, [k.events_topic, k.served_topic])  # the join is per partition
    rules = EventRules.from_settings(settings)
    res = AnalyticsResources(settings)
    flow = Dataflow("analytics")
    src = ResumingKafkaSource(k.brokers.split(","), k.events_topic, analytics_state_dir(settings),
                              batch_size=s.batch_size, also={k.served_topic: SERVED_OFFSET},
                              offset_policy=s.offset_beyond_end)
    msgs = op.input("events", flow, src)                                  # KafkaSourceMessage | KafkaError
    to_key = partial(_parse, rules, k.served_topic, layout=layout or bytewax_workers())
    keyed = op.filter_map("parse", msgs, to_key)  # (partition_key, (partition, offset, parsed, served, received_ts))
    reports = op.stateful_batch("join", keyed, lambda _resume: AnalyticsLogic(res))  # (partition_key, AnalyticsReport)
    op.output("reports", reports, ReportSink())
    return flow


def _parse(rules: EventRules, served_topic: str, msg: KafkaSourceMessage | KafkaError, *,
           layout: tuple[int, int] = (1, 1)
           ) -> tuple[str, tuple[int, int, Event | DeadLetter, bool, float | None]] | None:
    """``parse_by_partition``, tagged with whether the message came from the served-list topic and with
    its record's Kafka timestamp (epoch s, None if the log gave none: last touch's ``attribution_ts``);
    an ``OffsetReset`` of either topic passes through, tagged the same way."""
    if isinstance(msg, OffsetReset):
        return (partition_key(msg.partition, *layout),  # type: ignore[return-value]
                (msg.partition, -2, msg, msg.topic == served_topic, None))
    out = parse_by_partition(rules, msg, wake=False, layout=layout)
    if out is None or not isinstance(msg, KafkaSourceMessage):
        return None
    key, (partition, offset, parsed) = out
    assert parsed is not None
    return key, (partition, offset, parsed, msg.topic == served_topic, kafka_timestamp_s(msg.timestamp))


__getattr__ = lazy_flow(build_flow)  # bytewax.run's ``flow``, built on first access
