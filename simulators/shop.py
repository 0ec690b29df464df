"""``SyntheticShop``: a seeded shop that emits events and knows its ground truth (which items each user would buy).

The catalog (``catalog.py``), the users' tastes and ground truth (``tastes.py``) and the visits
(``visits.py``: sessions with a view -> add_to_cart -> purchase funnel, POS baskets, new users
and new items) are drawn from one ``np.random.default_rng(seed)``. Events come out in time
order; a session spreads over time (mean gap ``VisitSpec.mean_gap_s``), so sessions of
different users interleave as in a real stream.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from operators.schema import Event
from simulators.catalog import Catalog, CatalogSpec, item_id_of
from simulators.hit_rate import hit_rate_at_k, precision_at_k, random_hit_rate_at_k
from simulators.tastes import TasteSpec, Users, user_id_of
from simulators.visits import Uniforms, VisitGenerator, VisitSpec

__all__ = ["SyntheticShop", "DEFAULT_START_TS"]

DEFAULT_START_TS = 1_700_000_000.0
"""Epoch seconds where a shop's clock starts unless told otherwise (2023-11-14T22:13:20Z)."""

_INITIAL_ITEMS_AGE_S = 365 * 86400.0
"""The initial catalog was listed over the year before the shop's start."""

_WARM_UP_MIN_EVENTS = 50_000
"""The warm-up may always simulate this many events (more only for longer streams)."""


@dataclass(slots=True)
class _Clock:
    """Where the stream is: the next visit's time, the events already generated but not yet yielded."""

    next_visit: float
    pending: list[tuple[float, int, Event]] = field(default_factory=list)
    seq: int = 0
    warm: bool = False


