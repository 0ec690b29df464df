"""The stream serves the fusion model exactly as offline: ``score_users`` = ``recommend`` on the same history."""

from __future__ import annotations

import numpy as np

from models.base import Histories
from models.hybrid import SessionFusion
from operators.model_version import ModelVersion
from operators.score import score_users
from operators.training import events_to_log
from simulators.shop import SyntheticShop
from state.users import UserState


def test_stream_lists_equal_offline_recommend() -> None:
    shop = SyntheticShop(n_items=120, n_users=60, seed=3)
    events = list(shop.history(4000))
    log = events_to_log(events[:3000], ["view", "add_to_cart", "purchase", "pos_purchase"])
    model = SessionFusion(knn={"vstan": {"k": 50, "sample_size": 500}, "stan": {"k": 50, "sample_size": 500},
                               "gru4rec": {"d": 32, "epochs": 2, "n_sample": 64, "progress": False}},
                          emde={"epochs": 1, "progress": False, "hidden": 64}, n_trees=20,
                          min_data_in_leaf=20).fit(log)
    version = ModelVersion(version="v1", model=model, item_ids=list(log.item_ids), manifest={})
    users: dict[str, UserState] = {}
    for e in events[3000:]:
        st = users.setdefault(e.user_id, UserState())
        st.items.append(e.item_id)
        st.ts.append(e.ts)
        st.items, st.ts = st.items[-50:], st.ts[-50:]
    pop = (list(log.item_ids[:20]), np.arange(20, 0, -1, dtype=np.float32))
    lists = score_users(users, version, pop, 20, now_ts=0.0)
    seqs = [[version.item_index[i] for i in users[t.user_id].items if i in version.item_index] for t in lists]
    ids, scores = model.recommend(Histories.from_lists(seqs), 20)
    compared = 0
    for t, row, srow in zip(lists, ids, scores, strict=True):
        if t.source != "model":
            continue
        assert t.items == [version.item_ids[i] for i in row if i >= 0]
        np.testing.assert_allclose(t.scores, srow[row >= 0], rtol=1e-6)
        compared += 1
    assert compared >= 0.8 * len(lists) > 0
