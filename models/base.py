"""The one recommender contract: ``InteractionLog`` in, ``Histories`` queried, ``(ids, scores)`` out.

Every recommender (popularity, item-kNN, SKNN/V-SKNN, STAN/V-STAN, EMDE, embedding
neighbours) implements :class:`Recommender`, following implicit's ``RecommenderBase`` and
scikit-learn's estimator rules: ``__init__`` stores hyper-parameters unchanged, ``fit`` sets
attributes ending in ``_``, randomness comes from ``random_state``. Models see dense indices
only (``item_idx``: int32 row of the catalogue); mapping shop ids (``item_id: str``) to
indices happens outside ``models/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

__all__ = ["InteractionLog", "Histories", "Recommender", "incidence_matrix", "whole_epochs"]


@dataclass(frozen=True)
class InteractionLog:
    """A training log of interactions, sorted by (session, ts).

    Attributes
    ----------
    session_idx : ndarray of shape (n_events,), int32
        Dense session (or user, for non-session data) index of each event, 0..n_sessions-1.
    item_idx : ndarray of shape (n_events,), int32
        Dense item index, 0..n_items-1.
    ts : ndarray of shape (n_events,), float64
        Epoch seconds.
    n_items : int
        Catalogue size; item indices are < n_items.
    event_type : ndarray of shape (n_events,), int8, optional
        Code of the event type (index into ``event_types``); all zeros when absent.
    event_types : tuple of str
        Names of the event-type codes, e.g. ``("view", "add_to_cart", "purchase")``.
    user_idx : ndarray of shape (n_events,), int32, optional
        Dense user index when sessions belong to known users.
    item_ids : tuple of str, optional
        Shop id of each item index (for saving models and printing); length ``n_items``.
    """

    session_idx: NDArray[np.int32]
    item_idx: NDArray[np.int32]
    ts: NDArray[np.float64]
    n_items: int
    event_type: NDArray[np.int8] | None = None
    event_types: tuple[str, ...] = ("view",)
    user_idx: NDArray[np.int32] | None = None
    item_ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.item_idx)
        if len(self.session_idx) != n or len(self.ts) != n:
            raise ValueError(
                f"session_idx, item_idx and ts must have one length; got "
                f"{len(self.session_idx)}, {n}, {len(self.ts)}"
            )
        if n and (self.item_idx.min() < 0 or self.item_idx.max() >= self.n_items):
            raise ValueError(f"item_idx must lie in [0, n_items={self.n_items}); got range "
                             f"[{self.item_idx.min()}, {self.item_idx.max()}]")

    @property
    def n_events(self) -> int:
        return int(len(self.item_idx))

    @property
    def n_sessions(self) -> int:
        return int(self.session_idx.max()) + 1 if len(self.session_idx) else 0

    def session_bounds(self) -> NDArray[np.int64]:
        """CSR-style ``indptr`` of shape (n_sessions + 1,) over the (sorted) events."""
        counts = np.bincount(self.session_idx, minlength=self.n_sessions)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


@dataclass(frozen=True)
class Histories:
    """A batch of query histories (session prefixes or user histories), CSR layout.

    Query ``q`` holds ``items[indptr[q]:indptr[q+1]]``, oldest first, newest last.

    Attributes
    ----------
    indptr : ndarray of shape (n_queries + 1,), int64
    items : ndarray of shape (nnz,), int32 item indices
    ts : ndarray of shape (nnz,), float64 epoch seconds, optional
    event_type : ndarray of shape (nnz,), int8 codes, optional
    """

    indptr: NDArray[np.int64]
    items: NDArray[np.int32]
    ts: NDArray[np.float64] | None = None
    event_type: NDArray[np.int8] | None = None
    extra: dict[str, NDArray] = field(default_factory=dict)

    @property
    def n_queries(self) -> int:
        return int(len(self.indptr) - 1)

    @classmethod
    def from_lists(cls, seqs: list[list[int]], ts: list[list[float]] | None = None) -> Histories:
        """Build from Python lists of item indices (tests and small callers)."""
        lens = np.array([len(s) for s in seqs], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        items = np.array([i for s in seqs for i in s], dtype=np.int32)
        t = None if ts is None else np.array([x for s in ts for x in s], dtype=np.float64)
        return cls(indptr=indptr, items=items, ts=t)

    def query(self, q: int) -> NDArray[np.int32]:
        return self.items[self.indptr[q]:self.indptr[q + 1]]

    def slice(self, lo: int, hi: int) -> Histories:
        """Queries ``lo:hi`` as their own batch (views, no copies)."""
        a, b = int(self.indptr[lo]), int(self.indptr[hi])
        return Histories(indptr=self.indptr[lo:hi + 1] - a, items=self.items[a:b],
                         ts=None if self.ts is None else self.ts[a:b],
                         event_type=None if self.event_type is None else self.event_type[a:b])


@runtime_checkable
class Recommender(Protocol):
    """What every recommender implements (implicit's ``RecommenderBase``, sklearn's rules).

    ``recommend`` and ``similar_items`` are batch first and return ``(ids, scores)`` of shape
    ``(n_queries, n)``: ids int32 item indices best first, padded with ``-1`` (score ``-inf``)
    when fewer than ``n`` items qualify. Before ``fit`` they raise ``models.errors.NotFittedError``.
    ``save(path)`` writes a directory of ``.npz``/``.npy`` arrays plus ``params.json``;
    ``load`` reads it with ``allow_pickle=False``.

    A model may set the class attribute ``dense_scores = False`` when ``recommend`` costs
    O(nnz) per history and never holds a (histories x items) score matrix; callers that bound
    that matrix (``operators.score``) then pass every history in one call. Absent, it is taken
    as True.
    """

    def fit(self, log: InteractionLog) -> Self: ...

    def recommend(
        self, histories: Histories, n: int = 20, *, exclude_seen: bool = False
    ) -> tuple[NDArray[np.int32], NDArray[np.float32]]: ...

    def similar_items(self, item_idx: NDArray[np.int32], n: int = 20
                      ) -> tuple[NDArray[np.int32], NDArray[np.float32]]: ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path) -> Self: ...


def incidence_matrix(indptr: NDArray[np.int64], items: NDArray[np.integer], n_items: int, *,
                     binary: bool = True) -> sp.csr_array:
    """The (row x item) matrix of CSR-style lists: row ``r`` holds ``items[indptr[r]:indptr[r+1]]``.

    Parameters
    ----------
    indptr : ndarray of shape (n_rows + 1,)
        E.g. ``InteractionLog.session_bounds()`` or ``Histories.indptr``.
    items : ndarray of shape (indptr[-1],), int
    n_items : int
    binary : bool, default True
        1.0 where a row holds the item at all; else how many times it does.

    Returns
    -------
    csr_array of shape (n_rows, n_items), float32, duplicates summed.
    """
    lens = np.diff(indptr)
    rows = np.repeat(np.arange(len(lens)), lens)
    x = sp.csr_array((np.ones(len(items), np.float32), (rows, np.asarray(items))), shape=(len(lens), n_items))
    x.sum_duplicates()
    if binary:
        x.data[:] = 1.0
    return x


def whole_epochs(epochs: int, epoch_examples: int | None, n_examples: int) -> int:
    """Whole training epochs for a log of ``n_examples`` examples: ``epochs``, or fewer on a large log.

    ``min(epochs, ceil(epoch_examples / n_examples))``, at least 1; ``epochs`` when ``epoch_examples`` is
    None. Small logs get every epoch, large ones the whole epochs that cover about ``epoch_examples``
    examples. A function of the data alone, so training stays deterministic and never depends on the
    machine's speed (issue 11). Used by GRU4Rec and EMDE.

    Raises
    ------
    ValueError
        If ``epochs < 1`` or ``epoch_examples < 1``.
    """
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1; got {epochs}")
    if epoch_examples is None or n_examples < 1:
        return int(epochs)
    if int(epoch_examples) < 1:
        raise ValueError(f"epoch_examples must be None or >= 1; got {epoch_examples}")
    return max(1, min(int(epochs), -(-int(epoch_examples) // int(n_examples))))
