"""The session-neighbourhood engine behind SKNN, V-SKNN, STAN and V-STAN.

For each prefix, ``recommend`` (1) finds every training session sharing an item with it,
(2) keeps the ``sample_size`` most recent (or random) of them (sessions are indexed newest
first), (3) scores their similarity, (4) keeps the ``k`` most similar (ties: the newer session)
and (5) spreads each neighbour's weight over its items, then returns the top ``n`` items (ties:
the lower index). It runs as one compiled numba kernel over the batch, prefix by prefix
(``_knn_kernel``): the item -> sessions lists of the prefix's items (cut at ``sample_size`` for
recency sampling) fill dense per-session scratch, a bit map yields the candidates in session
order, a quickselect keeps the ``k`` best, a dense per-item accumulator sums the weights and a
bounded heap keeps the top ``n``. Subclasses declare what they compute in a
:class:`KernelSpec` (:meth:`SessionKNNBase._kernel_spec`: a similarity code, a recency decay and
numpy-computed weight tables).

``_recommend_reference`` keeps the earlier vectorised path (sparse products ``Q @ X.T`` and
``N @ X``, :mod:`models.ragged_topk`), defined by the hooks ``_similarity`` and
``_pair_weights`` (+ ``_item_factor``) or ``_entry_weights``; ``tests/models/test_knn_kernel.py``
pins the kernel to it and ``bench/knn_speed.py`` times both.

References
----------
Ludewig, Latifi, Jannach, "Empirical analysis of session-based recommendation algorithms",
UMUAI 2021; github.com/rn5l/session-rec ``algorithms/knn/``.
"""

from __future__ import annotations

import inspect
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numba
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.base import Histories, InteractionLog
from models.errors import ModelFitError, NotFittedError
from models.heap import heap_offer as _heap_offer
from models.heap import heap_worse as _worse
from models.heap import sift_down as _sift_down
from models.jit import njit_cached
from models.persistence import construct_saved, load_model_dir, save_model_dir
from models.ragged_topk import select_per_row, top_per_row
from models.session_index import SessionIndex, check_histories

__all__ = ["SessionKNNBase", "QueryItems", "KernelSpec", "expand_rows", "day_window", "SIM_COSINE", "SIM_JACCARD",
           "SIM_DICE", "SIM_WEIGHTED_MEAN", "SIM_WEIGHTED_COSINE", "DECAY_NONE", "DECAY_EXP", "DECAY_DAYS",
           "days_table"]

_DAY_S = 86_400.0
_ENTRY_BUDGET = 2_000_000
"""Neighbour entries (sessions x their items) materialised per chunk, roughly."""


