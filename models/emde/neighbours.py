"""Item-kNN neighbour lists for EMDE's ``knn:*`` input views (the paper's kNN-style features).

A ``knn`` view is the sketch of a history's items *expanded to their co-occurrence
neighbours*: ``sum_i w_i sum_j N[i, j] sketch(j)``. It stays additive over events, so the
stream updates it like any other view (scatter the neighbours' columns with weights
``w_i * N[i, j]``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.base import InteractionLog, incidence_matrix

__all__ = ["cooccurrence_neighbours", "expand_to_neighbours", "top_k_rows"]


def cooccurrence_neighbours(log: InteractionLog, k: int = 20) -> sp.csr_array:
    """Top-``k`` session co-occurrence neighbours of every item, cosine-weighted, rows summing to 1.

    Parameters
    ----------
    log : InteractionLog
    k : int, default 20
        Neighbours kept per item.

    Returns
    -------
    csr_array of shape (n_items, n_items), float32, zero diagonal; empty rows for items
    that never share a session.
    """
    x = incidence_matrix(log.session_bounds(), log.item_idx, log.n_items)
    a = (x.T @ x).tocoo()
    support = np.asarray(x.sum(axis=0)).ravel()
    keep = a.row != a.col
    r, c = a.row[keep], a.col[keep]
    v = a.data[keep] / np.sqrt(support[r] * support[c])
    return top_k_rows(r, c, v, (log.n_items, log.n_items), k)


def top_k_rows(r: NDArray[np.integer], c: NDArray[np.integer], v: NDArray[np.floating], shape: tuple[int, int],
               k: int) -> sp.csr_array:
    """The ``k`` largest entries of each row of the COO triplets ``(r, c, v)`` (ties: lower
    column), each row scaled to sum 1 (empty rows stay empty): a neighbour matrix.

    ``(r, c)`` pairs must be distinct (sum duplicates first). Returns float32 csr of ``shape``.
    """
    order = np.lexsort((c, -v, r))
    r, c, v = r[order], c[order], v[order]
    starts = np.searchsorted(r, np.arange(shape[0]))
    rank = np.arange(len(r)) - starts[r]
    sel = rank < k
    n = sp.csr_array((v[sel].astype(np.float32), (r[sel], c[sel])), shape=shape)
    sums = np.asarray(n.sum(axis=1)).ravel()
    return sp.csr_array(sp.diags_array(1.0 / np.where(sums > 0, sums, 1.0)) @ n, dtype=np.float32)


def expand_to_neighbours(neighbours: sp.csr_array, indptr: NDArray[np.int64], items: NDArray[np.integer],
                         weights: NDArray[np.floating]) -> tuple[NDArray[np.int64], NDArray[np.int32],
                                                                 NDArray[np.float64]]:
    """Replace every history event by its neighbours, weight ``w_i * N[i, j]`` (CSR in, CSR out).

    Returns
    -------
    (indptr, items, weights) of the expanded histories.
    """
    sub = neighbours[np.asarray(items, dtype=np.int64)]
    per_event = np.diff(sub.indptr)
    q = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    counts = np.bincount(np.repeat(q, per_event), minlength=len(indptr) - 1)
    new_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    w = np.repeat(np.asarray(weights, np.float64), per_event) * sub.data
    return new_ptr, sub.indices.astype(np.int32), w
