"""STAN and V-STAN: sequence- and time-aware neighbourhoods (Garg et al. 2019; Ludewig et al. 2021).

Both follow session-rec's ``algorithms/knn/stan.py`` and ``vstan.py`` step for step, on the
vectorised engine of :mod:`models.neighbours`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from models.neighbours import (
    DECAY_EXP,
    DECAY_NONE,
    SIM_WEIGHTED_COSINE,
    KernelSpec,
    QueryItems,
    SessionKNNBase,
)

__all__ = ["STAN", "VSTAN"]

_DAY_S = 86_400.0


class STAN(SessionKNNBase):
    """Session-aware kNN with three exponential decays.

    * prefix position: the item at 1-based position ``i`` of ``n`` weighs ``exp((i - n) / lambda_spw)``
      (a repeated item keeps its newest weight); similarity is the weighted cosine
      ``sum_shared w / (sqrt(sum w^2) * sqrt(|session|))``;
    * neighbour recency: similarity times ``exp(-(t_prefix - t_session_end) / (lambda_snh days))``;
    * item position in the neighbour: a neighbour gives its item at newest position ``p`` the weight
      ``sim * exp(-|p - p*| / lambda_inh)``, ``p*`` being the newest position in the neighbour
      of an item it shares with the prefix.

    ``None`` turns a decay off. Without prefix timestamps, "now" is the end of train.

    Parameters
    ----------
    k : int
        Neighbour sessions per prefix.
    sample_size : int
        Most recent candidate sessions kept (0 = all).
    sampling : {"recent", "random"}
    lambda_spw, lambda_snh, lambda_inh : float or None
        Decay lengths: prefix positions, days, neighbour positions.
    remind : bool
        Allow recommending the prefix's own items.
    random_state : int, optional
        Seed of the random sampling keys.

    References
    ----------
    Garg, Gupta, Malhotra, Vig, Shroff, "Sequence and Time Aware Neighborhood for Session-based
    Recommendations: STAN", SIGIR 2019; session-rec ``algorithms/knn/stan.py``.
    """

    _positive_only = False  # session-rec keeps every candidate; all share an item, so sim > 0

    def __init__(self, k: int = 500, sample_size: int = 5000, sampling: str = "recent",
                 lambda_spw: float | None = 1.02, lambda_snh: float | None = 5.0,
                 lambda_inh: float | None = 2.05, remind: bool = True, random_state: int | None = 0) -> None:
        self.k = k
        self.sample_size = sample_size
        self.sampling = sampling
        self.lambda_spw = lambda_spw
        self.lambda_snh = lambda_snh
        self.lambda_inh = lambda_inh
        self.remind = remind
        self.random_state = random_state

    def _validate(self) -> None:
        super()._validate()
        for name in ("lambda_spw", "lambda_snh", "lambda_inh", "lambda_ipw", "lambda_idf"):
            v = getattr(self, name, None)
            if v is not None and v <= 0:
                raise ValueError(f"{name}: must be > 0 or None (off); got {v}")

    def _query_weights(self, q: QueryItems) -> NDArray[np.float64]:
        if self.lambda_spw is None:
            return np.ones(len(q.keys), dtype=np.float64)
        return np.exp((q.last_pos - q.length[q.rows]) / self.lambda_spw)

    def _similarity(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64],
                    overlap: NDArray[np.float64], num: NDArray[np.float64] | None) -> NDArray[np.float64]:
        w = self._query_weights(q)
        num = self._weighted_overlap(q, rows, sess, w) if num is None else num
        sq = np.bincount(q.rows, weights=w * w, minlength=q.n_queries)
        sim = num / (np.sqrt(sq[rows]) * np.sqrt(self.index_.n_unique[sess]))
        if self.lambda_snh is not None:  # a neighbour newer than the prefix counts as "now"
            age_s = np.maximum(q.now[rows] - self.index_.last_ts[sess], 0.0)
            sim = sim * np.exp(-age_s / (self.lambda_snh * _DAY_S))
        return sim

    def _entry_weights(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64],
                       sim: NDArray[np.float64], owner: NDArray[np.int64], entry: NDArray[np.int64]
                       ) -> NDArray[np.float64]:
        w = sim[owner]
        if self.lambda_inh is not None:
            _, p_star = self._newest_shared(q, rows, sess)
            w = w * np.exp(-np.abs(self.index_.last_pos[entry] - p_star[owner]) / self.lambda_inh)
        return w

    def _kernel_spec(self, q: QueryItems) -> KernelSpec:
        w = self._query_weights(q)
        gaps = np.arange(self._kernel_arrays()["max_pos"] + 1, dtype=np.float64)
        return KernelSpec(
            sim=SIM_WEIGHTED_COSINE, query_w=w, query_sq=np.bincount(q.rows, weights=w * w, minlength=q.n_queries),
            decay=DECAY_NONE if self.lambda_snh is None else DECAY_EXP,
            decay_scale=1.0 if self.lambda_snh is None else self.lambda_snh * _DAY_S,
            gap_table=np.zeros(0) if self.lambda_inh is None else np.exp(-np.abs(gaps) / self.lambda_inh))


class VSTAN(STAN):
    """V-STAN: STAN plus V-SKNN's neighbour decay and IDF boost.

    On top of :class:`STAN`, a neighbour's weights are multiplied by
    ``exp((i - n) / lambda_ipw)``, ``i`` being the newest prefix position of an item it shares
    with the prefix (of length ``n``), and each item's weight by ``1 + idf * lambda_idf`` with
    ``idf = log(n_sessions / n_events_of_item)``.

    Parameters
    ----------
    k, sample_size, sampling, lambda_spw, lambda_snh, lambda_inh, remind, random_state :
        As :class:`STAN`.
    lambda_ipw : float or None
        Decay length of the neighbour weight by prefix position.
    lambda_idf : float or None
        IDF factor.

    References
    ----------
    Ludewig, Latifi, Jannach, "Empirical analysis of session-based recommendation algorithms",
    UMUAI 31, 2021; session-rec ``algorithms/knn/vstan.py``.
    """

    def __init__(self, k: int = 500, sample_size: int = 5000, sampling: str = "recent",
                 lambda_spw: float | None = 1.02, lambda_snh: float | None = 5.0,
                 lambda_inh: float | None = 2.05, lambda_ipw: float | None = 1.02,
                 lambda_idf: float | None = 5.0, remind: bool = True, random_state: int | None = 0) -> None:
        super().__init__(k=k, sample_size=sample_size, sampling=sampling, lambda_spw=lambda_spw,
                         lambda_snh=lambda_snh, lambda_inh=lambda_inh, remind=remind, random_state=random_state)
        self.lambda_ipw = lambda_ipw
        self.lambda_idf = lambda_idf

    def _entry_weights(self, q: QueryItems, rows: NDArray[np.int64], sess: NDArray[np.int64],
                       sim: NDArray[np.float64], owner: NDArray[np.int64], entry: NDArray[np.int64]
                       ) -> NDArray[np.float64]:
        q_newest, p_star = self._newest_shared(q, rows, sess)
        w = sim[owner]
        if self.lambda_inh is not None:
            w = w * np.exp(-np.abs(self.index_.last_pos[entry] - p_star[owner]) / self.lambda_inh)
        if self.lambda_idf is not None:
            w = w * (1.0 + self.idf_[self.index_.x.indices[entry]] * self.lambda_idf)
        if self.lambda_ipw is not None:
            w = w * np.exp((q_newest - q.length[rows]) / self.lambda_ipw)[owner]
        return w

    def _kernel_spec(self, q: QueryItems) -> KernelSpec:
        steps = np.arange(max(int(q.length.max(initial=0)), 1), dtype=np.float64)
        return replace(
            super()._kernel_spec(q), step_first=False,
            step_table=np.zeros(0) if self.lambda_ipw is None else np.exp(-steps / self.lambda_ipw),
            entry_item=np.zeros(0) if self.lambda_idf is None else 1.0 + self.idf_ * self.lambda_idf)
