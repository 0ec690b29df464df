"""The Cleora embedding step: hash-initialise Q₀ from labels, propagate, keep the non-transient rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np

from models.cleora.graph import Graph
from models.cleora.hashing import fill_hash_block
from models.cleora.propagate import as_kernel_csr, propagate
from models.cleora.store import EmbeddingStore

__all__ = ["embed"]


def embed(
    graph: Graph,
    dim: int = 256,
    n_iter: int = 4,
    *,
    seed: int = 0,
    markov: Literal["left", "symmetric"] = "left",
    block_dim: int | Literal["auto"] | None = "auto",
    n_threads: int | None = None,
    work_dir: Path | None = None,
    include_transient: bool = False,
    keep_basis: bool = False,
    name: str = "graph",
    on_iteration: Callable[[int], None] | None = None,
) -> EmbeddingStore:
    """Embed a graph with Cleora: ``Q₀ = hash(labels)``, then ``n_iter`` times ``Q ← rowL2(M·Q)``.

    Parameters
    ----------
    graph : Graph
        From ``build_graph`` / ``graph_from_arrays``.
    dim : int
        Embedding dimension, 1..65536 (Cleora uses 128–2048).
    n_iter : int
        Propagation iterations, >= 1 (3–5 is typical).
    seed : int
        Seed of the hash initialisation (>= 0).
    markov : {"left", "symmetric"}
        ``D⁻¹A`` (pycleora's ``left``) or ``D^-½AD^-½``.
    block_dim, n_threads, work_dir, on_iteration
        Passed to :func:`~models.cleora.propagate.propagate`.
    include_transient : bool
        Also return the transient (virtual) nodes.
    keep_basis : bool
        Also keep ``Q_{T-1}`` (the iteration before the last) as the store's ``basis``, which
        :func:`~models.cleora.inductive.embed_new_nodes` then uses: a new node's vector
        ``rowL2(M′·Q_{T-1})`` is exactly the last Cleora step, so it agrees with a full
        re-embedding also on bipartite graphs (user–item), where ``M′·Q_T`` lands in the other
        parity and is nearly orthogonal. Costs one more (n, dim) matrix.
    name : str
        Graph name recorded in the manifest (e.g. ``"session-item-view"``).

    Returns
    -------
    EmbeddingStore
        ``vectors`` float32 (n_out, dim) with L2-normalised rows, ``labels`` and a manifest.

    Raises
    ------
    ValueError
        If ``dim`` is outside 1..65536, ``n_iter < 1`` or ``seed < 0``.
    """
    if not 1 <= dim <= 65536:
        raise ValueError(f"dim: must be in 1..65536; got {dim}")
    if seed < 0:
        raise ValueError(f"seed: must be >= 0; got {seed}")
    if n_iter < 1:
        raise ValueError(f"n_iter: must be >= 1; got {n_iter}")
    kernel_m = as_kernel_csr(graph.markov(markov))
    q = np.empty((graph.n_nodes, dim), dtype=np.float32)
    fill_hash_block(graph.keys, q, 0, seed)
    basis = None
    if keep_basis and n_iter > 1:
        q = propagate(kernel_m, q, n_iter - 1, block_dim=block_dim, n_threads=n_threads, work_dir=work_dir,
                      on_iteration=on_iteration)
        basis = q.copy()
        q = propagate(kernel_m, q, 1, block_dim=block_dim, n_threads=n_threads, work_dir=work_dir,
                      on_iteration=None if on_iteration is None else lambda _: on_iteration(n_iter))
    else:
        if keep_basis:  # one iteration: the basis is the normalised start
            basis = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), np.float32(1e-30))
        q = propagate(kernel_m, q, n_iter, block_dim=block_dim, n_threads=n_threads, work_dir=work_dir,
                      on_iteration=on_iteration)
    keep = np.ones(graph.n_nodes, dtype=bool) if include_transient else ~graph.transient
    vectors = q if keep.all() else q[keep]
    if basis is not None and not keep.all():
        basis = basis[keep]
    manifest = {
        "graph": name,
        "columns": " ".join(map(str, graph.columns)),
        "dim": dim,
        "iterations": n_iter,
        "seed": seed,
        "markov": markov,
        "n_nodes": int(graph.n_nodes),
        "n_embedded": int(keep.sum()),
        "n_rows": graph.n_rows,
        "n_dropped_rows": graph.n_dropped,
        "n_trimmed_fields": graph.n_trimmed,
        "nnz": graph.nnz,
        "has_basis": basis is not None,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return EmbeddingStore(labels=graph.labels[keep], vectors=vectors, manifest=manifest, basis=basis)
