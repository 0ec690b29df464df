"""``CandidateCache`` is bounded by lists and by the item ids they hold (long lists of new items)."""

from __future__ import annotations

from api.candidate_cache import CandidateCache


def _ranked(key: int, length: int) -> tuple[list[str], list[float]]:
    return [f"i{key}-{j}" for j in range(length)], [1.0] * length


def test_bounded_by_entries() -> None:
    cache: CandidateCache[tuple[list[str], list[float]]] = CandidateCache(max_entries=3, max_items=10**9)
    for key in range(5):
        cache.get(key, lambda key=key: _ranked(key, 2))
    assert len(cache) == 3 and cache.n_items == 6


def test_bounded_by_items_least_recently_used_first() -> None:
    cache: CandidateCache[tuple[list[str], list[float]]] = CandidateCache(max_entries=1000, max_items=1000)
    for key in range(3):
        cache.get(key, lambda key=key: _ranked(key, 300))
    cache.get(0, lambda: _ranked(99, 1))  # a hit: 0 becomes the most recent
    cache.get(3, lambda: _ranked(3, 300))  # 1,200 ids: the least recent list (1) goes
    assert cache.n_items == 900 and len(cache) == 3
    computed: list[int] = []
    cache.get(1, lambda: computed.append(1) or _ranked(1, 300))
    assert computed == [1]  # 1 was dropped
    assert cache.n_items <= 1000


def test_a_list_longer_than_the_bound_is_still_returned_and_kept_alone() -> None:
    cache: CandidateCache[tuple[list[str], list[float]]] = CandidateCache(max_entries=10, max_items=100)
    cache.get("a", lambda: _ranked(1, 10))
    value = cache.get("b", lambda: _ranked(2, 500))
    assert len(value[0]) == 500 and len(cache) == 1 and cache.n_items == 500
