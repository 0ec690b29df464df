"""operators/catalog_rule.py: the catalog schema rule (coerce or reject whole items), and that the API's
index applies the same coercions (api/iql/schema.py)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from api.iql import CatalogIndex, CatalogSchemaError
from operators.catalog_rule import (
    CatalogLimits,
    CatalogSizeError,
    CatalogValueError,
    check_catalog,
    check_item,
    check_size,
    check_vector,
    coerce_value,
)
from operators.settings import ApiSettings


@pytest.mark.parametrize(("value", "kind", "out"), [
    ("12.50", "number", 12.5), (" 7 ", "number", 7), ("1e3", "number", 1000.0), (3, "number", 3),
    ("TRUE", "bool", True), ("0", "bool", False), (123, "string", "123"), ("2026-05-01", "timestamp", "2026-05-01"),
    (1.7e9, "timestamp", 1.7e9), (("a", "b"), "list of strings", ["a", "b"]),
])
def test_coercions(value, kind, out):
    got = coerce_value("a", value, kind)
    assert got == out and type(got) is type(out)


@pytest.mark.parametrize(("value", "kind"), [
    ("cheap", "number"), ("nan", "number"), ("inf", "number"), (True, "number"), ("yes", "bool"), (1.5, "string"),
    ({"x": 1}, "string"), (["a", 1], "list of strings"), ("soon", "timestamp"),
])
def test_rejections(value, kind):
    with pytest.raises(CatalogValueError, match="attribute 'a' must be a"):
        coerce_value("a", value, kind)


def test_check_catalog_counts_and_rejects_whole_items():
    items = [{"item_id": "a", "price": 10.0, "on_sale": True, "brand": "Acme", "vector": [0.1, 0.2]},
             {"item_id": "b", "price": "12.5", "on_sale": "false", "brand": 7},
             {"item_id": "c", "price": "cheap", "brand": "Bolt"},
             {"item_id": 12345.0, "price": 3, "meta": {"k": 1}},
             {"item_id": "", "price": 1}]
    check = check_catalog(items, exclude={"vector"})
    assert [i["item_id"] for i in check.accepted] == ["a", "b", "12345"]
    assert check.accepted[1] == {"item_id": "b", "price": 12.5, "on_sale": False, "brand": "7"}
    assert check.coerced == {"price": 1, "on_sale": 1, "brand": 1}
    assert [(pos, i) for pos, i, _ in check.rejected] == [(2, "c"), (4, "")]
    assert "attribute 'price' must be a number; got 'cheap'" in check.rejected[0][2]
    assert check.accepted[2]["meta"] == {"k": 1}  # not indexable: kept, not checked


def test_index_applies_the_same_coercions():
    index = CatalogIndex.build([{"item_id": "a", "price": 10.0, "on_sale": True}])
    index.upsert({"item_id": "b", "price": "12.5", "on_sale": "false"})
    assert index.get("b") == {"item_id": "b", "price": 12.5, "on_sale": False}
    with pytest.raises(CatalogSchemaError, match="'price' must be a number"):
        index.upsert({"item_id": "c", "price": "cheap"})


@pytest.mark.parametrize("value", ["true", 1, 0, "false", [True], {"x": True}])
def test_deleted_that_is_not_a_json_bool_rejects_the_item(value):
    """Issue 13: ``"deleted": "true"`` or ``1`` was published as a live item carrying a ``deleted`` attribute."""
    check = check_catalog([{"item_id": "a", "deleted": value, "price": 1.0}])
    assert check.accepted == [] and check.deleted == []
    assert check.rejected == [(0, "a", "attribute 'deleted' must be a JSON bool: use true to delete the item "
                                       f"or false to keep it; got {value!r} ({type(value).__name__})")]
    with pytest.raises(CatalogValueError, match="'deleted' must be a JSON bool: use true"):
        check_item({"item_id": "a", "deleted": value})


def test_deleted_true_deletes_and_false_is_dropped():
    items = [{"item_id": "a", "deleted": True, "price": "cheap"}, {"item_id": "b", "deleted": False, "price": 2.0},
             {"item_id": 7.0, "deleted": None}, {"item_id": "c", "price": 3.0}]
    check = check_catalog(items)
    assert check.deleted == [(0, "a")]  # the rest of a delete's line is not checked
    assert check.accepted == [{"item_id": "b", "price": 2.0}, {"item_id": "7"}, {"item_id": "c", "price": 3.0}]
    assert check.rejected == [] and "deleted" not in check.kinds
    assert check_item({"item_id": "a", "deleted": True}) is None
    item = {"item_id": "c", "price": 3.0}
    assert check_item(item) is item


@pytest.mark.parametrize(("value", "why"), [
    ([[1, 2], [3, 4]], "element 0 is an array"), (["1", "2"], "element 0 is a string"),
    ([1.0, None], "element 1 is null"), ([True, 1.0], "element 0 is a bool"), ([1.0, 1e39], "element 1 is not a finite float32"),
    ([1.0, float("nan")], "element 1 is not a finite float32"), ([1, 2, 3], "3 numbers, not 2"), ([1.0], "1 number, not 2"),
    ([], "0 numbers, not 2"), (np.array([[1.0, 2.0]]), "a 2-d float64 array"),
])
def test_a_vector_is_a_flat_array_of_finite_numbers(value, why):
    """Issue 14: a nested vector or one of numeric strings was accepted (and np.asarray flattened or parsed it)."""
    with pytest.raises(CatalogValueError) as exc:
        check_vector("vector", value, 2)
    assert str(exc.value).startswith(f"attribute 'vector' must be a flat JSON array of 2 finite numbers ({why}); got ")


def test_check_vector_accepts_ints_floats_and_any_length_without_dim():
    assert check_vector("v", [1, 2.5, -3e-3], 3).tolist() == pytest.approx([1.0, 2.5, -3e-3])
    assert check_vector("v", [0, 0, 0, 0, 0]).dtype == np.float32  # no dim: any non-zero length; zeros fit
    with pytest.raises(CatalogValueError, match=r"\(0 numbers\); got \[\]"):
        check_vector("v", [])
    with pytest.raises(CatalogValueError, match=r"must be a flat JSON array of finite numbers; got '1,2' \(str\)"):
        check_vector("v", "1,2")


def test_check_catalog_rejects_an_item_whose_vector_does_not_fit():
    items = [{"item_id": "a", "vector": [0.1, 0.2]}, {"item_id": "b", "vector": [[0.1, 0.2]]},
             {"item_id": "c", "vector": ["0.1", "0.2"]}, {"item_id": "d", "vector": None},
             {"item_id": "e", "vector": [0.1, 0.2, 0.3]}, {"item_id": "f", "vector": [0.1, 0.2], "deleted": "no"}]
    check = check_catalog(items, vector_attribute="vector", vector_dim=2)
    assert [i["item_id"] for i in check.accepted] == ["a", "d"] and "vector" not in check.kinds
    assert [(pos, item_id, reason.split(" (")[1].split(")")[0]) for pos, item_id, reason in check.rejected[:3]] == [
        (1, "b", "element 0 is an array"), (2, "c", "element 0 is a string"), (4, "e", "3 numbers, not 2")]
    assert check.rejected[3][:2] == (5, "f") and "'deleted' must be a JSON bool" in check.rejected[3][2]
    assert [i["item_id"] for i in check_catalog(items[:5], vector_attribute="vector").accepted] == ["a", "d", "e"]


def test_check_vector_refuses_huge_values_without_numpy_warnings() -> None:
    """A vector with ``1e308`` printed numpy's "overflow encountered in matmul" on the CLI and in the API log."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for bad in ([1e308, 1.0], [-1e39, 0.5], [float("nan"), 1.0]):
            with pytest.raises(CatalogValueError, match="element 0 is not a finite float32"):
                check_vector("vector", bad)
        assert check_vector("vector", [3.4e38, -3.4e38]).tolist() == pytest.approx([3.4e38, -3.4e38], rel=1e-6)


