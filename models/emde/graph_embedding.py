"""Item embeddings from hypergraphs (sessions, transitions, title words) with the Cleora loop.

:func:`embed_hyperedges` is the one entry point. With ``backend="cleora"`` (the default when
``models.cleora`` is importable) it builds the clique-expanded graph with
``models.cleora.graph_from_arrays`` and embeds it with ``models.cleora.embed`` (hash-initialised,
fused propagation). ``backend="loop"`` is a small stand-in kept for comparison: the
star-expanded hypergraph (items linked through virtual group nodes: sessions, word
occurrences...) propagated as ``Q <- row_l2(M @ Q)`` with ``M`` the item -> group -> item
random walk and uniform(-1, 1) start vectors from ``random_state``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

__all__ = ["embed_hyperedges", "session_hyperedges", "transition_hyperedges"]


def _row_l2(q: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    return q / np.where(norm > 0, norm, 1.0)


def embed_hyperedges(
    edge_indptr: NDArray[np.int64],
    edge_items: NDArray[np.integer],
    n_items: int,
    *,
    dim: int = 256,
    n_iter: int = 3,
    random_state: int | np.random.Generator | None = None,
    backend: str = "auto",
) -> NDArray[np.float32]:
    """Cleora embeddings of items linked by hyperedges.

    Parameters
    ----------
    edge_indptr : ndarray of shape (n_edges + 1,), int64
        CSR pointer over ``edge_items``: hyperedge ``e`` holds ``edge_items[indptr[e]:indptr[e+1]]``.
    edge_items : ndarray of shape (nnz,), int
        Item indices in ``[0, n_items)``.
    n_items : int
    dim : int, default 256
        Embedding dimension.
    n_iter : int, default 3
        Propagation steps (3-5 is the paper's default range).
    random_state : int, Generator or None
        Seed of the start vectors (the hash seed for ``models.cleora``).
    backend : {"auto", "cleora", "loop"}, default "auto"
        ``auto``: ``models.cleora`` when importable, else the stand-in loop.

    Returns
    -------
    ndarray of shape (n_items, dim), float32, rows L2-normalised (zero for items in no edge).

    Raises
    ------
    ValueError
        If an item index lies outside ``[0, n_items)``.

    References
    ----------
    Rychalska et al., "Cleora: A Simple, Strong and Scalable Graph Embedding Scheme",
    arXiv 2102.02302.
    """
    edge_items = np.asarray(edge_items, dtype=np.int64)
    if edge_items.size and (edge_items.min() < 0 or edge_items.max() >= n_items):
        raise ValueError(f"edge_items must lie in [0, n_items={n_items}); got range "
                         f"[{edge_items.min()}, {edge_items.max()}]")
    rng = np.random.default_rng(random_state)
    if backend == "auto":
        try:
            import models.cleora  # noqa: F401
            backend = "cleora"
        except ImportError:
            backend = "loop"
    if backend == "cleora":
        return _embed_with_cleora(edge_indptr, edge_items, n_items, dim, n_iter, int(rng.integers(2**31)))
    if backend != "loop":
        raise ValueError(f"backend must be 'auto', 'cleora' or 'loop'; got {backend!r}")
    n_edges = len(edge_indptr) - 1
    incidence = sp.csr_array((np.ones(len(edge_items), np.float32), edge_items,
                              np.asarray(edge_indptr, dtype=np.int64)), shape=(n_edges, n_items))
    edge_deg = np.asarray(incidence.sum(axis=1)).ravel()
    item_deg = np.asarray(incidence.sum(axis=0)).ravel()
    to_edge = sp.diags_array(1.0 / np.maximum(edge_deg, 1)).astype(np.float32) @ incidence
    to_item = (sp.diags_array(1.0 / np.maximum(item_deg, 1)).astype(np.float32) @ incidence.T).tocsr()
    q = rng.uniform(-1.0, 1.0, size=(n_items, dim)).astype(np.float32)
    for _ in range(n_iter):
        q = _row_l2(to_item @ (to_edge @ q)).astype(np.float32)
    return q


def _embed_with_cleora(edge_indptr: NDArray[np.int64], edge_items: NDArray[np.int64], n_items: int,
                       dim: int, n_iter: int, seed: int) -> NDArray[np.float32]:
    """``models.cleora`` on the hyperedges; items the graph drops (no edge) get zero rows."""
    from models.cleora import EmptyGraphError, embed, graph_from_arrays

    labels = np.arange(n_items).astype(str)
    out = np.zeros((n_items, dim), dtype=np.float32)
    try:
        store = embed(graph_from_arrays(labels, edge_indptr, edge_items), dim=dim, n_iter=n_iter, seed=seed)
    except EmptyGraphError:
        return out
    out[np.asarray(store.labels, dtype=np.int64)] = np.asarray(store.vectors, dtype=np.float32)
    return out


def session_hyperedges(indptr: NDArray[np.int64], items: NDArray[np.integer]
                       ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """Each session is one hyperedge over its distinct items (CSR in, CSR out)."""
    lens = np.diff(indptr)
    sess = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
    pairs = np.unique(np.stack([sess, np.asarray(items, np.int64)], axis=1), axis=0)
    counts = np.bincount(pairs[:, 0], minlength=len(lens))
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), pairs[:, 1].astype(np.int32)


def transition_hyperedges(indptr: NDArray[np.int64], items: NDArray[np.integer]
                          ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """Each consecutive pair (a, b) within a session is a 2-item hyperedge."""
    items = np.asarray(items, np.int32)
    idx = np.arange(len(items) - 1)
    same = np.ones(len(idx), bool)
    boundary = np.asarray(indptr[1:-1], dtype=np.int64) - 1
    same[boundary[(boundary >= 0) & (boundary < len(idx))]] = False
    keep = idx[same & (items[idx] != items[idx + 1])]
    edges = np.stack([items[keep], items[keep + 1]], axis=1).ravel()
    return np.arange(0, 2 * len(keep) + 1, 2, dtype=np.int64), edges
