"""Metric definitions pinned on hand-computed cases and on a literal per-query reading of session-rec."""

from __future__ import annotations

import numpy as np
import pytest

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

RECS = np.array([[5, 1, 7, 2], [1, -1, -1, -1]], dtype=np.int32)
# query 0: rest 1 2 2 (the target 1, then item 2 twice); query 1: rest 3
REST_INDPTR = np.array([0, 3, 4], dtype=np.int64)
REST_ITEMS = np.array([1, 2, 2, 3], dtype=np.int32)
TARGET = np.array([1, 3], dtype=np.int32)


def test_hit_rate_and_mrr_by_hand() -> None:
    assert hr_at_k(RECS, TARGET, 1) == 0.0
    assert hr_at_k(RECS, TARGET, 2) == 0.5            # query 0 hits at rank 2, query 1 never
    assert mrr_at_k(RECS, TARGET, 1) == 0.0
    assert mrr_at_k(RECS, TARGET, 4) == pytest.approx((1 / 2 + 0) / 2)


def test_rest_hits_use_the_set_but_count_duplicates() -> None:
    hits, n_rest = rest_hits(RECS, REST_INDPTR, REST_ITEMS)
    assert hits.tolist() == [[False, True, False, True], [False, False, False, False]]
    assert n_rest.tolist() == [3, 1]


def test_precision_divides_by_k() -> None:
    hits, _ = rest_hits(RECS, REST_INDPTR, REST_ITEMS)
    assert precision_at_k(hits, 4) == pytest.approx((2 / 4 + 0) / 2)
    assert precision_at_k(hits, 2) == pytest.approx((1 / 2 + 0) / 2)


def test_recall_divides_by_rest_length_with_duplicates() -> None:
    hits, n_rest = rest_hits(RECS, REST_INDPTR, REST_ITEMS)
    # query 0: {1, 2} found, rest has 3 entries (2 twice) -> 2/3, not 2/2
    assert recall_at_k(hits, n_rest, 4) == pytest.approx((2 / 3 + 0) / 2)


def test_map_divides_by_k_and_skips_rank_k() -> None:
    hits, n_rest = rest_hits(RECS, REST_INDPTR, REST_ITEMS)
    # session-rec: sum_{i<k} P(top_i) * dR(top_i) with P = hits/k, R = hits/len(rest);
    # rank 2 adds (1/4) * (1/3); rank 4 (= k) is never reached by range(k)
    assert map_at_k(hits, n_rest, 4) == pytest.approx((1 / 12 + 0) / 2)
    # with k = 3 the hit at rank 2 counts with P = 1/3
    assert map_at_k(hits, n_rest, 3) == pytest.approx((1 / 3 * 1 / 3) / 2)


def test_coverage_and_popularity_by_hand() -> None:
    assert coverage_at_k(RECS, 2, n_items=10) == pytest.approx(2 / 10)   # {5, 1}
    counts = np.arange(10)                                                # pop(i) = i / 9
    assert popularity_bias_at_k(RECS, 2, counts) == pytest.approx(((5 / 9 + 1 / 9) / 2 + 1 / 9) / 2)


def test_bad_arguments_raise_with_the_numbers() -> None:
    with pytest.raises(ValueError, match=r"k must lie in \[1, 4\]"):
        hr_at_k(RECS, TARGET, 5)
    with pytest.raises(ValueError, match="one entry per query"):
        mrr_at_k(RECS, TARGET[:1], 2)
    with pytest.raises(ValueError, match="n_queries \\+ 1 = 3"):
        rest_hits(RECS, REST_INDPTR[:2], REST_ITEMS)


def _session_rec_reading(recs: np.ndarray, rests: list[list[int]], k: int) -> dict[str, float]:
    """session-rec's add / add_multiple, one query at a time, as published."""
    out = {"hr": 0.0, "mrr": 0.0, "p": 0.0, "r": 0.0, "map": 0.0}
    for row, rest in zip(recs, rests, strict=True):
        result = [int(i) for i in row if i >= 0]
        top = result[:k]
        if rest[0] in top:
            out["hr"] += 1
            out["mrr"] += 1 / (top.index(rest[0]) + 1)
        out["p"] += len(set(rest) & set(top)) / k
        out["r"] += len(set(rest) & set(top)) / len(rest)
        res, last_recall = 0.0, 0.0
        for i in range(k):
            recall = len(set(rest) & set(result[:i])) / len(rest)
            precision = len(set(rest) & set(result[:i])) / k
            res += precision * (recall - last_recall)
            last_recall = recall
        out["map"] += res
    return {key: v / len(rests) for key, v in out.items()}


def test_vectorised_metrics_equal_the_per_query_definitions() -> None:
    rng = np.random.default_rng(7)
    n_q, n, n_items = 300, 20, 40
    recs = np.stack([rng.permutation(n_items)[:n] for _ in range(n_q)]).astype(np.int32)
    recs[rng.random((n_q, n)) < 0.05] = -1
    recs = np.where(np.cumsum(recs < 0, axis=1) > 0, -1, recs)          # padding only at the tail
    rests = [rng.integers(0, n_items, size=rng.integers(1, 8)).tolist() for _ in range(n_q)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rests])]).astype(np.int64)
    items = np.array([i for r in rests for i in r], dtype=np.int32)
    hits, n_rest = rest_hits(recs, indptr, items)
    target = np.array([r[0] for r in rests])
    for k in (1, 5, 20):
        want = _session_rec_reading(recs, rests, k)
        assert hr_at_k(recs, target, k) == pytest.approx(want["hr"])
        assert mrr_at_k(recs, target, k) == pytest.approx(want["mrr"])
        assert precision_at_k(hits, k) == pytest.approx(want["p"])
        assert recall_at_k(hits, n_rest, k) == pytest.approx(want["r"])
        assert map_at_k(hits, n_rest, k) == pytest.approx(want["map"])
