"""EASE: the closed-form linear item-item autoencoder (Steck 2019), a user top-N baseline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Self

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from models.base import Histories, InteractionLog, incidence_matrix
from models.errors import ModelFormatError, NotFittedError
from models.topk import topk

__all__ = ["EASE"]


class EASE:
    """Embarrassingly Shallow Autoencoder: ``B = I - P / diag(P)``, ``P = (XᵀX + λI)⁻¹``.

    Parameters
    ----------
    lambda_ : float, default 500
        L2 regularisation added to the Gram matrix diagonal.
    binary : bool, default True
        Count a (history, item) pair once, however often it occurs.
    max_items : int, default 20000
        Largest catalogue ``fit`` accepts (the Gram matrix is dense: 8 bytes × n_items²; 20k
        items need 3.2 GB for it and as much again for its inverse).

    Attributes
    ----------
    weights_ : ndarray of shape (n_items, n_items), float32
        Item-item weights with a zero diagonal.

    Notes
    -----
    Memory and time grow with ``n_items ** 2`` and ``n_items ** 3`` (a dense inverse): fine
    for ~10-20k items (MovieLens latest-small: 9k), not for large catalogues.

    References
    ----------
    H. Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019, arXiv 1905.03375.
    """

    def __init__(self, lambda_: float = 500.0, binary: bool = True, max_items: int = 20_000) -> None:
        self.lambda_ = lambda_
        self.binary = binary
        self.max_items = max_items

    def _matrix(self, indptr: NDArray[np.int64], items: NDArray[np.int32], n_items: int) -> sp.csr_array:
        return incidence_matrix(indptr, items, n_items, binary=self.binary)

    def fit(self, log: InteractionLog) -> Self:
        """Solve for the item-item weights from the (session or user) x item matrix of ``log``.

        Raises
        ------
        ValueError
            If the catalogue has more than ``max_items`` items (the dense inverse would not fit).
        """
        if log.n_items > self.max_items:
            raise ValueError(f"EASE: {log.n_items} items > max_items={self.max_items} "
                             f"(a dense {log.n_items}² inverse); use a session model or raise max_items")
        x = self._matrix(log.session_bounds(), log.item_idx, log.n_items)
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.lambda_
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)
        b[np.diag_indices_from(b)] = 0.0
        self.weights_ = b.astype(np.float32)
        self.n_items_ = log.n_items
        return self

    def _check(self) -> None:
        if not hasattr(self, "weights_"):
            raise NotFittedError(self)

    def recommend(self, histories: Histories, n: int = 20, *, exclude_seen: bool = False
                  ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Top-``n`` by ``x @ B`` for each history; int32/float32 arrays of shape (n_queries, n)."""
        self._check()
        x = self._matrix(histories.indptr, histories.items, self.n_items_)
        scores = np.asarray(x @ self.weights_, dtype=np.float32)
        if exclude_seen:
            r, c = x.nonzero()
            scores[r, c] = -np.inf
        return topk(scores, n)

    def similar_items(self, item_idx: NDArray[np.int32], n: int = 20
                      ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Items with the largest weight from each given item (itself excluded)."""
        self._check()
        scores = self.weights_[np.asarray(item_idx, dtype=np.int64)].copy()
        scores[np.arange(len(scores)), item_idx] = -np.inf
        return topk(scores, n)

    def save(self, path: Path) -> None:
        """``params.json`` + ``weights.npy`` in directory ``path``."""
        self._check()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "weights.npy", self.weights_)
        (path / "params.json").write_text(json.dumps({"format": "fusionrec.ease", "version": 1,
                                                      "lambda_": self.lambda_, "binary": self.binary}))

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a directory written by :meth:`save` (no pickle)."""
        path = Path(path)
        try:
            meta = json.loads((path / "params.json").read_text(encoding="utf-8"))
            weights = np.load(path / "weights.npy", allow_pickle=False)
            model = cls(lambda_=meta["lambda_"], binary=meta["binary"])
        except FileNotFoundError as exc:
            raise ModelFormatError(f"{path}: not an EASE model directory ({exc.filename} missing)") from exc
        except (OSError, ValueError, EOFError, KeyError, TypeError) as exc:  # truncated, hand-edited, another model's
            raise ModelFormatError(f"{path}: not a readable EASE model directory ({type(exc).__name__}: {exc})") from exc
        if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
            raise ModelFormatError(f"{path}: weights.npy must be a square matrix; got shape {weights.shape}")
        model.weights_ = weights
        model.n_items_ = weights.shape[0]
        return model
