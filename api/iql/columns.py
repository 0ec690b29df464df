"""Categorical and list attribute columns: value -> item_idx sets, plus a forward map.

A value held by one item (a title, a SKU: one distinct value per item) costs no BitMap: its item
is kept in an int32 array (``single``), and the BitMap is made only when a second item takes the
value (``shared``). String values are coded by ``api.iql.strings.StringVocabulary`` (one UTF-8
buffer, no ``str`` object per value). Together: a title column costs ~80 B per item at 100k
items, where a BitMap, a dict entry and a ``str`` per title cost ~370 B. Answers (``eq``,
``any_of``, ``all_of``) are the same sets either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pyroaring import BitMap

from api.iql.bitmaps import bitmap_of
from api.iql.strings import StringVocabulary

__all__ = ["CategoricalColumn", "ListColumn", "grow"]


def grow(array: NDArray[Any], size: int, fill: Any) -> NDArray[Any]:
    """Return ``array`` with room for ``size`` rows (capacity doubles; new rows = ``fill``)."""
    if size <= len(array):
        return array
    bigger = np.full(max(size, 2 * len(array), 16), fill, dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


class _DictVocabulary:
    """Distinct values of any hashable kind (bools) and their codes: a list and a dict."""

    def __init__(self) -> None:
        self._values: list[Any] = []
        self._code_of: dict[Any, int] = {}

    def __len__(self) -> int:
        return len(self._values)

    def value(self, code: int) -> Any:
        return self._values[code]

    def get(self, value: Any) -> int | None:
        return self._code_of.get(value)

    def code(self, value: Any) -> int:
        code = self._code_of.get(value)
        if code is None:
            code = self._code_of[value] = len(self._values)
            self._values.append(value)
        return code

    def codes(self, values: Sequence[Any]) -> NDArray[np.int64]:
        return np.fromiter((self.code(v) for v in values), dtype=np.int64, count=len(values))


class _Vocabulary:
    """Distinct values, their dense codes and the set of item_idx holding each code.

    Strings are coded by a ``StringVocabulary`` (flat arrays), other values (bools) by a dict; the
    kind is taken from the first value. A code's items are ``shared[code]`` (a BitMap) once two
    items have held it at the same time; before that, ``single[code]`` is its one item, or -1.
    """

    def __init__(self) -> None:
        self.vocab: StringVocabulary | _DictVocabulary | None = None
        self.single = np.full(0, -1, dtype=np.int32)
        self.shared: dict[int, BitMap] = {}
        self.present = BitMap()
        self._pending: list[NDArray[np.int64]] = []  # (bulk loads) item_idx per appended chunk

    def _vocabulary(self, value: Any) -> StringVocabulary | _DictVocabulary:
        if self.vocab is None:
            self.vocab = StringVocabulary() if isinstance(value, str) else _DictVocabulary()
        return self.vocab

    def code(self, value: Any) -> int:
        code = self._vocabulary(value).code(value)
        self.single = grow(self.single, code + 1, -1)
        return code

    def code_of(self, value: Any) -> int | None:
        """The code of ``value``, or None if no item ever held it."""
        return None if self.vocab is None else self.vocab.get(value)

    def _load_vocab(self, values: Sequence[Any]) -> NDArray[np.int64]:
        """Codes for ``values`` (adding new ones to the vocabulary)."""
        if not len(values):
            return np.zeros(0, dtype=np.int64)
        codes = self._vocabulary(values[0]).codes(values)
        self.single = grow(self.single, len(self.vocab or ()), -1)
        return codes

    def n_values(self) -> int:
        """Distinct values ever held."""
        return 0 if self.vocab is None else len(self.vocab)

    def _add(self, code: int, idx: int) -> None:
        bitmap = self.shared.get(code)
        if bitmap is not None:
            bitmap.add(idx)
            return
        first = int(self.single[code])
        if first < 0 or first == idx:
            self.single[code] = idx
        else:
            self.shared[code] = BitMap((first, idx))
            self.single[code] = -1

    def _discard(self, code: int, idx: int) -> None:
        bitmap = self.shared.get(code)
        if bitmap is not None:
            bitmap.discard(idx)
        elif self.single[code] == idx:
            self.single[code] = -1

    def _load_sets(self, codes: NDArray[np.int64], idx: NDArray[np.int64]) -> None:
        """Fill ``single``/``shared`` from parallel (code, item_idx) arrays of an empty column."""
        counts = np.bincount(codes, minlength=self.n_values())
        once = counts[codes] == 1
        self.single[codes[once]] = idx[once]
        many = ~once
        if many.any():
            codes, idx = codes[many], idx[many]
            order = np.argsort(codes, kind="stable")
            codes, rows = codes[order], idx[order]
            starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
            ends = np.r_[starts[1:], len(codes)]
            for c, a, b in zip(codes[starts].tolist(), starts.tolist(), ends.tolist(), strict=True):
                self.shared[c] = bitmap_of(np.sort(rows[a:b]))

    def _items(self, code: int) -> BitMap:
        """The items holding ``code`` (the shared BitMap itself, or a new one)."""
        bitmap = self.shared.get(code)
        if bitmap is not None:
            return bitmap
        first = int(self.single[code])
        return BitMap() if first < 0 else BitMap((first,))

    def eq(self, value: Any) -> BitMap:
        """Items whose value is (or, for lists, contains) ``value``. Read-only: do not mutate."""
        code = self.code_of(value)
        return BitMap() if code is None else self._items(code)

    def any_of(self, values: Iterable[Any]) -> BitMap:
        """Items matching at least one of ``values``."""
        maps = [self._items(c) for c in (self.code_of(v) for v in values) if c is not None]
        return BitMap.union(*maps) if maps else BitMap()


class CategoricalColumn(_Vocabulary):
    """A single-valued string or bool attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.codes = np.full(0, -1, dtype=np.int32)

    def append_bulk(self, idx: NDArray[np.int64], values: Sequence[Any]) -> None:
        """Add new items (ascending item_idx, none set before) and their non-null, normalised values;
        their sets are made by ``finish_bulk``, queries before it do not see them."""
        codes = self._load_vocab(values)
        self.codes = grow(self.codes, int(idx[-1]) + 1 if len(idx) else 0, -1)
        self.codes[idx] = codes
        self._pending.append(np.asarray(idx, dtype=np.int64))

    def finish_bulk(self) -> None:
        """Make the sets of the items ``append_bulk`` added (once, after the last append)."""
        idx = np.concatenate(self._pending) if self._pending else np.zeros(0, dtype=np.int64)
        self._pending = []
        self._load_sets(self.codes[idx].astype(np.int64), idx)
        self.present = bitmap_of(idx)

    def bulk_load(self, idx: NDArray[np.int64], values: Sequence[Any]) -> None:
        """Load an empty column from ascending item_idx and their (non-null, normalised) values."""
        self.append_bulk(idx, values)
        self.finish_bulk()

    def set(self, idx: int, value: Any) -> None:
        """Give item ``idx`` the value ``value`` (``None`` = null)."""
        self.codes = grow(self.codes, idx + 1, -1)
        old = int(self.codes[idx])
        if old >= 0:
            self._discard(old, idx)
        if value is None:
            self.codes[idx] = -1
            self.present.discard(idx)
            return
        code = self.code(value)
        self._add(code, idx)
        self.codes[idx] = code
        self.present.add(idx)

    def value_at(self, idx: int) -> Any:
        """The value of item ``idx``, or None."""
        code = int(self.codes[idx]) if idx < len(self.codes) else -1
        return None if code < 0 or self.vocab is None else self.vocab.value(code)


