"""The real-time dataflow: ``events`` -> per-partition RocksDB state -> ``user-topn``.

Run: ``python -m bytewax.run flows.realtime:flow -w 2`` (settings from ``fusionrec.toml`` and
``FUSIONREC_*``). ``flow`` is built on first access, so importing this module does no work.
"""

from __future__ import annotations

import logging
from functools import partial

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows.partition_logic import BatchReport, Parsed, PartitionLogic, WorkerResources
from flows.source import PartitionWake, ResumingKafkaSource
from operators.parse import EventRules, parse_event
from operators.settings import Settings

__all__ = ["build_flow"]

log = logging.getLogger(__name__)


def _parse(rules: EventRules, msg: KafkaSourceMessage | KafkaError | PartitionWake) -> tuple[str, Parsed] | None:
    if isinstance(msg, PartitionWake):
        return str(msg.partition), (msg.partition, -1, None)
    if isinstance(msg, KafkaError):
        log.warning("kafka error in source: %s", msg.err)
        return None
    parsed = parse_event(msg.key, msg.value, rules, topic=msg.topic, partition=msg.partition, offset=msg.offset)
    return str(msg.partition), (msg.partition, msg.offset, parsed)


class _LogReports(StatelessSinkPartition[tuple[str, BatchReport]]):
    def write_batch(self, items: list[tuple[str, BatchReport]]) -> None:
        for _, r in items:
            log.debug("partition %d -> offset %d: %d applied, %d dead, %d dup, %d users scored",
                      r.partition, r.next_offset, r.n_applied, r.n_dead, r.n_duplicates, r.n_users_scored)


class _ReportSink(DynamicSink[tuple[str, BatchReport]]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LogReports:
        return _LogReports()


def build_flow(settings: Settings) -> Dataflow:
    """Wire the dataflow; every callable comes from ``operators``/``flows.partition_logic``."""
    k, s = settings.kafka, settings.stream
    rules = EventRules.from_specs(settings.event_types, s.max_event_bytes)
    res = WorkerResources(settings)
    flow = Dataflow("realtime")
    src = ResumingKafkaSource(k.brokers.split(","), k.events_topic, s.state_dir, batch_size=s.batch_size)
    msgs = op.input("events", flow, src)                                  # KafkaSourceMessage | KafkaError
    keyed = op.filter_map("parse", msgs, partial(_parse, rules))          # (partition, (partition, offset, Event|DeadLetter|None))
    reports = op.stateful_batch("apply", keyed, lambda _resume: PartitionLogic(res))  # (partition, BatchReport)
    op.output("reports", reports, _ReportSink())
    return flow


def __getattr__(name: str) -> Dataflow:
    if name == "flow":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        return build_flow(Settings())
    raise AttributeError(name)
