"""The archiving dataflow: ``events`` and ``catalog`` -> Parquet files by date in the lake, exactly once.

Run: ``python -m bytewax.run flows.archive.dataflow:flow -w 1`` (or ``fusionrec archive``; settings from
``fusionrec.toml`` and ``FUSIONREC_*``). ``flow`` is built on first access.
"""

from __future__ import annotations

from functools import partial

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows.archive.logic import ArchiveLogic, LakeSource, to_archive_row
from flows.entry import lazy_flow
from flows.source import ReportSink
from operators.parse import EventRules
from operators.settings import Settings

__all__ = ["build_flow"]


def build_flow(settings: Settings) -> Dataflow:
    """Wire the archiver; the logic lives in ``flows/archive/logic.py`` and ``operators/lake/``."""
    k = settings.kafka
    tables = {k.events_topic: "events", k.catalog_topic: "catalog"}
    rules = EventRules.from_settings(settings)
    flow = Dataflow("archive")
    src = LakeSource(k.brokers.split(","), tables, str(settings.lake.lake_dir), batch_size=settings.stream.batch_size,
                     offset_policy=settings.stream.offset_beyond_end)
    msgs = op.input("topics", flow, src)                                               # KafkaSourceMessage | KafkaError
    rows = op.filter_map("key", msgs, partial(to_archive_row, tables, rules))          # ("events:3", (table, partition, offset, payload))
    reports = op.stateful_batch("write", rows, lambda _resume: ArchiveLogic(settings.lake))  # ("events:3", ArchiveReport)
    op.output("reports", reports, ReportSink())
    return flow


__getattr__ = lazy_flow(build_flow)  # bytewax.run's ``flow``, built on first access
