"""The EMDE + session-kNN fusion: its features by hand, and repeat consumption learned from data."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp

from models.base import Histories, InteractionLog, whole_epochs
from models.emde.readout import BucketReadout
from models.errors import ModelFormatError
from models.hybrid import (
    BASE_FEATURES,
    DEFAULT_LISTS,
    EMDE_EPOCH_EXAMPLES,
    SessionFusion,
    _ItemStats,
    _StagedBar,
    candidate_features,
    feature_names,
)
from models.registry import create_model


def test_features_by_hand() -> None:
    # one query: history 1, 2, 1 (item 1 repeated, newest last); 5 items
    h = Histories.from_lists([[1, 2, 1]])
    lp = np.log(np.array([[0.1, 0.2, 0.4, 0.25, 0.05]], np.float32))
    knn = [(np.array([[3, 1, -1]], np.int32), np.array([[2.0, 0.5, -np.inf]], np.float32))]
    # transitions: 1 -> 3 twice, 1 -> 2 once; 3 -> 1 once
    t = sp.csr_array((np.array([2.0, 1.0, 1.0], np.float32), (np.array([1, 1, 3]), np.array([3, 2, 1]))), shape=(5, 5))
    recent = np.log1p(np.array([[0, 1, 0, 2, 0], [0, 3, 1, 2, 0]], np.float32))
    since = np.log1p(np.array([[9, 0, 4, 1, 9], [9, 8, 4, 6, 9]], np.float32))
    # rules (rows sum to 1): 1 -> 3 (0.75), 1 -> 2 (0.25); 2 -> 3 (1.0)
    rules = sp.csr_array((np.array([0.25, 0.75, 1.0], np.float32), (np.array([1, 1, 2]), np.array([2, 3, 3]))),
                         shape=(5, 5))
    # co-occurrence cosine (symmetric, 1 on the diagonal): 1~2 0.4, 1~3 0.5, 2~3 0.2
    c = np.eye(5, dtype=np.float32)
    c[1, 2] = c[2, 1] = 0.4
    c[1, 3] = c[3, 1] = 0.5
    c[2, 3] = c[3, 2] = 0.2
    repeat_rate = np.array([0.5, 0.25, 0.1, 0.6, 0.5], np.float32)
    stats = _ItemStats(np.log1p(np.array([0, 4, 1, 2, 0], np.float32)), t, recent, since, rules, sp.csr_array(c),
                       repeat_rate)
    emde = BucketReadout(lp, np.arange(5, dtype=np.int32)[:, None])  # one output row: the scores are lp
    rows, items, x = candidate_features(h, emde, knn, stats, n_candidates=2)
    names = feature_names(["stan"])
    assert x.shape == (len(items), len(names)) and len(names) == len(BASE_FEATURES) + 3 + 2
    # pool: EMDE's top 2 (2, 3), the kNN list (3, 1), the history (1, 2)
    assert rows.tolist() == [0, 0, 0] and items.tolist() == [1, 2, 3]
    f = {n: x[:, j] for j, n in enumerate(names)}
    np.testing.assert_allclose(f["emde_log_prob"], np.log([0.2, 0.4, 0.25]) - np.log(0.4), rtol=1e-5)
    assert f["emde_rank"].tolist() == [2, 0, 1]  # 1 is not in EMDE's top 2: rank = n_candidates
    assert f["history_count"].tolist() == [2, 1, 0]
    assert f["history_age"].tolist() == [0, 1, 99]  # 1 is the last item, 2 the one before
    np.testing.assert_allclose(f["transition_from_last"], [0.0, 1 / 3, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(f["transition_to_last"], [0.0, 0.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(f["stan_score"], [0.25, 0.0, 1.0])
    assert f["stan_rank"].tolist() == [1, 3, 0] and f["stan_best_score"].tolist() == [2, 2, 2]
    assert f["history_length"].tolist() == [3, 3, 3]
    np.testing.assert_allclose(f["recent_popularity"], np.log1p([1, 0, 2]), rtol=1e-6)
    np.testing.assert_allclose(f["recent_popularity_10"], np.log1p([3, 1, 2]), rtol=1e-6)
    np.testing.assert_allclose(f["events_since_last_seen"], np.log1p([0, 4, 1]), rtol=1e-6)
    np.testing.assert_allclose(f["events_since_first_seen"], np.log1p([8, 4, 6]), rtol=1e-6)
    # the item before the last is 2: 2 -> ? has no transitions
    np.testing.assert_allclose(f["transition_from_prev"], [0.0, 0.0, 0.0])
    # rules from the last item 1 (weight 1), from 2 (0.7) and from the first 1 (0.49)
    np.testing.assert_allclose(f["sequential_rules"], [0.0, 1.49 * 0.25, 1.49 * 0.75 + 0.7 * 1.0], rtol=1e-5)
    np.testing.assert_allclose(f["cooc_last"], [1.0, 0.4, 0.5], rtol=1e-6)
    # the same weights: item 1 (1 + 0.49), item 2 (0.7)
    np.testing.assert_allclose(f["cooc_history"], [1.49 + 0.7 * 0.4, 1.49 * 0.4 + 0.7, 1.49 * 0.5 + 0.7 * 0.2], rtol=1e-5)
    np.testing.assert_allclose(f["item_repeat_rate"], [0.25, 0.1, 0.6])
    np.testing.assert_allclose(f["session_distinct_ratio"], [2 / 3] * 3, rtol=1e-6)  # items 1, 2 in 3 events


def test_list_features_of_every_pooled_pair_in_a_batch() -> None:
    """Ranks and scores of each ranked list, for a batch with padded, empty and overlapping lists:
    each pooled pair gets its position in the list (``n_candidates`` when absent) and its score over
    the list's best (0 when absent), whichever query it belongs to."""
    rng = np.random.default_rng(4)
    n_items, q = 30, 6
    h = Histories.from_lists([rng.integers(0, n_items, size=int(rng.integers(0, 6))).tolist() for _ in range(q)])
    lp = np.log(rng.dirichlet(np.ones(n_items), size=q)).astype(np.float32)
    emde = BucketReadout(lp, np.arange(n_items, dtype=np.int32)[:, None])
    lists = []
    for width in (4, 7):
        ids = np.full((q, width), -1, np.int32)
        scores = np.full((q, width), -np.inf, np.float32)
        for r in range(q - 1):  # the last query's lists are empty
            m = int(rng.integers(1, width + 1))
            ids[r, :m] = rng.choice(n_items, size=m, replace=False)
            scores[r, :m] = np.sort(rng.uniform(0.1, 3.0, size=m))[::-1]
        lists.append((ids, scores))
    stats = _ItemStats(np.zeros(n_items, np.float32), sp.csr_array((n_items, n_items), dtype=np.float32),
                       np.zeros((2, n_items), np.float32), np.zeros((2, n_items), np.float32),
                       sp.csr_array((n_items, n_items), dtype=np.float32), sp.csr_array((n_items, n_items), dtype=np.float32),
                       np.zeros(n_items, np.float32))
    rows, items, x = candidate_features(h, emde, lists, stats, n_candidates=5)
    top = np.argsort(-lp, axis=1, kind="stable")[:, :5]
    for p, (r, it) in enumerate(zip(rows.tolist(), items.tolist(), strict=True)):
        where = np.flatnonzero(top[r] == it)
        assert x[p, 1] == (where[0] if len(where) else 5)
        for j, (ids, scores) in enumerate(lists):
            col = len(BASE_FEATURES) + 3 * j
            where = np.flatnonzero(ids[r] == it)
            best = scores[r, 0] if ids[r, 0] >= 0 else 0.0
            assert x[p, col + 1] == (where[0] if len(where) else max(5, ids.shape[1]))
            assert x[p, col] == (np.float32(scores[r, where[0]] / max(best, 1e-12)) if len(where) else 0.0)
            assert x[p, col + 2] == best
    pooled = set(zip(rows.tolist(), items.tolist(), strict=True))
    for ids in [top, *(lst[0] for lst in lists)]:
        assert {(r, int(i)) for r in range(q) for i in ids[r] if i >= 0} <= pooled


