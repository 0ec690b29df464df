"""Per-request IQL results reused across requests that bind the same values.

A compiled plan's answer depends only on the catalog and on the values it binds: request
parameters, ``context.item/user.*`` attributes, cart aggregates and ``now()``. ``BitmapCache``
keys each evaluated condition by its plan node and exactly those bound values (``now()`` at one
second resolution), so two requests for items of the same category share one evaluation. The
cache is cleared whenever the catalog changes (``CatalogView.version``), so upserts and deletes
are still seen by the next request.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np
from numpy.typing import NDArray
from pyroaring import BitMap

from api.iql import plan as p
from api.iql.context import RequestContext
from api.iql.evaluate import evaluate
from api.iql.index import CatalogIndex

__all__ = ["BitmapCache", "in_bitmap", "DENSE_FROM"]

DENSE_FROM = 128
"""Candidates from which ``BitmapCache.contains`` probes a cached bitmap through its packed bit array (a few numpy
operations over the whole array) instead of one ``in`` per candidate (~65 us per 1,000 candidates): the arm's
walk through its ranking and the fallback's pool of 2,000 ask about hundreds to thousands of items at once."""

_DENSE_MAX = 64
"""Packed bit arrays kept (each ``max item_idx / 8`` bytes: ~125 KB at 1M items, 8 MB for all of them)."""


def in_bitmap(selected: BitMap, idx: NDArray[np.integer]) -> NDArray[np.bool_]:
    """Mask over a short candidate array: True where the item_idx is in ``selected`` (-1 never is)."""
    return np.fromiter((i >= 0 and i in selected for i in idx.tolist()), dtype=bool, count=len(idx))


def _packed(selected: BitMap) -> NDArray[np.uint8]:
    """``selected`` as a packed bit array (bit ``i % 8`` of byte ``i // 8``: item_idx ``i``), as long as its largest
    member needs."""
    if not selected:
        return np.zeros(0, dtype=np.uint8)
    members = np.frombuffer(selected.to_array(), dtype=np.uint32)
    mask = np.zeros(int(members[-1]) + 1, dtype=bool)
    mask[members] = True
    return np.packbits(mask, bitorder="little")


def _in_packed(bits: NDArray[np.uint8], idx: NDArray[np.integer]) -> NDArray[np.bool_]:
    """``in_bitmap`` against ``_packed(selected)``: the same mask, vectorised."""
    idx = np.asarray(idx, dtype=np.int64)
    ok = (idx >= 0) & (idx < 8 * len(bits))
    at = np.where(ok, idx, 0)
    return ok & ((bits[at >> 3] >> (at & 7)) & 1).astype(bool) if len(bits) else ok


def _refs(node: object) -> tuple[tuple[str, ...], ...]:
    """The bound values a plan node reads: ``("param", name)``, ``("item"|"user", name)``, ``("cart", f, name)``, ``("now",)``."""
    if isinstance(node, p.ParamValue):
        return (("param", node.name),)
    if isinstance(node, p.ContextValue):
        return ((node.scope, node.name),)
    if isinstance(node, p.CartValue):
        return (("cart", node.func, node.name),)
    if isinstance(node, p.NowValue):
        return (("now",),)
    if not dataclasses.is_dataclass(node):
        return ()
    out: list[tuple[str, ...]] = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        for v in value if isinstance(value, tuple) else (value,):
            if dataclasses.is_dataclass(v):
                out.extend(r for r in _refs(v) if r not in out)
    return tuple(out)


def _freeze(value: object) -> Hashable:
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(sorted(map(repr, value)))
    return repr(value)


def _bound(ref: tuple[str, ...], ctx: RequestContext) -> Hashable:
    kind = ref[0]
    if kind == "param":
        return _freeze(ctx.params.get(ref[1], KeyError))
    if kind in ("item", "user"):
        scope = ctx.item if kind == "item" else ctx.user
        return _freeze(None if scope is None else scope.get(ref[1]))
    if kind == "cart":
        return tuple(_freeze(c.get(ref[2])) for c in ctx.cart)
    return int(ctx.now_s)


