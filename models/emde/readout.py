"""EMDE's readout as compiled kernels: every item's mean bucket log-probability, and each row's top k.

An item's score for a query is the mean, over the output sketch's depth rows, of the
log-probability of the bucket the item falls in (Dąbrowski et al. 2021, "An efficient manifold
density estimator for all recommendation systems", §3: the item's density under the predicted
sketch, in log space). With ``R`` rows per item this is a gather-sum of ``R`` cells per (query,
item) pair: a sparse-dense product whose output is written query-major, so that the per-query
top-k and maxima that follow read contiguous rows.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

from models.heap import heap_offer
from models.jit import PARALLEL_LAUNCH, njit_cached

__all__ = ["bucket_mean_scores", "row_top"]


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
    logp = np.asarray(logp, dtype=np.float32)
    cols = np.ascontiguousarray(cols, dtype=np.int32)
    if logp.ndim != 2 or cols.ndim != 2:
        raise ValueError(f"logp and cols must be 2-D; got shapes {logp.shape} and {cols.shape}")
    if cols.size and (int(cols.min()) < 0 or int(cols.max()) >= logp.shape[1]):
        raise ValueError(f"cols must lie in [0, {logp.shape[1]}); got [{int(cols.min())}, {int(cols.max())}]")
    n = cols.shape[0]
    b = np.zeros(n, np.float32) if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    if b.shape != (n,):
        raise ValueError(f"bias must have shape ({n},); got {b.shape}")
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
        order = np.argsort(hi[:size], kind="mergesort")  # by id, then stably by score (desc)
        order = order[np.argsort(-hs[:size][order], kind="mergesort")]
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
