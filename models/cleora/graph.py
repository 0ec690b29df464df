"""Cleora graphs from hyperedge rows: clique expansion done in sparse algebra, star via a transient column.

A row holds one field per column (see ``columns.py``). Edge weights follow Cleora: for a
relation between fields of sizes ``|A|`` and ``|B|`` each pair ``(a, b)`` gets ``1/(|A||B|)``;
a reflexive field ``A`` is linked to itself, so each of its ``|A|²`` ordered pairs (its diagonal
included, exactly as pycleora 3.2.1 does) gets ``1/|A|²``. The exploded pair list is never
written: with ``G`` the (rows × nodes) incidence counts of a field and ``W`` the diagonal of
row weights, the adjacency is ``Gᵀ W G`` (reflexive) or ``G₁ᵀ W G₂ + (G₁ᵀ W G₂)ᵀ`` (two columns),
computed by scipy's sparse product.

Defined behaviour for awkward input:

* duplicate rows add up (repeated baskets are a stronger tie); a label repeated inside a field
  counts with its multiplicity (as in pycleora);
* a row without two distinct nodes (a one-node hyperedge, a self-loop ``a a``, an empty field)
  carries no edge: it is dropped and counted in ``Graph.n_dropped``;
* a field wider than ``max_hyperedge_size`` is cut to that many members chosen by a hash of
  (member, row content) — deterministic, independent of line order, and different for each
  hyperedge, so no node is systematically favoured — and counted in ``Graph.n_trimmed``; with
  ``on_huge="raise"`` it is an error instead;
* an empty graph, a wrong number of fields, an empty or non-string label raise
  :class:`~models.cleora.errors.GraphInputError` naming the row.

Nodes come out in a canonical locality order — most incident first, ties by label — so the
result is the same for any line order and hub rows of Q stay in cache during propagation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.cleora.columns import Column, parse_columns
from models.cleora.errors import EmptyGraphError, GraphInputError
from models.cleora.hashing import label_keys

__all__ = ["Graph", "build_graph", "graph_from_arrays"]

Row = str | Sequence[str | Sequence[str]]


@dataclass(frozen=True)
class Graph:
    """An undirected weighted graph ready for Cleora.

    Attributes
    ----------
    labels : ndarray of shape (n_nodes,), str
        Node labels in locality order (row ``i`` of every matrix is ``labels[i]``).
    keys : ndarray of shape (n_nodes,), uint64
        ``label_keys(labels)``: what the hash initialisation is computed from.
    transient : ndarray of shape (n_nodes,), bool
        Nodes only seen in transient columns (not returned by ``embed``).
    adjacency : csr_array of shape (n_nodes, n_nodes), float32
        Symmetric Cleora weights, sorted int32 indices.
    columns : tuple of Column
    n_rows, n_dropped, n_trimmed : int
        Rows used, rows dropped (no two distinct nodes), fields cut to ``max_hyperedge_size``.
    """

    labels: NDArray[np.str_]
    keys: NDArray[np.uint64]
    transient: NDArray[np.bool_]
    adjacency: sp.csr_array
    columns: tuple[Column, ...]
    n_rows: int
    n_dropped: int = 0
    n_trimmed: int = 0

    @property
    def n_nodes(self) -> int:
        return int(len(self.labels))

    @property
    def nnz(self) -> int:
        return int(self.adjacency.nnz)

    def markov(self, kind: Literal["left", "symmetric"] = "left") -> sp.csr_array:
        """Transition matrix: ``D⁻¹A`` (``"left"``, rows sum to 1) or ``D^-½ A D^-½`` (``"symmetric"``).

        Returns
        -------
        csr_array of shape (n_nodes, n_nodes), float32, int32 indices.

        Raises
        ------
        ValueError
            If ``kind`` is neither ``"left"`` nor ``"symmetric"``.
        """
        a = self.adjacency
        deg = np.add.reduceat(a.data.astype(np.float64), a.indptr[:-1].astype(np.int64))
        rows = np.repeat(np.arange(a.shape[0], dtype=np.int32), np.diff(a.indptr))
        if kind == "left":
            data = a.data / deg[rows]
        elif kind == "symmetric":
            inv = 1.0 / np.sqrt(deg)
            data = a.data * inv[rows] * inv[a.indices]
        else:
            raise ValueError(f"kind: must be 'left' or 'symmetric'; got {kind!r}")
        m = sp.csr_array((data.astype(np.float32), a.indices, a.indptr), shape=a.shape)
        m.has_sorted_indices = True
        return m


def _mix64(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """SplitMix64 finaliser, vectorised (uint64 arithmetic wraps); works in place on a fresh copy."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _incidence(rows: NDArray[np.int64], nodes: NDArray[np.int64], n_rows: int, n: int) -> sp.csr_array:
    """(rows × nodes) incidence counts as float32 CSR, built directly (no int64 COO copy)."""
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    g = sp.csr_array((np.ones(len(order), dtype=np.float32), nodes[order].astype(np.int32), indptr),
                     shape=(n_rows, n))
    g.sum_duplicates()  # sorts each row's indices: canonical, whatever the input order
    return g


