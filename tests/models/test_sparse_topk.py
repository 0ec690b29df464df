"""``models.sparse_topk``: the top-k of sparse rows plus a dense prior equals the dense computation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from models.base import Histories, InteractionLog
from models.covisit import CoVisitation
from models.sparse_topk import prior_order, sparse_prior_topk, sparse_prior_topk_of_rows
from models.topk import topk


def _reference(dense: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The documented rule over the dense scores: best first, ties by the lower index, -inf as -1."""
    n_q, n_items = dense.shape
    idx = np.full((n_q, n), -1, np.int32)
    val = np.full((n_q, n), -np.inf, np.float32)
    for q in range(n_q):
        order = np.lexsort((np.arange(n_items), -dense[q]))[:n]
        keep = np.isfinite(dense[q][order])
        idx[q, :keep.sum()] = order[keep]
        val[q, :keep.sum()] = dense[q][order][keep]
    return idx, val


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [1, 5, 40])
def test_equals_the_dense_rule_with_ties_and_exclusions(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    n_q, n_items = 30, int(rng.integers(1, 60))
    rows = sp.random(n_q, n_items, density=rng.uniform(0, 0.4), random_state=seed, format="csr", dtype=np.float32)
    rows.data = np.round(rows.data * 4) / 4  # ties among the non-zeros, and explicit zeros
    prior = (rng.integers(0, 3, n_items) / 8).astype(np.float32)  # many equal priors
    exclude = sp.random(n_q, n_items, density=0.2, random_state=seed + 100, format="csr", dtype=np.float32)
    dense = rows.toarray() + prior[None, :]
    dense[exclude.toarray() != 0] = -np.inf
    got = sparse_prior_topk(rows, prior, prior_order(prior), n, exclude=exclude)
    want = _reference(dense, n)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_equals_topk_without_ties_and_rejects_bad_shapes() -> None:
    rng = np.random.default_rng(7)
    rows = sp.random(50, 500, density=0.02, random_state=7, format="csr", dtype=np.float32)
    prior = rng.permutation(500).astype(np.float32) * np.float32(1e-3)
    got = sparse_prior_topk(rows, prior, prior_order(prior), 20)
    want = topk(rows.toarray() + prior[None, :], 20)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    with pytest.raises(ValueError, match="shape"):
        sparse_prior_topk(rows, prior[:-1], prior_order(prior[:-1]), 20)
    with pytest.raises(ValueError, match="n must be"):
        sparse_prior_topk(rows, prior, prior_order(prior), 0)
    with pytest.raises(ValueError, match="NaN"):
        prior_order(np.array([1.0, np.nan], np.float32))


def _log(rng: np.random.Generator, n_items: int, n_events: int) -> InteractionLog:
    sess = np.sort(rng.integers(0, n_events // 6, n_events))
    return InteractionLog(session_idx=sess.astype(np.int32), item_idx=rng.integers(0, n_items, n_events).astype(np.int32),
                          ts=np.arange(n_events, dtype=np.float64), n_items=n_items)


def test_covisitation_lists_equal_the_dense_scores() -> None:
    """The model's recommend and similar_items (sparse path) against the dense expressions they replace."""
    rng = np.random.default_rng(3)
    m = CoVisitation().fit(_log(rng, 300, 6000))
    lens = rng.integers(0, 12, 80)
    hist = Histories(indptr=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                     items=rng.integers(0, 300, int(lens.sum())).astype(np.int32))
    h = m._history_matrix(hist)
    for exclude_seen in (False, True):
        dense = (h @ m.covisit_).toarray() + m.popularity_weight * m.popularity_[None, :]
        if exclude_seen:
            hs = h.tocoo()
            dense[hs.row, hs.col] = -np.inf
        got = m.recommend(hist, 25, exclude_seen=exclude_seen)
        want = _reference(dense, 25)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    items = rng.integers(0, 300, 40).astype(np.int32)
    dense = m.covisit_[items].toarray() + 1e-6 * m.popularity_[None, :]
    dense[np.arange(40), items] = -np.inf
    got = m.similar_items(items, 30)
    want = _reference(dense, 30)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])

    for one in items[:5]:  # one item at a time: the API's path (a slice of the matrix, no scipy indexing)
        single = m.similar_items(np.array([one], dtype=np.int32), 30)
        np.testing.assert_array_equal(single[0][0], want[0][list(items).index(one)])


@pytest.mark.parametrize("n_rows", [0, 1, 2, 17])
def test_of_rows_equals_the_indexed_rows_with_the_item_excluded(n_rows: int) -> None:
    rng = np.random.default_rng(n_rows)
    m = sp.random(40, 40, density=0.15, random_state=n_rows, format="csr", dtype=np.float32)
    m.data = np.round(m.data * 4) / 4
    prior = (rng.integers(0, 3, 40) / 8).astype(np.float32)
    rows = rng.integers(0, 40, n_rows).astype(np.int32)  # repeats allowed
    got = sparse_prior_topk_of_rows(m, rows, prior, prior_order(prior), 12)
    want = sparse_prior_topk(m[rows], prior, prior_order(prior), 12, exclude_items=rows)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    with pytest.raises(ValueError, match="row_idx"):
        sparse_prior_topk_of_rows(m, np.array([40]), prior, prior_order(prior), 12)
    with pytest.raises(ValueError, match="n must be"):
        sparse_prior_topk_of_rows(m, rows, prior, prior_order(prior), 0)
