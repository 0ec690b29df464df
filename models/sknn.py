"""SKNN and V-SKNN: session-based nearest neighbours (Jannach & Ludewig 2017; Ludewig et al. 2018/2021).

Both follow session-rec's ``algorithms/knn/sknn.py`` (``ContextKNN``) and ``vsknn.py``
(``VMContextKNN``) step for step, on the vectorised engine of :mod:`models.neighbours`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from models.base import InteractionLog
from models.neighbours import (
    DECAY_DAYS,
    SIM_COSINE,
    SIM_DICE,
    SIM_JACCARD,
    SIM_WEIGHTED_COSINE,
    SIM_WEIGHTED_MEAN,
    KernelSpec,
    QueryItems,
    SessionKNNBase,
    day_window,
    days_table,
)

__all__ = ["SKNN", "VSKNN", "POSITION_WEIGHTS", "DECAY_WEIGHTS"]

_DAY_S = 86_400.0


def _linear(i: NDArray, n: NDArray) -> NDArray:
    # session-rec: 1 - 0.1*(length - i) if i <= 10 else 0 (the cut-off is on i, as published)
    return np.where(i <= 10, 1.0 - 0.1 * (n - i), 0.0)


POSITION_WEIGHTS = {
    "linear": _linear,
    "same": lambda i, n: np.ones_like(i, dtype=np.float64),
    "div": lambda i, n: i / n,
    "log": lambda i, n: 1.0 / np.log10((n - i) + 1.7),
    "quadratic": lambda i, n: (i / n) ** 2,
}
"""V-SKNN weight of the item at 1-based position ``i`` of a prefix of length ``n`` (session-rec names)."""

DECAY_WEIGHTS = {
    "linear": lambda s: np.where(s <= 100, 1.0 - 0.1 * s, 0.0),
    "same": lambda s: np.ones_like(s, dtype=np.float64),
    "div": lambda s: 1.0 / s,
    "log": lambda s: 1.0 / np.log10(s + 1.7),
    "quadratic": lambda s: 1.0 / (s * s),
}
"""V-SKNN neighbour decay by ``s``: 1 + how many prefix steps back its newest shared item lies."""


class SKNN(SessionKNNBase):
    """Session-based kNN: score = sum of similarities of the neighbour sessions holding the item.

    Parameters
    ----------
    k : int
        Neighbour sessions per prefix.
    sample_size : int
        Candidate sessions (sharing an item with the prefix) kept before similarity; 0 keeps all.
    sampling : {"recent", "random"}
        Keep the most recent candidates (by last event) or a random subset (fixed per fit).
    similarity : {"cosine", "jaccard", "tanimoto", "binary"}
        Set similarity of prefix and session. session-rec's ``cosine`` computes
        ``|a∩b| / sqrt(|b|) * sqrt(|a|)``, which ranks and scores like the true cosine up to a
        per-prefix factor, so the true cosine is used.
    random_state : int, optional
        Seed of the random sampling keys.

    References
    ----------
    Jannach, Ludewig, "When Recurrent Neural Networks meet the Neighborhood for Session-Based
    Recommendation", RecSys 2017; session-rec ``algorithms/knn/sknn.py``.
    """

    def __init__(self, k: int = 100, sample_size: int = 500, sampling: str = "recent",
                 similarity: str = "cosine", random_state: int | None = 0) -> None:
        self.k = k
        self.sample_size = sample_size
        self.sampling = sampling
        self.similarity = similarity
        self.random_state = random_state

    def _validate(self) -> None:
        super()._validate()
        if self.similarity not in ("cosine", "jaccard", "tanimoto", "binary"):
            raise ValueError(f"similarity: must be cosine, jaccard, tanimoto or binary; got {self.similarity!r}")

    def _similarity(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64],
                    overlap: NDArray[np.float64], num: NDArray[np.float64] | None) -> NDArray[np.float64]:
        a = q.n_unique[rows].astype(np.float64)
        b = self.index_.n_unique[sess].astype(np.float64)
        if self.similarity == "cosine":
            return overlap / np.sqrt(a * b)
        if self.similarity in ("jaccard", "tanimoto"):
            return overlap / (a + b - overlap)
        return 2 * overlap / (2 * overlap + a + b)

    def _pair_weights(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64],
                      sim: NDArray[np.float64]) -> NDArray[np.float64]:
        return sim

    def _kernel_spec(self, q: QueryItems) -> KernelSpec:
        sim = {"cosine": SIM_COSINE, "jaccard": SIM_JACCARD, "tanimoto": SIM_JACCARD, "binary": SIM_DICE}
        return KernelSpec(sim=sim[self.similarity], query_w=np.ones(len(q.keys)), query_sq=np.zeros(q.n_queries))


class VSKNN(SessionKNNBase):
    """Vector multiplication SKNN: position-weighted prefix, recency-decayed neighbours, IDF boost.

    The prefix item at position ``i`` of ``n`` weighs ``weighting(i, n)`` (a repeated item keeps
    its newest weight); similarity ``vec`` = sum of weights of shared items / distinct prefix
    items, ``cosine`` = that sum / (sqrt(sum of squared weights) * sqrt(|session|)). A neighbour
    gives each of its items ``sim * weighting_score(s) * (1 + idf * idf_weighting)`` where ``s``
    is 1 + the number of prefix steps back to its newest shared item, ``idf = log(n_sessions /
    n_events_of_item)``.

    Parameters
    ----------
    k, sample_size, sampling, random_state :
        As :class:`SKNN`.
    similarity : {"vec", "cosine"}
    weighting : {"linear", "same", "div", "log", "quadratic"}
        Prefix position weight (``POSITION_WEIGHTS``).
    weighting_score : {"linear", "same", "div", "log", "quadratic"}
        Neighbour decay (``DECAY_WEIGHTS``).
    idf_weighting : float
        IDF factor; 0 disables.
    weighting_time : bool
        Multiply similarity by ``(7/8) ** round(days between prefix and session end)``.
    remind : bool
        Allow recommending items of the prefix itself (session-rec default True).
    last_n_days : float, optional
        Train only on the last days of the log.

    References
    ----------
    Ludewig, Jannach, "Evaluation of Session-based Recommendation Algorithms", UMUAI 28, 2018;
    session-rec ``algorithms/knn/vsknn.py`` (``VMContextKNN``).
    """

    def __init__(self, k: int = 100, sample_size: int = 1000, sampling: str = "recent", similarity: str = "vec",
                 weighting: str = "div", weighting_score: str = "div", idf_weighting: float = 0.0,
                 weighting_time: bool = False, remind: bool = True, last_n_days: float | None = None,
                 random_state: int | None = 0) -> None:
        self.k = k
        self.sample_size = sample_size
        self.sampling = sampling
        self.similarity = similarity
        self.weighting = weighting
        self.weighting_score = weighting_score
        self.idf_weighting = idf_weighting
        self.weighting_time = weighting_time
        self.remind = remind
        self.last_n_days = last_n_days
        self.random_state = random_state

    def _validate(self) -> None:
        super()._validate()
        if self.similarity not in ("vec", "cosine"):
            raise ValueError(f"similarity: must be 'vec' or 'cosine'; got {self.similarity!r}")
        if self.weighting not in POSITION_WEIGHTS:
            raise ValueError(f"weighting: must be one of {sorted(POSITION_WEIGHTS)}; got {self.weighting!r}")
        if self.weighting_score not in DECAY_WEIGHTS:
            raise ValueError(f"weighting_score: must be one of {sorted(DECAY_WEIGHTS)}; got {self.weighting_score!r}")

    def _train_window(self, log: InteractionLog) -> InteractionLog:
        return day_window(log, self.last_n_days)

    def _position_weights(self, q: QueryItems) -> NDArray[np.float64]:
        return POSITION_WEIGHTS[self.weighting](q.last_pos, q.length[q.rows].astype(np.float64))

    def _query_weights(self, q: QueryItems) -> NDArray[np.float64]:
        return self._position_weights(q)

    def _similarity(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64],
                    overlap: NDArray[np.float64], num: NDArray[np.float64] | None) -> NDArray[np.float64]:
        w = self._position_weights(q)
        num = self._weighted_overlap(q, rows, sess, w) if num is None else num
        if self.similarity == "vec":
            sim = num / q.n_unique[rows]
        else:
            sq = np.bincount(q.rows, weights=w * w, minlength=q.n_queries)
            with np.errstate(divide="ignore", invalid="ignore"):
                sim = num / (np.sqrt(sq[rows]) * np.sqrt(self.index_.n_unique[sess]))
            sim = np.nan_to_num(sim, nan=0.0, posinf=0.0, neginf=0.0)
        if self.weighting_time:  # a neighbour newer than the prefix counts as "now"
            days = np.round(np.maximum(q.now[rows] - self.index_.last_ts[sess], 0.0) / _DAY_S)
            sim = sim * (7.0 / 8.0) ** days
        return sim

    def _pair_weights(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64],
                      sim: NDArray[np.float64]) -> NDArray[np.float64]:
        newest, _ = self._newest_shared(q, rows, sess)
        step = q.length[rows] - newest + 1.0
        return sim * DECAY_WEIGHTS[self.weighting_score](step)

    def _item_factor(self) -> NDArray[np.float64] | None:
        return 1.0 + self.idf_ * self.idf_weighting if self.idf_weighting else None

    def _kernel_spec(self, q: QueryItems) -> KernelSpec:
        w = self._position_weights(q)
        steps = np.arange(1, max(int(q.length.max(initial=0)), 1) + 1, dtype=np.float64)
        factor = self._item_factor()
        spec = KernelSpec(
            sim=SIM_WEIGHTED_MEAN if self.similarity == "vec" else SIM_WEIGHTED_COSINE, query_w=w,
            query_sq=np.bincount(q.rows, weights=w * w, minlength=q.n_queries),
            step_table=DECAY_WEIGHTS[self.weighting_score](steps), step_first=True,
            final_item=factor if factor is not None else np.zeros(0))
        if self.weighting_time:
            spec = replace(spec, decay=DECAY_DAYS, decay_scale=_DAY_S,
                           decay_table=days_table(7.0 / 8.0, q.now, self.index_.last_ts))
        return spec
