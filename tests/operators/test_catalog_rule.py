"""operators/catalog_rule.py: the catalog schema rule (coerce or reject whole items), and that the API's
index applies the same coercions (api/iql/schema.py)."""

from __future__ import annotations

import pytest

from api.iql import CatalogIndex, CatalogSchemaError
from operators.catalog_rule import CatalogValueError, check_catalog, check_item, coerce_value


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