class BitmapCache:
    """Evaluated plan nodes by (node, bound values), bounded LRU, cleared on catalog change.

    Parameters
    ----------
    index : CatalogIndex
        The catalog the nodes run on.
    max_entries : int
        Bitmaps kept.
    """

    def __init__(self, index: CatalogIndex, max_entries: int = 4096) -> None:
        self.index = index
        self.max_entries = max_entries
        self._version = -1
        self._entries: OrderedDict[Hashable, BitMap] = OrderedDict()
        # id(plan node) -> (the node, its serial, the values it binds): a key names a node by its serial, so
        # looking a key up never hashes the plan's tree (~1.5 us per hash of a two-clause filter); the node is
        # held, so its id is not reused while the entry lives; serials are never reused
        self._nodes: dict[int, tuple[object, int, tuple[tuple[str, ...], ...]]] = {}
        self._serial = 0
        self._dense: OrderedDict[Hashable, NDArray[np.uint8]] = OrderedDict()  # key -> _packed(its bitmap)
        self.hits = self.misses = 0

    def key(self, node: p.FilterPlan | p.PlanNode, ctx: RequestContext) -> tuple[int, tuple[Hashable, ...]]:
        """``(the plan node's serial, the values it binds from ctx)``: equal keys give the same bitmap on one
        catalog version (a node compiled again, an equal object, gets a serial of its own: a key is never shared
        by two nodes)."""
        root = node.root if isinstance(node, p.FilterPlan) else node
        known = self._nodes.get(id(root))
        if known is None or known[0] is not root:
            if len(self._nodes) > self.max_entries:
                self._nodes.clear()
            self._serial += 1
            known = self._nodes[id(root)] = (root, self._serial, _refs(root))
        return known[1], tuple(_bound(r, ctx) for r in known[2])

    def bitmap(self, node: p.FilterPlan | p.PlanNode, ctx: RequestContext, catalog_version: int,
               key: tuple[int, tuple[Hashable, ...]] | None = None) -> BitMap:
        """``evaluate(node, index, ctx)``, reused when the catalog and the bound values are the same.

        ``key``: ``self.key(node, ctx)`` when the caller has it already (not computed twice).

        Raises
        ------
        IQLError
            As ``evaluate`` (a missing or mistyped request parameter); errors are not cached.
        """
        if catalog_version != self._version:
            self._entries.clear()
            self._dense.clear()
            self._version = catalog_version
        if key is None:
            key = self.key(node, ctx)
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return hit
        self.misses += 1
        result = evaluate(node.root if isinstance(node, p.FilterPlan) else node, self.index, ctx)
        self._entries[key] = result
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return result

    def contains(self, node: p.FilterPlan | p.PlanNode, ctx: RequestContext, catalog_version: int,
                 idx: NDArray[np.integer], key: tuple[int, tuple[Hashable, ...]] | None = None
                 ) -> NDArray[np.bool_]:
        """``in_bitmap(self.bitmap(node, ctx, catalog_version), idx)``: from ``DENSE_FROM`` candidates on, through
        the bitmap's packed bit array, made once per cached bitmap (up to ``_DENSE_MAX`` kept, cleared with the
        bitmaps when the catalog changes).

        ``key``: ``self.key(node, ctx)`` when the caller has it already (a request binds its filter and boosters
        once, ``api.serving._bind``, then filters several candidate lists: not computed again per list).

        Raises
        ------
        IQLError
            As ``bitmap``.
        """
        if key is None:
            key = self.key(node, ctx)
        selected = self.bitmap(node, ctx, catalog_version, key=key)
        if len(idx) < DENSE_FROM:
            return in_bitmap(selected, idx)
        bits = self._dense.get(key)
        if bits is None:
            bits = self._dense[key] = _packed(selected)
            if len(self._dense) > _DENSE_MAX:
                self._dense.popitem(last=False)
        else:
            self._dense.move_to_end(key)
        return _in_packed(bits, idx)
