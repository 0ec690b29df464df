"""Nearest neighbours in a vector modality of the catalog (cosine; exact below a size, IVF above).

Items may carry a dense vector attribute (image embedding or any other modality). Rows are
L2-normalised when set, into one growing float32 matrix (no copy per catalog change).

Below ``exact_below`` live rows a query is one matrix-vector product and an ``argpartition``
(exact). From ``exact_below`` rows on, a query ranks the rows of the nearest inverted lists
(``models.ivf``: k-means coarse lists, exact re-ranking of the probed rows; O(n_probe x rows per
list), ~24k rows at 1M items, in one compiled loop; the lists copy the vectors and their int8 codes, ``dim * 5 + 12``
bytes per row plus room). Once installed lists hold every live row, the matrix is dropped and the
lists hold the only copy (67 MB less at 1M 16-float rows); it is rebuilt from them, with the same
float32 values, when a new build or an exact query needs it (``_matrix``). The lists are trained in a background thread when the index first
reaches ``exact_below`` rows and again each time it has grown ``4x`` since, and installed by the next
``set``/``delete`` or ``install_ready`` (never inside a query, so one request's chunks see one
ranking); until then queries use the previous lists (or the exact scan). Each ``set``/``delete``
moves one row in the installed lists at once (O(1) amortised), so a new or changed item is
findable by the next query and a deleted item is never returned.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Mapping

import numpy as np
from numpy.typing import NDArray

from models.ivf import InvertedLists, nearest_list, train_centroids
from models.topk import ranks_among, topk
from operators.catalog_rule import CatalogValueError, check_vector
from operators.id_index import IdIndex
from operators.topic_table import release_free_heap

__all__ = ["VectorIndex"]

log = logging.getLogger(__name__)


class VectorIndex:
    """item_id -> unit vector; ``similar(item_id, n)`` by cosine similarity.

    Parameters
    ----------
    dim : int or None
        Vector length; taken from the first vector when None. Vectors of another length are
        refused (logged, the item is left out).
    exact_below : int
        Live rows below which every query is exact (``api.vector_exact_below``); from it on, the
        approximate inverted lists answer once built.
    n_probe : int
        Inverted lists a query ranks exactly first (recall against cost; see ``models.ivf``).
    seed : int
        Seed of the k-means sample and initialisation: the same changes in the same order give
        the same lists and answers.
    keep_matrix : bool
        Keep the row matrix beside installed lists (tests that compare the two layouts); by default
        it is dropped once the lists hold every live row.
    background : bool
        Train the lists in a background thread (the default: the event loop is not held for the
        seconds a 1M-row build takes); False builds them inside the ``set`` that crosses a size
        (tests, offline use: answers then never depend on timing).
    build_gate : threading.Event or None
        A background build trains its centroids and assigns every row at once (CPU, little memory), then
        waits until the gate is set (at most ``gate_wait_s``) before it lays out the new lists (~100 MB
        beside the row matrix at 1M rows); queries stay exact (or on the previous lists) meanwhile. The API
        holds the layout of the first build of a 1M-row catalog until the model version has loaded, so the
        two peaks (the new block, ~250 MB of version while it loads) do not add up (``api.app``;
        bench/RESULTS.md, issue 14). None: no wait.
    gate_wait_s : float
        The longest a build waits for ``build_gate`` (then it lays the lists out anyway).
    """

    def __init__(self, dim: int | None = None, *, exact_below: int = 50_000, n_probe: int = 48, seed: int = 0,
                 background: bool = True, keep_matrix: bool = False, build_gate: threading.Event | None = None,
                 gate_wait_s: float = 120.0) -> None:
        self.dim = dim
        self.exact_below = exact_below
        self.n_probe = n_probe
        self.seed = seed
        self.background = background
        self.keep_matrix = keep_matrix
        self.build_gate, self.gate_wait_s = build_gate, gate_wait_s
        self._ivf: InvertedLists | None = None
        self._built_rows = 0  # live rows when the installed (or building) lists were started
        self._build: _Build | None = None  # a background build not installed yet
        self._generation = 0  # lists installed so far
        self._ids: list[str] = []
        self._row = IdIndex(self._ids)  # item_id -> row in flat arrays (a dict cost ~59 B per row more)
        # rows in one growing float32 buffer (capacity doubles): ~dim * 4 bytes per item, where a list
        # of per-item arrays cost ~110 bytes more each and a vstack copy of the whole matrix per change;
        # None while installed lists hold every live row's vector (the only copy then; see _matrix)
        self._buf: NDArray[np.float32] | None = None
        self._live_buf = np.zeros(0, dtype=bool)
        self._n_live = 0
        self._dead: NDArray[np.intp] | None = None  # rows not live, kept until a row changes liveness

    def __len__(self) -> int:
        return self._n_live

    def set(self, item_id: str, vector: object) -> bool:
        """Insert or replace an item's vector; False (and logged, the item's vector dropped) if it is not a
        flat array of ``dim`` finite numbers (``operators.catalog_rule.check_vector``) or has norm 0."""
        try:  # the catalog rule's vector check (operators/catalog_rule.py), as the catalog applies it
            v = check_vector("vector", vector, self.dim)
        except CatalogValueError as exc:
            log.warning("item %r: %s; left out of visual similarity", item_id, exc)
            self.delete(item_id)
            return False
        if self.dim is None:
            self.dim = int(v.size)
        norm = float(np.linalg.norm(v))
        if math.isinf(norm):  # float32 overflowed (elements beyond ~1.8e19): the norm in float64
            w = v.astype(np.float64)
            norm = math.sqrt(float(w @ w))
        if not np.isfinite(norm) or norm == 0.0:
            log.warning("item %r: vector has norm %s; left out of visual similarity", item_id, norm)
            self.delete(item_id)
            return False
        row = self._row.get(item_id)
        if row is None:
            row = self._row.add(item_id)
            self._grow(row + 1)
        v = v / norm
        if self._buf is not None:
            self._buf[row] = v
        if not self._live_buf[row]:
            self._live_buf[row] = True
            self._n_live += 1
            self._dead = None
        self._install()
        if self._build is not None and row < self._build.n_rows:  # later rows are all re-placed anyway
            self._build.touched.append(row)
        if self._ivf is not None:
            self._ivf.add(row, v)
        self._maybe_build()
        return True

    def _grow(self, rows: int) -> None:
        """Room for ``rows`` rows (capacity doubled, so n inserts copy O(n) rows in all); the matrix only while
        it is kept (``_buf``), the liveness flags always."""
        cap = len(self._live_buf)
        if rows <= cap:
            return
        new_cap = max(rows, 2 * cap, 64)
        live = np.zeros(new_cap, dtype=bool)
        live[:cap] = self._live_buf
        if self._buf is not None or cap == 0:
            buf = np.zeros((new_cap, self.dim or 0), dtype=np.float32)
            if self._buf is not None:
                buf[:len(self._buf)] = self._buf
            self._buf = buf
        self._live_buf = live

    def _matrix(self) -> NDArray[np.float32]:
        """Every row's unit vector (a view of the kept matrix; rows not live may hold anything). Rebuilt from
        the installed lists if it was dropped (the same float32 values: the lists copied them), and kept
        until lists are installed again."""
        if self._buf is None:
            assert self._ivf is not None
            self._buf = self._ivf.vectors_of(np.arange(len(self._live_buf)))
        return self._buf

    def _vector(self, row: int) -> NDArray[np.float32]:
        """One live row's unit vector, from the matrix or, once it was dropped, from the lists."""
        if self._buf is not None:
            return self._buf[row]
        assert self._ivf is not None
        vector = self._ivf.vector_of(row)  # O(1): one row, no arrays set up for a batch of rows
        return vector if vector is not None else np.zeros(self._ivf.centroids.shape[1], dtype=np.float32)

    def delete(self, item_id: str) -> None:
        """Drop an item's vector (unknown ids are ignored); never returned by a query after this."""
        row = self._row.get(item_id)
        if row is not None and self._live_buf[row]:
            self._live_buf[row] = False
            self._n_live -= 1
            self._dead = None
            self._install()
            if self._build is not None and row < self._build.n_rows:
                self._build.touched.append(row)
            if self._ivf is not None:
                self._ivf.remove(row)

    def set_exact_below(self, exact_below: int, *, in_line: bool = False) -> None:
        """Change ``exact_below`` (``api.vector_exact_below``); a build starts now if the index is already that large.

        ``in_line``: that build runs on this thread and is installed before this returns (the row matrix dropped),
        whatever ``background`` says; ``api.catalog.CatalogView.load_initial`` builds the first lists so on the
        catalog reader thread, before the index is served (later builds follow ``background``)."""
        self.exact_below = exact_below
        self._maybe_build(in_line=in_line)

    @property
    def approximate(self) -> bool:
        """True when queries are answered by the inverted lists (``exact_below`` live rows or more, lists installed)."""
        return self._ivf is not None and self._n_live >= self.exact_below

    @property
    def ranking_key(self) -> int:
        """Changes whenever the order queries rank in may change without an item changing: 0 while exact,
        else the installed lists' generation (1, 2, ...). Caches of answers key on it with the catalog version."""
        return self._generation if self.approximate else 0

    def install_ready(self) -> bool:
        """Install a finished background build (True if one was installed).

        Called by ``set``/``delete`` and by the caller at a point where the ranking may change (the start
        of a request: ``api.strategies.ranking_source``), never by a query, so the calls of one request
        that walk a ranking in chunks all see the same lists.
        """
        generation = self._generation
        self._install()
        return self._generation != generation

    def wait_built(self, timeout_s: float | None = None) -> bool:
        """Wait for a background build and install it; False if it is still running after ``timeout_s``."""
        build = self._build
        if build is not None and not build.done.wait(timeout_s):
            return False
        self._install()
        return True

    def _maybe_build(self, in_line: bool = False) -> None:
        """Start a build when the live rows reach ``exact_below`` (first) or 4x the last build's rows (on this thread,
        installed at once, if ``in_line`` or not ``background``)."""
        n = self._n_live
        if self._build is not None or n < max(self.exact_below, 1) or (self._ivf is not None and n < 4 * self._built_rows):
            return
        n_rows = len(self._ids)
        live = np.flatnonzero(self._live_buf[:n_rows])
        # 2 sqrt(n) lists of ~sqrt(n) / 2 rows; 48 probed at 1M rows: recall@257 0.99, ~0.3 ms (bench/RESULTS.md)
        n_lists = int(np.clip(round(2 * np.sqrt(n)), 16, 8192))
        rng = np.random.default_rng(self.seed)
        sample_rows = np.sort(rng.choice(live, min(len(live), 64 * n_lists), replace=False))
        matrix = self._matrix()  # kept while the build runs (_install reads it)
        build = _Build(matrix, n_rows, self._live_buf[:n_rows].copy(), matrix[sample_rows], n_lists,
                       self.n_probe, self.seed)
        background = self.background and not in_line
        if background and self.build_gate is not None:
            build.gate, build.gate_wait_s = self.build_gate, self.gate_wait_s
        self._build, self._built_rows = build, n
        if background:
            threading.Thread(target=build.run, name="vector-index-build", daemon=True).start()
        else:
            build.run()
            self._install()

    def _install(self) -> None:
        """Install a finished build: rows changed or added since it started are re-placed (on this thread)."""
        build = self._build
        if build is None or not build.done.is_set():
            return
        self._build = None
        if build.lists is None:
            log.error("vector index: building the inverted lists failed; keeping %s",
                      "the previous lists" if self._ivf is not None else "exact search")
            return
        lists = build.lists
        n_rows = len(self._ids)
        fix = np.unique(np.concatenate([np.asarray(build.touched, dtype=np.int64),
                                        np.arange(build.n_rows, n_rows)])).astype(np.int32)
        lists.remove_many(fix)
        fix = fix[self._live_buf[fix]]
        assert self._buf is not None
        lists.add_many(fix, self._buf[fix])
        self._ivf = lists
        self._generation += 1
        if not self.keep_matrix:  # the lists now hold every live row: their copy is the only one
            self._buf = None
        log.info("vector index: %d inverted lists over %d rows installed (%d rows re-placed)",
                 len(lists.centroids), len(lists), len(fix))

    @property
    def ids(self) -> list[str]:
        """item_id of each row (rows are never reused: an id keeps its row while the index lives)."""
        return self._ids

    @property
    def row_index(self) -> Mapping[str, int]:
        """item_id -> its row (read it, never change it)."""
        return self._row

    def similar_rows(self, item_id: str, n: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """As ``similar``, with rows (``ids[row]`` is the item_id) instead of ids: no string per item.

        Exact: the ``n`` best rows by cosine (ties: the lower row). Approximate (``approximate``):
        the first ``n`` of the inverted lists' tiered ranking (``models.ivf.InvertedLists.search``),
        which is one fixed order for a given catalog, so a smaller ``n`` gives a prefix of a larger one.
        """
        row = self._row.get(item_id)
        if row is None or not self._live_buf[row]:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        n_rows = len(self._ids)
        if self.approximate:
            assert self._ivf is not None
            return self._ivf.search(self._vector(row), n, exclude_row=row)
        matrix = self._matrix()[:n_rows]  # a view: no copy
        scores = matrix @ matrix[row]
        if self._dead is None or (len(self._dead) and self._dead[-1] >= n_rows):
            self._dead = np.flatnonzero(~self._live_buf[:n_rows])
        scores[self._dead] = -np.inf  # usually few rows: no pass over a mask of every row
        scores[row] = -np.inf
        idx, val = topk(scores[None, :], n)
        keep = idx[0] >= 0
        return idx[0][keep], val[0][keep]

    def ranking_positions(self, item_id: str, item_ids: Iterable[str]
                          ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float32], int]:
        """Where ``item_ids`` sit in the whole ranking ``similar_rows(item_id, len(self))`` gives, without
        ranking every row (``InvertedLists.positions``; exact: every row scored, each wanted row's rank
        counted by ``models.topk.ranks_among``): O(rows) + O(rows x log len(item_ids)), no sort of the catalog.

        Returns
        -------
        (positions, rows, scores, total) : positions ascending (int64), the rows there (int32) and their
        scores (float32), and the whole ranking's length; ids without a live vector are left out.
        """
        row = self._row.get(item_id)
        empty = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32), 0
        if row is None or not self._live_buf[row]:
            return empty
        get = self._row.get
        wanted = np.fromiter((r for r in map(get, item_ids) if r is not None), dtype=np.int64)
        n_rows = len(self._ids)
        if self.approximate:
            assert self._ivf is not None
            return self._ivf.positions(self._vector(row), wanted, exclude_row=row)
        matrix = self._matrix()[:n_rows]
        ranked = np.flatnonzero(self._live_buf[:n_rows])
        ranked = ranked[ranked != row]
        scores = (matrix @ matrix[row])[ranked]  # the product similar_rows takes (the same float32 values)
        at = np.flatnonzero(np.isin(ranked, wanted))
        ranks, values = ranks_among(ranked, scores, at)
        by = np.argsort(ranks, kind="stable")
        return ranks[by], ranked[at][by].astype(np.int32), values[by], len(ranked)

    def similar(self, item_id: str, n: int) -> tuple[list[str], NDArray[np.float32]]:
        """The ``n`` items with the most similar vectors (the item itself excluded), best first.

        Returns ``([], empty)`` when the item has no vector.
        """
        rows, val = self.similar_rows(item_id, n)
        return [self._ids[i] for i in rows], val


