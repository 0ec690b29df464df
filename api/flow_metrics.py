"""The flow's and the optimizer's side of ``GET /metrics``: counters the real-time flow publishes per
partition (the stats topic), consumer lag, the optimizer's feedback lag and the model versions.

The flow publishes each partition's counters to the compacted topic ``kafka.flow_stats_topic()``
(flows/partition_logic.py ``FlowStats``: applied, duplicates, dead letters by reason from the
partition's database, scoring time of the worker that owns it, the model version); the API keeps
the latest record per partition (a ``TopicTable``), so every replica exports the same numbers
wherever the flow runs.

==================================================  =======  =================================
metric                                              type     labels
==================================================  =======  =================================
``fusionrec_flow_applied_total``                    counter  partition
``fusionrec_flow_duplicates_total``                 counter  partition
``fusionrec_flow_dead_letters_total``               counter  partition, reason
``fusionrec_flow_consumer_lag_messages``            gauge    partition (log end - next offset)
``fusionrec_flow_scoring_seconds``                  summary  partition (sum and count of batches)
``fusionrec_flow_users_scored_total``               counter  partition
``fusionrec_flow_stats_age_seconds``                gauge    partition (since the flow published)
``fusionrec_flow_model_info``                       gauge    partition, version (1)
``fusionrec_optimizer_feedback_lag_messages``       gauge    partition (events not yet folded)
``fusionrec_optimizer_feedback_clock_age_seconds``  gauge    (now - newest served list folded)
``fusionrec_api_model_info``                        gauge    version (1; the API's model)
==================================================  =======  =================================
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily

from operators.kafka import high_watermarks

if TYPE_CHECKING:
    from api.services import Services

__all__ = ["flow_metrics_text"]


class _FlowCollector:
    """One scrape's metric families (``prometheus_client`` custom collector)."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        svc, k = self.svc, self.svc.settings.kafka
        now = time.time()
        stats = {int(key): v for key, v in svc.flow_stats.items() if isinstance(v, dict) and key.isdigit()}
        try:
            ends = high_watermarks(k.brokers, k.events_topic, timeout_s=2.0)
        except Exception:  # the broker is away: the lag gauges are left out of this scrape, never a 500
            ends = {}
        applied = CounterMetricFamily("fusionrec_flow_applied", "Events the flow applied", labels=["partition"])
        dups = CounterMetricFamily("fusionrec_flow_duplicates", "Events skipped as duplicates (event_id)",
                                   labels=["partition"])
        dead = CounterMetricFamily("fusionrec_flow_dead_letters", "Dead letters by reason", labels=["partition", "reason"])
        lag = GaugeMetricFamily("fusionrec_flow_consumer_lag_messages", "Events log end minus the flow's next offset",
                                labels=["partition"])
        score = SummaryMetricFamily("fusionrec_flow_scoring_seconds", "Scoring time of changed users per batch",
                                    labels=["partition"])
        scored = CounterMetricFamily("fusionrec_flow_users_scored", "Users (re)scored", labels=["partition"])
        age = GaugeMetricFamily("fusionrec_flow_stats_age_seconds", "Seconds since the partition published its stats",
                                labels=["partition"])
        model = GaugeMetricFamily("fusionrec_flow_model_info", "Model version the partition scores with",
                                  labels=["partition", "version"])
        for p in sorted(set(stats) | set(ends)):
            st, label = stats.get(p), [str(p)]
            if st is not None:
                applied.add_metric(label, float(st.get("applied", 0)))
                dups.add_metric(label, float(st.get("duplicates", 0)))
                for reason, n in sorted((st.get("dead") or {}).items()):
                    dead.add_metric([str(p), reason], float(n))
                score.add_metric(label, count_value=float(st.get("score_batches", 0)),
                                 sum_value=float(st.get("score_s_sum", 0.0)))
                scored.add_metric(label, float(st.get("users_scored", 0)))
                age.add_metric(label, max(0.0, now - float(st.get("updated_ts", now))))
                model.add_metric([str(p), str(st.get("model_version") or "none")], 1.0)
            if p in ends:
                lag.add_metric(label, float(max(0, ends[p] - (st.get("next_offset", 0) if st else 0))))
        yield from (applied, dups, dead, lag, score, scored, age, model)
        reader = svc.reader
        fb = GaugeMetricFamily("fusionrec_optimizer_feedback_lag_messages",
                               "Events the optimizer's feedback reader has not folded yet", labels=["partition"])
        if reader is not None:
            for p, end in sorted(ends.items()):
                fb.add_metric([str(p)], float(max(0, end - reader.offsets.get((k.events_topic, p), 0))))
        yield fb
        clock = GaugeMetricFamily("fusionrec_optimizer_feedback_clock_age_seconds",
                                  "Now minus the time of the newest served list the optimizer folded")
        if svc.fold.clock > 0:
            clock.add_metric([], max(0.0, now - svc.fold.clock))
        yield clock
        version = svc.models.current()
        info = GaugeMetricFamily("fusionrec_api_model_info", "Model version the API serves with", labels=["version"])
        info.add_metric([version.version if version is not None else "none"], 1.0)
        yield info


def flow_metrics_text(svc: Services) -> bytes:
    """The families above in Prometheus text format (blocking: asks the broker for the log end)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FlowCollector(svc))  # type: ignore[arg-type]
    return generate_latest(registry)
