"""``score_users`` chunks histories only for models that hold a dense (histories x items) score matrix."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.base import Histories
from models.covisit import CoVisitation
from operators import score
from operators.model_version import ModelVersion
from operators.score import score_users
from state.users import UserState


class _Counting(CoVisitation):
    """CoVisitation that records the number of histories of each ``recommend`` call."""

    calls: list[int]

    def recommend(self, histories: Histories, n: int = 20, *, exclude_seen: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(histories.n_queries)
        return super().recommend(histories, n, exclude_seen=exclude_seen)


class _Dense(_Counting):
    dense_scores = True


def _version(model: CoVisitation, n_items: int) -> tuple[ModelVersion, list[str]]:
    rng = np.random.default_rng(0)
    nnz = n_items * 5
    model.covisit_ = sp.csr_array((rng.random(nnz).astype(np.float32),
                                   (rng.integers(0, n_items, nnz), rng.integers(0, n_items, nnz))),
                                  shape=(n_items, n_items))
    model.popularity_ = rng.random(n_items).astype(np.float32)
    ids = [f"i{k}" for k in range(n_items)]
    model.calls = []
    return ModelVersion(version="v1", model=model, item_ids=ids, manifest={}), ids


def _users(ids: list[str], n_users: int) -> dict[str, UserState]:
    rng = np.random.default_rng(1)
    return {f"u{q}": UserState(items=[ids[j] for j in rng.integers(0, len(ids), 8)], ts=[1.0] * 8,
                               types=["view"] * 8, last_ts=1.0) for q in range(n_users)}


def test_sparse_model_scores_every_user_in_one_call(monkeypatch) -> None:
    monkeypatch.setattr(score, "_SCORE_CELLS", 1000)  # 1,000 cells / 500 items: chunks of 2 for a dense model
    sparse_version, ids = _version(_Counting(), 500)
    dense_version, _ = _version(_Dense(), 500)
    users = _users(ids, 9)
    sparse_lists = score_users(users, sparse_version, (ids[:5], np.ones(5, np.float32)), 10, 0.0)
    dense_lists = score_users(users, dense_version, (ids[:5], np.ones(5, np.float32)), 10, 0.0)
    assert sparse_version.model.calls == [9]
    assert dense_version.model.calls == [2, 2, 2, 2, 1]
    # the same lists either way
    assert [(t.user_id, t.items, t.scores) for t in sparse_lists] == [(t.user_id, t.items, t.scores) for t in dense_lists]
