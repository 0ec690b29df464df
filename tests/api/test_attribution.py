"""Attribution rules (operators/attribution.py): goal, window, mismatch, one reward per list, last-touch."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.attribution import (
    SERVED_ORDER_SLACK_S,
    Impression,
    attribute,
    attribute_events,
    attribution_ts,
    goal_types,
    last_touch,
    served_lists_read,
    shown_as,
)
from operators.schema import Event

IMP = Impression("r1", "home", "a", 100.0, "click", 60.0, user_id="u1", items=["i1", "i2"])


def _ev(eid: str, ts: float, type_: str = "rec_click", **kw: object) -> Event:
    kw.setdefault("item_id", "i1")
    return Event(eid, ts, type_, kw.pop("user_id", "u1"), **kw)  # type: ignore[arg-type]


def test_goal_types():
    assert goal_types("click") == {"click", "rec_click"}
    assert goal_types("add_to_cart") == {"add_to_cart"}
    assert goal_types("purchase") == {"purchase", "pos_purchase"}


def test_attribute_reasons():
    assert attribute(_ev("e", 110.0, request_id="r1"), None) == "unknown_request"
    assert attribute(_ev("e", 110.0, "view", request_id="r1"), IMP) == "not_goal"
    assert attribute(_ev("e", 110.0, request_id="r1", campaign_id="other"), IMP) == "campaign_mismatch"
    assert attribute(_ev("e", 110.0, request_id="r1", arm="b"), IMP) == "arm_mismatch"
    assert attribute(_ev("e", 99.0, request_id="r1"), IMP) == "before_serving"
    assert attribute(_ev("e", 160.5, request_id="r1"), IMP) == "outside_window"
    r = attribute(_ev("e", 160.0, request_id="r1", campaign_id="home", arm="a"), IMP)
    assert not isinstance(r, str)
    assert (r.request_id, r.campaign_id, r.arm, r.event_id, r.delay_s) == ("r1", "home", "a", "e", 60.0)


def test_an_event_naming_items_rewards_only_a_list_holding_one():
    buy = IMP.__class__("r9", "home", "a", 100.0, "purchase", 600.0, user_id="u1", items=["i1", "i2"])
    assert attribute(_ev("p", 110.0, "purchase", request_id="r9", item_id="zz"), buy) == "not_in_list"
    assert not isinstance(attribute(_ev("p", 110.0, "purchase", request_id="r9", item_id="i2"), buy), str)
    signup = IMP.__class__("r8", "home", "a", 100.0, "signup", 600.0, user_id="u1", items=["i1"])
    assert not isinstance(attribute(_ev("s", 110.0, "signup", request_id="r8", item_id=None), signup), str)
    # the first impression narrows the list to what it displayed; later ones change nothing
    shown = shown_as(buy, _ev("v", 101.0, "rec_impression", request_id="r9", item_id="i2"))
    assert shown is not None and (shown.items, shown.shown) == (["i2"], True)
    assert shown_as(shown, _ev("v2", 102.0, "rec_impression", request_id="r9", item_id="i1")) is None
    assert attribute(_ev("p", 110.0, "purchase", request_id="r9", item_id="i1"), shown) == "not_in_list"
    unknown = shown_as(buy, _ev("v", 101.0, "rec_impression", request_id="r9", item_id="zz"))
    assert unknown is not None and unknown.items == ["i1", "i2"]  # shows none of the list: the list stays


def test_one_reward_per_list_and_per_event():
    evs = [_ev("e1", 101.0, request_id="r1"), _ev("e1", 101.0, request_id="r1"), _ev("e2", 102.0, request_id="r1")]
    res = attribute_events(evs, {"r1": IMP}.get)
    assert [r.event_id for r in res.rewards] == ["e1"]
    assert res.skipped == {"duplicate_event": 1, "already_rewarded": 1}
    again = attribute_events([_ev("e3", 103.0, request_id="r1")], {"r1": IMP}.get, rewarded={"r1"})
    assert again.rewards == [] and again.skipped == {"already_rewarded": 1}


def test_last_touch_picks_newest_list_with_the_item():
    older = Impression("r0", "home", "b", 90.0, "purchase", 600.0, user_id="u1", items=["i1"])
    newer = Impression("r2", "home", "a", 95.0, "purchase", 600.0, user_id="u1", items=["i9"])
    newest = Impression("r3", "home", "c", 97.0, "purchase", 600.0, user_id="u1", items=["i1"])
    buy = _ev("p", 120.0, "purchase")
    assert last_touch(buy, [older, newer, newest]) is newest
    assert last_touch(_ev("p", 2000.0, "purchase"), [older, newest]) is None  # outside every window
    res = attribute_events([buy], {}.get, served_to=lambda u: [older, newer, newest])
    assert [(r.request_id, r.arm) for r in res.rewards] == [("r3", "c")]
    assert attribute_events([buy], {}.get).skipped == {"no_request": 1}


def test_last_touch_takes_no_list_served_after_the_event_was_received():
    """A client may date an event ahead of the clock (up to ``future_skew_s``): a list served after the log
    received the event is not its last touch, whatever ``ts`` says."""
    before = Impression("r1", "home", "a", 100.0, "purchase", 600.0, user_id="u1", items=["i1"])
    after = Impression("r2", "home", "b", 102.0, "purchase", 600.0, user_id="u1", items=["i1"])
    buy = _ev("p", 160.0, "purchase")  # dated a minute after the first list; received at 101
    assert last_touch(buy, [before, after]) is after  # no receive time: its ts alone
    assert last_touch(buy, [before, after], received_ts=101.0) is before
    assert last_touch(buy, [after], received_ts=101.0) is None
    res = attribute_events([buy], {}.get, served_to=lambda u: [before, after], received_ts=101.0)
    assert [r.request_id for r in res.rewards] == ["r1"]
    # an event dated before it was received keeps its own ts
    assert attribution_ts(_ev("q", 99.0, "purchase"), 101.0) == 99.0
    assert attribution_ts(buy, 101.0) == 101.0 and attribution_ts(buy, None) == 160.0


def test_served_lists_read_waits_for_a_list_past_the_slack():
    buy = _ev("p", 160.0, "purchase")
    assert not served_lists_read(buy, 101.0, 101.0 + SERVED_ORDER_SLACK_S - 0.01)
    assert served_lists_read(buy, 101.0, 101.0 + SERVED_ORDER_SLACK_S)
    assert not served_lists_read(buy, None, 150.0)  # without a receive time: its ts


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["r1", "r2", "nope", None]), st.sampled_from(["rec_click", "view", "purchase"]),
                          st.floats(50, 300), st.sampled_from(["e1", "e2", "e3", "e4"])), max_size=20))
def test_any_feedback_rewards_each_list_at_most_once_inside_its_window(evs):
    imps = {"r1": IMP, "r2": Impression("r2", "home", "b", 150.0, "click", 30.0, user_id="u1", items=["i2"])}
    events = [_ev(eid, ts, t, request_id=rid) for rid, t, ts, eid in evs]
    res = attribute_events(events, imps.get, served_to=lambda u: list(imps.values()))
    rids = [r.request_id for r in res.rewards]
    assert len(rids) == len(set(rids)) and len({r.event_id for r in res.rewards}) == len(rids)
    for r in res.rewards:
        imp = imps[r.request_id]
        assert r.event_type in goal_types(imp.goal) and 0 <= r.ts - imp.ts <= imp.window_s
    assert len(res.rewards) + sum(res.skipped.values()) == len(events)
