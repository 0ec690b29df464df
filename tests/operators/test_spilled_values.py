"""``SpilledValues``: a str -> bytes table with its values in an unlinked file answers as the dict it replaces
(issue 14: the API's catalog at 1M items), through changes, deletes and compactions."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.spilled_values import SpilledValues

_KEYS = st.sampled_from([f"i{j}" for j in range(12)] + ["", "é/ü", "i1 "])
_OPS = st.lists(st.tuples(st.sampled_from(["set", "set", "set", "pop"]), _KEYS, st.binary(max_size=40)), max_size=120)


def _same(table: SpilledValues, model: dict[str, bytes]) -> None:
    assert len(table) == len(model)
    assert list(table.items()) == list(model.items())  # the dict's order: first insertion, re-set after a delete at the end
    assert list(table.keys()) == list(model) and list(table.values()) == list(model.values())
    for key in [*model, "absent"]:
        assert table.get(key) == model.get(key)
        assert (key in table) == (key in model)


@settings(max_examples=150, deadline=None)
@given(ops=_OPS, compact_min_bytes=st.sampled_from([0, 16, 1 << 30]))
def test_answers_as_a_dict(tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, str, bytes]],
                           compact_min_bytes: int) -> None:
    table = SpilledValues(tmp_path_factory.mktemp("spill"), compact_min_bytes=compact_min_bytes)
    model: dict[str, bytes] = {}
    for op, key, value in ops:
        if op == "set":
            table[key] = value
            model[key] = value
        else:
            assert table.pop(key) == model.pop(key, None)
        assert len(table) == len(model)
    _same(table, model)
    if compact_min_bytes == 0 and ops:
        assert table.file_bytes <= 2 * sum(map(len, model.values())) or table.file_bytes == 0
    table.compact()  # an explicit compaction changes nothing either
    _same(table, model)
    assert table.file_bytes == sum(map(len, model.values()))


def test_dict_methods_and_errors(tmp_path: Path) -> None:
    table = SpilledValues(tmp_path)
    table["a"] = b"x" * 1000
    assert table["a"] == b"x" * 1000 and table.get(7) is None and 7 not in table  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        table["b"]  # noqa: B018
    with pytest.raises(KeyError):
        del table["b"]
    del table["a"]
    assert table.get("a", b"default") == b"default" and list(table) == []
    table["a"] = b""  # an empty value is held, not absent
    assert table.get("a") == b"" and len(table) == 1


def test_the_file_is_unlinked_and_compacted(tmp_path: Path) -> None:
    table = SpilledValues(tmp_path / "spill", compact_min_bytes=10_000)
    assert os.listdir(tmp_path / "spill") == []  # nothing left behind, even after kill -9
    for round_ in range(30):
        for j in range(100):
            table[f"i{j}"] = bytes([round_]) * 100  # every round replaces every value: 10 KB dead per round
    assert table.n_compactions >= 10 and table.file_bytes <= 2 * 10_000 + 10_000
    assert all(table.get(f"i{j}") == bytes([29]) * 100 for j in range(100))
    assert list(table) == [f"i{j}" for j in range(100)]


def test_readers_on_other_threads_never_see_a_torn_value(tmp_path: Path) -> None:
    """One writer changes and deletes values (with compactions and growths) while readers read: every value read
    is one the writer set for that key (never bytes of another value)."""
    table = SpilledValues(tmp_path, compact_min_bytes=2_000)
    done = threading.Event()
    bad: list[tuple[str, bytes]] = []

    def valid(key: str, value: bytes) -> bool:
        m = (len(value) - 2) // len(key)
        return m >= 1 and value == key.encode() * m + b"|#"

    def read() -> None:
        while not done.is_set():
            for j in range(0, 400, 7):
                key = f"k{j:03d}"
                value = table.get(key)
                if value is not None and not valid(key, value):
                    bad.append((key, value))
            for key, value in table.items():
                if not valid(key, value):
                    bad.append((key, value))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for step in range(6_000):
            key = f"k{(step * 37) % 400:03d}"
            if step % 11 == 0:
                table.pop(key)
            else:
                table[key] = key.encode() * (1 + step % 5) + b"|#"
    finally:
        done.set()
        for t in readers:
            t.join()
    assert bad == [] and table.n_compactions > 0
