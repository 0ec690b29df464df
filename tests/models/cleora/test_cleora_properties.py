"""Cleora properties from issue 3: determinism, stability, inductive agreement, pycleora agreement."""

from __future__ import annotations

import numpy as np
import pytest

from models.cleora import build_graph, embed, embed_new_nodes, hash_init, label_keys, propagate
from models.topk import topk

N_ITEMS = 1200
_P = (np.arange(N_ITEMS) + 5.0) ** -1.0
_P /= _P.sum()


def _sessions(seed: int, n: int = 4000) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[f"i{x}" for x in rng.choice(N_ITEMS, size=rng.integers(2, 8), p=_P)] for _ in range(n)]


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def test_hash_init_is_a_function_of_the_label_only():
    k1, k2 = label_keys(["a", "b", "c"]), label_keys(["zz", "b"])
    q1, q2 = hash_init(k1, 64), hash_init(k2, 64)
    assert np.array_equal(q1[1], q2[1])
    big = hash_init(label_keys([f"n{i}" for i in range(2000)]), 64)
    assert big.dtype == np.float32 and np.abs(big).max() < 1.0 and abs(float(big.mean())) < 0.01
    assert not np.array_equal(hash_init(k1, 64, seed=1), q1)


def test_propagate_matches_dense_reference():
    g = build_graph(_sessions(0, 300))
    m = g.markov().toarray().astype(np.float64)
    q0 = hash_init(g.keys, 32)
    ref = q0.astype(np.float64)
    for _ in range(3):
        ref = m @ ref
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    out = propagate(g.markov(), q0.copy(), 3, block_dim=8)
    assert np.abs(out - ref).max() < 1e-5


def test_deterministic_under_line_order_and_threads():
    rows = _sessions(1, 2000)
    rng = np.random.default_rng(7)
    shuffled = [list(rng.permutation(r)) for r in rng.permutation(np.array(rows, dtype=object))]
    a = embed(build_graph(rows), 64, 4, n_threads=2)
    b = embed(build_graph(shuffled), 64, 4, n_threads=1)
    assert a.labels == b.labels
    assert np.array_equal(a.vectors, b.vectors)  # bit-identical
    norms = np.linalg.norm(a.vectors, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)


