"""Item side data for EMDE modalities: dense vectors and titles, read from files by item id.

Files are matched to the catalogue through the shop ids of ``InteractionLog.item_ids``;
items missing from a file get no vector (``present`` is False) and the modality codes
them at random, so one missing image never breaks a model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["align_vectors", "read_vectors", "read_texts", "word_hyperedges"]

_TOKEN = re.compile(r"[0-9a-z]+")


def align_vectors(ids: Sequence[str], vectors: NDArray[np.floating], item_ids: Sequence[str]
                  ) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Rows of ``vectors`` re-ordered to the catalogue ``item_ids``.

    Returns
    -------
    (aligned, present) : float32 array of shape (n_items, dim) (zeros where missing) and
        bool array of shape (n_items,).

    Raises
    ------
    ValueError
        If ``len(ids) != len(vectors)`` (the message gives both).
    """
    if len(ids) != len(vectors):
        raise ValueError(f"ids and vectors must have one length; got {len(ids)} and {len(vectors)}")
    row = {str(i): r for r, i in enumerate(ids)}
    pos = np.array([row.get(str(i), -1) for i in item_ids], dtype=np.int64)
    present = pos >= 0
    out = np.zeros((len(item_ids), vectors.shape[1]), dtype=np.float32)
    out[present] = np.asarray(vectors, dtype=np.float32)[pos[present]]
    return out, present


def read_vectors(path: str | Path, item_ids: Sequence[str] | None, n_items: int, *,
                 id_column: str = "item_id") -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Dense item vectors from ``.npy``, ``.npz`` or ``.parquet``, aligned to the catalogue.

    Parameters
    ----------
    path : str or Path
        ``.npy``: array of shape (n_items, dim) in item-index order. ``.npz``: arrays
        ``ids`` (str) and ``vectors`` (n, dim). ``.parquet``: column ``id_column`` plus either
        one list column of floats or several numeric columns (one per dimension).
    item_ids : sequence of str or None
        Shop ids of the catalogue (required for ``.npz``/``.parquet``).
    n_items : int
    id_column : str, default "item_id"

    Returns
    -------
    (vectors, present) : float32 (n_items, dim) and bool (n_items,).

    Raises
    ------
    ValueError
        For an unknown suffix, a ``.npy`` whose row count is not ``n_items``, or
        id-keyed files without ``item_ids``.
    """
    path = Path(path)
    if path.suffix == ".npy":
        vec = np.load(path, allow_pickle=False)
        if vec.ndim != 2 or len(vec) != n_items:
            raise ValueError(f"{path}: must hold (n_items={n_items}, dim) rows; got shape {vec.shape}")
        return vec.astype(np.float32), np.ones(n_items, dtype=bool)
    if item_ids is None:
        raise ValueError(f"{path}: id-keyed vectors need InteractionLog.item_ids; got None")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return align_vectors([str(i) for i in z["ids"]], z["vectors"], item_ids)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        ids = [str(i) for i in table.column(id_column).to_pylist()]
        others = [c for c in table.column_names if c != id_column]
        if len(others) == 1 and str(table.schema.field(others[0]).type).startswith(("list", "fixed")):
            vec = np.asarray(table.column(others[0]).to_pylist(), dtype=np.float32)
        else:
            vec = np.stack([table.column(c).to_numpy() for c in others], axis=1).astype(np.float32)
        return align_vectors(ids, vec, item_ids)
    raise ValueError(f"{path}: vectors must be .npy, .npz or .parquet; got suffix {path.suffix!r}")


def read_texts(path: str | Path, item_ids: Sequence[str], *, id_column: str = "item_id",
               text_column: str = "title") -> list[str]:
    """Title of every catalogue item from a ``.parquet`` or ``.csv`` file ('' where missing).

    Raises
    ------
    ValueError
        For another suffix.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=[id_column, text_column])
        ids, texts = table.column(id_column).to_pylist(), table.column(text_column).to_pylist()
    elif path.suffix == ".csv":
        import pyarrow.csv as pcsv

        table = pcsv.read_csv(path)
        ids, texts = table.column(id_column).to_pylist(), table.column(text_column).to_pylist()
    else:
        raise ValueError(f"{path}: texts must be .parquet or .csv; got suffix {path.suffix!r}")
    by_id = {str(i): (t or "") for i, t in zip(ids, texts, strict=True)}
    return [by_id.get(str(i), "") for i in item_ids]


def word_hyperedges(texts: Sequence[str], n_items: int
                    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """Star expansion of titles: one hyperedge per word, over the items whose title holds it.

    Words are lower-cased alphanumeric tokens; a word in a single title links nothing and
    is dropped.

    Returns
    -------
    (edge_indptr, edge_items) : CSR over hyperedges, int64 and int32.
    """
    vocab: dict[str, int] = {}
    word_idx: list[int] = []
    item_idx: list[int] = []
    for i, text in enumerate(texts[:n_items]):
        for tok in set(_TOKEN.findall(str(text).lower())):
            word_idx.append(vocab.setdefault(tok, len(vocab)))
            item_idx.append(i)
    w = np.asarray(word_idx, dtype=np.int64)
    it = np.asarray(item_idx, dtype=np.int32)
    order = np.argsort(w, kind="stable")
    w, it = w[order], it[order]
    counts = np.bincount(w, minlength=len(vocab))
    keep = counts[w] > 1
    counts = np.where(counts > 1, counts, 0)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), it[keep]
