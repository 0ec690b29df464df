"""``operators.score._histories``: users' histories as item_idx in one batch look-up, as the per-id dict walk gave."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.base import Histories
from operators.id_index import IdIndex
from operators.score import _histories
from state.users import UserState


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from([f"i{k}" for k in range(12)] + ["new1", "new2"]), max_size=70), max_size=8))
def test_batch_lookup_equals_the_per_id_walk(histories):
    ids = [f"i{k}" for k in (3, 0, 7, 11, 5, 1, 9)]
    states = [UserState(items=h, ts=[0.0] * len(h), types=["view"] * len(h)) for h in histories]
    as_dict = {s: i for i, s in enumerate(ids)}
    want = Histories.from_lists([[as_dict[i] for i in st.items if i in as_dict] for st in states])
    for index in (as_dict, IdIndex(list(ids))):
        got = _histories(states, index)
        assert np.array_equal(got.indptr, want.indptr) and np.array_equal(got.items, want.items)
        assert got.items.dtype == want.items.dtype and got.indptr.dtype == want.indptr.dtype
