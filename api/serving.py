"""One campaign request: candidates of the chosen arm -> IQL filter -> boosters -> N items, topped up.

``serve_list`` is the pipeline after the arm is chosen. Candidates come from the arm's strategy
(over-fetched, so filtering leaves enough), items of the request (current item, cart, session)
are excluded, the campaign's IQL filter keeps the items it selects (a bitmap over the catalog
index; without a filter, hidden and deleted items are still dropped), boosters multiply the
scores and the list is re-ranked (stable). If fewer than ``n`` remain, the campaign's fallback
strategy fills the rest through the same filter, and the result says how many came from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from api.filter_cache import in_bitmap
from api.iql import RequestContext
from api.strategies import Inputs, run_strategy
from state.campaigns import Campaign

if TYPE_CHECKING:
    from api.services import Services

__all__ = ["ServedList", "serve_list", "request_context"]

_OVERFETCH = 4
_FALLBACK_POOL = 2000
"""Candidates the fallback strategy is asked for before the campaign filter (popular lists are cheap)."""


@dataclass
class ServedList:
    """Items (best first) and where they came from."""

    items: list[dict[str, Any]] = field(default_factory=list)
    from_arm: int = 0
    topped_up: int = 0


def request_context(svc: Services, inputs: Inputs) -> RequestContext:
    """The IQL context of a request: current item, cart, user attributes (``user.*`` params), params."""
    user = {"user_id": inputs.user_id} if inputs.user_id else {}
    user.update({k[5:]: v for k, v in inputs.params.items() if k.startswith("user.")})
    return svc.catalog_view.engine.context(item_id=inputs.item_id, cart_item_ids=list(inputs.cart),
                                           user=user or None, params=dict(inputs.params))


def _keep(svc: Services, campaign: Campaign, ctx: RequestContext, idx: np.ndarray) -> np.ndarray:
    view = svc.catalog_view
    if campaign.filter.strip():
        plan = view.engine.compile_filter(campaign.filter)
        return in_bitmap(view.bitmaps.bitmap(plan, ctx, view.version), idx)
    if view.index.capacity == 0:
        return np.ones(len(idx), dtype=bool)
    return (idx < 0) | in_bitmap(view.index.live, idx)  # unknown to the catalog: kept (as CatalogView.servable)


def _boost(svc: Services, campaign: Campaign, ctx: RequestContext, idx: np.ndarray) -> np.ndarray:
    """Score multipliers: the product of the weights of the booster clauses each candidate matches."""
    view = svc.catalog_view
    mult = np.ones(len(idx))
    for weight, condition in view.engine.compile_boosters(campaign.boosters).clauses:
        mult[in_bitmap(view.bitmaps.bitmap(condition, ctx, view.version), idx)] *= weight
    return mult


def _filtered(svc: Services, campaign: Campaign, ctx: RequestContext, strategy: str, inputs: Inputs,
              params: Mapping[str, Any], k: int, exclude: set[str]) -> tuple[list[str], np.ndarray]:
    ids, scores = run_strategy(strategy, svc, inputs, params, k)
    if not ids:
        return [], np.zeros(0)
    s = np.asarray(scores, dtype=np.float64)
    idx = svc.catalog_view.index.lookup(ids)
    keep = _keep(svc, campaign, ctx, idx) & np.fromiter((i not in exclude for i in ids), bool, len(ids))
    sel = np.flatnonzero(keep)
    ids = [ids[i] for i in sel]
    s = s[sel]
    if campaign.boosters.strip() and ids:
        s = s * _boost(svc, campaign, ctx, idx[sel])
        order = np.argsort(-s, kind="stable")
        ids, s = [ids[i] for i in order], s[order]
    return ids, s


def serve_list(svc: Services, campaign: Campaign, strategy: str, params: Mapping[str, Any],
               inputs: Inputs, n: int) -> ServedList:
    """The ``n`` items of one campaign request for the chosen arm's ``strategy``.

    Raises
    ------
    api.iql.IQLError
        If the filter or boosters need a request parameter that is missing or has the wrong type.
    """
    svc.catalog_view.sync()
    ctx = request_context(svc, inputs)
    # bind the filter and boosters first (cached per bound values): a request parameter that is
    # missing or does not fit its use is an IQLError even when no candidate would reach the filter
    none = np.zeros(0, dtype=np.int64)
    if campaign.filter.strip():
        _keep(svc, campaign, ctx, none)
    if campaign.boosters.strip():
        _boost(svc, campaign, ctx, none)
    exclude = set(inputs.cart) | set(inputs.session) | ({inputs.item_id} if inputs.item_id else set())
    k = n * _OVERFETCH + len(exclude)
    ids, scores = _filtered(svc, campaign, ctx, strategy, inputs, params, k, exclude)
    out = ServedList()
    out.items = [{"item_id": i, "score": float(s)} for i, s in zip(ids[:n], scores[:n].tolist(), strict=True)]
    out.from_arm = len(out.items)
    if len(out.items) < n:
        taken = exclude | set(ids[:n])
        # the fallback is filtered too: draw from a deep pool so a narrow filter still fills the list
        pool = max(k + len(taken), _FALLBACK_POOL)
        more, more_scores = _filtered(svc, campaign, ctx, campaign.fallback, inputs, params, pool, taken)
        extra = [{"item_id": i, "score": float(s), "fallback": True}
                 for i, s in zip(more[: n - len(out.items)], more_scores.tolist(), strict=False)]
        out.items += extra
        out.topped_up = len(extra)
    return out
