"""New items' co-occurrence rows (``l:``): counted per event, exactly once, whatever the batching."""

from __future__ import annotations

import random

import pytest

from operators.item_links import new_item_links
from operators.schema import Event
from operators.settings import DEFAULT_EVENT_TYPES
from operators.user_update import PartitionApplier
from state.item_links import ItemLinkStore
from state.partition import PartitionDB

WEIGHTS = {t.name: t.weight for t in DEFAULT_EVENT_TYPES}
KNOWN = {f"k{i}" for i in range(30)}


def _events(n: int, seed: int = 0) -> list[Event]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        item = f"n{rng.randrange(4)}" if rng.random() < 0.2 else f"k{rng.randrange(30)}"
        typ = rng.choice(["view", "view", "add_to_cart", "rec_impression"])
        out.append(Event(event_id=f"e{i}", ts=1.7e9 + 30 * i, type=typ, user_id=f"u{rng.randrange(8)}", item_id=item))
    return out + out[-12:-2]  # redelivered events: duplicates


def _run(path, events: list[Event], batch_sizes: list[int]) -> dict[str, dict[str, int]]:
    """Apply ``events`` in batches; a batch size of 0 means: crash here (drop the staged
    batch, reopen the database) and replay from the stored offset."""
    db = PartitionDB(path)
    ap = PartitionApplier(db, WEIGHTS, history_len=10, half_life_s=3600.0, links_max_gap_s=600.0)
    msgs = list(enumerate(events))
    sizes = iter(batch_sizes)
    while ap.next_offset < len(msgs):
        size = next(sizes, 50)
        if size == 0:  # kill -9 after staging: nothing of the batch reaches the database
            ap.apply(msgs[ap.next_offset:ap.next_offset + 37], known_items=KNOWN)
            db.close()
            db = PartitionDB(path)
            ap = PartitionApplier(db, WEIGHTS, history_len=10, half_life_s=3600.0, links_max_gap_s=600.0)
            continue
        start = max(0, ap.next_offset - 3)  # the source may redeliver a few (skipped by offset)
        ap.commit(ap.apply(msgs[start:ap.next_offset + size], known_items=KNOWN))
    rows = {i: ItemLinkStore(db).get(i) for i in sorted(ItemLinkStore(db)._rows)}
    db.close()
    return rows


def test_links_are_exactly_once_whatever_the_batches_and_crashes(tmp_path) -> None:
    events = _events(3000)
    ref = _run(tmp_path / "a", events, [3000])
    assert set(ref) == {"n0", "n1", "n2", "n3"} and all(ref.values())
    # recount by hand from the event log, one user history at a time
    hist: dict[str, list[str]] = {}
    seen: set[str] = set()
    want: dict[str, dict[str, int]] = {}
    for e in events:
        if e.event_id in seen:
            continue
        seen.add(e.event_id)
        if WEIGHTS[e.type] > 0:
            h = hist.setdefault(e.user_id, [])
            for new, known in new_item_links([i for i, _ in h], [e.item_id], KNOWN, before_ts=[t for _, t in h],
                                             ts=e.ts, max_gap_s=600.0):
                want.setdefault(new, {})[known] = want.get(new, {}).get(known, 0) + 1
            h.append((e.item_id, e.ts))
    assert ref == want
    no_gap = sum(len(new_item_links([i for i, _ in h[:k]], [h[k][0]], KNOWN)) for h in hist.values()
                 for k in range(len(h)))
    assert sum(sum(r.values()) for r in ref.values()) < no_gap  # the 600 s gap cut some context
    assert _run(tmp_path / "b", events, [7, 1, 0, 300, 0, 0, 13, 999]) == ref


def test_a_row_is_cut_to_its_strongest_links_at_twice_the_cap(tmp_path) -> None:
    with PartitionDB(tmp_path / "p") as db:
        store = ItemLinkStore(db, max_links=3)
        for j, n in enumerate([5, 1, 4, 1, 2]):
            for _ in range(n):
                store.add("new", f"k{j}")
        assert len(store.get("new")) == 5  # below twice the cap: kept
        store.add("new", "k9")  # the 6th link: cut to the 3 strongest
        assert store.get("new") == {"k0": 5, "k2": 4, "k4": 2}
        store.add("new", "k1")
        assert store.get("new") == {"k0": 5, "k2": 4, "k4": 2, "k1": 1}
    with pytest.raises(ValueError, match="max_links must be >= 1; got 0"):
        ItemLinkStore(PartitionDB(tmp_path / "q"), max_links=0)


def test_known_items_pairs() -> None:
    assert new_item_links(["k1", "k2"], ["k3"], KNOWN) == []
    assert new_item_links(["n1", "k1", "n1"], ["k2"], KNOWN) == [("n1", "k2")]  # repeats in the window count once
    assert new_item_links(["k1"], ["n1", "n2", "k2"], KNOWN) == [("n1", "k1"), ("n1", "k2"), ("n2", "k1"),
                                                                 ("n2", "k2")]
    assert new_item_links(["k1", "k2", "k3"], ["n1"], KNOWN, window=1) == [("n1", "k3")]


def test_rows_of_items_a_new_version_knows_are_deleted(tmp_path) -> None:
    db = PartitionDB(tmp_path / "p")
    ap = PartitionApplier(db, WEIGHTS, history_len=10, half_life_s=3600.0)
    msgs = list(enumerate(_events(400)))
    first = ap.apply(msgs[:200], known_items=KNOWN)
    ap.commit(first)
    assert set(first.links) == {"n0", "n1", "n2", "n3"} and all(first.links.values())
    newer = KNOWN | {"n0", "n1"}  # retrained: n0 and n1 are known now
    second = ap.apply(msgs[200:], known_items=newer)
    ap.commit(second)
    assert second.links["n0"] is None and second.links["n1"] is None  # tombstones to publish
    assert set(ItemLinkStore(db)._rows) == {"n2", "n3"}
    db.close()
