"""IdBridge: model / vector positions -> catalog item_idx equals a lookup of the ids' strings, as both sides grow."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from api.id_bridge import IdBridge
from api.iql import CatalogIndex


def _index(ids: list[str]) -> CatalogIndex:
    index = CatalogIndex()
    for i in ids:
        index.upsert({"item_id": i, "price": 1.0})
    return index


def _check(bridge: IdBridge, index: CatalogIndex, names: list[str], positions: np.ndarray) -> None:
    want = index.lookup([names[p] for p in positions.tolist()])
    got = bridge.item_idx(index, names, positions)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("background_fill", [False, True])
def test_equals_lookup_as_the_catalog_and_the_list_grow(background_fill):
    rng = np.random.default_rng(0)
    names = [f"m{i}" for i in range(200)]  # the model's items; the catalog holds every other one at first
    index = _index([f"m{i}" for i in range(0, 200, 2)] + ["c-only"])
    bridge = IdBridge(background_fill=background_fill)
    for _ in range(5):
        _check(bridge, index, names, rng.integers(0, len(names), 50))
    for i in range(1, 200, 2):  # the rest arrive: what was unknown must be found now
        index.upsert({"item_id": f"m{i}", "price": 2.0})
        if i % 37 == 1:
            _check(bridge, index, names, rng.integers(0, len(names), 50))
    _check(bridge, index, names, np.arange(len(names)))
    assert (bridge.item_idx(index, names, np.arange(len(names))) >= 0).all()
    names += [f"m{i}" for i in range(200, 260)]  # an append-only list (the vector index's rows) grows
    index.upsert({"item_id": "m250", "price": 3.0})
    _check(bridge, index, names, np.arange(len(names)))


def test_deleted_items_keep_their_item_idx():
    names = ["a", "b", "c"]
    index = _index(names)
    bridge = IdBridge()
    _check(bridge, index, names, np.arange(3))
    index.delete("b")  # liveness is the filter's business: the id keeps its item_idx
    _check(bridge, index, names, np.arange(3))


def test_a_new_index_or_list_is_not_answered_from_the_old_one():
    names = ["a", "b", "c"]
    bridge = IdBridge(max_lists=1)
    old = _index(["a", "b", "c"])
    _check(bridge, old, names, np.arange(3))
    new = _index(["c", "b", "a"])  # a rebuilt catalog numbers its items anew
    _check(bridge, new, names, np.arange(3))
    other = ["c", "x"]
    _check(bridge, new, other, np.arange(2))
    _check(bridge, new, names, np.array([2, 0, 1]))


def test_an_empty_catalog_knows_nothing():
    bridge = IdBridge()
    got = bridge.item_idx(CatalogIndex(), ["a", "b"], np.array([1, 0, 1]))
    np.testing.assert_array_equal(got, [-1, -1, -1])


def _wait_fills() -> None:
    deadline = time.monotonic() + 10
    while any(t.name == "id-bridge-fill" for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_the_background_fill_ends_per_request_lookups(monkeypatch):
    names = [f"m{i}" for i in range(5000)]
    index = _index(names[::2])
    bridge = IdBridge()
    _check(bridge, index, names, np.arange(3))  # starts the fill
    _wait_fills()
    asked: list[int] = []
    real = index.lookup
    monkeypatch.setattr(index, "lookup", lambda ids: asked.append(len(ids)) or real(ids))
    got = bridge.item_idx(index, names, np.arange(len(names)))
    assert asked == []  # every position came from the fill
    monkeypatch.undo()
    np.testing.assert_array_equal(got, index.lookup(names))


def test_a_fill_that_finishes_after_the_catalog_grew_asks_its_unknown_positions_again():
    names = [f"m{i}" for i in range(3000)]
    index = _index(names[:1000])
    bridge = IdBridge(background_fill=False)
    _check(bridge, index, names, np.arange(5))
    table = bridge._tables[id(names)]
    at = index.capacity
    table.fill(len(names), at)  # the thread's lookups, at the old capacity: positions 1000.. unknown
    pending, table.filled = table.filled, None
    for i in range(1000, 3000, 3):
        index.upsert({"item_id": names[i], "price": 1.0})
    _check(bridge, index, names, np.arange(5))  # the loop has seen the new capacity before the fill lands
    table.filled = pending
    _check(bridge, index, names, np.arange(len(names)))  # installed now: the new ids are found


def test_extensions_of_one_root_share_its_table():
    """The catalog overlay makes a new, longer list for every extension of a model version (up to once a second):
    they all read the root's table, and the positions past the root are looked up per call."""
    root = [f"m{i}" for i in range(300)]
    index = _index(root[::3] + [f"new{j}" for j in range(10)])
    bridge = IdBridge(max_lists=2, background_fill=False)
    for round_ in range(6):  # more extensions than the bridge keeps lists
        ext = list(root) + [f"new{j}" for j in range(round_ + 1)] + ["not-in-catalog"]
        positions = np.arange(len(ext))
        want = index.lookup(ext)
        np.testing.assert_array_equal(bridge.item_idx(index, ext, positions, root=root), want)
        np.testing.assert_array_equal(bridge.item_idx(index, ext, positions[::-1], root=root), want[::-1])
        np.testing.assert_array_equal(bridge.item_idx(index, ext, np.arange(10), root=root), want[:10])
    assert list(bridge._tables) == [id(root)]  # one table, the root's: no rebuild per extension
