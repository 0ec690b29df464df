"""Training examples for the EMDE network, cut from an interaction log.

Two objectives:

- ``next`` (session recommendation): every prefix of every session predicts the item
  that follows it (the prefix is capped at its newest ``max_prefix`` events);
- ``future`` (user top-N): every history is cut at ``n_cuts`` random points; the events
  before a cut predict the (uniformly weighted) events after it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.base import Histories, InteractionLog

__all__ = ["next_item_examples", "future_examples"]


def _prefixes(bounds: NDArray[np.int64], starts: NDArray[np.int64], cuts: NDArray[np.int64],
              log: InteractionLog) -> Histories:
    """Histories ``log[starts[j]:cuts[j]]`` (absolute event positions)."""
    lens = cuts - starts
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    pos = np.repeat(starts - indptr[:-1], lens) + np.arange(indptr[-1])
    et = None if log.event_type is None else log.event_type[pos]
    return Histories(indptr=indptr, items=log.item_idx[pos], ts=log.ts[pos], event_type=et)


def next_item_examples(log: InteractionLog, max_prefix: int = 50) -> tuple[Histories, NDArray[np.int32]]:
    """Every (prefix, next item) pair of every session.

    Parameters
    ----------
    log : InteractionLog
        Sorted by (session, ts).
    max_prefix : int, default 50
        Keep only the newest ``max_prefix`` events of a prefix.

    Returns
    -------
    (prefixes, next_items) : Histories with ``sum(len - 1)`` queries and int32 array of
        the item that follows each.
    """
    bounds = log.session_bounds()
    lens = np.diff(bounds)
    n_pairs = np.maximum(lens - 1, 0)
    sess = np.repeat(np.arange(len(lens)), n_pairs)
    first_pair = np.concatenate([[0], np.cumsum(n_pairs)])[:-1]
    t = np.arange(n_pairs.sum()) - np.repeat(first_pair, n_pairs) + 1  # prefix length
    cuts = bounds[sess] + t
    starts = np.maximum(bounds[sess], cuts - max_prefix)
    return _prefixes(bounds, starts, cuts, log), log.item_idx[cuts].astype(np.int32)


def future_examples(log: InteractionLog, *, n_cuts: int = 4, max_history: int = 200, horizon: int = 50,
                    random_state: int | np.random.Generator | None = None
                    ) -> tuple[Histories, sp.csr_array]:
    """Cut every history at random points: the past predicts the future.

    Parameters
    ----------
    log : InteractionLog
        Sorted by (session, ts); a "session" is a user history here.
    n_cuts : int, default 4
        Cuts per history (histories shorter than 2 events give none).
    max_history : int, default 200
        Keep only the newest ``max_history`` events before a cut.
    horizon : int, default 50
        Target = at most this many events after the cut.
    random_state : int, Generator or None

    Returns
    -------
    (histories, targets) : Histories and csr_array of shape (n_examples, n_items), rows
        summing to 1.
    """
    rng = np.random.default_rng(random_state)
    bounds = log.session_bounds()
    lens = np.diff(bounds)
    users = np.repeat(np.flatnonzero(lens >= 2), n_cuts)
    cut_len = (rng.random(len(users)) * (lens[users] - 1)).astype(np.int64) + 1  # in [1, len-1]
    cuts = bounds[users] + cut_len
    starts = np.maximum(bounds[users], cuts - max_history)
    hist = _prefixes(bounds, starts, cuts, log)
    ends = np.minimum(bounds[users + 1], cuts + horizon)
    tlen = ends - cuts
    rows = np.repeat(np.arange(len(users)), tlen)
    pos = np.repeat(cuts - np.concatenate([[0], np.cumsum(tlen)])[:-1], tlen) + np.arange(tlen.sum())
    w = np.repeat(1.0 / np.maximum(tlen, 1), tlen)
    targets = sp.coo_array((w.astype(np.float32), (rows, log.item_idx[pos])),
                           shape=(len(users), log.n_items)).tocsr()
    targets.sum_duplicates()
    return hist, targets
