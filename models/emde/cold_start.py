"""Cold start of new items in a fitted EMDE: title codes at once, graph codes by M′·Q.

A new catalog item has no interactions at first, so its DLSH codes cannot come from the
graph or the session modalities. It gets them at once from its title instead:

1. **Title vector** (inductive, no training state): each lower-cased word is hashed
   (blake2b, seeded) to a vector uniform in (-1, 1), the way Cleora initialises an entity
   from a hash of its id, the column and a seed; an item's vector is the L2-normalised mean
   of its words' vectors. The same title always gives the same vector, in any process.
2. **Borrowing**: the new item takes the code columns (``item_in_cols_``, ``item_out_cols_``,
   ``codes_``) of its nearest known item by cosine of title vectors. With ``k > 1``, each
   code column takes the bucket with the largest summed cosine among the ``k`` nearest
   (ties: the nearer neighbour), so the item sits at the "centre" of its neighbours.

The extended model scores the new item like its donor: it is recommendable by the readout
and findable by ``similar_items`` without retraining.

3. **Interactions** (:func:`inductive_codes`): once the item co-occurs with known items in
   users' histories, its graph modalities (``sessions``, ``transitions``) get their own codes:
   Cleora's inductive embedding M′·Q (mean of the neighbours' Cleora vectors, row-normalised
   adjacency M′) cut by the modality's fitted DLSH codebook. From then on it is placed by how
   it is used, not by its words.

Limits of the rule: until it has interactions, a new item is only as good as its title: it
ranks (for k = 1) exactly tied with its donor; its popularity and quality count only once it
is trained on; items whose words are all unseen (cosine <= ``min_cosine`` with every known item)
and without interactions are left out; two items with the same words are indistinguishable; the hash vectors capture
shared words, not synonyms.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.emde.neighbours import top_k_rows

__all__ = ["title_vectors", "nearest_known", "inductive_codes", "extend_emde"]

_WORD = re.compile(r"\w+")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BLOCK_CELLS = 1 << 24
"""Max (new x known) similarity cells held at once."""


def _splitmix64(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """SplitMix64 finaliser, elementwise (wrapping uint64 arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _word_vectors(words: Sequence[str], dim: int, seed: int) -> NDArray[np.float32]:
    """(len(words), dim) float32 uniform in (-1, 1), a pure function of (word, column, seed)."""
    salt = seed.to_bytes(8, "little", signed=False)
    h = np.array([int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8, salt=salt).digest(), "little")
                  for w in words], dtype=np.uint64)
    cols = (np.arange(1, dim + 1, dtype=np.uint64) * _GOLDEN)[None, :]
    bits = _splitmix64(h[:, None] + cols) >> np.uint64(11)  # 53 random bits
    return ((bits.astype(np.float64) + 0.5) * (2.0 / 2.0**53) - 1.0).astype(np.float32)


def title_vectors(titles: Sequence[str | None], dim: int = 512, seed: int = 0) -> NDArray[np.float32]:
    """Hashed bag-of-words title embeddings (inductive, deterministic).

    Parameters
    ----------
    titles : sequence of str or None, length n
        Item titles; words are ``\\w+`` runs, lower-cased. ``None`` or no word: a zero row.
    dim : int, default 512
    seed : int, default 0
        Non-negative; salts the word hash.

    Returns
    -------
    ndarray of shape (n, dim), float32: the L2-normalised mean of the title's word vectors
    (each word's vector uniform in (-1, 1) from a hash of the word, column and seed).

    Examples
    --------
    >>> v = title_vectors(["Red wool scarf", "red SCARF", None])
    >>> v.shape, round(float(v[0] @ v[0]), 4), float(abs(v[2]).sum())
    ((3, 512), 1.0, 0.0)
    >>> bool(v[0] @ v[1] > 0.5)
    True
    """
    if dim < 1:
        raise ValueError(f"dim must be >= 1; got {dim}")
    bags = [sorted(set(_WORD.findall(t.lower()))) if t else [] for t in titles]
    # sorted vocabulary: a title's words are summed in the same order in any batch and process
    vocab = {w: j for j, w in enumerate(sorted({w for b in bags for w in b}))}
    rows = [i for i, b in enumerate(bags) for _ in b]
    cols = [vocab[w] for b in bags for w in b]
    words = _word_vectors(list(vocab), dim, seed)
    bag = sp.csr_array((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(titles), len(vocab)))
    v = np.asarray(bag @ words, dtype=np.float32)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)