LIMITS = CatalogLimits(max_value_bytes=100, max_attributes=4, max_item_bytes=400)


@pytest.mark.parametrize(("item", "message"), [
    ({"item_id": "a", "title": "x" * 101},
     "attribute 'title' is 101 bytes (UTF-8); at most 100 (api.catalog_max_value_bytes)"),
    ({"item_id": "a", "title": "é" * 51},  # 51 characters, 102 bytes
     "attribute 'title' is 102 bytes (UTF-8); at most 100 (api.catalog_max_value_bytes)"),
    ({"item_id": "a", "tags": ["s", "x" * 150]},
     "attribute 'tags' element 1 is 150 bytes (UTF-8); at most 100 (api.catalog_max_value_bytes)"),
    ({"item_id": "a", **{f"k{n}": n for n in range(5)}},
     "the item has 5 attributes besides item_id; at most 4 (api.catalog_max_attributes)"),
    ({"item_id": "a", "vector": [0.25] * 100},
     "the item is 526 bytes as JSON (its largest attribute, 'vector': 501 bytes); at most 400 (api.catalog_max_item_bytes)"),
])
def test_check_size_names_the_attribute_and_the_limit(item, message):
    """A new user's trial (F2): a 200,000-character title was published and served back; every size limit
    rejects the item with the attribute, both numbers and the setting to raise."""
    with pytest.raises(CatalogSizeError) as caught:
        check_size(item, LIMITS)
    assert str(caught.value) == message
    assert isinstance(caught.value, CatalogValueError)  # every path that rejects an item by the rule rejects it


