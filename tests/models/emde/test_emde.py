"""EMDE: sketch additivity and decay, DLSH determinism and balance, network determinism,
planted-taste quality, save/load, batch == singles. Self-contained (no shared datasets)."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.base import Histories, InteractionLog, whole_epochs
from models.emde import EMDE, ModalitySpec, fit_dlsh, parse_modalities
from models.emde.examples import next_item_examples
from models.emde.layout import SketchLayout
from models.emde.network import SketchNetwork, sparse_batch
from models.emde.sketch import (
    decay_factor,
    history_sketches,
    history_weights,
    item_columns,
    set_sketch,
    update_sketch,
)
from models.errors import ModelFitError, ModelFormatError, NotFittedError

torch.set_num_threads(1)

N_ITEMS, DEPTH, WIDTH = 30, 4, 8
_CODES = np.random.default_rng(1).integers(0, WIDTH, size=(N_ITEMS, DEPTH))
_COLS = item_columns(_CODES, WIDTH)
_DIM = DEPTH * WIDTH

items_lists = st.lists(st.integers(0, N_ITEMS - 1), max_size=20)


@settings(max_examples=60, deadline=None)
@given(a=items_lists, b=items_lists)
def test_sketch_of_union_is_sum_of_sketches(a: list[int], b: list[int]) -> None:
    sa, sb = set_sketch(_COLS, np.array(a, int), _DIM), set_sketch(_COLS, np.array(b, int), _DIM)
    np.testing.assert_allclose(set_sketch(_COLS, np.array(a + b, int), _DIM), sa + sb)
    assert set_sketch(_COLS, np.array(a, int), _DIM).sum() == len(a) * DEPTH


@settings(max_examples=40, deadline=None)
@given(seq=st.lists(st.integers(0, N_ITEMS - 1), min_size=1, max_size=15),
       gaps=st.lists(st.floats(0, 100), min_size=15, max_size=15),
       alpha=st.floats(0.5, 1.0))
def test_streamed_updates_equal_batch_history_sketch(seq: list[int], gaps: list[float], alpha: float) -> None:
    ts = np.cumsum(gaps[: len(seq)])
    stream = np.zeros(_DIM, np.float32)
    last = ts[0]
    for item, t in zip(seq, ts, strict=True):
        update_sketch(stream, _COLS[item], 1.0, float(decay_factor(t - last, alpha, 0.05)))
        last = t
    indptr = np.array([0, len(seq)], np.int64)
    w = history_weights(indptr, ts, alpha, 0.05)
    batch = history_sketches(_COLS, indptr, np.array(seq), _DIM, w).toarray()[0]
    np.testing.assert_allclose(stream, batch, rtol=1e-4, atol=1e-5)


def test_decay_weights_by_position_and_time() -> None:
    w = history_weights(np.array([0, 3, 4]), None, 0.5)
    np.testing.assert_allclose(w, [0.25, 0.5, 1.0, 1.0])
    w = history_weights(np.array([0, 2]), np.array([0.0, 10.0]), 0.5, 0.1)
    np.testing.assert_allclose(w, [0.5, 1.0])
    with pytest.raises(ValueError, match="alpha must lie in"):
        decay_factor(1.0, 1.5)


def test_item_columns_rejects_codes_outside_width() -> None:
    with pytest.raises(ValueError, match=r"codes must lie in \[0, width=8\)"):
        item_columns(np.array([[8]]), 8)


def test_dlsh_is_deterministic_and_balanced() -> None:
    x = np.random.default_rng(0).standard_normal((4000, 16)) * np.arange(1, 17)
    a = fit_dlsh(x, depth=6, width=16, quantiles="median", random_state=3).encode(x)
    b = fit_dlsh(x, depth=6, width=16, quantiles="median", random_state=3).encode(x)
    c = fit_dlsh(x, depth=6, width=16, quantiles="median", random_state=4).encode(x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (4000, 6) and a.min() >= 0 and a.max() < 16
    for d in range(6):  # median biases: every hyperplane halves the data
        bits = (a[:, d, None] >> np.arange(4)) & 1
        np.testing.assert_allclose(bits.mean(axis=0), 0.5, atol=0.01)
        assert len(np.unique(a[:, d])) >= 12
    r = fit_dlsh(x, depth=6, width=16, random_state=3).encode(x)
    assert np.mean([len(np.unique(r[:, d])) for d in range(6)]) >= 6


def test_dlsh_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="width must be a power of two"):
        fit_dlsh(np.ones((4, 2)), depth=2, width=12)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        fit_dlsh(np.ones((4, 2)), depth=2, width=4).encode(np.ones((3, 5)))


def test_layout_normalises_each_view_to_unit_norm() -> None:
    layout = SketchLayout(views=("session", "last"), view_dim=_DIM, alpha=0.5)
    x = layout.input_sketches(_COLS, Histories.from_lists([[1, 2, 2], [5]])).toarray()
    for row in x:
        for v in range(2):
            assert np.linalg.norm(row[v * _DIM:(v + 1) * _DIM]) == pytest.approx(1.0, abs=1e-5)


def test_parse_modalities() -> None:
    specs = parse_modalities("g=sessions:16x64:4,r=random:8x32")
    assert specs == (ModalitySpec("g", "sessions", depth=16, width=64, n_iter=4),
                     ModalitySpec("r", "random", depth=8, width=32))
    with pytest.raises(ValueError, match="source must be one of"):
        ModalitySpec("x", "images")


def _planted_log(seed: int = 0) -> InteractionLog:
    """5 tastes of 20 items; a session walks i -> i+1 inside one taste."""
    rng = np.random.default_rng(seed)
    sess, items = [], []
    for s in range(1500):
        g, length, start = rng.integers(5), rng.integers(2, 7), rng.integers(20)
        for t in range(length):
            sess.append(s)
            items.append(g * 20 + (start + t) % 20)
    # a few global best-sellers that popularity would rank first
    for s in range(1500, 1900):
        sess += [s, s]
        items += [0, 40]
    return InteractionLog(session_idx=np.array(sess, np.int32), item_idx=np.array(items, np.int32),
                          ts=np.arange(len(items), dtype=np.float64), n_items=100,
                          item_ids=tuple(f"i{k}" for k in range(100)))


_SMALL = dict(hidden=64, epochs=2, batch_size=256, random_state=0)
_MODS = "g=sessions:8x32:2,s=transitions:8x32:1,r=random:4x32"


@pytest.fixture(scope="module")
def fitted() -> EMDE:
    return EMDE(_MODS, **_SMALL).fit(_planted_log())


def test_emde_beats_popularity_on_planted_tastes(fitted: EMDE) -> None:
    rng = np.random.default_rng(5)
    g, start = rng.integers(5, size=200), rng.integers(20, size=200)
    seqs = [[int(gi * 20 + (s + t) % 20) for t in range(3)] for gi, s in zip(g, start, strict=True)]
    nxt = np.array([gi * 20 + (s + 3) % 20 for gi, s in zip(g, start, strict=True)])
    ids, scores = fitted.recommend(Histories.from_lists(seqs), 10)
    hr_emde = (ids == nxt[:, None]).any(axis=1).mean()
    log = _planted_log()
    popular = np.argsort(-np.bincount(log.item_idx, minlength=100), kind="stable")[:10]
    hr_pop = np.isin(nxt, popular).mean()
    assert hr_emde >= 0.8 > 0.3 >= hr_pop
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_batch_equals_singles(fitted: EMDE) -> None:
    seqs = [[1, 2, 3], [45], [60, 61, 62, 63, 64], [99, 98]]
    ids, scores = fitted.recommend(Histories.from_lists(seqs), 7)
    for q, s in enumerate(seqs):
        i1, s1 = fitted.recommend(Histories.from_lists([s]), 7)
        np.testing.assert_array_equal(i1[0], ids[q])
        np.testing.assert_allclose(s1[0], scores[q], rtol=1e-5)


def test_exclude_seen_padding_and_similar_items(fitted: EMDE) -> None:
    ids, scores = fitted.recommend(Histories.from_lists([[1, 2]]), 150, exclude_seen=True)
    assert not np.isin([1, 2], ids[0]).any()
    assert (ids[0, 98:] == -1).all() and np.isneginf(scores[0, 98:]).all()
    sim, _ = fitted.similar_items(np.array([10, 70], np.int32), 3)
    assert sim.shape == (2, 3) and 10 not in sim[0] and 70 not in sim[1]
    assert sim[0, 0] // 20 == 0 and sim[1, 0] // 20 == 3


def test_network_training_is_deterministic() -> None:
    log = _planted_log(1)
    a = EMDE(_MODS, **_SMALL).fit(log)
    b = EMDE(_MODS, **_SMALL).fit(log)
    assert a.train_loss_ == b.train_loss_
    for (ka, va), (_, vb) in zip(a.network_.state_dict().items(), b.network_.state_dict().items(), strict=True):
        assert torch.equal(va, vb), ka


def test_epoch_examples_gives_a_large_log_fewer_whole_epochs(tmp_path) -> None:
    log = _planted_log(1)  # 4,949 training examples (prefix -> next item)
    few = EMDE(_MODS, **{**_SMALL, "epochs": 3}, epoch_examples=5_000).fit(log)
    assert len(few.train_loss_) == 2  # ceil(5,000 / n) whole epochs, not 3
    assert len(EMDE(_MODS, **{**_SMALL, "epochs": 3}, epoch_examples=10**9).fit(log).train_loss_) == 3
    two = EMDE(_MODS, **_SMALL).fit(log)  # two epochs asked for outright: the same network
    assert few.train_loss_ == two.train_loss_
    few.save(tmp_path / "m")
    assert EMDE.load(tmp_path / "m").epoch_examples == 5_000


def test_whole_epochs() -> None:
    assert [whole_epochs(3, 900_000, n) for n in (100_000, 326_000, 460_000, 507_000, 700_000, 2_000_000)] == [
        3, 3, 2, 2, 2, 1]
    assert whole_epochs(3, None, 10**9) == 3
    with pytest.raises(ValueError, match="epoch_examples must be None or >= 1"):
        whole_epochs(3, 0, 10)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        whole_epochs(0, None, 10)


def test_save_load_round_trip(fitted: EMDE, tmp_path) -> None:
    fitted.save(tmp_path / "m")
    loaded = EMDE.load(tmp_path / "m")
    h = Histories.from_lists([[1, 2, 3], [77]])
    a, b = fitted.recommend(h, 10), loaded.recommend(h, 10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-6)
    assert loaded.item_ids_ == fitted.item_ids_
    np.testing.assert_array_equal(loaded.codes_["g"], fitted.codes_["g"])
    (tmp_path / "m" / "network.npz").unlink()
    with pytest.raises(ModelFormatError, match="missing network.npz"):
        EMDE.load(tmp_path / "m")


def test_not_fitted_and_future_objective() -> None:
    with pytest.raises(NotFittedError, match="EMDE is not fitted; call fit"):
        EMDE().recommend(Histories.from_lists([[1]]))
    m = EMDE("g=sessions:8x32:2", objective="future", n_cuts=2, **_SMALL).fit(_planted_log())
    ids, _ = m.recommend(Histories.from_lists([[21, 22, 23]]), 5)
    assert (ids[0] // 20 == 1).sum() >= 3


def test_text_and_dense_modalities_from_side_data(tmp_path) -> None:
    log = _planted_log()
    titles = [f"taste{k // 20} colour{k % 3}" for k in range(100)]
    vec = np.eye(5)[np.arange(100) // 20] + 0.01 * np.random.default_rng(0).standard_normal((100, 5))
    np.savez(tmp_path / "v.npz", ids=np.array([f"i{k}" for k in range(100)]), vectors=vec)
    mods = [ModalitySpec("t", "text", depth=8, width=16, n_iter=1),
            ModalitySpec("v", "dense", depth=8, width=16, path=str(tmp_path / "v.npz"))]
    m = EMDE(mods, **_SMALL).fit(log, side={"t": titles})
    same = (m.codes_["t"][:20, None] == m.codes_["t"][None, :20]).mean()
    other = (m.codes_["t"][:20, None] == m.codes_["t"][None, 20:40]).mean()
    assert same > other
    assert (m.codes_["v"][0] == m.codes_["v"][1]).mean() > (m.codes_["v"][0] == m.codes_["v"][50]).mean()


def test_knn_views_train_and_survive_save_load(tmp_path) -> None:
    m = EMDE("g=sessions:8x32:2", views=("session", "last", "knn:last"), knn_k=5, **_SMALL).fit(_planted_log())
    assert m.neighbours_.shape == (100, 100)
    np.testing.assert_allclose(m.neighbours_.sum(axis=1)[m.neighbours_.sum(axis=1) > 0], 1.0, rtol=1e-5)
    m.save(tmp_path / "k")
    h = Histories.from_lists([[5, 6], [61]])
    np.testing.assert_array_equal(m.recommend(h, 5)[0], EMDE.load(tmp_path / "k").recommend(h, 5)[0])


def test_popularity_decoder_is_the_official_readout(fitted: EMDE, tmp_path) -> None:
    """score(i) = log p(i) + sum_rows [log out(code_row(i)) - log prior(code_row(i))], over rows."""
    log = _planted_log()
    pop = copy.copy(fitted)
    pop.decoder, pop._bias_ = "popularity", None
    h = Histories.from_lists([[1, 2, 3], [45], [60, 61]])
    raw = fitted.layout_.raw_sketches(fitted.item_in_cols_, h)
    mean = fitted._mean_log_probs(raw)  # mean over rows of log out(code_row(i))
    counts = np.bincount(log.item_idx, minlength=100) + 1.0
    rows = fitted.item_out_cols_.shape[1]
    prior = np.bincount(fitted.item_out_cols_.ravel(), weights=np.repeat(counts, rows),
                        minlength=int(fitted.item_out_cols_.max()) + 1) / counts.sum()
    official = (rows * mean + np.log(counts / counts.sum())[None, :]
                - np.log(prior[fitted.item_out_cols_]).sum(axis=1)[None, :])  # buckets no item uses have prior 0
    np.testing.assert_allclose(pop._mean_log_probs(raw) * rows, official, rtol=1e-4, atol=1e-3)
    ids, _ = pop.recommend(h, 5)
    np.testing.assert_array_equal(ids, np.argsort(-official, axis=1, kind="stable")[:, :5])
    pop.save(tmp_path / "pop")
    loaded = EMDE.load(tmp_path / "pop")
    assert loaded.decoder == "popularity"
    np.testing.assert_array_equal(loaded.recommend(h, 5)[0], ids)
    with pytest.raises(ValueError, match="decoder"):
        EMDE(_MODS, decoder="max", **_SMALL).fit(log)


def test_the_wall_clock_safety_stop_is_a_failure_not_a_result() -> None:
    with pytest.raises(ModelFitError, match="safety stop"):
        EMDE(_MODS, **{**_SMALL, "max_train_seconds": 0.0}).fit(_planted_log())


_FIT_AND_RECOMMEND = """
import hashlib, numpy as np, torch
from models.base import Histories, InteractionLog
from models.emde import EMDE
torch.set_num_threads(1)
rng = np.random.default_rng(3)
lens = rng.integers(2, 8, size=400)
sess = np.repeat(np.arange(400), lens).astype(np.int32)
taste = np.repeat(rng.integers(4, size=400), lens)
items = (taste * 15 + rng.integers(15, size=len(sess))).astype(np.int32)
log = InteractionLog(session_idx=sess, item_idx=items, ts=np.arange(len(sess), dtype=np.float64), n_items=60)
model = EMDE("g=sessions:6x16:2,r=random:4x16", views=("session", "last", "knn:last"), knn_k=4, hidden=32,
             epochs=2, batch_size=64, random_state=7).fit(log)
