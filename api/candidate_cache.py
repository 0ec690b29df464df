"""Item-to-item candidate lists reused across requests (bounded LRU).

``similar`` and ``visual`` answers depend only on the item and on the model version or the
catalog version; the key includes that version, so a new model or a catalog change is used by
the next request (stale entries age out of the LRU). The same LRU keeps the filtered lists a
campaign's arm draws from its whole model ranking (``api/serving.py``), keyed by everything
they depend on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["CandidateCache"]

Ranked = tuple[list[str], list[float]]
V = TypeVar("V")


class CandidateCache(Generic[V]):
    """``get(key, compute)``: the cached value (a ranked list) for ``key``, computed on a miss.

    Callers must not mutate what ``get`` returns (it is shared by every later hit). A value is a
    tuple whose first element holds its items (ids, or positions in a model's or the vector index's
    id list: ``similar`` and ``visual`` keep positions, so no entry pins an old version's list); its
    length is what the value costs.

    Parameters
    ----------
    max_entries : int
        Lists kept (least recently used dropped first).
    max_items : int
        Item ids kept over all lists (least recently used lists dropped first): a client asking
        for long lists (``n`` = 500) of ever new items must not grow a worker by ~190 KB per
        request up to ``max_entries`` lists (~4 GB); 1M ids are ~40-60 MB.
    """

    def __init__(self, max_entries: int = 20_000, max_items: int = 1_000_000) -> None:
        self.max_entries = max_entries
        self.max_items = max_items
        self.n_items = 0  # item ids held over all lists
        self._entries: OrderedDict[Hashable, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
            return hit
        value = compute()
        self._entries[key] = value
        self.n_items += _size(value)
        while len(self._entries) > 1 and (len(self._entries) > self.max_entries or self.n_items > self.max_items):
            _, old = self._entries.popitem(last=False)
            self.n_items -= _size(old)
        return value


def _size(value: object) -> int:
    """Item ids in a cached value: the length of its first element (1 if it has none)."""
    try:
        return len(value[0])  # type: ignore[index,arg-type]
    except (TypeError, IndexError, KeyError):
        return 1
