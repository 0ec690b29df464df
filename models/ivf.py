"""Inverted-file (IVF) nearest-neighbour lists over unit vectors: k-means coarse lists, exact re-ranking.

An :class:`InvertedLists` groups the rows of a caller's matrix by their nearest centroid (spherical
k-means, :func:`train_centroids`). A query scores the centroids, probes the ``n_probe`` nearest lists
and ranks their rows exactly by cosine; rows of farther lists come after, in tiers of ``4x`` more
lists each (:meth:`InvertedLists.search`). So the ranking is one fixed order for a given state of
the lists: every top-``n`` is a prefix of every top-``m``, ``m > n`` (a walk that asks for more
items gets the same first ones), and a query costs O(n_probe x rows per list) while its answer lies
in the first tier. Rows are added and removed one at a time (O(1) amortised each); nothing is
rebuilt per change.

References
----------
Sivic & Zisserman, "Video Google: A Text Retrieval Approach to Object Matching in Videos", ICCV 2003
(the inverted file); Jégou, Douze & Schmid, "Product Quantization for Nearest Neighbor Search",
IEEE TPAMI 2011, section IV (IVF with exact re-ranking of the probed lists, here without the codes).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from models.heap import heap_offer, heap_order, heap_worse, sift_down
from models.jit import njit_cached
from models.topk import ranks_among, top_rows

__all__ = ["InvertedLists", "nearest_list", "train_centroids"]

_ASSIGN_CELLS = 1 << 23
"""(rows x centroids) float32 cells of scores held at once while assigning rows (32 MB; 8 MB took 1.5-3.5x as long
at 1M rows x 2,000 lists on the bench box, issue 14 session 27)."""
_PLACE_CELLS = 1 << 20
"""float32 cells of vectors ``InvertedLists._place`` gathers at once into a new block (4 MB)."""
_CODE_SCALE = 127.0
"""A held vector's int8 code is ``rint(x * 127)`` clipped to [-127, 127] (``_codes_of``): within ``0.5 / 127`` of
``x`` per element for unit vectors (``|x_d| <= 1``). A search scores each row's code first and computes its exact
score only where ``code score + bound`` can reach the heap's worst (``_score_lists_top``)."""
_CODES_UP_TO_K = 1024
"""A search reads the codes first for a top-k up to this k (an arm's candidates, a walk's first chunks); a deeper
top-k (a walk's 4,096-row chunk) keeps too many rows for the codes to pay (1.5 -> 1.6 ms at k 4,000, 1M rows)."""


def _codes_of(vecs: NDArray[np.float32]) -> NDArray[np.int8]:
    """int8 codes of vectors, shape as ``vecs``: ``rint(vecs * 127)`` clipped to [-127, 127] (one float32
    temporary the size of ``vecs``)."""
    tmp = np.multiply(vecs, np.float32(_CODE_SCALE), dtype=np.float32)
    np.rint(tmp, out=tmp)
    np.clip(tmp, -_CODE_SCALE, _CODE_SCALE, out=tmp)
    return tmp.astype(np.int8)


