"""Fusion scoring speed, side by side: one saved ``SessionFusion`` scored by two source trees.

    .venv/bin/python bench/fusion_scoring.py DATA_DIR --model var/fusion/rr [--format srgnn]
        [--params-file bench/tuned/<set>.json] [--baseline-rev 1f1b7a8] [--rounds 3] [--batch 500]
        [--max-queries 0] [--epochs 1]

The model is fitted once and saved under ``--model`` if that directory does not exist (registry
parameters, the tuned kNN parameters of ``--params-file``, EMDE for ``--epochs`` whole epochs,
no EMDE refit: scoring cost does not depend on how long EMDE trained). Each round then scores all
test prefixes (or ``--max-queries`` of them) in batches of ``--batch`` (the evaluation harness's
size) in a fresh process per source tree: this checkout, and ``--baseline-rev`` checked out with
``git worktree`` under ``var/bench_src/``, which reads the same saved model. The two alternate
within each round, so machine load hits both. A warm-up batch (numba's cached kernels, LightGBM)
is scored before timing. The table gives each tree's median prefixes/s over rounds and their
ratio, and the process CPU time per prefix (all threads; on a shared box it moves far less with
the load than the wall clock); the bench exits non-zero if the two trees' lists differ anywhere (a speed-up that changes
the lists is a model change, not a speed-up).
"""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import typer

ROOT = Path(__file__).resolve().parents[1]
app = typer.Typer(add_completion=False)


def _fit(data: Path, fmt: str, params_file: Path | None, model: Path, epochs: int) -> None:
    from models.data import load_dataset
    from models.hybrid import SessionFusion

    params = json.loads(params_file.read_text()).get("fusion", {}) if params_file else {}
    ds = load_dataset(data, fmt)
    SessionFusion(**{**params, "emde": {**params.get("emde", {}), "epochs": epochs}, "refit_emde": False}
                  ).fit(ds.train).save(model)


def _score(data: Path, fmt: str, model: Path, batch: int, max_queries: int, out: Path) -> tuple[float, float]:
    """Score the test prefixes with the tree on ``sys.path``; save the ids; return (prefixes/s,
    process CPU ms per prefix, all threads)."""
    from models.data import load_dataset
    from models.hybrid import SessionFusion

    fusion = SessionFusion.load(model)
    hist = load_dataset(data, fmt).test.prefixes()
    n = hist.n_queries if max_queries <= 0 else min(max_queries, hist.n_queries)
    fusion.recommend(hist.slice(0, min(n, batch)), 20)  # warm-up: cached kernels, LightGBM
    t0, c0 = time.perf_counter(), time.process_time()
    ids = [fusion.recommend(hist.slice(lo, min(n, lo + batch)), 20)[0] for lo in range(0, n, batch)]
    rate, cpu_ms = n / (time.perf_counter() - t0), 1000.0 * (time.process_time() - c0) / n
    np.save(out, np.concatenate(ids))
    return rate, cpu_ms


@app.command()
def main(data: Path = typer.Argument(..., help="dataset directory"),
         model: Path = typer.Option(..., help="saved fusion (fitted here if missing)"),
         fmt: str = typer.Option("srgnn", "--format"),
         params_file: Path | None = typer.Option(None, help="tuned parameters (its 'fusion' entry)"),
         baseline_rev: str = typer.Option("", help="git revision to compare against ('' = none)"),
         rounds: int = typer.Option(3, min=1), batch: int = typer.Option(500, min=1),
         max_queries: int = typer.Option(0, help="0 = all test prefixes"),
         epochs: int = typer.Option(1, min=1, help="EMDE epochs when fitting the model"),
         worker_src: Path | None = typer.Option(None, hidden=True),
         worker_out: Path | None = typer.Option(None, hidden=True)) -> None:
    if worker_src is not None:  # one timed pass in this process, with worker_src's models
        sys.path.insert(0, str(worker_src))
        rate, cpu_ms = _score(data, fmt, model, batch, max_queries, worker_out)
        print(json.dumps({"rate": rate, "cpu_ms": cpu_ms}))
        return
    sys.path.insert(0, str(ROOT))
    data, model = data.resolve(), model.resolve()  # the workers run in the other tree's directory
    if not model.exists():
        _fit(data, fmt, params_file, model, epochs)
    trees = {"this checkout": ROOT}
    if baseline_rev:
        src = ROOT / "var" / "bench_src" / baseline_rev
        if not src.exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(src), baseline_rev], check=True)
        trees = {f"baseline {baseline_rev}": src, **trees}
    rates: dict[str, list[float]] = {name: [] for name in trees}
    cpus: dict[str, list[float]] = {name: [] for name in trees}
    outs = {name: ROOT / "var" / "bench_src" / f"ids_{i}.npy" for i, name in enumerate(trees)}
    outs[next(iter(trees))].parent.mkdir(parents=True, exist_ok=True)
    for r in range(rounds):
        for name, src in trees.items():
            cmd = [sys.executable, str(Path(__file__).resolve()), str(data), "--model", str(model), "--format", fmt,
                   "--batch", str(batch), "--max-queries", str(max_queries),
                   "--worker-src", str(src), "--worker-out", str(outs[name])]
            res = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=src)
            got = json.loads(res.stdout.strip().splitlines()[-1])
            rates[name].append(got["rate"])
            cpus[name].append(got["cpu_ms"])
            print(f"round {r + 1} {name}: {rates[name][-1]:,.0f} prefixes/s, {cpus[name][-1]:.3f} CPU ms/prefix",
                  flush=True)
    ids = [np.load(p) for p in outs.values()]
    same = all(np.array_equal(ids[0], x) for x in ids[1:])
    print(f"\n{data.name}, batches of {batch}, {len(ids[0]):,} prefixes, {rounds} rounds\n")
    print("| source tree | median prefixes/s | rounds | median CPU ms/prefix | rounds |\n|---|--:|---|--:|---|")
    for name, rs in rates.items():
        cs = cpus[name]
        print(f"| {name} | {statistics.median(rs):,.0f} | {', '.join(f'{x:,.0f}' for x in rs)} | "
              f"{statistics.median(cs):.3f} | {', '.join(f'{x:.3f}' for x in cs)} |")
    if len(trees) == 2:
        a, b = (statistics.median(rs) for rs in rates.values())
        ca, cb = (statistics.median(cs) for cs in cpus.values())
        print(f"\nratio (this / baseline): {b / a:.2f}x prefixes/s, {ca / cb:.2f}x less CPU per prefix; "
              f"lists identical: {same}")
    print("\ncommand: " + shlex.join([sys.executable, *sys.argv]))
    if not same:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
