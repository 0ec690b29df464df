"""Numeric and timestamp columns: sorted values with prefix bitmaps for ranges, plus a small delta set.

Layout
------
``values[idx]`` always holds the current value (float64, NaN = null). Range queries run on a
*base* snapshot: the present items sorted by value (``sorted_values``, ``sorted_idx``), the items
of each ``bucket`` ranks as a BitMap (``fine[k]``: ranks [k * bucket, (k + 1) * bucket)), and every
``GROUP`` buckets a prefix BitMap (``coarse[j]``: ranks < j * GROUP * bucket). The items of rank
< k * bucket are the nearest coarse prefix plus or minus at most ``GROUP / 2`` fine buckets. A range
of ranks [a, b) is that prefix at the bucket bound nearest b minus the one nearest a (the fine
buckets between them when they are at most ``GROUP`` apart), corrected by at most two partial runs
of < bucket/2 items each, so cost does not grow with selectivity.

A prefix BitMap over most of 1M items is ~130 KB (bitset containers): a prefix per bucket (256 of
them) cost ~33 MB per column, ~34 B per item. The fine buckets are disjoint (~2 B per item, array
containers) and the coarse prefixes 4 times fewer: ~10 MB per column at 1M items, for the same
answers (``tests/api/iql/test_iql_numeric_prefix.py``) at the same cost (25-260 µs per range at 1M
items, as before; bench/RESULTS.md, "Memory per API worker at 1M items"). With 16 buckets per prefix it was ~4 MB,
but ranges took 2-4 times longer (pyroaring's unions of several small bitmaps are slow).

Updates (the delta choice): an upsert writes ``values[idx]`` and adds idx to ``dirty``. A query
removes dirty items from the base answer and re-tests them against their current values with
numpy. When ``dirty`` exceeds ``max_delta`` the base is rebuilt, inside the write that crossed
the limit, so readers never pay for a rebuild (about 0.15 s for 1 M items on this machine).

Concurrency: one writer. The base and its delta are one object replaced in a single assignment,
and a query reads it once, so a reader in another thread sees either the old base with its
delta or the new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray
from pyroaring import BitMap

from api.iql.bitmaps import bitmap_of, indices_of
from api.iql.columns import grow

__all__ = ["NumericColumn", "GROUP"]

GROUP = 4
"""Fine buckets per coarse prefix: a prefix is a coarse one and at most ``GROUP / 2`` fine buckets."""


class _Base:
    """A sorted snapshot of the column plus the items changed since (the delta)."""

    __slots__ = ("bucket", "coarse", "dirty", "dirty_idx", "fine", "sorted_idx", "sorted_values")

    def __init__(self, values: NDArray[np.float64], present: BitMap, bucket: int) -> None:
        idx = indices_of(present)
        order = np.argsort(values[idx])
        self.sorted_idx = idx[order].astype(np.uint32)
        self.sorted_values = values[self.sorted_idx]
        self.bucket = bucket
        self.fine = [bitmap_of(np.sort(self.sorted_idx[start : start + bucket])) for start in range(0, len(idx), bucket)]
        coarse, acc = [BitMap()], BitMap()
        for j in range(0, len(self.fine), GROUP):
            acc = acc | BitMap.union(*self.fine[j : j + GROUP])
            coarse.append(acc)
        self.coarse = coarse  # coarse[j]: the first min(j * GROUP, len(fine)) buckets
        self.dirty = BitMap()
        self.dirty_idx = np.zeros(0, dtype=np.int64)

    def delta(self) -> NDArray[np.int64]:
        """The dirty item_idx as an array (cached until the delta grows)."""
        cached = self.dirty_idx
        if len(cached) != len(self.dirty):
            cached = self.dirty_idx = indices_of(self.dirty)
        return cached

    def run(self, a: int, b: int) -> BitMap:
        """Items of rank in [a, b), built from the sorted arrays."""
        return bitmap_of(np.sort(self.sorted_idx[a:b])) if b > a else BitMap()

    def _coarse_end(self, j: int) -> int:
        """Fine buckets below ``coarse[j]``'s bound."""
        return min(j * GROUP, len(self.fine))

    def _nearest_coarse(self, k: int) -> int:
        """The coarse prefix whose bound is nearest the bound of ``k`` fine buckets."""
        return min(round(k / GROUP), len(self.coarse) - 1)

    def _shift(self, result: BitMap, at: int, k: int, *, add: bool) -> None:
        """Move a bound of ``result`` from ``at`` fine buckets to ``k`` (``add``: its upper bound, else its
        lower): the fine buckets between them are added to or removed from ``result``."""
        if k == at:
            return
        between = BitMap.union(*self.fine[min(at, k) : max(at, k)])
        if (k > at) == add:
            result |= between
        else:
            result -= between

    def ranks(self, a: int, b: int) -> BitMap:
        """Items of rank in [a, b) (a new BitMap): prefix difference plus two partial runs."""
        if b - a <= self.bucket:
            return self.run(a, b)
        ka = round(a / self.bucket)
        kb = min(round(b / self.bucket), len(self.fine))
        lo_rank, hi_rank = ka * self.bucket, min(kb * self.bucket, len(self.sorted_idx))
        if kb - ka <= GROUP:
            result = BitMap.union(*self.fine[ka:kb]) if kb > ka else BitMap()
        else:  # prefix(kb) - prefix(ka), each a coarse prefix corrected by fine buckets (small in-place changes)
            ja, jb = self._nearest_coarse(ka), self._nearest_coarse(kb)
            result = self.coarse[jb] - self.coarse[ja]
            self._shift(result, self._coarse_end(jb), kb, add=True)
            self._shift(result, self._coarse_end(ja), ka, add=False)
        if a < lo_rank:
            result |= self.run(a, lo_rank)
        elif a > lo_rank:
            result -= self.run(lo_rank, a)
        if b > hi_rank:
            result |= self.run(hi_rank, b)
        elif b < hi_rank:
            result -= self.run(b, hi_rank)
        return result


