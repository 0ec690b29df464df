"""Windowed popularity published by the flow (issue 14): a new API node starts from the compacted topic.

Real parts: Tansu broker, the Bytewax flow as a subprocess, two APIs over HTTP. The flow counts
event weights per (hour, item) exactly once per partition and publishes them to
``<events>.popularity``; an API that ran all along and a new one started afterwards with empty
data directories serve the same ``top`` lists, equal to a recount of the (de-duplicated) events,
and the new node is right as soon as ``/readyz`` says so.
"""

from __future__ import annotations

import time

import httpx
import pytest

from operators.kafka import high_watermarks
from operators.schema import Event
from simulators.producer import EventProducer
from tests.harness import ApiServer, FlowProcess, make_settings, wait_caught_up, wait_for

pytestmark = pytest.mark.integration

WINDOWS = {"3h": 3 * 3600.0, "1d": 86400.0, "30d": 30 * 86400.0}


def _events(now: float) -> list[Event]:
    types = ["view", "view", "add_to_cart", "purchase", "search"]
    out = []
    for j in range(2400):  # 3 days of history, newest last
        t = types[j % len(types)]
        out.append(Event(event_id=f"e{j}", ts=now - 3 * 86400 + j * (3 * 86400 - 120) / 2400, type=t,
                         user_id=f"u{j % 37}", item_id=None if t == "search" else f"i{(j * 7) % 53}",
                         query="shoes" if t == "search" else None))
    return out


def _expected(events: list[Event], weights: dict[str, float], window_s: float, n: int) -> list[str]:
    """Recount: unique event ids, weighted types, buckets of 1 h starting after clock - window."""
    uniq = {e.event_id: e for e in events}.values()
    counted = [e for e in uniq if weights.get(e.type, 0.0) > 0]
    clock = max(e.ts for e in counted)
    first = int((clock - window_s) // 3600.0) + 1
    total: dict[str, float] = {}
    for e in counted:
        if int(e.ts // 3600.0) >= first:
            for i in e.item_ids():
                total[i] = total.get(i, 0.0) + weights[e.type]
    return sorted(total, key=lambda i: (-total[i], i))[:n]


def _campaigns(c: httpx.Client) -> None:
    for w in WINDOWS:
        r = c.put(f"/v1/campaigns/top-{w}", json={"scenario": "top", "n": 20, "params": {"window": w}})
        assert r.status_code == 201, r.text


def _top(c: httpx.Client, window: str) -> list[str]:
    r = c.get("/v1/recommendations", params={"campaign": f"top-{window}", "n": 20})
    assert r.status_code == 200, r.text
    return [i["item_id"] for i in r.json()["items"] if not i.get("fallback")]


def test_a_new_api_node_gets_the_popular_lists_of_a_long_running_one(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=2, window_publish_s=0.2, window_shards=2)
    weights = {t.name: t.weight for t in s.event_types}
    events = _events(time.time())
    resent = events[100:300]  # a producer's retries: counted once by the flow
    flow = FlowProcess(s, tmp_path / "flow.toml", workers=1).start()
    try:
        with ApiServer(s) as old, EventProducer.from_settings(s.kafka) as producer:
            c_old = httpx.Client(base_url=old.url, timeout=10)
            _campaigns(c_old)
            producer.send_events(events[:1500] + resent + events[1500:], progress=False)
            wait_caught_up(s, flow, timeout_s=120)
            for w, window_s in WINDOWS.items():
                want = _expected(events, weights, window_s, 20)
                assert len(want) == 20
                wait_for(lambda w=w, want=want: _top(c_old, w) == want, 30, f"the running API's top-{w}")

            # a new node: its own empty state and serving directories, the same topics
            fresh = s.model_copy(update={
                "api": s.api.model_copy(update={"state_dir": tmp_path / "api-new"}),
                "stream": s.stream.model_copy(update={"serving_dir": tmp_path / "serving-new"})})
            with ApiServer(fresh) as new:
                c_new = httpx.Client(base_url=new.url, timeout=10)
                wait_for(lambda: c_new.get("/readyz").status_code == 200, 30, "the new node's readiness")
                _campaigns(c_new)  # campaigns live in each node's own state directory
                for w in WINDOWS:  # right at once: ready means the published popularity was read
                    assert _top(c_new, w) == _top(c_old, w), w
            # what the new node read for popularity: the published pieces, far fewer than the events
            pieces = sum(high_watermarks(s.kafka.brokers, s.kafka.window_topic()).values())
            assert 0 < pieces < len(events) // 2, pieces
    finally:
        flow.stop()
