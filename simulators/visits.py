"""How one visit unfolds: a session with a funnel (search, view, add_to_cart, purchase) or a store basket.

A visit (all draws from the shop's one generator):

- a visitor is picked by activity (or, with ``p_new_user``, a brand-new user is created);
- with ``p_pos`` the visit is an offline store basket: one ``pos_purchase`` event whose
  ``items`` are drawn from the user's ground truth, with ``store_id`` = the user's home store;
- otherwise it is an online session: optionally a ``search`` (a word of a liked category),
  then ``view`` events. The first item comes from the user's ground truth (or, with
  ``p_explore``, from global popularity); each next item is, with ``p_follow``, a co-visitation
  successor of the previous one (see ``catalog.py``), else a fresh ground-truth draw. A viewed
  item is added to the cart with ``p_cart_wish`` (ground-truth item) or ``p_cart_other``; each
  carted item is bought (``purchase``) at the end of the session with ``p_buy``.
- new items appear at ``new_items_per_1k_events`` and join users' ground truth.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from operators.schema import BasketLine, Event
from simulators.catalog import SUCCESSOR_WEIGHTS, Catalog
from simulators.tastes import Users, user_id_of

__all__ = ["VisitSpec", "Uniforms", "VisitGenerator"]

_UNIFORM_BUFFER = 8192


@dataclass(frozen=True, slots=True)
class VisitSpec:
    """How visits (sessions and store baskets) unfold.

    Attributes
    ----------
    mean_views : float
        Mean ``view`` events per online session (>= 1, geometric).
    p_follow : float
        Probability that the next view is a co-visitation successor of the previous item.
    p_explore : float
        Probability that an item draw ignores taste and follows global popularity.
    p_search : float
        Probability that a session opens with a ``search``.
    p_cart_wish, p_cart_other : float
        Probability of ``add_to_cart`` after viewing a ground-truth item / any other item.
    p_buy : float
        Probability that a carted item is bought (``purchase``) at the end of the session.
    p_pos : float
        Share of visits that are offline store baskets (``pos_purchase``).
    mean_basket : float
        Mean distinct-draw count of a store basket.
    p_new_user : float
        Share of visits by a brand-new user.
    new_items_per_1k_events : float
        Arrival rate of new catalog items.
    mean_gap_s : float
        Mean seconds between two events of one session.
    warm_up_s : float
        Seconds simulated before a (re)start so the stream starts in steady state.
    """

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
    warm_up_s: float = 300.0


class Uniforms:
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
        """An exponential draw with the given mean."""
        return -mean * math.log1p(-self())

    def geometric(self, mean: float) -> int:
        """Number of failures before a success, with the given mean (>= 0)."""
        if mean <= 0:
            return 0
        return int(math.log1p(-self()) / math.log1p(-1.0 / (1.0 + mean)))


class VisitGenerator:
    """Turns visits into events; owns the event/session/visit counters and item arrivals.

    Parameters
    ----------
    catalog, users : Catalog, Users
        The shop's items and users (both grow here).
    spec : VisitSpec
        Probabilities and sizes.
    uniforms : Uniforms
        The shop's buffered uniform draws.
    seed : int
        Only used to prefix ``event_id`` and ``session_id``.
    """

    def __init__(
        self, catalog: Catalog, users: Users, spec: VisitSpec, uniforms: Uniforms, seed: int
    ) -> None:
        self._catalog = catalog
        self._users = users
        self.visit_spec = spec
        self._u = uniforms
        self.seed = seed
        self._n_events = 0
        self._n_sessions = 0
        self._n_visits = 0
        self._activity_cdf: list[float] | None = None
        self._popularity_cdf: list[float] | None = None
        self._next_new_item_at = self._draw_new_item_gap()

    def reset_caches(self) -> None:
        """Forget the cached activity and popularity CDFs (after users' tastes were drawn again)."""
        self._activity_cdf = self._popularity_cdf = None

    def events_per_visit(self) -> float:
        """Running mean of events per visit (prior: 6 events, weight 20 visits), so ``rate_per_s`` holds."""
        return (self._n_events + 120.0) / (self._n_visits + 20.0)

    def _draw_new_item_gap(self) -> float:
        rate = self.visit_spec.new_items_per_1k_events / 1000.0
        return math.inf if rate <= 0 else self._n_events + self._u.exponential(1.0 / rate)

    def maybe_add_items(self, now: float, on_new_item: Callable[[dict], None] | None) -> None:
        """Add the new items due by now (the event count so far); announce each through ``on_new_item``."""
        while self._n_events >= self._next_new_item_at:
            new = self._catalog.add_items(1, created_ts=now)
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
            self._activity_cdf = np.cumsum(self._users.activity).tolist()
        return self._draw(self._activity_cdf)

    def _wish_item(self, u: int) -> int:
        if self._u() < self.visit_spec.p_explore:
            if self._popularity_cdf is None:
                self._popularity_cdf = np.cumsum(self._catalog.popularity).tolist()
            return self._draw(self._popularity_cdf)
        return self._users.wish[u][self._draw(self._users.wish_cdf[u])]

    def _draw(self, cdf: list[float]) -> int:
        """An index drawn with probability proportional to the increments of ``cdf``."""
        return min(bisect.bisect_right(cdf, self._u() * cdf[-1]), len(cdf) - 1)

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

    def visit(self, ts: float) -> list[Event]:
        """The events of one visit starting at ``ts`` (epoch seconds), in time order."""
        self._n_visits += 1
        v = self.visit_spec
        u = self._pick_user(ts)
        if self._u() < v.p_pos:
            return [self._store_basket(u, ts)]
        return self._session(u, ts)

    def _store_basket(self, u: int, ts: float) -> Event:
        """One ``pos_purchase``: a basket of ground-truth items at the user's home store."""
        v, cat, uid = self.visit_spec, self._catalog, user_id_of(u)
        n = 1 + self._u.geometric(v.mean_basket - 1.0)
        items = list(dict.fromkeys(self._wish_item(u) for _ in range(n)))
        lines = tuple(
            BasketLine(
                item_id=cat.item_ids[i],
                quantity=float(1 + self._u.geometric(0.3)),
                price=float(cat.price[i]),
            )
            for i in items
        )
        store = f"store{int(self._users.home_store[u]):03d}"
        return self._event(round(ts, 3), "pos_purchase", uid, items=lines, store_id=store)

    def _session(self, u: int, ts: float) -> list[Event]:
        """An online session: optional search, views (co-visitation walk), carts, purchases."""
        v, cat, uid = self.visit_spec, self._catalog, user_id_of(u)
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
            out.append(self._event(round(t, 3), "view", uid, session_id=sid, item_id=cat.item_ids[item]))
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
                        item_id=cat.item_ids[item],
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
                        item_id=cat.item_ids[item],
                        quantity=1.0,
                        price=price,
                    )
                )
        return out
