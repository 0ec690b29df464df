"""Id string -> its position in an append-only list of distinct ids: an open-addressing table in one array.

A ``dict[str, int]`` over 1M ids costs ~59 B per id beyond the strings: ~31 B of hash table and a
28 B ``int`` object per value (only -5..256 are shared). An API worker held three at 1M catalog
items (the catalog index's, the vector index's and the model version's; bench/RESULTS.md, issue 14).
``IdIndex`` keeps one ``int32`` array of slots, each the position of an id or -1;
an id's home slot is its ``hash`` modulo the size, and linear probing from there finds it (the
string in the list tells it apart from another id in the slot). The table is at most half full, so
few ids sit far past their home slot (1.5 slots read per id found on average at half full, 2.5 per id
never added): 8-16 B per id (8.4 MB at 1M ids, where the dict took 60; a quarter full took 16.8, four of
them in an API worker, bench/RESULTS.md issue 14 session 28).

Positions are never removed, so a probe never crosses a slot that was emptied. ``get`` costs a hash
(cached by ``str``), a slot read or two and a string comparison (~0.3 µs, a dict ~0.05 µs); ``lookup``
does a batch with array operations (~0.2 µs an id at 1M ids, a dict's ~0.15 µs).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["IdIndex"]

_MIN_SLOTS = 64
_SMALL_BATCH = 48
"""``lookup`` of at most this many ids goes id by id (the array rounds' fixed cost is ~15 µs)."""


class IdIndex(Mapping[str, int]):
    """``index[item_id] -> position`` for the distinct ids of ``ids`` (a list it extends with ``add``).

    Parameters
    ----------
    ids : list of str, optional
        Distinct ids, position = list index; kept (not copied) and extended by ``add``: the caller may
        read it, and must not change it otherwise. Default: a new empty list.

    Raises
    ------
    ValueError
        If ``ids`` holds an id twice (the message names it and both positions).

    Notes
    -----
    One writer; ``get`` and ``lookup`` may run on other threads meanwhile (the API's id bridge looks a
    model's ids up in the background): an id ``add`` has returned is found.

    Examples
    --------
    >>> index = IdIndex(["a", "b"])
    >>> index.add("c"), index.get("b"), index.get("z"), "c" in index
    (2, 1, None, True)
    >>> index.lookup(["c", "z", "a"]).tolist()
    [2, -1, 0]
    """

    def __init__(self, ids: list[str] | None = None) -> None:
        self.ids: list[str] = [] if ids is None else ids
        self._slots = np.full(_MIN_SLOTS, -1, dtype=np.int32)  # replaced whole when it grows (one assignment)
        if self.ids:
            self._slots = self._placed(self.ids, _size_for(len(self.ids)))

    # ---- Mapping ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __getitem__(self, key: str) -> int:
        pos = self.get(key)
        if pos is None:
            raise KeyError(key)
        return pos

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def get(self, key: str, default: int | None = None) -> int | None:  # type: ignore[override]
        """The position of ``key``, or ``default`` if it was never added."""
        if not isinstance(key, str):
            return default
        slots, ids = self._slots, self.ids
        mask = len(slots) - 1
        i = hash(key) & mask
        while True:
            pos = int(slots[i])
            if pos < 0:
                return default
            if ids[pos] == key:
                return pos
            i = (i + 1) & mask

    # ---- writes ----------------------------------------------------------------------------------

    def add(self, key: str) -> int:
        """The position of ``key``, appended to ``ids`` first if it is new."""
        pos = self.get(key)
        if pos is not None:
            return pos
        pos = len(self.ids)
        self.ids.append(key)  # before the slot names it: a reader that finds the position can read the id
        if 2 * (pos + 1) > len(self._slots):
            self._slots = self._placed(self.ids, 2 * len(self._slots))
            return pos
        slots = self._slots
        mask = len(slots) - 1
        i = hash(key) & mask
        while slots[i] >= 0:
            i = (i + 1) & mask
        slots[i] = pos
        return pos

    def extend(self, keys: Sequence[str]) -> None:
        """Append ``keys``, each new and not repeated (a bulk load: check with ``lookup`` first), with array
        operations.

        Raises
        ------
        ValueError
            If a key is already held or repeated (the message names it and both positions); the index is
            then unusable.
        """
        first = len(self.ids)
        self.ids.extend(keys)  # before the slots name them: a reader that finds a position can read the id
        if 2 * len(self.ids) > len(self._slots):
            self._slots = self._placed(self.ids, _size_for(len(self.ids)))
        else:
            _place(self._slots, self.ids, first)

    # ---- batch look-up ---------------------------------------------------------------------------

    def lookup(self, keys: Sequence[str] | Iterable[str]) -> NDArray[np.int64]:
        """Positions (int64) of ``keys``; -1 for ids never added. Equal to ``[get(k, -1) for k in keys]``."""
        keys = keys if isinstance(keys, Sequence) else list(keys)
        n = len(keys)
        if not n or not self.ids:
            return np.full(n, -1, dtype=np.int64)
        if n <= _SMALL_BATCH:
            get = self.get
            return np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=n)
        if n > _LOOKUP_CHUNK:  # ~85 B of temporaries per key: 1M keys at once held ~85 MB (the id bridge's fill)
            out = np.empty(n, dtype=np.int64)
            for lo in range(0, n, _LOOKUP_CHUNK):
                out[lo:lo + _LOOKUP_CHUNK] = self.lookup(keys[lo:lo + _LOOKUP_CHUNK])
            return out
        slots, ids = self._slots, self.ids
        mask = len(slots) - 1
        at = np.fromiter(map(hash, keys), dtype=np.int64, count=n) & mask
        out = np.full(n, -1, dtype=np.int64)
        pending: NDArray[np.intp] | None = None  # None: every key (the first round, most ids sit in their home slot)
        while True:
            pos = slots[at] if pending is None else slots[at[pending]]
            filled = pos >= 0  # an empty slot ends the probe: the id was never added
            probed = keys if pending is None else map(keys.__getitem__, pending.tolist())
            # one string comparison per probed slot, iterated in C (an empty slot compares with ids[0], masked)
            same = np.fromiter(map(operator.eq, map(ids.__getitem__, np.where(filled, pos, 0).tolist()), probed),
                               dtype=bool, count=len(pos)) & filled
            where = np.arange(n) if pending is None else pending
            out[where[same]] = pos[same]
            pending = where[filled & ~same]  # another id in the slot: the next one
            if len(pending) <= _SMALL_BATCH:  # the long probes' tail id by id: no array round per slot of the longest
                get = self.get
                for i in pending.tolist():
                    out[i] = get(keys[i], -1)
                return out
            at[pending] = (at[pending] + 1) & mask

    # ---- internals -------------------------------------------------------------------------------

    @staticmethod
    def _placed(ids: list[str], size: int) -> NDArray[np.int32]:
        """A new slot array of ``size`` (a power of two) holding every position of ``ids``; ValueError if an id
        is there twice."""
        slots = np.full(size, -1, dtype=np.int32)
        _place(slots, ids, 0)
        return slots


