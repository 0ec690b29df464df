"""An API started before its broker (or while it is down) starts, says it is not ready, and becomes
ready once a broker answers, without a restart. Before, building the analytics service created its
topic at start-up and a broker that did not answer failed the whole start-up (uvicorn exit 3, trial 13 D8)."""

from __future__ import annotations

import time

import httpx
import pytest

from operators.broker import LocalBroker, free_port
from operators.kafka import ensure_topics, platform_topics
from tests.harness import ApiServer, make_settings

pytestmark = pytest.mark.integration


def test_the_api_starts_before_its_broker_and_becomes_ready_when_it_answers(tmp_path):
    port = free_port()
    s = make_settings(f"127.0.0.1:{port}", tmp_path, partitions=1, create_topics=False)
    with ApiServer(s) as api, httpx.Client(base_url=api.url, timeout=10) as c:
        assert c.get("/healthz").status_code == 200  # alive
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "not_ready"
        broker = LocalBroker(port=port).start()
        try:
            ensure_topics(broker.bootstrap, platform_topics(s))  # as the flows do when they start
            deadline = time.monotonic() + 90
            while c.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, c.get("/readyz").json()
                time.sleep(0.5)
            ok = c.post("/v1/events", json={"type": "view", "user_id": "u1", "item_id": "i1"})
            assert ok.status_code == 202, ok.text
        finally:
            broker.stop()