def nearest_list(vectors: NDArray[np.float32], centroids: NDArray[np.float32]) -> NDArray[np.int32]:
    """Index of each row's most similar centroid (largest dot product; ties: the lower index).

    Parameters
    ----------
    vectors : ndarray of shape (n_rows, dim), float32
    centroids : ndarray of shape (n_lists, dim), float32

    Returns
    -------
    ndarray of shape (n_rows,), int32.
    """
    out = np.empty(len(vectors), dtype=np.int32)
    step = max(_ASSIGN_CELLS // max(len(centroids), 1), 1)
    for lo in range(0, len(vectors), step):  # chunks of rows: bounded memory, each one BLAS call
        out[lo:lo + step] = np.argmax(vectors[lo:lo + step] @ centroids.T, axis=1)
    return out


def train_centroids(sample: NDArray[np.float32], n_lists: int, n_iter: int = 10, seed: int = 0
                    ) -> NDArray[np.float32]:
    """Spherical k-means (Lloyd's iterations with unit-length centroids) on ``sample``.

    Parameters
    ----------
    sample : ndarray of shape (n_sample, dim), float32
        Unit rows (cosine = dot product).
    n_lists : int
        Centroids wanted; at most ``n_sample`` are returned.
    n_iter : int
        Lloyd iterations after the initialisation (distinct sample rows drawn with ``seed``).
    seed : int
        Seed of the one ``np.random.default_rng`` used: the same sample and seed give the same centroids.

    Returns
    -------
    ndarray of shape (min(n_lists, n_sample), dim), float32, unit rows. A list that loses every
    row keeps its previous centroid.

    Raises
    ------
    ValueError
        If ``sample`` is not 2-D with at least one row, or ``n_lists < 1``.

    References
    ----------
    Dhillon & Modha, "Concept Decompositions for Large Sparse Text Data Using Clustering",
    Machine Learning 42, 2001 (spherical k-means).
    """
    if sample.ndim != 2 or len(sample) == 0:
        raise ValueError(f"sample must be 2-D with at least one row; got shape {sample.shape}")
    if n_lists < 1:
        raise ValueError(f"n_lists must be >= 1; got {n_lists}")
    rng = np.random.default_rng(seed)
    k = min(n_lists, len(sample))
    centroids = sample[np.sort(rng.choice(len(sample), k, replace=False))].astype(np.float32, copy=True)
    for _ in range(n_iter):
        assign = nearest_list(sample, centroids)
        sums = np.stack([np.bincount(assign, weights=sample[:, d], minlength=k) for d in range(sample.shape[1])],
                        axis=1)  # one bincount per dimension: short calls (a thread beside the event loop)
        norms = np.linalg.norm(sums, axis=1)
        ok = norms > 0
        centroids[ok] = (sums[ok] / norms[ok, None]).astype(np.float32)
    return centroids


class InvertedLists:
    """Unit vectors grouped by nearest centroid, each list a contiguous segment; exact ranking of probed lists.

    All lists share one block of row numbers and one of vector copies. List ``j`` is the segment
    ``[start[j], start[j] + count[j])`` with room up to ``start[j] + cap[j]``; a full list moves to the
    end of the block with twice the room, and the block is compacted when half of it is holes. So a
    probe reads each list's vectors in order (no gather of rows scattered over the catalog) in one
    compiled loop: ``dim * 5 + 12`` bytes per row (the vector, its int8 code, the row number and the row's
    list and position), up to ~4x that in room and holes. A search reads a row's 16-byte code (at 16 floats)
    and its 64-byte vector only where the code says the row may enter the top-k (``_score_lists_top``).

    Parameters
    ----------
    centroids : ndarray of shape (n_lists, dim), float32
        Unit rows, e.g. from :func:`train_centroids`.
    n_probe : int
        Lists of the first tier a query ranks exactly (recall against speed).

    Raises
    ------
    ValueError
        If ``n_probe < 1`` or ``centroids`` is not 2-D with at least one row.
    """

    def __init__(self, centroids: NDArray[np.float32], n_probe: int = 16) -> None:
        if centroids.ndim != 2 or len(centroids) == 0:
            raise ValueError(f"centroids must be 2-D with at least one row; got shape {centroids.shape}")
        if n_probe < 1:
            raise ValueError(f"n_probe must be >= 1; got {n_probe}")
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.n_probe = n_probe
        n_lists, dim = self.centroids.shape
        self._rows = np.zeros(0, dtype=np.int32)  # the block: row numbers
        self._vecs = np.zeros((0, dim), dtype=np.float32)  # the block: vector copies
        self._codes = np.zeros((0, dim), dtype=np.int8)  # the block: the vectors' int8 codes (_codes_of)
        self._max_abs = 0.0  # the largest |element| of any vector ever held (the codes' error beyond 1 clips)
        self._end = 0  # used part of the block (segments and holes)
        self._start = np.zeros(n_lists, dtype=np.int64)
        self._cap = np.zeros(n_lists, dtype=np.int64)
        self._count = np.zeros(n_lists, dtype=np.int64)
        self._list_of = np.full(0, -1, dtype=np.int32)  # row -> its list, -1 = not held
        self._pos_of = np.zeros(0, dtype=np.int32)  # row -> its position in its list
        self.n_rows = 0  # rows held

    @classmethod
    def from_assignment(cls, centroids: NDArray[np.float32], list_of: NDArray[np.int32],
                        vectors: NDArray[np.float32], n_probe: int = 16) -> InvertedLists:
        """Lists of a bulk assignment: ``list_of[row]`` is the row's list (-1: left out), ``vectors[row]`` its vector."""
        lists = cls(centroids, n_probe)
        # by list, rows ascending within a list (rows left out, -1, sort first and are cut): int32 copies only
        by_list = np.argsort(list_of, kind="stable")
        order = by_list[int(np.count_nonzero(list_of < 0)):].astype(np.int32)
        del by_list
        in_order = list_of[order]
        count = np.bincount(in_order, minlength=len(centroids)).astype(np.int64)
        lists._place(order, vectors, count, in_order, take=order)  # no gathered copy of the vectors
        lists._grow_rows(len(list_of))
        lists._list_of[:len(list_of)] = list_of
        return lists

    def _place(self, rows: NDArray[np.int32], vecs: NDArray[np.float32], count: NDArray[np.int64],
               lists: NDArray[np.int32], take: NDArray[np.integer] | None = None) -> None:
        """Lay out ``rows`` (grouped by list, ``count`` per list) in a new block with 25 % room per list; the
        vector of ``rows[i]`` is ``vecs[i]``, or ``vecs[take[i]]`` with ``take`` (copied over in chunks of
        ``_PLACE_CELLS``: never a gathered copy of every vector beside the new block, 64 MB at 1M 16-float rows;
        the block positions too are computed a chunk at a time, ~30 MB less at 1M rows than whole int64 arrays)."""
        cap = count + count // 4 + 4
        start = np.concatenate([[0], np.cumsum(cap)[:-1]]).astype(np.int64)
        first = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)  # index in ``rows`` of each list's first
        total = int(cap.sum())
        self._rows = np.zeros(total, dtype=np.int32)
        self._vecs = np.zeros((total, self.centroids.shape[1]), dtype=np.float32)
        self._codes = np.zeros((total, self.centroids.shape[1]), dtype=np.int8)
        if len(rows):
            self._grow_rows(int(rows.max()) + 1)
        step = max(_PLACE_CELLS // max(self.centroids.shape[1], 1), 1)
        for lo in range(0, len(rows), step):
            hi = min(lo + step, len(rows))
            part = lists[lo:hi]
            pos = np.arange(lo, hi, dtype=np.int64) - first[part]  # position within its list
            at = start[part] + pos
            self._rows[at] = rows[lo:hi]
            chunk = vecs[lo:hi] if take is None else vecs[take[lo:hi]]
            self._vecs[at] = chunk
            self._codes[at] = _codes_of(chunk)
            if chunk.size:
                self._max_abs = max(self._max_abs, float(chunk.max()), -float(chunk.min()))
            self._pos_of[rows[lo:hi]] = pos
        self._start, self._cap, self._count, self._end = start, cap, count.astype(np.int64), total
        self.n_rows = len(rows)

    def __len__(self) -> int:
        return self.n_rows

    def list_sizes(self) -> NDArray[np.int64]:
        """Rows held per list, shape (n_lists,)."""
        return self._count.copy()

    def nbytes(self) -> int:
        """Bytes of the block (room and holes included), the per-row maps and the centroids."""
        return (self._rows.nbytes + self._vecs.nbytes + self._codes.nbytes + self._list_of.nbytes + self._pos_of.nbytes
                + self.centroids.nbytes + 3 * self._start.nbytes)

    def _grow_rows(self, rows: int) -> None:
        if rows <= len(self._list_of):
            return
        cap = max(rows, 2 * len(self._list_of), 64)
        list_of = np.full(cap, -1, dtype=np.int32)
        pos_of = np.zeros(cap, dtype=np.int32)
        list_of[:len(self._list_of)] = self._list_of
        pos_of[:len(self._pos_of)] = self._pos_of
        self._list_of, self._pos_of = list_of, pos_of

    def vectors_of(self, rows: NDArray[np.integer]) -> NDArray[np.float32]:
        """The held vectors of ``rows`` (a copy, shape (len(rows), dim)); zeros for rows not held."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros((len(rows), self.centroids.shape[1]), dtype=np.float32)
        inside = rows < len(self._list_of)
        held = np.flatnonzero(inside)[self._list_of[rows[inside]] >= 0]
        r = rows[held]
        out[held] = self._vecs[self._start[self._list_of[r]] + self._pos_of[r]]
        return out

    def vector_of(self, row: int) -> NDArray[np.float32] | None:
        """The held vector of one ``row`` (a copy, shape (dim,)); None if the row is not held. What
        ``vectors_of([row])[0]`` gives for a held row, without its array set-up (a query's own vector,
        read once per request)."""
        if not self.holds(row):
            return None
        return self._vecs[self._start[self._list_of[row]] + self._pos_of[row]].copy()

    def holds(self, row: int) -> bool:
        return 0 <= row < len(self._list_of) and bool(self._list_of[row] >= 0)

    def add(self, row: int, vector: NDArray[np.float32]) -> None:
        """Hold ``row`` (a row held already is moved) with its unit ``vector`` of shape (dim,)."""
        self.remove(row)
        self._grow_rows(row + 1)
        j = int(np.argmax(self.centroids @ vector))
        if self._count[j] == self._cap[j]:
            self._relocate(j, 1)
        at = int(self._start[j] + self._count[j])
        self._rows[at] = row
        self._vecs[at] = vector
        self._codes[at] = _codes_of(vector)
        if vector.size:
            self._max_abs = max(self._max_abs, float(np.max(vector)), -float(np.min(vector)))
        self._list_of[row] = j
        self._pos_of[row] = self._count[j]
        self._count[j] += 1
        self.n_rows += 1

    def add_many(self, rows: NDArray[np.integer], vectors: NDArray[np.float32]) -> None:
        """Hold ``rows`` (none held yet) with their unit ``vectors`` of shape (len(rows), dim): a batch
        (install-time repairs) laid out again with the lists' rows in one pass."""
        rows = np.asarray(rows, dtype=np.int32)
        if len(rows) < 4096:  # a few: one at a time; many: one O(held) pass
            for i, row in enumerate(rows.tolist()):
                self.add(row, vectors[i])
            return
        held = np.flatnonzero(self._list_of >= 0).astype(np.int32)
        held_lists = self._list_of[held]
        at = self._start[held_lists] + self._pos_of[held]
        all_rows = np.concatenate([held, rows])
        all_lists = np.concatenate([held_lists, nearest_list(np.asarray(vectors, dtype=np.float32), self.centroids)])
        all_vecs = np.concatenate([self._vecs[at], vectors])
        order = np.lexsort((np.concatenate([self._pos_of[held], np.arange(len(rows)) + len(held)]), all_lists))
        count = np.bincount(all_lists, minlength=len(self.centroids)).astype(np.int64)
        self._grow_rows(int(rows.max()) + 1)
        self._list_of[all_rows] = all_lists
        self._place(all_rows[order], all_vecs, count, all_lists[order], take=order)

    def _relocate(self, j: int, more: int) -> None:
        """Move list ``j`` to the block's end with room for ``more`` rows (twice its room at least)."""
        count = int(self._count[j])
        cap = max(2 * int(self._cap[j]), count + more, 8)
        if self._end + cap > len(self._rows):
            used = int(self._count.sum())
            if used < (self._end + cap) // 2:  # half holes: lay every list out again, compact
                self._compact()
                if self._count[j] + more <= self._cap[j]:
                    return
            size = max(self._end + cap, 2 * len(self._rows), 64)
            rows = np.zeros(size, dtype=np.int32)
            vecs = np.zeros((size, self._vecs.shape[1]), dtype=np.float32)
            codes = np.zeros((size, self._vecs.shape[1]), dtype=np.int8)
            rows[:self._end] = self._rows[:self._end]
            vecs[:self._end] = self._vecs[:self._end]
            codes[:self._end] = self._codes[:self._end]
            self._rows, self._vecs, self._codes = rows, vecs, codes
        s0, s1 = int(self._start[j]), self._end
        self._rows[s1:s1 + count] = self._rows[s0:s0 + count]
        self._vecs[s1:s1 + count] = self._vecs[s0:s0 + count]
        self._codes[s1:s1 + count] = self._codes[s0:s0 + count]
        self._start[j], self._cap[j] = s1, cap
        self._end = s1 + cap

    def _compact(self) -> None:
        held = np.flatnonzero(self._list_of >= 0).astype(np.int32)
        lists = self._list_of[held]
        order = np.lexsort((self._pos_of[held], lists))
        held, lists = held[order], lists[order]
        at = self._start[lists] + self._pos_of[held]
        self._place(held, self._vecs, self._count.copy(), lists, take=at)  # reads the old block while filling a new one

    def remove(self, row: int) -> None:
        """Stop holding ``row`` (O(1): the list's last row takes its place); a row not held is ignored."""
        if not self.holds(row):
            return
        j, p = int(self._list_of[row]), int(self._pos_of[row])
        s, last = int(self._start[j]), int(self._count[j]) - 1
        if p != last:
            moved = int(self._rows[s + last])
            self._rows[s + p] = moved
            self._vecs[s + p] = self._vecs[s + last]
            self._codes[s + p] = self._codes[s + last]
            self._pos_of[moved] = p
        self._count[j] = last
        self._list_of[row] = -1
        self.n_rows -= 1

    def remove_many(self, rows: NDArray[np.integer]) -> None:
        """Stop holding ``rows`` (rows not held are ignored)."""
        for row in np.asarray(rows).tolist():  # O(1) each; install-time repairs only, never per request
            self.remove(row)

    def search(self, query: NDArray[np.float32], n: int, exclude_row: int = -1
               ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """The first ``n`` rows of the tiered ranking for ``query``, best first.

        Tier 0 is the ``n_probe`` lists whose centroids are most similar to ``query``; tier ``t``
        the next ``n_probe * 4**t`` lists in that order. Each tier's rows are ranked by their
        vector's dot product with ``query`` (ties: the lower row) and follow the previous tier's,
        so the answer for ``n`` is a prefix of the answer for any larger ``n``. Only the tiers
        needed for ``n`` rows are scored.

        Parameters
        ----------
        query : ndarray of shape (dim,), float32
        n : int
            Rows wanted (fewer come back when the lists hold fewer).
        exclude_row : int
            A row never returned (the query item's own); -1 for none.

        Returns
        -------
        (rows, scores) : int32 and float32 arrays of shape (<= n,).
        """
        query = np.ascontiguousarray(query, dtype=np.float32)
        code_err = self._code_error(query) if n <= _CODES_UP_TO_K else -1.0
        near = self.centroids @ query
        lists = np.arange(len(near))
        # tier 0 by a partial sort, ties at its cut by the lower list (so it is the whole order's prefix);
        # the whole order (the same rule) only for deeper tiers
        order = top_rows(lists, near, self.n_probe)[0]
        out_rows: list[NDArray[np.int32]] = []
        out_scores: list[NDArray[np.float32]] = []
        got, start, width = 0, 0, self.n_probe
        while got < n and start < len(near):
            if start >= len(order):
                order = np.lexsort((lists, -near))
            tier = order[start:start + width]
            start, width = start + width, width * 4
            # the tier's best n - got rows as top_rows(*_score_lists(...), n - got), in one pass: no array of the
            # tier's (~26,000 at 1M rows, n_probe 48) scores and rows is written and read again
            rows, scores = _score_lists_top(self._rows, self._vecs, self._start, self._count, tier, query,
                                            exclude_row, n - got, self._codes, code_err)
            if len(rows) == 0:
                continue
            out_rows.append(rows)
            out_scores.append(scores)
            got += len(rows)
        if not out_rows:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        return (np.concatenate(out_rows).astype(np.int32, copy=False),
                np.concatenate(out_scores).astype(np.float32, copy=False))


    def _code_error(self, query: NDArray[np.float32]) -> float:
        """A bound on ``|query · x - (query / 127) · code(x)|`` over held vectors ``x``, float rounding of both sums
        included: ``0.5 / 127`` per element (more where a vector's elements exceed 1 and were clipped) times
        ``sum |query|``, plus a margin (1e-4 per unit of ``sum |query|``) far above float32's rounding of 16-64
        products (~1e-6). 1e30 (no row is skipped; a finite value, as the kernel's fast math assumes) when the
        query or a held vector is not finite."""
        l1 = float(np.abs(query).sum(dtype=np.float64))
        err = l1 * (0.5 / _CODE_SCALE + max(self._max_abs - 1.0, 0.0)) + 1e-4 * (1.0 + l1)
        return err if np.isfinite(err) and np.isfinite(self._max_abs) else 1e30

    def positions(self, query: NDArray[np.float32], wanted: NDArray[np.integer], exclude_row: int = -1
                  ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float32], int]:
        """Where the rows ``wanted`` sit in the whole tiered ranking ``search(query, len(self))`` gives,
        without sorting it: every tier is scored as ``search`` scores it and each wanted row's rank within
        its tier counted (``models.topk.ranks_among``). Rows the ranking does not hold (not in the lists,
        ``exclude_row``) are left out.

        Returns
        -------
        (positions, rows, scores, total) : positions ascending (int64), the rows at them (int32) and
        their scores (float32); ``total`` the whole ranking's length.
        """
        query = np.ascontiguousarray(query, dtype=np.float32)
        wanted = np.asarray(wanted, dtype=np.int64)
        near = self.centroids @ query
        lists = np.arange(len(near))
        order = np.lexsort((lists, -near))  # search's order of the lists (its tier 0 is this order's prefix)
        pos: list[NDArray[np.int64]] = []
        out_rows: list[NDArray[np.int32]] = []
        out_scores: list[NDArray[np.float32]] = []
        offset, start, width = 0, 0, self.n_probe
        while start < len(near):
            tier = order[start:start + width]
            start, width = start + width, width * 4
            cand, scores = _score_lists(self._rows, self._vecs, self._start, self._count, tier, query, exclude_row)
            at = np.flatnonzero(np.isin(cand, wanted))
            ranks, values = ranks_among(cand, scores, at)
            pos.append(offset + ranks)
            out_rows.append(cand[at])
            out_scores.append(values)
            offset += len(cand)
        if not pos:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32), 0
        p, r, v = np.concatenate(pos), np.concatenate(out_rows), np.concatenate(out_scores)
        by = np.argsort(p, kind="stable")
        return p[by], r[by].astype(np.int32, copy=False), v[by].astype(np.float32, copy=False), offset


