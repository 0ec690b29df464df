"""operators/user_update.py with an EMDE version: the stored user state does not depend on batching.

A ``kill -9`` restart re-reads the uncommitted tail in batches of another size, so every stored
field (sketch, M′·Q embedding, history, counts, dedupe ids) must come out bit for bit the same
however a user's events were split, also when one batch holds more events than the kept
history (``history_len``) and when a new model version rebuilds a user lazily.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.emde import EMDE
from operators.model_version import ModelVersion
from operators.schema import Event
from operators.settings import DEFAULT_EVENT_TYPES
from operators.sketch_state import SketchUpdater
from operators.training import cleora_item_vectors, events_to_log
from operators.user_embedding import EmbeddingUpdater
from operators.user_update import PartitionApplier
from simulators.shop import SyntheticShop
from state.partition import PartitionDB
from state.users import UserState, UserStore

WEIGHTS = {t.name: t.weight for t in DEFAULT_EVENT_TYPES}
HISTORY_LEN = 50


def _version(name: str, seed: int) -> ModelVersion:
    shop = SyntheticShop(n_items=120, n_users=40, seed=2)
    log = events_to_log(shop.history(3000), ["view", "add_to_cart", "purchase", "pos_purchase"])
    model = EMDE("graph=sessions:8x16:2", views=("session", "last", "knn:last"), hidden=32, epochs=1,
                 random_state=seed, knn_k=5).fit(log)
    return ModelVersion(version=name, model=model, item_ids=list(log.item_ids), manifest={},
                        item_vectors=cleora_item_vectors(log, dim=16, seed=seed))


@pytest.fixture(scope="module")
def versions() -> tuple[ModelVersion, ModelVersion]:
    return _version("v1", 0), _version("v2", 1)


def _events(n: int, seed: int, item_ids: list[str], user: str = "u1", t0: float = 1.7e9) -> list[Event]:
    rng = np.random.default_rng(seed)
    out = []
    for j in range(n):
        kind = ["view", "view", "add_to_cart", "search"][int(rng.integers(4))]  # search: weight 0, no item
        item = item_ids[int(rng.integers(len(item_ids)))] if j % 17 else "unknown-item"
        out.append(Event(event_id=f"{user}-{seed}-{j}", ts=t0 + j, type=kind, user_id=user,
                         item_id=None if kind == "search" else item, query="q" if kind == "search" else None))
    return out


def _run(tmp_path, name: str, chunks: list[list[Event]], version_of_chunk: list[ModelVersion]) -> UserState:
    db = PartitionDB(tmp_path / name)
    try:
        ap = PartitionApplier(db, WEIGHTS, history_len=HISTORY_LEN, half_life_s=3600.0)
        offset = 0
        for chunk, version in zip(chunks, version_of_chunk):
            msgs = [(offset + i, e) for i, e in enumerate(chunk)]
            offset += len(chunk)
            applied = ap.apply(msgs, SketchUpdater(version), EmbeddingUpdater(version))
            ap.commit(applied)
        st = UserStore(db).get("u1")
        assert st is not None
        return st
    finally:
        db.close()


def _split(events: list[Event], sizes: list[int]) -> list[list[Event]]:
    out, start = [], 0
    for size in sizes:
        out.append(events[start:start + size])
        start += size
    assert start == len(events)
    return out


@pytest.mark.parametrize("sizes", [[40, 40], [1] * 80, [7, 73], [79, 1]])
def test_a_new_user_folded_in_any_batching_equals_one_batch(tmp_path, versions, sizes):
    """80 events of a new user (more items than the 50 kept): one batch or many give the same bytes."""
    v1, _ = versions
    events = _events(80, 0, v1.item_ids)
    whole = _run(tmp_path, "whole", [events], [v1])
    split = _run(tmp_path, "split", _split(events, sizes), [v1] * len(sizes))
    assert split == whole  # every field, sketch and M′·Q embedding bytes included
    assert whole.embedding and whole.sketch_cols and len(whole.items) == HISTORY_LEN
    assert sum(whole.counts.values()) == 80


def test_the_embedding_is_the_decayed_sum_over_every_event_not_only_the_kept_ones(tmp_path, versions):
    """M′·Q after 80 events in one batch: each known item added once, in order (not the cut history twice)."""
    v1, _ = versions
    events = _events(80, 0, v1.item_ids)
    st = _run(tmp_path, "one", [events], [v1])
    e = np.zeros(16, np.float32)
    alpha = np.float32(0.9)
    for ev in events:
        if ev.item_id is not None and ev.item_id in v1.item_index:
            e *= alpha
            e += v1.item_vectors[v1.item_index[ev.item_id]]
    assert np.frombuffer(st.embedding, np.float32).tobytes() == e.tobytes()


@pytest.mark.parametrize("sizes", [[40, 40], [1] * 80, [79, 1]])
def test_a_new_version_rebuilds_from_the_history_before_the_batch_however_batched(tmp_path, versions, sizes):
    """A user known to v1 is rebuilt lazily by v2 from the kept history before v2's first batch."""
    v1, v2 = versions
    old = _events(55, 1, v1.item_ids)
    new = _events(80, 2, v1.item_ids, t0=1.8e9)
    whole = _run(tmp_path, "whole", [old, new], [v1, v2])
    split = _run(tmp_path, "split", [old, *_split(new, sizes)], [v1] + [v2] * len(sizes))
    assert split == whole
    assert whole.sketch_version == "v2" and whole.embedding_version == "v2"
