"""The serving attributes (``hidden``, ``in_stock``, ``stock``) have fixed types whatever value comes first.

New-user trial: ``"hidden": "true"`` as the catalog's first value made ``hidden`` a string attribute; the
item was served though the shop meant it hidden, and a later ``"hidden": true`` was rejected. The same for
``"in_stock": "false"`` and ``"stock": "0"``. The rule's coercions now apply to them from the first value
on (``operators.catalog_rule.serving_kinds``), on the bulk path (``load_initial``) and the live path
(``on_update`` + ``sync``) alike, with the configured names.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from api.catalog import CatalogView
from api.iql import CatalogIndex, CatalogSchemaError, RequestContext
from api.iql.schema import AttrType, Schema
from operators.catalog_rule import check_catalog, serving_kinds
from operators.settings import ApiSettings

TRIAL = [("s20hid1", {"item_id": "s20hid1", "hidden": "true"}),
         ("s20stk1", {"item_id": "s20stk1", "in_stock": "false"}),
         ("s20stk2", {"item_id": "s20stk2", "stock": "0"}),
         ("s20ok", {"item_id": "s20ok", "hidden": "false", "in_stock": "1", "stock": "3"})]


def _view(records: list[tuple[str, object]], bulk: bool, chunk_items: int = 20_000, **options: Any) -> CatalogView:
    """A view fed ``records`` by ``load_initial`` (bulk) or by ``on_update`` + ``sync`` (live)."""
    if bulk:
        view = CatalogView(initial_load=True, **options)
        view.build_chunk_items = chunk_items
        view.load_initial([(k, orjson.dumps(v)) for k, v in records], orjson.loads)
    else:
        view = CatalogView(**options)
        for key, item in records:
            view.on_update(key, item)
    view.sync()
    return view


@pytest.mark.parametrize(("bulk", "chunk_items"), [(False, 0), (True, 20_000), (True, 1)])
def test_first_value_strings_hide_and_sell_out_the_item(bulk: bool, chunk_items: int) -> None:
    view = _view(TRIAL, bulk, chunk_items)
    assert view.rejected == {}
    assert view.servable(["s20hid1", "s20stk1", "s20stk2", "s20ok"]).tolist() == [False, False, False, True]
    assert {k: view.index.schema[k] for k in ("hidden", "in_stock", "stock")} == {
        "hidden": AttrType.BOOL, "in_stock": AttrType.BOOL, "stock": AttrType.NUMBER}
    assert view.index.get("s20hid1") == {"item_id": "s20hid1", "hidden": True}
    assert view.index.get("s20stk1") == {"item_id": "s20stk1", "in_stock": False}
    assert view.index.get("s20stk2") == {"item_id": "s20stk2", "stock": 0.0}
    view.engine.validate_filter("NOT hidden AND in_stock AND stock > 1")  # bools and a number to IQL too
    live = view.engine.filter("NOT hidden AND in_stock AND stock > 1", RequestContext())
    assert view.index.item_ids(live) == ["s20ok"]


@pytest.mark.parametrize("bulk", [False, True])
def test_a_later_json_value_is_accepted(bulk: bool) -> None:
    view = _view(TRIAL, bulk)
    view.on_update("s20new", {"item_id": "s20new", "hidden": True})
    view.on_update("s20hid1", {"item_id": "s20hid1", "hidden": False})
    view.on_update("s20stk1", {"item_id": "s20stk1", "in_stock": True})
    view.on_update("s20stk2", {"item_id": "s20stk2", "stock": 5})
    view.sync()
    assert view.rejected == {}
    assert view.servable(["s20new", "s20hid1", "s20stk1", "s20stk2"]).tolist() == [False, True, True, True]


@pytest.mark.parametrize("bulk", [False, True])
def test_a_value_no_coercion_fits_rejects_the_item_naming_the_attribute(bulk: bool) -> None:
    records: list[tuple[str, object]] = [
        ("maybe", {"item_id": "maybe", "hidden": "maybe"}),  # first: does not fix a string type
        ("one", {"item_id": "one", "in_stock": 1}),
        ("lots", {"item_id": "lots", "stock": "lots"}),
        ("h", {"item_id": "h", "hidden": True}),
        ("s", {"item_id": "s", "stock": 0})]
    view = _view(records, bulk)
    assert sorted(view.rejected) == ["lots", "maybe", "one"]
    assert view.rejected["maybe"] == ("item 'maybe': attribute 'hidden' must be a bool (the fixed type of this "
                                      "serving attribute); got 'maybe' (str)")
    assert "attribute 'in_stock' must be a bool" in view.rejected["one"]
    assert "attribute 'stock' must be a number" in view.rejected["lots"]
    assert view.servable(["maybe", "one", "lots", "h", "s"]).tolist() == [False] * 5
    view.on_update("maybe", {"item_id": "maybe", "hidden": "TRUE"})  # a later valid version is accepted
    view.sync()
    assert "maybe" not in view.rejected and view.index.get("maybe") == {"item_id": "maybe", "hidden": True}


@pytest.mark.parametrize("bulk", [False, True])
def test_the_configured_names_are_the_fixed_ones(bulk: bool) -> None:
    a = ApiSettings(hidden_attribute="concealed", in_stock_attribute="available", stock_attribute="qty")
    records: list[tuple[str, object]] = [
        ("a", {"item_id": "a", "concealed": "true", "hidden": "true"}),
        ("b", {"item_id": "b", "available": "0", "in_stock": "false"}),
        ("c", {"item_id": "c", "qty": "0", "stock": "0"})]
    if bulk:
        view = CatalogView.from_settings(a, initial_load=True)
        view.load_initial([(k, orjson.dumps(v)) for k, v in records], orjson.loads)
    else:
        view = CatalogView.from_settings(a)
        for key, item in records:
            view.on_update(key, item)
    view.sync()
    assert view.servable(["a", "b", "c"]).tolist() == [False, False, False]
    # the default names are free attributes here: typed by their first value
    assert {k: view.index.schema[k] for k in ("hidden", "in_stock", "stock")} == {
        "hidden": AttrType.STRING, "in_stock": AttrType.STRING, "stock": AttrType.STRING}


def test_switched_off_rules_leave_the_attribute_free() -> None:
    index = CatalogIndex.build([{"item_id": "a", "hidden": "yes", "stock": "none"}], hidden_attribute=None)
    assert dict(index.schema) == {"hidden": AttrType.STRING, "stock": AttrType.STRING}
    assert list(index.live) == [0]


def test_a_fixed_type_is_listed_once_seen_and_never_skipped() -> None:
    schema = Schema(skip_unsupported=True, fixed={"hidden": "bool"})
    assert dict(schema) == {}
    with pytest.raises(CatalogSchemaError, match="attribute 'hidden' must be a bool"):
        schema.normalize("a", "hidden", {"x": 1})
    assert schema.skipped == set() and dict(schema) == {}
    assert schema.normalize("b", "hidden", "0") is False and dict(schema) == {"hidden": AttrType.BOOL}
    with pytest.raises(ValueError, match="declared a string"):
        Schema({"hidden": "string"}, fixed={"hidden": "bool"})


def test_serving_kinds() -> None:
    assert serving_kinds() == {"hidden": "bool", "in_stock": "bool", "stock": "number"}
    assert serving_kinds("h", None, None) == {"h": "bool"}
    with pytest.raises(ValueError, match="cannot be both"):
        serving_kinds("x", None, "x")


def test_check_catalog_with_the_serving_kinds_coerces_and_rejects_as_the_index() -> None:
    items = [item for _, item in TRIAL] + [{"item_id": "bad", "hidden": "maybe"}, {"item_id": "late", "hidden": True}]
    check = check_catalog(items, serving_kinds())
    assert [i["item_id"] for i in check.accepted] == ["s20hid1", "s20stk1", "s20stk2", "s20ok", "late"]
    assert check.accepted[:3] == [{"item_id": "s20hid1", "hidden": True}, {"item_id": "s20stk1", "in_stock": False},
                                  {"item_id": "s20stk2", "stock": 0}]
    assert check.rejected == [(4, "bad", "attribute 'hidden' must be a bool; got 'maybe' (str)")]
    assert check.coerced == {"hidden": 2, "in_stock": 2, "stock": 2}
