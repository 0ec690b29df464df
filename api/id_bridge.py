"""Positions in an append-only id list -> the catalog's item_idx, without a string per candidate.

A model version names its items by a dense index (``ModelVersion.item_ids``), the vector index its
rows (``VectorIndex.ids``) and the catalog its items by ``item_idx`` (``CatalogIndex``). A campaign
list runs every candidate of its arm through the filter, a bitmap over ``item_idx``: the candidates
of a model ranking were made into item-id strings and looked up one by one in the catalog's dict,
up to thousands per request at 1M items (a filtered walk of the ranking, ``api/serving.py``).

``IdBridge`` keeps, per id list, an ``int32`` array from a position in the list to ``item_idx``:
a background thread looks every position up once when the list is first seen (~0.2 s at 1M ids,
off the event loop), and until it has, a position is looked up (one string, one dict probe) the
first time a request reads it; afterwards each is an array gather. Both sides only grow (a catalog
index never reassigns an ``item_idx``; a model version's list is fixed; the vector index's rows are
never reused), so an answer stays right except for positions that were unknown to the catalog,
which are asked again once the catalog has grown.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from api.iql.index import CatalogIndex

__all__ = ["IdBridge"]

log = logging.getLogger(__name__)

_UNSEEN = -2  # a position not looked up yet (-1: looked up, unknown to the catalog)


class _Table:
    __slots__ = ("names", "index", "capacity", "idx", "filled")

    def __init__(self, names: Sequence[str], index: CatalogIndex) -> None:
        self.names = names  # held, so the id() key stays this list's
        self.index = index
        self.capacity = index.capacity
        self.idx = np.full(len(names), _UNSEEN, dtype=np.int32)  # item_idx < 2**31: 4 MB at 1M ids, not 8
        self.filled: tuple[int, NDArray[np.int64]] | None = None  # (catalog capacity, item_idx) from _fill

    def fill(self, n: int, capacity: int) -> None:
        """Look up the first ``n`` positions at once (a background thread: reads only); installed by the loop."""
        try:
            self.filled = (capacity, self.index.lookup(self.names[:n]))
        except Exception:  # noqa: BLE001 - the list or the index changed under it: the lazy fill stays
            log.warning("id bridge: the background fill of %d positions failed", n, exc_info=True)

    def gather(self, positions: NDArray[np.int64]) -> NDArray[np.int64]:
        """item_idx of ``names[positions]``: positions not seen yet are looked up and kept."""
        out = self.idx[positions].astype(np.int64)
        unseen = np.flatnonzero(out == _UNSEEN)
        if len(unseen):
            at = positions[unseen]
            found = self.index.lookup([self.names[p] for p in at.tolist()])
            self.idx[at] = found
            out[unseen] = found
        return out

    def install_filled(self) -> None:
        """Take a finished background fill (on the loop): positions unknown at its capacity are asked again
        if the catalog has grown since; positions filled meanwhile hold the same item_idx."""
        capacity, found = self.filled  # type: ignore[misc]
        self.filled = None
        if capacity != self.index.capacity:
            found = found.copy()
            found[found == -1] = _UNSEEN
        self.idx[:len(found)] = found


class IdBridge:
    """``item_idx(index, names, positions)``: the catalog's item_idx of ``names[positions]`` (-1: unknown).

    Parameters
    ----------
    max_lists : int
        Id lists kept (least recently used dropped first): the current and previous model versions and
        the vector index. Each costs 4 bytes per id in the list (4 MB at 1M items).
    background_fill : bool
        Look every position of a new list up on a background thread (installed by a later call);
        False: only as requests read them (tests that pin the lazy path).

    Not thread-safe: the API calls it on its event loop only.
    """

    def __init__(self, max_lists: int = 4, background_fill: bool = True) -> None:
        self.max_lists = max_lists
        self.background_fill = background_fill
        self._tables: OrderedDict[int, _Table] = OrderedDict()

    def item_idx(self, index: CatalogIndex, names: Sequence[str], positions: NDArray[np.integer],
                 root: Sequence[str] | None = None) -> NDArray[np.int64]:
        """item_idx (int64, shape of ``positions``) of ``names[p]`` for each position ``p``; -1 where the catalog
        does not know the id. Equal to ``index.lookup([names[p] for p in positions])``, at the cost of an array
        gather once each position was read before.

        ``root``: a list whose ids are the first ``len(root)`` of ``names`` (a model version that the catalog
        overlay extended with new items keeps its base's list: ``ModelVersion.root_item_ids``). The table is kept
        for ``root``, so each extension (a new list object, up to once a second) reuses it, and the few positions
        past it are looked up per call.

        Raises
        ------
        IndexError
            If a position is outside ``names``.
        """
        positions = np.asarray(positions, dtype=np.int64)
        if index.capacity == 0 or len(positions) == 0:
            return np.full(len(positions), -1, dtype=np.int64)
        if root is None or root is names:
            return self._table(index, names).gather(positions)
        inside = positions < len(root)
        if inside.all():
            return self._table(index, root).gather(positions)
        out = np.empty(len(positions), dtype=np.int64)
        out[inside] = self._table(index, root).gather(positions[inside])
        out[~inside] = index.lookup([names[p] for p in positions[~inside].tolist()])
        return out

    def _table(self, index: CatalogIndex, names: Sequence[str]) -> _Table:
        key = id(names)
        t = self._tables.get(key)
        if t is None or t.names is not names or t.index is not index:
            t = self._tables[key] = _Table(names, index)
            while len(self._tables) > self.max_lists:
                self._tables.popitem(last=False)
            if self.background_fill:  # every position at once, off the loop: no per-request lookups once done
                threading.Thread(target=t.fill, args=(len(names), index.capacity), daemon=True,
                                 name="id-bridge-fill").start()
        self._tables.move_to_end(key)
        if t.filled is not None:
            t.install_filled()
        if len(names) > len(t.idx):  # the list grew (new vector rows): its new positions are unseen
            t.idx = np.concatenate([t.idx, np.full(len(names) - len(t.idx), _UNSEEN, dtype=np.int32)])
        if index.capacity != t.capacity:  # new catalog ids: what was unknown may be known now
            t.idx[t.idx == -1] = _UNSEEN
            t.capacity = index.capacity
        return t
