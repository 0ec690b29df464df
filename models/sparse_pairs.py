"""Entries of a sparse item x item matrix at given (row, column) pairs, and their weighted sums over
each query's history: the ranker's item-pair features (transitions, sequential rules, co-occurrence)
as compiled kernels, one binary search per looked-up entry.

A sparse product ``(H @ M)[rows, cols]`` (``H`` the (queries, items) history weights) builds every
column any history item links to, then keeps a few; the kernels here compute only the pairs asked
for, with the same float32 products summed in the same order (the history's items by index), so the
values are those of the product.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.jit import PARALLEL_LAUNCH, njit_cached

__all__ = ["pair_values", "history_pair_sums"]


@njit_cached(inline="always")
def _lower_bound(indices: NDArray[np.int32], lo: int, hi: int, c: int) -> int:
    """The first position in ``[lo, hi)`` whose index is ``>= c`` (``hi`` if none)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < c:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit_cached(inline="always")
def _entry(indptr: NDArray[np.int64], indices: NDArray[np.int32], data: NDArray[np.float32], r: int, c: int
           ) -> np.float32:
    lo = _lower_bound(indices, indptr[r], indptr[r + 1], c)
    if lo < indptr[r + 1] and indices[lo] == c:
        return data[lo]
    return np.float32(0.0)


@njit_cached(parallel=True)
def _pair_values_kernel(indptr, indices, data, src, dst, out) -> None:  # noqa: ANN001
    for p in numba.prange(len(src)):
        out[p] = _entry(indptr, indices, data, src[p], dst[p])


@njit_cached(parallel=True)
def _history_sums_kernel(indptr, indices, data, h_ptr, h_items, h_w, rows, cols, out) -> None:  # noqa: ANN001
    for p in numba.prange(len(rows)):
        q, c = rows[p], cols[p]
        s = np.float32(0.0)
        for j in range(h_ptr[q], h_ptr[q + 1]):
            s += h_w[j] * _entry(indptr, indices, data, h_items[j], c)
        out[p] = s


@njit_cached(parallel=True)
def _history_sums_sorted_kernel(indptr, indices, data, h_ptr, h_items, h_w, starts, cols, out) -> None:  # noqa: ANN001
    """:func:`_history_sums_kernel` for pairs sorted by row, then column: each history item's matrix
    row is searched from where the previous (smaller) column was found, galloping forward."""
    for q in numba.prange(len(starts) - 1):
        p0, p1 = starts[q], starts[q + 1]
        if p0 == p1:
            continue
        for p in range(p0, p1):
            out[p] = np.float32(0.0)
        for j in range(h_ptr[q], h_ptr[q + 1]):
            r, w = h_items[j], h_w[j]
            lo, end = indptr[r], indptr[r + 1]
            for p in range(p0, p1):
                c = cols[p]
                step = 1  # gallop: find a bound hi with indices[hi] >= c, then bisect [lo, hi]
                hi = lo
                while hi < end and indices[hi] < c:
                    lo = hi + 1
                    hi = hi + step
                    step *= 2
                lo = _lower_bound(indices, lo, min(hi, end), c)
                v = np.float32(0.0)
                if lo < end and indices[lo] == c:
                    v = data[lo]
                out[p] += w * v
                if lo >= end:
                    break


def _canonical(m: sp.csr_array) -> tuple[NDArray[np.integer], NDArray[np.integer], NDArray[np.float32]]:
    """``(indptr, indices, data)`` with sorted, distinct indices per row; no copy when ``m`` has them."""
    if not m.has_canonical_format:
        m = sp.csr_array(m, copy=True)
        m.sum_duplicates()  # sorts each row's indices too
    return m.indptr, m.indices, np.asarray(m.data, dtype=np.float32)


def pair_values(m: sp.csr_array, src: NDArray[np.integer], dst: NDArray[np.integer]) -> NDArray[np.float32]:
    """``m[src[p], dst[p]]`` for every pair ``p`` (0 where absent), shape (len(src),), float32.

    Parameters
    ----------
    m : csr_array of shape (n, n)
    src, dst : integer arrays of one length, each in ``[0, n)``

    Raises
    ------
    ValueError
        If the lengths differ or an index lies outside ``m``.
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    _check(m, src, dst)
    out = np.zeros(len(src), np.float32)
    if len(src):
        with PARALLEL_LAUNCH:
            _pair_values_kernel(*_canonical(m), src, dst, out)
    return out


def history_pair_sums(m: sp.csr_array, weights: sp.csr_array, rows: NDArray[np.integer],
                      cols: NDArray[np.integer]) -> NDArray[np.float32]:
    """``(weights @ m)[rows[p], cols[p]]`` for every pair ``p``, shape (len(rows),), float32.

    Parameters
    ----------
    m : csr_array of shape (n, n), float32
    weights : csr_array of shape (n_queries, n), float32
        Each query's history items and their weights (duplicates are summed first).
    rows : integer array, each in ``[0, n_queries)``
    cols : integer array of the same length, each in ``[0, n)``

    Raises
    ------
    ValueError
        If the lengths differ or an index lies outside the matrices.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if len(rows) != len(cols):
        raise ValueError(f"rows and cols must have one length; got {len(rows)} and {len(cols)}")
    if len(rows) and (rows.min() < 0 or rows.max() >= weights.shape[0]):
        raise ValueError(f"rows must lie in [0, {weights.shape[0]})")
    _check(m, np.zeros(0, np.int64), cols)
    out = np.zeros(len(rows), np.float32)
    if not len(rows):
        return out
    d_rows, d_cols = np.diff(rows), np.diff(cols)
    if ((d_rows > 0) | ((d_rows == 0) & (d_cols >= 0))).all():  # sorted pairs (the fusion's pools)
        starts = np.searchsorted(rows, np.arange(weights.shape[0] + 1))
        with PARALLEL_LAUNCH:
            _history_sums_sorted_kernel(*_canonical(m), *_canonical(weights), starts, cols, out)
    else:
        with PARALLEL_LAUNCH:
            _history_sums_kernel(*_canonical(m), *_canonical(weights), rows, cols, out)
    return out


def _check(m: sp.csr_array, src: NDArray[np.int64], dst: NDArray[np.int64]) -> None:
    if len(src) and len(dst) and len(src) != len(dst):
        raise ValueError(f"src and dst must have one length; got {len(src)} and {len(dst)}")
    n_r, n_c = m.shape
    if len(src) and (src.min() < 0 or src.max() >= n_r):
        raise ValueError(f"row indices must lie in [0, {n_r})")
    if len(dst) and (dst.min() < 0 or dst.max() >= n_c):
        raise ValueError(f"column indices must lie in [0, {n_c})")
