"""GRU4Rec (epochs from the size of the log, scoring threads and blocks) and SASRec, its trainer with a
self-attention prefix encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.base import Histories, InteractionLog
from models.errors import ModelFormatError
from models.gru4rec import GRU4Rec
from models.sasrec import SASRec

FAST = {"d": 16, "epochs": 2, "batch_size": 32, "n_sample": 8, "progress": False}


def _walks(n_sessions: int, n_items: int = 12, seed: int = 0) -> InteractionLog:
    """Sessions walking the items in order from a random start (3..5 steps)."""
    rng = np.random.default_rng(seed)
    sess, items, ts = [], [], []
    for s in range(n_sessions):
        start = int(rng.integers(n_items))
        for j in range(int(rng.integers(3, 6))):
            sess.append(s)
            items.append((start + j) % n_items)
            ts.append(1_400_000_000.0 + 100.0 * s + j)
    return InteractionLog(session_idx=np.array(sess, np.int32), item_idx=np.array(items, np.int32),
                          ts=np.array(ts), n_items=n_items)


def test_epoch_examples_gives_large_logs_fewer_whole_epochs() -> None:
    model = GRU4Rec(epochs=10, epoch_examples=1_500_000)
    assert [model.n_epochs(n) for n in (42_000, 285_000, 456_000, 700_000, 2_000_000)] == [10, 6, 4, 3, 1]
    assert GRU4Rec(epochs=5).n_epochs(10_000_000) == 5  # None: always ``epochs``
    fitted = GRU4Rec(**{**FAST, "epochs": 4}, epoch_examples=1).fit(_walks(50))
    assert len(fitted.train_loss_) == 1
    with pytest.raises(ValueError, match="epoch_examples must be None or >= 1"):
        GRU4Rec(epoch_examples=0)._validate()



def test_scores_with_one_or_two_threads_agree_to_float_rounding() -> None:
    """``score_threads`` is speed only: a product large enough that torch splits it over both threads."""
    from models.base import Histories

    log = _walks(300, n_items=5_000, seed=1)
    one = GRU4Rec(**{**FAST, "d": 128, "epochs": 1}, score_threads=1).fit(log)
    histories = Histories(indptr=np.arange(0, 601, 3, dtype=np.int64), items=log.item_idx[:600])
    single, single_top = one.score(histories), one.recommend(histories, 20)[0]
    one.score_threads = 2
    np.testing.assert_allclose(one.score(histories), single, rtol=1e-5, atol=0)
    np.testing.assert_array_equal(one.recommend(histories, 20)[0], single_top)


def test_recommend_in_small_probability_blocks_gives_the_lists_of_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """``recommend`` cuts its batch into blocks of ``SCORE_BLOCK_CELLS`` cells (at least 64 rows): lists, scores
    and the seen-item mask are those of the whole batch's probabilities, whatever the block."""
    import models.gru4rec as gru4rec
    from models.base import Histories
    from models.topk import topk

    log = _walks(200, n_items=300, seed=2)
    model = GRU4Rec(**{**FAST, "d": 32, "epochs": 1}).fit(log)
    histories = Histories(indptr=np.arange(0, 451, 3, dtype=np.int64), items=log.item_idx[:450])  # 150 queries
    whole = model.score(histories)
    for exclude_seen in (False, True):
        monkeypatch.setattr(gru4rec, "SCORE_BLOCK_CELLS", 1 << 30)  # one block
        one_block = model.recommend(histories, 20, exclude_seen=exclude_seen)
        monkeypatch.setattr(gru4rec, "SCORE_BLOCK_CELLS", 1)  # blocks of 64, 64 and 22 rows
        blocks = model.recommend(histories, 20, exclude_seen=exclude_seen, batch_size=100)
        np.testing.assert_array_equal(blocks[0], one_block[0])
        np.testing.assert_array_equal(blocks[1], one_block[1])
        if not exclude_seen:
            want_ids, want_scores = topk(whole, 20)
            np.testing.assert_array_equal(blocks[0], want_ids)
            np.testing.assert_allclose(blocks[1], want_scores, rtol=1e-6, atol=0)
        else:
            rows = np.repeat(np.arange(150), 3)
            listed = np.zeros((150, model.n_items_), bool)
            np.put_along_axis(listed, np.maximum(blocks[0], 0).astype(np.int64), True, axis=1)
            assert not listed[rows, histories.items].any()