@njit_cached(fastmath=True, inline="always")
def _row_dot(vecs: NDArray[np.float32], i: int, query: NDArray[np.float32]) -> np.float32:  # pragma: no cover - compiled
    """``vecs[i] · query`` in float32, summed as both scoring kernels sum it (inlined into them)."""
    acc = np.float32(0.0)
    for d in range(vecs.shape[1]):
        acc += vecs[i, d] * query[d]
    return acc


@njit_cached(fastmath=True)
def _score_lists(rows: NDArray[np.int32], vecs: NDArray[np.float32], start: NDArray[np.int64],
                 count: NDArray[np.int64], lists: NDArray[np.int64], query: NDArray[np.float32], exclude_row: int
                 ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:  # pragma: no cover - compiled
    """Rows of ``lists`` (segments of the block) and their dot products with ``query``, ``exclude_row`` left out."""
    total = 0
    for j in lists:
        total += count[j]
    out_rows = np.empty(total, dtype=np.int32)
    out = np.empty(total, dtype=np.float32)
    k = 0
    for j in lists:
        s = start[j]
        for i in range(s, s + count[j]):
            r = rows[i]
            if r == exclude_row:
                continue
            out_rows[k] = r
            out[k] = _row_dot(vecs, i, query)
            k += 1
    return out_rows[:k], out[:k]


@njit_cached(fastmath=True)
def _score_lists_top(rows: NDArray[np.int32], vecs: NDArray[np.float32], start: NDArray[np.int64],
                     count: NDArray[np.int64], lists: NDArray[np.int64], query: NDArray[np.float32], exclude_row: int,
                     k: int, codes: NDArray[np.int8], code_err: float
                     ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:  # pragma: no cover - compiled
    """``top_rows(*_score_lists(rows, vecs, start, count, lists, query, exclude_row), k)``: each row's dot product
    computed as ``_score_lists`` computes it and offered to ``models.heap``'s bounded heap as ``top_rows`` offers
    it, so the same rows and scores in the same order (score descending, ties by the lower row).

    Once the heap is full, a row's int8 code (``codes``, ``_codes_of``) is scored first (16 bytes a row read
    instead of 64 at 16 floats); a row whose code score plus ``code_err`` (a bound on the code's error,
    ``InvertedLists._code_error``) is below the heap's worst score cannot enter it (its exact score is lower), so
    its exact score is not computed: the heap, and so the answer, is the one every row offered gives. A negative
    ``code_err``: the codes are not read (every row scored exactly)."""
    total = 0
    for j in lists:
        total += count[j]
    cap = max(min(k, total), 0)
    hs = np.empty(cap, dtype=np.float64)
    hi = np.empty(cap, dtype=np.int64)
    if cap == 0:
        return hi, hs.astype(np.float32)
    q_code = np.empty(query.shape[0], dtype=np.float32)
    for d in range(query.shape[0]):
        q_code[d] = query[d] / np.float32(127.0)
    size = 0
    for j in lists:
        s = start[j]
        for i in range(s, s + count[j]):
            if size == cap and code_err >= 0.0:  # full: a row whose code cannot reach the worst entry is skipped
                approx = np.float32(0.0)
                for d in range(codes.shape[1]):
                    approx += np.float32(codes[i, d]) * q_code[d]
                if np.float64(approx) + code_err < hs[0]:
                    continue
            r = rows[i]
            if r == exclude_row:
                continue
            sc, ri = np.float64(_row_dot(vecs, i, query)), np.int64(r)
            if size < cap:
                size = heap_offer(hs, hi, size, cap, sc, ri)
            elif heap_worse(hs[0], hi[0], sc, ri):
                hs[0], hi[0] = sc, ri
                sift_down(hs, hi, size)
    order = heap_order(hs, hi, size)
    return hi[order], hs[order].astype(np.float32)
