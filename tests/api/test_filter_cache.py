"""api/filter_cache.py: a cached bitmap equals a fresh evaluation, keys name a plan node by a serial (no
hashing of the plan's tree per request) and bind exactly the values the node reads."""

from __future__ import annotations

import numpy as np

from api.catalog import CatalogView
from api.filter_cache import DENSE_FROM, in_bitmap
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


def test_contains_equals_in_bitmap_below_and_from_the_dense_threshold() -> None:
    """``BitmapCache.contains`` answers as ``in_bitmap`` over the cached bitmap, whether it probes the bitmap per
    candidate (short arrays) or its packed bit array (from ``DENSE_FROM`` on): unknown (-1), out-of-range and
    member candidates alike, and after the catalog changes (the packed array is dropped with the bitmap)."""
    rng = np.random.default_rng(7)
    view = CatalogView()
    for n in range(300):
        view.on_update(f"i{n}", {"item_id": f"i{n}", "category": "abc"[n % 3], "price": float(n), "on_sale": n % 5 == 0})
    view.sync()
    plan = view.engine.compile_filter(FILTER)
    booster = view.engine.compile_boosters("BOOST 2 IF on_sale == true").clauses[0][1]
    for _ in range(2):
        for item, max_price in (("i1", "250"), ("i2", "40"), ("i1", "0"), ("i7", "250")):
            ctx = RequestContext(item=view.item_attributes(item), params={"max_price": max_price})
            for node in (plan, booster):
                selected = view.bitmaps.bitmap(node, ctx, view.version)
                for size in (0, 5, DENSE_FROM - 1, DENSE_FROM, 1000):
                    idx = rng.integers(-1, 400, size)
                    got = view.bitmaps.contains(node, ctx, view.version, idx)
                    assert got.dtype == np.bool_ and got.tolist() == in_bitmap(selected, idx).tolist()
        view.on_update("i4", {"item_id": "i4", "category": "a", "price": 1.0, "on_sale": True})  # i4 moves to "a"
        view.on_update("i299", None)  # deleted
        view.sync()
