"""Item-to-item candidate lists reused across requests (bounded LRU).

``similar`` and ``visual`` answers depend only on the item and on the model version or the
catalog version; the key includes that version, so a new model or a catalog change is used by
the next request (stale entries age out of the LRU).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["CandidateCache"]

Ranked = tuple[list[str], list[float]]


class CandidateCache:
    """``get(key, compute)``: the cached ranked list for ``key``, computed on a miss.

    Parameters
    ----------
    max_entries : int
        Lists kept (least recently used dropped first).
    """

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Ranked] = OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], Ranked]) -> Ranked:
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
            return hit
        value = compute()
        self._entries[key] = value
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value
