"""The learning loop over HTTP: ``/metrics`` exports trainer outcomes and durations, the ops panel's data shows runs."""

from __future__ import annotations

import httpx
import pytest

from operators.lake.schema import events_table
from operators.lake.store import LakePartition
from operators.trainer import run_once
from simulators.shop import SyntheticShop
from tests.harness import ApiServer, make_settings

pytestmark = pytest.mark.integration


def test_trainer_runs_on_metrics_and_ops(broker, tmp_path):
    s = make_settings(broker, tmp_path)
    s = s.model_copy(update={
        "lake": s.lake.model_copy(update={"lake_dir": tmp_path / "lake"}),
        "trainer": s.trainer.model_copy(update={"window_days": 1.0, "min_events": 500}),
        "gate": s.gate.model_copy(update={"holdout_hours": 1.0, "min_queries": 100})})
    events = SyntheticShop(n_items=300, n_users=200, seed=2).history(20000, rate_per_s=2.0)
    LakePartition(s.lake.lake_dir, "events", 0).append(events_table([(0, k, e) for k, e in enumerate(events)]),
                                                        len(events))
    runs = [run_once(s, model="pop"), run_once(s, model="pop"), run_once(s, model="covisit")]
    assert [r["verdict"] for r in runs] == ["promoted", "rejected", "promoted"]
    with ApiServer(s) as api:
        text = httpx.get(f"{api.url}/metrics", timeout=10).text
        assert 'fusionrec_trainer_runs_total{verdict="promoted"} 2.0' in text
        assert 'fusionrec_trainer_runs_total{verdict="rejected"} 1.0' in text
        assert 'fusionrec_trainer_run_duration_seconds_count{verdict="promoted"} 2.0' in text
        assert f'fusionrec_trainer_last_gate_metric{{model="challenger"}} {runs[2]["metrics"]["challenger"]}' in text
        ops = httpx.get(f"{api.url}/v1/analytics/ops", timeout=10).json()
    assert [r["verdict"] for r in ops["trainer_runs"]] == ["promoted", "rejected", "promoted"]  # newest first
    assert ops["trainer_runs"][1]["reason"].startswith("HR@20")
    card = ops["serving"]
    assert card["version"] == runs[2]["challenger"] == ops["model_version"]
    assert card["model_name"] == "covisit" and card["verdict"] == "promoted" and card["metrics"]["HR@20"] > 0
    assert card["champion_metrics"]["HR@20"] == runs[2]["metrics"]["champion"]
