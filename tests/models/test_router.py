"""The user-future validation cut and the router that serves whichever candidate wins it."""

from __future__ import annotations

import numpy as np
import pytest

from models.base import InteractionLog
from models.data.validation import holdout_user_futures
from models.router import ValidationRouter
from tests.models.test_contract import TASTE_A, TASTE_B, planted_log, queries


def _log(rows: list[list[int]], n_items: int) -> InteractionLog:
    sess = np.repeat(np.arange(len(rows)), [len(r) for r in rows]).astype(np.int32)
    items = np.array([i for r in rows for i in r], dtype=np.int32)
    return InteractionLog(session_idx=sess, item_idx=items, ts=np.arange(len(items), dtype=np.float64),
                          n_items=n_items)


def test_holdout_keeps_each_users_oldest_events_and_predicts_the_newest() -> None:
    # lengths 1, 2, 5 and 10 at frac 0.2: futures of 0, 1, 1 and 2 events
    log = _log([[0], [1, 2], [3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]], n_items=11)
    train, task = holdout_user_futures(log, frac=0.2)
    assert train.session_idx.tolist() == [0, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3]
    assert train.item_idx.tolist() == [0, 1, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 7]
    # item 2 of user 1 is known (user 3 trains on it); 8 and 9 are not, so user 3's future is empty
    assert task.query_session.tolist() == [1, 2]
    assert task.query_len.tolist() == [1, 4]
    assert task.next_items().tolist() == [2, 7]
    indptr, rest = task.rest()
    assert [rest[indptr[q]:indptr[q + 1]].tolist() for q in range(task.n_queries)] == [[2], [7]]
    with pytest.raises(ValueError, match="frac"):
        holdout_user_futures(log, frac=1.0)
    with pytest.raises(ValueError, match="no history"):
        holdout_user_futures(_log([[0], [1]], n_items=2))


def _tastes_log(n_tastes: int = 10, n_users: int = 300, seed: int = 0) -> InteractionLog:
    """Each user takes 3..6 distinct items of one taste (6 items each; taste 0 the most common)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_users):
        taste = min(int(rng.geometric(0.3)) - 1, n_tastes - 1)
        rows.append((6 * taste + rng.permutation(6)[: int(rng.integers(3, 7))]).tolist())
    return _log(rows, n_items=6 * n_tastes)


def test_router_serves_the_candidate_that_wins_validation(tmp_path) -> None:
    log = _tastes_log()
    router = ValidationRouter({"pop": {}, "ease": {}}, task="user").fit(log)
    assert router.chosen_ == "ease"  # popularity cannot tell the tastes apart
    v = router.validation_
    assert set(v) == {"pop", "ease"} and v["ease"]["P@20"] > v["pop"]["P@20"]
    ids, _ = router.recommend(queries(), 3, exclude_seen=True)
    assert set(ids[1][ids[1] >= 0].tolist()) <= TASTE_B and set(ids[0][ids[0] >= 0].tolist()) <= TASTE_A
    same, _ = router.model_.recommend(queries(), 3, exclude_seen=True)
    assert np.array_equal(ids, same)
    router.save(tmp_path / "r")
    back = ValidationRouter.load(tmp_path / "r")
    assert (back.chosen_, back.metric_, back.validation_) == ("ease", "P@20", v)
    assert np.array_equal(back.recommend(queries(), 3, exclude_seen=True)[0], ids)
    nxt = ValidationRouter({"pop": {}, "sknn": {}}, task="next").fit(_tastes_log(n_users=600, seed=1))
    assert nxt.chosen_ == "sknn" and nxt.metric_ == "HR@20"


def test_a_candidate_that_cannot_fit_is_excluded_and_all_failing_is_an_error() -> None:
    log = planted_log()
    router = ValidationRouter({"ease": {"max_items": 5}, "itemknn": {}}).fit(log)
    assert router.chosen_ == "itemknn" and "max_items" in router.validation_["ease"]["error"]
    with pytest.raises(ValueError, match="every candidate failed"):
        ValidationRouter({"ease": {"max_items": 5}}).fit(log)
    with pytest.raises(ValueError, match="unknown model"):
        ValidationRouter({"nope": {}}).fit(log)
    with pytest.raises(ValueError, match="task"):
        ValidationRouter(task="items").fit(log)


@pytest.mark.parametrize(("params", "match"), [
    ({"candidates": {"ease": {"l2_reg": 100}}}, "bad hyper-parameter"),  # a typo is an error, not an exclusion
    ({"candidates": {"ease": None}}, "must map"),
    ({"candidates": ["ease"]}, "must map"),
    ({"candidates": {"router": {}}}, "unknown model"),
    ({"holdout_frac": "x"}, "holdout_frac"),
    ({"holdout_frac": 1.5}, "holdout_frac"),
    ({"max_queries": 0}, "max_queries"),
    ({"max_queries": 2.5}, "max_queries"),
])
def test_bad_parameters_are_clear_errors_before_anything_is_fitted(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ValidationRouter(**{"candidates": {"pop": {}}, **params}).fit(planted_log())
