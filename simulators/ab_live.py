"""A live A/B test against a running API: users ask a campaign for lists and react with known CTRs.

The loop a real shop runs, end to end: ``GET /v1/recommendations?campaign=...&user_id=...``
(the facade picks the arm by Thompson sampling or holds the user back for the control group and
publishes the ``rec_request``), then the user's reaction (``simulators.ab.react``: impression,
click with the arm's true CTR, cart, order) goes to ``POST /v1/events``. The analytics flow and
the optimizer both see it; the dashboard shows it within seconds.

Events are posted as a client should (README "Faults"): a 429 or a 503 is retried after its
``Retry-After`` (a connection error after 1 s) with the same events, so the same event ids and a
retry is idempotent, for at most ``retry_budget_s`` per visit; then the visit's events are dropped
with a warning. Nothing a running API answers ends the loop with a traceback. Event ids carry a
nonce of the run (``run_id``), so a simulator restarted with the same ``seed`` (``fusionrec run``'s
supervisor does that) sends new events, not copies of the previous run's, while the users,
lists asked for and reactions stay those of the seed.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
import numpy as np
import orjson

from operators.schema import encode_event
from simulators.ab import ABSpec, react

__all__ = ["CampaignExists", "CampaignRefused", "LiveAB"]

log = logging.getLogger(__name__)


class CampaignRefused(RuntimeError):
    """The API did not create the campaign: its HTTP ``status`` and ``error`` (the body's ``error``, or its text)."""

    def __init__(self, campaign_id: str, status: int, error: str) -> None:
        super().__init__(f"campaign {campaign_id!r} not created: {status} {error}")
        self.campaign_id, self.status, self.error = campaign_id, status, error


class CampaignExists(CampaignRefused):
    """The API already holds a campaign of that id (409), and ``LiveAB.replace`` is off: it is left as it is."""


def _error_text(r: httpx.Response) -> str:
    """The API's ``{"error": {"field", "reason"}}`` as ``field: reason``; any other body as its first 200 characters."""
    try:
        err = r.json()["error"]
        return f"{err['field']}: {err['reason']}"
    except (ValueError, KeyError, TypeError):
        return r.text[:200].strip() or r.reason_phrase


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
    run_id : str
        In every event id (default: a fresh nonce per instance), so two runs never share ids.
    replace : bool
        Replace a campaign of the same id the API already holds (a PUT after the POST's 409); False (default):
        create it (POST), and an existing one is refused (``CampaignExists``), never overwritten.
    retry_budget_s : float
        How long one visit's events are retried (429, 503, connection errors), seconds.
    """

    base_url: str
    spec: ABSpec
    user_ids: list[str]
    item_ids: list[str]
    prices: np.ndarray
    seed: int = 0
    admin_key: str = "admin-dev-key"
    client_key: str = "client-dev-key"
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    retry_budget_s: float = 60.0
    replace: bool = False
    n_visits: int = field(default=0, init=False)

    def create_campaign(self, client: httpx.Client) -> None:
        """Create the campaign (POST; then PUT when it exists and ``replace``): one arm per ``spec.arms`` entry, the
        control share, goal purchase.

        Raises ``CampaignExists`` when the API already holds the campaign and ``replace`` is off (409: it is
        left unchanged), ``CampaignRefused`` when it answers anything else but 200 or 201 (a key without the
        admin scope, an invalid campaign), and ``httpx.TransportError`` when it cannot be reached."""
        s = self.spec
        body = {"scenario": s.scenario, "n": s.list_size, "goal": "purchase", "window_s": s.window_s,
                "control_share": s.control_share, "arms": [{"name": a, "strategy": a} for a in sorted(s.arms)]}
        headers = {"X-API-Key": self.admin_key}
        # POST first, replace or not: the API creates it only if no campaign has the id (PUT would replace one
        # silently), and it judges the id in the body, so '', '.' or '..' (which a client's URL normalisation
        # turns into another path: a 307, 405 or 404) is refused by name (422) as 'a?b' or 'a/b' is
        r = client.post("/v1/campaigns", json={**body, "campaign_id": s.campaign_id}, headers=headers)
        if r.status_code == 409 and self.replace:
            path = f"/v1/campaigns/{quote(s.campaign_id, safe='')}"  # a valid id: one path segment
            r = client.put(path, json=body, headers=headers)
        elif r.status_code == 409:
            raise CampaignExists(s.campaign_id, r.status_code, _error_text(r))
        if r.status_code not in (200, 201):
            raise CampaignRefused(s.campaign_id, r.status_code, _error_text(r))

    def visit(self, client: httpx.Client, rng: np.random.Generator) -> int:
        """One user asks for a list and reacts; returns the number of events posted."""
        s = self.spec
        user = self.user_ids[int(rng.integers(len(self.user_ids)))]
        h = {"X-API-Key": self.client_key}
        try:
            r = client.get("/v1/recommendations", params={"campaign": s.campaign_id, "user_id": user}, headers=h)
        except httpx.TransportError as exc:
            log.warning("list for %s: %s (the API is not reachable)", user, exc)
            return 0
        if r.status_code != 200:
            log.warning("list for %s: %s %s", user, r.status_code, r.text[:200])
            return 0
        body = r.json()
        control = body["arm"] == "control"
        served = [] if control else [i["item_id"] for i in body["items"]]
        self.n_visits += 1
        events = react(s, rng, user, time.time(), body["request_id"], s.arms.get(body["arm"], 0.0), served,
                       self.item_ids, self.prices, self.id_prefix())
        if events and not self.post_events(client, [orjson.loads(encode_event(e)) for e in events], user):
            return 0
        return len(events)

    def id_prefix(self) -> str:
        """The event ids' prefix of the current visit: seed, run nonce, visit number."""
        return f"live{self.seed}-{self.run_id}-{self.n_visits}"

    def post_events(self, client: httpx.Client, payload: list[dict[str, object]], user: str) -> bool:
        """POST ``payload`` until it is accepted (True), retrying the same events after a 429 or a 503
        (``Retry-After`` seconds, at most 30) or a connection error (1 s) for ``retry_budget_s``;
        False (logged) when another answer refuses them or the budget is spent."""
        deadline = time.monotonic() + self.retry_budget_s
        tries = 0
        while True:
            tries += 1
            try:
                r = client.post("/v1/events", json=payload, headers={"X-API-Key": self.client_key})
            except httpx.TransportError as exc:
                r, why, wait = None, f"{type(exc).__name__}: {exc}", 1.0
            else:
                if r.is_success:
                    return True
                if r.status_code not in (429, 503):
                    log.warning("events of %s refused: %s %s", user, r.status_code, r.text[:200])
                    return False
                why, wait = f"{r.status_code} {r.text[:200]}", _retry_after(r.headers.get("Retry-After"))
            if time.monotonic() + wait > deadline:
                log.warning("events of %s not posted after %d tries in %.0f s (last: %s); dropped", user, tries,
                            self.retry_budget_s, why)
                return False
            time.sleep(wait)

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
                elif delay < -5.0:  # behind after waiting out an outage: go on at the rate, no burst
                    t0 = time.monotonic() - k / visits_per_s
                self.visit(client, rng)
                k += 1


def _retry_after(value: str | None) -> float:
    """A ``Retry-After`` of seconds -> seconds in [0.1, 30]; anything else (absent, an HTTP date) -> 1 s."""
    try:
        wait = float(value) if value is not None else 1.0
    except ValueError:
        return 1.0
    return min(max(wait, 0.1), 30.0) if wait == wait else 1.0
