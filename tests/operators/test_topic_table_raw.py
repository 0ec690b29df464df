"""``TopicTable(keep_raw=True)``: values held as the bytes read, decoded per ``get``/``items`` (issue 14:
the API's catalog at 1M items), with the same answers as a table that keeps them decoded."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from operators.kafka import TopicSpec, ensure_topics
from operators.spilled_values import SpilledValues
from operators.topic_table import TopicTable
from operators.value_packer import ValuePacker


@pytest.mark.parametrize("spill", [False, True])
def test_raw_table_answers_as_the_decoded_one(broker, tmp_path: Path, spill: bool):
    """Held in a dict or spilled to an unlinked file (``spill_dir``, operators/spilled_values.py) alike."""
    topic = f"catalog-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker, [TopicSpec(topic, 2, compacted=True)])
    p = Producer({"bootstrap.servers": broker})
    for j in range(50):
        p.produce(topic, key=f"i{j}".encode(), value=orjson.dumps({"item_id": f"i{j}", "price": j, "vector": [j, 1.5]}))
    p.produce(topic, key=b"i3", value=None)  # a tombstone
    p.produce(topic, key=b"i4", value=orjson.dumps({"item_id": "i4", "price": 40}))  # replaced
    p.produce(topic, key=b"bad", value=b"{not json")
    assert p.flush(10) == 0
    seen: dict[str, object] = {}
    # values held packed (DEFLATE against the first 8 values): the answers are the decoded table's
    raw = TopicTable(broker, topic, orjson.loads, on_update=seen.__setitem__, keep_raw=True,
                     packer=ValuePacker(learn_values=8), spill_dir=tmp_path / "spill" if spill else None).start()
    assert isinstance(raw._data, SpilledValues) == spill
    plain = TopicTable(broker, topic, orjson.loads).start()
    try:
        assert raw.wait_caught_up(20) and plain.wait_caught_up(20)
        deadline = time.monotonic() + 10
        while (raw.n_messages < 52 or plain.n_messages < 52) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(raw) == len(plain) == 49
        assert raw.get("i4") == plain.get("i4") == {"item_id": "i4", "price": 40}
        assert raw.get("i7") == {"item_id": "i7", "price": 7, "vector": [7, 1.5]}
        assert raw.get("i3") is None and raw.get("bad") is None
        assert raw.get("i7") is not raw.get("i7")  # decoded per call: callers may not share it
        assert sorted(raw.items(), key=lambda kv: kv[0]) == sorted(plain.items(), key=lambda kv: kv[0])
        assert raw.packer is not None and raw.packer.dictionary is not None
        assert sum(v[:1] == b"\x00" for v in raw._data.values()) >= 30  # most are held deflated
        assert {k: orjson.loads(v) for k, v in raw.raw_items()} == dict(plain.items())  # unpacked, not decoded
        assert seen["i4"] == {"item_id": "i4", "price": 40} and seen["i3"] is None  # on_update gets decoded values
        assert sorted(raw.tombstoned_keys()) == ["bad", "i3"]  # the keys a fresh node must not serve
        p.produce(topic, key=b"i3", value=orjson.dumps({"item_id": "i3", "price": 3}))  # published again
        assert p.flush(10) == 0
        while raw.n_messages < 54 and time.monotonic() < deadline + 10:
            time.sleep(0.05)
        assert raw.tombstoned_keys() == ["bad"] and raw.get("i3") == {"item_id": "i3", "price": 3}
        assert [k for k, _ in raw.raw_items()][-1] == "i3"  # published again after its delete: last, as in a dict
    finally:
        raw.stop()
        plain.stop()


def test_an_undecodable_latest_value_drops_the_key(broker):
    """The key's previous value is not left live: a node reading the topic afresh would have nothing for it."""
    topic = f"catalog-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker, [TopicSpec(topic, 1, compacted=True)])
    p = Producer({"bootstrap.servers": broker})
    p.produce(topic, key=b"a", value=orjson.dumps({"item_id": "a", "hidden": False}))
    p.produce(topic, key=b"b", value=orjson.dumps({"item_id": "b"}))
    p.produce(topic, key=b"a", value=b'{"item_id": "a", "hidden": true, "vector": [NaN, 1]}')  # not JSON
    assert p.flush(10) == 0
    seen: list[tuple[str, object]] = []
    for keep_raw in (True, False):
        seen.clear()
        table = TopicTable(broker, topic, orjson.loads, on_update=lambda k, v: seen.append((k, v)), keep_raw=keep_raw).start()
        try:
            assert table.wait_caught_up(20)
            deadline = time.monotonic() + 10
            while table.n_messages < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert table.get("a") is None and table.get("b") == {"item_id": "b"} and len(table) == 1
            assert seen[-1] == ("a", None)  # the view hears a delete, not nothing
        finally:
            table.stop()
