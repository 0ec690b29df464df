"""Next-item evaluation as session-rec does it: rank all train items for every test prefix, in batches."""

from __future__ import annotations

import logging
import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from models.base import Recommender
from models.data.encoding import Dataset
from models.data.task import NextItemTask
from models.metrics import (
    coverage_at_k,
    hr_at_k,
    map_at_k,
    mrr_at_k,
    popularity_bias_at_k,
    precision_at_k,
    recall_at_k,
    rest_hits,
)

__all__ = ["EvalReport", "rank_queries", "score_rankings", "fit_and_evaluate", "sample_queries"]

log = logging.getLogger(__name__)


@dataclass
class EvalReport:
    """One model's result on one task.

    Attributes
    ----------
    model : str
        Registry name of the model.
    n_queries : int
        Prefixes scored.
    metrics : dict of str to float
        ``HR@k``, ``MRR@k`` (next item), ``P@k``, ``R@k``, ``MAP@k`` (rest of session),
        ``Coverage@k``, ``Popularity@k`` for every requested k.
    train_s : float
        Wall seconds of ``fit``.
    score_s : float
        Wall seconds of all ``recommend`` calls.
    peak_mb : float
        Peak resident memory above the level before ``fit``, in MiB (sampled every 10 ms).
    """

    model: str
    n_queries: int
    metrics: dict[str, float] = field(default_factory=dict)
    train_s: float = 0.0
    score_s: float = 0.0
    peak_mb: float = 0.0

    @property
    def prefixes_per_s(self) -> float:
        return self.n_queries / self.score_s if self.score_s > 0 else float("inf")


def sample_queries(task: NextItemTask, max_queries: int | None, seed: int = 0) -> NextItemTask:
    """A uniform random subset of at most ``max_queries`` queries (kept in task order), for ``--quick``.

    The same ``seed`` picks the same prefixes for every model, so quick runs stay comparable.
    """
    if max_queries is None or task.n_queries <= max_queries:
        return task
    sel = np.sort(np.random.default_rng(seed).choice(task.n_queries, size=max_queries, replace=False))
    return task.subset(sel)


def rank_queries(model: Recommender, task: NextItemTask, n: int = 20, *, batch_size: int = 500,
                 exclude_seen: bool = False, warmup: bool = True) -> tuple[NDArray[np.int32], float]:
    """Top-``n`` lists for every query of ``task``, calling ``recommend`` on batches of prefixes.

    With ``warmup``, the first batch is scored once untimed before the timed pass: numba compiles a kernel on
    its first call (once per machine, then cached on disk), and on a fresh clone of a busy machine that took
    minutes, reported as scoring time (session 29's new-user trial: 1 prefix/s on 109 prefixes). The lists
    do not depend on it.

    Parameters
    ----------
    model : Recommender
        A fitted model.
    task : NextItemTask
    n : int
        List length.
    batch_size : int
        Prefixes per ``recommend`` call.
    exclude_seen : bool
        Passed to ``recommend``.
    warmup : bool
        Score the first batch once, untimed, first (compiles the kernels).

    Returns
    -------
    (recs, seconds) : int32 array of shape (n_queries, n) and the wall time spent in ``recommend`` (the timed
    pass only).

    Raises
    ------
    ValueError
        If the model returns ids of the wrong shape.
    """
    recs = np.full((task.n_queries, n), -1, dtype=np.int32)
    if warmup and task.n_queries:
        model.recommend(task.prefixes(slice(0, min(batch_size, task.n_queries))), n, exclude_seen=exclude_seen)
    spent = 0.0
    for lo in range(0, task.n_queries, batch_size):
        sel = slice(lo, min(lo + batch_size, task.n_queries))
        hist = task.prefixes(sel)
        t0 = time.perf_counter()
        ids, _ = model.recommend(hist, n, exclude_seen=exclude_seen)
        spent += time.perf_counter() - t0
        if ids.shape != (hist.n_queries, n):
            raise ValueError(f"{type(model).__name__}.recommend must return ids of shape "
                             f"({hist.n_queries}, {n}); got {ids.shape}")
        recs[sel] = ids
    return recs, spent


