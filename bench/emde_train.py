"""EMDE training speed and convergence on validation splits: examples/s, seconds and loss per epoch.

    python bench/emde_train.py [--datasets retailrocket_mtd,yoochoose1_64_srgnn] [--rounds 1]
        [--epochs N] [--queries 5000] [--set key=json ...] [--src DIR] [--out FILE]

For each dataset: ``models.data.load_dataset`` + ``validation_split(frac=0.1)`` (the test set is
never touched); EMDE with the registry's ``emde`` parameters (``--set key=value`` overrides one,
the value parsed as JSON, e.g. ``--set 'views=["past","last"]'``), whole epochs, no wall-clock cap;
then HR@20 / MRR@20 on a seeded sample of ``--queries`` validation prefixes
(``models.evaluate.sample_queries``) and a SHA-256 of the top-20 lists (equal hashes across runs
= bit-identical predictions).

Per-epoch seconds come from hooking ``StepLR.step`` (the training loop calls it once at set-up
and once per epoch), so the same measurement works on any revision of ``models/``: ``--src DIR``
puts DIR first on ``sys.path``, e.g. a ``git worktree`` of the old commit, to run the *same*
script against the old code side by side. On a shared box compare ``CPU s/epoch`` (process CPU
time, both threads) as well as wall seconds. ``seconds/epoch`` includes building input sketches
when the code builds them per batch; the one-time set-up (codes, CSR sketches) is
``fit s - sum(epoch s)``.

Prints one markdown row per (dataset, round) and a JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

DATA = Path("/work/shared/datasets")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="retailrocket_mtd,yoochoose1_64_srgnn")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=None, help="default: the registry's")
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override an EMDE parameter")
    ap.add_argument("--src", type=Path, default=None, help="import models/ from this tree (old revision)")
    ap.add_argument("--steps", type=int, default=0,
                    help="speed only: time optimiser steps 10..10+N (wall and CPU), then stop the fit")
    ap.add_argument("--label", default="")
    ap.add_argument("--out", type=Path, default=None, help="append the JSON line to this file")
    args = ap.parse_args()
    if args.src is not None:
        sys.path.insert(0, str(args.src.resolve()))
    import numpy as np
    import torch

    from models.data import load_dataset, validation_split
    from models.emde import EMDE
    from models.evaluate import rank_queries, sample_queries
    from models.metrics import hr_at_k, mrr_at_k
    from models.registry import REGISTRY

    torch.set_num_threads(min(args.threads, 2))
    src = Path(sys.modules["models"].__file__).parent.parent
    rev = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    params = {**dict(REGISTRY["emde"].params), **overrides}
    if args.epochs is not None:
        params["epochs"] = args.epochs
    params.pop("max_train_seconds", None)
    marks: list[float] = []
    cpu_marks: list[float] = []
    orig_step = torch.optim.lr_scheduler.StepLR.step

    def step(self, *a, **k):  # noqa: ANN001, ANN202
        marks.append(time.perf_counter())
        cpu_marks.append(time.process_time())
        return orig_step(self, *a, **k)

    torch.optim.lr_scheduler.StepLR.step = step
    if args.steps:
        return _steps_only(args, params, load_dataset, validation_split, EMDE)
    rows = []
    print("| code | dataset | round | examples | epochs | s/epoch | CPU s/epoch | examples/s | loss per epoch | "
          "fit s | HR@20 | MRR@20 | lists sha256 |")
    print("|---|---|---:|---:|---:|---|---|---:|---|---:|---:|---:|---|")
    for name in [d for d in args.datasets.split(",") if d]:
        fmt = "sessionrec" if name.startswith("rsc15") else "srgnn"
        valid = validation_split(load_dataset(DATA / name, fmt), frac=0.1)
        task = sample_queries(valid.test, args.queries)
        lens = np.diff(valid.train.session_bounds())
        n_ex = int(np.maximum(lens - 1, 0).sum())
        for r in range(args.rounds):
            marks.clear()
            cpu_marks.clear()
            model = EMDE(**params)
            t0 = time.perf_counter()
            model.fit(valid.train)
            fit_s = time.perf_counter() - t0
            epoch_s = list(np.diff(marks[-(params["epochs"] + 1):]))
            epoch_cpu_s = list(np.diff(cpu_marks[-(params["epochs"] + 1):]))
            recs, _ = rank_queries(model, task, 20, warmup=False)
            nxt = task.next_items()
            row = {"code": args.label or rev, "dataset": name, "round": r, "examples": n_ex,
                   "epochs": params["epochs"], "epoch_s": epoch_s, "epoch_cpu_s": epoch_cpu_s,
                   "examples_per_s": n_ex * len(epoch_s) / max(sum(epoch_s), 1e-9),
                   "loss": [float(x) for x in model.train_loss_], "fit_s": fit_s,
                   "HR@20": hr_at_k(recs, nxt, 20), "MRR@20": mrr_at_k(recs, nxt, 20),
                   "sha256": hashlib.sha256(np.ascontiguousarray(recs).tobytes()).hexdigest()[:12],
                   "params": {k: v for k, v in params.items() if k != "modalities"}}
            rows.append(row)
            print(f"| {row['code']} | {name} | {r} | {n_ex} | {row['epochs']} | "
                  f"{' / '.join(f'{s:.0f}' for s in epoch_s)} | {' / '.join(f'{s:.0f}' for s in epoch_cpu_s)} | "
                  f"{row['examples_per_s']:.0f} | "
                  f"{' / '.join(f'{x:.4f}' for x in row['loss'])} | {fit_s:.0f} | {row['HR@20']:.4f} | "
                  f"{row['MRR@20']:.4f} | {row['sha256']} |", flush=True)
    line = json.dumps({"command": " ".join(["python"] + sys.argv), "rev": rev, "overrides": overrides,
                       "rows": rows}, default=float)
    print(line)
    if args.out is not None:
        with args.out.open("a") as f:
            f.write(line + "\n")


class _Enough(Exception):
    """Raised by the step hook once the measured steps are done."""


def _steps_only(args, params, load_dataset, validation_split, emde_cls) -> None:  # noqa: ANN001
    """Examples/s over optimiser steps 10..10+steps (set-up excluded), wall and CPU, per dataset."""
    import torch.optim.optimizer as topt

    for name in [d for d in args.datasets.split(",") if d]:
        fmt = "sessionrec" if name.startswith("rsc15") else "srgnn"
        valid = validation_split(load_dataset(DATA / name, fmt), frac=0.1)
        for r in range(args.rounds):
            ticks: list[tuple[float, float]] = []

            def hook(opt, a, k, ticks=ticks) -> None:  # noqa: ANN001
                ticks.append((time.perf_counter(), time.process_time()))
                if len(ticks) > 10 + args.steps:
                    raise _Enough

            handle = topt.register_optimizer_step_post_hook(hook)
            model = emde_cls(**params)
            try:
                model.fit(valid.train)
            except _Enough:
                pass
            finally:
                handle.remove()
            (w0, c0), (w1, c1) = ticks[10], ticks[10 + args.steps]
            n_ex = args.steps * model.batch_size
            print(json.dumps({"code": args.label, "dataset": name, "round": r, "steps": args.steps,
                              "examples_per_s_wall": n_ex / (w1 - w0), "examples_per_s_cpu": n_ex / (c1 - c0),
                              "s_per_step": (w1 - w0) / args.steps, "cpu_s_per_step": (c1 - c0) / args.steps}),
                  flush=True)


if __name__ == "__main__":
    main()