_LOOKUP_CHUNK = 1 << 16
"""Keys ``lookup`` looks up together: its arrays and the list of positions it compares (~85 B per key) stay ~5 MB,
where a model version's or the vector index's 1M ids at once held ~85 MB (the id bridge's fill and the version's
``intern_ids``: +50-80 MB peaks in an API worker's first requests, bench/RESULTS.md issue 14 session 28)."""
_PLACE_CHUNK = 1 << 16
"""Positions ``_place`` places together: its arrays (~70 B per position) stay ~5 MB, where placing 1M ids in one
go held ~70 MB of temporaries at once (the peak of a model version's load, bench/RESULTS.md issue 14)."""


def _place(slots: NDArray[np.int32], ids: list[str], first: int) -> None:
    """Put the positions ``first..len(ids)`` into ``slots``, ``_PLACE_CHUNK`` at a time (``_place_chunk``)."""
    for lo in range(first, len(ids), _PLACE_CHUNK):
        _place_chunk(slots, ids, lo, min(lo + _PLACE_CHUNK, len(ids)))


def _place_chunk(slots: NDArray[np.int32], ids: list[str], first: int, end: int) -> None:
    """Put the positions ``first..end`` into ``slots`` with array operations: each round places, per free
    slot, the lowest position probing it, and moves the others one slot on. Raises ValueError if an id equals
    the one in a slot it probes (held twice)."""
    mask = len(slots) - 1
    hashes = np.fromiter(map(hash, map(ids.__getitem__, range(first, end))), dtype=np.int64, count=end - first)
    at = hashes & mask
    pending = np.arange(len(hashes), dtype=np.int64)  # offsets from first
    while len(pending):
        free = np.flatnonzero(slots[at[pending]] < 0)
        home, lowest = np.unique(at[pending[free]], return_index=True)  # the lowest position wins a contested slot
        slots[home] = pending[free[lowest]] + first
        placed = np.zeros(len(pending), dtype=bool)
        placed[free[lowest]] = True
        pending = pending[~placed]
        if not len(pending):
            break
        # the others probe a taken slot: an id equal to the one there is held twice (equal hashes, then the text)
        held = slots[at[pending]]
        held_hash = np.fromiter(map(hash, map(ids.__getitem__, held.tolist())), dtype=np.int64, count=len(held))
        same = hashes[pending] == held_hash
        for p, q in zip(pending[same].tolist(), held[same].tolist(), strict=True):
            if ids[first + p] == ids[q]:
                raise ValueError(f"id {ids[q]!r} at positions {q} and {first + p}")
        at[pending] = (at[pending] + 1) & mask


def _size_for(n: int) -> int:
    """Slots for ``n`` ids: the power of two at least 2n (at most half full: few probes go far past the home slot)."""
    return max(_MIN_SLOTS, 1 << (2 * n - 1).bit_length())
