"""``SyntheticShop``: a seeded shop that emits events (sessions with a funnel, POS baskets) and knows its ground truth.

How a visit is generated (all draws from one ``np.random.default_rng(seed)``):

- a visitor is picked by activity (or, with ``p_new_user``, a brand-new user is created);
- with ``p_pos`` the visit is an offline store basket: one ``pos_purchase`` event whose
  ``items`` are drawn from the user's ground truth, with ``store_id`` = the user's home store;
- otherwise it is an online session: optionally a ``search`` (a word of a liked category),
  then ``view`` events. The first item comes from the user's ground truth (or, with
  ``p_explore``, from global popularity); each next item is, with ``p_follow``, a co-visitation
  successor of the previous one (see ``catalog.py``), else a fresh ground-truth draw. A viewed
  item is added to the cart with ``p_cart_wish`` (ground-truth item) or ``p_cart_other``; each
  carted item is bought (``purchase``) at the end of the session with ``p_buy``.
- new items appear at ``new_items_per_1k_events`` (and join users' ground truth); they are
  announced through ``on_new_item`` before any event mentions them.

Events come out in time order; a session spreads over time (mean gap ``mean_gap_s``), so
sessions of different users interleave as in a real stream.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from operators.schema import BasketLine, Event
from simulators.catalog import SUCCESSOR_WEIGHTS, Catalog, CatalogSpec, item_id_of
from simulators.hit_rate import hit_rate_at_k, precision_at_k, random_hit_rate_at_k
from simulators.tastes import TasteSpec, Users, user_id_of

__all__ = ["VisitSpec", "SyntheticShop", "DEFAULT_START_TS"]

DEFAULT_START_TS = 1_700_000_000.0
"""Epoch seconds where a shop's clock starts unless told otherwise (2023-11-14T22:13:20Z)."""

_UNIFORM_BUFFER = 8192


@dataclass(frozen=True, slots=True)
class VisitSpec:
    """How visits (sessions and store baskets) unfold."""

    mean_views: float = 5.0
    p_follow: float = 0.5
    p_explore: float = 0.1
    p_search: float = 0.1
    p_cart_wish: float = 0.3
    p_cart_other: float = 0.05
    p_buy: float = 0.6
    p_pos: float = 0.08
    mean_basket: float = 3.0
    p_new_user: float = 0.02
    new_items_per_1k_events: float = 2.0
    mean_gap_s: float = 20.0