class SyntheticShop:
    """A deterministic synthetic shop: catalog, users with latent tastes, events, and ground truth.

    Parameters
    ----------
    n_items, n_users : int
        Initial catalog and user counts (both grow while events are generated).
    seed : int
        Seed of the one ``np.random.default_rng`` everything is drawn from. Same seed and same
        call sequence give the same catalog, users and events.
    start_ts : float
        Epoch seconds of the shop's clock at creation.
    catalog_spec, taste_spec, visit_spec : optional
        Shapes of the catalog, tastes and visits.

    Examples
    --------
    >>> shop = SyntheticShop(n_items=500, n_users=100, seed=1)
    >>> train = shop.history(5000)
    >>> live = list(shop.events(1000, rate_per_s=100.0))
    >>> recs = {u: shop.taste_recommendations([u], 10)[u] for u in shop.user_ids[:50]}
    >>> shop.hit_rate(recs, 10) > shop.random_hit_rate(10)
    True
    """

    def __init__(
        self,
        n_items: int = 2000,
        n_users: int = 500,
        seed: int = 0,
        *,
        start_ts: float = DEFAULT_START_TS,
        catalog_spec: CatalogSpec | None = None,
        taste_spec: TasteSpec | None = None,
        visit_spec: VisitSpec | None = None,
    ) -> None:
        if n_items < 1 or n_users < 1:
            raise ValueError(f"n_items and n_users must be >= 1; got n_items={n_items}, n_users={n_users}")
        self.seed = seed
        self.visit_spec = visit_spec or VisitSpec()
        self._rng = np.random.default_rng(seed)
        self._u = Uniforms(self._rng)
        self._catalog = Catalog(catalog_spec or CatalogSpec(), self._rng)
        listed_ago_s = self._rng.uniform(0.0, _INITIAL_ITEMS_AGE_S, n_items)
        self._catalog.add_items(n_items, created_ts=float(start_ts) - listed_ago_s)
        self._users = Users(taste_spec or TasteSpec(), self._catalog, self._rng)
        self._users.add_users(n_users)
        self._clock = _Clock(next_visit=float(start_ts))
        self._visits = VisitGenerator(self._catalog, self._users, self.visit_spec, self._u, seed)

    # ------------------------------------------------------------------ ids and catalog
    @property
    def n_items(self) -> int:
        """Items in the catalog now (grows as new items arrive)."""
        return len(self._catalog)

    @property
    def n_users(self) -> int:
        """Users now (grows as new users arrive)."""
        return len(self._users)

    @property
    def item_ids(self) -> list[str]:
        """All item ids, in item-index order."""
        return [item_id_of(i) for i in range(self.n_items)]

    @property
    def user_ids(self) -> list[str]:
        """All user ids, in user-index order."""
        return [user_id_of(u) for u in range(self.n_users)]

    @property
    def now(self) -> float:
        """The shop's clock: epoch seconds the stream has reached (the next visit's time)."""
        return self._clock.next_visit

    def catalog(self, *, since: int = 0, vectors: bool = True) -> list[dict]:
        """Item records (``item_id``, title, category, brand, price, on_sale, tags, created_ts, vector).

        Parameters
        ----------
        since : int
            Return items with index >= ``since`` only (e.g. the ones added since a previous call).
        vectors : bool
            Include the image-like ``vector`` (list of floats).
        """
        out = [self._catalog.item_dict(i) for i in range(since, self.n_items)]
        if not vectors:
            for d in out:
                d.pop("vector")
        return out

    # ------------------------------------------------------------------ ground truth
    def _user_idx(self, user_id: str) -> int:
        if not (user_id.startswith("u") and user_id[1:].isdigit()) or int(user_id[1:]) >= self.n_users:
            raise KeyError(f"user_id: not a user of this shop; got {user_id!r}")
        return int(user_id[1:])

    def ground_truth(self, user_id: str) -> set[str]:
        """Item ids the user would buy / is drawn to (their latent wish set, as of now)."""
        return {item_id_of(i) for i in self._users.wish[self._user_idx(user_id)]}

    def affinity(self, user_id: str) -> NDArray[np.float64]:
        """Latent affinity of one user to every item, shape (n_items,), in item-index order."""
        return self._users.affinity(np.array([self._user_idx(user_id)]))[0]

    def taste_recommendations(self, user_ids: Iterable[str], k: int) -> dict[str, list[str]]:
        """The oracle: each user's top-``k`` items by latent affinity (an upper reference, not a model)."""
        out: dict[str, list[str]] = {}
        for uid in user_ids:
            a = self.affinity(uid)
            top = np.argsort(-a, kind="stable")[:k]
            out[uid] = [item_id_of(int(i)) for i in top]
        return out

    def hit_rate(self, recs: dict[str, list[str]], k: int) -> float:
        """HR@k: share of users in ``recs`` whose first ``k`` items contain at least one ground-truth item."""
        return hit_rate_at_k(recs, {u: self.ground_truth(u) for u in recs}, k)

    def precision_at_k(self, recs: dict[str, list[str]], k: int) -> float:
        """Mean over users in ``recs`` of (ground-truth items among the first ``k``) / ``k``."""
        return precision_at_k(recs, {u: self.ground_truth(u) for u in recs}, k)

    def random_hit_rate(self, k: int, user_ids: Iterable[str] | None = None) -> float:
        """Chance HR@k: expected ``hit_rate`` of ``k`` distinct items drawn uniformly from the catalog.

        Averaged over ``user_ids`` (all users when omitted); exact (hypergeometric), not sampled.
        """
        users = range(self.n_users) if user_ids is None else [self._user_idx(u) for u in user_ids]
        sizes = np.array([len(self._users.wish[u]) for u in users])
        return random_hit_rate_at_k(sizes, self.n_items, k)

    def random_precision_at_k(self, user_ids: Iterable[str] | None = None) -> float:
        """Chance precision@k (independent of k): mean ground-truth share of the catalog."""
        users = range(self.n_users) if user_ids is None else [self._user_idx(u) for u in user_ids]
        return float(np.mean([len(self._users.wish[u]) for u in users])) / self.n_items

    def drift(self) -> None:
        """Tastes drift mid-run: the season regroups the catalog (new co-visitation groups) and every
        user's tastes and ground truth are drawn again. Events generated afterwards follow the new
        tastes; ``ground_truth`` and ``hit_rate`` answer for them. A model trained before is stale."""
        self._catalog.regroup()
        self._users.redraw()
        self._visits.reset_caches()

    # ------------------------------------------------------------------ events
    def history(
        self, n_events: int, *, end_ts: float | None = None, rate_per_s: float = 1.0, warm_up: bool = True
    ) -> list[Event]:
        """``n_events`` events for training; with ``end_ts`` they end around it (start = end - n/rate).

        Same parameters as ``events``; the shop's clock continues afterwards.
        """
        start = None if end_ts is None else end_ts - n_events / rate_per_s
        return list(self.events(n_events, start_ts=start, rate_per_s=rate_per_s, warm_up=warm_up))

    def events(
        self,
        n_events: int,
        *,
        start_ts: float | None = None,
        rate_per_s: float = 1.0,
        on_new_item: Callable[[dict], None] | None = None,
        warm_up: bool = True,
    ) -> Iterator[Event]:
        """Yield ``n_events`` events in time order, continuing the shop's clock.

        Parameters
        ----------
        n_events : int
            How many events to yield.
        start_ts : float, optional
            Move the clock here first (epoch seconds); sessions still open are dropped.
            Default: continue where the previous call stopped (open sessions continue too).
        rate_per_s : float
            Mean events per second of simulated time (the ``ts`` spacing, not wall-clock pacing).
        on_new_item : callable, optional
            Called with the catalog record of each new item before any event mentions it.
        warm_up : bool
            When the stream (re)starts, join the shop mid-stream: simulate the
            ``VisitSpec.warm_up_s`` seconds before the start (at most the time of
            ``max(n_events, 50_000)`` events, to bound the cost) and keep only their events from the
            start on, so the rate holds from the first seconds. The first sessions are then
            partial (e.g. a purchase whose view was before the start), as in any cut of a log.
            Without it the rate ramps up over the first few session lengths.
        """
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s: must be > 0; got {rate_per_s}")
        clock = self._clock
        if start_ts is not None and start_ts != clock.next_visit:
            clock.next_visit, clock.pending, clock.warm = float(start_ts), [], False
        if warm_up and not clock.warm:
            budget_s = max(n_events, _WARM_UP_MIN_EVENTS) / rate_per_s
            self._warm_up(min(self.visit_spec.warm_up_s, budget_s), rate_per_s, on_new_item)
        clock.warm = True
        emitted = 0
        while emitted < n_events:
            if clock.pending and clock.pending[0][0] <= clock.next_visit:
                yield heapq.heappop(clock.pending)[2]
                emitted += 1
                continue
            self._visit(clock.next_visit, on_new_item, keep_from=-np.inf)
            clock.next_visit += self._u.exponential(self._visits.events_per_visit() / rate_per_s)

    def _visit(self, ts: float, on_new_item: Callable[[dict], None] | None, keep_from: float) -> None:
        """Generate one visit at ``ts``; queue its events from ``keep_from`` on."""
        clock = self._clock
        self._visits.maybe_add_items(ts, on_new_item)
        for ev in self._visits.visit(ts):
            if ev.ts >= keep_from:
                heapq.heappush(clock.pending, (ev.ts, clock.seq, ev))
                clock.seq += 1

    def _warm_up(self, seconds: float, rate_per_s: float, on_new_item: Callable[[dict], None] | None) -> None:
        """Simulate ``seconds`` before the clock; queue only the events at or after it."""
        start = self._clock.next_visit
        t = start - seconds
        while t < start:
            self._visit(t, on_new_item, keep_from=start)
            t += self._u.exponential(self._visits.events_per_visit() / rate_per_s)
