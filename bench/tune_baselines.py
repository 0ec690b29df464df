"""Tune the session baselines on a validation split carved from train (never on test), same budget each.

    python bench/tune_baselines.py --data DIR --format F [--models sknn,vsknn,stan,vstan]
        [--trials 16] [--max-queries 2000] [--valid-days D | --valid-frac 0.1] --out bench/tuned/NAME.json

Each model gets the registry default plus ``trials - 1`` random configurations from the grids
below (the spaces of session-rec's ``conf/opt`` files; ``--space-file`` adds one for any other
registered model, e.g. EMDE), evaluated on a seeded sample of
validation prefixes; the objective is HR@20 (MRR@20 breaks ties). The best parameters go to
``--out`` as ``{model: {param: value}}`` for ``fusionrec eval --params-file``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import typer

from models.data import load_dataset, validation_split
from models.evaluate import fit_and_evaluate
from models.registry import REGISTRY, create_model

SPACES: dict[str, dict[str, list[object]]] = {
    "itemknn": {"n_sims": [50, 100, 200, 500], "lmbd": [0, 10, 20, 50, 100], "alpha": [0.25, 0.5, 0.75]},
    "sknn": {"k": [50, 100, 200, 500, 1000], "sample_size": [500, 1000, 2500, 5000, 10000],
             "similarity": ["cosine", "jaccard"]},
    "vsknn": {"k": [50, 100, 200, 500, 1000], "sample_size": [500, 1000, 2500, 5000, 10000],
              "weighting": ["same", "div", "linear", "quadratic", "log"],
              "weighting_score": ["same", "div", "linear", "quadratic", "log"],
              "idf_weighting": [0.0, 1.0, 2.0, 5.0, 10.0]},
    "stan": {"k": [100, 200, 500, 1000, 2000], "sample_size": [1000, 2500, 5000, 10000],
             "lambda_spw": [0.5, 1.02, 2.0, 4.0, 8.0], "lambda_snh": [1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0],
             "lambda_inh": [0.5, 1.02, 2.05, 4.0, 8.0]},
    "vstan": {"k": [100, 200, 500, 1000, 2000], "sample_size": [1000, 2500, 5000, 10000],
              "lambda_spw": [0.5, 1.02, 2.0, 4.0, 8.0], "lambda_snh": [1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0],
              "lambda_inh": [0.5, 1.02, 2.05, 4.0, 8.0], "lambda_ipw": [0.5, 1.02, 2.0, 4.0, 8.0],
              "lambda_idf": [1.0, 2.0, 5.0, 10.0]},
}


def draw(space: dict[str, list[object]], rng: np.random.Generator) -> dict[str, object]:
    """One random configuration; ``k`` never exceeds ``sample_size``."""
    cfg = {name: values[int(rng.integers(len(values)))] for name, values in space.items()}
    if "k" in cfg and "sample_size" in cfg:
        cfg["k"] = min(int(cfg["k"]), int(cfg["sample_size"]))
    return cfg


def main(
    data: Path = typer.Option(..., "--data"),
    fmt: str = typer.Option("sessionrec", "--format"),
    models: str = typer.Option("sknn,vsknn,stan,vstan", "--models"),
    trials: int = typer.Option(16, "--trials", help="Configurations per model (the default included)."),
    max_queries: int = typer.Option(2000, "--max-queries", help="Validation prefixes per trial."),
    valid_days: float | None = typer.Option(None, "--valid-days"),
    valid_frac: float = typer.Option(0.1, "--valid-frac"),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(..., "--out", help="JSON file for the best parameters."),
    space_file: Path | None = typer.Option(None, "--space-file",
                                           help="JSON {model: {param: [values]}} added to / replacing SPACES."),
) -> None:
    """Random search per model on the validation split; write the best parameters."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spaces = {**SPACES, **(json.loads(space_file.read_text()) if space_file else {})}
    ds = validation_split(load_dataset(data, fmt), days=valid_days, frac=valid_frac)
    typer.echo(f"# {ds.name}: {ds.train.n_sessions} train sessions, {ds.test.n_queries} validation prefixes "
               f"(sampling {max_queries}); objective HR@20")
    best: dict[str, dict[str, object]] = {}
    rng = np.random.default_rng(seed)
    for name in [m.strip() for m in models.split(",") if m.strip()]:
        if name not in REGISTRY:
            raise typer.BadParameter(f"--models: unknown {name!r}; registered: {', '.join(REGISTRY)}")
        defaults = dict(REGISTRY[name].params)
        if name not in spaces:
            typer.echo(f"# {name}: no search space (give one with --space-file); evaluating its defaults only")
        configs, seen = [defaults], {json.dumps(defaults, sort_keys=True)}
        for _ in range(50 * trials if name in spaces else 0):   # distinct draws, as many as the space holds
            if len(configs) >= trials:
                break
            cfg = {**defaults, **draw(spaces[name], rng)}
            if json.dumps(cfg, sort_keys=True) not in seen:
                seen.add(json.dumps(cfg, sort_keys=True))
                configs.append(cfg)
        scored = []
        for cfg in configs:
            rep = fit_and_evaluate(name, create_model(name, **cfg), ds, ks=(20,), max_queries=max_queries, seed=seed)
            scored.append((rep.metrics["HR@20"], rep.metrics["MRR@20"], cfg))
            typer.echo(f"{name:8s} HR@20 {rep.metrics['HR@20']:.4f} MRR@20 {rep.metrics['MRR@20']:.4f} "
                       f"({rep.prefixes_per_s:.0f} pref/s) {json.dumps(cfg, sort_keys=True)}")
        hr, mrr, cfg = max(scored, key=lambda x: (x[0], x[1]))
        best[name] = cfg
        typer.echo(f"best {name}: HR@20 {hr:.4f} MRR@20 {mrr:.4f} {json.dumps(cfg, sort_keys=True)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(best, indent=2, sort_keys=True) + "\n")
    typer.echo(f"wrote {out}")


if __name__ == "__main__":
    typer.run(main)
