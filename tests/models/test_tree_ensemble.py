"""The compiled tree walk scores exactly as LightGBM's own ``Booster.predict``."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from models.tree_ensemble import TreeEnsemble


def _booster(x: np.ndarray, y: np.ndarray, **params: object) -> lgb.Booster:
    base = {"objective": "regression", "num_leaves": 15, "min_data_in_leaf": 5, "verbose": -1,
            "deterministic": True, "num_threads": 1, "seed": 0}
    return lgb.train({**base, **params}, lgb.Dataset(x, y), num_boost_round=30)


def _data(rng: np.random.Generator, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, 6)).astype(np.float32)
    x[:, 2] = np.round(x[:, 2])  # many ties and zeros: thresholds between repeated values
    x[rng.random(n) < 0.2, 3] = 0.0
    y = x[:, 0] * 2 + np.sin(3 * x[:, 1]) + (x[:, 2] > 0) + rng.normal(scale=0.1, size=n)
    return x, y


def test_scores_equal_lightgbm_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    x, y = _data(rng)
    booster = _booster(x, y)
    trees = TreeEnsemble.from_booster(booster)
    test = _data(np.random.default_rng(1))[0]
    test[:5] = [1e-38, -1e-38, 0.0, np.inf, -np.inf, 3.0]  # LightGBM reads |v| <= 1e-35 as 0; infinities
    np.testing.assert_array_equal(trees.predict(test), booster.predict(test))
    # thresholds: a value equal to a split's threshold goes left, as in LightGBM
    thr = trees.threshold[np.isfinite(trees.threshold)].astype(np.float32)
    on_split = np.repeat(thr[:, None], 6, axis=1).astype(np.float32)
    np.testing.assert_array_equal(trees.predict(on_split), booster.predict(on_split))


@pytest.mark.parametrize("params", [{}, {"zero_as_missing": True}])
def test_missing_values_take_lightgbms_default_direction(params: dict) -> None:
    rng = np.random.default_rng(2)
    x, y = _data(rng)
    x[rng.random(len(x)) < 0.1, 1] = np.nan  # NaN seen in training: NaN-type splits
    booster = _booster(x, y, **params)
    trees = TreeEnsemble.from_booster(booster)
    assert (trees.missing > 0).any()
    test = _data(np.random.default_rng(3))[0]
    test[::5, 1] = np.nan
    test[::7, 0] = np.nan  # NaN where training had none: read as 0
    np.testing.assert_array_equal(trees.predict(test), booster.predict(test))


def test_one_leaf_trees_and_empty_input() -> None:
    x = np.zeros((50, 3), np.float32)
    booster = _booster(x, np.ones(50))  # nothing to split on: every tree is one leaf
    trees = TreeEnsemble.from_booster(booster)
    assert (trees.depths == 0).all()
    np.testing.assert_array_equal(trees.predict(x), booster.predict(x))
    assert trees.predict(np.zeros((0, 3), np.float32)).shape == (0,)


def test_rejects_what_it_cannot_score() -> None:
    rng = np.random.default_rng(4)
    x, y = _data(rng)
    trees = TreeEnsemble.from_booster(_booster(x, y))
    with pytest.raises(ValueError, match="float32"):
        trees.predict(x.astype(np.float64))
    with pytest.raises(ValueError, match="shape"):
        trees.predict(x[:, :3])
    multi = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1},
                      lgb.Dataset(x, rng.integers(0, 3, len(x))), num_boost_round=2)
    with pytest.raises(ValueError, match="one tree per iteration"):
        TreeEnsemble.from_booster(multi)