def test_same_seed_gives_the_same_weights_and_the_planted_next_item() -> None:
    """Every draw comes from the model's seed (torch's own initialisation and in-block dropout would use the
    global generator): two fits are equal bit for bit, and the planted walk's next item ranks first."""
    log = _walks(300)
    torch.manual_seed(1)
    a = SASRec(**{**FAST, "epochs": 6, "lr": 1e-2}).fit(log)
    torch.manual_seed(2)
    b = SASRec(**{**FAST, "epochs": 6, "lr": 1e-2}).fit(log)
    for (name, p), q in zip(a.net_.state_dict().items(), b.net_.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert a.train_loss_ == b.train_loss_ and a.train_loss_[-1] < a.train_loss_[0]
    hist = Histories(indptr=np.array([0, 2, 3], np.int64), items=np.array([3, 4, 7], np.int32))
    ids, _ = a.recommend(hist, 3)
    assert ids[:, 0].tolist() == [5, 8]


def test_position_counts_from_the_newest_item() -> None:
    """The newest item of a prefix gets position 0 whatever the prefix's length, so the encoder is not the
    GRU's and reordering a prefix changes its encoding."""
    model = SASRec(**{**FAST, "epochs": 1}).fit(_walks(100))
    net = model.net_
    with torch.no_grad():
        x = torch.tensor([[1, 2, 3]])
        inp = torch.nn.functional.embedding(x, net.item_emb)

        def through_blocks(positions: torch.Tensor) -> torch.Tensor:
            z = inp + positions
            for block in net.blocks:
                z = block(z)
            return net.out_norm(z[:, -1])

        newest_first = through_blocks(net.pos_emb[:3].flip(0))  # item 3 at position 0, item 1 at position 2
        torch.testing.assert_close(net.encode(x), newest_first)
        assert not torch.allclose(newest_first, through_blocks(net.pos_emb[:3]), atol=1e-6)
        assert not torch.allclose(net.encode(x), net.encode(torch.tensor([[3, 2, 1]])), atol=1e-6)


def test_save_load_round_trip_and_class_check(tmp_path: Path) -> None:
    log = _walks(80)
    model = SASRec(**{**FAST, "epochs": 1}, n_layers=1, n_heads=4).fit(log)
    model.save(tmp_path / "m")
    back = SASRec.load(tmp_path / "m")
    assert (back.n_layers, back.n_heads) == (1, 4)
    hist = Histories(indptr=np.array([0, 3], np.int64), items=np.array([1, 2, 3], np.int32))
    np.testing.assert_array_equal(back.score(hist), model.score(hist))
    with pytest.raises(ModelFormatError, match="class must be 'GRU4Rec'"):
        GRU4Rec.load(tmp_path / "m")


def test_heads_must_divide_d() -> None:
    with pytest.raises(ValueError, match="n_heads must divide d"):
        SASRec(**{**FAST, "d": 16}, n_heads=3).fit(_walks(10))


def test_sasrec_errors_name_sasrec() -> None:
    from models.errors import ModelFitError

    with pytest.raises(ValueError, match="^SASRec: epochs must be >= 1"):
        SASRec(epochs=0)._validate()
    one_event_sessions = InteractionLog(session_idx=np.arange(3, dtype=np.int32), item_idx=np.arange(3, dtype=np.int32),
                                        ts=np.arange(3, dtype=float), n_items=3)
    with pytest.raises(ModelFitError, match="^SASRec.fit: no session has two events"):
        SASRec(**FAST).fit(one_event_sessions)


def _same_net(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(p.detach().numpy().tobytes() == q.detach().numpy().tobytes()
               for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_an_ensemble_is_its_seeds_networks_scored_by_their_mean_logit() -> None:
    """``n_models=3``: networks m = the single model fitted with seed ``random_state + m`` (bit for bit), scored
    by the softmax of their mean logit; the lists are the ranking of the mean log-probability."""
    log = _walks(120, n_items=30, seed=3)
    ens = GRU4Rec(**FAST, n_models=3, random_state=5).fit(log)
    singles = [GRU4Rec(**FAST, random_state=5 + m).fit(log) for m in range(3)]
    assert len(ens.nets_) == 3 and ens.net_ is ens.nets_[0]
    for net, single in zip(ens.nets_, singles, strict=True):
        assert _same_net(net, single.net_)
    assert not _same_net(singles[0].net_, singles[1].net_)  # the seeds differ
    hist = Histories(indptr=np.array([0, 1, 4, 6], np.int64), items=np.array([2, 7, 8, 9, 20, 21], np.int32))
    log_p = np.mean([np.log(s.score(hist)) for s in singles], axis=0)
    want = np.exp(log_p - log_p.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    got = ens.score(hist)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-7)
    ids, scores = ens.recommend(hist, 5)
    np.testing.assert_array_equal(ids, np.argsort(-got, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(ens.train_loss_, np.mean([s.train_loss_ for s in singles], axis=0), rtol=1e-12)
    with pytest.raises(ValueError, match="n_models must be >= 1"):
        GRU4Rec(**FAST, n_models=0).fit(log)


def test_an_ensemble_saves_and_loads_every_network(tmp_path: Path) -> None:
    log = _walks(60, n_items=20)
    model = GRU4Rec(**FAST, n_models=2).fit(log)
    model.save(tmp_path / "m")
    back = GRU4Rec.load(tmp_path / "m")
    assert back.n_models == 2 and all(_same_net(a, b) for a, b in zip(back.nets_, model.nets_, strict=True))
    hist = Histories(indptr=np.array([0, 2], np.int64), items=np.array([3, 4], np.int32))
    np.testing.assert_array_equal(back.score(hist), model.score(hist))
    params = (tmp_path / "m" / "params.json")
    params.write_text(params.read_text().replace('"n_models": 2', '"n_models": 1'))
    with pytest.raises(ModelFormatError, match="says 2 networks; params.json allows 1..1"):
        GRU4Rec.load(tmp_path / "m")


def test_ensemble_examples_gives_large_logs_fewer_networks(tmp_path: Path) -> None:
    model = GRU4Rec(epochs=10, epoch_examples=1_500_000, n_models=3, ensemble_examples=3_000_000)
    assert [model.n_networks(n) for n in (47_000, 100_000, 120_000, 150_001, 326_000, 700_000)] == [3, 3, 2, 1, 1, 1]
    assert GRU4Rec(n_models=4).n_networks(10_000_000) == 4  # None: always ``n_models``
    log = _walks(40)  # 40 sessions of 3..5 items: ~120 examples, 2 epochs each
    fitted = GRU4Rec(**FAST, n_models=3, ensemble_examples=500).fit(log)
    assert len(fitted.nets_) == 500 // (2 * fitted.n_examples_)
    fitted.save(tmp_path / "m")
    assert len(GRU4Rec.load(tmp_path / "m").nets_) == len(fitted.nets_)
    with pytest.raises(ValueError, match="ensemble_examples must be None or >= 1"):
        GRU4Rec(ensemble_examples=0)._validate()