def test_history_candidates_pool_only_the_newest_positions() -> None:
    """``history_candidates=2`` pools the items of the newest two positions; an older history item
    enters only when a model lists it, and is then still described by its count and age."""
    n_items = 8
    h = Histories.from_lists([[5, 6, 7, 1, 2]])  # newest last: 2 (age 0), 1 (age 1), 7, 6, 5
    lp = np.log(np.full((1, n_items), 1.0 / n_items, np.float32))
    emde = BucketReadout(lp, np.arange(n_items, dtype=np.int32)[:, None])
    knn = [(np.array([[6, 0]], np.int32), np.array([[1.0, 0.5]], np.float32))]  # lists the old item 6
    z = np.zeros(n_items, np.float32)
    empty = sp.csr_array((n_items, n_items), dtype=np.float32)
    stats = _ItemStats(z, empty, np.zeros((2, n_items), np.float32), np.zeros((2, n_items), np.float32), empty, empty, z)
    _, all_items, _ = candidate_features(h, emde, knn, stats, n_candidates=1)
    rows, items, x = candidate_features(h, emde, knn, stats, n_candidates=1, history_candidates=2)
    assert all_items.tolist() == [0, 1, 2, 5, 6, 7]  # EMDE's top 1 (0), the list (6, 0), every history item
    assert items.tolist() == [0, 1, 2, 6]  # 5 and 7 are older than two positions and listed by no model
    names = feature_names(["stan"])
    assert x[:, names.index("history_age")].tolist() == [99, 1, 0, 3]
    assert x[:, names.index("history_count")].tolist() == [0, 1, 1, 1]
    with pytest.raises(ValueError, match="history_candidates"):
        SessionFusion(history_candidates=-1).fit(InteractionLog(
            session_idx=np.array([0, 0], np.int32), item_idx=np.array([0, 1], np.int32), ts=np.array([1.0, 2.0]),
            n_items=2))