class NumericColumn:
    """A number or timestamp attribute (epoch seconds), indexed for range queries.

    Parameters
    ----------
    bucket : int, optional
        Ranks between prefix bitmaps; default ``max(1024, n // 256)`` at each rebuild.
    max_delta : int, optional
        Dirty items tolerated before a rebuild; default ``max(1024, n // 128)``.
    """

    def __init__(self, bucket: int | None = None, max_delta: int | None = None) -> None:
        self._bucket_opt, self._max_delta_opt = bucket, max_delta
        self.values = np.full(0, np.nan, dtype=np.float64)
        self.present = BitMap()
        self._pending: list[NDArray[np.int64]] = []  # (bulk loads) present item_idx per appended chunk
        self.rebuild()

    def append_bulk(self, idx: NDArray[np.int64], values: Iterable[float | None]) -> None:
        """Add new items (none set before) and their float values (None/NaN = null); queries see them
        after ``finish_bulk``."""
        vals = np.asarray(
            [np.nan if v is None else v for v in values] if not isinstance(values, np.ndarray) else values,
            dtype=np.float64,
        )
        self.values = grow(self.values, int(idx.max()) + 1 if len(idx) else 0, np.nan)
        self.values[idx] = vals
        self._pending.append(np.asarray(idx, dtype=np.int64)[~np.isnan(vals)])

    def finish_bulk(self) -> None:
        """Index the items ``append_bulk`` added: the present set and a rebuilt base (once, at the end)."""
        if self._pending:
            self.present |= bitmap_of(np.sort(np.concatenate(self._pending)))
        self._pending = []
        self.rebuild()

    def bulk_load(self, idx: NDArray[np.int64], values: Iterable[float | None]) -> None:
        """Load an empty column from item_idx and float values (None/NaN = null)."""
        self.append_bulk(idx, values)
        self.finish_bulk()

    def set(self, idx: int, value: float | None) -> None:
        """Give item ``idx`` the value ``value`` (None = null); rebuild when the delta is full."""
        self.values = grow(self.values, idx + 1, np.nan)
        self.values[idx] = np.nan if value is None else value
        if value is None:
            self.present.discard(idx)
        else:
            self.present.add(idx)
        self._base.dirty.add(idx)
        if len(self._base.dirty) > self._max_delta:
            self.rebuild()

    def value_at(self, idx: int) -> float | None:
        """The value of item ``idx``, or None."""
        v = float(self.values[idx]) if idx < len(self.values) else float("nan")
        return None if v != v else v

    def rebuild(self) -> None:
        """Re-sort the present items and rebuild the prefix bitmaps; empties the delta."""
        n = len(self.present)
        self._max_delta = self._max_delta_opt or max(1024, n // 128)
        self._base = _Base(self.values, self.present, self._bucket_opt or max(1024, n // 256))

    @property
    def dirty(self) -> BitMap:
        """Items changed since the last rebuild (read-only)."""
        return self._base.dirty

    def range(
        self, low: float | None, high: float | None, low_inclusive: bool = True, high_inclusive: bool = True
    ) -> BitMap:
        """Items with ``low <(=) value <(=) high``; None means unbounded on that side."""
        base = self._base
        sorted_values = base.sorted_values
        a = (
            0
            if low is None
            else int(np.searchsorted(sorted_values, low, "left" if low_inclusive else "right"))
        )
        b = (
            len(sorted_values)
            if high is None
            else int(np.searchsorted(sorted_values, high, "right" if high_inclusive else "left"))
        )
        result = base.ranks(a, b)
        delta = base.delta()
        if not len(delta):
            return result
        current = self.values[delta]  # read after the delta: set() grows values before marking dirty
        keep = ~np.isnan(current)
        if low is not None:
            keep &= current >= low if low_inclusive else current > low
        if high is not None:
            keep &= current <= high if high_inclusive else current < high
        return (result - bitmap_of(delta)) | bitmap_of(delta[keep])

    def eq(self, value: float) -> BitMap:
        """Items whose value equals ``value``."""
        return self.range(value, value)

    def any_of(self, values: Iterable[float]) -> BitMap:
        """Items whose value is one of ``values``."""
        maps = [self.eq(v) for v in set(values)]
        return BitMap.union(*maps) if maps else BitMap()
