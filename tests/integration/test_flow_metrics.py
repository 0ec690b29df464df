"""``/metrics`` carries the flow's side (issue 15): applied, duplicates and dead letters by reason per
partition, consumer lag, scoring time, the optimizer's feedback lag and the model versions — from a
real flow over Tansu, read by the API from the flow's stats topic."""

from __future__ import annotations

import re
import time

import httpx
import orjson
import pytest

from operators.kafka import make_producer
from operators.training import train_covisitation
from simulators.shop import SyntheticShop
from tests.harness import ApiServer, FlowProcess, make_settings, wait_caught_up

pytestmark = pytest.mark.integration


def _value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_flow_counters_lag_and_versions_in_metrics(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=2)
    shop = SyntheticShop(n_items=100, n_users=20, seed=1, start_ts=time.time() - 3600)
    train_covisitation(shop.history(2000), s)
    now = time.time()
    p = make_producer(broker)
    sent = 0
    for i in range(400):
        u = f"u{i % 17}"
        ev = orjson.dumps({"event_id": f"e{i}", "ts": now - 400 + i, "type": "view", "user_id": u, "item_id": f"i{i % 31}"})
        p.produce(s.kafka.events_topic, key=u.encode(), value=ev)
        sent += 1
        if i % 50 == 0:  # the same event again: a duplicate
            p.produce(s.kafka.events_topic, key=u.encode(), value=ev)
    p.produce(s.kafka.events_topic, key=b"u1", value=b"{nope")
    p.produce(s.kafka.events_topic, key=b"u1", value=orjson.dumps({"event_id": "t", "ts": now, "type": "teleport",
                                                                    "user_id": "u1", "item_id": "a"}))
    p.flush(10)
    flow = FlowProcess(s, tmp_path / "flow.toml", workers=1).start()
    try:
        wait_caught_up(s, flow, timeout_s=120)
        with ApiServer(s) as api:
            c = httpx.Client(base_url=api.url, timeout=20)
            deadline = time.monotonic() + 30
            while True:
                text = c.get("/metrics").text
                applied = sum(_value(text, "fusionrec_flow_applied_total", partition=str(q)) or 0 for q in (0, 1))
                if applied == sent or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert applied == sent, text
            assert sum(_value(text, "fusionrec_flow_duplicates_total", partition=str(q)) or 0 for q in (0, 1)) == 8
            dead = {r: sum(_value(text, "fusionrec_flow_dead_letters_total", partition=str(q), reason=r) or 0
                           for q in (0, 1)) for r in ("malformed_json", "unknown_event_type")}
            assert dead == {"malformed_json": 1, "unknown_event_type": 1}
            lag = [_value(text, "fusionrec_flow_consumer_lag_messages", partition=str(q)) for q in (0, 1)]
            assert lag == [0, 0], (lag, [line for line in text.splitlines() if "fusionrec_flow" in line])
            assert sum(_value(text, "fusionrec_flow_scoring_seconds_count", partition=str(q)) or 0 for q in (0, 1)) > 0
            assert (_value(text, "fusionrec_flow_scoring_seconds_sum", partition="0") or 0) >= 0
            version = re.search(r'fusionrec_api_model_info\{version="([^"]+)"\} 1.0', text)
            assert version and version.group(1) != "none"
            assert _value(text, "fusionrec_flow_model_info", partition="0", version=version.group(1)) == 1.0
            lags = [_value(text, "fusionrec_optimizer_feedback_lag_messages", partition=str(q)) for q in (0, 1)]
            assert all(v is not None and v >= 0 for v in lags), lags
    finally:
        flow.stop()
