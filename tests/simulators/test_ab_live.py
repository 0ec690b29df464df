"""``fusionrec simulate-ab``'s client (``simulators/ab_live.py``) against an API that answers 503 / 429:
it retries the same events after ``Retry-After`` instead of dying with a traceback, and a restarted
simulator (same seed) sends fresh event ids with the same simulated behaviour."""

from __future__ import annotations

import logging

import httpx
import numpy as np
import orjson
import pytest

from simulators.ab import ABSpec
from simulators.ab_live import LiveAB

ITEMS = [f"i{k:03d}" for k in range(40)]


class FakeApi:
    """Lists from a fixed arm cycle; POST /v1/events answers from ``answers`` (then 202), records every body."""

    def __init__(self, answers: list[httpx.Response] | None = None) -> None:
        self.answers = list(answers or [])
        self.posts: list[list[dict]] = []
        self.lists = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            return httpx.Response(201, json={})
        if request.url.path == "/v1/recommendations":
            self.lists += 1
            arm = ("personalized", "popular", "control")[self.lists % 3]
            items = [] if arm == "control" else [{"item_id": i} for i in ITEMS[:8]]
            return httpx.Response(200, json={"arm": arm, "items": items, "request_id": f"r{self.lists}"})
        assert request.url.path == "/v1/events"
        self.posts.append(orjson.loads(request.content))
        if self.answers:
            return self.answers.pop(0)
        return httpx.Response(202, json={"accepted": len(self.posts[-1])})


def _live(seed: int = 3, **kw: object) -> LiveAB:
    spec = ABSpec(campaign_id="c", arms={"personalized": 0.9, "popular": 0.5})
    return LiveAB("http://api", spec, [f"u{k}" for k in range(20)], ITEMS, np.full(len(ITEMS), 5.0), seed=seed,
                  **kw)  # type: ignore[arg-type]


def _drive(live: LiveAB, api: FakeApi, visits: int) -> None:
    with httpx.Client(base_url="http://api", transport=httpx.MockTransport(api)) as c:
        rng = np.random.default_rng(live.seed)
        for _ in range(visits):
            live.visit(c, rng)


def _unavailable(retry_after: str = "1") -> httpx.Response:
    return httpx.Response(503, headers={"Retry-After": retry_after},
                          json={"error": {"field": "broker", "reason": "the event broker is unreachable"}})


def test_a_503_is_retried_after_retry_after_with_the_same_event_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("simulators.ab_live.time.sleep", slept.append)
    api = FakeApi([_unavailable("2"), httpx.Response(429, headers={"Retry-After": "1"}), _unavailable("3")])
    live = _live()
    _drive(live, api, 1)
    assert len(api.posts) == 4 and slept == [2.0, 1.0, 3.0]
    ids = [[e["event_id"] for e in body] for body in api.posts]
    assert ids[0] and all(i == ids[0] for i in ids)  # the same events each time: the retry is idempotent


def test_a_lasting_503_drops_the_visit_with_a_warning_and_the_loop_goes_on(monkeypatch: pytest.MonkeyPatch,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]

    def sleep(s: float) -> None:
        clock[0] += s

    monkeypatch.setattr("simulators.ab_live.time.sleep", sleep)
    monkeypatch.setattr("simulators.ab_live.time.monotonic", lambda: clock[0])
    api = FakeApi([_unavailable("5")] * 100)
    live = _live(retry_budget_s=12.0)
    with caplog.at_level(logging.WARNING, logger="simulators.ab_live"), \
            httpx.Client(base_url="http://api", transport=httpx.MockTransport(api)) as c:
        assert live.post_events(c, [{"event_id": "e1"}], "u1") is False  # no exception
        assert clock[0] == pytest.approx(10.0)  # 503, 5 s, 503, 5 s, 503, and 5 more would pass 12 s
        assert "events of u1 not posted after 3 tries in 12 s" in caplog.text
        _drive(live, api, 6)  # visits go on (and drop their events) without an exception
    assert api.lists == 6 and len(api.posts) > 3


def test_another_refusal_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi([httpx.Response(422, json={"error": {"field": "events[0].ts", "reason": "too old"}})])
    with caplog.at_level(logging.WARNING, logger="simulators.ab_live"):
        _drive(_live(), api, 1)
    assert "refused: 422" in caplog.text and len(api.posts) == 1


def test_a_restarted_simulator_sends_new_event_ids_and_the_same_behaviour() -> None:
    first, second = FakeApi(), FakeApi()
    a, b = _live(seed=3), _live(seed=3)  # the supervisor restarts it with the same --seed
    _drive(a, first, 30)
    _drive(b, second, 30)
    events_a = [e for body in first.posts for e in body]
    events_b = [e for body in second.posts for e in body]
    assert a.run_id != b.run_id
    assert not {e["event_id"] for e in events_a} & {e["event_id"] for e in events_b}

    def behaviour(events: list[dict]) -> list[tuple]:
        return [(e["type"], e["user_id"], e.get("request_id"), e.get("item_id"), str(e.get("items"))) for e in events]

    assert behaviour(events_a) == behaviour(events_b) and len(events_a) > 20
    assert len({e["event_id"] for e in events_a}) == len(events_a)  # unique within a run too
