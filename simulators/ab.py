"""A simulated A/B test with a known answer: users react to served lists with known CTRs.

One campaign, several arms with a true click-through rate each (so the better arm is known),
and a control group held back by ``operators.control_group.group_of``. Every visit of a user is
a served list (``rec_request``); exposed users see it (``rec_impression``), click one item with
their arm's CTR (``rec_click``), put the clicked item in the cart (``add_to_cart``) and order
more often after a click. Control users get no list and order at the base rate.

The truth is exact (``ABTruth``), not estimated: with ``c`` the mean CTR of the arms (arms are
drawn uniformly per request), ``p0`` the base order probability per visit, ``p1`` the order
probability after a click, ``lam`` the mean extra basket lines and ``V`` visits per user:

* exposed order probability per visit ``pe = c p1 + (1 - c) p0``; control ``pc = p0``;
* conversion (user ordered at least once) ``1 - (1 - p)^V``;
* items per order: control ``1 + lam``; exposed ``1 + lam + P(click | order)`` with
  ``P(click | order) = c p1 / pe`` (the clicked item joins the basket);
* value per order = items per order x the catalog's mean price (every line is a uniform draw
  from the catalog: basket lines directly, the clicked item through a uniform served list).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from operators.control_group import CONTROL, CONTROL_ARM, group_of
from operators.schema import BasketLine, Event
from simulators.shop import DEFAULT_START_TS

__all__ = ["ABSpec", "ABTruth", "ABSimulation", "react"]


@dataclass(frozen=True)
class ABSpec:
    """Shape of the simulated test (probabilities per visit; times in seconds)."""

    campaign_id: str = "home"
    scenario: str = "personalized"
    arms: dict[str, float] = field(default_factory=lambda: {"covisit": 0.10, "emde": 0.25})
    control_share: float = 0.2
    visits_per_user: int = 4
    p_order: float = 0.15
    p_order_after_click: float = 0.6
    p_cart_after_click: float = 0.7
    extra_lines_mean: float = 1.0
    list_size: int = 8
    window_s: float = 3600.0
    span_s: float = 2 * 86400.0


@dataclass(frozen=True)
class ABTruth:
    """The simulator's true values (see module docstring); uplift = exposed / control - 1."""

    ctr: dict[str, float]
    conversion: dict[str, float]
    aos: dict[str, float]
    aov: dict[str, float]

    def uplift(self, metric: str) -> float:
        m = getattr(self, metric)
        return m["exposed"] / m["control"] - 1.0


