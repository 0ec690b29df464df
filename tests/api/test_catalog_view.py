"""api/catalog.py: ``item_attributes`` (a request's ``context.item``) equals ``index.get`` before and after
catalog changes, and the filter bound to it selects the same items as one bound to a fresh lookup."""

from __future__ import annotations

import orjson
import pytest

from api.catalog import CatalogView
from api.iql import RequestContext
from operators.catalog_rule import CatalogLimits


def _view(cache_items: int = 20_000) -> CatalogView:
    view = CatalogView(attributes_cache_items=cache_items)
    for n in range(12):
        view.on_update(f"i{n}", {"item_id": f"i{n}", "category": "ab"[n % 2], "price": 10.0 + n, "tags": ["x", str(n)]})
    view.sync()
    return view


def _fed(records: dict[str, bytes], live: bool, limits: CatalogLimits | None = None) -> CatalogView:
    """A view fed ``records`` (item_id -> the catalog topic's value) live (``on_update``, one change at a time)
    or at the initial load (``load_initial``), then synced: the two ways an API reads the catalog."""
    view = CatalogView(limits=limits, initial_load=not live)
    if live:
        for key, value in records.items():
            view.on_update(key, orjson.loads(value))
    else:
        view.load_initial(records.items(), orjson.loads)
    view.sync()
    return view


def _selected(view: CatalogView, item: object) -> list[int]:
    ctx = RequestContext(item=item, params={"max_price": "19"})  # type: ignore[arg-type]
    return sorted(view.engine.filter("category == context.item.category AND price < $max_price", ctx))


def test_item_attributes_follow_every_catalog_change() -> None:
    view = _view()
    for n in range(12):
        assert view.item_attributes(f"i{n}") == view.index.get(f"i{n}")
    assert view.item_attributes("i3") is view.item_attributes("i3")  # kept between requests
    assert _selected(view, view.item_attributes("i3")) == _selected(view, view.index.get("i3"))
    before = _selected(view, view.item_attributes("i3"))

    view.on_update("i3", {"item_id": "i3", "category": "a", "price": 13.0})  # moves to the other category
    view.on_update("i5", None)  # deleted
    view.sync()
    assert view.item_attributes("i3") == view.index.get("i3") == {"item_id": "i3", "category": "a", "price": 13.0}
    assert view.item_attributes("i5") is None and view.index.get("i5") is None
    after = _selected(view, view.item_attributes("i3"))
    assert after == _selected(view, view.index.get("i3")) and after != before
    assert view.item_attributes("unknown") is None


def test_item_attributes_cache_is_bounded() -> None:
    view = _view(cache_items=3)
    for n in range(12):
        assert view.item_attributes(f"i{n}") == view.index.get(f"i{n}")
    assert len(view._attributes) == 3
    assert view.item_attributes("i0") == view.index.get("i0")  # dropped, looked up again


@pytest.mark.parametrize("record", ["indented", "deleted false"])
def test_the_size_rule_measures_a_record_alike_live_and_at_the_initial_load(record: str) -> None:
    """A new user's trial (catalog defect 2): a record written with indent (149 KB raw, 47 KB compact) was served by a
    running API and rejected by a restarted one (its raw bytes measured); and ``"deleted": false`` beside 512
    attributes was counted as a 513th live only. Both paths measure the item as check_item leaves it, compact."""
    limits = CatalogLimits(16 * 1024, 512, 64 * 1024)
    if record == "indented":
        item = {"item_id": "it", **{f"a{n}": "v" * 80 for n in range(500)}}  # ~47 KB compact
    else:
        item = {"item_id": "it", **{f"a{n}": n for n in range(512)}, "deleted": False}
    over = {"item_id": "over", **{f"a{n}": n for n in range(513)}}
    raw = {i["item_id"]: orjson.dumps(i, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n" + b" " * 100)
           for i in (item, over)}
    assert record != "indented" or len(raw["it"]) > 64 * 1024 > len(orjson.dumps(item))
    for live in (True, False):
        view = _fed(raw, live, limits)
        assert view.index.get("it") is not None, (live, view.rejected)
        assert list(view.rejected) == ["over"] and "513 attributes" in view.rejected["over"], live


def test_an_item_adding_names_beyond_the_catalog_limit_is_rejected_live_and_at_the_initial_load() -> None:
    """``api.catalog_max_attribute_names`` through the view: rejected and counted, the reason kept for GET /v1/items."""
    limits = CatalogLimits(16 * 1024, 512, 64 * 1024, max_attribute_names=150)
    items = {f"w{k}": {"item_id": f"w{k}", **{f"n{k}_{j}": j for j in range(100)}} for k in range(3)}
    for live in (True, False):
        view = _fed({k: orjson.dumps(v) for k, v in items.items()}, live, limits)
        assert view.index.get("w0") is not None and view.index.get("w1") is None and view.index.get("w2") is None
        assert view.n_rejected == 2 and "at most 150 (api.catalog_max_attribute_names)" in view.rejected["w1"], live


def test_objects_and_lists_of_numbers_are_kept_unindexed_not_a_reason_to_reject() -> None:
    """A new user's trial (defect 2): ``fusionrec catalog`` publishes an item whose first ``spec`` is an object or
    whose ``sizes`` is a list of numbers (its rule keeps such attributes unindexed), and the API's index rejected the
    whole item. Both are kept out of IQL, live and at the initial load; a later type conflict still rejects."""
    items = {"obj": {"item_id": "obj", "spec": {"color": "red"}, "price": 3.0},
             "nums": {"item_id": "nums", "sizes": [1, 2, 3], "price": 4.0},
             "nested": {"item_id": "nested", "grid": [[1, 2], [3, 4]], "price": 5.0},
             "clash": {"item_id": "clash", "price": "cheap"}}
    for live in (True, False):
        view = _fed({k: orjson.dumps(v) for k, v in items.items()}, live)
        assert list(view.rejected) == ["clash"], (live, view.rejected)
        for key in ("obj", "nums", "nested"):
            assert view.index.get(key) == {"item_id": key, "price": items[key]["price"]}, live
        assert sorted(view.engine.filter("price < 4.5", RequestContext())) == sorted(
            view.index.lookup(["obj", "nums"]).tolist())
