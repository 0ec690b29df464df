"""Categorical and list attribute columns: value -> pyroaring BitMap of item_idx, plus a forward map."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pyroaring import BitMap

from api.iql.bitmaps import bitmap_of

__all__ = ["CategoricalColumn", "ListColumn", "grow"]


def grow(array: NDArray[Any], size: int, fill: Any) -> NDArray[Any]:
    """Return ``array`` with room for ``size`` rows (capacity doubles; new rows = ``fill``)."""
    if size <= len(array):
        return array
    bigger = np.full(max(size, 2 * len(array), 16), fill, dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


def _grouped_bitmaps(codes: NDArray[np.int64], idx: NDArray[np.int64], n_codes: int) -> list[BitMap]:
    """One BitMap per code from parallel (code, item_idx) arrays; idx ascending within each code."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_codes + 1))
    rows = idx[order]
    return [bitmap_of(rows[bounds[c] : bounds[c + 1]]) for c in range(n_codes)]


class _Vocabulary:
    """Distinct values, their dense codes and one BitMap of item_idx per code."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.code_of: dict[Any, int] = {}
        self.bitmaps: list[BitMap] = []
        self.present = BitMap()

    def code(self, value: Any) -> int:
        code = self.code_of.get(value)
        if code is None:
            code = self.code_of[value] = len(self.values)
            self.values.append(value)
            self.bitmaps.append(BitMap())
        return code

    def _load_vocab(self, values: Sequence[Any]) -> NDArray[np.int64]:
        """Codes for ``values`` (adding new ones to the vocabulary)."""
        return np.fromiter((self.code(v) for v in values), dtype=np.int64, count=len(values))

    def eq(self, value: Any) -> BitMap:
        """Items whose value is (or, for lists, contains) ``value``. Read-only: do not mutate."""
        code = self.code_of.get(value)
        return BitMap() if code is None else self.bitmaps[code]

    def any_of(self, values: Iterable[Any]) -> BitMap:
        """Items matching at least one of ``values``."""
        maps = [self.bitmaps[c] for c in (self.code_of.get(v) for v in values) if c is not None]
        return BitMap.union(*maps) if maps else BitMap()


class CategoricalColumn(_Vocabulary):
    """A single-valued string or bool attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.codes = np.full(0, -1, dtype=np.int32)

    def bulk_load(self, idx: NDArray[np.int64], values: Sequence[Any]) -> None:
        """Load an empty column from ascending item_idx and their (non-null, normalised) values."""
        codes = self._load_vocab(values)
        self.codes = grow(self.codes, int(idx[-1]) + 1 if len(idx) else 0, -1)
        self.codes[idx] = codes
        self.bitmaps = _grouped_bitmaps(codes, idx, len(self.values))
        self.present = bitmap_of(idx)

    def set(self, idx: int, value: Any) -> None:
        """Give item ``idx`` the value ``value`` (``None`` = null)."""
        self.codes = grow(self.codes, idx + 1, -1)
        old = int(self.codes[idx])
        if old >= 0:
            self.bitmaps[old].discard(idx)
        if value is None:
            self.codes[idx] = -1
            self.present.discard(idx)
            return
        code = self.code(value)
        self.bitmaps[code].add(idx)
        self.codes[idx] = code
        self.present.add(idx)

    def value_at(self, idx: int) -> Any:
        """The value of item ``idx``, or None."""
        code = int(self.codes[idx]) if idx < len(self.codes) else -1
        return None if code < 0 else self.values[code]


class ListColumn(_Vocabulary):
    """A multi-valued attribute (list of strings): each element's BitMap holds the item."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, ...] | None] = []

    def bulk_load(self, idx: NDArray[np.int64], values: Sequence[tuple[str, ...]]) -> None:
        """Load an empty column from ascending item_idx and their tuples of strings."""
        lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
        flat = self._load_vocab([e for v in values for e in v])
        self.rows = [None] * (int(idx[-1]) + 1 if len(idx) else 0)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        for i, row in enumerate(idx.tolist()):
            self.rows[row] = tuple(flat[bounds[i] : bounds[i + 1]].tolist())
        self.bitmaps = _grouped_bitmaps(flat, np.repeat(idx, lengths), len(self.values))
        self.present = bitmap_of(idx)

    def set(self, idx: int, value: tuple[str, ...] | None) -> None:
        """Give item ``idx`` the list ``value`` (``None`` = null, ``()`` = present but empty)."""
        if idx >= len(self.rows):
            self.rows.extend([None] * (idx + 1 - len(self.rows)))
        for code in self.rows[idx] or ():
            self.bitmaps[code].discard(idx)
        if value is None:
            self.rows[idx] = None
            self.present.discard(idx)
            return
        codes = tuple(self.code(v) for v in value)
        for code in codes:
            self.bitmaps[code].add(idx)
        self.rows[idx] = codes
        self.present.add(idx)

    def all_of(self, values: Iterable[Any]) -> BitMap:
        """Items whose list holds every one of ``values`` (all present items when empty)."""
        codes = [self.code_of.get(v) for v in set(values)]
        if any(c is None for c in codes):
            return BitMap()
        if not codes:
            return self.present
        return BitMap.intersection(*[self.bitmaps[c] for c in codes])  # type: ignore[index]

    def value_at(self, idx: int) -> tuple[str, ...] | None:
        """The list of item ``idx`` as a tuple of strings, or None."""
        row = self.rows[idx] if idx < len(self.rows) else None
        return None if row is None else tuple(self.values[c] for c in row)
