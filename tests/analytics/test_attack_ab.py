"""A live A/B test under attack (issue 13): an attacker holding only the client key forges feedback at
10x the real click rate, for the worse arm. Nothing it sends reaches the optimizer or the analytics:
the per-arm counters and the group stats (so the uplift and its interval) equal those of the real
traffic alone, counted from what the simulated users really did, and the optimizer still picks the
truly better arm.

The forgeries are what the issue's attack did and its class: served lists posted as events,
feedback with made-up or altered request ids, ids the server issued to the attacker replayed
under real users' ids or for another campaign or arm, and timestamps far in the future.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import numpy as np
import orjson
import pytest

from flows.analytics.logic import analytics_state_dir
from operators.schema import encode_event
from operators.training import train_covisitation
from simulators.ab import ABSpec, react
from simulators.ab_live import LiveAB
from simulators.producer import EventProducer
from simulators.shop import SyntheticShop
from tests.analytics.test_flow import analytics_settings
from tests.harness import ApiServer, FlowProcess, wait_caught_up

pytestmark = pytest.mark.integration

ADMIN, CLIENT = "admin-" + "a" * 24, "client-" + "c" * 24


class RecordingAB(LiveAB):
    """``LiveAB`` that records what each real user was served and did (the truth the counters must equal)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lists: list[tuple[str, str, str]] = []  # (user, arm, request_id)
        self.clicks: Counter[str] = Counter()
        self.impressions: Counter[str] = Counter()
        self.orders: list[str] = []  # user of each purchase
        self.lock = threading.Lock()

    def visit(self, client: httpx.Client, rng: np.random.Generator) -> int:
        s = self.spec
        user = self.user_ids[int(rng.integers(len(self.user_ids)))]
        h = {"X-API-Key": self.client_key}
        r = client.get("/v1/recommendations", params={"campaign": s.campaign_id, "user_id": user}, headers=h)
        r.raise_for_status()
        body = r.json()
        served = [] if body["arm"] == "control" else [i["item_id"] for i in body["items"]]
        self.n_visits += 1
        events = react(s, rng, user, time.time(), body["request_id"], s.arms.get(body["arm"], 0.0), served,
                       self.item_ids, self.prices, f"live{self.seed}-{self.n_visits}")
        with self.lock:
            self.lists.append((user, body["arm"], body["request_id"]))
            for e in events:
                if e.type == "rec_click":
                    self.clicks[body["arm"]] += 1
                elif e.type == "rec_impression":
                    self.impressions[body["arm"]] += 1
                elif e.type == "purchase":
                    self.orders.append(user)
        if events:
            client.post("/v1/events", json=[orjson.loads(encode_event(e)) for e in events], headers=h).raise_for_status()
        return len(events)


def _attack(url: str, driver: RecordingAB, stop: threading.Event, results: Counter[str]) -> None:
    """Forge 10 feedback events per real click, all for the worse arm ``popular``."""
    h = {"X-API-Key": CLIENT}
    with httpx.Client(base_url=url, timeout=10, headers=h) as c:
        own = [c.get("/v1/recommendations", params={"campaign": "decoy", "user_id": "mallory"}).json()
               for _ in range(5)]  # real lists, served to the attacker by another campaign
        forged_id = "r1." + own[0]["request_id"].split(".")[1] + ".AAAAAAAAAAAAAAAAAAAAAA"
        sent = 0
        while not stop.is_set():
            with driver.lock:
                due = 10 * sum(driver.clicks.values()) - sent
                victims = [u for u, _, _ in driver.lists[-20:]]
            if due <= 0 or not victims:
                time.sleep(0.02)
                continue
            victim = victims[sent % len(victims)]
            mine = own[sent % len(own)]["request_id"]
            forgeries = [
                {"type": "rec_request", "user_id": victim, "request_id": f"f{sent}", "campaign_id": "live",
                 "arm": "popular", "served_items": ["i1"]},
                {"type": "rec_click", "user_id": victim, "request_id": f"f{sent}", "item_id": "i1",
                 "campaign_id": "live", "arm": "popular"},
                {"type": "purchase", "user_id": victim, "request_id": forged_id, "item_id": "i1"},
                {"type": "rec_click", "user_id": victim, "request_id": mine, "item_id": "i1"},
                {"type": "purchase", "user_id": "mallory", "request_id": mine, "item_id": "i1", "campaign_id": "live"},
                {"type": "purchase", "user_id": "mallory", "request_id": mine, "item_id": "i1", "arm": "popular"},
                {"type": "rec_click", "user_id": victim, "item_id": "i1", "request_id": mine, "campaign_id": "live",
                 "arm": "popular"},
                {"type": "purchase", "user_id": victim, "item_id": "i1", "ts": time.time() + 86400 * 365},
                {"type": "rec_impression", "user_id": victim, "request_id": mine[:-1] + "x", "item_id": "i1"},
                {"type": "rec_request", "user_id": "mallory", "request_id": mine, "campaign_id": "live",
                 "arm": "popular"},
            ]
            for f in forgeries[: min(due, len(forgeries))]:
                results[str(c.post("/v1/events", json=f).status_code)] += 1
                sent += 1