class ABSimulation:
    """Events of one simulated A/B test, deterministic in ``seed``.

    Parameters
    ----------
    spec : ABSpec
    item_ids : list of str
        The catalog to serve and order from.
    prices : ndarray of shape (n_items,), float64
        Price of each item.
    n_users : int
    seed : int
    start_ts : float
        Epoch seconds of the first visit.

    Examples
    --------
    >>> sim = ABSimulation(ABSpec(), [f"i{i}" for i in range(50)], np.full(50, 10.0), n_users=20, seed=1)
    >>> evs = sim.events()
    >>> sorted({e.type for e in evs}) [:2]
    ['add_to_cart', 'purchase']
    """

    def __init__(self, spec: ABSpec, item_ids: list[str], prices: np.ndarray, n_users: int, seed: int = 0,
                 start_ts: float = DEFAULT_START_TS) -> None:
        if len(item_ids) != len(prices) or len(item_ids) < spec.list_size:
            raise ValueError(f"item_ids and prices: need equal lengths >= list_size={spec.list_size}; "
                             f"got {len(item_ids)} and {len(prices)}")
        self.spec, self.item_ids, self.prices = spec, list(item_ids), np.asarray(prices, dtype=np.float64)
        self.n_users, self.seed, self.start_ts = n_users, seed, start_ts
        self.user_ids = [f"ab{u:06d}" for u in range(n_users)]
        self.groups = {u: group_of(u, spec.campaign_id, spec.control_share) for u in self.user_ids}

    def truth(self) -> ABTruth:
        s = self.spec
        c = float(np.mean(list(s.arms.values())))
        pc, pe = s.p_order, c * s.p_order_after_click + (1 - c) * s.p_order
        v = s.visits_per_user
        aos_c, aos_e = 1 + s.extra_lines_mean, 1 + s.extra_lines_mean + c * s.p_order_after_click / pe
        mu = float(self.prices.mean())
        return ABTruth(ctr=dict(s.arms),
                       conversion={"control": 1 - (1 - pc) ** v, "exposed": 1 - (1 - pe) ** v},
                       aos={"control": aos_c, "exposed": aos_e}, aov={"control": aos_c * mu, "exposed": aos_e * mu})

    def events(self) -> list[Event]:
        """All events of the test, in time order (the stream a shop would send)."""
        s, rng = self.spec, np.random.default_rng(self.seed)
        out: list[Event] = []
        for u in self.user_ids:
            for t in np.sort(rng.uniform(0, s.span_s, s.visits_per_user)):
                out += self._visit(rng, u, self.start_ts + float(t), len(out))
        out.sort(key=lambda e: e.ts)
        return out

    def _visit(self, rng: np.random.Generator, u: str, ts: float, seq: int) -> list[Event]:
        """The events of one visit: served list, impression, click, cart, order (as they happen)."""
        s = self.spec
        rid = f"req{self.seed}-{seq}"
        control = self.groups[u] == CONTROL
        arms = sorted(s.arms)
        arm = CONTROL_ARM if control else arms[int(rng.integers(len(arms)))]
        served = [] if control else [self.item_ids[i] for i in
                                     rng.choice(len(self.item_ids), s.list_size, replace=False).tolist()]
        request = Event(event_id=f"ev{self.seed}-{seq}-r", ts=round(ts, 3), type="rec_request", user_id=u,
                        request_id=rid, campaign_id=s.campaign_id, arm=arm,
                        extra={"scenario": s.scenario, "goal": "purchase", "window_s": s.window_s,
                               "served_items": served})
        return [request, *react(s, rng, u, ts, rid, s.arms.get(arm, 0.0), served, self.item_ids, self.prices,
                                f"ev{self.seed}-{seq}")]


def react(spec: ABSpec, rng: np.random.Generator, user_id: str, ts: float, request_id: str, ctr: float,
          served: list[str], item_ids: list[str], prices: np.ndarray, id_prefix: str) -> list[Event]:
    """How a user reacts to one served list (empty for the control group): the simulator's truth.

    Sees it (``rec_impression``), clicks one item with probability ``ctr``, puts it in the cart
    (``p_cart_after_click``), orders with ``p_order_after_click`` after a click, else ``p_order``:
    a basket of ``1 + Poisson(extra_lines_mean)`` uniform catalog items (+ the clicked one).
    """
    out: list[Event] = []

    def ev(kind: str, dt: float, **kw: object) -> Event:
        return Event(event_id=f"{id_prefix}-{len(out)}", ts=round(ts + dt, 3), type=kind, user_id=user_id,
                     **kw)  # type: ignore[arg-type]

    clicked: str | None = None
    if served:
        out.append(ev("rec_impression", 1.0, request_id=request_id, items=tuple(BasketLine(i) for i in served)))
        if rng.random() < ctr:
            clicked = served[int(rng.integers(len(served)))]
            out.append(ev("rec_click", 5.0, request_id=request_id, item_id=clicked))
            if rng.random() < spec.p_cart_after_click:
                out.append(ev("add_to_cart", 20.0, item_id=clicked))
    if rng.random() < (spec.p_order_after_click if clicked is not None else spec.p_order):
        lines = rng.integers(len(item_ids), size=1 + int(rng.poisson(spec.extra_lines_mean))).tolist()
        basket = [BasketLine(item_ids[i], 1.0, float(prices[i])) for i in lines]
        if clicked is not None:
            k = item_ids.index(clicked) if clicked in item_ids else -1
            basket.append(BasketLine(clicked, 1.0, float(prices[k]) if k >= 0 else float(np.mean(prices))))
        out.append(ev("purchase", 60.0, items=tuple(basket)))
    return out
