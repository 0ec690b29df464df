"""operators/parse.py: whatever the bytes, parsing returns an Event or a DeadLetter with a reason."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.errors import BadEvent
from operators.parse import EventRules, parse_event, validate_event_dict
from operators.schema import DeadLetter, Event, encode_event
from operators.settings import DEFAULT_EVENT_TYPES, Settings

RULES = EventRules.from_specs(DEFAULT_EVENT_TYPES, max_event_bytes=4096)
TS = 1_764_400_000.0


def ev(**kw: object) -> dict:
    base = {"event_id": "e1", "ts": TS, "type": "view", "user_id": "u1", "item_id": "i1"}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


@given(st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=10)))
@settings(max_examples=300, deadline=None)
def test_never_raises_on_bytes(value, key):
    out = parse_event(key, value, RULES)
    assert isinstance(out, Event | DeadLetter)


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                           max_leaves=8)


@given(st.dictionaries(st.sampled_from(["event_id", "ts", "type", "user_id", "item_id", "items", "price", "x"]),
                       json_values, max_size=8))
@settings(max_examples=300, deadline=None)
def test_never_raises_on_json_objects(obj):
    out = parse_event(b"u1", orjson.dumps(obj), RULES)
    assert isinstance(out, Event | DeadLetter)
    if isinstance(out, DeadLetter):
        assert out.reason and out.field and out.detail


def test_round_trip_keeps_unknown_fields_and_canonical_ids():
    e = parse_event(b"7", orjson.dumps(ev(user_id=7, item_id=12345678901234567890, shop_field={"a": 1})), RULES)
    assert isinstance(e, Event)
    assert e.user_id == "7" and e.item_id == "12345678901234567890"
    assert e.extra == {"shop_field": {"a": 1}}
    again = parse_event(b"7", encode_event(e), RULES)
    assert again == e


@pytest.mark.parametrize(("obj", "field", "match"), [
    (ev(ts=TS * 1000), "ts", "looks like milliseconds"),
    (ev(ts=12.0), "ts", "between 2000-01-01"),
    (ev(ts="2025-11-29T10:00:00"), "ts", "needs a zone"),
    (ev(ts="yesterday"), "ts", "ISO-8601 time with zone"),
    (ev(user_id=None), "user_id", "required"),
    (ev(user_id=1.5), "user_id", "a number with a fraction"),
    (ev(user_id=""), "user_id", "non-empty"),
    (ev(type="teleport"), "type", "unknown event type"),
    (ev(item_id=None), "item_id|items", "required for event type 'view'"),
    (ev(item_id=None, items=[{"item_id": "a"}, {"item_id": ""}]), "items[1].item_id", "non-empty"),
    (ev(type="search", item_id=None), "query", "required"),
])
def test_bad_event_names_the_field(obj, field, match):
    with pytest.raises(BadEvent, match=match) as info:
        validate_event_dict(obj, RULES)
    assert info.value.field == field


@pytest.mark.parametrize(("obj", "field", "reason"), [
    (ev(type=5), "type", "Expected `string`, got `integer`"),
    (ev(type="purchase", price="5"), "price", "Expected `number | null`, got `string`"),
    (ev(type="purchase", quantity=True), "quantity", "Expected `number | null`, got `boolean`"),
    (ev(type="purchase", price=-5), "price", "Expected `number` >= 0.0"),
    (ev(item_id=None, items="abc"), "items", "Expected `array | null`, got `string`"),
    (ev(item_id=None, items=[{"item_id": "a", "quantity": "x"}]), "items[0].quantity", "Expected `number`, got `string`"),
    (ev(user_id={"a": 1}), "user_id", "Expected `integer | number | string`, got `object`"),
    (ev(session_id=[1]), "session_id", "Expected `integer | number | string | null`, got `array`"),
])
def test_type_errors_name_json_types(obj, field, reason):
    """msgspec's reasons named Python types to the client and in dead letters (``Expected `float | null`, got
    `str```); they name JSON's, as the API's other errors do."""
    with pytest.raises(BadEvent) as info:
        validate_event_dict(obj, RULES)
    assert (info.value.field, info.value.reason) == (field, reason)


def test_iso_time_is_converted_and_baskets_accept_plain_ids():
    e = validate_event_dict(ev(ts="2025-11-29T10:00:00Z", type="purchase", item_id=None, items=["a", 3]), RULES)
    assert e.ts == 1764410400.0
    assert [line.item_id for line in e.items] == ["a", "3"]


@pytest.mark.parametrize(("key", "value", "reason"), [
    (b"u1", None, "missing_value"),
    (None, orjson.dumps(ev()), "missing_key"),
    (b"u2", orjson.dumps(ev()), "key_mismatch"),
    (b"u1", b"x" * 5000, "too_large"),
    (b"u1", b"{nope", "malformed_json"),
])
def test_dead_letter_reasons(key, value, reason):
    out = parse_event(key, value, RULES, topic="events", partition=3, offset=42)
    assert isinstance(out, DeadLetter)
    assert (out.reason, out.partition, out.offset) == (reason, 3, 42)
    assert out.raw == (value or b"")


def test_extra_fields_nested_past_the_limit_are_dead_letters_for_the_flow_and_the_lake() -> None:
    """The flow and the archiver parse with ``parse_event``: an event the API refuses (nested
    deeper than ``MAX_EXTRA_DEPTH``) that reached the topic another way is a dead letter, not a
    crash of the lake's encoder; 16 levels still pass and are encoded."""
    from operators.lake.schema import events_table
    from operators.parse import MAX_EXTRA_DEPTH

    def event(depth: int) -> bytes:
        return (b'{"type":"view","user_id":"u","item_id":"i","event_id":"e","ts":1764400000,"meta":{"a":'
                + b"[" * (depth - 1) + b"1" + b"]" * (depth - 1) + b"}}")

    ok = parse_event(b"u", event(MAX_EXTRA_DEPTH), RULES, received_ts=1764400000.0)
    assert isinstance(ok, Event) and ok.extra is not None
    assert events_table([(0, 0, ok)]).num_rows == 1 and encode_event(ok)
    for depth in (MAX_EXTRA_DEPTH + 1, 300):
        dead = parse_event(b"u", event(depth), RULES, received_ts=1764400000.0)
        assert isinstance(dead, DeadLetter) and (dead.reason, dead.field) == ("invalid_field", "meta"), dead
        assert "nested deeper than 16" in dead.detail