ids, scores = model.recommend(Histories.from_lists([[1, 2, 3], [40], [16, 17, 30, 31]]), 10)
digest = hashlib.sha256(ids.tobytes() + scores.tobytes()).hexdigest()
"""


def _fit_and_recommend(code: str = _FIT_AND_RECOMMEND) -> tuple[np.ndarray, np.ndarray, str]:
    scope: dict = {}
    threads = torch.get_num_threads()
    try:
        exec(code, scope)  # the same code the child process runs
    finally:
        torch.set_num_threads(threads)
    return scope["ids"], scope["scores"], scope["digest"]


def test_same_seed_same_recommendations_in_process_and_across_processes() -> None:
    """Determinism: two fits with one random_state give bit-identical lists and scores, also in a new process."""
    ids_a, scores_a, digest_a = _fit_and_recommend()
    ids_b, scores_b, digest_b = _fit_and_recommend()
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(scores_a, scores_b)
    assert np.isfinite(scores_a).all() and len(np.unique(ids_a)) > 10  # a real ranking, not a constant
    child = subprocess.run([sys.executable, "-c", _FIT_AND_RECOMMEND + "\nprint(digest)"],
                           capture_output=True, text=True, check=True, timeout=600)
    assert child.stdout.strip().splitlines()[-1] == digest_a
    assert _fit_and_recommend(_FIT_AND_RECOMMEND.replace("random_state=7", "random_state=8"))[2] != digest_a

def test_past_view_is_the_official_decayed_history_without_the_last_item() -> None:
    """views ("past", "last"), per-row L2 norm, 0.9 ** (0.01 * dt s): hand-computed on a 3-item history."""
    codes = np.array([[0, 1], [2, 1], [3, 3]])  # items a, b, c; depth 2, width 4; a and b share row 1's bucket
    cols = item_columns(codes, 4)
    layout = SketchLayout(views=("past", "last"), view_dim=8, alpha=0.9, decay_w=0.01, time_unit="seconds",
                          norm="row", row_widths=(4, 4))
    h = Histories.from_lists([[0, 1, 2]], [[1000.0, 1100.0, 1250.0]])  # a, b, c; gaps 100 s and 150 s
    raw = layout.raw_sketches(cols, h).toarray()[0]
    wa = 0.9 ** (0.01 * 100)  # a is 100 s older than b, the newest item of the past view; the 150 s gap to c
    expected_raw = np.zeros(16)  # does not enter the past view
    expected_raw[[0, 4 + 1]] += wa
    expected_raw[[2, 4 + 1]] += 1.0
    expected_raw[8 + 3] = expected_raw[8 + 4 + 3] = 1.0  # last view: c alone
    np.testing.assert_allclose(raw, expected_raw, rtol=1e-6)
    x = layout.normalise(raw[None, :]).toarray()[0]
    expected = np.zeros(16)
    expected[0], expected[2] = wa / np.hypot(wa, 1.0), 1.0 / np.hypot(wa, 1.0)  # row 0: two buckets
    expected[5] = 1.0  # row 1: a and b share a bucket (wa + 1), scaled to 1
    expected[11] = expected[15] = 1.0
    np.testing.assert_allclose(x, expected, rtol=1e-6)
    one = layout.raw_sketches(cols, Histories.from_lists([[2]], [[5.0]])).toarray()[0]
    assert not one[:8].any() and one[8:].sum() == 2.0  # a one-item history has an empty past view
    with pytest.raises(ValueError, match="row_widths"):
        SketchLayout(views=("past",), view_dim=8, norm="row", row_widths=(4,))


def test_training_inputs_are_the_input_sketches(tmp_path) -> None:
    """The precomputed training inputs (history views per example + item views per newest item) add up to
    ``layout_.input_sketches`` of each prefix; the official views train and survive save/load."""
    log = _planted_log()
    m = EMDE("g=sessions:8x32:2,r=random:4x32", views=("past", "session", "last", "knn:last"), knn_k=5,
             view_norm="row", time_unit="seconds", decay_w=0.01, **_SMALL).fit(log)
    hist, _ = next_item_examples(log, m.max_prefix)
    inputs = m._train_inputs(hist)
    rows = np.arange(0, hist.n_queries, 97)
    sub = Histories.from_lists([list(hist.items[hist.indptr[r]:hist.indptr[r + 1]]) for r in rows],
                               [list(hist.ts[hist.indptr[r]:hist.indptr[r + 1]]) for r in rows])
    full = m.layout_.input_sketches(m.item_in_cols_, sub, m.neighbours_).toarray()
    split = inputs.examples[rows].toarray() + inputs.items[inputs.last[rows]].toarray()
    np.testing.assert_allclose(split, full, rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        np.testing.assert_allclose(inputs.embed(m.network_, rows).numpy(),
                                   m.network_.embed(*sparse_batch(m.layout_.normalise(full))).numpy(),
                                   rtol=1e-4, atol=1e-5)
    m.save(tmp_path / "o")
    loaded = EMDE.load(tmp_path / "o")
    assert loaded.layout_.norm == "row" and loaded.layout_.views == m.layout_.views
    h = Histories.from_lists([[5, 6, 7], [61]], [[0.0, 30.0, 400.0], [9.0]])
    np.testing.assert_array_equal(m.recommend(h, 5)[0], loaded.recommend(h, 5)[0])


def test_sparse_input_layer_equals_the_embedding_bag_with_its_gradient() -> None:
    """Training's ``embed_csr`` (x @ W, x.T @ grad) is the inference ``EmbeddingBag`` product, gradient included."""
    net = SketchNetwork(40, [(2, 8)], hidden=16, n_layers=1)
    net.init_weights(torch.Generator().manual_seed(0))
    x = sp.random(9, 40, density=0.2, format="csr", random_state=3, dtype=np.float32)
    g = torch.randn(9, 16, generator=torch.Generator().manual_seed(1))
    (net.embed_csr(x) * g).sum().backward()
    grad_csr = net.embed.weight.grad.clone()
    net.zero_grad()
    out = net.embed(*sparse_batch(x))
    (out * g).sum().backward()
    np.testing.assert_allclose(net.embed_csr(x).detach().numpy(), out.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_csr.numpy(), net.embed.weight.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert grad_csr.abs().sum() > 0
