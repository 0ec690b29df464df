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

__all__ = ["InvertedLists", "nearest_list", "train_centroids"]

_ASSIGN_CELLS = 1 << 23
"""(rows x centroids) float32 cells of scores held at once while assigning rows (32 MB)."""


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
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, sample)
        norms = np.linalg.norm(sums, axis=1)
        ok = norms > 0
        centroids[ok] = sums[ok] / norms[ok, None]
    return centroids


class InvertedLists:
    """Unit vectors grouped by nearest centroid, each list a contiguous block; exact ranking of probed lists.

    Each list keeps its rows' numbers and a copy of their vectors in one growing block (capacity
    doubles), so a probe reads memory in order instead of gathering rows scattered over the whole
    catalog: ``dim * 4 + 12`` bytes per row, up to twice that in list slack.

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
        self._rows: list[NDArray[np.int32]] = [np.zeros(0, dtype=np.int32) for _ in range(n_lists)]
        self._vecs: list[NDArray[np.float32]] = [np.zeros((0, dim), dtype=np.float32) for _ in range(n_lists)]
        self._count = np.zeros(n_lists, dtype=np.int64)
        self._list_of = np.full(0, -1, dtype=np.int32)  # row -> its list, -1 = not held
        self._pos_of = np.zeros(0, dtype=np.int32)  # row -> its position in its list
        self.n_rows = 0  # rows held

    @classmethod
    def from_assignment(cls, centroids: NDArray[np.float32], list_of: NDArray[np.int32],
                        vectors: NDArray[np.float32], n_probe: int = 16) -> InvertedLists:
        """Lists of a bulk assignment: ``list_of[row]`` is the row's list (-1: left out), ``vectors[row]`` its vector."""
        lists = cls(centroids, n_probe)
        rows = np.flatnonzero(list_of >= 0).astype(np.int32)
        order = rows[np.argsort(list_of[rows], kind="stable")]  # by list, rows ascending within a list
        bounds = np.searchsorted(list_of[order], np.arange(len(centroids) + 1))
        vecs = vectors[order]
        lists._rows = [order[bounds[j]:bounds[j + 1]].copy() for j in range(len(centroids))]
        lists._vecs = [vecs[bounds[j]:bounds[j + 1]].copy() for j in range(len(centroids))]
        lists._count = np.diff(bounds).astype(np.int64)
        lists._grow_rows(len(list_of))
        lists._list_of[:len(list_of)] = list_of
        pos = np.arange(len(order), dtype=np.int32) - bounds[list_of[order]].astype(np.int32)
        lists._pos_of[order] = pos
        lists.n_rows = len(rows)
        return lists

    def __len__(self) -> int:
        return self.n_rows

    def list_sizes(self) -> NDArray[np.int64]:
        """Rows held per list, shape (n_lists,)."""
        return self._count.copy()

    def nbytes(self) -> int:
        """Bytes of the lists' arrays (slack included) and the per-row maps."""
        return (sum(r.nbytes + v.nbytes for r, v in zip(self._rows, self._vecs))
                + self._list_of.nbytes + self._pos_of.nbytes + self.centroids.nbytes)

    def _grow_rows(self, rows: int) -> None:
        if rows <= len(self._list_of):
            return
        cap = max(rows, 2 * len(self._list_of), 64)
        list_of = np.full(cap, -1, dtype=np.int32)
        pos_of = np.zeros(cap, dtype=np.int32)
        list_of[:len(self._list_of)] = self._list_of
        pos_of[:len(self._pos_of)] = self._pos_of
        self._list_of, self._pos_of = list_of, pos_of

    def holds(self, row: int) -> bool:
        return 0 <= row < len(self._list_of) and bool(self._list_of[row] >= 0)

    def add(self, row: int, vector: NDArray[np.float32]) -> None:
        """Hold ``row`` (a row held already is moved) with its unit ``vector`` of shape (dim,)."""
        self.remove(row)
        self._grow_rows(row + 1)
        self._append(int(np.argmax(self.centroids @ vector)), np.array([row], dtype=np.int32), vector.reshape(1, -1))
        self.n_rows += 1

    def add_many(self, rows: NDArray[np.integer], vectors: NDArray[np.float32],
                 lists: NDArray[np.int32] | None = None) -> None:
        """Hold ``rows`` (none held yet: :meth:`remove` them first) with their unit ``vectors`` of shape
        (len(rows), dim), each in its nearest centroid's list (``lists`` when the caller has them)."""
        rows = np.asarray(rows, dtype=np.int32)
        if len(rows) == 0:
            return
        self._grow_rows(int(rows.max()) + 1)
        if lists is None:
            lists = nearest_list(np.asarray(vectors, dtype=np.float32).reshape(len(rows), -1), self.centroids)
        for j in (np.unique(lists) if len(lists) > 1 else lists):  # the lists this batch touches
            mine = lists == j
            self._append(int(j), rows[mine], vectors[mine])
        self.n_rows += len(rows)

    def _append(self, j: int, rows: NDArray[np.int32], vectors: NDArray[np.float32]) -> None:
        count, m = int(self._count[j]), len(rows)
        if count + m > len(self._rows[j]):  # double the list's block
            cap = max(count + m, 2 * len(self._rows[j]), 8)
            r = np.zeros(cap, dtype=np.int32)
            v = np.zeros((cap, self.centroids.shape[1]), dtype=np.float32)
            r[:count] = self._rows[j][:count]
            v[:count] = self._vecs[j][:count]
            self._rows[j], self._vecs[j] = r, v
        self._rows[j][count:count + m] = rows
        self._vecs[j][count:count + m] = vectors
        self._list_of[rows] = j
        self._pos_of[rows] = np.arange(count, count + m, dtype=np.int32)
        self._count[j] = count + m

    def remove(self, row: int) -> None:
        """Stop holding ``row`` (O(1): the list's last row takes its place); a row not held is ignored."""
        if not self.holds(row):
            return
        j, p = int(self._list_of[row]), int(self._pos_of[row])
        last = int(self._count[j]) - 1
        if p != last:
            moved = int(self._rows[j][last])
            self._rows[j][p] = moved
            self._vecs[j][p] = self._vecs[j][last]
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
        order = np.argsort(-(self.centroids @ query), kind="stable")
        out_rows: list[NDArray[np.int32]] = []
        out_scores: list[NDArray[np.float32]] = []
        got, start, width = 0, 0, self.n_probe
        count = self._count
        while got < n and start < len(order):
            tier = [int(j) for j in order[start:start + width] if count[j]]
            start, width = start + width, width * 4
            if not tier:
                continue
            cand = np.concatenate([self._rows[j][:count[j]] for j in tier])
            scores = np.concatenate([self._vecs[j][:count[j]] for j in tier]) @ query
            if exclude_row >= 0:
                keep = cand != exclude_row
                cand, scores = cand[keep], scores[keep]
            rows, scores = _top_by_score(cand, scores, n - got)
            out_rows.append(rows)
            out_scores.append(scores)
            got += len(rows)
        if not out_rows:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        return (np.concatenate(out_rows).astype(np.int32, copy=False),
                np.concatenate(out_scores).astype(np.float32, copy=False))


def _top_by_score(rows: NDArray[np.int32], scores: NDArray[np.float32], k: int
                  ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """The ``k`` best (rows, scores) by score descending, ties by the lower row (the same at any ``k``)."""
    if k < len(scores):
        cut = len(scores) - k
        thr = np.partition(scores, cut)[cut]  # the k-th largest score
        above = np.flatnonzero(scores > thr)
        tied = np.flatnonzero(scores == thr)
        tied = tied[np.argsort(rows[tied], kind="stable")[:k - len(above)]]
        keep = np.concatenate([above, tied])
        rows, scores = rows[keep], scores[keep]
    order = np.lexsort((rows, -scores))
    return rows[order], scores[order]
