"""operators/ids.py: the identifier rule, and that every edge applies it (parse, catalog index, replay)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.iql import CatalogIndex, CatalogSchemaError
from operators.ids import MAX_ID_CHARS, BadId, canonical_id
from operators.parse import EventRules, parse_event
from operators.schema import DeadLetter, Event
from operators.settings import DEFAULT_EVENT_TYPES
from simulators.replay import ReplayFormatError, read_sessionrec

RULES = EventRules.from_specs(DEFAULT_EVENT_TYPES)
TS = 1_764_400_000.0


@pytest.mark.parametrize(("value", "canonical"), [
    (12345, "12345"), (12345.0, "12345"), ("12345.0", "12345"), (" 12345.00 ", "12345"), ("+7.0", "7"),
    ("-3", "-3"), ("007", "007"), ("1.50", "1.50"), ("a/b c", "a/b c"), ("x+y%z&w", "x+y%z&w"),
    ("85123A", "85123A"), (2**70, str(2**70)), ("é" * MAX_ID_CHARS, "é" * MAX_ID_CHARS),
])
def test_canonical_form(value, canonical):
    assert canonical_id(value) == canonical
    assert canonical_id(canonical) == canonical  # idempotent


@pytest.mark.parametrize(("value", "match"), [
    ("", "non-empty"), ("   ", "non-empty"), ("x" * (MAX_ID_CHARS + 1), "at most 256"), ("x" * 10_000, "at most 256"),
    ("a\tb", "control"), ("a\nb", "control"), ("a\x00b", "control"), ("a\u200bb", "control"), ("a\u2028b", "control"),
    ("\ufffd\ufffd", "valid UTF-8"), ("ab\udcff", "control|valid UTF-8"),  # %ff%fe in a query string; a lone surrogate
    (1.5, "fraction"), (float("nan"), "fraction"), (2.0**60, "fraction"), (True, "string or an integer"),
    (None, "string or an integer"), ([1], "string or an integer"),
])
def test_refused(value, match):
    with pytest.raises(BadId, match=match):
        canonical_id(value)


@given(st.one_of(st.text(max_size=300), st.integers(), st.floats()))
@settings(max_examples=500, deadline=None)
def test_only_bad_id_and_idempotent(value):
    try:
        c = canonical_id(value)
    except BadId:
        return
    assert 1 <= len(c) <= MAX_ID_CHARS and canonical_id(c) == c


def _event(**kw: object) -> bytes:
    return orjson.dumps({"event_id": "e1", "ts": TS, "type": "view", "user_id": "12345", "item_id": "i1", **kw})


def test_kafka_parse_applies_the_rule():
    a = parse_event(b"12345", _event(user_id=12345.0, item_id="777.0"), RULES)
    b = parse_event(b"12345.0", _event(user_id="12345", item_id=777), RULES)  # a key in float text names the same user
    assert isinstance(a, Event) and isinstance(b, Event)
    assert (a.user_id, a.item_id) == (b.user_id, b.item_id) == ("12345", "777")
    for bad, field in ((_event(item_id="x" * 10_000), "item_id"), (_event(item_id="a\tb"), "item_id"),
                       (_event(item_id=None, type="purchase", items=["ok", "bad\nid"]), "items[1]")):
        out = parse_event(b"12345", bad, RULES)
        assert isinstance(out, DeadLetter) and (out.reason, out.field) == ("invalid_field", field), out


def test_catalog_index_applies_the_rule():
    index = CatalogIndex.build([{"item_id": 12345.0, "price": 1}, {"item_id": " a/b ", "price": 2}])
    assert index.item_idx("12345") == 0 and index.item_idx("a/b") == 1
    index.upsert({"item_id": "12345.0", "price": 5})  # the same item
    assert index.capacity == 2 and index.get("12345")["price"] == 5.0
    with pytest.raises(CatalogSchemaError, match="item_id"):
        index.upsert({"item_id": "a\tb", "price": 1})


def test_replay_applies_the_rule(tmp_path):
    log = tmp_path / "log.tsv"
    log.write_text("SessionId\tItemId\tTime\n1.0\t12345.0\t1700000000\n1\t12345\t1700000001\n")
    events = list(read_sessionrec(log))
    assert {(e.user_id, e.session_id, e.item_id) for e in events} == {("1", "1", "12345")}
    log.write_text("SessionId\tItemId\tTime\n1\t" + "x" * 300 + "\t1700000000\n")
    with pytest.raises(ReplayFormatError, match="ItemId of row 1: must be at most 256"):
        list(read_sessionrec(log))
