"""Session-kNN scoring speed: the compiled kernel (``recommend``) against the vectorised numpy/scipy
reference (``_recommend_reference``), side by side on the same prefixes, with identical lists checked.

    .venv/bin/python bench/knn_speed.py [--data-dir ../shared/datasets] [--sets yoochoose1_64_srgnn,retailrocket_mtd]
        [--models sknn,vsknn,stan,vstan] [--rounds 3] [--n 20] [--max-queries 0] [--single 300]

Each set is loaded (SR-GNN format unless ``FORMATS`` says otherwise) and split as tuning does
(``validation_split(load_dataset(path, "srgnn"), frac=0.1)``); each model gets the registry
defaults with the tuned parameters of ``bench/tuned/<set>.json`` on top, is fitted once, then
scores all validation prefixes (or ``--max-queries`` of them, evenly spread) in one ``recommend`` call per
path. A warm-up call compiles the kernel (cached on disk by numba) before timing. Each round
times the reference then the kernel on the same prefixes (same minute, so machine load hits
both); the table gives medians over rounds in prefixes/s and their ratio, and the median time of
one ``recommend`` call on a single prefix (``--single`` prefixes spread over the set; the
stream rescores a few users per call). Not a test: it
exits non-zero if any list differs: scores must agree within 1e-6 relative and ids must be equal,
up to the order of equal scores (see :func:`compare`; the table counts both).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.data import load_dataset, validation_split  # noqa: E402
from models.registry import create_model  # noqa: E402

TUNED = Path(__file__).resolve().parent / "tuned"
FORMATS = {"rsc15_100k_sessionrec": "sessionrec", "uci_online_retail": "online_retail"}
"""Loader format per set (``srgnn`` otherwise)."""


def compare(new: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray]) -> tuple[int, int, float]:
    """(rows whose ids differ, of these rows with a difference beyond the order of equal scores,
    max relative score difference over the listed entries).

    A difference "within equal scores" is two lists with the same scores rank by rank whose ids
    differ only inside runs of equal scores (same items, or the run at the cut): STAN / V-STAN's
    reference sums per-entry weights in scipy's unstable COO -> CSR sort order, so equal scores
    can differ there by an ulp and come in either order (see ``tests/models/test_knn_kernel.py``).
    """
    differ = np.flatnonzero(np.any(new[0] != ref[0], axis=1))
    beyond = 0
    for r in differ:
        if not np.array_equal(new[1][r], ref[1][r]):
            beyond += 1
            continue
        for v in np.unique(new[1][r][new[0][r] != ref[0][r]]):
            mine, theirs = set(new[0][r][new[1][r] == v].tolist()), set(ref[0][r][ref[1][r] == v].tolist())
            if mine != theirs and v != new[1][r][-1]:
                beyond += 1
                break
    listed = ref[0] >= 0
    a, b = new[1][listed].astype(np.float64), ref[1][listed].astype(np.float64)
    rel = float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300), initial=0.0))
    return len(differ), beyond, rel


def main(
    data_dir: Path = typer.Option(Path("../shared/datasets"), "--data-dir"),
    sets: str = typer.Option("yoochoose1_64_srgnn,retailrocket_mtd", "--sets"),
    models: str = typer.Option("sknn,vsknn,stan,vstan", "--models"),
    rounds: int = typer.Option(3, "--rounds", min=1),
    n: int = typer.Option(20, "--n", min=1, help="List length."),
    max_queries: int = typer.Option(0, "--max-queries", min=0, help="A sample of this many prefixes spread over the set (0 = all)."),
    single: int = typer.Option(300, "--single", min=0,
                               help="Also time this many one-prefix calls (the stream's per-user path); 0 = skip."),
) -> None:
    """Time reference vs kernel per (set, model); print a table and a final JSON line."""
    typer.echo("command: .venv/bin/python bench/knn_speed.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    rows, failed = [], []
    for name in [s.strip() for s in sets.split(",") if s.strip()]:
        ds = validation_split(load_dataset(data_dir / name, FORMATS.get(name, "srgnn")), frac=0.1)
        task = ds.test
        if max_queries and max_queries < task.n_queries:  # spread over the set (prefix lengths vary along it)
            task = task.subset(np.unique(np.linspace(0, task.n_queries - 1, max_queries).astype(np.int64)))
        hist = task.prefixes()
        tuned = json.loads((TUNED / f"{name}.json").read_text())
        typer.echo(f"# {ds.name}: {ds.train.n_sessions} train sessions, {hist.n_queries} prefixes, n={n}")
        for mname in [m.strip() for m in models.split(",") if m.strip()]:
            params = tuned.get(mname, {})
            model = create_model(mname, **params).fit(ds.train)
            t0 = time.perf_counter()
            model.recommend(hist.slice(0, 1), n)
            warm = time.perf_counter() - t0
            t_ref, t_new = [], []
            for _ in range(rounds):
                t0 = time.perf_counter()
                ref = model._recommend_reference(hist, n)
                t_ref.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                new = model.recommend(hist, n)
                t_new.append(time.perf_counter() - t0)
            t_one_ref, t_one_new = [], []
            if single:
                step = max(1, hist.n_queries // single)
                ones = [hist.slice(i, i + 1) for i in range(0, hist.n_queries, step)][:single]
                for _ in range(rounds):
                    for fn, out in ((model._recommend_reference, t_one_ref), (model.recommend, t_one_new)):
                        t0 = time.perf_counter()
                        for one in ones:
                            fn(one, n)
                        out.append((time.perf_counter() - t0) / len(ones))
            ids_diff, beyond_ties, rel = compare(new, ref)
            ok = beyond_ties == 0 and rel <= 1e-6
            if not ok:
                failed.append(f"{name}/{mname}")
            row = {"set": name, "model": mname, "params": params, "prefixes": hist.n_queries,
                   "reference_pps": hist.n_queries / float(np.median(t_ref)),
                   "kernel_pps": hist.n_queries / float(np.median(t_new)),
                   "speedup": float(np.median(t_ref) / np.median(t_new)),
                   "single_reference_us": 1e6 * float(np.median(t_one_ref)) if single else None,
                   "single_kernel_us": 1e6 * float(np.median(t_one_new)) if single else None,
                   "rows_ids_differ": ids_diff, "rows_differ_beyond_ties": beyond_ties, "max_rel_score_diff": rel, "first_call_s": warm,
                   "reference_s": [round(t, 3) for t in t_ref], "kernel_s": [round(t, 3) for t in t_new]}
            rows.append(row)
            typer.echo(f"  {mname}: reference {row['reference_s']} s, kernel {row['kernel_s']} s, "
                       f"ids differ in {ids_diff} rows ({beyond_ties} beyond the order of equal scores), "
                       f"max rel score diff {rel:.1e}")
    typer.echo("\n| set | model | prefixes | reference pref/s | kernel pref/s | speed-up | one-prefix call, "
               "reference / kernel | lists |")
    typer.echo("|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        one = (f"{r['single_reference_us']:,.0f} / {r['single_kernel_us']:,.0f} µs"
               if r["single_kernel_us"] is not None else "-")
        if r["rows_ids_differ"] == 0:
            lists = "identical"
        elif r["rows_differ_beyond_ties"] == 0:
            lists = f"identical but for the order of equal scores in {r['rows_ids_differ']} rows"
        else:
            lists = f"**{r['rows_differ_beyond_ties']} rows differ**"
        typer.echo(f"| {r['set']} | {r['model']} | {r['prefixes']:,} | {r['reference_pps']:,.0f} | "
                   f"{r['kernel_pps']:,.0f} | {r['speedup']:.1f}x | {one} | {lists} (max rel score diff "
                   f"{r['max_rel_score_diff']:.0e}) |")
    typer.echo(json.dumps({"rounds": rounds, "n": n, "rows": rows}))
    if failed:
        typer.echo(f"lists differ: {', '.join(failed)}", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
