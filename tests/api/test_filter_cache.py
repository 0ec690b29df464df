"""api/filter_cache.py: a cached bitmap equals a fresh evaluation, keys name a plan node by a serial (no
hashing of the plan's tree per request) and bind exactly the values the node reads."""

from __future__ import annotations

from api.catalog import CatalogView
from api.iql import RequestContext
from api.iql.evaluate import evaluate

FILTER = "category == context.item.category AND price < $max_price"


def test_cached_bitmaps_equal_fresh_evaluations_and_keys_follow_bound_values() -> None:
    view = CatalogView()
    for n in range(40):
        view.on_update(f"i{n}", {"item_id": f"i{n}", "category": "abc"[n % 3], "price": float(n), "on_sale": n % 2 == 0})
    view.sync()
    plan = view.engine.compile_filter(FILTER)
    cache = view.bitmaps
    for item in ("i1", "i2", "i4", "i1"):
        for max_price in ("10", "30", "10"):
            ctx = RequestContext(item=view.item_attributes(item), params={"max_price": max_price})
            key = cache.key(plan, ctx)
            assert cache.bitmap(plan, ctx, view.version, key=key) == evaluate(plan, view.index, ctx)
            assert cache.bitmap(plan, ctx, view.version) == evaluate(plan, view.index, ctx)
            assert key == cache.key(plan, RequestContext(item=view.index.get(item), params={"max_price": max_price}))
    assert cache.misses == 4 and cache.hits == 20  # 2 categories (i1 and i4 share one) x 2 prices, once each
    a = cache.key(plan, RequestContext(item=view.item_attributes("i1"), params={"max_price": "10"}))
    b = cache.key(plan, RequestContext(item=view.item_attributes("i4"), params={"max_price": "10"}))
    assert a == b  # i1 and i4 share a category: one bitmap
    other = view.engine.compile_boosters("BOOST 2 IF on_sale == true").clauses[0][1]
    assert cache.key(other, RequestContext())[0] != a[0]  # another node, another serial
