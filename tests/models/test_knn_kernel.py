"""The compiled session-kNN kernel (``recommend``) gives the same lists as the vectorised reference
(``_recommend_reference``) for SKNN, V-SKNN, STAN and V-STAN: same ids in the same order (ties
included), same scores."""

from __future__ import annotations

import numpy as np
import pytest

from models.base import Histories, InteractionLog
from models.neighbours import SessionKNNBase
from models.sknn import SKNN, VSKNN
from models.stan import STAN, VSTAN

N_ITEMS = 40
"""Catalogue size; items 30..39 never occur in training."""


def make_log(seed: int = 11, n_sessions: int = 300, n_train_items: int = 30) -> InteractionLog:
    """Short sessions over few items (many exact similarity ties), repeated items, shared end times."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, 9, size=n_sessions)
    items = rng.integers(0, n_train_items, size=int(lens.sum())).astype(np.int32)
    t_end = 1e9 + 3_600.0 * rng.integers(0, 24 * 20, size=n_sessions)  # whole hours over 20 days: ties
    sess = np.repeat(np.arange(n_sessions), lens).astype(np.int32)
    ts = np.concatenate([t_end[i] - 30.0 * np.arange(n)[::-1] for i, n in enumerate(lens)])
    return InteractionLog(session_idx=sess, item_idx=items, ts=ts, n_items=N_ITEMS)


def make_histories(seed: int = 5, n: int = 60, timed: bool = False) -> Histories:
    """Random prefixes plus the edge cases: empty, one repeated item, unseen items, long."""
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(0, 30, size=int(rng.integers(1, 8))).tolist() for _ in range(n)]
    seqs += [[], [4, 4, 4], [35], [35, 36], [7, 35, 7], [], rng.integers(0, 30, size=25).tolist(), [1, 2, 1, 2, 1]]
    if not timed:
        return Histories.from_lists(seqs)
    now = 1e9 + 86_400.0 * rng.uniform(-3, 25, size=len(seqs))  # some before, some after the end of train
    return Histories.from_lists(seqs, [[t - 60.0 * (len(s) - 1 - j) for j in range(len(s))] for t, s in zip(now, seqs)])


CASES: list[tuple[type[SessionKNNBase], dict[str, object]]] = [
    (SKNN, {"k": 15, "sample_size": 40}),
    (SKNN, {"k": 500, "sample_size": 0, "similarity": "jaccard"}),
    (SKNN, {"k": 7, "sample_size": 25, "similarity": "binary", "sampling": "random", "random_state": 3}),
    (SKNN, {"k": 1, "sample_size": 1}),
    (VSKNN, {"k": 20, "sample_size": 60, "weighting": "quadratic", "weighting_score": "div", "idf_weighting": 5.0}),
    (VSKNN, {"k": 10, "sample_size": 0, "weighting": "linear", "weighting_score": "linear", "similarity": "cosine"}),
    (VSKNN, {"k": 12, "sample_size": 30, "weighting": "log", "weighting_score": "quadratic", "idf_weighting": 1.0,
             "weighting_time": True, "sampling": "random", "remind": False}),
    (VSKNN, {"k": 50, "sample_size": 100, "weighting": "same", "weighting_score": "log", "weighting_time": True,
             "similarity": "cosine"}),
    (STAN, {"k": 15, "sample_size": 40}),
    (STAN, {"k": 30, "sample_size": 0, "lambda_spw": 0.5, "lambda_snh": 20.0, "lambda_inh": 1.02}),
    (STAN, {"k": 8, "sample_size": 30, "sampling": "random", "lambda_snh": None, "remind": False}),
    (STAN, {"k": 20, "sample_size": 50, "lambda_spw": None, "lambda_inh": None}),
    (VSTAN, {"k": 15, "sample_size": 40}),
    (VSTAN, {"k": 100, "sample_size": 0, "lambda_ipw": 2.0, "lambda_idf": 10.0, "lambda_snh": 80.0}),
    (VSTAN, {"k": 10, "sample_size": 25, "sampling": "random", "lambda_ipw": None, "lambda_idf": None,
             "lambda_inh": None, "lambda_snh": None}),
    (VSTAN, {"k": 5, "sample_size": 12, "lambda_spw": 4.0, "lambda_inh": 8.0, "remind": False}),
]


def assert_same_lists(model: SessionKNNBase, hist: Histories, n: int, exclude_seen: bool = False) -> None:
    """Kernel and reference lists agree.

    SKNN / V-SKNN: identical ids and bit-identical scores (both sum each item's neighbour weights
    in session order). STAN / V-STAN: identical scores rank by rank, and identical ids except
    inside a run of equal scores, which holds the same items (at the cut: items of the
    reference's run). The reference sums their per-entry weights in the order of scipy's COO ->
    CSR sort (``std::sort``, not stable), so two items whose scores are equal in exact arithmetic
    can differ there by one ulp and come in either order; the kernel sums in session order and
    keeps such ties by the lower index, the documented rule.
    """
    got = model.recommend(hist, n, exclude_seen=exclude_seen)
    want = model._recommend_reference(hist, n, exclude_seen=exclude_seen)
    assert got[0].dtype == np.int32 and got[1].dtype == np.float32 and got[0].shape == (hist.n_queries, n)
    if not isinstance(model, STAN):  # SKNN, V-SKNN
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        return
    np.testing.assert_array_equal(got[1], want[1])
    longer = model._recommend_reference(hist, n + 60, exclude_seen=exclude_seen)
    for r in np.flatnonzero(np.any(got[0] != want[0], axis=1)):
        for v in np.unique(got[1][r][got[0][r] != want[0][r]]):
            mine = set(got[0][r][got[1][r] == v].tolist())
            theirs = set(longer[0][r][longer[1][r] == v].tolist())
            assert mine <= theirs, (r, v, mine, theirs)
            assert len(mine) == len(theirs) or got[1][r][-1] == v, (r, v, mine, theirs)


@pytest.mark.parametrize(("cls", "params"), CASES, ids=[f"{c.__name__}-{i}" for i, (c, _) in enumerate(CASES)])
@pytest.mark.parametrize("timed", [False, True])
def test_kernel_equals_the_reference(cls: type[SessionKNNBase], params: dict[str, object], timed: bool) -> None:
    model = cls(**params).fit(make_log())
    hist = make_histories(timed=timed)
    for n in (1, 10, 45):
        for exclude_seen in (False, True):
            assert_same_lists(model, hist, n, exclude_seen)
    ids, _ = model.recommend(hist, 10)
    assert (ids[-3] == -1).all() and (ids[60] == -1).all()  # empty prefixes get nothing
    assert (ids[62] == -1).all()  # a prefix of items never seen in training gets nothing


def test_ties_are_broken_as_the_reference_does() -> None:
    """Identical sessions tie on similarity (the newer wins at the k cut) and on item scores
    (the lower index wins); the kernel keeps both orders."""
    seqs = [[0, 1, 2], [0, 2, 1], [2, 1, 0], [0, 3], [0, 4], [0, 5], [5, 0]]
    sess = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs]).astype(np.int32)
    ts = np.repeat(1e9 + np.arange(len(seqs)) * 0.0, [len(s) for s in seqs])  # one end time: log order
    log = InteractionLog(session_idx=sess, item_idx=np.array([i for s in seqs for i in s], dtype=np.int32),
                         ts=ts, n_items=8)
    hist = Histories.from_lists([[0], [0, 1], [5]])
    for model in (SKNN(k=2, sample_size=0), SKNN(k=3, sample_size=4), VSKNN(k=2, sample_size=0),
                  STAN(k=2, sample_size=0), VSTAN(k=3, sample_size=5)):
        model.fit(log)
        assert_same_lists(model, hist, 6)
        ids, scores = model.recommend(hist, 6)
        for r in range(len(ids)):
            listed = ids[r] >= 0
            order = np.lexsort((ids[r][listed], -scores[r][listed]))
            np.testing.assert_array_equal(order, np.arange(listed.sum()))  # equal scores: lower index first


def test_a_bigger_random_catalogue_matches_too() -> None:
    """Longer sessions and more items than the cases above (wider bit maps, longer candidate lists)."""
    rng = np.random.default_rng(2)
    n_sessions, n_items = 3000, 400
    lens = rng.integers(1, 30, size=n_sessions)
    items = (rng.zipf(1.3, size=int(lens.sum())) % n_items).astype(np.int32)
    ts = np.repeat(1e9 + rng.uniform(0, 3e6, size=n_sessions), lens)
    log = InteractionLog(session_idx=np.repeat(np.arange(n_sessions), lens).astype(np.int32), item_idx=items,
                         ts=ts, n_items=n_items)
    seqs = [(rng.zipf(1.3, size=int(rng.integers(1, 15))) % n_items).tolist() for _ in range(300)]
    hist = Histories.from_lists(seqs)
    for model in (SKNN(k=100, sample_size=500), VSKNN(k=200, sample_size=1000, weighting="quadratic",
                                                     idf_weighting=5.0),
                  STAN(k=300, sample_size=800, lambda_snh=10.0), VSTAN(k=150, sample_size=2000)):
        model.fit(log)
        assert_same_lists(model, hist, 20)


@pytest.mark.parametrize(("cls", "params"), [c for c in CASES if c[1]["sample_size"] and c[1].get("sampling") != "random"],
                         ids=lambda c: getattr(c, "__name__", ""))
def test_the_blockwise_candidate_walk_keeps_the_lists(cls: type[SessionKNNBase], params: dict[str, object]) -> None:
    """Recency sampling walks the sessions in blocks and stops once the sample is found: with blocks
    of 5 sessions (60 blocks over 300) the lists equal the one-block walk's, bit for bit."""
    model = cls(**params).fit(make_log())
    hist = make_histories(timed=True)
    model._min_session_block = 10**9  # one block: the whole index
    whole = model.recommend(hist, 45)
    model._min_session_block = 1  # ceil(300 / 64) = 5 sessions per block
    assert model._session_block(model.index_.n_sessions) == 5
    blocks = model.recommend(hist, 45)
    np.testing.assert_array_equal(blocks[0], whole[0])
    np.testing.assert_array_equal(blocks[1], whole[1])
    assert_same_lists(model, hist, 45)


@pytest.mark.parametrize(("cls", "params"), [CASES[4], CASES[9], CASES[13]], ids=["VSKNN", "STAN", "VSTAN"])
def test_narrow_and_wide_entry_arrays_give_the_same_lists(cls: type[SessionKNNBase], params: dict[str, object]) -> None:
    """The kernel reads the index entries as uint16 when they fit (here) and as int32 otherwise
    (big catalogues): the same lists bit for bit either way."""
    model = cls(**params).fit(make_log())
    hist = make_histories(timed=True)
    arrays = model._kernel_arrays()
    assert arrays["x_ent"].dtype == np.uint16 and arrays["xt_ent"].dtype == np.uint16
    narrow = model.recommend(hist, 30)
    model._kernel_arrays_ = (model.index_, {**arrays, "x_ent": arrays["x_ent"].astype(np.int32),
                                            "xt_ent": arrays["xt_ent"].astype(np.int32)})
    wide = model.recommend(hist, 30)
    np.testing.assert_array_equal(narrow[0], wide[0])
    np.testing.assert_array_equal(narrow[1], wide[1])
