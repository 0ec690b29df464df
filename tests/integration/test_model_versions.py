"""A new model version written by training is picked up by the running flow without a restart,
and the version is visible in the API's responses."""

from __future__ import annotations

import time

import httpx
import pytest

from operators.training import train_model
from simulators.producer import EventProducer
from simulators.shop import SyntheticShop
from tests.harness import ApiServer, FlowProcess, make_settings, wait_caught_up, wait_model_list

pytestmark = pytest.mark.integration


def test_new_version_is_used_without_restart(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=2)
    shop = SyntheticShop(n_items=300, n_users=100, seed=9)
    v1 = train_model(shop.history(5000), s, "covisit").name
    flow = FlowProcess(s, tmp_path / "flow.toml").start()
    try:
        with ApiServer(s) as api, EventProducer.from_settings(s.kafka) as p, httpx.Client(base_url=api.url) as c:
            first = list(shop.events(500, rate_per_s=5.0))
            p.send_events(first, progress=False)
            wait_caught_up(s, flow)
            u = first[-1].user_id
            body = wait_model_list(c, u, timeout_s=10)
            assert body["model_version"] == v1

            v2 = train_model(shop.history(5000), s, "covisit", window=1).name
            assert v2 != v1
            time.sleep(2.5)  # the flow checks LATEST every 2 s
            more = list(shop.events(300, rate_per_s=5.0))
            p.send_events(more, progress=False)
            wait_caught_up(s, flow)
            u2 = more[-1].user_id
            deadline = time.monotonic() + 10
            while (body := c.get("/v1/recommendations", params={"user_id": u2}).json()).get("model_version") != v2:
                assert time.monotonic() < deadline, body
                time.sleep(0.05)
            assert flow.alive()
    finally:
        flow.stop()