def test_item_stats_from_a_log_by_hand() -> None:
    """Two sessions in time order: (0, 1, 2) then (1, 3); item 4 never occurs."""
    log = InteractionLog(session_idx=np.array([0, 0, 0, 1, 1], np.int32), item_idx=np.array([0, 1, 2, 1, 3], np.int32),
                         ts=np.array([1.0, 2.0, 3.0, 10.0, 11.0]), n_items=5)
    st = _ItemStats.from_log(log)
    # the newest 1 % and 10 % of 5 events: the newest one (item 3)
    np.testing.assert_allclose(st.recent, np.log1p([[0, 0, 0, 1, 0], [0, 0, 0, 1, 0]]), rtol=1e-6)
    # events after the newest / the first occurrence (an absent item: all 5 since it was seen, and new)
    np.testing.assert_allclose(st.since_seen, np.log1p([[4, 1, 2, 0, 5], [4, 3, 2, 0, 0]]), rtol=1e-6)
    # rules: 0 -> 1 (1), 0 -> 2 (1/2), 1 -> 2 (1), 1 -> 3 (1); rows normalised
    want = np.zeros((5, 5), np.float32)
    want[0, 1], want[0, 2], want[1, 2], want[1, 3] = 2 / 3, 1 / 3, 0.5, 0.5
    np.testing.assert_allclose(st.rules.toarray(), want, rtol=1e-6)
    assert st.transitions.toarray()[0, 1] == 1 and st.transitions.toarray()[1, 3] == 1
    # co-occurrence: item 1 is in both sessions, the others in one; cosine = shared / sqrt(n_a * n_b)
    want = np.diag([1.0, 1.0, 1.0, 1.0, 0.0]).astype(np.float32)
    want[0, 1] = want[1, 0] = want[1, 2] = want[2, 1] = want[1, 3] = want[3, 1] = 1 / np.sqrt(2)
    want[0, 2] = want[2, 0] = 1.0
    np.testing.assert_allclose(st.cooc.toarray(), want, rtol=1e-6)
    # repeat rate (r + 1) / (o + 2): no item repeats within a session; item 1 occurs twice
    np.testing.assert_allclose(st.repeat_rate, [1 / 3, 1 / 4, 1 / 3, 1 / 3, 1 / 2], rtol=1e-6)
    again = InteractionLog(session_idx=np.array([0, 0, 0, 1], np.int32), item_idx=np.array([2, 2, 2, 2], np.int32),
                           ts=np.array([1.0, 2.0, 3.0, 4.0]), n_items=3)
    np.testing.assert_allclose(_ItemStats.from_log(again).repeat_rate, [1 / 2, 1 / 2, 3 / 6], rtol=1e-6)


