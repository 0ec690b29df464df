"""A live A/B test against a running API: users ask a campaign for lists and react with known CTRs.

The loop a real shop runs, end to end: ``GET /v1/recommendations?campaign=...&user_id=...``
(the facade picks the arm by Thompson sampling or holds the user back for the control group and
publishes the ``rec_request``), then the user's reaction (``simulators.ab.react``: impression,
click with the arm's true CTR, cart, order) goes to ``POST /v1/events``. The analytics flow and
the optimizer both see it; the dashboard shows it within seconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
import orjson

from operators.schema import encode_event
from simulators.ab import ABSpec, react

__all__ = ["LiveAB"]

log = logging.getLogger(__name__)


@dataclass
class LiveAB:
    """Drive one campaign of a running API.

    Parameters
    ----------
    base_url : str
        The API, e.g. ``http://127.0.0.1:8000``.
    spec : ABSpec
        ``spec.arms`` maps arm name -> true CTR; each arm is created with the strategy of the
        same name (so arm names must be strategies: ``personalized``, ``popular``, ...).
    user_ids, item_ids, prices
        The shop's users (who ask) and catalog (what they buy).
    admin_key, client_key : str
        Keys sent as ``X-API-Key`` (admin for the campaign, client for lists and events).
    """

    base_url: str
    spec: ABSpec
    user_ids: list[str]
    item_ids: list[str]
    prices: np.ndarray
    seed: int = 0
    admin_key: str = "admin-dev-key"
    client_key: str = "client-dev-key"
    n_visits: int = field(default=0, init=False)

    def create_campaign(self, client: httpx.Client) -> None:
        """PUT the campaign: one arm per ``spec.arms`` entry, the control share, goal purchase."""
        s = self.spec
        body = {"scenario": s.scenario, "n": s.list_size, "goal": "purchase", "window_s": s.window_s,
                "control_share": s.control_share, "arms": [{"name": a, "strategy": a} for a in sorted(s.arms)]}
        r = client.put(f"/v1/campaigns/{s.campaign_id}", json=body, headers={"X-API-Key": self.admin_key})
        if r.status_code not in (200, 201):
            raise RuntimeError(f"campaign {s.campaign_id!r} not created: {r.status_code} {r.text}")

    def visit(self, client: httpx.Client, rng: np.random.Generator) -> int:
        """One user asks for a list and reacts; returns the number of events posted."""
        s = self.spec
        user = self.user_ids[int(rng.integers(len(self.user_ids)))]
        h = {"X-API-Key": self.client_key}
        r = client.get("/v1/recommendations", params={"campaign": s.campaign_id, "user_id": user}, headers=h)
        if r.status_code != 200:
            log.warning("list for %s: %s %s", user, r.status_code, r.text[:200])
            return 0
        body = r.json()
        control = body["arm"] == "control"
        served = [] if control else [i["item_id"] for i in body["items"]]
        self.n_visits += 1
        events = react(s, rng, user, time.time(), body["request_id"], s.arms.get(body["arm"], 0.0), served,
                       self.item_ids, self.prices, f"live{self.seed}-{self.n_visits}")
        if events:
            payload = [orjson.loads(encode_event(e)) for e in events]
            for _ in range(5):  # the rate limit is shared with other local clients: wait as told, retry
                r = client.post("/v1/events", json=payload, headers=h)
                if r.status_code != 429:
                    break
                wait = r.headers.get("Retry-After", "1")
                time.sleep(min(float(wait), 10.0) if wait.replace(".", "", 1).isdigit() else 1.0)
            if r.status_code == 429:
                log.warning("events of %s not posted: rate limited 5 times", user)
                return 0
            r.raise_for_status()
        return len(events)

    def run(self, visits_per_s: float, n_visits: int | None = None) -> None:
        """Create the campaign, then visit at ``visits_per_s`` until ``n_visits`` (None = forever)."""
        rng = np.random.default_rng(self.seed)
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            self.create_campaign(client)
            t0, k = time.monotonic(), 0
            while n_visits is None or k < n_visits:
                delay = t0 + k / visits_per_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.visit(client, rng)
                k += 1

