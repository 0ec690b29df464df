"""Embeddings for nodes unseen at training time: one more Cleora step, ``rowL2(M′·Q)``, for a batch.

A new node's row of M′ holds its edges to known nodes, row-normalised like Cleora's left Markov
matrix; its vector is the normalised weighted mean of its known neighbours' vectors. Those are
the store's ``basis`` (``Q_{T-1}``, saved by ``embed(keep_basis=True)``) when present, so the new
vector is exactly Cleora's last step; without a basis ``Q_T`` is used, which is fine on clique
graphs (item–item) but nearly orthogonal to the full embedding on bipartite graphs, whose two
sides alternate between two "parities" from one iteration to the next. Unknown
neighbours are ignored; a node with no known neighbour gets a zero vector (check
``np.any(v != 0, axis=1)``). The batch is gathered and reduced with numpy, so the per-node
cost is a few microseconds (``bench/cleora.py`` prints it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
from numpy.typing import NDArray

from models.cleora.store import EmbeddingStore

__all__ = ["embed_new_nodes", "embed_new_nodes_csr"]


@numba.njit(cache=True, fastmath=True, boundscheck=False)
def _mean_rows(indptr, rows, weights, vectors, out):  # pragma: no cover - compiled
    dim = vectors.shape[1]
    for k in range(len(indptr) - 1):
        acc = out[k]
        for p in range(indptr[k], indptr[k + 1]):
            j = rows[p]
            if j < 0:
                continue
            w = weights[p]
            v = vectors[j]
            for d in range(dim):
                acc[d] += w * v[d]
        s = np.float32(0.0)
        for d in range(dim):
            s += acc[d] * acc[d]
        if s > 0:
            inv = np.float32(1.0) / np.sqrt(s)
            for d in range(dim):
                acc[d] *= inv


def embed_new_nodes_csr(
    indptr: NDArray[np.integer],
    rows: NDArray[np.integer],
    vectors: NDArray[np.float32],
    weights: NDArray[np.floating] | None = None,
) -> NDArray[np.float32]:
    """``rowL2(M′·Q)`` with M′ given in CSR form over the rows of ``vectors``.

    Parameters
    ----------
    indptr : ndarray of shape (n_new + 1,), integer
        New node ``k`` links to ``rows[indptr[k]:indptr[k + 1]]``.
    rows : ndarray of shape (nnz,), integer
        Rows of ``vectors``; negative entries (unknown neighbours) are ignored.
    vectors : ndarray of shape (n_known, dim), float32
        Trained embeddings (may be memory-mapped).
    weights : ndarray of shape (nnz,), optional
        Edge weights (e.g. counts); default 1. Row normalisation cancels their scale.

    Returns
    -------
    ndarray of shape (n_new, dim), float32, rows L2-normalised (zero if no known neighbour).

    Raises
    ------
    ValueError
        If ``indptr[-1] != len(rows)`` or ``weights`` has another length than ``rows``.
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    if indptr[-1] != len(rows):
        raise ValueError(f"indptr: last entry must equal len(rows)={len(rows)}; got {indptr[-1]}")
    if weights is not None and len(weights) != len(rows):
        raise ValueError(f"weights: need one per neighbour ({len(rows)}); got {len(weights)}")
    out = np.zeros((len(indptr) - 1, vectors.shape[1]), dtype=np.float32)
    w = np.ones(len(rows), dtype=np.float32) if weights is None else np.asarray(weights, dtype=np.float32)
    _mean_rows(indptr, rows, w, vectors, out)
    return out


def embed_new_nodes(
    neighbours: Sequence[Sequence[str]],
    store: EmbeddingStore,
    weights: Sequence[Sequence[float]] | None = None,
) -> NDArray[np.float32]:
    """Embed new nodes from the labels of their neighbours in a trained store.

    Parameters
    ----------
    neighbours : sequence of sequences of str
        For each new node, the labels of the nodes it links to (e.g. a new session's items).
    store : EmbeddingStore
        Trained embeddings; its label index is built on first use and then reused. Its
        ``basis`` is used when present, else its ``vectors``.
    weights : sequence of sequences of float, optional
        Same shape as ``neighbours``; default 1 per edge.

    Returns
    -------
    ndarray of shape (len(neighbours), store.dim), float32, rows L2-normalised
    (zero rows for nodes without a known neighbour).

    Examples
    --------
    >>> v = embed_new_nodes([["item:1", "item:7"], ["item:3"]], store)  # doctest: +SKIP
    """
    lens = np.fromiter((len(x) for x in neighbours), dtype=np.int64, count=len(neighbours))
    indptr = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=indptr[1:])
    get = store.index.get
    rows = np.fromiter((get(s, -1) for x in neighbours for s in x), dtype=np.int64, count=int(indptr[-1]))
    w = None if weights is None else np.fromiter((v for x in weights for v in x), dtype=np.float32)
    return embed_new_nodes_csr(indptr, rows, store.vectors if store.basis is None else store.basis, w)
