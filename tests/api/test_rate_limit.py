"""The rate limiter's storage: counts as ``limits`` does, starts no thread per call, and still frees
the entries of callers that went quiet."""

from __future__ import annotations

import threading
import time

import pytest
from limits import parse, strategies

from api.rate_limit import SweptMemoryStorage


@pytest.fixture()
def swept():
    store = SweptMemoryStorage(sweep_s=0.05)
    yield store
    store.close()


def test_counts_like_the_library_moving_window(swept):
    limiter = strategies.MovingWindowRateLimiter(swept)
    two = parse("2/second")
    assert [limiter.hit(two, "k|1.2.3.4") for _ in range(3)] == [True, True, False]
    assert limiter.hit(two, "k|5.6.7.8")  # another caller has its own window
    time.sleep(1.05)
    assert limiter.hit(two, "k|1.2.3.4")


def test_no_thread_is_started_by_a_hit(swept, monkeypatch):
    limiter = strategies.MovingWindowRateLimiter(swept)
    started: list[str] = []
    real_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        started.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    item = parse("1000/second")
    for _ in range(5):  # the library's own storage starts a 10 ms Timer again after each of these pauses
        limiter.hit(item, "k|1.2.3.4")
        time.sleep(0.03)
    assert started == []


def test_quiet_callers_are_swept(swept):
    limiter = strategies.MovingWindowRateLimiter(swept)
    limiter.hit(parse("5/second"), "k|9.9.9.9")
    assert swept.events
    deadline = time.monotonic() + 3
    while swept.events and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not swept.events


def test_close_stops_the_sweeper():
    store = SweptMemoryStorage(sweep_s=0.01)
    store.close()
    store._sweeper.join(timeout=2)
    assert not store._sweeper.is_alive()


def test_parse_rate_limit_is_the_one_parser_of_api_rate_limit():
    from api.rate_limit import RateLimitMiddleware, parse_rate_limit

    assert [str(i) for i in parse_rate_limit("200/second;6000/minute")] == ["200 per 1 second", "6000 per 1 minute"]
    for bad in ("abc", "5/parsec", " ; "):
        with pytest.raises(ValueError, match=r"api\.rate_limit: .* is not a rate limit"):
            parse_rate_limit(bad)
    with pytest.raises(ValueError, match=r"api\.rate_limit: 'abc'"):
        RateLimitMiddleware(None, "abc")  # type: ignore[arg-type]


def test_event_limiter_charges_events_and_item_ids_apart_and_a_refusal_charges_nothing():
    from api.rate_limit import EVENTS, ITEM_IDS, EventRateLimiter

    limiter = EventRateLimiter("10/minute", item_limits="20/minute")
    try:
        scope = {"type": "http", "headers": [], "client": ("10.1.2.3", 5000)}
        assert (limiter.largest(EVENTS), limiter.largest(ITEM_IDS)) == (10, 20)
        assert limiter.retry_after_s(scope, {EVENTS: 2, ITEM_IDS: 15}) is None
        retry, limit = limiter.retry_after_s(scope, {EVENTS: 1, ITEM_IDS: 6})  # 21 item ids > 20/minute
        assert limit == "20 item ids per 1 minute" and 1 <= retry <= 60
        assert limiter.retry_after_s(scope, {EVENTS: 8, ITEM_IDS: 5}) is None  # the refused request charged nothing
        retry, limit = limiter.retry_after_s(scope, {EVENTS: 1, ITEM_IDS: 0})  # 11 events > 10/minute
        assert limit == "10 events per 1 minute"
        other = {**scope, "client": ("10.9.9.9", 5000)}  # another address has budgets of its own
        assert limiter.retry_after_s(other, {EVENTS: 10, ITEM_IDS: 20}) is None
        same = EventRateLimiter("20/minute", item_limits="20/minute")  # one spec for both: counted apart
        assert same.retry_after_s(scope, {EVENTS: 20, ITEM_IDS: 20}) is None
        same.limiter.storage.close()
        items_only = EventRateLimiter(None, item_limits="5/second")
        assert (items_only.largest(EVENTS), items_only.largest(ITEM_IDS)) == (None, 5)
        items_only.limiter.storage.close()
    finally:
        limiter.limiter.storage.close()