def test_rule_top_lists_the_best_sequential_rule_scores_by_hand() -> None:
    """The optional fourth candidate source (``rule_candidates``): rules of the log above."""
    log = InteractionLog(session_idx=np.array([0, 0, 0, 1, 1], np.int32), item_idx=np.array([0, 1, 2, 1, 3], np.int32),
                         ts=np.array([1.0, 2.0, 3.0, 10.0, 11.0]), n_items=5)
    st = _ItemStats.from_log(log)
    # history (0): 0 -> 1 (2/3), 0 -> 2 (1/3); history (0, 1): 1 -> 2, 3 (1/2 each) + 0.7 x the rules of 0
    ids, scores = st.rule_top(Histories.from_lists([[0], [0, 1], [4]]), 3)
    assert ids.tolist() == [[1, 2, -1], [2, 3, 1], [-1, -1, -1]]
    np.testing.assert_allclose(scores, [[2 / 3, 1 / 3, 0], [0.5 + 0.7 / 3, 0.5, 0.7 * 2 / 3], [0, 0, 0]], rtol=1e-6)


def _repeat_log(seed: int = 0, n_sessions: int = 600) -> InteractionLog:
    """Sessions that come back to their first item: a, x, a, y, a (a random, x/y random others)."""
    rng = np.random.default_rng(seed)
    sess, items, ts = [], [], []
    for s in range(n_sessions):
        a = int(rng.integers(0, 20))
        others = rng.choice([i for i in range(20) if i != a], size=2, replace=False)
        for j, it in enumerate([a, int(others[0]), a, int(others[1]), a]):
            sess.append(s)
            items.append(it)
            ts.append(1_400_000_000.0 + 600.0 * s + 10.0 * j)
    return InteractionLog(session_idx=np.array(sess, np.int32), item_idx=np.array(items, np.int32),
                          ts=np.array(ts), n_items=20)


def test_repeat_consumption_is_learned() -> None:
    """After a, x the next item is a again: the ranker must learn it from the held-out sessions."""
    model = SessionFusion(knn={"stan": {"k": 50, "sample_size": 200}}, emde={"epochs": 1, "progress": False},
                          holdout_frac=0.3, n_trees=30, min_data_in_leaf=10).fit(_repeat_log())
    rng = np.random.default_rng(1)
    firsts = rng.integers(0, 20, size=50)
    hist = Histories.from_lists([[int(a), int((a + 7) % 20)] for a in firsts])
    ids, _ = model.recommend(hist, 5)
    assert (ids[:, 0] == firsts).mean() >= 0.9


