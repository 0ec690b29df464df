"""A/B event logs shared by the analytics tests: the simulator's log, plus duplicates and late events."""

from __future__ import annotations

import numpy as np
import pytest

from operators.schema import Event
from simulators.ab import ABSimulation, ABSpec
from simulators.shop import SyntheticShop


def ab_simulation(n_users: int, seed: int = 7) -> ABSimulation:
    """The A/B test over a synthetic shop's catalog (ids and prices)."""
    shop = SyntheticShop(n_items=400, n_users=10, seed=seed)
    cat = shop.catalog(vectors=False)
    return ABSimulation(ABSpec(), [c["item_id"] for c in cat], np.array([c["price"] for c in cat]), n_users, seed)


def with_noise(log: list[Event], seed: int = 0, dup_share: float = 0.02, late_share: float = 0.03) -> list[Event]:
    """``log`` as a shop would deliver it: some events sent twice (same event_id, up to 100
    messages later), some impressions re-displayed (new event_id, same request_id), and some
    carts and orders arriving late (moved up to 50 messages later, their ``ts`` unchanged)."""
    rng = np.random.default_rng(seed)
    out = list(log)
    for i in sorted(rng.choice(len(log), int(late_share * len(log)), replace=False).tolist(), reverse=True):
        if out[i].type in ("add_to_cart", "purchase"):
            ev = out.pop(i)
            out.insert(min(len(out), i + int(rng.integers(1, 50))), ev)
    for i in sorted(rng.choice(len(out), int(dup_share * len(out)), replace=False).tolist(), reverse=True):
        ev = out[i]
        if ev.type == "rec_impression" and rng.random() < 0.5:
            ev = Event(event_id=ev.event_id + "-again", ts=ev.ts + 2.0, type=ev.type, user_id=ev.user_id,
                       request_id=ev.request_id, items=ev.items)
        out.insert(min(len(out), i + int(rng.integers(1, 100))), ev)
    return out


@pytest.fixture(scope="module")
def small_ab() -> tuple[ABSimulation, list[Event]]:
    sim = ab_simulation(600)
    return sim, with_noise(sim.events())
