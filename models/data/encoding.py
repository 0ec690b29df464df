"""Turning raw (session id, item id, time) columns into dense indices: the train log and test sessions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from models.base import Histories, InteractionLog
from models.data.task import NextItemTask, expand_sessions

__all__ = ["Dataset", "encode_train", "encode_test", "lookup_items", "first_appearance_codes"]


@dataclass(frozen=True)
class Dataset:
    """A train log plus the next-item test task cut from held-out sessions.

    Attributes
    ----------
    name : str
        Short name for reports (the directory name).
    train : InteractionLog
        Training events; ``train.item_ids`` maps item index -> shop id. The catalogue is the
        set of train items (test items not in train are dropped, as session-rec does).
    test : NextItemTask
        Queries to evaluate.
    exclude_seen : bool
        True for user-history data (MovieLens): recommending an item the user already rated
        is pointless, so the evaluation passes ``exclude_seen=True``.
    n_dropped_test : int
        Test events (or pairs) dropped because their item never occurs in train.
    cleaning : object, optional
        What a cleaning step did to the raw log (Online Retail: ``retail_cleaning.CleaningReport``).
    """

    name: str
    train: InteractionLog
    test: NextItemTask
    exclude_seen: bool = False
    n_dropped_test: int = 0
    cleaning: object | None = None


def first_appearance_codes(keys: NDArray) -> tuple[NDArray[np.int32], NDArray]:
    """Dense codes 0..n-1 numbered in order of first appearance.

    Parameters
    ----------
    keys : ndarray of shape (n,)
        Any sortable keys (str or int).

    Returns
    -------
    (codes, uniques) : int32 array of shape (n,) and the distinct keys in code order.
    """
    uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    return rank[inv.reshape(-1)], uniq[order]


def encode_train(session_keys: NDArray, item_keys: NDArray, ts: NDArray[np.float64],
                 user_keys: NDArray | None = None) -> tuple[InteractionLog, tuple[str, ...]]:
    """Build the training log: events sorted by (session, ts), dense item and session codes.

    Parameters
    ----------
    session_keys, item_keys : ndarray of shape (n_events,)
        Raw ids (strings; ints are turned into their decimal strings by the loaders).
    ts : ndarray of shape (n_events,), float64
        Epoch seconds (or a monotone pseudo-time when the data has none).
    user_keys : ndarray of shape (n_events,), optional
        Raw user ids; ``""`` means unknown user.

    Returns
    -------
    (log, session_ids) : the InteractionLog (``item_ids`` set) and the id of each session code.

    Raises
    ------
    ValueError
        If the columns differ in length or the log is empty.
    """
    n = len(item_keys)
    if len(session_keys) != n or len(ts) != n:
        raise ValueError(f"session, item and time columns must have one length; got "
                         f"{len(session_keys)}, {n}, {len(ts)}")
    if n == 0:
        raise ValueError("the training data holds no events")
    s_code, s_ids = first_appearance_codes(np.asarray(session_keys))
    i_code, i_ids = first_appearance_codes(np.asarray(item_keys))
    ts = np.asarray(ts, dtype=np.float64)
    order = np.lexsort((ts, s_code))
    user_idx = None
    if user_keys is not None:
        u_code, _ = first_appearance_codes(np.asarray(user_keys)[order])
        user_idx = u_code
    log = InteractionLog(
        session_idx=s_code[order], item_idx=i_code[order], ts=ts[order], n_items=len(i_ids),
        user_idx=user_idx, item_ids=tuple(str(x) for x in i_ids),
    )
    return log, tuple(str(x) for x in s_ids)


def lookup_items(item_ids: tuple[str, ...], keys: NDArray) -> NDArray[np.int32]:
    """Train index of each key, ``-1`` for keys not in the catalogue.

    Parameters
    ----------
    item_ids : tuple of str
        The catalogue (``InteractionLog.item_ids``).
    keys : ndarray of shape (n,), str
        Ids to look up.
    """
    catalogue = np.asarray(item_ids)
    order = np.argsort(catalogue, kind="stable")
    sorted_ids = catalogue[order]
    keys = np.asarray(keys).astype(sorted_ids.dtype if len(sorted_ids) else str)
    pos = np.searchsorted(sorted_ids, keys)
    pos_c = np.minimum(pos, max(len(sorted_ids) - 1, 0))
    found = (pos < len(sorted_ids)) & (sorted_ids[pos_c] == keys) if len(sorted_ids) else np.zeros(len(keys), bool)
    return np.where(found, order[pos_c], -1).astype(np.int32)


def encode_test(item_ids: tuple[str, ...], session_keys: NDArray, item_keys: NDArray,
                ts: NDArray[np.float64]) -> tuple[NextItemTask, int]:
    """Test sessions in train indices, expanded to every position (session-rec's protocol).

    Events whose item is not in train are dropped, then sessions shorter than 2 are dropped
    (session-rec ``evaluation.loader.prepare_data_session``). Sessions are ordered by id as
    session-rec sorts them (numerically when every id is an integer), events by time.

    Returns
    -------
    (task, n_dropped) : the expanded task and the number of test events dropped for unknown items.
    """
    idx = lookup_items(item_ids, item_keys)
    keep = idx >= 0
    n_dropped = int((~keep).sum())
    s_keys = np.asarray(session_keys)[keep]
    s_code, s_ids = _sorted_codes(s_keys)
    ts = np.asarray(ts, dtype=np.float64)[keep]
    order = np.lexsort((ts, s_code))
    counts = np.bincount(s_code, minlength=len(s_ids))
    long = counts >= 2
    ev_keep = long[s_code[order]]
    order = order[ev_keep]
    remap = np.cumsum(long) - 1
    codes = remap[s_code[order]]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=int(long.sum())))]).astype(np.int64)
    sessions = Histories(indptr=indptr, items=idx[keep][order], ts=ts[order])
    return expand_sessions(sessions, tuple(str(x) for x in s_ids[long])), n_dropped


def _sorted_codes(keys: NDArray) -> tuple[NDArray[np.int64], NDArray]:
    """Codes of keys in sorted id order, numeric order when every key is an integer string."""
    uniq, inv = np.unique(keys, return_inverse=True)
    try:
        num = np.array([int(x) for x in uniq], dtype=np.int64)
    except ValueError:
        return inv.reshape(-1).astype(np.int64), uniq
    order = np.argsort(num, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[inv.reshape(-1)], uniq[order]
