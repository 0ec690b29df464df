"""End to end with real parts: Tansu broker -> Bytewax flow -> RocksDB -> user-topn -> HTTP."""

from __future__ import annotations

import time

import httpx
import msgspec
import pytest

from operators.training import train_covisitation
from simulators.producer import EventProducer
from simulators.shop import SyntheticShop
from tests.harness import ApiServer, FlowProcess, make_settings, wait_caught_up

pytestmark = pytest.mark.integration


def test_recommendations_beat_chance_and_are_fresh(broker, tmp_path):
    s = make_settings(broker, tmp_path)
    shop = SyntheticShop(n_items=1000, n_users=400, seed=7)
    train_covisitation(shop.history(30000), s)
    live = list(shop.events(20000, rate_per_s=50.0))
    flow = FlowProcess(s, tmp_path / "flow.toml", workers=2).start()
    try:
        with ApiServer(s) as api, EventProducer.from_settings(s.kafka) as producer:
            producer.send_catalog(shop.catalog())
            producer.send_events(live, progress=False)
            wait_caught_up(s, flow, timeout_s=120)
            users = sorted({e.user_id for e in live})
            client = httpx.Client(base_url=api.url, timeout=10)
            deadline = time.monotonic() + 20
            recs: dict[str, list[str]] = {}
            while time.monotonic() < deadline and len(recs) < len(users):
                for u in users:
                    if u in recs:
                        continue
                    body = client.get("/v1/recommendations", params={"user_id": u, "n": 10}).json()
                    if body["source"] != "popular":
                        recs[u] = [i["item_id"] for i in body["items"]]
                time.sleep(0.2)
            assert len(recs) == len(users), f"{len(users) - len(recs)} users without a published list"
            prec, chance = shop.precision_at_k(recs, 10), shop.random_precision_at_k(users)
            assert prec > 5 * chance, f"precision@10 {prec:.3f} vs chance {chance:.3f}"

            # freshness: one more event for one user shows up over HTTP within a few seconds
            u = users[0]
            ev = msgspec.structs.replace(live[-1], event_id="fresh-1", ts=live[-1].ts + 1.0, user_id=u)
            t0 = time.monotonic()
            producer.send(ev)
            producer.flush()
            while time.monotonic() - t0 < 5:
                body = client.get("/v1/recommendations", params={"user_id": u}).json()
                if body.get("last_event_ts") == ev.ts:
                    break
                time.sleep(0.02)
            assert body.get("last_event_ts") == ev.ts, "new event not visible over HTTP within 5 s"
            unknown = client.get("/v1/recommendations", params={"user_id": "nobody-ever", "n": 5}).json()
            assert unknown["source"] == "popular" and len(unknown["items"]) == 5
    finally:
        flow.stop()