def test_stable_under_one_percent_edge_perturbation():
    rng = np.random.default_rng(3)
    pairs = [(s[i], s[i + 1]) for s in _sessions(2, 6000) for i in range(len(s) - 1) if s[i] != s[i + 1]]
    pert, touched = list(pairs), set()
    for j in rng.choice(len(pairs), len(pairs) // 100, replace=False):
        touched.update(pert[j])
        a, b = rng.choice(N_ITEMS, 2, replace=False)
        pert[j] = (f"i{a}", f"i{b}")
        touched.update(pert[j])
    old = embed(build_graph([list(p) for p in pairs]), 128, 4)
    new = embed(build_graph([list(p) for p in pert]), 128, 4)
    same = [s for s in old.labels if s not in touched and s in new.index]
    cos = _cos_rows(old.vectors_of(same), new.vectors_of(same))
    # measured 0.9996 on untouched nodes (0.99 over all nodes); the issue asks for >= 0.95
    assert len(same) > 500 and cos.mean() >= 0.98
    everyone = _cos_rows(old.vectors_of(old.labels), new.vectors_of(old.labels))
    assert everyone.mean() >= 0.95


def test_inductive_agrees_with_full_reembedding_on_bipartite_graph():
    rng = np.random.default_rng(0)
    users = {f"u{u}": [f"i{i}" for i in rng.choice(N_ITEMS, size=rng.integers(2, 12), p=_P)] for u in range(3000)}
    held = [f"u{u}" for u in range(0, 3000, 30)]
    held_set = set(held)
    full = embed(build_graph([[u, it] for u, it in users.items()], "user complex::item"), 128, 4)
    train = embed(build_graph([[u, it] for u, it in users.items() if u not in held_set], "user complex::item"),
                  128, 4, keep_basis=True)
    v = embed_new_nodes([users[u] for u in held], train)
    cos = _cos_rows(v, full.vectors_of(held))
    # measured mean 0.95 with the Q_{T-1} basis (0.02 with Q_T: the bipartite parity)
    assert cos.mean() >= 0.9 and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_inductive_on_clique_graph_and_unknown_neighbours():
    sessions = _sessions(4, 5000)
    held = {f"i{x}" for x in range(600, N_ITEMS, 40)}
    full = embed(build_graph(sessions), 128, 4)
    train = embed(build_graph([[x for x in s if x not in held] for s in sessions]), 128, 4, keep_basis=True)
    nbrs = {h: [x for s in sessions if h in s for x in s if x != h and x not in held] for h in held}
    hs = [h for h, v in nbrs.items() if v and h in full.index]
    cos = _cos_rows(embed_new_nodes([nbrs[h] for h in hs], train), full.vectors_of(hs))
    assert len(hs) >= 8 and cos.mean() >= 0.9  # measured 0.98
    out = embed_new_nodes([["nope"], [], ["i0", "nope"]], train)
    assert not out[0].any() and not out[1].any() and np.isclose(np.linalg.norm(out[2]), 1.0)


def _overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    res = []
    for x in (a, b):
        s = x @ x.T
        np.fill_diagonal(s, -np.inf)
        res.append(topk(s, k)[0])
    return float(np.mean([len(set(r) & set(t)) / k for r, t in zip(*res, strict=True)]))


def test_same_algorithm_as_pycleora():
    pycleora = pytest.importorskip("pycleora")
    # rows without two distinct items are dropped by us but kept by pycleora as self-loop weight:
    # give both the same graph
    sessions = [s for s in _sessions(5, 3000) if len(set(s)) >= 2]
    pg = pycleora.SparseMatrix.from_iterator(iter(" ".join(s) for s in sessions),
                                             columns="complex::reflexive::item", hyperedge_trim_n=64)
    g = build_graph(sessions, max_hyperedge_size=64)
    pos = {s: i for i, s in enumerate(pg.entity_ids)}
    perm = np.array([pos[s] for s in g.labels.tolist()])
    ref = pycleora.embed(pg, 512, 4, whiten=False, seed=0)[perm]
    same_init = propagate(g.markov(), np.ascontiguousarray(pg.initialize_deterministically(512, 0)[perm]), 4)
    assert np.abs(same_init - ref).max() < 1e-5  # same M, same loop: same vectors
    assert _overlap(same_init, ref) >= 0.95
    # With their own inits the lists differ for a reason on pycleora's side: its deterministic
    # Q0 is strongly structured (row |cos| ~0.38 instead of ~0.05, a few dominant singular
    # values), so its neighbours follow the init, not the graph. Measured here at dim 512:
    # ours vs pycleora 0.18; vs the exact M⁴ neighbours ours 0.77, pycleora 0.18.
    ours = embed(g, 512, 4).vectors
    m4 = np.linalg.matrix_power(g.markov().toarray().astype(np.float64), 4)
    exact = m4 / np.linalg.norm(m4, axis=1, keepdims=True)
    ours_exact, py_exact = _overlap(ours, exact), _overlap(ref, exact)
    assert ours_exact >= 0.6 and ours_exact > py_exact
    assert _overlap(ours, ref) >= 0.1


def test_memory_mapped_graph_and_buffers_give_the_same_result(tmp_path):
    g = build_graph(_sessions(6, 500))
    m = g.markov()
    in_ram = propagate(m, hash_init(g.keys, 48), 3, block_dim=16)
    arrays = []
    for name, a in (("indptr", m.indptr.astype(np.int64)), ("indices", m.indices), ("data", m.data)):
        np.save(tmp_path / f"{name}.npy", a)
        arrays.append(np.load(tmp_path / f"{name}.npy", mmap_mode="r"))
    q = np.lib.format.open_memmap(tmp_path / "q.npy", mode="w+", dtype=np.float32, shape=in_ram.shape)
    q[:] = hash_init(g.keys, 48)
    on_disk = propagate(tuple(arrays), q, 3, block_dim=16, work_dir=tmp_path / "work")
    assert isinstance(on_disk, np.memmap) and np.array_equal(np.asarray(on_disk), in_ram)


def test_symmetric_markov_variant():
    g = build_graph(_sessions(7, 500))
    left, sym = embed(g, 32, 3).vectors, embed(g, 32, 3, markov="symmetric").vectors
    assert np.allclose(np.linalg.norm(sym, axis=1), 1.0, atol=1e-5)
    assert not np.array_equal(left, sym) and _cos_rows(left, sym).mean() > 0.5
