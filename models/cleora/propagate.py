"""The Cleora propagation kernel: ``Q ← rowL2(M·Q)``, fused, in dimension blocks, on all cores.

Speed comes from four things (measured in ``bench/cleora.py``):

* the row L2 normalisation of iteration t is folded into iteration t+1 as a per-column scale
  of M (``y_i = Σ_j m_ij · s_j · x_j`` with ``s_j = 1/‖x_j‖``), and the squared row norms are
  accumulated while each output row is still in L1 — no separate normalisation pass;
* the graph arrives in a locality order (hubs first, see ``graph.py``), so the rows of Q that
  most non-zeros point at stay in cache;
* Q is processed in blocks of ``block_dim`` dimensions (dimensions of M·Q are independent):
  block b of the new Q needs only block b of the old one, so it is computed into one
  (n, block_dim) buffer and written back over Q — the whole run needs Q plus that buffer,
  not two copies of Q;
* rows are split into many chunks of equal non-zeros, handed out to the threads dynamically,
  so power-law hubs — or a core taken by another process — don't leave a thread idle.

The result is bit-identical for a given graph, seed, dimension and block size, independent of
thread count (each output row is summed by one thread, in CSR order).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numba
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.jit import PARALLEL_LAUNCH

__all__ = ["propagate", "as_kernel_csr"]


@numba.njit(parallel=True, cache=True, boundscheck=False, fastmath=True)
def _spmm_block(indptr, indices, data, scale, x, y, sq, chunks, d0, d1):  # pragma: no cover
    width = d1 - d0
    for c in numba.prange(len(chunks) - 1):
        acc = np.empty(width, dtype=np.float32)  # one L1-resident accumulator per chunk
        for i in range(chunks[c], chunks[c + 1]):
            acc[:] = np.float32(0.0)
            start, stop = indptr[i], indptr[i + 1]
            p = start
            while p + 4 <= stop:  # four non-zeros at once: more independent loads in flight
                j0, j1, j2, j3 = indices[p], indices[p + 1], indices[p + 2], indices[p + 3]
                w0, w1 = data[p] * scale[j0], data[p + 1] * scale[j1]
                w2, w3 = data[p + 2] * scale[j2], data[p + 3] * scale[j3]
                x0, x1, x2, x3 = x[j0, d0:d1], x[j1, d0:d1], x[j2, d0:d1], x[j3, d0:d1]
                for d in range(width):
                    acc[d] += (w0 * x0[d] + w1 * x1[d]) + (w2 * x2[d] + w3 * x3[d])
                p += 4
            while p < stop:
                j = indices[p]
                w = data[p] * scale[j]
                xr = x[j, d0:d1]
                for d in range(width):
                    acc[d] += w * xr[d]
                p += 1
            yr = y[i]
            s = np.float32(0.0)
            for d in range(width):
                yr[d] = acc[d]
                s += acc[d] * acc[d]
            sq[i] += s


@numba.njit(parallel=True, cache=True)
def _scale_rows(y, scale):  # pragma: no cover
    n, dim = y.shape
    for i in numba.prange(n):
        s = scale[i]
        for d in range(dim):
            y[i, d] *= s


@numba.njit(parallel=True, cache=True)
def _store_block(x, y, d0):  # pragma: no cover
    n, width = y.shape
    for i in numba.prange(n):
        for d in range(width):
            x[i, d0 + d] = y[i, d]


def _inv_norm(sq: NDArray[np.float32]) -> NDArray[np.float32]:
    """``1/sqrt(sq)`` with 0 for zero rows (isolated nodes stay zero)."""
    out = np.zeros_like(sq)
    nz = sq > 0
    out[nz] = 1.0 / np.sqrt(sq[nz])
    return out


def _row_chunks(indptr: NDArray[np.int64], n_chunks: int) -> NDArray[np.int64]:
    """Row boundaries that split the non-zeros into ``n_chunks`` near-equal parts."""
    targets = np.linspace(0, indptr[-1], n_chunks + 1)
    bounds = np.searchsorted(indptr, targets, side="left").astype(np.int64)
    bounds[0], bounds[-1] = 0, len(indptr) - 1
    return np.unique(bounds)


def as_kernel_csr(m: sp.csr_array | sp.csr_matrix) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float32]]:
    """The ``(indptr int64, indices int32, data float32)`` triple the kernel reads.

    Raises
    ------
    ValueError
        If ``m`` is not square or has more than 2³¹−1 columns.
    """
    if m.shape[0] != m.shape[1]:
        raise ValueError(f"m: must be square (n_nodes, n_nodes); got shape {m.shape}")
    if m.shape[1] >= 2**31:
        raise ValueError(f"m: at most 2**31-1 nodes are supported; got {m.shape[1]}")
    return (np.asarray(m.indptr, dtype=np.int64), np.asarray(m.indices, dtype=np.int32),
            np.asarray(m.data, dtype=np.float32))


def _buffer(shape: tuple[int, int], out_dir: Path | None, name: str) -> NDArray[np.float32]:
    if out_dir is None:
        return np.empty(shape, dtype=np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(out_dir / name, mode="w+", dtype=np.float32, shape=shape)


def propagate(
    m: sp.csr_array | sp.csr_matrix | tuple[NDArray, NDArray, NDArray],
    q: NDArray[np.float32],
    n_iter: int = 4,
    *,
    block_dim: int | Literal["auto"] | None = "auto",
    n_threads: int | None = None,
    work_dir: Path | None = None,
    on_iteration: Callable[[int], None] | None = None,
) -> NDArray[np.float32]:
    """Cleora propagation: repeat ``Q ← row_l2_normalize(M @ Q)`` ``n_iter`` times.

    Parameters
    ----------
    m : csr_array of shape (n_nodes, n_nodes), or its ``(indptr, indices, data)`` triple
        Transition matrix, e.g. ``Graph.markov()``; float32 values, sorted int32 indices.
        The arrays may be memory-mapped (graphs larger than RAM: slower, but they work).
    q : ndarray of shape (n_nodes, dim), float32, C-contiguous
        Start embeddings (e.g. ``hash_init``). **Used as a work buffer and overwritten.**
    n_iter : int
        Iterations, >= 1 (Cleora uses 3–5).
    block_dim : int, "auto" or None
        Dimensions per block; ``None`` processes all dimensions at once (fastest, but the work
        buffer is a second copy of Q). ``"auto"``: all of them up to dim 128, else
        ``min(512, ceil(dim / 2))`` — at least two blocks, so the buffer is at most half of Q
        (peak memory ≈ 1.5 Q); wider blocks re-read the CSR fewer times.
    n_threads : int or None
        Threads for the kernel; ``None`` uses numba's default (all cores).
    work_dir : Path or None
        If given, the (n_nodes, block_dim) work buffer is a memory-mapped ``.npy`` file here.
    on_iteration : callable or None
        Called with the 1-based iteration number after each iteration (progress bars).

    Returns
    -------
    ndarray of shape (n_nodes, dim), float32, rows L2-normalised (rows of isolated nodes are 0):
    ``q`` itself, updated in place. Peak extra memory is one (n_nodes, block_dim) buffer.

    Raises
    ------
    ValueError
        If shapes disagree (the message gives both), ``q`` is not float32 C-contiguous,
        or ``n_iter < 1``.

    References
    ----------
    Rychalska et al., "Cleora: A Simple, Strong and Scalable Graph Embedding Scheme",
    arXiv 2102.02302.
    """
    indptr, indices, data = m if isinstance(m, tuple) else as_kernel_csr(m)
    n = len(indptr) - 1
    if q.ndim != 2 or q.shape[0] != n:
        raise ValueError(f"q: must have shape (n_nodes={n}, dim); got {q.shape}")
    if q.dtype != np.float32 or not q.flags.c_contiguous:
        raise ValueError(f"q: must be a C-contiguous float32 array; got {q.dtype}, "
                         f"c_contiguous={q.flags.c_contiguous}")
    if n_iter < 1:
        raise ValueError(f"n_iter: must be >= 1; got {n_iter}")
    dim = q.shape[1]
    if block_dim == "auto":
        block_dim = dim if dim <= 128 else min(512, (dim + 1) // 2)
    width = dim if block_dim is None else max(1, min(int(block_dim), dim))
    old_threads = numba.get_num_threads()
    if n_threads is not None:
        numba.set_num_threads(max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        chunks = _row_chunks(indptr, 128 * numba.get_num_threads())
        old_chunksize = numba.set_parallel_chunksize(1)  # chunks are handed out dynamically
        # Dimensions are independent in M·Q, so block b of the new Q needs only block b of the
        # old one: compute it into a (n, width) buffer, then write it back over Q in place.
        y = _buffer((n, width), work_dir, "cleora_block.npy")
        scale = np.ones(n, dtype=np.float32)
        for it in range(n_iter):
            sq = np.zeros(n, dtype=np.float32)
            for d0 in range(0, dim, width):
                d1 = min(d0 + width, dim)
                yb = y if d1 - d0 == width else y[:, : d1 - d0]
                with PARALLEL_LAUNCH:  # one launch at a time per process (models.jit)
                    _spmm_block(indptr, indices, data, scale, q, yb, sq, chunks, d0, d1)
                    _store_block(q, yb, d0)
            scale = _inv_norm(sq)
            if on_iteration is not None:
                on_iteration(it + 1)
        del y
        with PARALLEL_LAUNCH:
            _scale_rows(q, scale)
        return q
    finally:
        numba.set_num_threads(old_threads)
        if "old_chunksize" in locals():
            numba.set_parallel_chunksize(old_chunksize)
