"""The trainer as the API shows it: the serving version's card and the last runs (ops panel), and Prometheus metrics.

Both read ``stream.model_dir`` (``operators/model_registry.py``): the trainer writes there, the
API only reads, so the trainer runs anywhere that shares the model directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from operators.model_registry import read_card, read_runs
from operators.model_version import latest_version_path

__all__ = ["serving_card", "trainer_ops", "trainer_metrics_text"]


def serving_card(model_dir: Path) -> dict[str, Any] | None:
    """The card of the version LATEST points at: version, model, window, counts, gate verdict and metrics."""
    path = latest_version_path(model_dir)
    if path is None:
        return None
    card = read_card(path)
    gate = card.get("gate") or {}
    return {"version": path.name, "model_name": card.get("model_name"), "window": card.get("window"),
            "counts": card.get("counts"), "train_s": card.get("train_s"), "code_version": card.get("code_version"),
            "verdict": gate.get("verdict"), "reason": gate.get("reason"), "metric": gate.get("metric"),
            "metrics": gate.get("challenger"), "champion_metrics": gate.get("champion")}


def trainer_ops(model_dir: Path, last: int = 5) -> dict[str, Any]:
    """``{"serving": serving_card, "trainer_runs": the last runs, newest first}`` for ``/v1/analytics/ops``."""
    runs = [{k: r.get(k) for k in ("ts", "verdict", "reason", "model", "challenger", "champion", "metric", "metrics",
                                   "queries", "duration_s")} for r in read_runs(model_dir, last)]
    return {"serving": serving_card(model_dir), "trainer_runs": runs[::-1]}


class _TrainerCollector:
    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        runs = read_runs(self.model_dir)
        total = CounterMetricFamily("fusionrec_trainer_runs", "Trainer runs by verdict", labels=["verdict"])
        dur = SummaryMetricFamily("fusionrec_trainer_run_duration_seconds", "Trainer run wall time",
                                  labels=["verdict"])
        by: dict[str, list[float]] = {}
        for r in runs:
            by.setdefault(str(r.get("verdict")), []).append(float(r.get("duration_s") or 0.0))
        for verdict in ("promoted", "rejected", "skipped", "failed"):
            xs = by.get(verdict, [])
            total.add_metric([verdict], len(xs))
            dur.add_metric([verdict], count_value=len(xs), sum_value=sum(xs))
        yield total
        yield dur
        last = GaugeMetricFamily("fusionrec_trainer_last_run_timestamp_seconds", "Epoch seconds of the last run end")
        last.add_metric([], float(runs[-1]["ts"]) if runs else 0.0)
        yield last
        gate = GaugeMetricFamily("fusionrec_trainer_last_gate_metric", "Gate metric of the last gated run",
                                 labels=["model"])
        gated = [r for r in runs if r.get("verdict") in ("promoted", "rejected")]
        for who, v in ((gated[-1].get("metrics") or {}).items() if gated else []):
            if v is not None:
                gate.add_metric([who], float(v))
        yield gate


def trainer_metrics_text(model_dir: Path) -> bytes:
    """Prometheus text of the trainer's outcomes and durations, read from ``trainer_runs.jsonl``."""
    registry = CollectorRegistry()
    registry.register(_TrainerCollector(Path(model_dir)))  # type: ignore[arg-type]
    return generate_latest(registry)
