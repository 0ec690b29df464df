"""CatalogOverlay: new catalog items extend an EMDE version for scoring, debounced."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from models.emde import EMDE
from models.emde.cold_start import inductive_codes
from models.popularity import Popularity
from operators.catalog_overlay import CatalogOverlay, encode_links, links_key
from operators.model_version import ModelVersion
from tests.models.emde.test_cold_start import _links, _titles
from tests.models.emde.test_emde import _MODS, _SMALL, _planted_log


class Catalog:
    """A catalog in memory with the TopicTable surface the overlay reads."""

    def __init__(self, items: dict[str, dict]) -> None:
        self.data = dict(items)
        self.n_messages = len(items)

    def put(self, item_id: str, item: dict) -> None:
        self.data[item_id] = item
        self.n_messages += 1

    def items(self) -> list[tuple[str, object]]:
        return list(self.data.items())


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def base() -> ModelVersion:
    log = _planted_log()
    return ModelVersion(version="v1", model=EMDE(_MODS, **_SMALL).fit(log), item_ids=list(log.item_ids), manifest={})


def _catalog() -> Catalog:
    return Catalog({f"i{k}": {"title": t} for k, t in enumerate(_titles())})


def test_new_items_join_the_version_for_scoring(base: ModelVersion) -> None:
    cat = _catalog()
    overlay = CatalogOverlay(cat, clock=Clock(), background=False)
    assert overlay.apply(base) is base  # nothing new
    cat.put("n-b", {"title": "Ember w85 classic"})
    cat.put("n-a", {"title": "cobalt w45 classic"})
    cat.put("n-c", {"title": "unheard of"})  # no shared word: left out
    cat.put("n-d", {"price": 3.0})  # no title: left out
    overlay.clock.t += 1.0  # type: ignore[attr-defined]
    ext = overlay.apply(base)
    assert ext is not None and ext is not base
    assert ext.version.startswith("v1+2.") and ext.manifest == {"base_version": "v1", "catalog_items": 2, "linked_items": 0}
    assert ext.item_ids[100:] == ["n-a", "n-b"] and ext.item_index["n-a"] == 100 and ext.item_index["i3"] == 3
    assert ext.model.n_items_ == 102 and base.model.n_items_ == 100 and len(base.item_ids) == 100
    np.testing.assert_array_equal(ext.model.item_out_cols_[[100, 101]], base.model.item_out_cols_[[45, 85]])
    sim, _ = ext.model.similar_items(np.array([ext.item_index["n-a"]], np.int32), 5)
    assert sim[0, 0] // 20 == 2 and 100 not in sim[0]  # the donor's taste


def test_items_the_catalog_rule_deletes_or_rejects_do_not_join(base: ModelVersion) -> None:
    """A record published to the topic as ``"deleted": true`` (or with a ``deleted`` that is not a bool) is no
    item for the API's index, so it gets no scoring codes either; ``"deleted": false`` is a live item."""
    cat = _catalog()
    overlay = CatalogOverlay(cat, clock=Clock(), background=False)
    cat.put("n-a", {"title": "cobalt w45 classic", "deleted": False})
    cat.put("n-b", {"title": "Ember w85 classic", "deleted": True})
    cat.put("n-c", {"title": "Ember w85 classic", "deleted": "true"})
    overlay.clock.t += 1.0  # type: ignore[attr-defined]
    ext = overlay.apply(base)
    assert ext is not None and ext.item_ids[100:] == ["n-a"]


def test_rebuilds_are_debounced_and_follow_the_base_version(base: ModelVersion) -> None:
    cat, clock = _catalog(), Clock()
    cat.put("n-a", {"title": "cobalt w45 classic"})
    overlay = CatalogOverlay(cat, clock=clock, min_interval_s=1.0, background=False)
    first = overlay.apply(base)
    assert first is not None and first.item_ids[-1] == "n-a" and overlay.n_builds == 1
    clock.t += 5.0
    assert overlay.apply(base) is first and overlay.n_builds == 1  # catalog unchanged: no rebuild
    cat.put("n-b", {"title": "amber w3"})
    second = overlay.apply(base)  # the last build was 5 s ago: at once
    assert second is not None and second.item_ids[-2:] == ["n-a", "n-b"] and overlay.n_builds == 2
    assert second.version != first.version
    cat.put("n-c", {"title": "dune w61"})
    clock.t += 0.5
    assert overlay.apply(base) is second  # changed, but within the debounce interval
    clock.t += 0.5
    third = overlay.apply(base)
    assert third is not None and third.item_ids[-1] == "n-c" and overlay.n_builds == 3
    other = ModelVersion(version="v2", model=base.model, item_ids=base.item_ids, manifest={})
    fourth = overlay.apply(other)  # a new trained version is extended at once
    assert fourth is not None and fourth.version.startswith("v2+3.") and overlay.n_builds == 4


def test_other_models_pass_through_unchanged() -> None:
    log = _planted_log()
    pop = ModelVersion(version="p", model=Popularity().fit(log), item_ids=list(log.item_ids), manifest={})
    cat = _catalog()
    cat.put("n-a", {"title": "cobalt w45 classic"})
    overlay = CatalogOverlay(cat)
    assert overlay.apply(pop) is pop and overlay.apply(None) is None and overlay.n_builds == 0