def _scale_rows(g: sp.csr_array, w: NDArray[np.float64]) -> sp.csr_array:
    """``diag(w) @ g`` in place on g's data (float32)."""
    g.data *= np.repeat(w, np.diff(g.indptr)).astype(np.float32)
    return g


def _fields(row: Row, cols: tuple[Column, ...], i: int) -> list[list[str]]:
    """Split one row into one list of labels per column, checking counts and types."""
    if len(cols) == 1:
        if isinstance(row, str):
            raw: list = [row.split(" ")]
        elif len(row) == 1 and not isinstance(row[0], str):
            raw = [list(row[0])]
        else:
            raw = [list(row)]
    else:
        raw = row.split("\t") if isinstance(row, str) else list(row)
        if len(raw) != len(cols):
            raise GraphInputError(f"row {i}", f"has {len(raw)} fields but the columns "
                                  f"'{' '.join(map(str, cols))}' declare {len(cols)}", row)
    out = []
    for col, f in zip(cols, raw, strict=True):
        labs = (f.split(" ") if col.complex else [f]) if isinstance(f, str) else list(f)
        labs = [s for s in labs if s != ""] if isinstance(f, str) else labs
        for s in labs:
            if not isinstance(s, str) or not s:
                raise GraphInputError(f"row {i}, column {col.name!r}",
                                      "labels must be non-empty strings (convert ids once, at the edge)", s)
        if not col.complex and len(labs) > 1:
            raise GraphInputError(f"row {i}, column {col.name!r}",
                                  "holds several entities but the column is not 'complex'", f)
        out.append(labs)
    return out


def _has_edge(fields: list[list[str]], cols: tuple[Column, ...]) -> bool:
    """A row carries an edge if it links two distinct nodes through some relation."""
    if len(cols) == 2 and fields[0] and fields[1] and len(set(fields[0]) | set(fields[1])) > 1:
        return True
    return any(c.reflexive and len(set(f)) > 1 for c, f in zip(cols, fields, strict=True))


