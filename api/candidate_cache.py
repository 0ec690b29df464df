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

    Callers must not mutate what ``get`` returns (it is shared by every later hit).

    Parameters
    ----------
    max_entries : int
        Lists kept (least recently used dropped first).
    """

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
            return hit
        value = compute()
        self._entries[key] = value
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value
