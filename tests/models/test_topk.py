"""``models.topk``: the top ``n`` of a score matrix, and ranks of a few entries in "score descending, ties by the
lower row" order, counted without a sort."""

from __future__ import annotations

import numpy as np

from models.topk import PARALLEL_ROWS, ranks_among, top_rows, topk


def test_topk_equals_a_full_sort_of_each_row_with_ties_infinities_and_nan():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n_q = int(rng.integers(1, 12)) if trial % 10 else PARALLEL_ROWS + 6  # split over numba's threads
        n_items, n = int(rng.integers(1, 200)), int(rng.integers(1, 250))
        scores = (rng.integers(-3, 4, (n_q, n_items)) / 3).astype(np.float32)  # few values: ties at the cut
        scores[rng.random(scores.shape) < 0.2] = -np.inf  # excluded items
        scores[rng.random(scores.shape) < 0.05] = np.inf
        scores[rng.random(scores.shape) < 0.05] = np.nan
        idx, val = topk(scores, n)
        assert idx.shape == val.shape == (n_q, n)
        for q in range(n_q):
            keep = np.flatnonzero(np.isfinite(scores[q]) | (scores[q] > 0))  # NaN and -inf never selected
            want = keep[np.lexsort((keep, -scores[q, keep]))][:n]
            np.testing.assert_array_equal(idx[q, :len(want)], want, err_msg=str(trial))
            np.testing.assert_array_equal(val[q, :len(want)], scores[q, want])
            assert (idx[q, len(want):] == -1).all() and (val[q, len(want):] == -np.inf).all()


def test_ranks_among_equal_the_sorted_order_with_ties():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 400))
        rows = rng.permutation(100_000)[:n]
        scores = (rng.integers(-4, 5, n) / 3).astype(np.float32)  # few distinct values: many ties
        which = rng.permutation(n)[:int(rng.integers(0, n + 1))]
        order = np.lexsort((rows, -scores))
        rank_of = np.empty(n, dtype=np.int64)
        rank_of[order] = np.arange(n)
        ranks, values = ranks_among(rows, scores, which)
        np.testing.assert_array_equal(ranks, rank_of[which], err_msg=str(trial))
        np.testing.assert_array_equal(values, scores[which])


def test_nothing_asked():
    ranks, values = ranks_among(np.arange(5), np.ones(5, np.float32), np.zeros(0, np.int64))
    assert ranks.shape == (0,) and values.shape == (0,)


def test_top_rows_equal_the_sorted_order_cut_at_k():
    """The heap selection gives the first k of the lexsort by (-score, row), ties at the cut included."""
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 500, 5000):
        rows = rng.permutation(10 * n + 1)[:n]
        scores = rng.integers(0, 20, n).astype(np.float32) / 4  # many ties
        order = np.lexsort((rows, -scores))
        for k in (0, 1, 3, 81, n - 1, n, n + 5):
            got_r, got_s = top_rows(rows, scores, k)
            want = order[:max(min(k, n), 0)]
            np.testing.assert_array_equal(got_r, rows[want])
            np.testing.assert_array_equal(got_s, scores[want])
            assert got_r.dtype == np.int64 and got_s.dtype == np.float32


def test_topk_of_long_rows_bounded_by_block_maxima_equals_a_full_sort():
    """Rows of at least ``4 k`` blocks take the bounded path (``TOP_BLOCK``): ties at the cut, a tail block, NaN
    and -inf blocks, rows sorted ascending (every entry would enter a plain heap), rows with fewer finite entries
    than ``k``."""
    from models.topk import TOP_BLOCK

    rng = np.random.default_rng(1)
    for trial in range(40):
        n = int(rng.integers(1, 40))
        n_items = int(rng.integers(4 * n * TOP_BLOCK, 6 * n * TOP_BLOCK + 100))
        n_q = PARALLEL_ROWS + 2 if trial % 4 == 0 else 3
        scores = (rng.integers(-20, 20, (n_q, n_items)) / 7).astype(np.float32)
        scores[rng.random(scores.shape) < 0.1] = -np.inf
        scores[rng.random(scores.shape) < 0.02] = np.nan
        scores[0, :3 * TOP_BLOCK] = np.nan  # whole blocks of NaN
        scores[1] = np.sort(scores[1])  # ascending, NaN last
        scores[2, :] = -np.inf
        scores[2, rng.integers(0, n_items, max(1, n // 2))] = 1.0  # fewer finite entries than n
        idx, val = topk(scores, n)
        for q in range(n_q):
            keep = np.flatnonzero(np.isfinite(scores[q]) | (scores[q] > 0))
            want = keep[np.lexsort((keep, -scores[q, keep]))][:n]
            np.testing.assert_array_equal(idx[q, :len(want)], want, err_msg=str(trial))
            np.testing.assert_array_equal(val[q, :len(want)], scores[q, want])
            assert (idx[q, len(want):] == -1).all()
