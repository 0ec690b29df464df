"""Validation splits carved from the training log, for tuning without test: the last sessions
(next item, :func:`holdout_sessions`) or the last events of every user (user top-N,
:func:`holdout_user_futures`)."""

from __future__ import annotations

import numpy as np

from models.base import Histories, InteractionLog
from models.data.encoding import Dataset
from models.data.task import NextItemTask, expand_sessions, futures_task, newest_share

__all__ = ["validation_split", "holdout_sessions", "holdout_user_futures"]

_DAY_S = 86_400.0


def validation_split(data: Dataset, *, days: float | None = None, frac: float = 0.1) -> Dataset:
    """Split ``data.train`` in time: the latest sessions become a next-item validation task.

    Sessions are ordered by their last event. With ``days``, sessions ending in the last
    ``days`` days of train are held out (session-rec's ``train_tr``/``train_valid``); otherwise
    the last ``frac`` of sessions. Held-out items unseen in the remaining train are dropped and
    sessions then shorter than 2 removed. The item index space (``n_items``, ``item_ids``) is
    kept, so a model tuned here indexes items like one trained on the full log. The test set
    is never touched.

    Parameters
    ----------
    data : Dataset
        A loaded dataset; only ``data.train`` is used.
    days : float, optional
        Length of the validation period in days (needs real timestamps).
    frac : float
        Fraction of sessions held out when ``days`` is None, in (0, 1).

    Returns
    -------
    Dataset named ``<name>/valid`` with the shortened train log and the validation task.

    Raises
    ------
    ValueError
        If ``frac`` is outside (0, 1) or the split leaves train or validation empty.
    """
    train, task, n_dropped = holdout_sessions(data.train, days=days, frac=frac, name=data.name)
    return Dataset(name=f"{data.name}/valid", train=train, test=task, exclude_seen=data.exclude_seen,
                   n_dropped_test=n_dropped)


def holdout_sessions(log: InteractionLog, *, days: float | None = None, frac: float = 0.1,
                     name: str = "log") -> tuple[InteractionLog, NextItemTask, int]:
    """:func:`validation_split` on a bare log: ``(shortened log, next-item task, items dropped)``.

    Models that fit something on held-out sessions of their own training log (the learned
    fusion of :mod:`models.hybrid`) use this, so they hold out exactly as the tuning protocol does.

    Raises
    ------
    ValueError
        If ``frac`` is outside (0, 1) or the split leaves train or validation empty.
    """
    if days is None and not 0.0 < frac < 1.0:
        raise ValueError(f"frac must be in (0, 1); got {frac}")
    bounds = log.session_bounds()
    n_s = log.n_sessions
    last_ts = log.ts[np.maximum(bounds[1:] - 1, 0)]
    if days is not None:
        is_valid = last_ts > last_ts.max() - days * _DAY_S
    else:
        order = np.lexsort((np.arange(n_s), last_ts))
        is_valid = np.zeros(n_s, dtype=bool)
        is_valid[order[n_s - max(1, int(round(n_s * frac))):]] = True
    if is_valid.all() or not is_valid.any():
        raise ValueError(f"validation split of {name} leaves train or validation empty "
                         f"({int(is_valid.sum())} of {n_s} sessions held out)")
    ev_valid = is_valid[log.session_idx]
    remap = np.cumsum(~is_valid) - 1
    train = InteractionLog(
        session_idx=remap[log.session_idx[~ev_valid]].astype(np.int32), item_idx=log.item_idx[~ev_valid],
        ts=log.ts[~ev_valid], n_items=log.n_items,
        event_type=None if log.event_type is None else log.event_type[~ev_valid],
        event_types=log.event_types,
        user_idx=None if log.user_idx is None else log.user_idx[~ev_valid], item_ids=log.item_ids)
    seen = np.zeros(log.n_items, dtype=bool)
    seen[train.item_idx] = True
    v_sess = log.session_idx[ev_valid]
    v_items = log.item_idx[ev_valid]
    ok = seen[v_items]
    v_sess, v_items, v_ts = v_sess[ok], v_items[ok], log.ts[ev_valid][ok]
    codes, inv = np.unique(v_sess, return_inverse=True)
    counts = np.bincount(inv, minlength=len(codes))
    long = counts >= 2
    keep = long[inv]
    remap_v = np.cumsum(long) - 1
    inv_k = remap_v[inv[keep]]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(inv_k, minlength=int(long.sum())))]).astype(np.int64)
    sessions = Histories(indptr=indptr, items=v_items[keep], ts=v_ts[keep])
    task = expand_sessions(sessions, tuple(str(c) for c in codes[long]))
    return train, task, int((~ok).sum())


def holdout_user_futures(log: InteractionLog, *, frac: float = 0.2, name: str = "log"
                         ) -> tuple[InteractionLog, NextItemTask]:
    """Hold out the newest ``frac`` of every history (user) of ``log``: the user top-N protocol.

    The same cut as :func:`models.data.load_movielens` makes for its test set: each history
    (a row of ``log``, oldest first) with at least 2 events keeps its first events for training
    and its last ``max(1, floor(frac * length))`` as the future to predict. Held-out events of
    items the shortened log never saw are dropped. The task has one query per history that kept
    a future: the prefix is its training part, the *rest* (targets of P@k/R@k) its future.

    Parameters
    ----------
    log : InteractionLog
        Histories sorted by row then time (one row per user for user top-N data).
    frac : float
        Fraction of each history held out, in (0, 1).
    name : str
        Name for error messages.

    Returns
    -------
    (train, task) : the shortened log (same rows, item index space kept) and the task.

    Raises
    ------
    ValueError
        If ``frac`` is outside (0, 1) or no history keeps both a training part and a future.
    """
    if not 0.0 < frac < 1.0:
        raise ValueError(f"frac must be in (0, 1); got {frac}")
    is_future = newest_share(log.session_idx, frac)
    keep = ~is_future
    train = InteractionLog(
        session_idx=log.session_idx[keep], item_idx=log.item_idx[keep], ts=log.ts[keep], n_items=log.n_items,
        event_type=None if log.event_type is None else log.event_type[keep], event_types=log.event_types,
        user_idx=None if log.user_idx is None else log.user_idx[keep], item_ids=log.item_ids)
    seen = np.zeros(log.n_items, dtype=bool)
    seen[train.item_idx] = True
    items = np.where(seen[log.item_idx], log.item_idx, -1)
    task = futures_task(log.session_idx, items, log.ts, is_future, tuple(str(r) for r in range(log.n_sessions)))
    if not task.n_queries:
        raise ValueError(f"user holdout of {name}: no history keeps both training events and a future")
    return train, task