def build_graph(
    rows: Iterable[Row],
    columns: str | Sequence[str] = "complex::reflexive::node",
    *,
    max_hyperedge_size: int = 256,
    on_huge: Literal["sample", "raise"] = "sample",
) -> Graph:
    """Build a Cleora graph from hyperedge rows (Python lists or Cleora-style TSV lines).

    Parameters
    ----------
    rows : iterable of str or sequence
        One hyperedge per row. A row is a sequence with one field per column (a field is a
        label, or for a complex column a list of labels or a space-separated string), or a
        TSV line (fields split on tab, complex fields on space). With a single column a row
        may simply be the list of labels.
    columns : str or sequence of str
        Column spec, see :func:`~models.cleora.columns.parse_columns`. Star expansion of a
        hyperedge is ``"transient::edge complex::word"``: the edge is the virtual node.
    max_hyperedge_size : int
        Cap on the entities of one field (a field of k entities yields k² matrix entries).
    on_huge : {"sample", "raise"}
        Deterministic hash sampling down to the cap, or an error.

    Returns
    -------
    Graph

    Raises
    ------
    GraphInputError
        Wrong field count, bad labels, unknown column modifiers, huge fields with
        ``on_huge="raise"``; :class:`EmptyGraphError` if no row carries an edge.

    Examples
    --------
    >>> g = build_graph([["a", "b", "c"], ["b", "d"]])
    >>> g.n_nodes, g.labels[0]
    (4, 'b')
    """
    cols = parse_columns(columns)
    index: dict[str, int] = {}
    labels: list[str] = []
    solid: list[bool] = []
    inc_rows: list[list[int]] = [[] for _ in cols]
    inc_nodes: list[list[int]] = [[] for _ in cols]
    n_rows = dropped = 0
    for i, row in enumerate(rows):
        fields = _fields(row, cols, i)
        if not _has_edge(fields, cols):
            dropped += 1
            continue
        for c, (col, labs) in enumerate(zip(cols, fields, strict=True)):
            if len(labs) > max_hyperedge_size and on_huge == "raise":
                raise GraphInputError(f"row {i}, column {col.name!r}", f"has {len(labs)} entities, more "
                                      f"than max_hyperedge_size={max_hyperedge_size}", labs[:5])
            for s in labs:
                j = index.get(s)
                if j is None:
                    j = index[s] = len(labels)
                    labels.append(s)
                    solid.append(False)
                if not col.transient:
                    solid[j] = True
                inc_rows[c].append(n_rows)
                inc_nodes[c].append(j)
        n_rows += 1
    inc = [(np.array(r, dtype=np.int64), np.array(n, dtype=np.int64)) for r, n in zip(inc_rows, inc_nodes,
                                                                                     strict=True)]
    return _assemble(np.array(labels, dtype=str), ~np.array(solid, dtype=bool), inc, n_rows, cols,
                     max_hyperedge_size, dropped)