def expand_rows(indptr: NDArray[np.int64], rows: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Entries of CSR rows ``rows``: (owner position in ``rows``, index into ``indices``), contiguous per row."""
    start = indptr[rows]
    lens = indptr[rows + 1] - start
    total = int(lens.sum())
    owner = np.repeat(np.arange(len(rows), dtype=np.int64), lens)
    offsets = np.repeat(np.cumsum(lens) - lens, lens)
    return owner, np.repeat(start, lens) + (np.arange(total, dtype=np.int64) - offsets)


class QueryItems:
    """The distinct (prefix, item) pairs of a batch, searchable, with each item's newest position.

    Attributes
    ----------
    rows, items : ndarray of shape (n_pairs,), int64
        Sorted by (row, item).
    last_pos : ndarray of shape (n_pairs,), float64
        Newest 1-based position of the item in its prefix (positions count duplicates).
    length : ndarray of shape (n_queries,), int64
        Prefix lengths with duplicates (session-rec's ``len(session_items)``).
    n_unique : ndarray of shape (n_queries,), int64
        Distinct items per prefix.
    now : ndarray of shape (n_queries,), float64
        Epoch seconds of the newest event of each prefix (``default_now`` when unknown).
    """

    def __init__(self, hist: Histories, n_items: int, default_now: float) -> None:
        self.n_items = n_items
        self.length = np.diff(hist.indptr).astype(np.int64)
        b = len(self.length)
        row = np.repeat(np.arange(b, dtype=np.int64), self.length)
        pos = np.arange(len(row), dtype=np.int64) - np.repeat(hist.indptr[:-1], self.length) + 1
        key = row * n_items + hist.items.astype(np.int64)
        order = np.lexsort((pos, key))
        k_sorted = key[order]
        last = np.ones(len(order), dtype=bool)
        last[:-1] = k_sorted[1:] != k_sorted[:-1]
        self.keys = k_sorted[last]
        self.rows = self.keys // n_items
        self.items = self.keys % n_items
        self.last_pos = pos[order][last].astype(np.float64)
        self.n_unique = np.bincount(self.rows, minlength=b).astype(np.int64)
        self.now = np.full(b, default_now, dtype=np.float64)
        if hist.ts is not None:
            has = self.length > 0
            self.now[has] = hist.ts[hist.indptr[1:][has] - 1]

    @property
    def n_queries(self) -> int:
        return int(len(self.length))

    def find(self, rows: NDArray[np.int64], items: NDArray[np.integer]) -> NDArray[np.int64]:
        """Index into the pairs of each (row, item), ``-1`` when the item is not in that prefix."""
        key = rows * self.n_items + items.astype(np.int64)
        pos = np.searchsorted(self.keys, key)
        pos_c = np.minimum(pos, max(len(self.keys) - 1, 0))
        if not len(self.keys):
            return np.full(len(key), -1, dtype=np.int64)
        return np.where(self.keys[pos_c] == key, pos_c, -1)

    def matrix(self, values: NDArray[np.floating] | None = None) -> sp.csr_array:
        """(n_queries, n_items) sparse matrix of the pairs (values default to 1)."""
        v = np.ones(len(self.keys), dtype=np.float64) if values is None else values
        return sp.csr_array((v, (self.rows, self.items)), shape=(self.n_queries, self.n_items))


# ---- the compiled per-query kernel ---------------------------------------------------------

SIM_COSINE, SIM_JACCARD, SIM_DICE, SIM_WEIGHTED_MEAN, SIM_WEIGHTED_COSINE = 0, 1, 2, 3, 4
"""Similarity codes of :class:`KernelSpec`: set cosine ``o / sqrt(a b)``, Jaccard ``o / (a + b - o)``,
Dice ``2o / (2o + a + b)``, weighted mean ``num / a`` and weighted cosine ``num / (sqrt(sq) sqrt(b))``
(``o`` shared distinct items, ``a``/``b`` distinct items of prefix / session, ``num`` the sum of
the prefix weights of shared items, ``sq`` the sum of squared prefix weights)."""

DECAY_NONE, DECAY_EXP, DECAY_DAYS = 0, 1, 2
"""Neighbour-recency codes of :class:`KernelSpec`: none, ``exp(-age / scale)``, or
``table[round(age / scale)]`` (age = seconds from the session's end to the prefix's "now", >= 0)."""

_EMPTY = np.zeros(0, dtype=np.float64)


def _f64(a: NDArray) -> NDArray[np.float64]:
    return np.ascontiguousarray(a, dtype=np.float64)


@dataclass(frozen=True)
class KernelSpec:
    """What a session-kNN model computes, in the form the compiled kernel takes.

    A neighbour (similarity ``sim``, found as in the module docstring) gives each item of its
    session the weight ``(((sim [* step]) * gap[|p - p*|]) * entry_item[item]) [* step]``, summed
    over neighbours (ascending session index, i.e. newest first), then times ``final_item[item]``.
    ``step = step_table[n - i]``, ``i`` being the newest prefix position of an item the neighbour
    shares with the prefix (of length ``n``); ``step_first`` says whether it multiplies before the
    per-entry factors or last. ``p`` is the item's newest position in the neighbour, ``p*`` the
    newest position there of an item shared with the prefix. An empty table means "factor 1".
    Every table is computed by numpy, so its factors equal the reference path's bit for bit; only
    ``DECAY_EXP`` is evaluated in the kernel (the C library's ``exp``, which can differ from
    numpy's vectorised one in the last bit).

    Attributes
    ----------
    sim : int
        One of the ``SIM_*`` codes.
    query_w : ndarray of shape (n_pairs,), float64
        Weight of each (prefix, item) pair of the :class:`QueryItems` (ones when unweighted).
    query_sq : ndarray of shape (n_queries,), float64
        Sum of squared ``query_w`` per prefix (used by ``SIM_WEIGHTED_COSINE``).
    decay, decay_scale, decay_table :
        Neighbour recency (``DECAY_*`` code, seconds, table by rounded age).
    step_table, step_first, gap_table, entry_item, final_item :
        The weight factors above.
    """

    sim: int
    query_w: NDArray[np.float64]
    query_sq: NDArray[np.float64]
    decay: int = DECAY_NONE
    decay_scale: float = 1.0
    decay_table: NDArray[np.float64] = field(default_factory=lambda: _EMPTY)
    step_table: NDArray[np.float64] = field(default_factory=lambda: _EMPTY)
    step_first: bool = True
    gap_table: NDArray[np.float64] = field(default_factory=lambda: _EMPTY)
    entry_item: NDArray[np.float64] = field(default_factory=lambda: _EMPTY)
    final_item: NDArray[np.float64] = field(default_factory=lambda: _EMPTY)


def days_table(base: float, now: NDArray[np.float64], last_ts: NDArray[np.float64]) -> NDArray[np.float64]:
    """``base ** d`` for every whole number of days ``d`` an age ``max(now - last_ts, 0)`` can round to
    (numpy's power, so the kernel's factors equal the reference's); at most 8,000 entries, by
    which ``base ** d`` (``base`` <= 0.9) is 0, and the kernel clamps longer ages to the last."""
    span = float(np.max(now, initial=0.0) - np.min(last_ts, initial=0.0)) if len(now) and len(last_ts) else 0.0
    size = int(min(max(np.round(max(span, 0.0) / _DAY_S), 0.0), 8_000.0)) + 1
    return base ** np.arange(size, dtype=np.float64)





def _debruijn_table() -> NDArray[np.int64]:
    mult = 0x03F79D71B4CB0A89
    table = np.zeros(64, dtype=np.int64)
    for i in range(64):
        table[(((1 << i) * mult) & 0xFFFFFFFFFFFFFFFF) >> 58] = i
    return table


_DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)
_DEBRUIJN_BIT = _debruijn_table()
"""Index of the single set bit ``b`` of a word: ``_DEBRUIJN_BIT[(b * _DEBRUIJN) >> 58]``."""


_POOL: ThreadPoolExecutor | None = None
_MIN_CHUNK = 64
"""Queries per thread below which a batch is scored on the calling thread alone."""


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_n_threads(), thread_name_prefix="knn")
    return _POOL


def _n_threads() -> int:
    return max(1, min(numba.config.NUMBA_NUM_THREADS, os.cpu_count() or 1))


def _query_chunks(n_queries: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges splitting a batch over the scoring threads (one range for small batches)."""
    k = max(1, min(_n_threads(), n_queries // _MIN_CHUNK))
    bounds = np.linspace(0, n_queries, k + 1).astype(int)
    return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


@njit_cached()
def _drain_bits(bits: NDArray[np.uint64], lo: int, hi: int, out: NDArray[np.int64]) -> int:
    """Write the set bits of words ``lo >> 6 .. hi >> 6`` ascending into ``out``, clear them, return the count."""
    c = 0
    for wi in range(lo >> 6, (hi >> 6) + 1):
        w = bits[wi]
        if w == 0:
            continue
        bits[wi] = np.uint64(0)
        base = wi * 64
        while w != 0:
            low = w & (~w + np.uint64(1))
            out[c] = base + _DEBRUIJN_BIT[(low * _DEBRUIJN) >> np.uint64(58)]
            c += 1
            w ^= low
    return c


@njit_cached()
def _kth_largest(buf: NDArray[np.float64], m: int, k: int) -> float:
    """The ``k``-th largest (1-based) of ``buf[:m]``, which is reordered (quickselect, median of three)."""
    lo, hi, target = 0, m - 1, k - 1
    while hi > lo:
        mid = (lo + hi) >> 1
        a, b, c = buf[lo], buf[mid], buf[hi]
        pivot = max(min(a, b), min(max(a, b), c))
        i, j = lo, hi
        while i <= j:  # descending: larger values to the left
            while buf[i] > pivot:
                i += 1
            while buf[j] < pivot:
                j -= 1
            if i <= j:
                buf[i], buf[j] = buf[j], buf[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            return buf[target]
    return buf[target]


@njit_cached()
def _keep_top(ids: NDArray[np.int64], keys: NDArray[np.float64], m: int, k: int, buf: NDArray[np.float64]) -> int:
    """Keep, in place and in order, the ``k`` entries of ``ids[:m]`` / ``keys[:m]`` with the largest keys
    (ties at the cut: the earlier entries); return how many are kept."""
    if m <= k:
        return m
    buf[:m] = keys[:m]
    thr = _kth_largest(buf, m, k)
    room = k
    for j in range(m):
        if keys[j] > thr:
            room -= 1
    c = 0
    for j in range(m):
        if keys[j] > thr or (keys[j] == thr and room > 0):
            if keys[j] == thr:
                room -= 1
            ids[c] = ids[j]
            keys[c] = keys[j]
            c += 1
    return c


@njit_cached(nogil=True)
def _knn_kernel(q_ptr, q_items, q_pos, q_w, q_len, q_nu, q_now, q_sq,
                xt_ptr, xt_ent, x_ptr, x_ent, sess_nu, sess_sqrt_nu, last_ts, rand_key,
                k, sample_size, random_sampling, positive_only,
                sim_kind, decay, decay_scale, decay_table, step_table, step_first, gap_table,
                entry_item, final_item, exclude_seen, session_block,
                stamp, sacc, bits, istamp, acc, seen, ids_out, vals_out):
    """Score every prefix (see :class:`KernelSpec`); fills ``ids_out`` / ``vals_out`` rows in place.

    ``session_block`` (int > 0): with recency sampling, the candidate walk visits the sessions in
    blocks of this many indices and stops after the block in which ``sample_size`` candidates
    are reached (see step 1).

    Scratch: ``stamp`` (n_sessions,) int32 zeros, ``sacc`` (n_sessions, 4) float64, ``bits``
    (n_sessions // 64 + 1,) uint64 zeros, ``istamp`` / ``seen`` (n_items,) int32 zeros, ``acc``
    (n_items,) float64; a value is valid only where its stamp equals the prefix's tag.
    """
    n = ids_out.shape[1]
    n_s = len(stamp)
    cand = np.empty(n_s, dtype=np.int64)
    nb_sess = np.empty(n_s, dtype=np.int64)
    nb_sim = np.empty(n_s, dtype=np.float64)
    buf = np.empty(n_s, dtype=np.float64)
    n_items = len(istamp)
    touched = np.empty(n_items, dtype=np.int64)
    longest = 0
    for r in range(len(q_ptr) - 1):
        longest = max(longest, q_ptr[r + 1] - q_ptr[r])
    cur = np.empty(longest, dtype=np.int64)
    end = np.empty(longest, dtype=np.int64)
    heap_s = np.empty(n, dtype=np.float64)
    heap_i = np.empty(n, dtype=np.int64)
    truncate = sample_size > 0 and not random_sampling
    has_step, has_gap = len(step_table) > 0, len(gap_table) > 0
    has_entry_item, has_final = len(entry_item) > 0, len(final_item) > 0
    for r in range(len(q_ptr) - 1):
        tag = r + 1
        a, b = q_ptr[r], q_ptr[r + 1]
        if a == b:
            continue
        # 1. candidates: sessions sharing an item, with (overlap, weighted overlap, newest prefix
        # position of a shared item, newest position in the session of a shared item). Each
        # item's sessions are stored newest first; with recency sampling a session among the
        # sample_size newest candidates is among the sample_size newest sessions of each of its
        # items, so each list is cut there, and the lists are walked side by side in blocks of
        # session_block session indices (a cursor per list): once sample_size candidates are
        # found, no later block can hold one of the sample_size newest, so the walk stops there.
        # Within a block items are visited in ascending index, and all of a session's entries lie
        # in one block, so each session's sums run in ascending item order, the order in which
        # the reference's sparse product sums the weights.
        lo, hi = n_s, -1
        for j in range(a, b):
            it = q_items[j]
            seen[it] = tag
            cur[j - a] = xt_ptr[it]
            end[j - a] = xt_ptr[it + 1]
            if truncate and end[j - a] - cur[j - a] > sample_size:
                end[j - a] = cur[j - a] + sample_size
        found = 0
        block_end = session_block if truncate else n_s
        while True:
            for j in range(a, b):
                wj, pj = q_w[j], q_pos[j]
                e, e1 = cur[j - a], end[j - a]
                while e < e1:
                    s = xt_ent[e, 0]
                    if s >= block_end:
                        break
                    ps = np.float64(xt_ent[e, 1])
                    if stamp[s] != tag:
                        stamp[s] = tag
                        sacc[s, 0] = 1.0
                        sacc[s, 1] = wj
                        sacc[s, 2] = pj
                        sacc[s, 3] = ps
                        bits[s >> 6] |= np.uint64(1) << np.uint64(s & 63)
                        lo = min(lo, s)
                        hi = max(hi, s)
                        found += 1
                    else:
                        sacc[s, 0] += 1.0
                        sacc[s, 1] += wj
                        sacc[s, 2] = max(sacc[s, 2], pj)
                        sacc[s, 3] = max(sacc[s, 3], ps)
                    e += 1
                cur[j - a] = e
            if block_end >= n_s or found >= sample_size:
                break
            block_end += session_block
        if hi < 0:
            continue
        c = _drain_bits(bits, lo, hi, cand)  # ascending session index = newest first
        if sample_size > 0 and c > sample_size:
            if random_sampling:  # the smallest (random key, session), kept in session order
                for j in range(c):
                    nb_sim[j] = -rand_key[cand[j]]
                _keep_top(cand, nb_sim, c, sample_size, buf)
            c = sample_size
        # 2. similarity of each sampled candidate
        length = q_len[r]
        a_nu = np.float64(q_nu[r])
        sqrt_sq = np.sqrt(q_sq[r])
        now = q_now[r]
        m = 0
        for j in range(c):
            s = cand[j]
            if sim_kind == 0:
                sim = sacc[s, 0] / np.sqrt(a_nu * sess_nu[s])
            elif sim_kind == 1:
                sim = sacc[s, 0] / (a_nu + sess_nu[s] - sacc[s, 0])
            elif sim_kind == 2:
                sim = 2.0 * sacc[s, 0] / (2.0 * sacc[s, 0] + a_nu + sess_nu[s])
            elif sim_kind == 3:
                sim = sacc[s, 1] / a_nu
            else:
                sim = sacc[s, 1] / (sqrt_sq * sess_sqrt_nu[s])
                if not np.isfinite(sim):
                    sim = 0.0
            if decay == 1:
                sim = sim * np.exp(-max(now - last_ts[s], 0.0) / decay_scale)
            elif decay == 2:
                d = min(round(max(now - last_ts[s], 0.0) / decay_scale), len(decay_table) - 1)
                sim = sim * decay_table[d]
            if positive_only and not sim > 0.0:
                continue
            nb_sess[m] = s
            nb_sim[m] = sim
            m += 1
        # 3. the k most similar (ties: the newer session), still in session order
        m = _keep_top(nb_sess, nb_sim, m, k, buf)
        # 4. spread each neighbour's weight over its items (neighbours in session order, as the
        # reference's sparse product sums them). When the neighbours hold at least as many
        # entries as the catalogue has items, the accumulator is zeroed whole and read whole
        # (no per-entry stamp; 0.0 + w == w, so the sums are the same bits); else only the
        # touched items are stamped and read.
        n_entries = 0
        for j in range(m):
            n_entries += x_ptr[nb_sess[j] + 1] - x_ptr[nb_sess[j]]
        dense = n_entries >= n_items
        if dense:
            acc[:] = 0.0
        t = 0
        for j in range(m):
            s = nb_sess[j]
            pre = nb_sim[j]
            post = 1.0
            if has_step:
                f = step_table[int(length - sacc[s, 2])]
                if step_first:
                    pre = pre * f
                else:
                    post = f
            p_star = int(sacc[s, 3])
            for e in range(x_ptr[s], x_ptr[s + 1]):
                it = x_ent[e, 0]
                w = pre
                if has_gap:
                    w = w * gap_table[abs(x_ent[e, 1] - p_star)]
                if has_entry_item:
                    w = w * entry_item[it]
                if has_step and not step_first:
                    w = w * post
                if dense:
                    acc[it] += w
                elif istamp[it] != tag:
                    istamp[it] = tag
                    acc[it] = w
                    touched[t] = it
                    t += 1
                else:
                    acc[it] += w
        # 5. top n items by (score desc, index asc)
        size = 0
        for j in range(n_items if dense else t):
            it = j if dense else touched[j]
            score = acc[it]
            if has_final:
                score = score * final_item[it]
            if score > 0.0 and not (exclude_seen and seen[it] == tag) and (
                    size < n or _worse(heap_s[0], heap_i[0], score, it)):
                size = _heap_offer(heap_s, heap_i, size, n, score, it)
        while size > 0:  # pop the worst into the last free rank
            size -= 1
            ids_out[r, size] = heap_i[0]
            vals_out[r, size] = heap_s[0]
            last_s, last_i = heap_s[size], heap_i[size]
            heap_s[0], heap_i[0] = last_s, last_i
            _sift_down(heap_s, heap_i, size)


class SessionKNNBase:
    """Shared fit / recommend / save of the session-kNN family (see the module docstring).

    Subclasses take at least ``k``, ``sample_size``, ``sampling`` and ``random_state`` and
    implement ``_similarity`` and ``_pair_weights`` or ``_entry_weights`` (``_validate``,
    ``_query_weights``, ``_item_factor`` and ``_train_window`` are optional).
    """

    _chunk: int = 256
    """Prefixes scored at once inside ``recommend`` (bounds memory)."""
    _positive_only: bool = True
    """Drop neighbours with similarity <= 0 (session-rec's ``if similarity > 0``)."""
    _min_session_block: int = 1024
    """Fewest session indices per block of the kernel's candidate walk (see :meth:`_session_block`)."""

    k: int
    sample_size: int
    sampling: str
    random_state: int | None

    # ---- hooks ---------------------------------------------------------------------------
    def _validate(self) -> None:
        if self.k < 1:
            raise ValueError(f"k: must be >= 1; got {self.k}")
        if self.sample_size < 0:
            raise ValueError(f"sample_size: must be >= 0 (0 = all candidates); got {self.sample_size}")
        if self.sampling not in ("recent", "random"):
            raise ValueError(f"sampling: must be 'recent' or 'random'; got {self.sampling!r}")

    def _train_window(self, log: InteractionLog) -> InteractionLog:
        return log

    def _query_weights(self, q: QueryItems) -> NDArray[np.float64] | None:
        """Weight of each (prefix, item) pair of ``q`` whose sum over shared items the similarity needs."""
        return None

    def _similarity(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64],
                    overlap: NDArray[np.float64], num: NDArray[np.float64] | None) -> NDArray[np.float64]:
        """Similarity of each (row, session) candidate; ``overlap`` = shared item count, ``num`` =
        sum of ``_query_weights`` over shared items (None when there are no weights)."""
        raise NotImplementedError

    def _pair_weights(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64],
                      sim: NDArray[np.float64]) -> NDArray[np.float64] | None:
        """Separable models: the weight a neighbour pair gives each of its items (times
        ``_item_factor``); None when the weight depends on the (pair, item) entry."""
        return None

    def _item_factor(self) -> NDArray[np.float64] | None:
        """Per-item multiplier of separable models (e.g. the IDF boost); None = 1."""
        return None

    def _entry_weights(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64],
                       sim: NDArray[np.float64], owner: NDArray[np.int64], entry: NDArray[np.int64]
                       ) -> NDArray[np.float64]:
        """Non-separable models: the weight of each neighbour entry (``entry`` indexes ``x``)."""
        raise NotImplementedError

    def _kernel_spec(self, q: QueryItems) -> KernelSpec:
        """The similarity and weights of this model for the compiled kernel (same maths as the
        ``_similarity`` / ``_pair_weights`` / ``_entry_weights`` hooks of the reference path)."""
        raise NotImplementedError

    # ---- the estimator contract ----------------------------------------------------------
    def get_params(self) -> dict[str, object]:
        """Constructor arguments as stored (scikit-learn's rule)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def fit(self, log: InteractionLog) -> Self:
        """Index the training sessions of ``log``.

        Raises
        ------
        ValueError
            If a hyper-parameter is invalid (the message names it).
        ModelFitError
            If the log (after ``last_n_days``) holds no events.
        """
        self._validate()
        log = self._train_window(log)
        if log.n_events == 0:
            raise ModelFitError(f"{type(self).__name__}.fit: the log holds no events")
        index = SessionIndex.from_log(log)
        counts = np.bincount(log.item_idx, minlength=log.n_items).astype(np.float64)
        idf = np.where(counts > 0, np.log(index.n_sessions / np.maximum(counts, 1.0)), 0.0)
        self._set_state(index, idf, np.random.default_rng(self.random_state).random(index.n_sessions),
                        float(log.ts.max()))
        return self

    def _set_state(self, index: SessionIndex, idf: NDArray, rand_key: NDArray, now: float) -> None:
        self.index_ = index
        self.n_items_ = int(index.x.shape[1])
        self.idf_ = np.asarray(idf, dtype=np.float64)
        self.rand_key_ = np.asarray(rand_key, dtype=np.float64)
        self.now_ = now

    def _chunk_size(self) -> int:
        """Prefixes per chunk, fewer when neighbour sessions are long (bounds the entry arrays)."""
        k_eff = min(self.k, self.sample_size) if self.sample_size > 0 else self.k
        mean_len = float(self.index_.x.nnz) / max(self.index_.n_sessions, 1)
        return int(np.clip(_ENTRY_BUDGET / max(k_eff * mean_len, 1.0), 8, self._chunk))

    def _check_fitted(self) -> None:
        if not hasattr(self, "index_"):
            raise NotFittedError(self)

    def recommend(self, histories: Histories, n: int = 20, *, exclude_seen: bool = False
                  ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Top-``n`` items for each prefix from its session neighbourhood.

        Parameters
        ----------
        histories : Histories
            Prefixes (item indices, oldest first; ``ts`` in epoch seconds used by time decays,
            else the end of train is "now").
        n : int
            List length, >= 1.
        exclude_seen : bool
            Drop the prefix's own items.

        Returns
        -------
        (ids, scores) : int32 and float32 arrays of shape (n_queries, n), best first; items no
        neighbour holds are not recommended (``-1`` / ``-inf`` padding). Ties go to the lower index.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        ValueError
            If ``n < 1`` or a history holds an index outside the catalogue.
        """
        ids, vals = self._padded_lists(histories, n)
        b = histories.n_queries
        parts = _query_chunks(b)
        if len(parts) == 1:
            self._score_into(histories, ids, vals, exclude_seen)
        else:  # the kernel releases the GIL: chunks of queries run side by side (each query alone decides its list)
            list(_pool().map(lambda lh: self._score_into(histories.slice(*lh), ids[lh[0]:lh[1]], vals[lh[0]:lh[1]],
                                                           exclude_seen), parts))
        return ids, vals

    def _score_into(self, histories: Histories, ids: NDArray[np.int32], vals: NDArray[np.float32],
                    exclude_seen: bool) -> None:
        """Run the kernel for ``histories``, writing its lists into the rows ``ids`` / ``vals`` (views)."""
        if histories.n_queries == 0:
            return
        q = QueryItems(histories, self.n_items_, self.now_)
        spec = self._kernel_spec(q)
        ix = self.index_
        n_s = ix.n_sessions
        kn = self._kernel_arrays()
        q_ptr = np.concatenate([[0], np.cumsum(q.n_unique)]).astype(np.int64)
        _knn_kernel(q_ptr, q.items.astype(np.int64), q.last_pos, np.ascontiguousarray(spec.query_w, dtype=np.float64),
                    q.length, q.n_unique, q.now, np.ascontiguousarray(spec.query_sq, dtype=np.float64),
                    kn["xt_ptr"], kn["xt_ent"], kn["x_ptr"], kn["x_ent"],
                    kn["sess_nu"], kn["sess_sqrt_nu"], ix.last_ts, self.rand_key_,
                    int(self.k), int(self.sample_size), self.sampling == "random", bool(self._positive_only),
                    int(spec.sim), int(spec.decay), float(spec.decay_scale), _f64(spec.decay_table),
                    _f64(spec.step_table), bool(spec.step_first), _f64(spec.gap_table), _f64(spec.entry_item),
                    _f64(spec.final_item), bool(exclude_seen or not getattr(self, "remind", True)),
                    self._session_block(n_s),
                    np.zeros(n_s, dtype=np.int32), np.empty((n_s, 4)), np.zeros(n_s // 64 + 1, dtype=np.uint64),
                    np.zeros(self.n_items_, dtype=np.int32), np.empty(self.n_items_),
                    np.zeros(self.n_items_, dtype=np.int32), ids, vals)

    def _session_block(self, n_sessions: int) -> int:
        """Session indices per block of the kernel's recency-sampled candidate walk: at least
        ``_min_session_block`` and at most 64 blocks over the index (each block costs a pass over
        the prefix's item lists; the walk overshoots the sample by less than one block)."""
        return max(int(self._min_session_block), -(-n_sessions // 64), 1)

    def _padded_lists(self, histories: Histories, n: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Check a ``recommend`` call (fitted, ``n >= 1``, indices in the catalogue) and return its
        empty result: ids (n_queries, n) of -1 and scores of -inf."""
        self._check_fitted()
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        check_histories(histories, self.n_items_, type(self).__name__)
        return (np.full((histories.n_queries, n), -1, dtype=np.int32),
                np.full((histories.n_queries, n), -np.inf, dtype=np.float32))

    def _kernel_arrays(self) -> dict[str, NDArray]:
        """The session index in the kernel's dtypes, built once per fitted index.

        ``xt_ent`` (session, newest position) and ``x_ent`` (item, newest position) are (nnz, 2)
        uint16 when every value fits (UCI: 17k sessions, 3.5k items), else int32: the neighbour
        walk of a long-basket set is bound by reading them (UCI STAN part 0.50 -> 0.40 ms CPU
        per prefix with uint16 items and positions).
        """
        ix = self.index_
        cached = getattr(self, "_kernel_arrays_", None)
        if cached is not None and cached[0] is ix:
            return cached[1]
        nu = ix.n_unique
        max_pos = int(ix.last_pos.max(initial=0.0))
        arrays = {"xt_ptr": ix.xt.indptr.astype(np.int64),
                  "x_ptr": ix.x.indptr.astype(np.int64),
                  "xt_ent": np.stack([ix.xt.indices, ix.xt_last_pos], axis=1).astype(
                      np.uint16 if max(ix.n_sessions, max_pos + 1) <= 1 << 16 else np.int32),
                  "x_ent": np.stack([ix.x.indices, ix.last_pos], axis=1).astype(
                      np.uint16 if max(ix.x.shape[1], max_pos + 1) <= 1 << 16 else np.int32),
                  "sess_nu": nu.astype(np.float64), "sess_sqrt_nu": np.sqrt(nu).astype(np.float64),
                  "max_pos": max_pos}
        self._kernel_arrays_ = (ix, arrays)
        return arrays

    def _recommend_reference(self, histories: Histories, n: int = 20, *, exclude_seen: bool = False
                             ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """:meth:`recommend` by the vectorised numpy/scipy path (sparse products, ragged top-k),
        kept as the reference the compiled kernel is tested and benchmarked against."""
        ids, vals = self._padded_lists(histories, n)
        b = histories.n_queries
        chunk = self._chunk_size()
        for lo in range(0, b, chunk):
            hi = min(lo + chunk, b)
            a, z = histories.indptr[lo], histories.indptr[hi]
            sub = Histories(indptr=histories.indptr[lo:hi + 1] - a, items=histories.items[a:z],
                            ts=None if histories.ts is None else histories.ts[a:z])
            self._recommend_chunk(sub, n, exclude_seen, ids[lo:hi], vals[lo:hi])
        return ids, vals

    def _recommend_chunk(self, hist: Histories, n: int, exclude_seen: bool,
                         ids: NDArray[np.int32], vals: NDArray[np.float32]) -> None:
        q = QueryItems(hist, self.n_items_, self.now_)
        rows, sess, sim = self._neighbours(q)
        pair_w = self._pair_weights(q, rows, sess, sim)
        if pair_w is not None:  # separable: one sparse product spreads the pair weights over items
            nmat = sp.csr_array((pair_w, (rows, sess)), shape=(q.n_queries, self.index_.n_sessions))
            s = (nmat @ self.index_.x).tocsr()
        else:  # entry weights summed per (prefix, item) by the COO -> CSR conversion
            owner, entry = expand_rows(self.index_.x.indptr, sess)
            w = self._entry_weights(q, rows, sess, sim, owner, entry)
            s = sp.csr_array((w, (rows[owner], self.index_.x.indices[entry])), shape=(q.n_queries, self.n_items_))
        s.sum_duplicates()
        r = np.repeat(np.arange(q.n_queries, dtype=np.int64), np.diff(s.indptr))
        it = s.indices.astype(np.int64)
        score = s.data.astype(np.float64)
        factor = self._item_factor()
        if factor is not None:
            score = score * factor[it]
        keep = score > 0
        if exclude_seen or not getattr(self, "remind", True):
            keep &= q.find(r, it) < 0
        r, it, score = r[keep], it[keep], score[keep]
        sel, rank = top_per_row(r, [-score, it], n)
        ids[r[sel], rank] = it[sel]
        vals[r[sel], rank] = score[sel]

    def _shared(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64]
                ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
        """Every item a neighbour pair shares with its prefix: (pair index, newest position of the
        item in the prefix, newest position in the neighbour session).

        Walks either the neighbours' items or the sessions of the prefix items, whichever is
        fewer entries (long baskets vs. popular items).
        """
        ix = self.index_
        cost_sessions = int(np.diff(ix.x.indptr)[sess].sum())
        cost_items = int(np.diff(ix.xt.indptr)[q.items].sum())
        if cost_sessions <= cost_items:
            owner, entry = expand_rows(ix.x.indptr, sess)
            qi = q.find(rows[owner], ix.x.indices[entry])
            hit = qi >= 0
            return owner[hit], q.last_pos[qi[hit]], ix.last_pos[entry[hit]].astype(np.float64)
        owner, entry = expand_rows(ix.xt.indptr, q.items)
        n_s = ix.n_sessions
        pair_key = rows * n_s + sess
        order = np.argsort(pair_key)
        key = q.rows[owner] * n_s + ix.xt.indices[entry].astype(np.int64)
        pos = np.searchsorted(pair_key[order], key)
        pos_c = np.minimum(pos, max(len(order) - 1, 0))
        hit = (pos < len(order)) & (pair_key[order][pos_c] == key) if len(order) else np.zeros(len(key), bool)
        return order[pos_c[hit]], q.last_pos[owner[hit]], ix.xt_last_pos[entry[hit]].astype(np.float64)

    def _newest_shared(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64]
                       ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per pair: newest prefix position of a shared item, and its neighbour-side counterpart
        ``p*`` (newest position in the neighbour of an item shared with the prefix)."""
        pair, q_pos, s_pos = self._shared(q, rows, sess)
        newest_q = np.zeros(len(sess))
        p_star = np.zeros(len(sess))
        np.maximum.at(newest_q, pair, q_pos)
        np.maximum.at(p_star, pair, s_pos)
        return newest_q, p_star

    def _neighbours(self, q: QueryItems) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
        """(row, session, similarity) of the ``k`` nearest sampled neighbours of each prefix."""
        xt = self.index_.xt
        c = (q.matrix() @ xt).tocsr()
        c.sort_indices()
        rows = np.repeat(np.arange(q.n_queries, dtype=np.int64), np.diff(c.indptr))
        sess = c.indices.astype(np.int64)
        overlap = c.data.astype(np.float64)
        w = self._query_weights(q)
        num = None
        if w is not None and len(w) and np.all(w > 0):
            cw = (q.matrix(w) @ xt).tocsr()
            cw.sort_indices()
            if cw.nnz == c.nnz:  # positive weights: the same pattern, so entries align
                num = cw.data.astype(np.float64)
        if self.sample_size > 0:
            if self.sampling == "recent":  # sessions are indexed newest first: keep each row's head
                sel = np.flatnonzero(np.arange(len(rows)) - c.indptr[rows] < self.sample_size)
            else:
                sel = select_per_row(rows, [self.rand_key_[sess], sess], self.sample_size)
            rows, sess, overlap = rows[sel], sess[sel], overlap[sel]
            num = None if num is None else num[sel]
        if w is not None and num is None:
            num = self._weighted_overlap(q, rows, sess, w)
        sim = self._similarity(q, rows, sess, overlap, num)
        if self._positive_only:
            ok = sim > 0
            rows, sess, sim = rows[ok], sess[ok], sim[ok]
        sel = select_per_row(rows, [-sim, sess], self.k)
        return rows[sel], sess[sel], sim[sel]

    def _weighted_overlap(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64],
                          weights: NDArray[np.float64]) -> NDArray[np.float64]:
        """For each (row, session) pair, the sum of ``weights`` (one per query pair) of shared items."""
        owner, entry = expand_rows(self.index_.x.indptr, sess)
        qi = q.find(rows[owner], self.index_.x.indices[entry])
        hit = qi >= 0
        return np.bincount(owner[hit], weights=weights[qi[hit]], minlength=len(sess))

    def similar_items(self, item_idx: NDArray[np.int32], n: int = 20
                      ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Items recommended after a one-item session ``[i]`` (the item itself excluded)."""
        q = np.asarray(item_idx, dtype=np.int32)
        hist = Histories(indptr=np.arange(len(q) + 1, dtype=np.int64), items=q)
        return self.recommend(hist, n, exclude_seen=True)

    def save(self, path: Path) -> None:
        """Write ``arrays.npz`` (session index, idf, sampling keys) and ``params.json`` to ``path``."""
        self._check_fitted()
        ix = self.index_
        save_model_dir(path, type(self).__name__, self.get_params(), {
            "indptr": ix.x.indptr, "indices": ix.x.indices, "last_pos": ix.last_pos, "last_ts": ix.last_ts,
            "idf": self.idf_, "rand_key": self.rand_key_, "now": np.array([self.now_]),
            "n_items": np.array([self.n_items_]),
        })

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a directory written by :meth:`save` (``allow_pickle=False``)."""
        params, a = load_model_dir(path, cls.__name__)
        model = construct_saved(cls, params, path)
        index = SessionIndex.from_arrays(a["indptr"], a["indices"], a["last_pos"], a["last_ts"], int(a["n_items"][0]))
        model._set_state(index, a["idf"], a["rand_key"], float(a["now"][0]))
        return model


def day_window(log: InteractionLog, days: float | None) -> InteractionLog:
    """Events from midnight (UTC) ``days`` days before the last day of ``log`` on (session-rec ``last_n_days``)."""
    if days is None:
        return log
    last_day = np.floor(log.ts.max() / _DAY_S) * _DAY_S
    keep = log.ts >= last_day - days * _DAY_S
    sess = log.session_idx[keep]
    _, remap = np.unique(sess, return_inverse=True)
    return InteractionLog(session_idx=remap.astype(np.int32), item_idx=log.item_idx[keep], ts=log.ts[keep],
                          n_items=log.n_items, item_ids=log.item_ids)