@pytest.mark.parametrize(("extra", "field"), [
    ({"price": 1e308}, "price"), ({"price": -1.0}, "price"), ({"price": float("nan")}, "price"),
    ({"quantity": 0}, "quantity"), ({"quantity": -3}, "quantity"), ({"quantity": 1e7}, "quantity"),
    ({"lat": 91.0}, "lat"), ({"lon": -181.0}, "lon"),
    ({"item_id": None, "items": [{"item_id": "a", "price": 1e300}]}, "items[0].price"),
    ({"item_id": None, "items": [{"item_id": "a", "quantity": 6e5}, {"item_id": "a", "quantity": 6e5}]},
     "items[1].quantity"),
])
def test_money_and_coordinates_out_of_range_are_refused(extra: dict, field: str) -> None:
    """One order of price 1e308 made revenue inf and froze a campaign's analytics row for good."""
    with pytest.raises(BadEvent) as exc:
        validate_event_dict(ev(type="purchase", **extra), RULES)
    assert exc.value.field == field
    if extra.get("price") == extra.get("price"):  # NaN has no JSON form (orjson writes null)
        dead = parse_event(b"u1", orjson.dumps(ev(type="purchase", **extra)), RULES)
        assert isinstance(dead, DeadLetter) and dead.field == field
    ok = validate_event_dict(ev(type="purchase", price=1e9, quantity=1e6, lat=-90.0, lon=180.0), RULES)
    assert (ok.price, ok.quantity) == (1e9, 1e6)