def score_rankings(recs: NDArray[np.int32], task: NextItemTask, item_counts: NDArray[np.int64],
                   ks: tuple[int, ...] = (5, 10, 20)) -> dict[str, float]:
    """All metrics of ranked lists against a task's targets and rests.

    Parameters
    ----------
    recs : ndarray of shape (n_queries, n), int32
        From :func:`rank_queries`; ``n >= max(ks)``.
    task : NextItemTask
    item_counts : ndarray of shape (n_items,), int64
        Train events per item (popularity; items with count 0 are not in the catalogue).
    ks : tuple of int
        Cut-offs.

    Returns
    -------
    dict with keys ``HR@k, MRR@k, P@k, R@k, MAP@k, Coverage@k, Popularity@k``.
    """
    target = task.next_items()
    indptr, items = task.rest()
    hits, n_rest = rest_hits(recs, indptr, items)
    n_catalogue = int((item_counts > 0).sum())
    out: dict[str, float] = {}
    for k in ks:
        out[f"HR@{k}"] = hr_at_k(recs, target, k)
        out[f"MRR@{k}"] = mrr_at_k(recs, target, k)
        out[f"P@{k}"] = precision_at_k(hits, k)
        out[f"R@{k}"] = recall_at_k(hits, n_rest, k)
        out[f"MAP@{k}"] = map_at_k(hits, n_rest, k)
        out[f"Coverage@{k}"] = coverage_at_k(recs, k, max(n_catalogue, 1))
        out[f"Popularity@{k}"] = popularity_bias_at_k(recs, k, item_counts)
    return out


def fit_and_evaluate(name: str, model: Recommender, data: Dataset, *, ks: tuple[int, ...] = (5, 10, 20),
                     max_queries: int | None = None, batch_size: int = 500, seed: int = 0,
                     save_dir: Path | None = None) -> EvalReport:
    """Fit ``model`` on ``data.train``, rank every (or a sample of) test prefix and score the lists.

    Parameters
    ----------
    name : str
        Name for the report.
    model : Recommender
        An unfitted model.
    data : Dataset
    ks : tuple of int
        Metric cut-offs; lists of length ``max(ks)`` are requested.
    max_queries : int, optional
        Evaluate a seeded uniform sample of this many prefixes (``--quick``).
    batch_size : int
        Prefixes per ``recommend`` call.
    seed : int
        Seed of the prefix sample.
    save_dir : Path, optional
        When given, the fitted model is saved there (``save_dir / name``).

    Returns
    -------
    EvalReport with train and scoring wall times and the peak resident memory increase.
    """
    task = sample_queries(data.test, max_queries, seed)
    with _PeakRss() as mem:
        t0 = time.perf_counter()
        model.fit(data.train)
        train_s = time.perf_counter() - t0
        recs, score_s = rank_queries(model, task, max(ks), batch_size=batch_size,
                                     exclude_seen=data.exclude_seen)
    if save_dir is not None:
        model.save(Path(save_dir) / name)
    counts = np.bincount(data.train.item_idx, minlength=data.train.n_items).astype(np.int64)
    metrics = score_rankings(recs, task, counts, ks)
    log.info("%s on %s: HR@20=%.4f MRR@20=%.4f train %.1fs score %.1fs", name, data.name,
             metrics.get("HR@20", float("nan")), metrics.get("MRR@20", float("nan")), train_s, score_s)
    return EvalReport(model=name, n_queries=task.n_queries, metrics=metrics, train_s=train_s,
                      score_s=score_s, peak_mb=mem.peak_mb)


class _PeakRss:
    """Context manager sampling this process's resident set size every 10 ms (Linux /proc)."""

    def __enter__(self) -> _PeakRss:
        self._page = resource.getpagesize()
        self._base = self._rss()
        self._peak = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * self._page
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self._peak = max(self._peak, self._rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._rss())

    @property
    def peak_mb(self) -> float:
        return (self._peak - self._base) / 2**20
