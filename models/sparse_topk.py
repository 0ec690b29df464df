"""Exact top-k of ``sparse rows + a dense prior`` without the dense score matrix.

A co-visitation score is a sparse row (the items co-visited with the history) plus a small
popularity prior over the whole catalogue. Every item outside the row's non-zeros scores its prior
alone, so the best of them are the catalogue's most popular items: the top ``n`` of a row is among
its non-zeros and the first ``n + nnz`` items of one global popularity order. This scores a row in
O(nnz log nnz + n) instead of O(n_items): what makes a 1M-item catalogue affordable per event in the
stream (the dense path writes and partitions 4 MB per user there). Nothing of size n_items is
allocated per call.

The result equals ``models.topk.topk(rows.toarray() + prior, n)`` as documented there: the ``n``
best values, best first, ties broken by the lower item index, excluded items (``-inf``) given as
index ``-1``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.jit import njit_cached

__all__ = ["prior_order", "sparse_prior_topk", "sparse_prior_topk_of_rows"]


def prior_order(prior: NDArray[np.floating]) -> NDArray[np.int32]:
    """Item indices by ``prior`` descending, ties by the lower index (int32, shape (n_items,)).

    Raises
    ------
    ValueError
        If ``prior`` is not 1-D or holds NaN.
    """
    p = np.asarray(prior, dtype=np.float32)
    if p.ndim != 1:
        raise ValueError(f"prior must be 1-D (n_items,); got shape {p.shape}")
    if np.isnan(p).any():
        raise ValueError("prior holds NaN")
    return np.lexsort((np.arange(len(p)), -p)).astype(np.int32)


@njit_cached()
def _topk_rows(indptr, indices, data, ex_indptr, ex_indices, prior, order, n, out_idx, out_val):  # noqa: ANN001
    n_items = prior.shape[0]
    for q in range(indptr.shape[0] - 1):
        ex = np.sort(ex_indices[ex_indptr[q]:ex_indptr[q + 1]])
        lo, hi = indptr[q], indptr[q + 1]
        by_col = np.argsort(indices[lo:hi], kind="mergesort")
        cols = np.empty(hi - lo, np.int64)
        vals = np.empty(hi - lo, np.float32)
        m = 0
        for j in by_col:  # the row's non-zeros in column order, the excluded ones dropped
            c = indices[lo + j]
            e = np.searchsorted(ex, c)
            if e < ex.shape[0] and ex[e] == c:
                continue
            cols[m] = c
            vals[m] = np.float32(data[lo + j]) + prior[c]
            m += 1
        cols, vals = cols[:m], vals[:m]
        best = np.argsort(-vals, kind="mergesort")  # value descending, then column ascending (stable)
        a = 0  # next non-zero (in ``best`` order)
        b = 0  # next position in the prior order
        k = 0
        while k < n:
            while b < n_items:  # skip the row's non-zeros (taken from the other list) and excluded items
                c = order[b]
                e = np.searchsorted(cols, c)
                if e < m and cols[e] == c:
                    b += 1
                    continue
                e = np.searchsorted(ex, c)
                if e < ex.shape[0] and ex[e] == c:
                    b += 1
                    continue
                break
            has_a = a < m
            has_b = b < n_items
            if not has_a and not has_b:
                break
            take_a = has_a
            if has_a and has_b:
                va, vb = vals[best[a]], prior[order[b]]
                take_a = va > vb or (va == vb and cols[best[a]] < order[b])
            if take_a:
                out_idx[q, k] = cols[best[a]]
                out_val[q, k] = vals[best[a]]
                a += 1
            else:
                out_idx[q, k] = order[b]
                out_val[q, k] = prior[order[b]]
                b += 1
            k += 1
        # when excluded items would be needed to reach n, the rest stays -1 / -inf (the arrays' initial values)


def sparse_prior_topk(rows: sp.csr_array | sp.csr_matrix, prior: NDArray[np.float32], order: NDArray[np.int32],
                      n: int, exclude: sp.csr_array | sp.csr_matrix | None = None,
                      exclude_items: NDArray[np.integer] | None = None
                      ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """Top-``n`` of ``rows.toarray() + prior`` per row, best first, without the dense matrix.

    Parameters
    ----------
    rows : CSR array of shape (n_queries, n_items), float32
        The sparse part of the scores (values added to the prior in float32, as the dense sum).
    prior : ndarray of shape (n_items,), float32
        The score of every item outside a row's non-zeros (finite).
    order : ndarray of shape (n_items,), int32
        ``prior_order(prior)``: computed once per model.
    n : int
        Items per row (>= 1); rows with fewer candidates are padded with ``-1`` / ``-inf``.
    exclude : CSR array of shape (n_queries, n_items), optional
        Items scored ``-inf`` per row (their stored values are ignored).
    exclude_items : ndarray of shape (n_queries,), int, optional
        One item scored ``-inf`` per row (instead of ``exclude``: an item's own row of similar items).

    Returns
    -------
    (idx, val) : int32 and float32 arrays of shape (n_queries, n), as ``models.topk.topk`` of the
        dense sum: ties broken by the lower item index, excluded items never returned.

    Raises
    ------
    ValueError
        If the shapes disagree or ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    if not isinstance(rows, sp.csr_array):
        rows = sp.csr_array(rows)
    n_q, n_items = rows.shape
    if prior.shape != (n_items,) or order.shape != (n_items,):
        raise ValueError(f"prior and order must have shape ({n_items},); got {prior.shape} and {order.shape}")
    if exclude_items is not None:
        if exclude is not None or np.shape(exclude_items) != (n_q,):
            raise ValueError(f"exclude_items must have shape ({n_q},) and exclude must be None with it")
        ex_indptr, ex_indices = np.arange(n_q + 1, dtype=np.int64), np.asarray(exclude_items, dtype=np.int32)
    elif exclude is None:
        ex_indptr, ex_indices = np.zeros(n_q + 1, np.int64), np.zeros(0, np.int32)
    else:
        exclude = sp.csr_array(exclude)
        if exclude.shape != rows.shape:
            raise ValueError(f"exclude must have shape {rows.shape}; got {exclude.shape}")
        ex_indptr, ex_indices = exclude.indptr, exclude.indices
    idx = np.full((n_q, n), -1, np.int32)
    val = np.full((n_q, n), -np.inf, np.float32)
    if n_q and n_items:
        _topk_rows(rows.indptr, rows.indices, rows.data, ex_indptr, ex_indices,
                   np.ascontiguousarray(prior, dtype=np.float32), np.ascontiguousarray(order, dtype=np.int32),
                   n, idx, val)
    return idx, val


def sparse_prior_topk_of_rows(matrix: sp.csr_array | sp.csr_matrix, row_idx: NDArray[np.integer],
                              prior: NDArray[np.float32], order: NDArray[np.int32], n: int
                              ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """``sparse_prior_topk(matrix[row_idx], prior, order, n, exclude_items=row_idx)`` without scipy's row indexing.

    An item's similar items (co-visitation's ``similar_items``): the rows' segments of ``matrix`` are read by
    their ``indptr`` (a slice for one row), not copied into a new CSR array by scipy's fancy indexing, which
    cost ~50 us of a ~60 us call at 1M items (one request's candidates). Same results, same errors.

    Parameters
    ----------
    matrix : CSR of shape (n_items, n_items), float32 values
    row_idx : ndarray of shape (n_queries,), int
        The rows scored; each row's own item is excluded from its list.
    prior, order, n : as :func:`sparse_prior_topk`.

    Raises
    ------
    ValueError
        If ``n < 1``, a row is out of range or ``prior`` / ``order`` do not have the matrix's width.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    row_idx = np.asarray(row_idx, dtype=np.int64)
    n_rows, n_items = matrix.shape
    if len(row_idx) and (row_idx.min() < 0 or row_idx.max() >= n_rows):
        raise ValueError(f"row_idx must be in [0, {n_rows})")
    if prior.shape != (n_items,) or order.shape != (n_items,):
        raise ValueError(f"prior and order must have shape ({n_items},); got {prior.shape} and {order.shape}")
    starts = matrix.indptr[row_idx].astype(np.int64)
    lens = matrix.indptr[row_idx + 1].astype(np.int64) - starts
    # the matrix's own index dtype (int32 for most): the kernel compiled for scipy's rows is reused, where an
    # int64 indptr compiled a second specialisation (~5 s) on the first call of a fresh process
    indptr = np.zeros(len(row_idx) + 1, dtype=matrix.indptr.dtype)
    np.cumsum(lens, out=indptr[1:])
    if len(row_idx) == 1:
        seg = slice(int(starts[0]), int(starts[0] + lens[0]))
        indices, data = matrix.indices[seg], matrix.data[seg]
    else:
        take = np.repeat(starts - indptr[:-1], lens) + np.arange(int(indptr[-1]))
        indices, data = matrix.indices[take], matrix.data[take]
    n_q = len(row_idx)
    idx = np.full((n_q, n), -1, np.int32)
    val = np.full((n_q, n), -np.inf, np.float32)
    if n_q and n_items:
        _topk_rows(indptr, indices, np.asarray(data, dtype=np.float32), np.arange(n_q + 1, dtype=np.int64),
                   row_idx.astype(np.int32), np.ascontiguousarray(prior, dtype=np.float32),
                   np.ascontiguousarray(order, dtype=np.int32), n, idx, val)
    return idx, val
