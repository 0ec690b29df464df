"""Boosters: per-candidate float32 multipliers from BOOST clauses."""

from __future__ import annotations

import numpy as np
import pytest

from api.iql import CatalogIndex, IQLEngine, IQLError, RequestContext
from api.iql.booster import MAX_MULTIPLIER


@pytest.fixture
def engine() -> IQLEngine:
    return IQLEngine(
        CatalogIndex.build(
            [
                {"item_id": "a", "brand": "Acme", "price": 10},
                {"item_id": "b", "brand": "Bolt", "price": 150},
                {"item_id": "c", "brand": "Acme", "price": 200},
                {"item_id": "d", "brand": "Acme", "price": 5, "hidden": True},
            ]
        )
    )


def test_single_clause(engine: IQLEngine) -> None:
    cand = engine.index.lookup(["b", "a", "c"])
    out = engine.boost('BOOST 1.5 IF brand == "Acme"', RequestContext(), cand)
    assert out.dtype == np.float32 and out.tolist() == [1.0, 1.5, 1.5]


def test_clauses_multiply_and_unknown_or_hidden_candidates_get_one(engine: IQLEngine) -> None:
    cand = engine.index.lookup(["a", "b", "c", "zz", "d"])
    text = 'BOOST 1.5 IF brand == "Acme"\nBOOST 0.5 IF price > $cap'
    out = engine.boost(text, RequestContext(params={"cap": 100}), cand)
    assert out.tolist() == [1.5, 0.5, 0.75, 1.0, 1.0]


def test_booster_with_context(engine: IQLEngine) -> None:
    ctx = engine.context(item_id="b")
    out = engine.boost(
        "BOOST 2 IF brand == context.item.brand BOOST 0 IF price < 20", ctx, engine.index.lookup(["a", "b"])
    )
    assert out.tolist() == [0.0, 2.0]


def test_empty_candidates(engine: IQLEngine) -> None:
    assert engine.boost(
        'BOOST 2 IF brand == "Acme"', RequestContext(), np.zeros(0, dtype=np.int64)
    ).shape == (0,)


def test_booster_errors_are_caught_at_save_time(engine: IQLEngine) -> None:
    with pytest.raises(IQLError, match="column 14: expected an attribute of the catalogue"):
        engine.validate_boosters('BOOST 1.5 IF colour == "red"')
    with pytest.raises(IQLError, match="expected 'IF' after '1.5', found 'WHEN'"):
        engine.validate_boosters('BOOST 1.5 WHEN brand == "Acme"')


def test_the_product_of_weights_stays_finite(engine: IQLEngine) -> None:
    """Seven clauses of 1e6 made inf in float32 (a null ``boost`` in explanations), and a later ``BOOST 0`` NaN."""
    cand = engine.index.lookup(["a", "b", "c"])
    text = 'BOOST 1e6 IF brand == "Acme" ' * 60 + "BOOST 0 IF price > 100"
    out = engine.boost(text, RequestContext(), cand)
    assert np.isfinite(out).all() and out.tolist() == [float(np.float32(MAX_MULTIPLIER)), 0.0, 0.0]


def test_boosted_scores_raise_and_lower_whatever_the_sign() -> None:
    """The package's documented use (``boosted_scores(scores, engine.boost(...))``): a multiplier above 1 raises a
    negative score too (it is divided), below 1 lowers it, 0 gives a score >= 0 zero and a negative one the lowest
    finite number."""
    from api.iql import boosted_scores

    got = boosted_scores(np.array([0.5, -0.5, -0.5, -0.5, 0.5, 0.0]), np.array([10.0, 10.0, 0.5, 0.0, 0.0, 3.0]))
    assert got.tolist() == [5.0, -0.05, -1.0, -np.finfo(np.float64).max, 0.0, 0.0]
    assert np.isfinite(got).all()
