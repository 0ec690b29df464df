"""Boosters: ``BOOST 1.5 IF brand == "Acme"`` -> per-candidate score multipliers (float32)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from api.iql.context import RequestContext
from api.iql.evaluate import candidates_mask, evaluate
from api.iql.index import CatalogIndex
from api.iql.plan import BoosterPlan

__all__ = ["MAX_MULTIPLIER", "boost_multipliers"]

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
        1.0 where no clause matches, at most ``MAX_MULTIPLIER``; multiply the candidates' scores by it.
    """
    cand = np.asarray(candidates)
    multipliers = np.ones(cand.shape[0], dtype=np.float32)
    for weight, condition in plan.clauses:
        matched = candidates_mask(evaluate(condition, index, context), cand)
        multipliers[matched] = np.minimum(multipliers[matched] * np.float32(weight), np.float32(MAX_MULTIPLIER))
    return multipliers
