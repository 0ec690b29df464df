"""Cleora benchmark: fusionrec's models.cleora vs pycleora 3.2.1 (whiten=False) and vs DeepWalk.

Side by side in one run:

* speed and peak memory on a synthetic power-law graph and on real session–item graphs
  (yoochoose1_64, retailrocket_mtd from /work/shared/datasets, skipped when absent); each
  implementation runs in its own subprocess so ``ru_maxrss`` is its own peak;
* achieved effective bandwidth next to a numpy copy bandwidth measured in the same run;
* agreement with pycleora: top-10 neighbour overlap (different hash inits) and the max
  difference when both start from pycleora's own Q₀ (the same algorithm gives the same vectors);
* DeepWalk (weighted random walks + gensim skip-gram) vs Cleora on next-item HR@20 / MRR@20.

    .venv/bin/python bench/cleora.py --quick      # < 10 minutes; last line is one JSON object
    .venv/bin/python bench/cleora.py              # full size: 1M nodes / ~20M nnz at dim 256 and 1024
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("FUSIONREC_DATASETS", "/work/shared/datasets"))
REAL = {"yoochoose1_64": DATASETS / "yoochoose1_64_srgnn", "retailrocket": DATASETS / "retailrocket_mtd"}
TRIM = 1024  # hyperedge cap for both implementations (no real session is longer)


# ---------------------------------------------------------------- graphs (shared by both workers)
def synthetic_edges(n: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Chung–Lu power-law edge list: endpoint probability ∝ (rank + 10)^-0.9, node ids shuffled."""
    rng = np.random.default_rng(seed)
    w = (np.arange(n) + 10.0) ** -0.9
    c = np.cumsum(w)
    c /= c[-1]
    a = np.searchsorted(c, rng.random(m))
    b = np.searchsorted(c, rng.random(m))
    keep = a != b
    perm = rng.permutation(n)
    return perm[a[keep]].astype(np.int64), perm[b[keep]].astype(np.int64)


def real_sessions(name: str) -> list[list[int]]:
    """Training sessions with >= 2 distinct items (fusionrec drops the others as edgeless, pycleora
    would keep them as self-loop weight: both implementations get the same graph)."""
    with open(REAL[name] / "all_train_seq.txt", "rb") as fh:
        return [s for s in pickle.load(fh) if len(set(s)) >= 2]


def graph_lines(spec: str):
    """Cleora-style lines of a graph spec, for pycleora."""
    kind, *rest = spec.split(":")
    if kind == "synth":
        a, b = synthetic_edges(int(rest[0]), int(rest[1]))
        return (f"n{x} n{y}" for x, y in zip(a.tolist(), b.tolist(), strict=True))
    return (" ".join(f"i{x}" for x in s) for s in real_sessions(kind))


def build_ours(spec: str):
    from models.cleora import build_graph, graph_from_arrays
    kind, *rest = spec.split(":")
    if kind == "synth":
        n = int(rest[0])
        a, b = synthetic_edges(n, int(rest[1]))
        members = np.empty(2 * len(a), dtype=np.int64)
        members[0::2], members[1::2] = a, b
        return graph_from_arrays([f"n{i}" for i in range(n)], np.arange(0, len(members) + 1, 2), members,
                                 max_hyperedge_size=TRIM)
    return build_graph(([f"i{x}" for x in s] for s in real_sessions(kind)), max_hyperedge_size=TRIM)