class _Build:
    """One training of inverted lists over a snapshot of the rows (run on any thread; reads only).

    Rows the caller changes while it runs are listed in ``touched`` (by the caller's thread) and
    re-placed when it is installed; a row read while being written is among them.
    """

    def __init__(self, buf: NDArray[np.float32], n_rows: int, live: NDArray[np.bool_], sample: NDArray[np.float32],
                 n_lists: int, n_probe: int, seed: int) -> None:
        self.buf, self.n_rows, self.live, self.sample = buf, n_rows, live, sample
        self.n_lists, self.n_probe, self.seed = n_lists, n_probe, seed
        self.touched: list[int] = []
        self.lists: InvertedLists | None = None
        self.done = threading.Event()
        self.gate: threading.Event | None = None  # waited for (at most gate_wait_s) before the work starts
        self.gate_wait_s = 0.0

    def run(self) -> None:
        try:
            centroids = train_centroids(self.sample, self.n_lists, seed=self.seed)
            list_of = nearest_list(self.buf[:self.n_rows], centroids)
            list_of[~self.live] = -1
            if self.gate is not None and not self.gate.wait(self.gate_wait_s):  # the layout's memory waits
                log.warning("vector index: the build gate was not opened in %.0f s; laying out the lists now",
                            self.gate_wait_s)
            self.lists = InvertedLists.from_assignment(centroids, list_of, self.buf[:self.n_rows], self.n_probe)
            # the first search compiles its kernels (~1 s on a machine with no numba cache): here, not on the event loop
            self.lists.search(self.sample[0], 1)
        except Exception:  # logged; the index keeps its previous lists (or exact search)
            log.exception("vector index: building %d inverted lists over %d rows failed", self.n_lists, self.n_rows)
        finally:
            self.buf = self.sample = self.live = None  # type: ignore[assignment]
            release_free_heap()  # the assignment's temporaries (~100 MB at 1M rows) stay in the heap otherwise
            self.done.set()
