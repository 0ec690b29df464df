"""EMDE fused with session kNN and GRU4Rec: a learned ranker over their pooled candidates.

The seed paper (Dąbrowski et al., "An efficient manifold density estimator for all
recommendation systems", 2021) ends its session experiments with "in practice the techniques are
often mixed". :class:`SessionFusion` mixes them at the score level, with weights that are
*learned*, not guessed:

1. hold out the latest sessions of the training log (:func:`models.data.validation.holdout_sessions`,
   the same split the tuning protocol uses);
2. fit EMDE and the list models (session kNN: V-STAN and STAN; and GRU4Rec, by default) on the rest;
3. pool each held-out prefix's candidates: EMDE's top ``n_candidates``, each list model's top
   ``n_candidates`` and the prefix's own items (repeat consumption);
4. describe each (prefix, candidate) pair (:func:`feature_names`) and fit a LambdaMART ranker
   (LightGBM, ``lambdarank``) whose target is the next item;
5. refit the list models on the whole log (kNN: cheap, an index; GRU4Rec: a second fit, same
   parameters and seed) and, by default, EMDE too, so the served models have seen the newest
   sessions; the ranker reads
   the same kind of scores it was fitted on. The item statistics the features read (popularity,
   recent popularity, how long ago an item was first and last seen, transitions, sequential
   rules) are recomputed on the whole log as well.

``recommend`` repeats 3 and 4 for each query batch and returns the ranker's top ``n``. Everything
is deterministic for a fixed ``random_state``: EMDE's seed, the sampled prefixes, and LightGBM's
``deterministic`` mode with a fixed thread count.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.background_fit import ModelsFit, fit_models
from models.base import Histories, InteractionLog
from models.data.task import NextItemTask
from models.emde.readout import BucketReadout
from models.errors import ModelFormatError, NotFittedError
from models.persistence import construct_saved, load_model_dir, save_model_dir
from models.progress import progress_bar
from models.ragged_topk import top_per_row
from models.session_index import check_histories
from models.sparse_pairs import history_pair_sums, pair_values
from models.topk import SCORE_CELLS
from models.tree_ensemble import TreeEnsemble

logger = logging.getLogger(__name__)

__all__ = ["SessionFusion", "DEFAULT_LISTS", "EMDE_EPOCH_EXAMPLES", "BASE_FEATURES", "KNN_FEATURES", "REPEAT_FEATURES", "feature_names", "candidate_features"]

BASE_FEATURES: tuple[str, ...] = (
    "emde_log_prob",  # EMDE mean row log-probability minus the query's best (<= 0)
    "emde_rank",  # rank in EMDE's list; n_candidates when not in it
    "emde_best_log_prob",  # per query: how sure EMDE is
    "history_count",  # times the candidate occurs in the query history (repeat consumption)
    "history_age",  # positions since its newest occurrence (0 = the last item); 99 when absent
    "log_popularity",  # log(1 + training occurrences)
    "transition_from_last",  # P(candidate follows the last item) in training sessions
    "transition_to_last",  # P(last item follows the candidate)
    "history_length",
    "recent_popularity",  # log(1 + occurrences among the newest 1 % of training events): what is trending
    "recent_popularity_10",  # the same over the newest 10 %
    "events_since_last_seen",  # log(1 + training events after the candidate's newest occurrence)
    "events_since_first_seen",  # log(1 + training events after its first occurrence): how new it is
    "transition_from_prev",  # P(candidate follows the item before the last one)
    "sequential_rules",  # sequential rules from the history's newest items, decayed by age (see _ItemStats)
    "cooc_last",  # cosine of the candidate and the last item over training sessions (co-occurrence)
    "cooc_history",  # that cosine summed over the history's newest items, decayed as sequential_rules
)
"""Columns of :func:`candidate_features` before the per-kNN-model columns."""

KNN_FEATURES: tuple[str, ...] = ("score", "rank", "best_score")
"""Per session-kNN model: its score / its best score (0 when not listed), its rank (n_candidates
when not listed), and its best score (per query: how close the nearest neighbours are)."""

REPEAT_FEATURES: tuple[str, ...] = (
    "item_repeat_rate",  # (repeats + 1) / (occurrences + 2) of the item in training sessions
    "session_distinct_ratio",  # per query: distinct items / history length (1 when nothing repeats)
)
"""Repeat consumption beyond the candidate's own count and age: how often shoppers come back to
this item within a session, and how much this session revisits. The last columns, after the
per-list ones (the order they were validated in, issue 11 session 10)."""

MONOTONE_BASE: tuple[int, ...] = (1, -1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
MONOTONE_KNN: tuple[int, ...] = (1, -1, 0)
MONOTONE_REPEAT: tuple[int, ...] = (0, 0)
"""The ranker's score may only rise with a model's score and fall with its rank (LightGBM
``monotone_constraints``): what a ranker fitted on a small or unusual shop may never unlearn."""


DEFAULT_LISTS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "vstan": {}, "stan": {}, "gru4rec": {"epochs": 10, "epoch_examples": 1_500_000, "n_models": 3,
                                         "ensemble_examples": 3_000_000}})
"""The fusion's list models by default: V-STAN, STAN and GRU4Rec (10 epochs on a small log, the whole
epochs that cover ~1.5 M examples on a large one). GRU4Rec's list, refitted on the whole log, added
.0061 HR@20 on rsc15 and .0058 on yoochoose validation over the two kNN lists alone (bench/RESULTS.md,
issue 11 session 24): a GRU ranks items new to the session that neighbouring sessions miss. On a small
log (up to 100k examples, 3 M example passes in all) the GRU list is an ensemble of 3 networks from 3
seeds: +.0069 HR@20 on rsc15 validation, +.0077 on its test set (session 34); logs from 150k examples
on (yoochoose, retailrocket) get one network, so their training time is unchanged."""

EMDE_EPOCH_EXAMPLES = 1_000_000
"""The fusion's EMDE trains ``min(epochs, ceil(1 M / examples))`` whole epochs (``EMDE(epoch_examples=...)``):
3 on rsc15, yoochoose and UCI, 2 on retailrocket's 507k and 560k training prefixes. On retailrocket validation
2 epochs gave the fusion .6118 / .3502 HR@20 / MRR@20 against .6120 / .3505 with 3, and cut ~2 x 70 s of its
training (bench/RESULTS.md, issue 11 session 27)."""

RULE_LIST = "rules"
"""Name of the sequential-rule candidate list among the ranked lists (``SessionFusion(rule_candidates=...)``)."""


def feature_names(knn_names: list[str], rule_candidates: bool = False) -> list[str]:
    """All feature columns for the given kNN models (and the sequential-rule list, if pooled), in order."""
    lists = list(knn_names) + ([RULE_LIST] if rule_candidates else [])
    return list(BASE_FEATURES) + [f"{m}_{f}" for m in lists for f in KNN_FEATURES] + list(REPEAT_FEATURES)


def _n_features(n_lists: int) -> int:
    return len(BASE_FEATURES) + len(KNN_FEATURES) * n_lists + len(REPEAT_FEATURES)


_ABSENT_AGE = 99.0


class _ItemStats:
    """What the ranker's item features read from a training log: popularity (all time and recent),
    each item's first and newest occurrence, first-order transitions, sequential rules and the
    cosine of items' session co-occurrence.

    Sequential rules (Ludewig et al. 2021, session-rec's ``SR``): item ``b`` following ``a`` at
    distance ``d <= RULE_WINDOW`` in a session adds ``1/d`` to rule ``a -> b``; each row is
    normalised to sum 1. A history scores a candidate by the rules of its ``RULE_HISTORY`` newest
    items, the newest weighted 1 and each older one ``RULE_DECAY`` times less.

    Co-occurrence (item-kNN's similarity, Sarwar et al. 2001, on sessions as baskets): with ``B``
    the binary (sessions, items) matrix, ``cooc = D^-1/2 BᵀB D^-1/2`` (``D`` its diagonal), the
    cosine of two items' session sets. Its size is bounded by the item pairs that share a session.

    Repeat rate: ``(r + 1) / (o + 2)`` with ``o`` the item's occurrences and ``r`` those that repeat
    it within a session (its occurrences after the first in each session): a smoothed share of
    visits that are returns (Ren et al. 2019, "RepeatNet", on why repeat consumption needs its own signal).
    """

    RULE_WINDOW = 5
    RULE_HISTORY = 10
    RULE_DECAY = 0.7
    RECENT_SHARES = (0.01, 0.1)

    def __init__(self, log_pop: NDArray[np.float32], transitions: sp.csr_array, recent: NDArray[np.float32],
                 since_seen: NDArray[np.float32], rules: sp.csr_array, cooc: sp.csr_array,
                 repeat_rate: NDArray[np.float32]) -> None:
        self.log_pop = log_pop
        self.repeat_rate = repeat_rate  # (n_items,) float32 in (0, 1)
        self.transitions = transitions
        self.out_degree = np.asarray(transitions.sum(axis=1)).ravel().astype(np.float32)
        self.recent = recent  # (len(RECENT_SHARES), n_items): log1p counts among the newest events
        self.since_seen = since_seen  # (2, n_items): log1p events since the newest / the first occurrence
        self.rules = rules  # (n_items, n_items), rows sum to 1 (or 0)
        self.cooc = cooc  # (n_items, n_items), float32 cosine; the diagonal is 1 for items seen
        for m in (self.transitions, self.rules, self.cooc):
            m.sum_duplicates()  # sorted rows, for the pair lookups (models.sparse_pairs); no-op when so already

    @classmethod
    def from_log(cls, log: InteractionLog) -> _ItemStats:
        n, m = log.n_items, log.n_events
        log_pop = np.log1p(np.bincount(log.item_idx, minlength=n)).astype(np.float32)
        same = log.session_idx[1:] == log.session_idx[:-1]
        src, dst = log.item_idx[:-1][same], log.item_idx[1:][same]
        t = sp.csr_array((np.ones(len(src), np.float32), (src, dst)), shape=(n, n))
        t.sum_duplicates()
        by_time = log.item_idx[np.argsort(log.ts, kind="stable")]
        recent = np.stack([np.log1p(np.bincount(by_time[m - max(1, int(m * share)):], minlength=n))
                           for share in cls.RECENT_SHARES]).astype(np.float32)
        newest = np.full(n, -1, np.int64)
        newest[by_time] = np.arange(m)  # the last write wins: each item's newest position
        first = np.full(n, m, np.int64)
        first[by_time[::-1]] = np.arange(m)[::-1]
        since_seen = np.log1p(np.stack([m - 1 - newest, m - 1 - first]).clip(0, m)).astype(np.float32)
        src_r, dst_r, w_r = [], [], []
        for d in range(1, cls.RULE_WINDOW + 1):
            ok = log.session_idx[d:] == log.session_idx[:-d]
            src_r.append(log.item_idx[:-d][ok])
            dst_r.append(log.item_idx[d:][ok])
            w_r.append(np.full(int(ok.sum()), 1.0 / d, np.float32))
        r = sp.csr_array((np.concatenate(w_r), (np.concatenate(src_r), np.concatenate(dst_r))), shape=(n, n))
        r.sum_duplicates()
        row_sum = np.asarray(r.sum(axis=1)).ravel()
        r = sp.csr_array(sp.diags_array(1.0 / np.maximum(row_sum, 1e-12)) @ r, dtype=np.float32)
        return cls(log_pop, t, recent, since_seen, r, cls._cooc_cosine(log), cls._repeat_rate(log))

    @staticmethod
    def _repeat_rate(log: InteractionLog) -> NDArray[np.float32]:
        n = log.n_items
        key = log.session_idx.astype(np.int64) * n + log.item_idx
        order = np.argsort(key, kind="stable")
        repeat = np.zeros(log.n_events, bool)
        repeat[order[1:]] = key[order][1:] == key[order][:-1]  # the item occurred earlier in its session
        occ = np.bincount(log.item_idx, minlength=n)
        return ((np.bincount(log.item_idx, weights=repeat, minlength=n) + 1.0) / (occ + 2.0)).astype(np.float32)

    @staticmethod
    def _cooc_cosine(log: InteractionLog) -> sp.csr_array:
        n_sessions = int(log.session_idx.max()) + 1 if log.n_events else 0
        b = sp.csr_array((np.ones(log.n_events, np.float32), (log.session_idx, log.item_idx)),
                         shape=(n_sessions, log.n_items))
        b.sum_duplicates()
        b.data[:] = 1.0
        c = sp.csr_array(b.T @ b)
        inv = sp.diags_array(1.0 / np.sqrt(np.maximum(c.diagonal(), 1.0)))
        c = sp.csr_array(inv @ c @ inv, dtype=np.float32)
        c.sort_indices()
        return c

    def _history_weights(self, histories: Histories) -> sp.csr_array:
        """(n_queries, n_items) float32: each query's ``RULE_HISTORY`` newest items, weighted by age."""
        lens = np.diff(histories.indptr)
        age = np.repeat(histories.indptr[1:], lens) - 1 - np.arange(len(histories.items))
        keep = age < self.RULE_HISTORY
        q = np.repeat(np.arange(len(lens), dtype=np.int64), lens)[keep]
        return sp.csr_array(((self.RULE_DECAY ** age[keep]).astype(np.float32), (q, histories.items[keep])),
                            shape=(len(lens), self.rules.shape[0]))

    def rule_scores(self, histories: Histories, rows: NDArray[np.int64], items: NDArray[np.int64]
                    ) -> NDArray[np.float32]:
        """Sequential-rule score of each (query row, item) pair, shape (len(rows),), float32."""
        return history_pair_sums(self.rules, self._history_weights(histories), rows, items)

    def cooc_scores(self, histories: Histories, rows: NDArray[np.int64], items: NDArray[np.int64]
                    ) -> NDArray[np.float32]:
        """Co-occurrence cosine summed over each query's newest items, decayed as :meth:`rule_scores`."""
        return history_pair_sums(self.cooc, self._history_weights(histories), rows, items)

    def rule_top(self, histories: Histories, k: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """The ``k`` items with the best sequential-rule scores per query, best first (ties: lower index).

        Returns ids (n_queries, k) int32 padded with -1 and scores (n_queries, k) float32 padded with 0;
        only items with a positive score are listed.
        """
        s = sp.csr_array(self._history_weights(histories) @ self.rules)
        s.sum_duplicates()
        q = histories.n_queries
        ids = np.full((q, k), -1, np.int32)
        scores = np.zeros((q, k), np.float32)
        rows = np.repeat(np.arange(q, dtype=np.int64), np.diff(s.indptr))
        pos = s.data > 0
        rows, cols, vals = rows[pos], s.indices[pos], s.data[pos]
        sel, rank = top_per_row(rows, [-vals, cols], k)
        ids[rows[sel], rank] = cols[sel]
        scores[rows[sel], rank] = vals[sel]
        return ids, scores


class _StageClock:
    """Logs how long each stage of a fit took (INFO), so a user sees where a long fit spends its time."""

    def __init__(self) -> None:
        self.t = time.perf_counter()

    def done(self, what: str) -> None:
        now = time.perf_counter()
        logger.info("fusion: %s in %.1f s", what, now - self.t)
        self.t = now


class _StagedBar:
    """A tqdm bar over queries whose chunks advance stage by stage (the stage under way is shown after the
    bar), so a pass of one or a few large chunks does not sit at 0 % until its end. Display only."""

    def __init__(self, total: int, desc: str | None, stages: list[str]) -> None:
        # no bar at all without a description: scoring calls (the stream, the API) pay nothing for it
        self.bar = None if desc is None else progress_bar(total=total, desc=desc, unit="prefix", mininterval=0.5)
        self.stages, self.size, self.shown, self.j = stages, 0, 0, 0

    def chunk(self, size: int) -> None:
        """A chunk of ``size`` queries begins with the first stage."""
        if self.bar is None:
            return
        self.size, self.shown, self.j = size, 0, 0
        self.bar.set_postfix_str(self.stages[0])

    def stage_done(self) -> None:
        """The chunk's stage under way is done: its share of the chunk's queries counts."""
        if self.bar is None:
            return
        self.j += 1
        upto = self.size * self.j // len(self.stages)
        self.bar.update(upto - self.shown)
        self.shown = upto
        self.bar.set_postfix_str(self.stages[self.j] if self.j < len(self.stages) else "", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _boosting_bar(n_rounds: int, desc: str) -> tuple[Any, Any]:
    """A tqdm bar over LightGBM's boosting rounds and the ``lgb.train`` callback that advances it (it only
    reads the round: the model is the same with or without it)."""
    bar = progress_bar(total=n_rounds, desc=desc, unit="tree", mininterval=0.5)
    bar.set_postfix_str("binning the features")

    def advance(env: Any) -> None:
        if env.iteration == env.begin_iteration:
            bar.set_postfix_str("", refresh=False)
        bar.update(1)

    return bar, advance


def _sorted_unique(keys: NDArray[np.int64]) -> NDArray[np.int64]:
    """``np.unique`` by one sort (numpy's hash-based unique is several times slower on int64 keys)."""
    keys = np.sort(keys)
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if len(keys) else keys


def candidate_features(histories: Histories, emde: BucketReadout,
                       knn_lists: list[tuple[NDArray[np.int32], NDArray[np.float32]]], stats: _ItemStats,
                       n_candidates: int, history_candidates: int | None = None
                       ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """Pool each query's candidates and describe every (query, candidate) pair.

    Parameters
    ----------
    histories : Histories
        ``q`` queries.
    emde : BucketReadout of shape (q, n_items)
        EMDE's readout of the queries (``EMDE.readout``): its item scores are the mean row
        log-probabilities.
    knn_lists : list of (ids, scores), each of shape (q, k_list)
        Ranked lists pooled with their features: the session-kNN models' (``recommend``, ``k_list =
        n_candidates``) and optionally the sequential rules' (:meth:`_ItemStats.rule_top`); padded
        with -1. An item absent from a list gets rank ``max(n_candidates, k_list)``.
    stats : _ItemStats
        Popularity and transitions of the log the models were fitted on.
    n_candidates : int
        Length of each model's list pooled.
    history_candidates : int, optional
        Pool only the items of the query's newest ``history_candidates`` positions from its own
        history (repeat consumption); None pools every history item. Items further back are
        still described (count, age) when a model lists them. A cap bounds the rows a long
        prefix (a large basket) gives the ranker.

    Returns
    -------
    (rows, items, X) : int64 (m,), int64 (m,), float32 (m, len(feature_names(knn))); the pairs
    sorted by query then item; columns as :func:`feature_names`.
    """
    q, n_items = emde.shape
    k = min(n_candidates, n_items)
    top, top_scores = emde.top(k)  # best first, ties by item index
    lens = np.diff(histories.indptr)
    h_rows = np.repeat(np.arange(q, dtype=np.int64), lens)
    listed = [top, *(ids for ids, _ in knn_lists)]
    ok = [ids.ravel() >= 0 for ids in listed]  # (q * k_list,) bool: the list's entries that are not padding
    list_keys = [np.repeat(np.arange(q, dtype=np.int64), ids.shape[1])[o] * n_items + ids.ravel()[o]
                 for ids, o in zip(listed, ok, strict=True)]
    age = (np.repeat(histories.indptr[1:], lens) - 1 - np.arange(len(histories.items))).astype(np.float32)
    h_pool = h_rows * n_items + histories.items
    if history_candidates is not None:
        h_pool = h_pool[age < history_candidates]
    keys = _sorted_unique(np.concatenate([*list_keys, h_pool]))
    at = [np.searchsorted(keys, lk) for lk in list_keys]  # where each listed (query, item) sits in the pool
    rows, items = keys // n_items, keys % n_items
    x = np.zeros((len(keys), _n_features(len(knn_lists))), np.float32)
    best = top_scores[:, 0]  # the query's maximum (-inf when no item has a finite score)
    x[:, 0] = emde.pairs(rows, items) - best[rows]
    x[:, 1] = float(n_candidates)
    x[at[0], 1] = np.tile(np.arange(k, dtype=np.float32), q)[ok[0]]
    x[:, 2] = best[rows]
    # repeat consumption: count and age of the candidate in the history
    h_keys, inv = np.unique(h_rows * n_items + histories.items.astype(np.int64), return_inverse=True)
    if len(h_keys):
        h_count = np.bincount(inv, minlength=len(h_keys)).astype(np.float32)
        h_age = np.full(len(h_keys), _ABSENT_AGE, np.float32)
        np.minimum.at(h_age, inv, age)
        pos = np.minimum(np.searchsorted(h_keys, keys), len(h_keys) - 1)
        in_hist = h_keys[pos] == keys
        x[:, 3] = np.where(in_hist, h_count[pos], 0.0)
        x[:, 4] = np.where(in_hist, h_age[pos], _ABSENT_AGE)
    else:
        x[:, 4] = _ABSENT_AGE
    x[:, 5] = stats.log_pop[items]
    has = lens > 0
    last = np.zeros(q, np.int64)
    last[has] = histories.items[histories.indptr[1:][has] - 1]
    lr = last[rows]
    t = stats.transitions
    x[:, 6] = np.where(has[rows], pair_values(t, lr, items) / np.maximum(stats.out_degree[lr], 1.0), 0.0)
    x[:, 7] = np.where(has[rows], pair_values(t, items, lr) / np.maximum(stats.out_degree[items], 1.0), 0.0)
    x[:, 8] = lens[rows]
    x[:, 9] = stats.recent[0][items]
    x[:, 10] = stats.recent[1][items]
    x[:, 11] = stats.since_seen[0][items]
    x[:, 12] = stats.since_seen[1][items]
    two = lens > 1
    prev = np.zeros(q, np.int64)
    prev[two] = histories.items[histories.indptr[1:][two] - 2]
    pr = prev[rows]
    x[:, 13] = np.where(two[rows], pair_values(t, pr, items) / np.maximum(stats.out_degree[pr], 1.0), 0.0)
    x[:, 14] = stats.rule_scores(histories, rows, items)
    x[:, 15] = np.where(has[rows], pair_values(stats.cooc, lr, items), 0.0)
    x[:, 16] = stats.cooc_scores(histories, rows, items)
    col = len(BASE_FEATURES)
    for (ids, scores), pos, o in zip(knn_lists, at[1:], ok[1:], strict=True):
        top_score = np.where(ids[:, 0] >= 0, scores[:, 0], 0.0).astype(np.float32)
        norm = np.where(ids >= 0, scores / np.maximum(top_score[:, None], 1e-12), 0.0)
        x[pos, col] = norm.ravel()[o]  # 0 for the pairs it does not list
        x[:, col + 1] = float(max(n_candidates, ids.shape[1]))
        x[pos, col + 1] = np.tile(np.arange(ids.shape[1], dtype=np.float32), q)[o]
        x[:, col + 2] = top_score[rows]
        col += len(KNN_FEATURES)
    x[:, col] = stats.repeat_rate[items]
    distinct = np.bincount(h_keys // n_items, minlength=q)  # h_keys: the (query, item) pairs of the histories
    x[:, col + 1] = (distinct / np.maximum(lens, 1))[rows]
    return rows, items, x


class SessionFusion:
    """EMDE and session kNN fused by a LambdaMART ranker fitted on held-out sessions.

    Parameters
    ----------
    emde : mapping, optional
        EMDE hyper-parameters; default: the registry's ``emde`` entry (the ranker learns the
        popularity correction itself from ``log_popularity``).
    knn : mapping of str to mapping, optional
        The list models: registered recommenders (session kNN, GRU4Rec, any model whose
        ``recommend`` scores are >= 0) and their hyper-parameters (over the registry's), in
        feature order; default :data:`DEFAULT_LISTS`.
    n_candidates : int, default 50
        List length pooled from each model per query.
    holdout_frac : float, default 0.1
        Share of the latest training sessions the ranker is fitted on.
    ranker_queries : int, default 20000
        Held-out prefixes sampled (seeded) to fit the ranker.
    n_trees, learning_rate, num_leaves, min_data_in_leaf : LightGBM ranker parameters
        (defaults 50, 0.1, 31, 100; 63 histogram bins, monotone in each model's score,
        :data:`MONOTONE_BASE`, :data:`MONOTONE_KNN`). 50 trees matched 100 on the validation
        splits of rsc15, yoochoose and retailrocket (bench/RESULTS.md).
    history_candidates : int, optional
        Pool only the items of a prefix's newest ``history_candidates`` positions from its own
        history (:func:`candidate_features`); None (the default) pools them all.
    rule_candidates : int, default 0
        Also pool the ``rule_candidates`` items the sequential rules score best
        (:meth:`_ItemStats.rule_top`), with their score and rank as features; 0 pools none.
    refit_emde : bool, default True
        After the ranker is fitted, fit EMDE again (same parameters and seed, whole epochs) on the
        whole log, so the served EMDE has seen the newest sessions too (as the kNN models have);
        costs a second EMDE fit. False serves the EMDE fitted without the held-out sessions.
    n_threads : int, default 2
        LightGBM's threads when fitting the ranker (fixed, so results do not depend on the machine).
        Scoring walks the ranker's trees with :class:`models.tree_ensemble.TreeEnsemble` (numba's
        threads; each row's score is the same whatever the thread count).
    random_state : int, default 0
    child_refit_events : int or None, default 20000
        On a log of at least this many events, the list models' whole-log fit runs in a child
        process (:mod:`models.background_fit`) while this one fits them on the held-out log: the
        same models bit for bit (each fit keeps its seeds and thread counts; GRU4Rec trains on one
        thread), in about a GRU fit less of wall time on two cores (bench/RESULTS.md, issue 11
        session 26). None fits both here, one after the other.

    References
    ----------
    Dąbrowski et al., "An efficient manifold density estimator for all recommendation systems",
    ICONIP 2021 (EMDE); Garg et al., SIGIR 2019 (STAN); Ludewig et al. 2021 (V-STAN);
    Burges, "From RankNet to LambdaRank to LambdaMART", MSR-TR-2010-82.
    """

    def __init__(self, emde: Mapping[str, Any] | None = None, knn: Mapping[str, Mapping[str, Any]] | None = None,
                 n_candidates: int = 50, holdout_frac: float = 0.1, ranker_queries: int = 20000,
                 n_trees: int = 50, learning_rate: float = 0.1, num_leaves: int = 31,
                 min_data_in_leaf: int = 100, rule_candidates: int = 0, refit_emde: bool = True,
                 n_threads: int = 2, random_state: int = 0, history_candidates: int | None = None,
                 child_refit_events: int | None = 20_000) -> None:
        self.emde = emde
        self.knn = knn
        self.n_candidates = n_candidates
        self.holdout_frac = holdout_frac
        self.ranker_queries = ranker_queries
        self.n_trees = n_trees
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_data_in_leaf = min_data_in_leaf
        self.rule_candidates = rule_candidates
        self.refit_emde = refit_emde
        self.n_threads = n_threads
        self.random_state = random_state
        self.history_candidates = history_candidates
        self.child_refit_events = child_refit_events

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments as stored (scikit-learn's rule)."""
        return {k: getattr(self, k) for k in ("emde", "knn", "n_candidates", "holdout_frac", "ranker_queries",
                                              "n_trees", "learning_rate", "num_leaves", "min_data_in_leaf",
                                              "rule_candidates", "refit_emde", "n_threads", "random_state",
                                              "history_candidates", "child_refit_events")}

    # -- configuration -------------------------------------------------------------------------
    def _emde_params(self) -> dict[str, Any]:
        from models.registry import REGISTRY
        return {**dict(REGISTRY["emde"].params), "epoch_examples": EMDE_EPOCH_EXAMPLES,
                "random_state": self.random_state, "progress": True, **dict(self.emde or {})}

    def _knn_params(self) -> dict[str, dict[str, Any]]:
        from models.registry import REGISTRY
        spec = self.knn if self.knn is not None else DEFAULT_LISTS
        if not spec:
            raise ValueError("knn: at least one list model")
        return {name: {**dict(REGISTRY[name].params), **dict(p)} for name, p in spec.items()}

    def _ranker_params(self) -> dict[str, Any]:
        return {"objective": "lambdarank", "num_iterations": self.n_trees, "learning_rate": self.learning_rate,
                "num_leaves": self.num_leaves, "min_data_in_leaf": self.min_data_in_leaf,
                "bagging_fraction": 0.8, "bagging_freq": 1, "feature_fraction": 0.8,
                "lambdarank_truncation_level": 30, "max_bin": 63,
                "monotone_constraints": list(MONOTONE_BASE) + list(MONOTONE_KNN) * (len(self._knn_params())
                                                                                  + (self.rule_candidates > 0))
                                        + list(MONOTONE_REPEAT),
                "monotone_constraints_method": "basic",
                "deterministic": True, "force_row_wise": True,
                "num_threads": self.n_threads, "seed": self.random_state, "verbose": -1}

    # -- fit -----------------------------------------------------------------------------------
    def fit(self, log: InteractionLog, *, side: Mapping[str, Any] | None = None) -> Self:
        """Fit EMDE and the kNN models on ``log`` minus its latest sessions, the ranker on those.

        ``side`` (item side data by modality name: titles, vectors) goes to EMDE's ``fit``, for
        catalog modalities (``models.emde``).

        Raises
        ------
        ValueError
            If a parameter is invalid or ``log`` is too small to hold sessions out.
        models.errors.ModelFitError
            If EMDE's wall-clock safety stop fires.
        """
        from models.data.validation import holdout_sessions
        from models.emde import EMDE
        from models.evaluate import sample_queries

        if self.n_candidates < 1 or self.ranker_queries < 1 or self.rule_candidates < 0:
            raise ValueError("n_candidates and ranker_queries must be >= 1, rule_candidates >= 0")
        if self.history_candidates is not None and self.history_candidates < 0:
            raise ValueError(f"history_candidates must be None or >= 0; got {self.history_candidates}")
        knn_params = self._knn_params()
        clock = _StageClock()
        inner_log, task, _ = holdout_sessions(log, frac=self.holdout_frac, name="fusion")
        emde = EMDE(**self._emde_params()).fit(inner_log, side=side)
        clock.done("EMDE fitted on the newest-sessions-held-out log")
        in_child = self.child_refit_events is not None and log.n_events >= self.child_refit_events
        # the whole log's list models: in a child process from now on (while this one fits the held-out log's
        # models, builds the ranker's examples and trains it), or here when asked for after the ranker
        with ModelsFit(knn_params, log, background=in_child) as whole_fit:
            self.knn_ = fit_models(knn_params, inner_log)
            clock.done("list models fitted on the held-out log" + (" (the whole log's in a child process)"
                                                                  if in_child else ""))
            task = sample_queries(task, self.ranker_queries, seed=self.random_state)
            self.emde_, self.stats_ = emde, _ItemStats.from_log(inner_log)
            rows, items, x = self._pairs(task.prefixes(), desc="fusion: ranker examples")
            clock.done(f"candidates and features of {task.n_queries} held-out prefixes")
            self._fit_ranker(task, rows, items, x, list(knn_params))
            del rows, items, x
            clock.done(f"ranker trained (pool recall {self.ranker_recall_:.3f})")
            if in_child:
                logger.info("fusion: waiting for the list models' whole-log fit in the child process")
            whole_knn = whole_fit.result()
            clock.done("list models fitted on the whole log" + (" (child process)" if in_child else ""))
        self.knn_ = whole_knn
        self.stats_ = _ItemStats.from_log(log)
        if self.refit_emde:
            self.emde_ = EMDE(**self._emde_params()).fit(log, side=side)
            clock.done("EMDE refitted on the whole log")
        self.n_items_ = log.n_items
        self.knn_names_ = list(knn_params)
        return self

    def _fit_ranker(self, task: NextItemTask, rows: NDArray[np.int64], items: NDArray[np.int64], x: NDArray[np.float32],
                    knn_names: list[str]) -> None:
        """LambdaMART over the held-out prefixes' candidate pairs: ``ranker_``, ``ranker_trees_``, ``ranker_recall_``."""
        import lightgbm as lgb

        label = (items == task.next_items()[rows]).astype(np.float32)
        positive = np.zeros(task.n_queries, bool)
        positive[rows[label > 0]] = True
        keep = positive[rows]  # queries whose next item was pooled; the others carry no gradient
        group = np.bincount(rows[keep], minlength=task.n_queries)
        data = lgb.Dataset(x[keep], label[keep], group=group[group > 0], feature_name=self._feature_names(knn_names),
                           params={"max_bin": 63}, free_raw_data=True)
        logger.info("fusion: ranker: %d boosting rounds over %d candidate rows of %d queries", self.n_trees,
                    int(keep.sum()), int((group > 0).sum()))
        bar, advance = _boosting_bar(self.n_trees, "fusion: ranker boosting")
        try:
            self.ranker_ = lgb.train(self._ranker_params(), data, callbacks=[advance])
        finally:
            bar.close()
        self.ranker_trees_ = TreeEnsemble.from_booster(self.ranker_)
        self.ranker_recall_ = float(positive.mean())

    def _feature_names(self, knn_names: list[str]) -> list[str]:
        return feature_names(knn_names, self.rule_candidates > 0)

    # -- scoring -------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "ranker_"):
            raise NotFittedError(self)

    def _pairs(self, histories: Histories, *, desc: str | None = None
               ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
        """Candidate pairs and features for all queries, in chunks of bounded memory."""
        n_items = self.emde_.n_items_
        # two dense (queries x items) float32 blocks at most (EMDE's readout, a GRU list's softmax): a chunk of
        # 2 x SCORE_CELLS cells, so a 500-prefix batch over 37k items is one chunk, not 453 + 47 (+7 % prefixes/s)
        step = max(1, 2 * SCORE_CELLS // max(n_items, 1))
        out_r, out_i, out_x = [], [], []
        stages = ["EMDE sketches", "EMDE readout", *(f"{type(m).__name__} lists" for m in self.knn_),
                  *(["rule lists"] if self.rule_candidates else []), "features"]
        bar = _StagedBar(histories.n_queries, desc, stages)
        try:
            for lo in range(0, histories.n_queries, step):
                hi = min(histories.n_queries, lo + step)
                bar.chunk(hi - lo)
                sub = histories.slice(lo, hi)
                raw = self.emde_.layout_.raw_sketches(self.emde_.item_in_cols_, sub, self.emde_.neighbours_)
                bar.stage_done()
                readout = self.emde_.readout(raw)
                bar.stage_done()
                lists = []
                for m in self.knn_:
                    lists.append(m.recommend(sub, self.n_candidates))
                    bar.stage_done()
                if self.rule_candidates:
                    lists.append(self.stats_.rule_top(sub, self.rule_candidates))
                    bar.stage_done()
                r, i, x = candidate_features(sub, readout, lists, self.stats_, self.n_candidates,
                                             self.history_candidates)
                bar.stage_done()
                out_r.append(r + lo)
                out_i.append(i)
                out_x.append(x)
        finally:
            bar.close()
        if not out_r:
            width = _n_features(len(self.knn_) + (self.rule_candidates > 0))
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, width), np.float32)
        return np.concatenate(out_r), np.concatenate(out_i), np.concatenate(out_x)

    def recommend(self, histories: Histories, n: int = 20, *, exclude_seen: bool = False
                  ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Top-``n`` items per history, ranked by the fitted ranker (see :class:`models.base.Recommender`).

        Scores are the ranker's output squashed to (0, 1) by a logistic; ids padded with -1 /
        scores with -inf when fewer than ``n`` candidates qualify.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        ValueError
            If ``n < 1`` or a history item lies outside ``[0, n_items)``.
        """
        self._check_fitted()
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        check_histories(histories, self.n_items_, type(self).__name__)
        items = np.asarray(histories.items)
        q = histories.n_queries
        ids = np.full((q, n), -1, np.int32)
        scores = np.full((q, n), -np.inf, np.float32)
        rows, cand, x = self._pairs(histories)
        if not len(rows):
            return ids, scores
        # ranker scores closer than 1e-3 are ties (noise of a small or saturated ranker): EMDE orders them
        s = np.round(self.ranker_trees_.predict(x), 3)  # = ranker_.predict(x), bit for bit
        if exclude_seen:
            lens = np.diff(histories.indptr)
            seen = np.unique(np.repeat(np.arange(q, dtype=np.int64), lens) * self.n_items_ + items)
            s[np.isin(rows * self.n_items_ + cand, seen)] = -np.inf
        sel, rank = top_per_row(rows, [-s, -x[:, 0], cand], n)  # best first; ties by EMDE, then item index
        ok = np.isfinite(s[sel])
        sel, rank = sel[ok], rank[ok]
        ids[rows[sel], rank] = cand[sel]
        scores[rows[sel], rank] = (1.0 / (1.0 + np.exp(-s[sel]))).astype(np.float32)
        return ids, scores

    def similar_items(self, item_idx: NDArray[np.int32], n: int = 20
                      ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """EMDE's similar items (one-item histories scored; the item itself excluded)."""
        self._check_fitted()
        return self.emde_.similar_items(item_idx, n)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: Path | str) -> None:
        """Write ``params.json`` + ``arrays.npz``, ``emde/``, ``knn_<i>/`` and ``ranker.txt`` to ``path``."""
        self._check_fitted()
        path = Path(path)
        t = self.stats_.transitions
        params = {**self.get_params(), "knn_names": self.knn_names_, "ranker_recall": self.ranker_recall_}
        save_model_dir(path, type(self).__name__, json.loads(json.dumps(params)), {
            "log_pop": self.stats_.log_pop, "t_indptr": t.indptr, "t_indices": t.indices, "t_data": t.data,
            "recent": self.stats_.recent, "since_seen": self.stats_.since_seen, "r_indptr": self.stats_.rules.indptr,
            "r_indices": self.stats_.rules.indices, "r_data": self.stats_.rules.data,
            "c_indptr": self.stats_.cooc.indptr, "c_indices": self.stats_.cooc.indices, "c_data": self.stats_.cooc.data,
            "repeat_rate": self.stats_.repeat_rate, "n_items": np.array([self.n_items_])})
        self.emde_.save(path / "emde")
        for slot, model in enumerate(self.knn_):
            model.save(path / f"knn_{slot}")
        (path / "ranker.txt").write_text(self.ranker_.model_to_string())

    @classmethod
    def load(cls, path: Path | str) -> Self:
        """Read a directory written by :meth:`save` (no pickles).

        Raises
        ------
        ModelFormatError
            If a part is missing or unreadable (the message names it).
        """
        import lightgbm as lgb

        from models.emde import EMDE
        from models.registry import model_class

        path = Path(path)
        params, a = load_model_dir(path, cls.__name__)
        names = list(params.pop("knn_names"))  # type: ignore[call-overload]
        recall = float(params.pop("ranker_recall"))  # type: ignore[arg-type]
        model = construct_saved(cls, params, path)
        n = int(a["n_items"][0])
        missing = [k for k in ("recent", "since_seen", "r_data", "c_data", "repeat_rate") if k not in a]
        if missing:
            raise ModelFormatError(f"{path}: written by an older fusionrec (no {', '.join(missing)}): train it again")
        t = sp.csr_array((a["t_data"], a["t_indices"], a["t_indptr"]), shape=(n, n))
        rules = sp.csr_array((a["r_data"], a["r_indices"], a["r_indptr"]), shape=(n, n))
        cooc = sp.csr_array((a["c_data"], a["c_indices"], a["c_indptr"]), shape=(n, n))
        model.stats_ = _ItemStats(a["log_pop"], t, a["recent"], a["since_seen"], rules, cooc, a["repeat_rate"])
        model.emde_ = EMDE.load(path / "emde")
        knn = []
        for slot, name in enumerate(names):
            knn.append(model_class(name).load(path / f"knn_{slot}"))
        model.knn_ = knn
        try:
            model.ranker_ = lgb.Booster(model_str=(path / "ranker.txt").read_text())
        except (OSError, lgb.basic.LightGBMError) as exc:
            raise ModelFormatError(f"{path / 'ranker.txt'}: unreadable LightGBM model ({exc})") from exc
        if model.ranker_.feature_name() != model._feature_names(names):
            raise ModelFormatError(f"{path / 'ranker.txt'}: its features {model.ranker_.feature_name()} are not this "
                                   f"fusionrec's {model._feature_names(names)}: train it again")
        model.ranker_trees_ = TreeEnsemble.from_booster(model.ranker_)
        model.n_items_, model.knn_names_, model.ranker_recall_ = n, names, recall
        return model

