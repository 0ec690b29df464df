"""Top-m selection inside each row of ragged (row, key) entry lists, without a Python loop over rows.

The neighbourhood models produce, per query, a variable number of candidate sessions or items.
Selecting the best ``m`` of each row goes through a dense ``(rows, longest row)`` buffer and
``np.partition`` along its rows, so only ties at each row's cut and the survivors get sorted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["select_per_row", "top_per_row"]

_DENSE_LIMIT = 8
"""Use the dense buffer while ``rows * longest_row <= _DENSE_LIMIT * nnz + 2**20``."""


def _lexsort_top(rows: NDArray[np.int64], keys: Sequence[NDArray], m: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    order = np.lexsort((*reversed(tuple(keys)), rows))
    r = rows[order]
    rank = np.arange(len(r), dtype=np.int64) - np.searchsorted(r, r, side="left")
    keep = rank < m
    return order[keep], rank[keep]


def select_per_row(rows: NDArray[np.int64], keys: Sequence[NDArray], m: int) -> NDArray[np.int64]:
    """Indices of the best ``m`` entries of each row, ascending (not in rank order).

    Parameters
    ----------
    rows : ndarray of shape (nnz,), int
        Row of each entry; entries of one row must be contiguous (as in CSR order).
    keys : sequence of ndarray of shape (nnz,)
        Sort keys, most significant first; smaller is better. Ties on ``keys[0]`` at a row's cut
        are settled by the following keys.
    m : int
        Entries kept per row (rows with fewer keep all).

    Returns
    -------
    ndarray of int64 indices into the entries, sorted ascending.
    """
    n = len(rows)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], rows[1:] != rows[:-1]]))
    lens = np.diff(np.concatenate([starts, [n]]))
    if lens.max() <= m:
        return np.arange(n, dtype=np.int64)
    if len(starts) * int(lens.max()) > _DENSE_LIMIT * n + 2**20:
        sel, _ = _lexsort_top(rows, keys, m)
        return np.sort(sel)
    seg = np.repeat(np.arange(len(starts)), lens)
    col = np.arange(n) - starts[seg]
    k0 = np.asarray(keys[0], dtype=np.float64)
    buf = np.full((len(starts), int(lens.max())), np.inf)
    buf[seg, col] = k0
    kth = np.partition(buf, m - 1, axis=1)[:, m - 1]
    long = lens[seg] > m
    better = k0 < kth[seg]
    tied = long & (k0 == kth[seg])
    keep = ~long | better
    if tied.any():
        idx = np.flatnonzero(tied)
        room = m - np.bincount(seg[better & long], minlength=len(starts))
        t_sel, t_rank = _lexsort_top(seg[idx], [np.asarray(k)[idx] for k in keys[1:]] or [idx], int(lens.max()))
        ok = t_rank < room[seg[idx][t_sel]]
        keep[idx[t_sel[ok]]] = True
    return np.flatnonzero(keep)


def top_per_row(rows: NDArray[np.int64], keys: Sequence[NDArray], m: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The best ``m`` entries of each row in rank order, and their 0-based ranks.

    Same arguments as :func:`select_per_row`.

    Returns
    -------
    (sel, rank) : indices of the kept entries sorted by (row, keys), and each one's rank in its row.
    """
    pre = select_per_row(rows, keys, m)
    sel, rank = _lexsort_top(rows[pre], [np.asarray(k)[pre] for k in keys], m)
    return pre[sel], rank
