"""Every registered recommender through one set of checks (implicit's mixin, sklearn's common tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.base import Histories, InteractionLog, Recommender
from models.errors import NotFittedError
from models.registry import REGISTRY, create_model

N_ITEMS = 12
TASTE_A = set(range(0, 6))      # sessions walk 0 -> 1 -> ... -> 5
TASTE_B = set(range(6, 12))     # sessions walk 6 -> 7 -> ... -> 11
NAMES = sorted(REGISTRY)
FAST_PARAMS: dict[str, dict[str, object]] = {"fusion": {"holdout_frac": 0.3, "min_data_in_leaf": 5, "n_trees": 50},
                                              "emde_user": {"epochs": 3},
                                              "gru4rec": {"d": 16, "epochs": 10, "batch_size": 64, "lr": 1e-2,
                                                          "n_sample": 16, "n_threads": 1, "progress": False},
                                              "sasrec": {"d": 16, "epochs": 10, "batch_size": 64, "lr": 1e-2,
                                                         "n_sample": 16, "n_threads": 1, "progress": False},
                                              "seq_ensemble": {"d": 16, "epochs": 10, "batch_size": 64, "lr": 1e-2,
                                                               "n_sample": 16, "n_threads": 1, "progress": False},
                                              "router": {"candidates": {"ease": {}, "itemknn": {}}}}
"""Per-model overrides that keep this file fast (e.g. fewer epochs); defaults otherwise."""
NO_TASTE = {"pop"}
"""Models that ignore the history by design (checked against popularity instead)."""
NEXT_ONLY = {"gru4rec", "sasrec", "seq_ensemble"}
"""Models trained on (prefix -> next item) pairs alone: on the planted walks the next item is certain,
so the data says nothing about the order below it; they must rank the planted next item first instead."""


def planted_log(seed: int = 0, n_sessions: int = 240) -> InteractionLog:
    """Sessions that walk one taste's items in order (random start and length 3..6)."""
    rng = np.random.default_rng(seed)
    sess, items, ts = [], [], []
    for s in range(n_sessions):
        base = 0 if s % 3 else 6                      # taste A twice as frequent as taste B
        start, length = int(rng.integers(0, 3)), int(rng.integers(3, 7))
        for j in range(length):
            sess.append(s)
            items.append(base + (start + j) % 6)
            ts.append(1_400_000_000.0 + 600.0 * s + 10.0 * j)
    return InteractionLog(session_idx=np.array(sess, dtype=np.int32), item_idx=np.array(items, dtype=np.int32),
                          ts=np.array(ts), n_items=N_ITEMS, item_ids=tuple(str(i) for i in range(N_ITEMS)))


def queries() -> Histories:
    return Histories.from_lists([[0, 1, 2], [6, 7], [3], [8, 9, 10, 11], [1, 1, 2], []],
                                [[1.5e9, 1.5e9 + 1, 1.5e9 + 2], [1.5e9, 1.5e9 + 1], [1.5e9],
                                 [1.5e9 + i for i in range(4)], [1.5e9 + i for i in range(3)], []])


def make(name: str) -> Recommender:
    return create_model(name, **FAST_PARAMS.get(name, {}))


class _FitOnce(dict):
    """Models fitted on the planted log on first use, so one broken model fails only its own tests."""

    def __missing__(self, name: str) -> Recommender:
        self[name] = make(name).fit(planted_log())
        return self[name]


@pytest.fixture(scope="module")
def fitted() -> dict[str, Recommender]:
    return _FitOnce()


@pytest.mark.parametrize("name", NAMES)
def test_is_a_recommender(name: str) -> None:
    assert isinstance(make(name), Recommender)


