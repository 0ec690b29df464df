"""The analytics flow on a real broker: a simulated A/B test with duplicates, late events and
``kill -9``s; the counters equal a straightforward recount, and the API reports them, with an
uplift whose interval covers the simulator's true effect.

Run alone: ``.venv/bin/python -m pytest tests/analytics/test_flow.py -s`` (prints the measured
uplift next to the simulator's truth).
"""

from __future__ import annotations

import csv
import io
import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from flows.analytics.logic import analytics_state_dir
from operators.analytics.join import COUNTER_FIELDS, GROUP_FIELDS
from operators.kafka import high_watermarks
from operators.settings import Settings
from simulators.producer import EventProducer
from state.analytics import COUNTER, GROUP, AnalyticsStore, split_key
from state.partition import PartitionDB, list_partitions, partition_path, read_stored_offset
from tests.analytics.conftest import ab_simulation, with_noise
from tests.analytics.recount import recount
from tests.harness import ApiServer, FlowProcess, make_settings, wait_caught_up

pytestmark = pytest.mark.integration

FLOW = "flows.analytics.dataflow:flow"


def analytics_settings(broker: str, tmp: Path) -> Settings:
    s = make_settings(broker, tmp, partitions=4)
    return s.model_copy(update={"analytics": s.analytics.model_copy(
        update={"topic": f"analytics-{s.kafka.events_topic.split('-')[-1]}"})})


def stored(s: Settings) -> int:
    d = analytics_state_dir(s)
    return sum(read_stored_offset(d, s.kafka.events_topic, p) or 0 for p in range(s.kafka.partitions))


def dump(s: Settings) -> tuple[dict, dict]:
    """Counters and group stats in the analytics databases, summed over partitions (read-only open)."""
    counters: dict = {}
    groups: dict = {}
    d = analytics_state_dir(s)
    for p in list_partitions(d, s.kafka.events_topic):
        db = PartitionDB(partition_path(d, s.kafka.events_topic, p), read_only=True)
        try:
            st = AnalyticsStore(db)
            for prefix, n, fields, out in ((COUNTER, len(COUNTER_FIELDS), COUNTER_FIELDS, counters),
                                           (GROUP, len(GROUP_FIELDS), GROUP_FIELDS, groups)):
                for k, v in st.scan_vectors(prefix, n):
                    parts, bucket = split_key(k)
                    row = out.setdefault((*parts, bucket), dict.fromkeys(fields, 0.0))
                    for f, x in zip(fields, v.tolist(), strict=True):
                        row[f] += x
        finally:
            db.close()
    return counters, groups


def clean(d: dict) -> dict:
    out = {k: {f: round(x, 6) for f, x in v.items() if x} for k, v in d.items()}
    return {k: v for k, v in out.items() if v}


def test_ab_run_with_kill9_equals_recount_and_api_reports_uplift(broker, tmp_path):
    s = analytics_settings(broker, tmp_path)
    sim = ab_simulation(5000, seed=7)
    log = with_noise(sim.events(), seed=1)

    def produce() -> None:
        with EventProducer.from_settings(s.kafka) as p:
            p.send_events(log, rate_per_s=6000, progress=False)

    producer = threading.Thread(target=produce)
    producer.start()
    rng = random.Random(5)
    cfg = tmp_path / "analytics.toml"
    flow = FlowProcess(s, cfg, flow=FLOW).start()
    kills, at_kill = 0, []
    try:
        while producer.is_alive() or kills < 3:
            before = stored(s)
            deadline = time.monotonic() + 60
            while stored(s) <= before and time.monotonic() < deadline and (producer.is_alive() or kills < 3):
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.3))
            at_kill.append(stored(s))
            flow.kill9()
            kills += 1
            flow = FlowProcess(s, cfg, flow=FLOW).start()
        producer.join()
        wait_caught_up(s, flow, timeout_s=180, state_dir=analytics_state_dir(s))
    finally:
        flow.stop()
    assert sum(0 < n < len(log) for n in at_kill) >= 2, f"kills did not land mid-stream: {at_kill}"

    want_c, want_g = recount(log)
    got_c, got_g = dump(s)
    assert clean(got_c) == clean(want_c)
    assert clean(got_g) == clean(want_g)

    with ApiServer(s) as api:
        end = sum(high_watermarks(s.kafka.brokers, s.kafka.events_topic).values())
        deadline = time.monotonic() + 60
        report = None
        while time.monotonic() < deadline:
            ops = httpx.get(f"{api.url}/v1/analytics/ops", timeout=10).json()
            if sum(p["analytics_offset"] for p in ops["partitions"]) >= end:
                report = httpx.get(f"{api.url}/v1/analytics/campaigns/home", timeout=10).json()
                totals = {a["arm"]: a["totals"] for a in report["arms"]}
                if sum(t["requests"] for t in totals.values()) == sum(v["requests"] for v in want_c.values()):
                    break
            time.sleep(0.3)
        assert report is not None, "the API never caught up with the analytics topic"
        per_arm: dict[str, dict[str, float]] = {}
        for (_, arm, _, _), v in want_c.items():
            acc = per_arm.setdefault(arm, dict.fromkeys(COUNTER_FIELDS, 0.0))
            for f in COUNTER_FIELDS:
                acc[f] += v[f]
        for arm, t in totals.items():
            assert {f: round(t[f], 6) for f in COUNTER_FIELDS} == {f: round(x, 6) for f, x in per_arm[arm].items()}
        truth = sim.truth()
        ctr = {arm: t["ctr"] for arm, t in totals.items() if t["impressions"]}
        assert max(ctr, key=ctr.get) == max(truth.ctr, key=truth.ctr.get)  # the better arm is visible
        print("\nA/B run:", len(log), "events,", kills, "kill -9s")
        print(f"{'metric':<12}{'measured':>10}{'95% interval':>22}{'truth':>10}")
        for arm in sorted(ctr):
            print(f"{'ctr ' + arm:<12}{ctr[arm]:>10.4f}{'':>22}{truth.ctr[arm]:>10.4f}")
        for u in report["uplift"]:
            true_up = truth.uplift(u["metric"])
            print(f"{u['metric'] + ' uplift':<12}{u['uplift']:>10.4f}   [{u['ci_low']:.4f}, {u['ci_high']:.4f}]"
                  f"{true_up:>10.4f}")
            assert u["uplift"] > 0 and true_up > 0
            assert u["ci_low"] <= true_up <= u["ci_high"], (u, true_up)
        assert ops["dead_letters"] == {}

        csv_text = httpx.get(f"{api.url}/v1/analytics/campaigns/home", params={"format": "csv", "bucket": "day"},
                             timeout=10).text
        rows = list(csv.DictReader(io.StringIO(csv_text)))
        assert sum(float(r["clicks"]) for r in rows) == sum(t["clicks"] for t in totals.values())
        overview = httpx.get(f"{api.url}/v1/analytics/overview", timeout=10).json()
        assert [c["campaign_id"] for c in overview["campaigns"]] == ["home"]
        assert overview["campaigns"][0]["totals"]["impressions"] == sum(t["impressions"] for t in totals.values())