def _link_rows(rows: dict[tuple[str, int], dict[str, int]]) -> Catalog:
    """The ``item-links`` topic in memory: one row per (new item, partition), as the flow publishes it."""
    return Catalog({links_key(i, p).decode(): orjson.loads(encode_links(i, c)) for (i, p), c in rows.items()})


def test_new_items_with_interactions_get_graph_codes_by_m_prime_q(base: ModelVersion) -> None:
    """Partitions' rows are summed into M′; linked items get their own graph codes, an
    untitled item joins by its links alone, and a change of links changes the version."""
    cat, clock = _catalog(), Clock()
    cat.put("n-a", {"title": "cobalt w45 classic"})  # titled like taste 2 ...
    cat.put("n-u", {"price": 2.0})  # no title
    cat.put("n-w", {"title": "amber w3"})  # titled, 2 links only: below min_links, keeps its title codes
    links = _link_rows({("n-a", 0): {"i83": 2, "i84": 1}, ("n-a", 1): {"i84": 1, "unknown": 5},  # ... used with taste 4
                        ("n-u", 1): {"i61": 3}, ("n-z", 0): {"i1": 1}, ("n-w", 0): {"i90": 2}})  # n-z: not in the catalog
    for key, bad in [("b1", [1, 2]), ("b2", {"item_id": ["n-a"], "links": {}}), ("b3", {"item_id": "n-a", "links": 3}),
                     ("b4", {"item_id": "n-a", "links": {"i1": "x", "i2": -1, "i3": float("nan"), "i4": None}})]:
        links.put(key, bad)  # not what the flow writes: skipped, nothing breaks
    overlay = CatalogOverlay(cat, links=links, clock=clock, background=False)
    ext = overlay.apply(base)
    assert ext is not None and ext.item_ids[100:] == ["n-a", "n-u", "n-w"]
    assert ext.manifest["linked_items"] == 2 and ext.manifest["catalog_items"] == 3
    m = base.model
    want = inductive_codes(m, _links([{83: 2.0, 84: 2.0}, {61: 3.0}]))
    for name in ("g", "s"):
        np.testing.assert_array_equal(ext.model.codes_[name][100:102], want[name])
        np.testing.assert_array_equal(ext.model.codes_[name][102], m.codes_[name][3])  # n-w: title donor i3
    np.testing.assert_array_equal(ext.model.codes_["r"][101], m.codes_["r"][61])  # untitled: its strongest link
    links.put(links_key("n-a", 2).decode(), {"item_id": "n-a", "links": {"i20": 9}})
    clock.t += 1.0
    again = overlay.apply(base)
    assert again is not None and again is not ext and again.version != ext.version
    assert again.item_ids == ext.item_ids  # same items, new codes: a new version string for caches



def test_background_rebuilds_never_block_and_keep_the_base(base: ModelVersion) -> None:
    """A changed catalog is rebuilt on a thread: ``apply`` returns the last extension of the same
    base meanwhile, then the new one; a new base is extended at once."""
    import threading
    import time

    cat, clock = _catalog(), Clock()
    cat.put("n-a", {"title": "cobalt w45 classic"})
    overlay = CatalogOverlay(cat, clock=clock)
    first = overlay.apply(base)  # a new base: built at once, on this thread
    assert first is not None and first.item_ids[-1] == "n-a"
    gate = threading.Event()
    build = overlay._build

    def slow_build(b: ModelVersion) -> ModelVersion:
        gate.wait(10)
        return build(b)

    overlay._build = slow_build  # type: ignore[method-assign]
    cat.put("n-b", {"title": "amber w3"})
    clock.t += 2.0
    assert overlay.apply(base) is first  # the rebuild waits on the gate: the last extension is served
    assert overlay.apply(base) is first and overlay._building
    gate.set()
    deadline = time.monotonic() + 10
    while overlay.apply(base) is first and time.monotonic() < deadline:
        time.sleep(0.01)
    second = overlay.apply(base)
    assert second is not None and second.item_ids[-2:] == ["n-a", "n-b"] and second.version.startswith("v1+2.")


def test_a_failed_build_is_retried_after_the_debounce(base: ModelVersion) -> None:
    cat, clock = _catalog(), Clock()
    cat.put("n-a", {"title": "cobalt w45 classic"})
    overlay = CatalogOverlay(cat, clock=clock, background=False)
    build, calls = overlay._build, []

    def flaky(b: ModelVersion) -> ModelVersion:
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("transient")
        return build(b)

    overlay._build = flaky  # type: ignore[method-assign]
    assert overlay.apply(base) is base  # the first build failed: the trained version, unextended
    clock.t += 0.5
    assert overlay.apply(base) is base and len(calls) == 1  # within the debounce interval
    clock.t += 1.0
    ext = overlay.apply(base)  # nothing changed in the catalog, but the failure is retried
    assert ext is not None and ext.item_ids[-1] == "n-a" and len(calls) == 2