class ListColumn(_Vocabulary):
    """A multi-valued attribute (list of strings): each element's set holds the item.

    Rows are tuples of codes, interned: items with the same list share one tuple (8 B per item).
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, ...] | None] = []
        self._tuples: dict[tuple[int, ...], tuple[int, ...]] = {}
        self._pending_codes: list[NDArray[np.int64]] = []

    def _intern(self, row: tuple[int, ...]) -> tuple[int, ...]:
        return self._tuples.setdefault(row, row)

    def append_bulk(self, idx: NDArray[np.int64], values: Sequence[tuple[str, ...]]) -> None:
        """Add new items (ascending item_idx, none set before) and their tuples of strings; their
        sets are made by ``finish_bulk``."""
        lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
        flat = self._load_vocab([e for v in values for e in v])
        if len(idx) and int(idx[-1]) >= len(self.rows):
            self.rows.extend([None] * (int(idx[-1]) + 1 - len(self.rows)))
        bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        flat_list = flat.tolist()
        intern = self._intern
        for i, row in enumerate(idx.tolist()):
            self.rows[row] = intern(tuple(flat_list[bounds[i] : bounds[i + 1]]))
        self._pending.append(np.repeat(np.asarray(idx, dtype=np.int64), lengths))
        self._pending_codes.append(flat)
        self.present |= bitmap_of(idx)

    def finish_bulk(self) -> None:
        """Make the sets of the items ``append_bulk`` added (once, after the last append)."""
        if self._pending:
            self._load_sets(np.concatenate(self._pending_codes), np.concatenate(self._pending))
        self._pending, self._pending_codes = [], []

    def bulk_load(self, idx: NDArray[np.int64], values: Sequence[tuple[str, ...]]) -> None:
        """Load an empty column from ascending item_idx and their tuples of strings."""
        self.append_bulk(idx, values)
        self.finish_bulk()

    def set(self, idx: int, value: tuple[str, ...] | None) -> None:
        """Give item ``idx`` the list ``value`` (``None`` = null, ``()`` = present but empty)."""
        if idx >= len(self.rows):
            self.rows.extend([None] * (idx + 1 - len(self.rows)))
        for code in self.rows[idx] or ():
            self._discard(code, idx)
        if value is None:
            self.rows[idx] = None
            self.present.discard(idx)
            return
        codes = self._intern(tuple(self.code(v) for v in value))
        for code in codes:
            self._add(code, idx)
        self.rows[idx] = codes
        self.present.add(idx)

    def all_of(self, values: Iterable[Any]) -> BitMap:
        """Items whose list holds every one of ``values`` (all present items when empty)."""
        codes = [self.code_of(v) for v in set(values)]
        if any(c is None for c in codes):
            return BitMap()
        if not codes:
            return self.present
        return BitMap.intersection(*[self._items(c) for c in codes])  # type: ignore[arg-type]

    def value_at(self, idx: int) -> tuple[str, ...] | None:
        """The list of item ``idx`` as a tuple of strings, or None."""
        row = self.rows[idx] if idx < len(self.rows) else None
        if row is None:
            return None
        vocab = self.vocab
        return tuple(vocab.value(c) for c in row) if vocab is not None else ()