def test_forged_feedback_at_10x_the_click_rate_changes_nothing(broker, tmp_path):
    s = analytics_settings(broker, tmp_path)
    s = s.model_copy(update={"api": s.api.model_copy(update={
        "require_keys": True, "admin_keys": [ADMIN], "client_keys": [CLIENT], "snapshot_every_s": 3600.0})})
    shop = SyntheticShop(n_items=300, n_users=80, seed=9, start_ts=time.time() - 86400)
    train_covisitation(shop.history(6000), s)
    catalog = shop.catalog(vectors=False)
    realtime = FlowProcess(s, tmp_path / "rt.toml").start()
    analytics = FlowProcess(s, tmp_path / "an.toml", flow="flows.analytics.dataflow:flow").start()
    try:
        with ApiServer(s) as api, EventProducer.from_settings(s.kafka) as producer:
            producer.send_catalog(catalog)
            producer.send_events(list(shop.events(1500, rate_per_s=100.0)), progress=False)
            wait_caught_up(s, realtime, timeout_s=120)
            spec = ABSpec(campaign_id="live", scenario="personalized", control_share=0.2,
                          arms={"personalized": 0.3, "popular": 0.05})
            driver = RecordingAB(api.url, spec, shop.user_ids[:80], [c["item_id"] for c in catalog],
                                 np.array([c["price"] for c in catalog]), seed=1, admin_key=ADMIN, client_key=CLIENT)
            c = httpx.Client(base_url=api.url, timeout=10, headers={"X-API-Key": ADMIN})
            decoy = {"scenario": "popular", "arms": [{"name": "personalized", "strategy": "personalized"},
                                                      {"name": "popular", "strategy": "popular"}]}
            assert c.put("/v1/campaigns/decoy", json=decoy).status_code == 201
            stop, results = threading.Event(), Counter()
            attacker = threading.Thread(target=_attack, args=(api.url, driver, stop, results))
            attacker.start()
            try:
                driver.run(visits_per_s=60.0, n_visits=300)
                time.sleep(1.0)
            finally:
                stop.set()
                attacker.join(30)
            n_forged = sum(results.values())
            n_clicks = sum(driver.clicks.values())
            assert n_clicks > 0 and n_forged >= 10 * n_clicks - 10, (n_forged, n_clicks)
            refused = sum(n for code, n in results.items() if code.startswith("4"))
            # only the attacker's own feedback on its own decoy lists is accepted (for the decoy campaign)
            assert refused >= 0.8 * n_forged and set(results) <= {"202", "403", "422"}, results

            wait_caught_up(s, analytics, timeout_s=120, state_dir=analytics_state_dir(s))
            want_lists = Counter(arm for _, arm, _ in driver.lists)
            first_arm: dict[str, str] = {}
            for user, arm, _ in driver.lists:
                first_arm.setdefault(user, arm)
            want_orders = Counter("control" if first_arm[u] == "control" else "exposed" for u in driver.orders)
            deadline = time.monotonic() + 60
            while True:
                rep = c.get("/v1/analytics/campaigns/live").json()
                got = {a["arm"]: a["totals"] for a in rep.get("arms", [])}
                arms = c.get("/v1/campaigns/live/arms").json()
                bandit = {a["arm"]: (a["pulls"], a["rewards"]) for a in arms["arms"]}
                if arms["control"]:
                    bandit["control"] = (arms["control"]["lists"], arms["control"]["rewards"])
                dash = {a: (t["requests"], t["rewards"]) for a, t in got.items()}
                groups = {g: v["totals"] for g, v in rep.get("groups", {}).items()}
                if ({a: t["requests"] for a, t in got.items()} == want_lists
                        and {g: t["orders"] for g, t in groups.items()} == want_orders
                        and dash == {a: v for a, v in bandit.items() if v != (0, 0)}
                        # a visit's last impression or click may follow its user's order: wait for them too
                        and {a: t["impressions"] for a, t in got.items() if t["impressions"]} == dict(driver.impressions)
                        and {a: t["clicks"] for a, t in got.items() if t["clicks"]} == dict(driver.clicks)):
                    break
                assert time.monotonic() < deadline, (dash, bandit, want_lists, {g: t["orders"] for g, t in groups.items()},
                                                       want_orders)
                time.sleep(0.5)
            # the analytics count exactly the real traffic: lists, impressions and clicks per arm, orders per group
            assert {a: t["impressions"] for a, t in got.items() if t["impressions"]} == dict(driver.impressions)
            assert {a: t["clicks"] for a, t in got.items() if t["clicks"]} == dict(driver.clicks)
            assert {g: t["users"] for g, t in groups.items()} == Counter(
                "control" if a == "control" else "exposed" for a in first_arm.values())
            # so the uplift is the real traffic's; the optimizer still prefers the truly better arm
            pbest = {a["arm"]: a["p_best"] for a in arms["arms"]}
            assert max(pbest, key=pbest.get) == "personalized", arms
            assert bandit["popular"][1] <= driver.clicks["popular"] + sum(1 for _ in driver.orders), bandit
            print(f"\nattack: {n_forged} forged events for {n_clicks} real clicks ({n_forged / n_clicks:.1f}x); "
                  f"answers {dict(results)}; bandit {bandit}; P(best) {pbest}; "
                  f"uplift {[(u['metric'], round(u['uplift'], 3), round(u['ci_low'], 3), round(u['ci_high'], 3)) for u in rep['uplift']]}")
    finally:
        analytics.stop()
        realtime.stop()