def graph_from_arrays(
    labels: Sequence[str] | NDArray[np.str_],
    indptr: NDArray[np.integer],
    members: NDArray[np.integer],
    *,
    max_hyperedge_size: int = 256,
) -> Graph:
    """Fast path for large single-column graphs: hyperedges as CSR arrays over ``labels``.

    Parameters
    ----------
    labels : sequence of str, length n_labels, unique
    indptr : ndarray of shape (n_hyperedges + 1,), integer
        Hyperedge ``e`` is ``members[indptr[e]:indptr[e + 1]]`` (an edge list has size-2 rows).
    members : ndarray of shape (nnz,), integer indices into ``labels``
    max_hyperedge_size : int
        As in :func:`build_graph` (sampling).

    Returns
    -------
    Graph with columns ``complex::reflexive::node`` (same weights as :func:`build_graph`).

    Raises
    ------
    GraphInputError
        If ``members`` points outside ``labels`` or ``labels`` repeat;
        :class:`EmptyGraphError` if no hyperedge has two distinct nodes.
    """
    labels = np.asarray(labels, dtype=str)
    members = np.asarray(members, dtype=np.int64)
    if len(np.unique(labels)) != len(labels):
        raise GraphInputError("labels", "must be unique", labels[:5])
    if len(members) and (members.min() < 0 or members.max() >= len(labels)):
        raise GraphInputError("members", f"must lie in [0, {len(labels)})", (members.min(), members.max()))
    rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(np.asarray(indptr, dtype=np.int64)))
    pair = np.sort(rows * len(labels) + members)  # (row, member) as one sortable int64
    first = np.ones(len(pair), dtype=bool)
    first[1:] = pair[1:] != pair[:-1]
    distinct = np.bincount(pair[first] // len(labels), minlength=len(indptr) - 1)
    del pair, first
    keep_row = distinct >= 2
    keep = keep_row[rows]
    inc = [((np.cumsum(keep_row) - 1)[rows[keep]], members[keep])]
    del rows, keep
    cols = parse_columns("complex::reflexive::node")
    return _assemble(labels, np.zeros(len(labels), dtype=bool), inc,
                     int(keep_row.sum()), cols, max_hyperedge_size, int((~keep_row).sum()))


def _assemble(labels: NDArray[np.str_], transient: NDArray[np.bool_],
              inc: list[tuple[NDArray[np.int64], NDArray[np.int64]]], n_rows: int,
              cols: tuple[Column, ...], cap: int, dropped: int) -> Graph:
    """Trim, order canonically and multiply out the incidences into the adjacency."""
    if n_rows == 0:
        raise EmptyGraphError("graph", "no hyperedge with two or more distinct nodes", f"{dropped} rows dropped")
    keys = label_keys(labels.tolist())
    salt = [_mix64(np.full(1, c + 1, dtype=np.uint64))[0] for c in range(len(cols))]
    row_hash = np.zeros(n_rows, dtype=np.uint64)
    for (r, n), s in zip(inc, salt, strict=True):
        np.add.at(row_hash, r, _mix64(keys[n] ^ s))  # a multiset hash: independent of order
    trimmed = 0
    for c, (r, n) in enumerate(inc):
        size = np.bincount(r, minlength=n_rows)
        if size.max(initial=0) > cap:
            prio = _mix64(keys[n] ^ row_hash[r])
            o = np.lexsort((prio, r))
            start = np.concatenate([[0], np.cumsum(size)[:-1]])
            rank = np.arange(len(o)) - start[r[o]]
            keep = np.sort(o[rank < cap])
            inc[c] = (r[keep], n[keep])
            trimmed += int((size > cap).sum())
    count = np.zeros(len(labels), dtype=np.int64)
    for _, n in inc:
        count += np.bincount(n, minlength=len(labels))
    alive = np.flatnonzero(count > 0)
    by_label = np.argsort(labels[alive], kind="stable")
    label_rank = np.empty(len(alive), dtype=np.int64)
    label_rank[by_label] = np.arange(len(alive))
    order = alive[np.lexsort((label_rank, -count[alive]))]
    position = np.full(len(labels), -1, dtype=np.int64)
    position[order] = np.arange(len(order))
    row_rank = np.empty(n_rows, dtype=np.int64)
    row_rank[np.argsort(row_hash, kind="stable")] = np.arange(n_rows)
    n = len(order)
    gs, ks = [], []
    while inc:
        r, nodes = inc.pop(0)
        gs.append(_incidence(row_rank[r], position[nodes], n_rows, n))
        ks.append(np.add.reduceat(gs[-1].data, gs[-1].indptr[:-1]).astype(np.float64))
        del r, nodes
    adj = sp.csr_array((n, n), dtype=np.float32)
    for c, col in enumerate(cols):
        if col.reflexive:
            w = np.divide(1.0, ks[c] ** 2, out=np.zeros(n_rows), where=ks[c] > 0)
            gt = gs[c].T.tocsr()
            adj = adj + gt @ _scale_rows(gs[c].copy() if len(cols) == 2 else gs[c], w)
            del gt
    if len(cols) == 2:
        kk = ks[0] * ks[1]
        w = np.divide(1.0, kk, out=np.zeros(n_rows), where=kk > 0)
        gt = gs[0].T.tocsr()
        gs[0] = None
        b = gt @ _scale_rows(gs[1], w)
        del gt
        adj = adj + b + b.T.tocsr()
    del gs
    adj = sp.csr_array(adj)
    adj.sum_duplicates()
    adj.sort_indices()
    adj = sp.csr_array((adj.data.astype(np.float32, copy=False), adj.indices.astype(np.int32, copy=False),
                        adj.indptr.astype(np.int64, copy=False)), shape=(n, n))
    adj.has_sorted_indices = True
    return Graph(labels=labels[order], keys=keys[order], transient=transient[order], adjacency=adj,
                 columns=cols, n_rows=n_rows, n_dropped=dropped, n_trimmed=trimmed)
