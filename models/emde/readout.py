"""EMDE's readout as compiled kernels: every item's mean bucket log-probability, and each row's top k.

An item's score for a query is the mean, over the output sketch's depth rows, of the
log-probability of the bucket the item falls in (Dąbrowski et al. 2021, "An efficient manifold
density estimator for all recommendation systems", §3: the item's density under the predicted
sketch, in log space). With ``R`` rows per item this is a gather-sum of ``R`` cells per (query,
item) pair: a sparse-dense product whose output is written query-major, so that the per-query
top-k and maxima that follow read contiguous rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray

from models.heap import heap_offer, heap_order
from models.jit import PARALLEL_LAUNCH, njit_cached

__all__ = ["BucketReadout", "bucket_mean_scores", "bucket_mean_top", "bucket_mean_pairs", "row_top"]

TOP_QUERY_BLOCK = 128
"""Queries :func:`bucket_mean_top` scores together per thread: the fewer, the more items beat none of the block's
worst kept scores and skip the heap loop; the more, the fewer passes over the item codes. 128 was the fastest of
64-512 on retailrocket's 37k items (bench/RESULTS.md, issue 11 session 28)."""


@njit_cached(parallel=True)
def _bucket_mean_kernel(logp_t: NDArray[np.float32], cols: NDArray[np.int32], bias: NDArray[np.float32],
                        out: NDArray[np.float32]) -> None:
    n, r = cols.shape
    q = logp_t.shape[1]
    inv_r = np.float32(1.0 / r)
    for i in numba.prange(n):
        acc = np.zeros(q, np.float32)
        for j in range(r):  # rows in order: the same float32 sum for every batch size
            src = logp_t[cols[i, j]]
            for a in range(q):
                acc[a] += src[a]
        b = bias[i]
        for a in range(q):
            out[a, i] = acc[a] * inv_r + b


