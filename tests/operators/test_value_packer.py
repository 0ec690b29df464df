"""``operators.value_packer.ValuePacker``: every value comes back as given, packed smaller when alike."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.value_packer import ValuePacker


def _item(i: int) -> bytes:
    """A catalog item's JSON as bench/scaled_shop.py writes it (a title, attributes, a 16-float vector)."""
    vector = [round(((i * 7919 + j * 104729) % 200_003) / 100_003.0 - 1.0, 5) for j in range(16)]
    return orjson.dumps({"item_id": f"i{i:06d}", "title": f"Brand{i % 120} shoes {i}", "category": "shoes",
                         "brand": f"Brand{i % 120}", "price": round(10 + (i % 9973) / 7, 2), "on_sale": i % 10 == 0,
                         "tags": ["gift"] if i % 3 else [], "created_ts": 1_690_000_000.125 + i, "vector": vector})


@given(st.lists(st.binary(max_size=600), max_size=40), st.integers(0, 10))
def test_round_trip_any_bytes(values, learn):
    p = ValuePacker(learn_values=learn)
    packed = [p.pack(v) for v in values]
    assert [p.unpack(x) for x in packed] == values
    assert all(len(x) <= len(v) + 1 for x, v in zip(packed, values, strict=True))  # never more than the tag byte


def test_items_pack_to_under_half_after_the_dictionary():
    p = ValuePacker(learn_values=64)
    raw = [_item(i) for i in range(2_000)]
    packed = [p.pack(v) for v in raw]
    assert p.dictionary is not None and len(p.dictionary) == 4096
    assert all(x[:1] == b"\x01" and x[1:] == v for x, v in zip(packed[:64], raw, strict=False))  # the samples: as given
    later = packed[64:]
    assert sum(map(len, later)) < 0.5 * sum(map(len, raw[64:]))
    assert [p.unpack(x) for x in packed] == raw
    assert orjson.loads(p.unpack(packed[1234])) == orjson.loads(raw[1234])


def test_a_value_that_does_not_shrink_is_kept_as_given():
    p = ValuePacker(learn_values=1)
    p.pack(b'{"a": 1}')
    noise = bytes(range(256))
    assert p.pack(noise) == b"\x01" + noise


def test_foreign_bytes_are_refused():
    p = ValuePacker(learn_values=1)
    with pytest.raises(ValueError, match="not a packed value"):
        p.unpack(b'{"a": 1}')
    with pytest.raises(ValueError, match="not a packed value"):
        p.unpack(b"\x00abc")  # deflated before any dictionary: not this packer's
    p.pack(_item(0))
    packed = p.pack(_item(1))
    assert packed[:1] == b"\x00"
    with pytest.raises(ValueError, match="truncated"):
        p.unpack(packed[:-3])
    with pytest.raises(ValueError, match="dictionary_bytes"):
        ValuePacker(dictionary_bytes=8192)
