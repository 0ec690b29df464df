"""The real-time dataflow: ``events`` -> per-partition RocksDB state -> ``user-topn``.

Run: ``python -m bytewax.run flows.realtime:flow -w 2`` (settings from ``fusionrec.toml`` and
``FUSIONREC_*``). ``flow`` is built on first access, so importing this module does no work.
"""

from __future__ import annotations

import logging
from functools import partial

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows.entry import lazy_flow
from flows.partition_logic import PartitionLogic, WorkerResources
from flows.routing import bytewax_workers
from flows.source import ReportSink, ResumingKafkaSource, parse_by_partition
from operators.parse import EventRules
from operators.settings import Settings

__all__ = ["build_flow"]

log = logging.getLogger(__name__)


def build_flow(settings: Settings, layout: tuple[int, int] | None = None) -> Dataflow:
    """Wire the dataflow; every callable comes from ``operators``/``flows.partition_logic``.

    ``layout``: Bytewax ``(processes, workers_per_process)`` (default: those of the ``bytewax.run``
    command line); partitions are spread over the processes (:mod:`flows.routing`)."""
    k, s = settings.kafka, settings.stream
    rules = EventRules.from_settings(settings)
    res = WorkerResources(settings)
    flow = Dataflow("realtime")
    src = ResumingKafkaSource(k.brokers.split(","), k.events_topic, s.state_dir, batch_size=s.batch_size,
                              offset_policy=s.offset_beyond_end)
    msgs = op.input("events", flow, src)                                  # KafkaSourceMessage | KafkaError
    to_key = partial(parse_by_partition, rules, layout=layout or bytewax_workers())
    keyed = op.filter_map("parse", msgs, to_key)  # (partition_key, (partition, offset, Event|DeadLetter|None))
    reports = op.stateful_batch("apply", keyed, lambda _resume: PartitionLogic(res))  # (partition_key, BatchReport)
    op.output("reports", reports, ReportSink())
    return flow


__getattr__ = lazy_flow(build_flow)  # bytewax.run's ``flow``, built on first access