@pytest.mark.parametrize(("extra", "field"), [
    ({"price": 1e9, "quantity": 1}, "price"), ({"price": 1.0, "quantity": 1e6}, "quantity"),
    ({"price": 1e6 + 1}, "price"), ({"quantity": 100_001}, "quantity"),
    ({"item_id": None, "items": [{"item_id": "a"}, {"item_id": "b", "price": 2e6}]}, "items[1].price"),
    ({"item_id": None, "items": [{"item_id": "a", "quantity": 2e5}]}, "items[0].quantity"),
    ({"item_id": None, "items": [{"item_id": "a", "quantity": 6e4}, {"item_id": "a", "quantity": 6e4}]},
     "items[1].quantity"),
])
def test_price_and_quantity_are_bounded_by_the_configured_rules(extra: dict, field: str) -> None:
    """One purchase of price 1e9 x quantity 1e6 was accepted (tester31, 8.3): what one event or line adds to
    the analytics' revenue is bounded by [stream] max_price (1e6) and max_quantity (100,000), in the flow's rules
    (a dead letter) which the API applies too (a 422 naming the field)."""
    rules = EventRules.from_settings(Settings())
    assert (rules.max_price, rules.max_quantity) == (1e6, 100_000)
    with pytest.raises(BadEvent, match="must be at most stream.max_|more than stream.max_quantity") as exc:
        validate_event_dict(ev(type="purchase", **extra), rules)
    assert exc.value.field == field
    dead = parse_event(b"u1", orjson.dumps(ev(type="purchase", **extra)), rules, received_ts=TS)
    assert isinstance(dead, DeadLetter) and (dead.reason, dead.field) == ("invalid_field", field)
    ok = validate_event_dict(ev(type="purchase", price=1e6, quantity=1e5, item_id=None,
                                items=[{"item_id": "a", "price": 1e6, "quantity": 4e4}, {"item_id": "a", "quantity": 6e4}]),
                             rules)
    assert (ok.price, ok.quantity, ok.items[0].quantity) == (1e6, 1e5, 1e5)
    wider = EventRules.from_settings(Settings(stream={"max_price": 1e9, "max_quantity": 1e6}))
    assert validate_event_dict(ev(type="purchase", **extra), wider).type == "purchase"


def test_repeated_basket_lines_of_an_item_are_merged_into_one() -> None:
    """A basket repeating one id 2,500 times counted 2,500 times in popularity (one request took over
    the popular list); now each item is one line: quantities summed, the first price kept."""
    e = validate_event_dict(ev(type="purchase", item_id=None, items=[
        "a", {"item_id": "b", "quantity": 2, "price": 5.0}, "a", {"item_id": "b", "quantity": 3, "price": 7.0},
        {"item_id": "a", "price": 9.0}]), RULES)
    assert [(ln.item_id, ln.quantity, ln.price) for ln in e.items] == [("a", 3.0, 9.0), ("b", 5.0, 5.0)]
    assert e.item_ids() == ["a", "b"]
    many = validate_event_dict(ev(type="purchase", item_id=None, items=["i777"] * 2500), RULES)
    assert many.item_ids() == ["i777"] and many.items[0].quantity == 2500.0


def test_an_item_named_by_item_id_and_a_basket_line_counts_once() -> None:
    """``{"item_id": "x", "items": ["x"]}`` doubled x's weight in popularity (a fresh-user trial: 200
    against 100 for 20 purchases); the event touches each item once, ``item_id`` first."""
    e = validate_event_dict(ev(type="purchase", item_id="x", items=["x", "y", {"item_id": "x", "quantity": 2}]), RULES)
    assert e.item_ids() == ["x", "y"]
    assert validate_event_dict(ev(type="purchase", item_id="x", items=["y"]), RULES).item_ids() == ["x", "y"]
