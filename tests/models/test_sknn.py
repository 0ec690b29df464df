"""SKNN and V-SKNN equal a plain per-prefix loop over sessions written from session-rec's description."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.base import Histories, InteractionLog
from models.sknn import DECAY_WEIGHTS, POSITION_WEIGHTS, SKNN, VSKNN


def random_log(seed: int = 3, n_sessions: int = 160, n_items: int = 30) -> tuple[InteractionLog, list[list[int]]]:
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(0, n_items, size=int(rng.integers(2, 9))).tolist() for _ in range(n_sessions)]
    t_end = np.sort(rng.uniform(1e9, 1e9 + 5e5, size=n_sessions))[rng.permutation(n_sessions)]
    sess = np.repeat(np.arange(n_sessions), [len(s) for s in seqs]).astype(np.int32)
    ts = np.concatenate([t_end[i] - 10.0 * np.arange(len(s))[::-1] for i, s in enumerate(seqs)])
    log = InteractionLog(session_idx=sess, item_idx=np.array([i for s in seqs for i in s], dtype=np.int32),
                         ts=ts, n_items=n_items)
    return log, seqs


def random_prefixes(seed: int = 4, n: int = 40, n_items: int = 30) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n_items, size=int(rng.integers(1, 7))).tolist() for _ in range(n)]


def recency_rank(log: InteractionLog) -> dict[int, int]:
    """Rank of each session by its last event, newest first (ties: log order)."""
    last = {int(s): float(t) for s, t in zip(log.session_idx, log.ts, strict=True)}
    return {s: r for r, s in enumerate(sorted(last, key=lambda s: (-last[s], s)))}


def candidates(seqs: list[list[int]], prefix: list[int], rank: dict[int, int], sample_size: int) -> list[int]:
    cand = [s for s, items in enumerate(seqs) if set(items) & set(prefix)]
    return sorted(cand, key=lambda s: rank[s])[:sample_size] if sample_size else cand


def ranked(scores: dict[int, float], n: int) -> list[tuple[int, float]]:
    return sorted(((i, v) for i, v in scores.items() if v > 0), key=lambda x: (-x[1], x[0]))[:n]


def oracle_sknn(seqs, rank, prefix, k, sample_size) -> dict[int, float]:
    sims = []
    for s in candidates(seqs, prefix, rank, sample_size):
        a, b = set(prefix), set(seqs[s])
        sims.append((s, len(a & b) / math.sqrt(len(a) * len(b))))
    scores: dict[int, float] = {}
    for s, sim in sorted(sims, key=lambda x: (-x[1], rank[x[0]]))[:k]:
        for item in set(seqs[s]):
            scores[item] = scores.get(item, 0.0) + sim
    return scores


def oracle_vsknn(seqs, rank, idf, prefix, k, sample_size, weighting, weighting_score, idf_weighting) -> dict[int, float]:
    pos_map = {}
    for count, item in enumerate(prefix, start=1):
        pos_map[item] = float(POSITION_WEIGHTS[weighting](np.array(count), np.array(len(prefix))))
    sims = []
    for s in candidates(seqs, prefix, rank, sample_size):
        sim = sum(pos_map[i] for i in set(prefix) & set(seqs[s])) / len(pos_map)
        if sim > 0:
            sims.append((s, sim))
    scores: dict[int, float] = {}
    for s, sim in sorted(sims, key=lambda x: (-x[1], rank[x[0]]))[:k]:
        step = 1
        for item in reversed(prefix):
            if item in seqs[s]:
                break
            step += 1
        decay = float(DECAY_WEIGHTS[weighting_score](np.array(float(step))))
        for item in set(seqs[s]):
            scores[item] = scores.get(item, 0.0) + sim * decay * (1 + idf[item] * idf_weighting)
    return scores


def compare(model_ids: np.ndarray, model_scores: np.ndarray, want: list[tuple[int, float]]) -> None:
    """Same scores rank by rank; ids may differ only among floating-point ties (at the cut too)."""
    got = [(int(i), float(v)) for i, v in zip(model_ids, model_scores, strict=True) if i >= 0]
    assert len(got) == len(want)
    np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-5)
    g, w = dict(got), dict(want)
    for i in set(g) & set(w):
        assert g[i] == pytest.approx(w[i], rel=1e-5)
    for i in set(g) ^ set(w):
        assert g.get(i, w.get(i)) == pytest.approx(want[-1][1], rel=1e-5)


@pytest.mark.parametrize(("k", "sample_size"), [(15, 40), (500, 0), (5, 10)])
def test_sknn_equals_the_loop(k: int, sample_size: int) -> None:
    log, seqs = random_log()
    rank = recency_rank(log)
    model = SKNN(k=k, sample_size=sample_size).fit(log)
    prefixes = random_prefixes()
    ids, scores = model.recommend(Histories.from_lists(prefixes), 10)
    for q, prefix in enumerate(prefixes):
        compare(ids[q], scores[q], ranked(oracle_sknn(seqs, rank, prefix, k, sample_size), 10))


@pytest.mark.parametrize(("weighting", "weighting_score", "idf_weighting"),
                         [("quadratic", "div", 5.0), ("div", "linear", 0.0), ("log", "quadratic", 1.0),
                          ("linear", "same", 2.0)])
def test_vsknn_equals_the_loop(weighting: str, weighting_score: str, idf_weighting: float) -> None:
    log, seqs = random_log()
    rank = recency_rank(log)
    counts = np.bincount(log.item_idx, minlength=log.n_items)
    idf = np.where(counts > 0, np.log(len(seqs) / np.maximum(counts, 1)), 0.0)
    model = VSKNN(k=15, sample_size=40, weighting=weighting, weighting_score=weighting_score,
                  idf_weighting=idf_weighting).fit(log)
    prefixes = random_prefixes()
    ids, scores = model.recommend(Histories.from_lists(prefixes), 10)
    for q, prefix in enumerate(prefixes):
        want = oracle_vsknn(seqs, rank, idf, prefix, 15, 40, weighting, weighting_score, idf_weighting)
        compare(ids[q], scores[q], ranked(want, 10))


def test_bad_hyper_parameters_name_the_field() -> None:
    log, _ = random_log()
    with pytest.raises(ValueError, match="weighting: must be one of"):
        VSKNN(weighting="cubic").fit(log)
    with pytest.raises(ValueError, match="k: must be >= 1; got 0"):
        SKNN(k=0).fit(log)
    with pytest.raises(ValueError, match="sampling: must be 'recent' or 'random'"):
        SKNN(sampling="oldest").fit(log)


def test_random_sampling_is_seeded() -> None:
    log, _ = random_log()
    q = Histories.from_lists(random_prefixes())
    a = SKNN(k=5, sample_size=10, sampling="random", random_state=1).fit(log).recommend(q, 5)[0]
    b = SKNN(k=5, sample_size=10, sampling="random", random_state=1).fit(log).recommend(q, 5)[0]
    np.testing.assert_array_equal(a, b)