class _Uniforms:
    """Buffered U(0, 1) draws from the shop's generator (scalar numpy calls are slow)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._buf: list[float] = []
        self._pos = 0

    def __call__(self) -> float:
        if self._pos == len(self._buf):
            self._buf = self._rng.random(_UNIFORM_BUFFER).tolist()
            self._pos = 0
        self._pos += 1
        return self._buf[self._pos - 1]

    def exponential(self, mean: float) -> float:
        return -mean * math.log1p(-self())

    def geometric(self, mean: float) -> int:
        """Number of failures before a success, with the given mean (>= 0)."""
        if mean <= 0:
            return 0
        return int(math.log1p(-self()) / math.log1p(-1.0 / (1.0 + mean)))


@dataclass(slots=True)
class _Clock:
    now: float
    pending: list[tuple[float, int, Event]] = field(default_factory=list)
    seq: int = 0


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
        self._u = _Uniforms(self._rng)
        self._catalog = Catalog(catalog_spec or CatalogSpec(), self._rng)
        self._catalog.add_items(n_items)
        self._users = Users(taste_spec or TasteSpec(), self._catalog, self._rng)
        self._users.add_users(n_users)
        self._clock = _Clock(now=float(start_ts))
        self._n_events = 0
        self._n_sessions = 0
        self._n_visits = 0
        self._next_new_item_at = self._draw_new_item_gap()
        self._activity_cdf: NDArray[np.float64] | None = None
        self._popularity_cdf: NDArray[np.float64] | None = None

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
        """The shop's clock: epoch seconds of the last generated visit."""
        return self._clock.now

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

    # ------------------------------------------------------------------ events
    def history(self, n_events: int, *, end_ts: float | None = None, rate_per_s: float = 1.0) -> list[Event]:
        """``n_events`` events for training; with ``end_ts`` they end around it (start = end - n/rate)."""
        start = None if end_ts is None else end_ts - n_events / rate_per_s
        return list(self.events(n_events, start_ts=start, rate_per_s=rate_per_s))

    def events(
        self,
        n_events: int,
        *,
        start_ts: float | None = None,
        rate_per_s: float = 1.0,
        on_new_item: Callable[[dict], None] | None = None,
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
        """
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s: must be > 0; got {rate_per_s}")
        clock = self._clock
        if start_ts is not None and start_ts != clock.now:
            clock.now, clock.pending = float(start_ts), []
        next_visit = clock.now
        emitted = 0
        while emitted < n_events:
            if clock.pending and clock.pending[0][0] <= next_visit:
                yield heapq.heappop(clock.pending)[2]
                emitted += 1
                continue
            clock.now = next_visit
            self._maybe_add_items(on_new_item)
            for ev in self._visit(next_visit):
                heapq.heappush(clock.pending, (ev.ts, clock.seq, ev))
                clock.seq += 1
            self._n_visits += 1
            next_visit += self._u.exponential(self._events_per_visit() / rate_per_s)

    # ------------------------------------------------------------------ visit generation
    def _events_per_visit(self) -> float:
        """Running mean of events per visit (prior: 6 events, weight 20 visits), so ``rate_per_s`` holds."""
        return (self._n_events + 120.0) / (self._n_visits + 20.0)

    def _draw_new_item_gap(self) -> float:
        rate = self.visit_spec.new_items_per_1k_events / 1000.0
        return math.inf if rate <= 0 else self._n_events + self._u.exponential(1.0 / rate)

    def _maybe_add_items(self, on_new_item: Callable[[dict], None] | None) -> None:
        while self._n_events >= self._next_new_item_at:
            new = self._catalog.add_items(1, created_ts=self._clock.now)
            self._users.add_items(new)
            self._popularity_cdf = None
            if on_new_item is not None:
                on_new_item(self._catalog.item_dict(int(new[0])))
            self._next_new_item_at = self._draw_new_item_gap()

    def _pick_user(self, ts: float) -> int:
        if self._u() < self.visit_spec.p_new_user:
            self._activity_cdf = None
            return int(self._users.add_users(1, created_ts=ts)[0])
        if self._activity_cdf is None:
            self._activity_cdf = np.cumsum(self._users.activity)
        return int(np.searchsorted(self._activity_cdf, self._u() * self._activity_cdf[-1], side="right"))

    def _wish_item(self, u: int) -> int:
        if self._u() < self.visit_spec.p_explore:
            if self._popularity_cdf is None:
                self._popularity_cdf = np.cumsum(self._catalog.popularity)
            cdf = self._popularity_cdf
            return int(np.searchsorted(cdf, self._u() * cdf[-1], side="right"))
        cdf = self._users.wish_cdf[u]
        return int(self._users.wish[u][np.searchsorted(cdf, self._u() * cdf[-1], side="right")])

    def _next_item(self, u: int, prev: int) -> int:
        if self._u() < self.visit_spec.p_follow:
            r, acc = self._u(), 0.0
            for j, w in enumerate(SUCCESSOR_WEIGHTS):
                acc += w
                if r < acc:
                    return int(self._catalog.successors[prev, j])
            return int(self._catalog.successors[prev, -1])
        return self._wish_item(u)

    def _event(self, ts: float, type_: str, user_id: str, **fields: object) -> Event:
        self._n_events += 1
        return Event(
            event_id=f"sim{self.seed}-{self._n_events:09d}", ts=ts, type=type_, user_id=user_id, **fields
        )

    def _visit(self, ts: float) -> list[Event]:
        v, cat = self.visit_spec, self._catalog
        u = self._pick_user(ts)
        uid = user_id_of(u)
        if self._u() < v.p_pos:
            n = 1 + self._u.geometric(v.mean_basket - 1.0)
            items = list(dict.fromkeys(self._wish_item(u) for _ in range(n)))
            lines = tuple(
                BasketLine(
                    item_id=item_id_of(i),
                    quantity=float(1 + self._u.geometric(0.3)),
                    price=float(cat.price[i]),
                )
                for i in items
            )
            store = f"store{int(self._users.home_store[u]):03d}"
            return [self._event(round(ts, 3), "pos_purchase", uid, items=lines, store_id=store)]
        self._n_sessions += 1
        sid = f"s{self.seed}-{self._n_sessions:08d}"
        out: list[Event] = []
        t = ts
        if self._u() < v.p_search:
            pref = self._users.category_pref[u]
            c = int(np.searchsorted(np.cumsum(pref), self._u(), side="right").clip(0, len(pref) - 1))
            words = cat.words[c]
            query = words[int(self._u() * 4)]  # the category's most frequent words
            out.append(self._event(round(t, 3), "search", uid, session_id=sid, query=query))
            t += self._u.exponential(v.mean_gap_s)
        n_views = 1 + self._u.geometric(v.mean_views - 1.0)
        wishes = self._users.wish_sets[u]
        cart: list[int] = []
        item = self._wish_item(u)
        for step in range(n_views):
            if step:
                item = self._next_item(u, item)
                t += self._u.exponential(v.mean_gap_s)
            out.append(self._event(round(t, 3), "view", uid, session_id=sid, item_id=item_id_of(item)))
            p_cart = v.p_cart_wish if item in wishes else v.p_cart_other
            if item not in cart and self._u() < p_cart:
                t += self._u.exponential(v.mean_gap_s)
                price = float(cat.price[item])
                out.append(
                    self._event(
                        round(t, 3),
                        "add_to_cart",
                        uid,
                        session_id=sid,
                        item_id=item_id_of(item),
                        quantity=1.0,
                        price=price,
                    )
                )
                cart.append(item)
        for item in cart:
            if self._u() < v.p_buy:
                t += self._u.exponential(v.mean_gap_s)
                price = float(cat.price[item])
                out.append(
                    self._event(
                        round(t, 3),
                        "purchase",
                        uid,
                        session_id=sid,
                        item_id=item_id_of(item),
                        quantity=1.0,
                        price=price,
                    )
                )
        return out
