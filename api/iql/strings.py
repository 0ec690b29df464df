"""Distinct strings <-> dense int codes in flat arrays (the vocabulary of string columns).

A dict and a list of ``str`` cost ~100 B per distinct string beyond its characters (the ``str``
object, the dict entry, the list slot): for a column with one value per item (a title) at 1M items
that is ~100 MB. Here a string costs its UTF-8 bytes plus 20 B: its end offset in one buffer (8 B) and
its row in a hash-sorted index (its hash, 8 B, and code, 4 B). Codes of strings added since the last
merge sit in a small dict (``_recent``), merged into the sorted index once it grows past a quarter of
it, so adding n strings costs O(n log n) in all; the merge hashes the dict's strings again (no hash
kept per code: 8 MB at 1M titles).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["StringVocabulary"]

_MIN_RECENT = 4_096


def _grown(array: NDArray[np.int64], size: int) -> NDArray[np.int64]:
    """``array`` with room for ``size`` entries (capacity doubles)."""
    if size <= len(array):
        return array
    bigger = np.zeros(max(size, 2 * len(array), 16), dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


class StringVocabulary:
    """Distinct strings and their dense codes (0, 1, 2, ... in order of first sight).

    ``get`` and ``code`` cost a dict probe plus, for strings added before the last merge, a binary
    search over the hashes and a decode of the candidates (~2 µs). Codes are never reused.

    Parameters
    ----------
    hash_fn : callable str -> int
        The hash the index sorts on (64-bit signed range); strings with equal hashes are told
        apart by their text. Default ``hash`` (this process's; the index is never stored).
    """

    def __init__(self, hash_fn: Callable[[str], int] = hash) -> None:
        self._hash_fn = hash_fn
        self._blob = bytearray()
        self._ends = np.zeros(0, dtype=np.int64)  # code -> end offset of its UTF-8 in _blob
        self._n = 0
        self._sorted_hashes = np.zeros(0, dtype=np.int64)  # hashes of codes < _n_sorted, ascending
        self._sorted_codes = np.zeros(0, dtype=np.int32)
        self._n_sorted = 0
        self._recent: dict[str, int] = {}  # codes _n_sorted.._n - 1, in code order (insertion order)

    def __len__(self) -> int:
        return self._n

    def value(self, code: int) -> str:
        """The string of ``code`` (a new ``str``; IndexError for an unknown code)."""
        if not 0 <= code < self._n:
            raise IndexError(f"code {code} not in 0..{self._n - 1}")
        start = int(self._ends[code - 1]) if code else 0
        return self._blob[start : int(self._ends[code])].decode("utf-8", "surrogatepass")

    def get(self, value: str) -> int | None:
        """The code of ``value``, or None if it was never added."""
        code = self._recent.get(value)
        if code is not None or not self._n_sorted:
            return code
        return self._find(value, self._hash_fn(value))

    def _find(self, value: str, h: int) -> int | None:
        """``value``'s code among the merged codes, by its hash ``h``."""
        hashes = self._sorted_hashes
        i = int(np.searchsorted(hashes, h))
        while i < self._n_sorted and hashes[i] == h:
            code = int(self._sorted_codes[i])
            if self.value(code) == value:
                return code
            i += 1
        return None

    def code(self, value: str) -> int:
        """The code of ``value``, adding it if new."""
        code = self.get(value)
        return self._add(value) if code is None else code

    def codes(self, values: Sequence[str]) -> NDArray[np.int64]:
        """Codes of ``values`` (adding new ones in order of first sight), shape (len(values),) int64.

        Vectorised for a bulk load: one binary search over all hashes, decodes only for hash hits."""
        n = len(values)
        out = np.full(n, -1, dtype=np.int64)
        if not n:
            return out
        if self._n_sorted:
            hashes = np.fromiter(map(self._hash_fn, values), dtype=np.int64, count=n)
            pos = np.minimum(np.searchsorted(self._sorted_hashes, hashes), self._n_sorted - 1)
            for i in np.flatnonzero(self._sorted_hashes[pos] == hashes).tolist():
                found = self._find(values[i], int(hashes[i]))
                if found is not None:
                    out[i] = found
        recent = self._recent  # no merge until the end: every new string of the call stays in it
        for i in np.flatnonzero(out < 0).tolist():
            value = values[i]
            code = recent.get(value)
            out[i] = self._add(value, merge=False) if code is None else code
        self._merge_if_due()
        return out

    def _add(self, value: str, merge: bool = True) -> int:
        code = self._n
        self._blob += value.encode("utf-8", "surrogatepass")
        self._ends = _grown(self._ends, code + 1)
        self._ends[code] = len(self._blob)
        self._n = code + 1
        self._recent[value] = code
        if merge:
            self._merge_if_due()
        return code

    def _merge_if_due(self) -> None:
        if len(self._recent) > max(_MIN_RECENT, self._n_sorted // 4):
            self.merge()

    def merge(self) -> None:
        """Move the recent codes into the hash-sorted index (O(n + k log k))."""
        if not self._recent:
            return
        new = np.arange(self._n_sorted, self._n, dtype=np.int32)
        # the recent strings in code order (a dict keeps insertion order; each string is added once)
        new_hashes = np.fromiter(map(self._hash_fn, self._recent), dtype=np.int64, count=len(self._recent))
        order = np.argsort(new_hashes, kind="stable")
        new, new_hashes = new[order], new_hashes[order]
        at = np.searchsorted(self._sorted_hashes, new_hashes)
        self._sorted_hashes = np.insert(self._sorted_hashes, at, new_hashes)
        self._sorted_codes = np.insert(self._sorted_codes, at, new)
        self._n_sorted = self._n
        self._recent = {}