@pytest.mark.parametrize("name", NAMES)
def test_planted_taste_is_recovered(name: str, fitted: dict[str, Recommender]) -> None:
    ids, scores = fitted[name].recommend(queries(), 4)
    assert ids.shape == scores.shape == (6, 4)
    assert ids.dtype == np.int32 and scores.dtype == np.float32
    if name in NO_TASTE:
        assert set(ids[0].tolist()) <= TASTE_A                 # the popular taste
        return
    if name in NEXT_ONLY:                                      # 0,1,2 -> 3; 6,7 -> 8; 8,9,10,11 -> 6
        assert ids[[0, 1, 3], 0].tolist() == [3, 8, 6]
        return
    assert set(ids[0][ids[0] >= 0].tolist()) <= TASTE_A and ids[0][0] >= 0
    assert set(ids[1][ids[1] >= 0].tolist()) <= TASTE_B and ids[1][0] >= 0
    assert set(ids[3][ids[3] >= 0].tolist()) <= TASTE_B and ids[3][0] >= 0


@pytest.mark.parametrize("name", NAMES)
def test_rows_are_sorted_and_padding_is_marked(name: str, fitted: dict[str, Recommender]) -> None:
    ids, scores = fitted[name].recommend(queries(), 50)        # n larger than the catalogue
    assert ids.shape == (6, 50)
    for row_ids, row_scores in zip(ids, scores, strict=True):
        valid = row_ids >= 0
        assert np.all(valid[:valid.sum()])                      # valid entries first, then padding
        assert len(set(row_ids[valid].tolist())) == valid.sum()
        assert np.all(np.isneginf(row_scores[~valid]))
        assert np.all(np.diff(row_scores[valid]) <= 0)
        assert valid.sum() <= N_ITEMS


@pytest.mark.parametrize("name", NAMES)
def test_exclude_seen(name: str, fitted: dict[str, Recommender]) -> None:
    q = queries()
    ids, _ = fitted[name].recommend(q, 8, exclude_seen=True)
    for i in range(q.n_queries):
        assert not set(ids[i].tolist()) & set(q.query(i).tolist())


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_loop_of_singles(name: str, fitted: dict[str, Recommender]) -> None:
    q = queries()
    ids, scores = fitted[name].recommend(q, 5)
    for i in range(q.n_queries):
        a, b = q.indptr[i], q.indptr[i + 1]
        one = Histories(indptr=np.array([0, b - a], dtype=np.int64), items=q.items[a:b], ts=q.ts[a:b])
        ids1, scores1 = fitted[name].recommend(one, 5)
        np.testing.assert_array_equal(ids1[0], ids[i])
        np.testing.assert_allclose(scores1[0], scores[i], rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name: str, fitted: dict[str, Recommender]) -> None:
    again = make(name).fit(planted_log())
    a_ids, a_scores = fitted[name].recommend(queries(), 6)
    b_ids, b_scores = again.recommend(queries(), 6)
    np.testing.assert_array_equal(a_ids, b_ids)
    np.testing.assert_allclose(a_scores, b_scores, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name: str, fitted: dict[str, Recommender], tmp_path: Path) -> None:
    model = fitted[name]
    model.save(tmp_path / name)
    loaded = type(model).load(tmp_path / name)
    a_ids, a_scores = model.recommend(queries(), 6)
    b_ids, b_scores = loaded.recommend(queries(), 6)
    np.testing.assert_array_equal(a_ids, b_ids)
    np.testing.assert_allclose(a_scores, b_scores, rtol=1e-6)
    s_ids, _ = loaded.similar_items(np.array([0, 7], dtype=np.int32), 3)
    assert s_ids.shape == (2, 3) and 0 not in s_ids[0].tolist() and 7 not in s_ids[1].tolist()


@pytest.mark.parametrize("name", NAMES)
def test_not_fitted_raises(name: str) -> None:
    with pytest.raises(NotFittedError, match="is not fitted; call fit"):
        make(name).recommend(queries(), 3)


@pytest.mark.parametrize("name", NAMES)
def test_out_of_catalogue_index_raises(name: str, fitted: dict[str, Recommender]) -> None:
    with pytest.raises(ValueError, match="12"):                # names the index or the catalogue size
        fitted[name].recommend(Histories.from_lists([[0, N_ITEMS]]), 3)