# ---------------------------------------------------------------- worker subprocess
def _status_mb(field: str) -> float:
    """VmHWM / VmRSS of this process in MB (per address space: not inherited through fork/exec,
    unlike ``ru_maxrss``, which Linux carries over from the parent)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def _release_freed_heap() -> None:
    """Return freed heap pages to the OS (glibc keeps them after many mid-size frees); done
    for both implementations between graph building and embedding."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def worker(args: argparse.Namespace) -> None:
    rss0 = _status_mb("VmRSS")
    t = time.perf_counter()
    if args.worker == "pycleora":
        import pycleora
        g = pycleora.SparseMatrix.from_iterator(graph_lines(args.graph), columns="complex::reflexive::node",
                                                hyperedge_trim_n=TRIM)
        labels, nnz = list(g.entity_ids), None
        run = lambda: pycleora.embed(g, args.dim, args.iters, whiten=False, seed=0)  # noqa: E731
    else:
        from models.cleora import embed
        g = build_ours(args.graph)
        labels, nnz = g.labels.tolist(), g.nnz
        run = lambda: embed(g, args.dim, args.iters).vectors  # noqa: E731
    build_s = time.perf_counter() - t
    _release_freed_heap()
    walls, cpus = [], []
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        q = run()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        if len(walls) < args.repeats:
            del q
    if args.sample:
        want = np.load(args.sample)
        pos = {s: i for i, s in enumerate(labels)}
        idx = np.array([pos.get(s, -1) for s in want.tolist()])
        np.save(args.sample_out, np.where((idx >= 0)[:, None], q[np.maximum(idx, 0)], 0).astype(np.float32))
    print(json.dumps({"build_s": build_s, "embed_s": statistics.median(walls), "embed_cpu_s": statistics.median(cpus),
                      "walls": walls, "peak_rss_mb": _status_mb("VmHWM"),
                      "base_rss_mb": rss0, "n_nodes": len(labels), "nnz": nnz}))


