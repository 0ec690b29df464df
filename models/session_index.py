"""Sparse views shared by the neighbourhood models: session x item matrix, history matrices, seen-masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.base import Histories, InteractionLog

__all__ = ["SessionIndex", "history_matrix", "check_histories", "mask_seen", "last_positions"]


@dataclass(frozen=True)
class SessionIndex:
    """The training sessions as a sparse matrix (each session's *set* of items), newest session first.

    Rows are ordered by recency: row 0 is the session whose last event is the newest (ties keep
    log order), so "the most recent sessions holding an item" are the first entries of that
    item's row of ``xt``, and recency sampling needs no sort.

    Attributes
    ----------
    x : csr_array of shape (n_sessions, n_items), float32
        1 where the session holds the item (duplicates collapsed), canonical (sorted indices).
    last_pos : ndarray of shape (x.nnz,), float32
        Aligned with ``x.indices``: the item's newest 1-based position in its session
        (positions count duplicates), as STAN's ``pos_last``.
    last_ts : ndarray of shape (n_sessions,), float64
        Epoch seconds of each session's last event (session-rec's ``session_time``).
    xt : csr_array of shape (n_items, n_sessions), float32
        Transpose of ``x`` (the sessions of each item).
    xt_last_pos : ndarray of shape (x.nnz,), float32
        ``last_pos`` aligned with ``xt.indices``.
    """

    x: sp.csr_array
    last_pos: NDArray[np.float32]
    last_ts: NDArray[np.float64]
    xt: sp.csr_array
    xt_last_pos: NDArray[np.float32]

    @property
    def n_sessions(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_unique(self) -> NDArray[np.float32]:
        """Distinct items per session, shape (n_sessions,)."""
        return np.diff(self.x.indptr).astype(np.float32)

    @classmethod
    def from_log(cls, log: InteractionLog) -> SessionIndex:
        """Build from a training log (events sorted by session, then time)."""
        bounds = log.session_bounds()
        last_ts = log.ts[np.maximum(bounds[1:] - 1, 0)].astype(np.float64)
        newest_first = np.lexsort((np.arange(len(last_ts)), -last_ts))
        rank = np.empty_like(newest_first)
        rank[newest_first] = np.arange(len(newest_first))
        lens = np.diff(bounds)
        order = np.argsort(np.repeat(rank, lens), kind="stable")
        new_bounds = np.concatenate([[0], np.cumsum(lens[newest_first])]).astype(np.int64)
        hist = Histories(indptr=new_bounds, items=log.item_idx[order])
        pos = last_positions(hist, log.n_items)
        pos.sort_indices()
        return cls.from_arrays(pos.indptr, pos.indices, pos.data, last_ts[newest_first], log.n_items)

    @classmethod
    def from_arrays(cls, indptr: NDArray, indices: NDArray, last_pos: NDArray, last_ts: NDArray,
                    n_items: int) -> SessionIndex:
        """Rebuild from saved arrays (``x.indptr``, ``x.indices``, ``last_pos``, ``last_ts``)."""
        n_s = len(indptr) - 1
        last_pos = np.asarray(last_pos, dtype=np.float32)
        x = sp.csr_array((np.ones(len(indices), dtype=np.float32), indices.astype(np.int32),
                          indptr.astype(np.int64)), shape=(n_s, n_items))
        xt_pos = sp.csr_array((last_pos, x.indices, x.indptr), shape=(n_s, n_items)).T.tocsr()
        xt_pos.sort_indices()
        xt = sp.csr_array((np.ones(xt_pos.nnz, dtype=np.float32), xt_pos.indices, xt_pos.indptr),
                          shape=(n_items, n_s))
        return cls(x=x, last_pos=last_pos, last_ts=np.asarray(last_ts, dtype=np.float64), xt=xt,
                   xt_last_pos=xt_pos.data.astype(np.float32))


def check_histories(histories: Histories, n_items: int, model: str) -> None:
    """Raise ValueError (naming the model) if a history holds an index outside ``[0, n_items)``."""
    it = histories.items
    if len(it) and (it.min() < 0 or it.max() >= n_items):
        raise ValueError(f"{model}.recommend: item indices must lie in [0, {n_items}); got range "
                         f"[{it.min()}, {it.max()}]")


def history_matrix(histories: Histories, n_items: int, values: NDArray[np.floating] | None = None,
                   *, reduce: str = "sum") -> sp.csr_array:
    """Histories as a sparse (n_queries, n_items) matrix.

    Parameters
    ----------
    histories : Histories
    n_items : int
    values : ndarray of shape (nnz,), optional
        Value of each history position (default 1).
    reduce : {"sum", "last", "max"}
        How repeated items of one history combine: add up, keep the newest position's value,
        or keep the largest.
    """
    n_q = histories.n_queries
    rows = np.repeat(np.arange(n_q, dtype=np.int64), np.diff(histories.indptr))
    cols = histories.items.astype(np.int64)
    vals = np.ones(len(cols), dtype=np.float32) if values is None else np.asarray(values, dtype=np.float32)
    if reduce in ("last", "max") and len(cols):
        key = rows * n_items + cols
        if reduce == "last":
            rev = np.arange(len(key))[::-1]
            _, first_rev = np.unique(key[rev], return_index=True)
            keep = rev[first_rev]
        else:
            order = np.lexsort((-vals, key))
            _, first = np.unique(key[order], return_index=True)
            keep = order[first]
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    m = sp.csr_array((vals, (rows, cols)), shape=(n_q, n_items))
    m.sum_duplicates()
    return m


def last_positions(histories: Histories, n_items: int) -> sp.csr_array:
    """(n_queries, n_items) matrix of each item's newest 1-based position in its history (0 = absent)."""
    lens = np.diff(histories.indptr)
    pos = np.arange(len(histories.items)) - np.repeat(histories.indptr[:-1], lens) + 1
    return history_matrix(histories, n_items, pos.astype(np.float32), reduce="last")


def mask_seen(scores: NDArray[np.floating], histories: Histories) -> None:
    """Set ``scores[q, i] = -inf`` in place for every item ``i`` in history ``q``."""
    rows = np.repeat(np.arange(histories.n_queries), np.diff(histories.indptr))
    scores[rows, histories.items] = -np.inf