def nearest_known(new: NDArray[np.float32], known: NDArray[np.float32], k: int = 1
                  ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """The ``k`` known rows nearest to each new row by cosine (rows already L2-normalised).

    Parameters
    ----------
    new : ndarray of shape (n_new, dim), float32
    known : ndarray of shape (n_known, dim), float32
    k : int, default 1

    Returns
    -------
    (idx, cos) : int32 and float32 arrays of shape (n_new, min(k, n_known)), nearest first
    (ties: lower index first). One matrix product per block of new rows.
    """
    if new.shape[1] != known.shape[1]:
        raise ValueError(f"new vectors have dim {new.shape[1]} but known vectors have dim {known.shape[1]}")
    n_new, n_known = new.shape[0], known.shape[0]
    k = min(k, n_known)
    idx = np.zeros((n_new, k), np.int32)
    cos = np.zeros((n_new, k), np.float32)
    if k == 0:
        return idx, cos
    step = max(1, _BLOCK_CELLS // max(n_known, 1))
    for lo in range(0, n_new, step):
        sims = new[lo:lo + step] @ known.T  # (block, n_known)
        if k < n_known:
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(n_known), sims.shape)
        val = np.take_along_axis(sims, part, axis=1)
        order = np.lexsort((part, -val), axis=1)  # by cosine desc, then index asc
        idx[lo:lo + step] = np.take_along_axis(part, order, axis=1)
        cos[lo:lo + step] = np.take_along_axis(val, order, axis=1)
    return idx, cos


def _vote(table: NDArray[np.int32], nbr: NDArray[np.int32], w: NDArray[np.float32]) -> NDArray[np.int32]:
    """Per column, the value of ``table[nbr]`` with the largest summed weight (ties: first neighbour)."""
    cand = table[nbr]  # (n, k, D)
    if nbr.shape[1] == 1:
        return cand[:, 0]
    agree = cand[:, :, None, :] == cand[:, None, :, :]  # (n, k, k, D)
    score = (agree * w[:, None, :, None]).sum(axis=2)  # (n, k, D)
    pick = np.argmax(score, axis=1)  # first max: the nearer neighbour wins ties
    return np.take_along_axis(cand, pick[:, None, :], axis=1)[:, 0]


def inductive_codes(model: Any, links: sp.csr_array) -> dict[str, NDArray[np.int32]]:
    """Graph-modality codes of new items from their interaction neighbours: DLSH(M′·Q).

    Cleora's inductive step (the seed paper; Rychalska et al. 2021): a node outside the
    trained graph is embedded as the mean of its neighbours' embeddings Q, weighted by the
    row-normalised adjacency M′, then L2-normalised as after each Cleora iteration; the vector
    is cut into buckets by the modality's own fitted DLSH codebook. Neighbours without a
    vector in that modality (no edge in training: a zero Cleora row) are dropped. A row with a
    single remaining neighbour takes that neighbour's codes (its M′·Q is the neighbour's vector).

    Parameters
    ----------
    model : EMDE
        Fitted, with ``graph_vectors_`` (models fitted before they were kept have none: the
        result is then empty) and ``codebooks_``.
    links : scipy.sparse.csr_array of shape (n_new, model.n_items_), finite, non-negative
        Interaction weights of each new item with known items (co-occurrence counts). Not
        modified.

    Returns
    -------
    dict of modality name to int32 array (n_new, depth)
        One entry per ``sessions``/``transitions`` modality with vectors and a codebook; rows
        without a usable neighbour are -1.

    Raises
    ------
    ValueError
        If ``links`` does not have ``n_items_`` columns or has a negative or non-finite weight.
    """
    n_items = int(model.n_items_)
    if links.shape[1] != n_items:
        raise ValueError(f"links has {links.shape[1]} columns but the model has {n_items} items")
    links = sp.csr_array(links, dtype=np.float32, copy=True)
    if links.nnz and not (np.isfinite(links.data).all() and links.data.min() >= 0):
        raise ValueError("links must be finite, non-negative interaction weights")
    links.sum_duplicates()
    links.eliminate_zeros()
    used, remap = np.unique(links.indices, return_inverse=True)
    out: dict[str, NDArray[np.int32]] = {}
    for name, q in getattr(model, "graph_vectors_", {}).items():
        book = model.codebooks_.get(name)
        if book is None:
            continue
        qu = q[used].astype(np.float32)
        has_vector = np.any(qu != 0, axis=1)
        m = sp.csr_array((links.data * has_vector[remap], remap.copy(), links.indptr.copy()),
                         shape=(links.shape[0], len(used)))  # own arrays: eliminate_zeros works in place
        m.eliminate_zeros()
        degree = np.diff(m.indptr)
        codes = np.full((links.shape[0], book.depth), -1, np.int32)
        single = np.flatnonzero(degree == 1)
        codes[single] = model.codes_[name][used[m.indices[m.indptr[single]]]]
        multi = np.flatnonzero(degree > 1)
        if len(multi):
            emb = np.asarray(m[multi] @ qu, dtype=np.float32)  # M′·Q up to the row scale ...
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)  # ... which L2 removes
            codes[multi] = book.encode(emb)
        out[name] = codes
    return out


