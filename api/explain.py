"""``explain=true`` on ``GET /v1/recommendations``: why each served item is in the list.

Per item: the arm and scenario, the strategy that produced it (the arm's, or the campaign's
fallback for topped-up items), the campaign's filter (every served item passed it), the booster
clauses that matched the item and their combined multiplier, and the strongest contributions to
its score computed from the model (``operators/analytics/explain.py``): for co-visitation,
which of the history items the strategy scored -- the user's recent items, the session, the
current item or the cart -- weighed most; for EMDE, how much each modality's sketch raised it. Strategies that score no history (popular, top, visual, last seen) say
what their score is instead.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from api.iql.evaluate import candidates_mask, evaluate
from api.strategies import Inputs
from operators.analytics.explain import (
    history_contributions,
    modality_contributions,
    supports_contributions,
    supports_modalities,
)
from operators.score import TopN

if TYPE_CHECKING:
    from api.services import Services
    from state.campaigns import Campaign

__all__ = ["explain_items"]

_BASIS = {
    "top": "windowed popularity (no history involved)",
    "popular": "decayed popularity published by the flow (no history involved)",
    "visual": "cosine similarity of the item's vector to the current item",
    "last_seen": "the user's own recent items, newest first",
}


def _history(svc: Services, strategy: str, inputs: Inputs) -> tuple[list[str], str] | None:
    """The history the strategy scored (oldest first) and what it is, or None if it scores none."""
    if strategy == "personalized" and inputs.user_id:
        t = svc.topn.get(inputs.user_id)
        recent = list(t.recent) if isinstance(t, TopN) else []
        return recent[::-1], "the user's recent items"
    if strategy == "session":
        return (list(inputs.session) or ([inputs.item_id] if inputs.item_id else [])), "the session's items"
    if strategy == "similar" and inputs.item_id:
        return [inputs.item_id], "the current item"
    if strategy == "cart":
        return list(inputs.cart), "the cart's items"
    return None


def _boosters(svc: Services, campaign: Campaign | None, inputs: Inputs, ids: list[str]) -> list[tuple[list[str], float]]:
    """Per item: the booster clauses that matched (their text) and the product of their weights."""
    if campaign is None or not campaign.boosters.strip() or not ids:
        return [([], 1.0) for _ in ids]
    from api.serving import request_context  # the facade's context builder (same one the list used)

    engine = svc.catalog_view.engine
    plan = engine.compile_boosters(campaign.boosters)
    ctx = request_context(svc, inputs)
    idx = svc.catalog_view.index.lookup(ids)
    texts = ["BOOST" + t for t in re.split(r"(?i)\bBOOST\b", campaign.boosters)[1:]]
    if len(texts) != len(plan.clauses):
        texts = [f"BOOST {w} (clause {k + 1})" for k, (w, _) in enumerate(plan.clauses)]
    matched = np.zeros((len(plan.clauses), len(ids)), dtype=bool)
    for k, (_, condition) in enumerate(plan.clauses):  # what each clause selects, whatever its weight (BOOST 1 too)
        matched[k] = candidates_mask(evaluate(condition, svc.catalog_view.index, ctx), idx)
    total = engine.boost(campaign.boosters, ctx, idx)
    return [([texts[k].strip() for k in np.flatnonzero(matched[:, j])], float(total[j])) for j in range(len(ids))]


def explain_items(svc: Services, campaign: Campaign | None, arm: str | None, strategy: str, inputs: Inputs,
                  items: list[dict[str, Any]], top: int = 3) -> list[dict[str, Any]]:
    """One explanation per served item (same order as ``items``).

    Parameters
    ----------
    campaign : Campaign or None
        None for a request without a campaign (the user's published top-N).
    arm, strategy : str
        The arm the optimizer chose and its strategy (items marked ``fallback`` came from the
        campaign's fallback strategy instead).
    items : list of dict
        The served items (``item_id``, ``score``, optional ``fallback``).
    """
    version = svc.models.current()
    ids = [str(i["item_id"]) for i in items]
    boosts = _boosters(svc, campaign, inputs, ids)
    by_strategy: dict[str, tuple[dict[str, list], str | None, str]] = {}
    for s in {strategy} | ({campaign.fallback} if campaign is not None else set()):
        hist = _history(svc, s, inputs)
        if hist is None:
            by_strategy[s] = ({}, None, _BASIS.get(s, "the strategy's own score"))
        elif version is not None and supports_contributions(version.model):
            contrib = history_contributions(version.model, version.item_index, hist[0], ids, top)
            by_strategy[s] = ({k: [dataclasses.asdict(c) for c in v] for k, v in contrib.items()}, None, hist[1])
        elif version is not None and supports_modalities(version.model):
            contrib = modality_contributions(version.model, version.item_index, hist[0], ids)
            by_strategy[s] = ({k: [dataclasses.asdict(c) for c in v[:top]] for k, v in contrib.items()}, None,
                              hist[1] + " (per-modality sketch contributions)")
        else:
            model = "no model version" if version is None else type(version.model).__name__
            by_strategy[s] = ({}, f"{model} exposes no per-item score decomposition", hist[1])
    out = []
    for j, item in enumerate(items):
        s = campaign.fallback if (item.get("fallback") and campaign is not None) else strategy
        contrib, reason, basis = by_strategy[s]
        clauses, mult = boosts[j]
        out.append({
            "item_id": ids[j], "arm": arm, "scenario": campaign.scenario if campaign else "personalized",
            "strategy": s, "fallback": bool(item.get("fallback")),
            "filter": (campaign.filter or None) if campaign else None,
            "boosters": clauses, "boost": mult, "basis": basis,
            "contributions": contrib.get(ids[j], []), **({"no_contributions": reason} if reason else {}),
            "model_version": version.version if version else None,
        })
    return out