def run_worker(impl: str, spec: str, dim: int, iters: int, repeats: int, sample: Path | None, tmp: Path) -> dict:
    out = tmp / f"{impl}_{spec.replace(':', '_')}_{dim}.npy"
    cmd = [sys.executable, __file__, "--worker", impl, "--graph", spec, "--dim", str(dim), "--iters", str(iters),
           "--repeats", str(repeats)]
    if sample is not None:
        cmd += ["--sample", str(sample), "--sample-out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if res.returncode != 0:
        raise RuntimeError(f"{impl} worker failed on {spec}: {res.stderr[-2000:]}")
    info = json.loads(res.stdout.strip().splitlines()[-1])
    info["vectors"] = np.load(out) if sample is not None else None
    return info


# ---------------------------------------------------------------- metrics
def copy_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    x = np.ones(nbytes // 4, dtype=np.float32)
    y = np.empty_like(x)
    np.copyto(y, x)
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        np.copyto(y, x)
        ts.append(time.perf_counter() - t)
    return 2 * nbytes / statistics.median(ts) / 1e9


def neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int = 10, n_queries: int = 1000) -> float:
    """Mean |top-k(a) ∩ top-k(b)| / k over query rows, cosine, the query itself excluded."""
    from models.topk import topk
    ok = (np.abs(a).sum(1) > 0) & (np.abs(b).sum(1) > 0)
    a, b = a[ok], b[ok]
    q = np.random.default_rng(0).choice(len(a), size=min(n_queries, len(a)), replace=False)
    res = []
    for x in (a, b):
        s = x[q] @ x.T
        s[np.arange(len(q)), q] = -np.inf
        res.append(topk(s, k)[0])
    return float(np.mean([len(set(r1) & set(r2)) / k for r1, r2 in zip(*res, strict=True)]))


def bandwidth_gbs(nnz: int, n: int, dim: int, iters: int, seconds: float) -> float:
    """Effective bytes per iteration: gathered Q rows + CSR + written Q, as the issue counts them."""
    return iters * (nnz * (dim * 4 + 8) + n * dim * 4) / seconds / 1e9


def next_item_quality(vectors: np.ndarray, labels: list[str], dataset: str, max_pairs: int | None,
                      k: int = 20) -> tuple[float, float, int]:
    """HR@k and MRR@k of "next item = nearest neighbours of the last item" on the dataset's test pairs."""
    from models.topk import topk
    with open(REAL[dataset] / "test.txt", "rb") as fh:
        prefixes, targets = pickle.load(fh)
    pairs = np.arange(len(targets))
    if max_pairs is not None and len(pairs) > max_pairs:
        pairs = np.sort(np.random.default_rng(0).choice(pairs, max_pairs, replace=False))
    pos = {s: i for i, s in enumerate(labels)}
    last = np.array([pos.get(f"i{prefixes[p][-1]}", -1) for p in pairs])
    tgt = np.array([pos.get(f"i{targets[p]}", -1) for p in pairs])
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    hr = rr = 0.0
    for s in range(0, len(pairs), 2000):
        sl = slice(s, s + 2000)
        ok = last[sl] >= 0
        top = topk(v[last[sl][ok]] @ v.T, k)[0]
        hit = top == tgt[sl][ok][:, None]
        rank = np.where(hit.any(1), hit.argmax(1) + 1, 0)
        hr += float((rank > 0).sum())
        rr += float((1.0 / rank[rank > 0]).sum())
    return hr / len(pairs), rr / len(pairs), len(pairs)


def deepwalk(graph, dim: int, walks: int, length: int, window: int, epochs: int, seed: int = 0):
    """DeepWalk: weighted random walks (self-loops removed) + gensim skip-gram with negative sampling."""
    import scipy.sparse as sp
    from gensim.models import Word2Vec
    t = time.perf_counter()
    a = graph.adjacency.tocoo()
    off = a.row != a.col
    a = sp.csr_array((a.data[off].astype(np.float64), (a.row[off], a.col[off])), shape=a.shape)
    cum = np.cumsum(a.data)
    base = np.concatenate([[0.0], cum])[a.indptr[:-1]]
    total = np.add.reduceat(a.data, a.indptr[:-1]) * (np.diff(a.indptr) > 0)
    rng = np.random.default_rng(seed)
    start = np.repeat(np.flatnonzero(np.diff(a.indptr) > 0), walks)
    rng.shuffle(start)
    w = np.empty((len(start), length), dtype=np.int64)
    w[:, 0] = start
    for s in range(1, length):
        c = w[:, s - 1]
        k = np.searchsorted(cum, base[c] + rng.random(len(c)) * total[c], side="right")
        w[:, s] = a.indices[np.minimum(k, a.indptr[c + 1] - 1)]
    sentences = graph.labels[w].tolist()
    walk_s = time.perf_counter() - t
    model = Word2Vec(sentences, vector_size=dim, window=window, min_count=0, sg=1, hs=0, negative=5,
                     workers=2, epochs=epochs, seed=seed)
    labels = list(model.wv.index_to_key)
    return np.asarray(model.wv.vectors, dtype=np.float32), labels, time.perf_counter() - t, walk_s, len(sentences) * length


def same_init_check(spec: str, dim: int, iters: int) -> tuple[float, float, float, float]:
    """Ours started from pycleora's own Q₀ vs pycleora: max |diff| and top-10 overlap (same algorithm?);
    plus the top-10 overlap of each implementation with itself across two seeds."""
    import pycleora

    from models.cleora import embed, propagate
    pg = pycleora.SparseMatrix.from_iterator(graph_lines(spec), columns="complex::reflexive::node",
                                             hyperedge_trim_n=TRIM)
    ref = pycleora.embed(pg, dim, iters, whiten=False, seed=0)
    q0 = pg.initialize_deterministically(dim, 0)
    g = build_ours(spec)
    pos = {s: i for i, s in enumerate(pg.entity_ids)}
    perm = np.array([pos[s] for s in g.labels.tolist()])
    out = propagate(g.markov(), np.ascontiguousarray(q0[perm]), iters)
    ours0, ours1 = embed(g, dim, iters).vectors, embed(g, dim, iters, seed=1).vectors
    py1 = pycleora.embed(pg, dim, iters, whiten=False, seed=1)
    return (float(np.abs(out - ref[perm]).max()), neighbour_overlap(out, ref[perm]),
            neighbour_overlap(ours0, ours1), neighbour_overlap(ref, py1))


def inductive_us_per_node(dataset: str, dim: int, iters: int) -> tuple[float, float]:
    """µs per new node of embed_new_nodes on the test prefixes; cosine to a full re-embedding is in tests."""
    from models.cleora import build_graph, embed, embed_new_nodes
    g = build_graph(([f"i{x}" for x in s] for s in real_sessions(dataset)), max_hyperedge_size=TRIM)
    store = embed(g, dim, iters)
    with open(REAL[dataset] / "test.txt", "rb") as fh:
        prefixes = pickle.load(fh)[0][:20000]
    nbrs = [[f"i{x}" for x in p] for p in prefixes]
    embed_new_nodes(nbrs[:10], store)  # builds the label index once
    t = time.perf_counter()
    embed_new_nodes(nbrs, store)
    batch = (time.perf_counter() - t) / len(nbrs) * 1e6
    t = time.perf_counter()
    for x in nbrs[:2000]:
        embed_new_nodes([x], store)
    single = (time.perf_counter() - t) / 2000 * 1e6
    return batch, single


def fmt_table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    head = " | ".join(h for h, _ in cols)
    lines = [f"| {head} |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(f.format(**r) if "{" in f else str(r[f]) for _, f in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="scaled synthetic graph, bounded DeepWalk (< 10 min)")
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2, help="alternating ours/pycleora rounds per row")
    p.add_argument("--no-deepwalk", action="store_true")
    p.add_argument("--only-synth", type=int, metavar="DIM", help="only the synthetic row at this dim")
    p.add_argument("--worker", choices=["ours", "pycleora"], help=argparse.SUPPRESS)
    p.add_argument("--graph", help=argparse.SUPPRESS)
    p.add_argument("--dim", type=int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--sample", help=argparse.SUPPRESS)
    p.add_argument("--sample-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    import tempfile
    command = ".venv/bin/python bench/cleora.py" + (" --quick" if args.quick else "") + \
        (f" --only-synth {args.only_synth}" if args.only_synth else "") + \
        ("" if args.rounds == 2 else f" --rounds {args.rounds}") + \
        ("" if args.iters == 4 else f" --iters {args.iters}") + (" --no-deepwalk" if args.no_deepwalk else "")
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="cleora_bench_"))
    bw_copy = copy_bandwidth_gbs()
    print(f"numpy copy bandwidth (same run): {bw_copy:.1f} GB/s; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores", flush=True)
    synth = "synth:250000:2500000" if args.quick else "synth:1000000:10000000"
    jobs = [(synth, 256, 2), (synth, 1024, 1)]
    if args.only_synth:
        jobs = [(synth, args.only_synth, 2)]
    have_real = [n for n, d in REAL.items() if (d / "all_train_seq.txt").exists()] if not args.only_synth else []
    if not have_real and not args.only_synth:
        print(f"real datasets not found under {DATASETS}: real-graph rows and DeepWalk skipped", flush=True)
    jobs += [(n, 256, 3) for n in have_real] + ([] if args.quick else [(n, 1024, 2) for n in have_real])
    rows = []
    for spec, dim, reps in jobs:
        if spec.startswith("synth"):
            n = int(spec.split(":")[1])
            pool = np.random.default_rng(1).choice(n, 20000, replace=False)
            labels = np.array([f"n{i}" for i in pool])
        else:
            labels = np.array(sorted({f"i{x}" for s in real_sessions(spec) for x in s}))
        np.save(tmp / "sample.npy", labels)
        res: dict[str, dict] = {}
        for rnd in range(args.rounds):  # alternate the two, so load changes hit both alike
            for impl in ("ours", "pycleora"):
                r = run_worker(impl, spec, dim, args.iters, reps, tmp / "sample.npy" if rnd == 0 else None, tmp)
                print(f"  {spec} dim {dim} {impl} round {rnd + 1}: embed walls "
                      f"{', '.join(f'{x:.2f}' for x in r['walls'])}s, build {r['build_s']:.1f}s, "
                      f"peak {r['peak_rss_mb']:.0f} MB, load {os.getloadavg()[0]:.1f}", flush=True)
                if impl not in res:
                    res[impl] = {**r, "all_walls": [], "all_cpus": [], "peaks": []}
                res[impl]["all_walls"] += r["walls"]
                res[impl]["all_cpus"].append(r["embed_cpu_s"])
                res[impl]["peaks"].append(r["peak_rss_mb"])
        for r in res.values():
            r.update(embed_s=statistics.median(r["all_walls"]), embed_cpu_s=statistics.median(r["all_cpus"]),
                     peak_rss_mb=max(r["peaks"]))
        o, q = res["ours"], res["pycleora"]
        rows.append({
            "graph": spec, "nodes": o["n_nodes"], "nnz": o["nnz"], "dim": dim, "iters": args.iters,
            "ours_s": o["embed_s"], "py_s": q["embed_s"], "speedup": q["embed_s"] / o["embed_s"],
            "cpu_speedup": q["embed_cpu_s"] / o["embed_cpu_s"],
            "ours_bw": bandwidth_gbs(o["nnz"], o["n_nodes"], dim, args.iters, o["embed_s"]),
            "py_bw": bandwidth_gbs(o["nnz"], o["n_nodes"], dim, args.iters, q["embed_s"]),
            "ours_mb": o["peak_rss_mb"], "py_mb": q["peak_rss_mb"], "mem_ratio": o["peak_rss_mb"] / q["peak_rss_mb"],
            "ours_build_s": o["build_s"], "py_build_s": q["build_s"],
            "overlap": neighbour_overlap(o["vectors"], q["vectors"]),
            "pool": "20k random nodes" if spec.startswith("synth") else "all nodes",
        })
    print()
    print(f"Cleora propagation, {args.iters} iterations, both cores; numpy copy {bw_copy:.1f} GB/s in the same run")
    print(fmt_table(rows, [
        ("graph", "graph"), ("nodes", "{nodes:,}"), ("nnz", "{nnz:,}"), ("dim", "dim"),
        ("ours s", "{ours_s:.2f}"), ("pycleora s", "{py_s:.2f}"), ("speedup (wall)", "{speedup:.2f}x"),
        ("speedup (cpu)", "{cpu_speedup:.2f}x"), ("ours GB/s", "{ours_bw:.1f}"), ("pycleora GB/s", "{py_bw:.1f}"),
        ("ours peak MB", "{ours_mb:.0f}"), ("pycleora peak MB", "{py_mb:.0f}"), ("mem ratio", "{mem_ratio:.2f}"),
        ("build s ours/py", "{ours_build_s:.1f}/{py_build_s:.1f}"), ("overlap@10", "{overlap:.3f}"),
        ("overlap pool", "pool")]))
    summary: dict = {"command": command, "copy_bandwidth_gbs": round(bw_copy, 2)}
    if not args.only_synth:
        ds = have_real[0] if have_real else "synth:20000:200000"
        diff, ov_same, ov_ours, ov_py = same_init_check(ds, 256, args.iters)
        summary.update(same_init_max_abs_diff=diff, neighbour_overlap_at_10_same_init=round(ov_same, 3),
                       overlap_ours_seed0_vs_seed1=round(ov_ours, 3), overlap_pycleora_seed0_vs_seed1=round(ov_py, 3))
        print(f"\nsame algorithm check on {ds}, dim 256: ours started from pycleora's Q0 vs pycleora: max |diff| = "
              f"{diff:.2e}, top-10 overlap {ov_same:.3f}")
        print(f"top-10 overlap across seeds 0/1: ours {ov_ours:.3f}, pycleora {ov_py:.3f} (pycleora's Q0 is "
              f"structured, its seed barely matters; see tests/models/cleora)")
    if have_real:
        b_us, s_us = inductive_us_per_node(ds, 256, args.iters)
        summary.update(inductive_us_per_node_batch=round(b_us, 2), inductive_us_per_node_single=round(s_us, 2))
        print(f"inductive embed_new_nodes on {ds} test prefixes, dim 256: {b_us:.2f} us/node in a batch of "
              f"20000, {s_us:.1f} us per single-node call")
    if have_real and not args.no_deepwalk:
        from models.cleora import build_graph, embed
        qrows = []
        for ds in have_real[:1]:
            g = build_graph(([f"i{x}" for x in s] for s in real_sessions(ds)), max_hyperedge_size=TRIM)
            max_pairs = 10000 if args.quick else None
            for dim in (256,) if args.quick else (256, 1024):
                t = time.perf_counter()
                st = embed(g, dim, args.iters)
                secs = time.perf_counter() - t
                hr, mrr, npairs = next_item_quality(st.vectors, st.labels, ds, max_pairs)
                qrows.append({"model": f"Cleora dim {dim}, {args.iters} iters", "dataset": ds, "s": secs,
                              "hr": hr, "mrr": mrr, "pairs": npairs})
            cfg = dict(dim=128, walks=4, length=20, window=5, epochs=1) if args.quick else \
                dict(dim=128, walks=10, length=40, window=5, epochs=1)
            vec, labels, secs, walk_s, tokens = deepwalk(g, **cfg)
            hr, mrr, npairs = next_item_quality(vec, labels, ds, max_pairs)
            qrows.append({"model": "DeepWalk " + " ".join(f"{k}={v}" for k, v in cfg.items()), "dataset": ds,
                          "s": secs, "hr": hr, "mrr": mrr, "pairs": npairs})
            print(f"  {ds}: DeepWalk {secs:.1f}s ({walk_s:.1f}s walks, {tokens:,} tokens)", flush=True)
        print("\nNext item = top-20 cosine neighbours of the last item of the prefix (test pairs of the dataset)")
        print(fmt_table(qrows, [("model", "model"), ("dataset", "dataset"), ("time s", "{s:.2f}"),
                                ("HR@20", "{hr:.4f}"), ("MRR@20", "{mrr:.4f}"), ("test pairs", "pairs")]))
        cle = [r for r in qrows if r["model"].startswith("Cleora dim 256")][0]
        dw = [r for r in qrows if r["model"].startswith("DeepWalk")][0]
        summary.update(deepwalk_time_ratio=round(dw["s"] / cle["s"], 1), cleora_hr20=round(cle["hr"], 4),
                       cleora_mrr20=round(cle["mrr"], 4), deepwalk_hr20=round(dw["hr"], 4),
                       deepwalk_mrr20=round(dw["mrr"], 4))
    head = rows[0]
    real_row = next((r for r in rows if not r["graph"].startswith("synth") and r["dim"] == 256), head)
    summary.update(
        speedup_vs_pycleora=round(head["speedup"], 2),
        speedup_vs_pycleora_cpu=round(head["cpu_speedup"], 2),
        speedup_vs_pycleora_dim1024=round(rows[1]["speedup"], 2) if len(rows) > 1 else None,
        peak_mem_ratio_vs_pycleora=round(head["mem_ratio"], 3),
        peak_mem_ratio_vs_pycleora_dim1024=round(rows[1]["mem_ratio"], 3) if len(rows) > 1 else None,
        neighbour_overlap_at_10=round(real_row["overlap"], 3),
        neighbour_overlap_graph=real_row["graph"],
        headline_graph=f"{head['graph']} nnz={head['nnz']} dim={head['dim']} iters={args.iters}",
        rows=[{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
        total_s=round(time.perf_counter() - t_start, 1),
    )
    print(f"\ncommand: {command}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