def test_rule_candidates_add_a_ranked_list_with_its_own_features() -> None:
    model = SessionFusion(knn={"stan": {"k": 50, "sample_size": 200}}, emde={"epochs": 1, "progress": False},
                          holdout_frac=0.3, n_trees=10, min_data_in_leaf=10, rule_candidates=5).fit(_repeat_log())
    assert model.ranker_.feature_name() == feature_names(["stan"], True)
    ids, _ = model.recommend(Histories.from_lists([[3, 10]]), 5)
    assert ids[0, 0] == 3  # repeat consumption still learned with the extra list


def test_a_model_saved_without_the_repeat_rates_asks_to_be_trained_again(tmp_path) -> None:
    """Fusion models saved before the repeat-consumption features lack ``repeat_rate``: a clear error."""
    model = SessionFusion(knn={"stan": {"k": 50, "sample_size": 200}}, emde={"epochs": 1, "progress": False},
                          holdout_frac=0.3, n_trees=5, min_data_in_leaf=10, refit_emde=False).fit(_repeat_log())
    model.save(tmp_path / "m")
    back = SessionFusion.load(tmp_path / "m")
    np.testing.assert_array_equal(back.stats_.repeat_rate, model.stats_.repeat_rate)
    hist = Histories.from_lists([[3, 10], [5]])
    np.testing.assert_array_equal(back.recommend(hist, 5)[0], model.recommend(hist, 5)[0])
    arrays = dict(np.load(tmp_path / "m" / "arrays.npz"))
    del arrays["repeat_rate"]
    np.savez(tmp_path / "m" / "arrays.npz", **arrays)
    with pytest.raises(ModelFormatError, match="no repeat_rate.*train it again"):
        SessionFusion.load(tmp_path / "m")


def test_staged_bar_advances_a_chunk_stage_by_stage() -> None:
    """Trial 13, D9: one large chunk of ranker examples no longer sits at 0 % until its end."""
    bar = _StagedBar(13, "examples", ["sketches", "readout", "stan lists", "features"])
    seen = []
    for size in (10, 3):
        bar.chunk(size)
        for _ in range(4):
            bar.stage_done()
            seen.append(bar.bar.n)
    bar.close()
    assert seen == [2, 5, 7, 10, 10, 11, 12, 13]