def bucket_mean_scores(logp: NDArray[np.float32], cols: NDArray[np.int32],
                       bias: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
    """``out[q, i] = mean_r logp[q, cols[i, r]] + bias[i]``, C-contiguous.

    Parameters
    ----------
    logp : ndarray of shape (n_queries, out_dim), float32
        Per-row log-softmax of the network's output sketch.
    cols : ndarray of shape (n_items, n_rows), integer
        Column of every item's bucket in every output row (``EMDE.item_out_cols_``).
    bias : ndarray of shape (n_items,), float32, optional
        Added per item (the popularity decoder's term); zero when omitted.

    Returns
    -------
    ndarray of shape (n_queries, n_items), float32. Each entry's float32 sum runs over the rows
    in order, so a query's scores do not depend on the batch it is scored in.

    Raises
    ------
    ValueError
        If a column lies outside ``[0, out_dim)`` or the shapes disagree.
    """
    logp, cols, b = _check_readout(logp, cols, bias)
    n = cols.shape[0]
    out = np.empty((logp.shape[0], n), np.float32)
    if out.size:
        with PARALLEL_LAUNCH:
            _bucket_mean_kernel(np.ascontiguousarray(logp.T), cols, b, out)
    return out


@njit_cached(parallel=True)
def _row_top_kernel(scores: NDArray[np.float32], k: int, ids: NDArray[np.int32]) -> None:
    q, n = scores.shape
    for a in numba.prange(q):
        row = scores[a]
        hs = np.empty(k, np.float64)
        hi = np.empty(k, np.int64)
        size = 0
        for i in range(n):
            s = row[i]
            if s == -np.inf or s != s or (size == k and not (s > hs[0])):  # ties keep the lower id, seen first
                continue
            size = heap_offer(hs, hi, size, k, s, i)
        order = heap_order(hs, hi, size)
        for t in range(size):
            ids[a, t] = hi[order[t]]


def row_top(scores: NDArray[np.float32], k: int) -> NDArray[np.int32]:
    """The ``k`` best items of each row, best first (ties: the lower index first).

    Parameters
    ----------
    scores : ndarray of shape (n_queries, n_items), float32
        ``-inf`` (and NaN) entries are never returned.
    k : int
        Items per row (>= 1).

    Returns
    -------
    ndarray of shape (n_queries, k), int32, padded with -1 when a row has fewer than ``k``
    finite entries.

    Raises
    ------
    ValueError
        If ``k < 1`` or ``scores`` is not 2-D.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D; got shape {scores.shape}")
    ids = np.full((scores.shape[0], k), -1, np.int32)
    if scores.size:
        with PARALLEL_LAUNCH:
            _row_top_kernel(scores, k, ids)
    return ids


def _check_readout(logp: NDArray[np.floating], cols: NDArray[np.integer], bias: NDArray[np.floating] | None
                   ) -> tuple[NDArray[np.float32], NDArray[np.int32], NDArray[np.float32]]:
    logp = np.ascontiguousarray(logp, dtype=np.float32)
    cols = np.ascontiguousarray(cols, dtype=np.int32)
    if logp.ndim != 2 or cols.ndim != 2:
        raise ValueError(f"logp and cols must be 2-D; got shapes {logp.shape} and {cols.shape}")
    if cols.size and (int(cols.min()) < 0 or int(cols.max()) >= logp.shape[1]):
        raise ValueError(f"cols must lie in [0, {logp.shape[1]}); got [{int(cols.min())}, {int(cols.max())}]")
    n = cols.shape[0]
    b = np.zeros(n, np.float32) if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    if b.shape != (n,):
        raise ValueError(f"bias must have shape ({n},); got {b.shape}")
    return logp, cols, b


@njit_cached(parallel=True)
def _bucket_mean_top_kernel(logp_blocks: NDArray[np.float32], cols: NDArray[np.int32], bias: NDArray[np.float32],
                            k: int, q: int, ids: NDArray[np.int32], tops: NDArray[np.float32]) -> None:
    n_blocks, _, qb = logp_blocks.shape
    n, r = cols.shape
    inv_r = np.float32(1.0 / r)
    for blk in numba.prange(n_blocks):  # blocks of queries split over the threads; every block reads all items
        src_blk = logp_blocks[blk]
        lo = blk * qb
        m = min(qb, q - lo)
        hs = np.empty((qb, k), np.float64)
        hi = np.empty((qb, k), np.int64)
        size = np.zeros(qb, np.int64)
        floor = np.full(qb, -np.inf, np.float32)  # the worst kept score once a heap is full
        floor[m:] = np.inf  # the block's padding never enters
        acc = np.empty(qb, np.float32)
        sv = np.empty(qb, np.float32)
        for i in range(n):
            acc[:] = 0
            for j in range(r):  # rows in order: the float32 sum of _bucket_mean_kernel
                src = src_blk[cols[i, j]]
                for a in range(qb):
                    acc[a] += src[a]
            b = bias[i]
            beats = 0
            for a in range(qb):  # branch-free (vectorised): most items beat no query's worst kept score
                sv[a] = acc[a] * inv_r + b
                if sv[a] > floor[a]:
                    beats += 1
            if beats == 0:
                continue
            for a in range(m):
                s = sv[a]
                if s > floor[a]:  # ties keep the lower id, seen first; -inf and NaN never pass
                    size[a] = heap_offer(hs[a], hi[a], size[a], k, s, i)
                    if size[a] == k:
                        floor[a] = hs[a, 0]
        for a in range(m):
            sz = size[a]
            order = heap_order(hs[a], hi[a], sz)
            for t in range(sz):
                ids[lo + a, t] = hi[a, order[t]]
                tops[lo + a, t] = hs[a, order[t]]


def bucket_mean_top(logp: NDArray[np.floating], cols: NDArray[np.integer], k: int,
                    bias: NDArray[np.floating] | None = None) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """``row_top(bucket_mean_scores(logp, cols, bias), k)`` and those scores, without the dense matrix.

    The ``(n_queries, n_items)`` score matrix is never written: each thread scores all items for
    its block of queries and keeps a bounded heap per query, so memory traffic is the item codes
    and the query block, not ``4 * n_queries * n_items`` bytes written and read back.

    Parameters
    ----------
    logp : ndarray of shape (n_queries, out_dim), float32
    cols : ndarray of shape (n_items, n_rows), integer
    k : int
        Items per query (>= 1).
    bias : ndarray of shape (n_items,), float32, optional

    Returns
    -------
    (ids, scores) : int32 and float32 arrays of shape (n_queries, k), best first (ties: the lower
    index first), equal to :func:`row_top` of :func:`bucket_mean_scores` and its entries; padded
    with -1 / -inf where a query has fewer than ``k`` finite scores.

    Raises
    ------
    ValueError
        If ``k < 1``, a column lies outside ``[0, out_dim)`` or the shapes disagree.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    logp, cols, b = _check_readout(logp, cols, bias)
    q, d = logp.shape
    ids = np.full((q, k), -1, np.int32)
    tops = np.full((q, k), -np.inf, np.float32)
    if q == 0 or cols.shape[0] == 0:
        return ids, tops
    threads = max(1, numba.get_num_threads())
    n_blocks = threads * -(-q // (threads * TOP_QUERY_BLOCK))  # whole rounds of blocks of at most TOP_QUERY_BLOCK
    qb = -(-q // n_blocks)
    blocks = np.zeros((n_blocks, d, qb), np.float32)
    for blk in range(n_blocks):
        part = logp[blk * qb:(blk + 1) * qb]
        blocks[blk, :, :len(part)] = part.T
    with PARALLEL_LAUNCH:
        _bucket_mean_top_kernel(blocks, cols, b, k, q, ids, tops)
    return ids, tops


@njit_cached()
def _bucket_mean_pairs_kernel(logp: NDArray[np.float32], cols: NDArray[np.int32], bias: NDArray[np.float32],
                              rows: NDArray[np.int64], items: NDArray[np.int64], out: NDArray[np.float32]) -> None:
    r = cols.shape[1]
    inv_r = np.float32(1.0 / r)
    for p in range(len(rows)):
        src = logp[rows[p]]
        it = items[p]
        acc = np.float32(0.0)
        for j in range(r):
            acc += src[cols[it, j]]
        out[p] = acc * inv_r + bias[it]


def bucket_mean_pairs(logp: NDArray[np.floating], cols: NDArray[np.integer], rows: NDArray[np.integer],
                      items: NDArray[np.integer], bias: NDArray[np.floating] | None = None) -> NDArray[np.float32]:
    """``bucket_mean_scores(logp, cols, bias)[rows, items]``, computed for those pairs only (bit-identical).

    Parameters
    ----------
    logp, cols, bias : as :func:`bucket_mean_scores`
    rows, items : ndarray of shape (m,), integer
        Query and item of each pair.

    Returns
    -------
    ndarray of shape (m,), float32.

    Raises
    ------
    ValueError
        If the shapes disagree or a pair lies outside ``[0, n_queries) x [0, n_items)``.
    """
    logp, cols, b = _check_readout(logp, cols, bias)
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    items = np.ascontiguousarray(items, dtype=np.int64)
    if rows.shape != items.shape or rows.ndim != 1:
        raise ValueError(f"rows and items must be 1-D of one length; got {rows.shape} and {items.shape}")
    if len(rows) and (rows.min() < 0 or rows.max() >= logp.shape[0] or items.min() < 0 or items.max() >= cols.shape[0]):
        raise ValueError(f"pairs must lie in [0, {logp.shape[0]}) x [0, {cols.shape[0]})")
    out = np.empty(len(rows), np.float32)
    if len(rows):
        _bucket_mean_pairs_kernel(logp, cols, b, rows, items, out)
    return out


@dataclass(frozen=True)
class BucketReadout:
    """EMDE's readout for one batch of queries, scored on demand.

    ``logp`` (n_queries, out_dim) float32 is the network's per-row log-softmax; ``cols``
    (n_items, n_rows) int32 every item's bucket column per output row; ``bias`` (n_items,)
    float32 or None the popularity decoder's item term. An item's score is
    ``mean_r logp[q, cols[i, r]] + bias[i]`` (:func:`bucket_mean_scores`).
    """

    logp: NDArray[np.float32]
    cols: NDArray[np.int32]
    bias: NDArray[np.float32] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(n_queries, n_items)."""
        return self.logp.shape[0], self.cols.shape[0]

    def dense(self) -> NDArray[np.float32]:
        """All scores, (n_queries, n_items) float32 (:func:`bucket_mean_scores`)."""
        return bucket_mean_scores(self.logp, self.cols, self.bias)

    def top(self, k: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Each query's ``k`` best items and their scores (:func:`bucket_mean_top`)."""
        return bucket_mean_top(self.logp, self.cols, k, self.bias)

    def pairs(self, rows: NDArray[np.integer], items: NDArray[np.integer]) -> NDArray[np.float32]:
        """Scores of the given (query, item) pairs (:func:`bucket_mean_pairs`)."""
        return bucket_mean_pairs(self.logp, self.cols, rows, items, self.bias)