def test_check_size_takes_items_within_the_limits():
    check_size({"item_id": "a", "title": "x" * 100, "tags": ["é" * 50], "k": 1}, LIMITS)
    check_size({"item_id": "a", "title": "x" * 100}, LIMITS, record_bytes=100)  # the record's size, when known


def test_the_default_limits_take_a_rich_item_and_refuse_a_200k_title():
    limits = CatalogLimits.from_settings(ApiSettings())
    rich = {"item_id": "sku-1", "title": "Red wool scarf " * 10, "description": "<p>Warm.</p>" * 400,
            "vector": [0.123456789] * 1024, **{f"attr_{n}": f"value {n}" for n in range(300)}}
    check_size(rich, limits)
    with pytest.raises(CatalogSizeError, match="attribute 'title' is 200,000 bytes"):
        check_size({"item_id": "sku-2", "title": "x" * 200_000}, limits)


def test_check_catalog_rejects_items_over_a_size_limit():
    items = [{"item_id": "a", "title": "ok"}, {"item_id": "b", "title": "x" * 200},
             {"item_id": "c", "price": "1" * 99}]  # coerced to a number: measured as published
    check = check_catalog(items, limits=LIMITS)
    assert [i["item_id"] for i in check.accepted] == ["a", "c"]
    assert check.rejected == [(1, "b", "attribute 'title' is 200 bytes (UTF-8); at most 100 "
                                       "(api.catalog_max_value_bytes)")]
    assert [i["item_id"] for i in check_catalog(items).accepted] == ["a", "b", "c"]  # no limits: none


def test_check_catalog_rejects_an_item_adding_names_beyond_the_catalog_limit():
    """A new user's trial (catalog defect 1): items within the per-item limits but each with its own names widened the
    index to 50,000 columns; ``api.catalog_max_attribute_names`` bounds the distinct names of the whole file."""
    limits = CatalogLimits(1000, 100, 10_000, max_attribute_names=4)
    items = [{"item_id": "a", "brand": "x", "price": 1, "vector": [1.0], "deleted": False},  # 2 names
             {"item_id": "b", "brand": "y", "color": "red", "size": None},  # 3 (a null adds no name)
             {"item_id": "c", "brand": "z", "w": 1, "h": 2},  # would make 5: rejected
             {"item_id": "d", "w": 1},  # 4
             {"item_id": "e", "price": 2, "color": "blue", "w": 3, "x": None}]  # known names only
    check = check_catalog(items, exclude={"vector"}, limits=limits)
    assert [i["item_id"] for i in check.accepted] == ["a", "b", "d", "e"]
    assert check.rejected == [(2, "c", "attribute 'h' (and 1 more new name) would make 5 distinct attribute names "
                                       "in the catalog; at most 4 (api.catalog_max_attribute_names)")]
    assert check.names == {"brand", "price", "color", "w"}
    assert ApiSettings().catalog_max_attribute_names == 1_024
    assert CatalogLimits.from_settings(ApiSettings()).max_attribute_names == 1_024


def test_a_rejected_line_fixes_no_type_for_later_lines():
    """A new user's trial (catalog defect 3): line 1, rejected for its size, made ``zcolor`` a number, and line 2's
    ``"red"`` was then rejected; a rejected line registers nothing (types, unindexed names, coercion counts)."""
    items = [{"item_id": "z1", "zcolor": 1, "n": "5", "title": "x" * 200},
             {"item_id": "z2", "zcolor": "red", "n": "six"}]
    check = check_catalog(items, limits=LIMITS)
    assert [i["item_id"] for i in check.accepted] == ["z2"] and [r[1] for r in check.rejected] == ["z1"]
    assert check.kinds == {"zcolor": "string", "n": "string"} and check.coerced == {}


def test_check_size_measures_compact_json_whatever_the_record():
    """A record written with indent is measured as compact JSON (catalog defect 2: a running API served it, a
    restarted one measured the raw record and rejected it); its raw length stands in only when it is small."""
    limits = CatalogLimits(100_000, 512, 50_000)
    item = {"item_id": "a", **{f"attr_{n}": "v" * 80 for n in range(400)}}  # ~37 KB compact
    raw = len(orjson.dumps(item, option=orjson.OPT_INDENT_2)) + 60_000  # as if indented by far more
    check_size(item, limits, raw)
    with pytest.raises(CatalogSizeError, match="api.catalog_max_item_bytes"):
        check_size({**item, "more": "m" * 20_000}, limits, raw)
    dense = {"item_id": "b", "vector": [1e15] * 3_000}  # written as 1e15, 5 bytes a number; compact: 19
    with pytest.raises(CatalogSizeError, match="api.catalog_max_item_bytes"):
        check_size(dense, limits, 15_000)
