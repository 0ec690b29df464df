"""SequenceEnsemble: GRU4Rec and SASRec networks from consecutive seeds, scored by their mean logit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.base import Histories, InteractionLog
from models.gru4rec import GRU4Rec
from models.registry import create_model
from models.sasrec import SASRec
from models.seq_ensemble import SequenceEnsemble

FAST = {"d": 16, "epochs": 2, "batch_size": 32, "n_sample": 8, "progress": False}


def _walks(n_sessions: int, n_items: int = 30, seed: int = 3) -> InteractionLog:
    """Sessions walking the items in order from a random start (3..5 steps)."""
    rng = np.random.default_rng(seed)
    sess, items = [], []
    for s in range(n_sessions):
        start = int(rng.integers(n_items))
        for j in range(int(rng.integers(3, 6))):
            sess.append(s)
            items.append((start + j) % n_items)
    return InteractionLog(session_idx=np.array(sess, np.int32), item_idx=np.array(items, np.int32),
                          ts=1_400_000_000.0 + np.arange(len(items), dtype=np.float64), n_items=n_items)


def _same_net(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].numpy().tobytes() == sb[k].numpy().tobytes() for k in sa)


def test_networks_alternate_gru_and_attention_each_its_seeds_single_model() -> None:
    """Network m is GRU4Rec's (even m) or SASRec's (odd m) single model of seed ``random_state + m``, bit for bit;
    the scores are the softmax of their mean log-probability."""
    log = _walks(120)
    ens = SequenceEnsemble(**FAST, n_models=3, random_state=5).fit(log)
    singles = [GRU4Rec(**FAST, random_state=5).fit(log), SASRec(**FAST, random_state=6).fit(log),
               GRU4Rec(**FAST, random_state=7).fit(log)]
    assert [ens.encoder(m) for m in range(3)] == ["gru", "attention", "gru"]
    for net, single in zip(ens.nets_, singles, strict=True):
        assert _same_net(net, single.net_)
    hist = Histories(indptr=np.array([0, 1, 4, 6], np.int64), items=np.array([2, 7, 8, 9, 20, 21], np.int32))
    log_p = np.mean([np.log(s.score(hist)) for s in singles], axis=0)
    want = np.exp(log_p - log_p.max(1, keepdims=True))
    np.testing.assert_allclose(ens.score(hist), want / want.sum(1, keepdims=True), rtol=2e-4, atol=1e-7)


def test_one_network_is_gru4rec_and_save_load_keeps_every_encoder(tmp_path: Path) -> None:
    log = _walks(60)
    hist = Histories(indptr=np.array([0, 2], np.int64), items=np.array([3, 4], np.int32))
    one = SequenceEnsemble(**FAST, n_models=1).fit(log)
    np.testing.assert_array_equal(one.score(hist), GRU4Rec(**FAST).fit(log).score(hist))
    model = create_model("seq_ensemble", **FAST, encoders=["attention", "gru"]).fit(log)
    assert [type(n).__name__ for n in model.nets_] == ["_SelfAttentionNet", "_GRUNet"]
    model.save(tmp_path / "m")
    back = SequenceEnsemble.load(tmp_path / "m")
    assert all(_same_net(a, b) for a, b in zip(back.nets_, model.nets_, strict=True))
    np.testing.assert_array_equal(back.score(hist), model.score(hist))


@pytest.mark.parametrize("encoders", [[], ["gru", "lstm"], "gru", {"gru": 1}, [["gru"]], [1], None])
def test_unknown_or_empty_encoders_are_refused(encoders: object) -> None:
    with pytest.raises(ValueError, match="encoders must be a non-empty list"):
        SequenceEnsemble(**FAST, encoders=encoders).fit(_walks(10))  # type: ignore[arg-type]


def test_attention_settings_are_checked_only_when_an_attention_network_is_asked_for() -> None:
    log = _walks(30)
    assert len(SequenceEnsemble(**FAST, encoders=["gru"], n_heads=3).fit(log).nets_) == 2  # d 16: 3 heads unused
    with pytest.raises(ValueError, match="n_heads must divide d"):
        SequenceEnsemble(**FAST, n_heads=3).fit(log)
