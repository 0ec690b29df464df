"""Boosters: ``BOOST 1.5 IF brand == "Acme"`` -> per-candidate score multipliers (float32)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from api.iql.context import RequestContext
from api.iql.evaluate import candidates_mask, evaluate
from api.iql.index import CatalogIndex
from api.iql.plan import BoosterPlan

__all__ = ["MAX_MULTIPLIER", "boost_multipliers", "boosted_scores"]

MAX_MULTIPLIER = 1e30
"""Largest product of weights an item gets (finite in float32 and, times any score below 1e278, in float64): clauses
of up to 1e6 each made 7 matching clauses inf in float32 (52 in float64), a score times inf null in JSON, and
a later ``BOOST 0`` made it NaN (ranked last)."""


def boost_multipliers(
    plan: BoosterPlan, index: CatalogIndex, context: RequestContext, candidates: NDArray[np.integer]
) -> NDArray[np.float32]:
    """Score multipliers for ``candidates``: the product of the weights of the clauses each matches.

    Parameters
    ----------
    plan : BoosterPlan
        Compiled clauses (``IQLEngine.compile_boosters``).
    index : CatalogIndex
        The catalogue the clauses' conditions run on.
    context : RequestContext
        Request values bound into the conditions.
    candidates : ndarray of shape (n,), integer
        Candidate item_idx in ranking order; -1 (unknown item) gets multiplier 1.

    Returns
    -------
    ndarray of shape (n,), float32
        1.0 where no clause matches, at most ``MAX_MULTIPLIER``; apply it to the candidates' scores with
        :func:`boosted_scores`.
    """
    cand = np.asarray(candidates)
    multipliers = np.ones(cand.shape[0], dtype=np.float32)
    for weight, condition in plan.clauses:
        matched = candidates_mask(evaluate(condition, index, context), cand)
        multipliers[matched] = np.minimum(multipliers[matched] * np.float32(weight), np.float32(MAX_MULTIPLIER))
    return multipliers


def boosted_scores(scores: NDArray[np.floating], multipliers: NDArray[np.floating]) -> NDArray[np.float64]:
    """Scores with their boosters' multipliers applied, so that a multiplier above 1 raises an item and one below 1
    lowers it whatever its score's sign: a score >= 0 is multiplied, a negative one (a visual arm's cosine, EASE's or
    SLIST's scores) divided. Multiplied, ``BOOST 10 IF on_sale`` put the on-sale items of a list of negative scores
    last. A multiplier of 0 makes a score >= 0 zero and a negative one the lowest finite float64.

    Parameters
    ----------
    scores, multipliers : arrays of shape (n,)
        The candidates' scores and their :func:`boost_multipliers` (finite, >= 0).

    Returns
    -------
    ndarray of shape (n,), float64
    """
    scores = np.asarray(scores, dtype=np.float64)
    multipliers = np.asarray(multipliers, dtype=np.float64)
    negative = scores < 0
    out = scores * multipliers
    out[negative] = np.divide(scores[negative], multipliers[negative],
                              out=np.full(int(negative.sum()), -np.finfo(np.float64).max), where=multipliers[negative] > 0)
    return out
