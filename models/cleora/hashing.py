"""Deterministic hash initialisation of Cleora's Q₀: one value per (node label, dimension, seed).

Each node label is hashed once to a 64-bit key (BLAKE2b, keyed by the seed), and every entry
``Q₀[i, d]`` is a SplitMix64 finaliser of ``key_i`` mixed with an independent per-dimension
hash of ``(d, seed)``. The top 24 bits become a float32 strictly inside (−1, 1). Nothing depends
on node order, on thread count, or on which other nodes exist: a node's start vector is a pure
function of its label, the dimension and the seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = ["label_keys", "hash_init", "fill_hash_block"]

_M64 = (1 << 64) - 1


def label_keys(labels: Iterable[str], seed: int = 0) -> NDArray[np.uint64]:
    """64-bit keys of node labels (BLAKE2b-64 of the UTF-8 label, keyed by ``seed``).

    Parameters
    ----------
    labels : iterable of str
        Node labels, e.g. ``"item:42"``.
    seed : int
        Non-negative; different seeds give independent keys.

    Returns
    -------
    ndarray of shape (n_labels,), uint64

    Raises
    ------
    ValueError
        If ``seed`` is negative.
    """
    if seed < 0:
        raise ValueError(f"seed: must be >= 0; got {seed}")
    salt = int(seed).to_bytes(16, "little", signed=False)[:16]
    out = [
        int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8, salt=salt).digest(), "little")
        for s in labels
    ]
    return np.array(out, dtype=np.uint64)


@numba.njit(inline="always")
def _splitmix(x: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    return x ^ (x >> np.uint64(31))


@numba.njit(parallel=True, cache=True)
def _fill(keys, out, d0, seed):  # pragma: no cover - compiled
    n, width = out.shape
    dim_keys = np.empty(width, dtype=np.uint64)
    for d in range(width):
        dim_keys[d] = _splitmix(_splitmix(np.uint64(d0 + d)) ^ np.uint64(seed))
    scale = np.float32(2.0 / 16777216.0)
    for i in numba.prange(n):
        k = keys[i]
        for d in range(width):
            h = _splitmix(k ^ dim_keys[d])
            out[i, d] = (np.float32(h >> np.uint64(40)) + np.float32(0.5)) * scale - np.float32(1.0)


def fill_hash_block(keys: NDArray[np.uint64], out: NDArray[np.float32], d0: int, seed: int) -> None:
    """Write ``Q₀[:, d0:d0 + out.shape[1]]`` into ``out`` in place (both cores).

    Parameters
    ----------
    keys : ndarray of shape (n_nodes,), uint64
        From :func:`label_keys`.
    out : ndarray of shape (n_nodes, width), float32
        Destination, e.g. a column block view of a larger matrix.
    d0 : int
        Index of the first dimension of the block.
    seed : int
        Same seed as used for the keys.
    """
    _fill(keys, out, np.uint64(d0), np.uint64(seed & _M64))


def hash_init(keys: NDArray[np.uint64], dim: int, seed: int = 0) -> NDArray[np.float32]:
    """Cleora's Q₀: uniform in (−1, 1), a pure function of (label key, dimension, seed).

    Parameters
    ----------
    keys : ndarray of shape (n_nodes,), uint64
        From :func:`label_keys`.
    dim : int
        Embedding dimension, >= 1.
    seed : int
        Non-negative seed.

    Returns
    -------
    ndarray of shape (n_nodes, dim), float32, entries in (−1, 1) with mean ≈ 0.

    Raises
    ------
    ValueError
        If ``dim < 1``.

    Examples
    --------
    >>> q = hash_init(label_keys(["a", "b"]), 8)
    >>> q.shape, q.dtype
    ((2, 8), dtype('float32'))
    """
    if dim < 1:
        raise ValueError(f"dim: must be >= 1; got {dim}")
    out = np.empty((len(keys), dim), dtype=np.float32)
    fill_hash_block(np.ascontiguousarray(keys, dtype=np.uint64), out, 0, seed)
    return out