def test_fit_shows_examples_and_boosting_progress_and_the_model_is_unchanged(capsys, monkeypatch) -> None:
    """The bars count prefixes and boosting rounds; the fit is bit for bit the one without them."""
    import lightgbm as lgb

    params = dict(knn={"stan": {"k": 50, "sample_size": 200}}, emde={"epochs": 1, "progress": False},
                  holdout_frac=0.3, n_trees=7, min_data_in_leaf=10, refit_emde=False)
    model = SessionFusion(**params).fit(_repeat_log())
    err = capsys.readouterr().err
    assert "fusion: ranker boosting: 100%" in err and "7/7" in err, err
    done = re.search(r"fusion: ranker examples: 100%\S* *\S* (\d+)/(\d+) \[[^]]*prefix/s", err)
    assert done is not None and done[1] == done[2] and int(done[1]) > 0, err
    train = lgb.train
    monkeypatch.setattr(lgb, "train", lambda p, data, callbacks=None: train(p, data))  # no progress callback
    monkeypatch.setattr("models.hybrid._StagedBar.stage_done", lambda self: None)
    quiet = SessionFusion(**params).fit(_repeat_log())
    assert quiet.ranker_.model_to_string() == model.ranker_.model_to_string()
    hist = Histories.from_lists([[3, 10], [5], [1, 2, 3]])
    for a, b in zip(quiet.recommend(hist, 5), model.recommend(hist, 5), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_gru4rec_list_is_refitted_on_the_whole_log_and_reloaded_to_the_same_lists(tmp_path) -> None:
    """GRU4Rec as a list model (as in :data:`DEFAULT_LISTS`): its features follow the kNN's, the served GRU
    is fitted on the whole log (more training examples than the held-out log's), saved and reloaded."""
    gru = {"d": 16, "epochs": 3, "batch_size": 64, "n_sample": 16, "progress": False}
    log = _repeat_log()
    model = SessionFusion(knn={"stan": {"k": 50, "sample_size": 200}, "gru4rec": gru},
                          emde={"epochs": 1, "progress": False}, holdout_frac=0.3, n_trees=10, min_data_in_leaf=10,
                          refit_emde=False).fit(log)
    served = model.knn_[1]
    assert model.ranker_.feature_name() == feature_names(["stan", "gru4rec"])
    assert served.n_examples_ == log.n_events - log.n_sessions  # every (prefix -> next) pair of the whole log
    model.save(tmp_path / "m")
    back = SessionFusion.load(tmp_path / "m")
    hist = Histories.from_lists([[3, 10], [5], [1, 2, 3]])
    for a, b in zip(back.recommend(hist, 5), model.recommend(hist, 5), strict=True):
        np.testing.assert_array_equal(a, b)
    ids, _ = model.recommend(Histories.from_lists([[3, 10]]), 5)
    assert ids[0, 0] == 3  # repeat consumption still learned with the GRU list


def test_the_default_lists_are_the_two_stans_and_gru4rec() -> None:
    assert list(SessionFusion()._knn_params()) == ["vstan", "stan", "gru4rec"]
    assert SessionFusion()._knn_params()["gru4rec"]["epoch_examples"] == DEFAULT_LISTS["gru4rec"]["epoch_examples"]
    gru = create_model("gru4rec", **SessionFusion()._knn_params()["gru4rec"])
    # 3 networks on rsc15's 47k examples; one on yoochoose's 326k, retailrocket's 507k and 560k, the issue's 700k
    assert [gru.n_networks(n) for n in (46_717, 326_000, 507_279, 560_000, 700_000)] == [3, 1, 1, 1, 1]


def test_the_fusions_emde_trains_fewer_whole_epochs_on_a_large_log() -> None:
    params = SessionFusion()._emde_params()
    assert params["epoch_examples"] == EMDE_EPOCH_EXAMPLES == 1_000_000
    assert [whole_epochs(params["epochs"], params["epoch_examples"], n) for n in (52_484, 465_183, 507_279, 700_000)] == [
        3, 3, 2, 2]  # rsc15, UCI's whole log, retailrocket's held-out log, the 700k prefixes
    assert SessionFusion(emde={"epoch_examples": None})._emde_params()["epoch_examples"] is None


def test_the_whole_log_list_fit_in_a_child_process_gives_the_same_models_bit_for_bit() -> None:
    """``child_refit_events``: the list models' whole-log fit in a child process (:mod:`models.background_fit`)
    gives the GRU's weights, the lists and the fusion's answers of the fit in this process, exactly."""
    gru = {"d": 16, "epochs": 2, "batch_size": 64, "n_sample": 16, "progress": False}
    log = _repeat_log()
    params = dict(knn={"stan": {"k": 50, "sample_size": 200}, "gru4rec": gru}, emde={"epochs": 1, "progress": False},
                  holdout_frac=0.3, n_trees=10, min_data_in_leaf=10, refit_emde=False)
    here = SessionFusion(**params, child_refit_events=None).fit(log)
    child = SessionFusion(**params, child_refit_events=0).fit(log)
    for name in ("item_emb", "item_bias"):
        a, b = getattr(here.knn_[1].net_, name).detach().numpy(), getattr(child.knn_[1].net_, name).detach().numpy()
        assert a.tobytes() == b.tobytes()
    assert here.knn_[1].train_loss_ == child.knn_[1].train_loss_
    hist = Histories.from_lists([[3, 10], [5], [1, 2, 3], [7, 7, 8]])
    for a, b in zip(here.recommend(hist, 10), child.recommend(hist, 10), strict=True):
        assert a.tobytes() == b.tobytes()
