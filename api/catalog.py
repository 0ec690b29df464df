"""The catalog as the request path sees it: IQL index and vector index, fed by the catalog topic.

The ``catalog`` TopicTable's reader thread hands each change to ``CatalogView.on_update``, which
only queues it. ``sync()``, called at the start of a request on the event-loop thread, applies
the queue, so the indexes are changed and read by one thread and every change is visible on
the next request.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from api.filter_cache import BitmapCache, in_bitmap
from api.iql import CatalogIndex, CatalogSchemaError, IQLEngine
from api.vector_index import VectorIndex

__all__ = ["CatalogView"]

log = logging.getLogger(__name__)


class CatalogView:
    """CatalogIndex + IQLEngine (+ a cache of its results) + VectorIndex, updated from a queue of catalog changes.

    Parameters
    ----------
    vector_attribute : str
        Attribute holding an item's dense vector.
    exclude : iterable of str
        Attributes IQL does not index (modality payloads); the vector attribute is always excluded.
    hidden_attribute, in_stock_attribute, stock_attribute : str or None
        The availability rule: an item with ``hidden == true``, ``in_stock == false`` or
        ``stock <= 0`` is never served (None switches a rule off).
    attributes_cache_items : int
        Items whose attributes ``item_attributes`` keeps between catalog changes (LRU).
    """

    def __init__(self, vector_attribute: str = "vector", exclude: Iterable[str] = (), *,
                 hidden_attribute: str | None = "hidden", in_stock_attribute: str | None = "in_stock",
                 stock_attribute: str | None = "stock", attributes_cache_items: int = 20_000) -> None:
        self.vector_attribute = vector_attribute
        self.index = CatalogIndex(exclude=set(exclude) | {vector_attribute}, hidden_attribute=hidden_attribute,
                                  in_stock_attribute=in_stock_attribute, stock_attribute=stock_attribute)
        self.engine = IQLEngine(self.index)
        self.bitmaps = BitmapCache(self.index)
        self.vectors = VectorIndex()
        self._queue: deque[tuple[str, object | None]] = deque()
        self.n_rejected = 0  # catalog messages rejected by the schema rule so far
        self.rejected: dict[str, str] = {}  # item_id -> reason, for items whose latest version was rejected
        self.version = 0  # bumped by every sync that applied a change (caches key on it)
        self.attributes_cache_items = attributes_cache_items
        self._attributes: OrderedDict[str, Mapping[str, Any] | None] = OrderedDict()
        self._attributes_version = 0

    def on_update(self, item_id: str, item: object | None) -> None:
        """TopicTable callback (reader thread): queue the change."""
        self._queue.append((item_id, item))

    def sync(self) -> None:
        """Apply queued changes (call on the thread that serves requests)."""
        q = self._queue
        if q:
            self.version += 1
        while q:
            item_id, item = q.popleft()
            if item is None:
                self.index.delete(item_id)
                self.vectors.delete(item_id)
                self.rejected.pop(item_id, None)
                continue
            if not isinstance(item, dict):
                self.n_rejected += 1
                self.rejected[item_id] = "not a JSON object"
                self.index.withdraw(item_id)
                self.vectors.delete(item_id)
                log.warning("catalog item %r is not a JSON object; rejected", item_id)
                continue
            try:
                self.index.upsert({**item, "item_id": item.get("item_id", item_id)})
            except CatalogSchemaError as exc:
                # the catalog rule (operators/catalog_rule.py): a value that does not fit even after
                # coercion rejects the whole item, so nothing serves it with a value the filter cannot see
                self.n_rejected += 1
                self.rejected[item_id] = str(exc)
                self.index.withdraw(item_id)
                self.vectors.delete(item_id)
                log.warning("catalog item rejected: %s", exc)
                continue
            self.rejected.pop(item_id, None)
            vec = item.get(self.vector_attribute)
            if vec is not None:
                self.vectors.set(str(item.get("item_id", item_id)), vec)
            else:
                self.vectors.delete(item_id)

    def item_attributes(self, item_id: str) -> Mapping[str, Any] | None:
        """``index.get(item_id)`` (the item's indexed attributes, None if unknown or deleted), kept until the
        catalog changes: a request's ``context.item`` without rebuilding it from every column. The mapping
        is shared by later requests: read it, never change it. Call ``sync()`` first."""
        cache = self._attributes
        if self._attributes_version != self.version:
            cache.clear()
            self._attributes_version = self.version
        try:
            found = cache[item_id]
        except KeyError:
            found = cache[item_id] = self.index.get(item_id)
            if len(cache) > self.attributes_cache_items:
                cache.popitem(last=False)
            return found
        cache.move_to_end(item_id)
        return found

    def servable(self, item_ids: Sequence[str]) -> NDArray[np.bool_]:
        """Mask over ``item_ids``: False for items the catalog has deleted, hidden or marked out of stock.

        Ids the catalog never held are kept (a shop may serve without publishing a catalog). Cost
        O(len(item_ids)): one dict lookup and one bitmap probe per id. Call ``sync()`` first.
        """
        if self.index.capacity == 0:
            return np.ones(len(item_ids), dtype=bool)
        idx = self.index.lookup(item_ids)
        return (idx < 0) | in_bitmap(self.index.live, idx)
