"""EMDE readouts and a score-level blend with session kNN, on a validation split (never test).

    python bench/emde_readout.py --data DIR --format srgnn [--epochs 1] [--queries 5000]

Trains EMDE (the registry's ``emde`` parameters, ``epochs`` whole epochs, no wall-clock cap) and
the tuned STAN / V-STAN (``bench/tuned/<dataset>.json``) on ``validation_split(frac=0.1)`` of
train, then scores a seeded sample of validation prefixes with:

* the mean readout (``decoder="mean"``) and the official popularity-corrected decoder
  (``decoder="popularity"``, ``pop_weight`` 0.5 / 1.0);
* a repeat boost: ``+ b * 0.8 ** age`` on items of the prefix (age in positions, 0 = newest),
  added to the summed row log-probabilities;
* a blend ``(1 - w) * knn / max(knn) + w * exp((s - max s) / rows)`` of the kNN top-200 and
  EMDE's readout (popularity decoder + repeat boost 16).

Prints one markdown table (HR@20 / MRR@20) and the command.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
import typer

from models.data import load_dataset, validation_split
from models.emde import EMDE
from models.evaluate import sample_queries
from models.registry import REGISTRY, create_model


def _hr_mrr(scores: np.ndarray, nxt: np.ndarray, k: int = 20) -> tuple[float, float]:
    idx = np.argpartition(-scores, k, axis=1)[:, :k]
    ids = np.take_along_axis(idx, np.argsort(-np.take_along_axis(scores, idx, 1), axis=1), 1)
    hit = ids == nxt[:, None]
    rank = np.argmax(hit, axis=1)
    return float(hit.any(1).mean()), float(np.where(hit.any(1), 1.0 / (rank + 1), 0.0).mean())


def main(data: Path = typer.Option(..., "--data"), fmt: str = typer.Option("srgnn", "--format"),
         epochs: int = typer.Option(1, "--epochs"), queries: int = typer.Option(5000, "--queries")) -> None:
    torch.set_num_threads(2)
    ds = load_dataset(data, fmt)
    valid = validation_split(ds, frac=0.1)
    task = sample_queries(valid.test, queries)
    h, nxt = task.prefixes(), task.next_items()
    rows: list[tuple[str, float, float]] = []
    emde = EMDE(**{**dict(REGISTRY["emde"].params), "epochs": epochs}).fit(valid.train)
    r = emde.item_out_cols_.shape[1]
    raw = emde.layout_.raw_sketches(emde.item_in_cols_, h, emde.neighbours_)
    mean = emde._mean_log_probs(raw) * r
    rows.append(("EMDE, mean readout", *_hr_mrr(mean, nxt)))
    pops = {}
    for w in (0.5, 1.0):
        pop = copy.copy(emde)
        pop.decoder, pop.pop_weight, pop._bias_ = "popularity", w, None
        pops[w] = pop._mean_log_probs(raw) * r
        rows.append((f"EMDE, popularity decoder, pop_weight {w}", *_hr_mrr(pops[w], nxt)))
    lens = np.diff(h.indptr)
    q_of = np.repeat(np.arange(len(lens)), lens)
    age = np.repeat(h.indptr[1:], lens) - 1 - np.arange(len(h.items))
    boosted = {}
    for b in (4.0, 16.0, 64.0):
        s = pops[1.0].copy()
        np.add.at(s, (q_of, h.items), b * 0.8 ** age)
        boosted[b] = s
        rows.append((f"EMDE, popularity decoder + repeat boost {b:g}", *_hr_mrr(s, nxt)))
    tuned = json.loads((Path(__file__).parent / "tuned" / f"{data.name}.json").read_text())
    e = np.exp((boosted[16.0] - boosted[16.0].max(1, keepdims=True)) / r)
    for name in ("stan", "vstan"):
        knn = create_model(name, **tuned.get(name, {})).fit(valid.train)
        ids, sc = knn.recommend(h, 200)
        k = np.zeros_like(e)
        ok = ids >= 0
        k[np.nonzero(ok)[0], ids[ok]] = (sc / np.maximum(sc[:, :1], 1e-12))[ok]
        rows.append((name, *_hr_mrr(k, nxt)))
        for w in (0.2, 0.35, 0.5):
            rows.append((f"blend {name} + EMDE, w_emde {w}", *_hr_mrr((1 - w) * k + w * e, nxt)))
    print(f"\n{data.name}: {task.n_queries} validation prefixes, EMDE {epochs} epoch(s)\n")
    print("| model | HR@20 | MRR@20 |\n|---|---:|---:|")
    for label, hr, mrr in rows:
        print(f"| {label} | {hr:.4f} | {mrr:.4f} |")
    print("\ncommand: " + " ".join(["python"] + sys.argv))


if __name__ == "__main__":
    typer.run(main)
