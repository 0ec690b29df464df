"""operators/served.py: the served record's bytes equal encode_event's, and its typed decode equals
parse_event + impression_of wherever it answers (and defers to them everywhere else)."""

from __future__ import annotations

import time

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.attribution import ANONYMOUS_USER, REQUEST_TYPE, Impression, impression_of
from operators.parse import EventRules, parse_event
from operators.schema import Event, encode_event
from operators.served import encode_served, served_impression
from operators.settings import DEFAULT_EVENT_TYPES

RULES = EventRules.from_specs(DEFAULT_EVENT_TYPES)
NOW = 1_796_000_000.0


def _event_of(imp: Impression, scenario: str, strategy: str) -> Event:
    """The rec_request event api/services.py built before encode_served (the reference)."""
    return Event(event_id=imp.request_id, ts=imp.ts, type=REQUEST_TYPE, user_id=imp.user_id or ANONYMOUS_USER,
                 campaign_id=imp.campaign_id, arm=imp.arm, request_id=imp.request_id,
                 extra={"scenario": scenario, "strategy": strategy, "goal": imp.goal, "window_s": imp.window_s,
                        "segment": imp.segment, "served_items": imp.items})


def _reference(key: bytes | None, value: bytes | None, received_ts: float | None) -> Impression | None:
    ev = parse_event(key, value, RULES, received_ts=received_ts)
    return impression_of(ev) if isinstance(ev, Event) and ev.type == REQUEST_TYPE else None


_ids = st.text(st.characters(codec="utf-8"), min_size=0, max_size=12)
_impressions = st.builds(
    Impression, request_id=_ids, campaign_id=_ids, arm=_ids,
    ts=st.one_of(st.floats(NOW - 1e6, NOW + 1e6), st.floats(allow_nan=True, allow_infinity=True), st.just(NOW * 1000)),
    goal=_ids, window_s=st.one_of(st.floats(0, 1e7), st.integers(0, 10**7)), user_id=st.one_of(st.none(), _ids),
    segment=_ids, items=st.lists(_ids, max_size=5))


@settings(max_examples=400, deadline=None)
@given(imp=_impressions, scenario=_ids, strategy=_ids)
def test_encode_served_writes_the_bytes_of_encode_event(imp: Impression, scenario: str, strategy: str) -> None:
    assert encode_served(imp, scenario, strategy) == encode_event(_event_of(imp, scenario, strategy))


@settings(max_examples=400, deadline=None)
@given(imp=_impressions, other_key=st.one_of(st.none(), st.just(b" u1"), _ids.map(str.encode)), use_other_key=st.booleans())
def test_typed_decode_equals_parse_event_and_impression_of_where_it_answers(
        imp: Impression, other_key: bytes | None, use_other_key: bool) -> None:
    value = encode_served(imp, "similar", "similar")
    key = other_key if use_other_key else (imp.user_id or ANONYMOUS_USER).encode()
    fast = served_impression(key, value, RULES, received_ts=NOW)
    ref = _reference(key, value, NOW)
    if fast is not None:  # never accepts what parse_event refuses, never differs
        assert fast == ref


def test_a_served_list_of_the_api_decodes_to_its_impression() -> None:
    imp = Impression(request_id="r1.abc.def", campaign_id="pdp", arm="covisit", ts=time.time(), goal="click",
                     window_s=86400.0, user_id="u1", segment="", items=["i1", "i2"])
    assert served_impression(b"u1", encode_served(imp, "similar", "similar"), RULES) == imp
    anonymous = Impression(**{**{f: getattr(imp, f) for f in imp.__struct_fields__}, "user_id": None})
    assert served_impression(ANONYMOUS_USER.encode(), encode_served(anonymous, "similar", "similar"), RULES) == anonymous


def test_records_of_another_form_are_left_to_parse_event() -> None:
    imp = Impression(request_id="r1.abc.def", campaign_id="pdp", arm="", ts=NOW, goal="", window_s=60,
                     user_id="u1", items=["i1"])
    value = encode_served(imp, "similar", "similar")
    # empty arm and goal: the defaults of impression_of, on both paths
    assert served_impression(b"u1", value, RULES, NOW) == _reference(b"u1", value, NOW)
    assert served_impression(b"u1", value, RULES, NOW).arm == "unknown"  # type: ignore[union-attr]
    obj = orjson.loads(value)
    for changed in ({**obj, "extra_field": {"a": 1}}, {**obj, "ts": "2026-12-05T00:00:00Z"}, {**obj, "user_id": 7},
                    {k: v for k, v in obj.items() if k != "scenario"}, {**obj, "campaign_id": ""},
                    {**obj, "served_items": [1, 2]}, {**obj, "type": "click"}):
        raw = orjson.dumps(changed)
        assert served_impression(str(changed["user_id"]).encode(), raw, RULES, NOW) is None
    assert served_impression(b"u2", value, RULES, NOW) is None  # key != user_id: a dead letter there
    assert served_impression(b"u1", value, RULES, NOW - 1000) is None  # ts beyond future_skew_s: parse_event decides
    assert served_impression(b"u1", value, EventRules.from_specs([]), NOW) is None  # rec_request not configured
    assert served_impression(b"u1", value, EventRules(RULES.types, max_event_bytes=10), NOW) is None
