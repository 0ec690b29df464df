"""SLIST (models/slist.py) against its closed form written out plainly, plus its coverage cap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.base import Histories, InteractionLog
from models.errors import ModelFormatError
from models.slist import SLIST


def _log(seed: int = 0, n_sessions: int = 60, n_items: int = 9) -> InteractionLog:
    rng = np.random.default_rng(seed)
    sess, items, ts = [], [], []
    for s in range(n_sessions):
        for j in range(int(rng.integers(1, 7))):
            sess.append(s)
            items.append(int(rng.integers(0, n_items)))
            ts.append(1.6e9 + 3_600.0 * s + j)
    return InteractionLog(session_idx=np.array(sess, np.int32), item_idx=np.array(items, np.int32),
                          ts=np.array(ts), n_items=n_items)


def _reference(log: InteractionLog, alpha: float, lam: float, pos_decay: float, window: int,
               decay_days: float | None) -> np.ndarray:
    """The closed form with every matrix built row by row in float64 (all items covered)."""
    n = log.n_items
    bounds = log.session_bounds()
    seqs = [log.item_idx[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]
    ends = np.array([log.ts[bounds[i + 1] - 1] for i in range(len(seqs))])
    ws = np.ones(len(seqs)) if decay_days is None else np.exp(-(ends.max() - ends) / (decay_days * 86_400.0))
    x_rows, x_w, s_rows, t_rows, st_w = [], [], [], [], []
    for seq, w in zip(seqs, ws, strict=True):
        x = np.zeros(n)
        x[seq] = 1.0
        x_rows.append(x)
        x_w.append(w)
        for split in range(1, len(seq)):
            s, t = np.zeros(n), np.zeros(n)
            for j in range(max(0, split - window), split):
                s[seq[j]] += np.exp(-(split - 1 - j) / pos_decay)
            for j in range(split, min(len(seq), split + window)):
                t[seq[j]] += np.exp(-(j - split) / pos_decay)
            s_rows.append(s)
            t_rows.append(t)
            st_w.append(w)
    xm, sm, tm = np.array(x_rows), np.array(s_rows), np.array(t_rows)
    wx, wst = np.diag(x_w), np.diag(st_w)
    a = alpha * xm.T @ wx @ xm + (1 - alpha) * sm.T @ wst @ sm + lam * np.eye(n)
    return np.linalg.solve(a, alpha * xm.T @ wx @ xm + (1 - alpha) * sm.T @ wst @ tm)


@pytest.mark.parametrize(("alpha", "lam", "pos_decay", "window", "decay_days"),
                         [(0.5, 10.0, 1.0, 10, None), (0.2, 3.0, 2.0, 2, 0.5), (1.0, 1.0, 1.0, 10, None),
                          (0.0, 50.0, 0.7, 3, 2.0)])
def test_weights_equal_the_closed_form(alpha: float, lam: float, pos_decay: float, window: int,
                                       decay_days: float | None) -> None:
    log = _log()
    model = SLIST(alpha=alpha, lambda_=lam, pos_decay=pos_decay, window=window,
                  session_decay_days=decay_days).fit(log)
    assert model.covered_.tolist() == list(range(log.n_items))
    np.testing.assert_allclose(model.weights_, _reference(log, alpha, lam, pos_decay, window, decay_days),
                               rtol=2e-4, atol=2e-5)


def test_scores_decay_with_age_and_rank_the_next_item() -> None:
    walk = [0, 1, 2, 3, 4]  # every session walks these in order
    n_s = 50
    log = InteractionLog(session_idx=np.repeat(np.arange(n_s), len(walk)).astype(np.int32),
                         item_idx=np.tile(walk, n_s).astype(np.int32), ts=np.arange(n_s * len(walk), dtype=float),
                         n_items=6)
    model = SLIST(alpha=0.0, lambda_=1.0, infer_decay=0.5).fit(log)
    ids, scores = model.recommend(Histories.from_lists([[0, 1], [2], [5], []]), 3)
    assert ids[0, 0] == 2 and ids[1, 0] == 3           # the item after the newest one comes first
    x = np.zeros(6)
    x[[0, 1]] = [np.exp(-1 / 0.5), 1.0]                # the newest item weighs 1, the one before exp(-1/0.5)
    full = x @ np.pad(model.weights_, ((0, 1), (0, 1)))   # item 5 never occurs: not covered
    assert scores[0, 0] == pytest.approx(full[2], rel=1e-5)
    assert (ids[2] == -1).all() and (ids[3] == -1).all()   # only uncovered items / nothing: no list
    assert np.isneginf(scores[2]).all()


def test_max_items_covers_the_most_frequent(tmp_path: Path) -> None:
    log = _log(seed=3)
    counts = np.bincount(log.item_idx, minlength=log.n_items)
    model = SLIST(max_items=4).fit(log)
    expected = np.sort(np.lexsort((np.arange(log.n_items), -counts))[:4])
    assert model.covered_.tolist() == expected.tolist() and model.weights_.shape == (4, 4)
    hist = Histories.from_lists([[int(i) for i in range(log.n_items)], [0, 3]])
    ids, _ = model.recommend(hist, log.n_items)
    assert set(ids[ids >= 0].tolist()) <= set(expected.tolist())
    model.save(tmp_path / "m")
    again = SLIST.load(tmp_path / "m")
    assert again.get_params() == model.get_params()
    np.testing.assert_array_equal(again.recommend(hist, 5)[0], model.recommend(hist, 5)[0])


def test_bad_parameters_and_directories_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="alpha"):
        SLIST(alpha=1.5).fit(_log())
    with pytest.raises(ValueError, match="window"):
        SLIST(window=0).fit(_log())
    single = InteractionLog(session_idx=np.arange(3, dtype=np.int32), item_idx=np.array([0, 1, 2], np.int32),
                            ts=np.arange(3.0), n_items=3)
    with pytest.raises(ValueError, match="two or more events"):
        SLIST().fit(single)
    with pytest.raises(ModelFormatError, match="not a SLIST model directory"):
        SLIST.load(tmp_path)


def test_similar_items_reads_the_weight_rows() -> None:
    log = _log(seed=5)
    model = SLIST(max_items=6).fit(log)
    uncovered = int(np.setdiff1d(np.arange(log.n_items), model.covered_)[0])
    probe = np.array([model.covered_[0], model.covered_[3], uncovered], np.int32)
    ids, scores = model.similar_items(probe, 3)
    for row, item in enumerate(probe[:2]):
        w = model.weights_[int(np.searchsorted(model.covered_, item))].copy()
        w[int(np.searchsorted(model.covered_, item))] = -np.inf
        best = model.covered_[np.lexsort((np.arange(len(w)), -w))[:3]]
        assert ids[row].tolist() == best.tolist() and item not in ids[row]
    assert (ids[2] == -1).all() and np.isneginf(scores[2]).all()
