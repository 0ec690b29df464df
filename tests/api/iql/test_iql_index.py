"""Catalogue index: schema inference and conflicts, upserts and deletes visible to the next query."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from api.iql import AttrType, CatalogIndex, CatalogSchemaError, IQLEngine, RequestContext
from api.iql.columns import CategoricalColumn, ListColumn
from api.iql.numeric import NumericColumn


def ids(engine: IQLEngine, text: str) -> list[str]:
    return sorted(engine.index.item_ids(engine.filter(text, RequestContext())))


def test_schema_is_inferred_per_attribute() -> None:
    index = CatalogIndex.build(
        [
            {
                "item_id": "a",
                "s": "x",
                "n": 3,
                "f": 1.5,
                "b": True,
                "l": ["p", "q"],
                "t": "2024-01-02T03:04:05Z",
                "dt": datetime(2024, 1, 1, tzinfo=UTC),
            },
        ]
    )
    assert dict(index.schema) == {
        "s": AttrType.STRING,
        "n": AttrType.NUMBER,
        "f": AttrType.NUMBER,
        "b": AttrType.BOOL,
        "l": AttrType.STRING_LIST,
        "t": AttrType.TIMESTAMP,
        "dt": AttrType.TIMESTAMP,
    }
    assert index.get("a") == {
        "item_id": "a",
        "s": "x",
        "n": 3.0,
        "f": 1.5,
        "b": True,
        "l": ["p", "q"],
        "t": 1704164645.0,
        "dt": 1704067200.0,
    }


def test_type_conflict_is_a_clear_error_and_changes_nothing() -> None:
    index = CatalogIndex.build([{"item_id": "a", "price": 10, "brand": "Acme"}])
    with pytest.raises(CatalogSchemaError) as info:
        index.upsert({"item_id": "a", "brand": "Bolt", "price": "cheap"})
    err = info.value
    assert (err.item_id, err.attribute, err.value) == ("a", "price", "cheap")
    assert (
        str(err)
        == "item 'a': attribute 'price' must be a number (its type in this catalogue); got 'cheap' (str)"
    )
    assert index.get("a") == {"item_id": "a", "price": 10.0, "brand": "Acme"}


@pytest.mark.parametrize(
    ("item", "match"),
    [
        (
            {"item_id": "x", "v": {"nested": 1}},
            "attribute 'v' must be a string, number, bool, timestamp or list",
        ),
        ({"item_id": "x", "tags": ["a", 1]}, "attribute 'tags' must be a list of strings"),
        ({"price": 1}, "attribute 'item_id' must be a non-empty string"),
        ({"item_id": 1.5}, "attribute 'item_id' must be a non-empty string"),
    ],
)
def test_unsupported_values_are_rejected(item: dict, match: str) -> None:
    with pytest.raises(CatalogSchemaError, match=match):
        CatalogIndex.build([item])


def test_conflict_inside_bulk_build_names_the_item() -> None:
    with pytest.raises(CatalogSchemaError, match="item 'b': attribute 'price' must be a number"):
        CatalogIndex.build([{"item_id": "a", "price": 1}, {"item_id": "b", "price": "x"}])


def test_integer_ids_become_strings_and_duplicates_upsert() -> None:
    index = CatalogIndex.build([{"item_id": 7, "p": 1}, {"item_id": "7", "p": 2}, {"item_id": "8", "p": 3}])
    assert index.capacity == 2 and index.get("7") == {"item_id": "7", "p": 2.0}


def test_excluded_payloads_are_not_indexed() -> None:
    index = CatalogIndex.build([{"item_id": "a", "embedding": [0.1, 0.2], "p": 1}], exclude=["embedding"])
    assert "embedding" not in index.schema


def test_upsert_and_delete_are_visible_to_the_next_query() -> None:
    engine = IQLEngine(
        CatalogIndex.build(
            [
                {"item_id": "a", "brand": "Acme", "price": 10, "tags": ["red"]},
                {"item_id": "b", "brand": "Bolt", "price": 30, "tags": ["blue"]},
            ]
        )
    )
    assert ids(engine, 'brand == "Acme"') == ["a"]
    engine.index.upsert({"item_id": "b", "brand": "Acme", "price": 5, "tags": ["red", "new"]})
    assert ids(engine, 'brand == "Acme"') == ["a", "b"]
    assert ids(engine, "price < 8") == ["b"]
    assert ids(engine, 'tags CONTAINS "blue"') == []
    assert ids(engine, 'tags CONTAINS "new"') == ["b"]
    engine.index.upsert({"item_id": "c", "brand": "Core", "price": 1})
    assert ids(engine, "price < 8") == ["b", "c"]
    assert ids(engine, "tags IS NULL") == ["c"]
    assert engine.index.delete("b") is True
    assert ids(engine, 'brand == "Acme"') == ["a"]
    assert ids(engine, "price < 8") == ["c"]
    assert ids(engine, 'NOT brand == "Core"') == ["a"]
    assert engine.index.delete("b") is False and engine.index.get("b") is None
    assert engine.index.upsert({"item_id": "b", "brand": "Bolt"}) == 1  # the same item_idx comes back
    assert ids(engine, "price IS NULL") == ["b"]


def test_full_upsert_nulls_missing_attributes_partial_keeps_them() -> None:
    index = CatalogIndex.build([{"item_id": "a", "brand": "Acme", "price": 10}])
    index.upsert({"item_id": "a", "price": 12}, partial=True)
    assert index.get("a") == {"item_id": "a", "brand": "Acme", "price": 12.0}
    index.upsert({"item_id": "a", "price": 13})
    assert index.get("a") == {"item_id": "a", "price": 13.0}
    index.upsert({"item_id": "a", "price": None}, partial=True)
    assert index.get("a") == {"item_id": "a"}


def test_hidden_items_leave_the_live_set() -> None:
    engine = IQLEngine(
        CatalogIndex.build([{"item_id": "a", "p": 1, "hidden": True}, {"item_id": "b", "p": 2}])
    )
    assert ids(engine, "p > 0") == ["b"] and len(engine.index) == 1
    engine.index.upsert({"item_id": "a", "hidden": False}, partial=True)
    engine.index.upsert({"item_id": "b", "hidden": True}, partial=True)
    assert ids(engine, "p > 0") == ["a"]
    assert ids(engine, "hidden IS NULL OR NOT hidden") == ["a"]


def test_incremental_equals_bulk_build() -> None:
    rng = np.random.default_rng(5)
    items = [
        {
            "item_id": f"i{i}",
            "c": str(rng.integers(0, 4)),
            "n": float(rng.integers(0, 50)),
            "l": [str(x) for x in rng.choice(6, rng.integers(0, 3), replace=False)],
        }
        for i in range(300)
    ]
    bulk = IQLEngine(CatalogIndex.build(items, bucket=8))
    incremental = IQLEngine(CatalogIndex(bucket=8, max_delta=16))
    for item in items:
        incremental.index.upsert(item)
    for text in [
        'c == "1"',
        "n BETWEEN 10 AND 30",
        'l ANY ["1", "2"]',
        'l ALL ["1", "2"]',
        'n > 44 OR c != "0"',
    ]:
        assert ids(bulk, text) == ids(incremental, text), text


@pytest.mark.parametrize(("bucket", "max_delta"), [(3, 5), (None, None)])
def test_numeric_column_ranges_with_delta_and_rebuilds(bucket: int | None, max_delta: int | None) -> None:
    rng = np.random.default_rng(0)
    n = 1500
    truth = rng.integers(0, 100, n).astype(float)
    truth[rng.random(n) < 0.1] = np.nan
    column = NumericColumn(bucket=bucket, max_delta=max_delta)
    column.bulk_load(np.arange(n), truth)
    for _ in range(200):
        idx = int(rng.integers(0, n + 50))
        value = None if rng.random() < 0.1 else float(rng.integers(0, 100))
        column.set(idx, value)
        if idx >= len(truth):
            truth = np.concatenate([truth, np.full(idx + 1 - len(truth), np.nan)])
        truth[idx] = np.nan if value is None else value
        low, high = sorted(rng.integers(-5, 105, 2).tolist())
        low_inc, high_inc = (bool(x) for x in rng.random(2) < 0.5)
        with np.errstate(invalid="ignore"):
            mask = (truth >= low if low_inc else truth > low) & (truth <= high if high_inc else truth < high)
        assert (
            sorted(column.range(float(low), float(high), low_inc, high_inc)) == np.flatnonzero(mask).tolist()
        )
    assert sorted(column.range(None, 10.0)) == np.flatnonzero(truth <= 10).tolist()


def test_queries_during_a_stream_of_upserts_from_another_thread() -> None:
    import threading

    index = CatalogIndex.build(
        [{"item_id": f"i{k}", "p": float(k % 50)} for k in range(2000)], bucket=16, max_delta=64
    )
    engine = IQLEngine(index)
    errors: list[BaseException] = []

    def write() -> None:
        rng = np.random.default_rng(1)
        try:
            for k in range(3000):
                index.upsert({"item_id": f"i{int(rng.integers(0, 2500))}", "p": float(rng.integers(0, 50))})
                if k % 7 == 0:
                    index.delete(f"i{int(rng.integers(0, 2500))}")
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    while writer.is_alive():
        engine.filter("p BETWEEN 10 AND 30 OR p IS NULL", RequestContext())
    writer.join()
    assert not errors
    got = ids(engine, "p BETWEEN 10 AND 30")
    want = sorted(
        k for k in (f"i{j}" for j in range(2500)) if (item := index.get(k)) and 10 <= item.get("p", -1) <= 30
    )
    assert got == want


def test_skip_unsupported_attributes_instead_of_raising() -> None:
    index = CatalogIndex.build(
        [
            {"item_id": "a", "emb": [0.1, 0.2], "meta": {"x": 1}, "p": 1},
            {"item_id": "b", "emb": [0.3], "p": 2},
        ],
        skip_unsupported=True,
    )
    index.upsert({"item_id": "c", "meta": {"y": 2}, "p": 3})
    assert dict(index.schema) == {"p": AttrType.NUMBER} and index.schema.skipped == {"emb", "meta"}
    with pytest.raises(CatalogSchemaError, match="attribute 'p' must be a number"):
        index.upsert({"item_id": "d", "p": "x"})


def test_item_attributes_read_lazily_equal_get() -> None:
    """``CatalogIndex.attributes`` (a request's ``context.item``, read attribute by attribute) has ``get``'s keys and
    values, whichever attribute is read first: missing ones absent, lists as lists, timestamps as epoch seconds;
    unknown and deleted items are None; a hidden item keeps its attributes."""
    items = [
        {"item_id": "a", "s": "x", "n": 3, "l": ["p", "q"], "t": "2024-01-02T03:04:05Z", "b": True},
        {"item_id": "b", "s": "y", "f": 1.5, "b": False},
        {"item_id": "c", "n": 7, "l": []},
        {"item_id": "d", "s": "x", "hidden": True},
    ]
    index = CatalogIndex.build(items)
    index.upsert({"item_id": "e", "s": "z", "n": 1})
    index.delete("b")
    for item_id in ("a", "b", "c", "d", "e", "nope"):
        want = index.get(item_id)
        got = index.attributes(item_id)
        if want is None:
            assert got is None
            continue
        for name in ("s", "n", "f", "l", "t", "b", "hidden", "item_id", "other"):
            assert got.get(name) == want.get(name)
            assert (name in got) == (name in want)
        assert dict(got) == want and len(got) == len(want) and got == want
        assert dict(index.attributes(item_id)) == want  # iterated before any read


def _wide(names: int, build: bool) -> CatalogIndex:
    """A catalog of ``names`` distinct attribute names (100 a item), plus item "x" holding ``a`` and ``price``."""
    items = [{"item_id": f"w{k}", **{f"n{k}_{j}": j for j in range(100)}} for k in range(names // 100)]
    items.append({"item_id": "x", "a": "red", "price": 3.0})
    if build:
        return CatalogIndex.build(items)
    index = CatalogIndex()
    for item in items:
        index.upsert(item)
    return index


@pytest.mark.parametrize("build", [False, True])
def test_an_upsert_touches_the_items_columns_whatever_the_catalog_width(build: bool, monkeypatch: pytest.MonkeyPatch
                                                                        ) -> None:
    """A new user's trial (catalog defect 1): a full upsert nulled every column the item lacked, 788 ms per upsert
    at 50,000 names, on the request path; it now writes only the columns the item had and has (column writes
    counted, not timed)."""
    writes = [0]
    for cls in (CategoricalColumn, ListColumn, NumericColumn):
        def counted(self: object, idx: int, value: object, _set: Any = cls.set) -> None:
            writes[0] += 1
            _set(self, idx, value)
        monkeypatch.setattr(cls, "set", counted)
    for width in (100, 5_000):
        index = _wide(width, build)
        engine = IQLEngine(index)
        before = writes[0]
        index.upsert({"item_id": "x", "a": "blue", "size": 2})  # price nulled, a changed, size new
        index.upsert({"item_id": "x", "price": 5.0}, partial=True)
        index.upsert({"item_id": "w0", "n0_1": 7})  # 99 of its own columns nulled, none of the others
        assert writes[0] - before == 3 + 1 + 100, width
        assert index.get("x") == {"item_id": "x", "a": "blue", "size": 2, "price": 5.0}
        assert index.get("w0") == {"item_id": "w0", "n0_1": 7}
        assert ids(engine, "n0_2 == 2") == [] and ids(engine, "price > 4") == ["x"]
        before = writes[0]
        assert index.delete("x") and writes[0] - before == 3 and ids(engine, "price > 4") == []
        index.upsert({"item_id": "x", "b": True})
        assert index.get("x") == {"item_id": "x", "b": True} and ids(engine, "a == 'blue'") == []


@pytest.mark.parametrize("build", [False, True])
def test_max_attribute_names_rejects_an_item_adding_names_beyond_it(build: bool) -> None:
    """``api.catalog_max_attribute_names``: an item bringing names beyond the catalog's limit is rejected whole, before
    any change (a null or an excluded attribute adds no name); the known names stay free to use."""
    items = [{"item_id": "a", "brand": "x", "price": 1, "image": "a.jpg"},
             {"item_id": "b", "brand": "y", "color": "red", "size": None},
             {"item_id": "c", "w": 1, "h": 2},
             {"item_id": "d", "w": 1},
             {"item_id": "e", "color": "blue", "price": 2}]
    options = dict(max_attribute_names=4, exclude={"image"})
    rejected: list[tuple[str, str]] = []
    if build:
        index = CatalogIndex.build(items, on_reject=lambda item, exc: rejected.append((item["item_id"], str(exc))),
                                   **options)
    else:
        index = CatalogIndex(**options)
        for item in items:
            try:
                index.upsert(item)
            except CatalogSchemaError as exc:
                rejected.append((item["item_id"], str(exc)))
    assert rejected == [("c", "item 'c': attribute 'h' (and 1 more new name) would make 5 distinct attribute names "
                              "in the catalog; at most 4 (api.catalog_max_attribute_names)")]
    assert index.get("c") is None and index.column("h") is None and index.get("d") == {"item_id": "d", "w": 1}
    with pytest.raises(CatalogSchemaError, match="api.catalog_max_attribute_names"):
        index.upsert({"item_id": "a", "brand": "x", "new": 1})
    assert index.get("a") == {"item_id": "a", "brand": "x", "price": 1}
    index.upsert({"item_id": "a", "brand": "z", "color": "g", "w": 5})
    assert sorted(index.item_ids(index.column("w").present)) == ["a", "d"]
