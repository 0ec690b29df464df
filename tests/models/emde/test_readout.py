"""The compiled readout: the mean bucket log-probability equals its definition, and the per-row top k
is exact, ties going to the lower index."""

from __future__ import annotations

import numpy as np
import pytest

from models.emde.readout import BucketReadout, bucket_mean_pairs, bucket_mean_scores, bucket_mean_top, row_top


def test_bucket_mean_scores_is_the_mean_of_each_items_buckets_plus_its_bias() -> None:
    rng = np.random.default_rng(0)
    logp = rng.standard_normal((7, 12)).astype(np.float32)
    cols = np.array([[0, 4, 8], [1, 5, 9], [0, 5, 11], [3, 7, 11]], np.int32)
    bias = np.array([0.0, 0.5, -1.0, 2.0], np.float32)
    want = logp[:, cols].mean(axis=2) + bias
    got = bucket_mean_scores(logp, cols, bias)
    assert got.shape == (7, 4) and got.flags.c_contiguous and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(bucket_mean_scores(logp, cols), logp[:, cols].mean(axis=2), rtol=1e-6, atol=1e-6)
    # a query's scores do not depend on its batch
    np.testing.assert_array_equal(bucket_mean_scores(logp[2:3], cols, bias)[0], got[2])


def test_bucket_mean_scores_refuses_columns_outside_the_sketch() -> None:
    with pytest.raises(ValueError, match="cols must lie in"):
        bucket_mean_scores(np.zeros((2, 4), np.float32), np.array([[0, 4]], np.int32))
    with pytest.raises(ValueError, match="bias must have shape"):
        bucket_mean_scores(np.zeros((2, 4), np.float32), np.array([[0, 3]], np.int32), np.zeros(2, np.float32))


def test_row_top_matches_a_full_sort_with_ties_by_index() -> None:
    rng = np.random.default_rng(1)
    x = np.round(rng.standard_normal((50, 300)), 1).astype(np.float32)  # many ties
    x[:, ::7] = -np.inf
    want = np.lexsort((np.broadcast_to(np.arange(300), x.shape), -x), axis=1)[:, :40]
    np.testing.assert_array_equal(row_top(x, 40), want)


def test_row_top_pads_rows_with_too_few_finite_entries() -> None:
    x = np.array([[1.0, -np.inf, 3.0, np.nan], [-np.inf] * 4], np.float32)
    assert row_top(x, 3).tolist() == [[2, 0, -1], [-1, -1, -1]]
    with pytest.raises(ValueError, match="k must be"):
        row_top(x, 0)


def test_threads_may_score_at_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(2)
    logp = rng.standard_normal((64, 40)).astype(np.float32)
    cols = rng.integers(0, 40, (500, 5)).astype(np.int32)
    want = bucket_mean_scores(logp, cols)
    with ThreadPoolExecutor(4) as pool:  # the stream's workers are threads (models.jit.PARALLEL_LAUNCH)
        got = list(pool.map(lambda _: row_top(bucket_mean_scores(logp, cols), 10), range(16)))
        fused = list(pool.map(lambda _: bucket_mean_top(logp, cols, 10)[0], range(16)))
    for ids in got + fused:
        np.testing.assert_array_equal(ids, row_top(want, 10))


def test_fused_top_and_pairs_equal_the_dense_readout_bit_for_bit() -> None:
    """``bucket_mean_top`` / ``bucket_mean_pairs`` skip the dense matrix but return its entries."""
    rng = np.random.default_rng(3)
    logp = np.round(rng.standard_normal((37, 60)), 1).astype(np.float32)  # coarse values: many tied items
    cols = rng.integers(0, 60, (400, 4)).astype(np.int32)
    bias = np.round(rng.standard_normal(400), 1).astype(np.float32)
    bias[::9] = -np.inf  # the popularity decoder's term of an item never seen
    dense = bucket_mean_scores(logp, cols, bias)
    for k in (1, 25, 400):
        ids, scores = bucket_mean_top(logp, cols, k, bias)
        want = row_top(dense, k)
        np.testing.assert_array_equal(ids, want)
        ok = want >= 0
        np.testing.assert_array_equal(scores[ok], np.take_along_axis(dense, np.maximum(want, 0), axis=1)[ok])
        assert np.all(scores[~ok] == -np.inf) and (~ok).any() == (k == 400)
    rows, items = rng.integers(0, 37, 500), rng.integers(0, 400, 500)
    np.testing.assert_array_equal(bucket_mean_pairs(logp, cols, rows, items, bias), dense[rows, items])
    readout = BucketReadout(logp, cols, bias)
    assert readout.shape == (37, 400)
    np.testing.assert_array_equal(readout.dense(), dense)
    np.testing.assert_array_equal(readout.pairs(rows, items), dense[rows, items])
    # a query's list does not depend on its batch (the kernel splits queries over threads)
    np.testing.assert_array_equal(bucket_mean_top(logp[5:6], cols, 25, bias)[0][0], bucket_mean_top(logp, cols, 25, bias)[0][5])


@pytest.mark.parametrize("block", [1, 4, 7, 128])
def test_fused_top_in_any_query_block_equals_the_dense_readout(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``TOP_QUERY_BLOCK`` is speed only: blocks of 1, 4, 7 or 128 queries (with padding in the last block) give
    ``row_top`` of the dense scores and their entries, bit for bit."""
    import models.emde.readout as readout

    rng = np.random.default_rng(4)
    logp = np.round(rng.standard_normal((37, 60)), 1).astype(np.float32)
    cols = rng.integers(0, 60, (400, 4)).astype(np.int32)
    bias = np.round(rng.standard_normal(400), 1).astype(np.float32)
    logp[3] = -np.inf  # a query no item can score
    dense = bucket_mean_scores(logp, cols, bias)
    monkeypatch.setattr(readout, "TOP_QUERY_BLOCK", block)
    ids, scores = bucket_mean_top(logp, cols, 25, bias)
    want = row_top(dense, 25)
    np.testing.assert_array_equal(ids, want)
    ok = want >= 0
    np.testing.assert_array_equal(scores[ok], np.take_along_axis(dense, np.maximum(want, 0), axis=1)[ok])
    assert (ids[3] == -1).all() and ok[:3].all()


def test_fused_readout_refuses_bad_input() -> None:
    logp, cols = np.zeros((2, 4), np.float32), np.array([[0, 3]], np.int32)
    with pytest.raises(ValueError, match="k must be"):
        bucket_mean_top(logp, cols, 0)
    with pytest.raises(ValueError, match="cols must lie in"):
        bucket_mean_top(logp, cols + 1, 1)
    with pytest.raises(ValueError, match="pairs must lie in"):
        bucket_mean_pairs(logp, cols, np.array([2]), np.array([0]))
    with pytest.raises(ValueError, match="one length"):
        bucket_mean_pairs(logp, cols, np.array([0, 1]), np.array([0]))
