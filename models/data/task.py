"""The next-item evaluation task: test sessions and the (prefix, next, rest) queries cut from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from models.base import Histories

__all__ = ["NextItemTask", "expand_sessions", "pairs_task", "newest_share", "futures_task"]


@dataclass(frozen=True)
class NextItemTask:
    """Queries of a next-item evaluation, stored as offsets into test sessions.

    Query ``q`` shows the first ``query_len[q]`` items of session ``query_session[q]``; the
    target is the item right after that prefix and the *rest* is every item from the target
    to the end of the session (duplicates kept), as in session-rec's ``evaluation_multiple``.
    For SR-GNN pairs each "session" is ``prefix + [next]`` and has exactly one query.

    Attributes
    ----------
    sessions : Histories
        Test sessions in train item indices (unknown items already dropped), oldest first.
    query_session : ndarray of shape (n_queries,), int64
        Row of ``sessions`` each query comes from.
    query_len : ndarray of shape (n_queries,), int64
        Prefix length (>= 1) of each query; always < the session length.
    session_ids : tuple of str
        Original id of each test session (for reports and the reference check).
    """

    sessions: Histories
    query_session: NDArray[np.int64]
    query_len: NDArray[np.int64]
    session_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.query_session) != len(self.query_len):
            raise ValueError(f"query_session and query_len must have one length; got "
                             f"{len(self.query_session)} and {len(self.query_len)}")
        if len(self.query_len):
            s_len = np.diff(self.sessions.indptr)[self.query_session]
            if self.query_len.min() < 1 or np.any(self.query_len >= s_len):
                raise ValueError("query_len must lie in [1, session length - 1] for every query")

    @property
    def n_queries(self) -> int:
        return int(len(self.query_len))

    def subset(self, sel: NDArray[np.integer]) -> NextItemTask:
        """The task restricted to queries ``sel`` (indices into the queries, kept in that order)."""
        sel = np.asarray(sel, dtype=np.int64)
        return NextItemTask(self.sessions, self.query_session[sel], self.query_len[sel], self.session_ids)

    def prefixes(self, sel: NDArray[np.integer] | slice = slice(None)) -> Histories:
        """Histories of the prefixes of queries ``sel`` (items and, when known, timestamps)."""
        start = self.sessions.indptr[self.query_session[sel]]
        lens = self.query_len[sel]
        idx = _ranges(start, lens)
        indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        ts = None if self.sessions.ts is None else self.sessions.ts[idx]
        return Histories(indptr=indptr, items=self.sessions.items[idx], ts=ts)

    def next_items(self, sel: NDArray[np.integer] | slice = slice(None)) -> NDArray[np.int32]:
        """Target item of each query in ``sel``, shape (len(sel),), int32."""
        start = self.sessions.indptr[self.query_session[sel]]
        return self.sessions.items[start + self.query_len[sel]]

    def rest(self, sel: NDArray[np.integer] | slice = slice(None)) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """Remaining items (target onwards, duplicates kept) of each query, as CSR ``(indptr, items)``."""
        qs = self.query_session[sel]
        start = self.sessions.indptr[qs] + self.query_len[sel]
        lens = self.sessions.indptr[qs + 1] - start
        indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        return indptr, self.sessions.items[_ranges(start, lens)]


def expand_sessions(sessions: Histories, session_ids: tuple[str, ...] = ()) -> NextItemTask:
    """Every position of every session as a query (session-rec's next-item protocol).

    A session of length ``L`` yields queries with prefix lengths ``1 .. L-1``; sessions shorter
    than 2 yield none.

    Parameters
    ----------
    sessions : Histories
        Test sessions, items in train indices.
    session_ids : tuple of str
        Original session ids, one per row of ``sessions``.

    Returns
    -------
    NextItemTask with ``sum(max(L - 1, 0))`` queries, ordered by session then position.
    """
    lens = np.diff(sessions.indptr)
    n_q = np.maximum(lens - 1, 0)
    query_session = np.repeat(np.arange(len(lens), dtype=np.int64), n_q)
    query_len = _ranges(np.ones(len(lens), dtype=np.int64), n_q)
    return NextItemTask(sessions, query_session, query_len, session_ids)


def pairs_task(prefixes: list[list[int]], targets: list[int], ts: list[list[float]] | None = None,
               session_ids: tuple[str, ...] = ()) -> NextItemTask:
    """A task of given (prefix, next) pairs, e.g. SR-GNN's ``test.txt``; one query per pair.

    Parameters
    ----------
    prefixes : list of list of int
        Item indices of each prefix (non-empty).
    targets : list of int
        The next item of each prefix.
    ts : list of list of float, optional
        Epoch seconds of ``prefix + [next]`` per pair.

    Raises
    ------
    ValueError
        If the lists differ in length or a prefix is empty.
    """
    if len(prefixes) != len(targets):
        raise ValueError(f"prefixes and targets must have one length; got {len(prefixes)} and {len(targets)}")
    if any(len(p) == 0 for p in prefixes):
        raise ValueError("every prefix must hold at least one item")
    seqs = [list(p) + [t] for p, t in zip(prefixes, targets, strict=True)]
    sessions = Histories.from_lists(seqs, ts)
    n = len(seqs)
    return NextItemTask(sessions, np.arange(n, dtype=np.int64),
                        np.array([len(p) for p in prefixes], dtype=np.int64), session_ids)


def newest_share(rows: NDArray[np.integer], frac: float) -> NDArray[np.bool_]:
    """Which events are the newest ``frac`` of their history: the user top-N holdout cut.

    Parameters
    ----------
    rows : ndarray of shape (n_events,), integer
        History (user) code of each event, sorted, each history's events oldest first.
    frac : float
        Share held out, in (0, 1): ``max(1, floor(frac * length))`` events of every history
        with at least 2 events; none of a one-event history.

    Returns
    -------
    ndarray of shape (n_events,), bool: True for held-out (future) events.
    """
    rows = np.asarray(rows, dtype=np.int64)
    counts = np.bincount(rows) if len(rows) else np.zeros(0, np.int64)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    n_future = np.where(counts >= 2, np.maximum(1, np.floor(counts * frac)), 0).astype(np.int64)
    pos = np.arange(len(rows)) - start[rows]
    return pos >= (counts - n_future)[rows]


def futures_task(rows: NDArray[np.integer], items: NDArray[np.integer], ts: NDArray[np.floating],
                 is_future: NDArray[np.bool_], row_ids: tuple[str, ...]) -> NextItemTask:
    """The user top-N task: each history's training part is the prefix, its future the *rest*.

    Parameters
    ----------
    rows, items, ts : ndarrays of shape (n_events,)
        History code (sorted, as in :func:`newest_share`), train item index (``-1`` for an item
        the training log never saw: such future events are dropped) and time of each event.
    is_future : ndarray of shape (n_events,), bool
        The held-out events (:func:`newest_share`).
    row_ids : tuple of str
        Id of every history code (``len(row_ids)`` histories).

    Returns
    -------
    NextItemTask with one query per history that kept both training events and a future.
    """
    keep = np.asarray(items) >= 0
    r, fut = np.asarray(rows, dtype=np.int64)[keep], np.asarray(is_future)[keep]
    n_rows = len(row_ids)
    lens = np.bincount(r, minlength=n_rows)
    n_train = np.bincount(r[~fut], minlength=n_rows)
    queries = np.flatnonzero((n_train >= 1) & (lens > n_train)).astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    histories = Histories(indptr=indptr, items=np.asarray(items)[keep].astype(np.int32), ts=np.asarray(ts)[keep])
    return NextItemTask(histories, queries, n_train[queries].astype(np.int64), row_ids)


def _ranges(start: NDArray[np.int64], lens: NDArray[np.int64]) -> NDArray[np.int64]:
    """Concatenation of ``arange(s, s + l)`` for each pair, without a Python loop."""
    lens = np.asarray(lens, dtype=np.int64)
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(np.cumsum(lens) - lens, lens)
    return np.repeat(np.asarray(start, dtype=np.int64), lens) + (np.arange(total, dtype=np.int64) - offsets)