def extend_emde(model: Any, new_titles: Sequence[str | None], known: Sequence[str | None] | NDArray[np.float32],
                *, links: sp.csr_array | None = None, k: int = 1, dim: int = 512, seed: int = 0,
                min_cosine: float = 0.2, new_ids: Sequence[str] | None = None,
                title_neighbours: tuple[NDArray[np.int32], NDArray[np.float32]] | None = None
                ) -> tuple[Any, NDArray[np.int32], NDArray[np.bool_]]:
    """A copy of a fitted EMDE whose item tables gain rows for new items.

    A new item's codes come from its title at once (borrowed from the nearest known titles)
    and, once it has interactions (``links``), its graph modalities' codes are its own, by
    M′·Q (:func:`inductive_codes`). An item with links but no title match borrows its other
    modalities' codes from its strongest link. The original model is not modified (other
    threads may be scoring with it); the copy is shallow and shares the network, layout and
    codebooks.

    Parameters
    ----------
    model : EMDE
        Fitted (``item_in_cols_``, ``item_out_cols_``, ``codes_``, ``n_items_``).
    new_titles : sequence of str or None, length n_new
    known : sequence of str or None of length model.n_items_, or ndarray of shape (n_items_, dim)
        Titles of the model's items by item_idx (``None`` where unknown), or their
        :func:`title_vectors` computed once by the caller.
    links : scipy.sparse.csr_array of shape (n_new, n_items_), optional
        Interaction weights of each new item with known items (see :func:`inductive_codes`).
    k : int, default 1
        Neighbours whose codes are borrowed (1: copy the nearest; > 1: cosine-weighted vote
        per code column).
    dim, seed : int
        Title vector size and hash seed (see :func:`title_vectors`).
    min_cosine : float, default 0.2
        A neighbour counts only above this cosine. Two titles of 4 words sharing one word have
        cosine ~0.25; unrelated titles have cosine ~N(0, 1/dim) (std 0.044 at dim 512), so
        0.2 means "shares at least a word".
    new_ids : sequence of str, optional
        Shop ids of the new items, appended to ``item_ids_`` when the model keeps ids.
    title_neighbours : (idx, cos) arrays of shape (n_new, min(k, n_items_)), optional
        ``nearest_known(title_vectors(new_titles, dim, seed), known vectors, k)`` computed by
        the caller (the catalog overlay caches it per title); computed here when None.

    Returns
    -------
    (extended, neighbours, added)
        ``extended`` : EMDE with ``n_items_ + added.sum()`` items; added item ``j`` (in input
        order, skipping the left-out ones) has item_idx ``model.n_items_ + j``.
        ``neighbours`` : int32 array of shape (n_new, min(k, n_items_)), the known item_idx
        each new item borrowed title codes from, nearest first; -1 where the cosine was
        <= ``min_cosine``.
        ``added`` : bool array (n_new,): the item has a title match or links (a model without
        graph vectors needs a title match).

    Raises
    ------
    ValueError
        If ``known`` does not have one row per model item, ``new_ids`` one id per title or
        ``links`` one row per title (the messages give both numbers).
    """
    n_items = int(model.n_items_)
    kv = known if isinstance(known, np.ndarray) else title_vectors(known, dim, seed)
    if kv.shape[0] != n_items:
        raise ValueError(f"known has {kv.shape[0]} rows but the model has {n_items} items")
    if new_ids is not None and len(new_ids) != len(new_titles):
        raise ValueError(f"new_ids has {len(new_ids)} ids but new_titles has {len(new_titles)} titles")
    if links is not None and links.shape[0] != len(new_titles):
        raise ValueError(f"links has {links.shape[0]} rows but new_titles has {len(new_titles)} titles")
    nbr, cos = (title_neighbours if title_neighbours is not None
                else nearest_known(title_vectors(new_titles, kv.shape[1], seed), kv, k))
    valid = cos > min_cosine
    nbr = np.where(valid, nbr, -1).astype(np.int32)
    titled = valid[:, 0] if nbr.shape[1] else np.zeros(len(new_titles), bool)
    graph = inductive_codes(model, links) if links is not None else {}
    own = {name: g[:, 0] >= 0 for name, g in graph.items()}  # per modality: coded by M′·Q
    linked = np.logical_or.reduce(list(own.values())) if own else np.zeros(len(new_titles), bool)
    added = titled | linked
    # title donors; an item without one borrows from its strongest link (ties: lowest item_idx)
    a_nbr = np.maximum(nbr[added], 0)
    w = np.where(valid[added], cos[added], 0.0).astype(np.float32)
    if (linked & ~titled).any():
        assert links is not None
        strongest = np.asarray(sp.csr_array(links).sorted_indices().argmax(axis=1)).ravel()  # ties: lowest idx
        rows = (linked & ~titled)[added]
        a_nbr[rows] = strongest[added][rows][:, None]
        w[rows] = 1.0
    codes = {name: _vote(c, a_nbr, w) for name, c in model.codes_.items()}
    for name, g in graph.items():  # own graph codes, M′·Q, for the items with usable interactions
        mine = own[name][added]
        codes[name][mine] = g[added][mine]
    out = copy.copy(model)
    new_in, new_out = model.item_columns(codes)
    out.item_in_cols_ = np.concatenate([model.item_in_cols_, new_in])
    out.item_out_cols_ = np.concatenate([model.item_out_cols_, new_out])
    out.codes_ = {name: np.concatenate([c, codes[name]]) for name, c in model.codes_.items()}
    n_added = int(added.sum())
    out.n_items_ = n_items + n_added
    if getattr(model, "item_ids_", None) is not None:
        ids = [new_ids[j] if new_ids is not None else f"new:{j}" for j in np.flatnonzero(added)]
        out.item_ids_ = tuple(model.item_ids_) + tuple(ids)
    nb = getattr(model, "neighbours_", None)
    if nb is not None:  # knn views: a new item's neighbours are its links, else its title donor's
        rows = _neighbour_rows(nb, links, linked[added] if links is not None else np.zeros(n_added, bool),
                               np.flatnonzero(added), a_nbr[:, 0], int(getattr(model, "knn_k", 10)))
        out.neighbours_ = sp.csr_array(sp.vstack([nb, rows]), dtype=np.float32)
        out.neighbours_.resize((out.n_items_, out.n_items_))
    out._bias_ = None
    if getattr(model, "item_log_pop_", None) is not None:  # popularity decoder: a new item borrows its donor's
        out.item_log_pop_ = np.concatenate([model.item_log_pop_, model.item_log_pop_[a_nbr[:, 0]]])
    return out, nbr, added


def _neighbour_rows(nb: sp.csr_array, links: sp.csr_array | None, own: NDArray[np.bool_], rows: NDArray[np.intp],
                    donors: NDArray[np.int32], k: int) -> sp.csr_array:
    """Rows of the ``knn:*`` neighbour matrix for added items: the ``k`` strongest links,
    normalised to sum 1 (as ``cooccurrence_neighbours`` rows), where ``own``; else the donor's row.

    ``rows``: each added item's row in ``links``; ``donors``: its title (or strongest-link) donor.
    Shape (n_added, nb.shape[1]), float32.
    """
    donor_rows = sp.csr_array(nb[np.asarray(donors, np.int64)], dtype=np.float32)
    if links is None or not own.any():
        return donor_rows
    mine = sp.csr_array(links, dtype=np.float32, copy=True)[np.asarray(rows)[own]].tocoo()
    mine.sum_duplicates()
    linked_rows = top_k_rows(mine.row, mine.col, mine.data, mine.shape, k)
    pick = np.arange(len(own))  # each added item's row in [donor rows; linked rows]
    pick[own] = len(own) + np.arange(int(own.sum()))
    return sp.csr_array(sp.vstack([donor_rows, linked_rows]))[pick]
