"""The join (operators/analytics/join.py) against a straightforward recount, duplicates, late events."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.analytics.join import (
    COUNTER_FIELDS,
    GROUP_FIELDS,
    AnalyticsUser,
    Increments,
    JoinRules,
    apply_event,
    apply_served,
    decode_user,
    encode_user,
)
from operators.schema import BasketLine, Event
from tests.analytics.conftest import ab_simulation, with_noise
from tests.analytics.recount import FIELDS, GFIELDS, recount

T0 = 1_700_000_000.0


def run(log: list[Event], rules: JoinRules | None = None) -> Increments:
    rules = rules or JoinRules()
    users: dict[str, AnalyticsUser] = {}
    inc = Increments()
    for e in log:  # served lists (rec_request) come from their own topic, read in step with the events here
        u = users.get(e.user_id) or AnalyticsUser()
        if e.type == "rec_request":
            apply_served(u, e, rules, inc)
        else:
            apply_event(u, e, rules, inc)
        users[e.user_id] = decode_user(encode_user(u))  # as if stored and read back every event
    return inc


def as_dicts(inc: Increments) -> tuple[dict, dict]:
    c = {k: {f: round(v, 6) for f, v in zip(COUNTER_FIELDS, row, strict=True) if v} for k, row in inc.counters.items()}
    g = {k: {f: round(v, 6) for f, v in zip(GROUP_FIELDS, row, strict=True) if v} for k, row in inc.groups.items()}
    return {k: v for k, v in c.items() if v}, {k: v for k, v in g.items() if v}


def clean(d: dict) -> dict:
    out = {k: {f: round(x, 6) for f, x in v.items() if x} for k, v in d.items()}
    return {k: v for k, v in out.items() if v}


def test_fields_agree_with_recount():
    assert FIELDS == COUNTER_FIELDS and GFIELDS == GROUP_FIELDS


def test_join_equals_recount_with_duplicates_and_late_events(small_ab):
    sim, log = small_ab
    counters, groups = as_dicts(run(log))
    want_c, want_g = recount(log)
    assert counters == clean(want_c)
    assert groups == clean(want_g)
    assert sum(v.get("orders", 0) for v in counters.values()) > 50  # the test has attributed orders


def test_duplicates_do_not_count_twice(small_ab):
    sim, log = small_ab
    clean_log = sim.events()
    assert len(log) > len(clean_log)  # the noisy log has re-sent events
    once = as_dicts(run(clean_log))
    twice = as_dicts(run([e for e in clean_log for _ in (0, 1)]))
    assert twice == once


def ev(i: int, kind: str, ts: float, **kw: object) -> Event:
    return Event(event_id=f"e{i}", ts=T0 + ts, type=kind, user_id="u1", **kw)  # type: ignore[arg-type]


def served(i: int, ts: float, rid: str, arm: str, items: list[str], window_s: float = 600.0) -> Event:
    return ev(i, "rec_request", ts, request_id=rid, campaign_id="c", arm=arm,
              extra={"served_items": items, "window_s": window_s, "scenario": "home", "goal": "purchase"})


def test_last_touch_window_and_late_bucket():
    log = [
        served(1, 0, "r1", "A", ["x", "y"]),
        ev(2, "rec_impression", 1, request_id="r1", items=(BasketLine("x"), BasketLine("y"))),
        served(3, 100, "r2", "B", ["y", "z"]),
        ev(4, "rec_impression", 101, request_id="r2", item_id="y"),  # only y was displayed
        ev(5, "rec_click", 105, request_id="r2", item_id="y"),
        ev(6, "rec_click", 106, request_id="r2", item_id="y"),        # same click again, new event id
        ev(7, "purchase", 200, items=(BasketLine("x", 2, 5.0), BasketLine("y", 1, 3.0), BasketLine("z", 1, 9.0))),
        ev(8, "add_to_cart", 5000, item_id="x"),                       # outside every window
        ev(9, "purchase", 3700 + 50, item_id="q", price=1.0),           # in the next hour bucket ...
        ev(10, "purchase", 150, item_id="x", price=4.0, quantity=1.0),  # ... and a late order of the first hour
    ]
    inc = run(log)
    c, g = as_dicts(inc)
    b0 = int(T0 // 3600) * 3600
    a, bb = ("c", "A", "home", b0), ("c", "B", "home", b0)
    # x -> r1 (only list holding x); y -> r2 (newest); z -> not displayed in r2, so nobody
    assert c[a] == {"requests": 1, "impressions": 1, "impressed_items": 2, "orders": 2, "order_items": 3,
                    "revenue": 14.0, "rewards": 1}  # the late order of x rewards r1 (its window is open)
    assert c[bb] == {"requests": 1, "impressions": 1, "impressed_items": 1, "clicks": 1, "orders": 1,
                     "order_items": 1, "revenue": 3.0, "rewards": 1}
    assert inc.skipped == {"duplicate_click": 1}
    exposed = [v for k, v in g.items() if k[1] == "exposed"]
    assert sum(v.get("orders", 0) for v in exposed) == 3 and sum(v.get("converted", 0) for v in exposed) == 1
    assert sum(v.get("revenue", 0) for v in exposed) == 10 + 3 + 9 + 1 + 4


def test_same_event_id_is_skipped_even_when_fields_differ():
    log = [served(1, 0, "r1", "A", ["x"]), ev(2, "rec_impression", 1, request_id="r1", item_id="x"),
           ev(2, "rec_impression", 2, request_id="r1", item_id="x")]
    inc = run(log)
    assert inc.skipped == {"duplicate_event": 1}


def test_control_request_puts_user_in_control_and_counts_orders():
    log = [served(1, 0, "r1", "control", []), ev(2, "purchase", 10, item_id="x", price=2.0, quantity=3.0)]
    c, g = as_dicts(run(log))
    b0 = int(T0 // 3600) * 3600
    assert g == {("c", "control", b0): {"users": 1, "converted": 1, "orders": 1, "items": 3, "items_sq": 9,
                                         "revenue": 6.0, "revenue_sq": 36.0}}
    assert c == {("c", "control", "home", b0): {"requests": 1}}


def test_impressions_and_clicks_count_only_the_lists_own_items():
    """One impression of 900 invented ids and 1,000 clicks on items the list never held made an arm's
    CTR 1.49 and filled the top impressed / clicked items with invented ids."""
    log = [served(0, 0, "r1", "A", ["a", "b", "c"]),
           ev(1, "rec_impression", 1, request_id="r1", campaign_id="c", arm="A",
              items=tuple(BasketLine(i) for i in ["a", "FAKE", "b", "a"] + ["FAKE"] * 900)),
           *[ev(2 + i, "rec_click", 2 + i, request_id="r1", campaign_id="c", arm="A", item_id=f"not-in-list-{i}")
             for i in range(1000)],
           ev(2000, "rec_click", 3000, request_id="r1", campaign_id="c", arm="A", item_id="c"),  # served, not shown
           ev(2001, "rec_click", 3001, request_id="r1", campaign_id="c", arm="A", item_id="b")]
    inc = run(log, JoinRules(window_s=6000.0))
    counters, _ = as_dicts(inc)
    total = {f: sum(r.get(f, 0) for r in counters.values()) for f in ("impressions", "impressed_items", "clicks")}
    assert total == {"impressions": 1, "impressed_items": 2, "clicks": 1}  # a and b shown; b clicked
    assert inc.skipped["click_not_in_list"] == 1001
    assert {i for (_, kind, i) in inc.items if kind == "impressed"} == {"a", "b"}
    assert {i for (_, kind, i) in inc.items if kind == "clicked"} == {"b"}


def test_only_served_lists_register_a_list():
    """Feedback naming a list the server did not serve counts for nothing, and a rec_request posted to
    ``events`` (clients can write there) is not a served list (issue 13: forged lists rigged the analytics)."""
    forged = [ev(1, "rec_impression", 0, request_id="r9", campaign_id="c", arm="A", item_id="x"),
              ev(2, "rec_click", 5, request_id="r9", campaign_id="c", arm="A", item_id="x"),
              ev(3, "add_to_cart", 30, item_id="x")]
    inc = run(forged, JoinRules(window_s=60.0))
    assert as_dicts(inc) == ({}, {}) and inc.skipped["unknown_request"] == 2
    users: dict[str, AnalyticsUser] = {}
    inc = Increments()
    u = users.setdefault("u1", AnalyticsUser())
    apply_event(u, served(0, 0, "r9", "A", ["x"]), JoinRules(), inc)  # a rec_request on events
    for e in forged:
        apply_event(u, e, JoinRules(window_s=60.0), inc)
    assert as_dicts(inc) == ({}, {}) and inc.skipped["request_on_events"] == 1


@pytest.mark.parametrize("bad", [b"", b"\x02abc"])
def test_decode_user_refuses_unknown_versions(bad):
    with pytest.raises(ValueError, match="unknown version byte"):
        decode_user(bad)


@settings(max_examples=25, deadline=None)
@given(sim_seed=st.integers(0, 10_000), noise_seed=st.integers(0, 10_000),
       dup=st.floats(0.0, 0.2), late=st.floats(0.0, 0.2))
def test_join_equals_recount_for_any_noise(sim_seed, noise_seed, dup, late):
    sim = ab_simulation(40, seed=sim_seed % 50)
    log = with_noise(sim.events(), seed=noise_seed, dup_share=dup, late_share=late)
    counters, groups = as_dicts(run(log))
    want_c, want_g = recount(log)
    assert counters == clean(want_c) and groups == clean(want_g)
