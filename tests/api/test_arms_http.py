"""``GET /v1/campaigns/{id}/arms`` (issue 15): the optimizer's arms only (the control group apart,
without a posterior), and feedback counters of that campaign, not of all. Real broker, HTTP."""

from __future__ import annotations

import time

import httpx
import pytest

from simulators.producer import EventProducer
from tests.harness import ApiServer, make_settings, wait_for

pytestmark = pytest.mark.integration


def test_arms_without_control_and_per_campaign_feedback(broker, tmp_path):
    s = make_settings(broker, tmp_path, partitions=2)
    with EventProducer.from_settings(s.kafka) as p:
        p.send_catalog([{"item_id": f"i{k}", "price": k} for k in range(50)])
    with ApiServer(s) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        wait_for(lambda: c.get("/healthz").json().get("catalog_items", 0) >= 50, what="the catalog")
        arms = [{"name": "a", "strategy": "popular"}, {"name": "b", "strategy": "top"}]
        assert c.put("/v1/campaigns/held", json={"scenario": "popular", "arms": arms, "control_share": 0.5}).status_code == 201
        assert c.put("/v1/campaigns/other", json={"scenario": "popular", "arms": arms}).status_code == 201
        served = {"held": 0, "other": 0}
        control_lists = 0
        for u in range(40):
            for cid in ("held", "other") if u < 10 else ("held",):
                r = c.get("/v1/recommendations", params={"campaign": cid, "user_id": f"u{u}"})
                assert r.status_code == 200, r.text
                served[cid] += 1
                control_lists += r.json()["arm"] == "control"
        assert 0 < control_lists < 40

        def arms_of(cid: str) -> dict:
            return c.get(f"/v1/campaigns/{cid}/arms").json()

        deadline = time.monotonic() + 20
        while arms_of("held")["feedback"]["served"] < served["held"] and time.monotonic() < deadline:
            time.sleep(0.1)
        held, other = arms_of("held"), arms_of("other")
        assert [a["arm"] for a in held["arms"]] == ["a", "b"]  # no control pseudo-arm
        assert abs(sum(a["p_best"] for a in held["arms"]) - 1.0) < 1e-6
        assert sum(a["pulls"] for a in held["arms"]) == served["held"] - control_lists
        assert held["control"] == {"arm": "control", "share": 0.5, "strategy": "popular",
                                   "lists": control_lists, "rewards": 0}
        assert held["feedback"]["served"] == served["held"] == 40
        assert other["feedback"]["served"] == served["other"] == 10 and other["control"] is None
        assert held["feedback"]["open_lists"] == 40
        r = c.get("/v1/campaigns/held/arms?segment=a&segment=b")  # one was taken silently (trial 31, 8.7)
        assert r.status_code == 422 and r.json()["error"] == {
            "field": "segment", "reason": "must be given once; got 2 segment= parameters"}, r.text
