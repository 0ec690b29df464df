"""``fusionrec eval``: fit registered recommenders on a dataset directory and print the next-item table."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import typer

from flows.cli import app
from models.data import FORMATS, load_dataset, validation_split
from models.errors import ModelFitError
from models.evaluate import EvalReport, fit_and_evaluate
from models.registry import REGISTRY, create_model

__all__ = ["eval_command", "run_eval", "format_table", "summary_json", "parse_overrides", "read_params_file"]

QUICK_QUERIES = 3000
"""Test prefixes scored per model under ``--quick``."""

KS = (5, 10, 20)


def parse_overrides(pairs: list[str]) -> dict[str, dict[str, object]]:
    """``["vsknn.k=100", "stan.lambda_spw=2.5"]`` -> ``{"vsknn": {"k": 100}, "stan": {"lambda_spw": 2.5}}``.

    Values are read as JSON when they parse (numbers, booleans, null, quoted strings), else as
    plain strings.

    Raises
    ------
    typer.BadParameter
        If an entry is not ``model.param=value``.
    """
    out: dict[str, dict[str, object]] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        model, dot, param = key.partition(".")
        if not sep or not dot or not model or not param:
            raise typer.BadParameter(f"--set: expected model.param=value; got {pair!r}")
        try:
            value: object = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(model, {})[param] = value
    return out


def read_params_file(path: Path) -> dict[str, dict[str, object]]:
    """Per-model constructor parameters from a JSON file ``{model: {param: value}}``.

    Raises
    ------
    ValueError
        If the file is not such an object (the message names the file).
    """
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--params-file {path}: cannot read JSON ({exc})") from exc
    if not isinstance(obj, dict) or not all(isinstance(v, dict) for v in obj.values()):
        raise ValueError(f"--params-file {path}: expected {{model: {{param: value}}}}")
    return {str(k): dict(v) for k, v in obj.items()}


def run_eval(data_dir: Path, fmt: str, models: list[str], *, max_queries: int | None = None,
             split: str = "test", valid_days: float | None = None, valid_frac: float = 0.1,
             overrides: dict[str, dict[str, object]] | None = None, batch_size: int = 500,
             seed: int = 0) -> tuple[str, list[EvalReport]]:
    """Load ``data_dir``, fit and evaluate each model, return (dataset name, reports).

    Parameters
    ----------
    data_dir : Path
    fmt : str
        One of ``models.data.FORMATS``.
    models : list of str
        Registry names.
    max_queries : int, optional
        Seeded sample of test prefixes.
    split : {"test", "valid"}
        ``valid`` evaluates on the last sessions of train (``validation_split``), for tuning.
    valid_days, valid_frac : see ``models.data.validation_split``.
    overrides : dict, optional
        Per-model constructor overrides (from ``--set``).

    Raises
    ------
    ValueError
        For no model, an unknown or repeated model, an unknown format or split, a bad hyper-parameter, a split that gives
        no queries, or a model whose fit fails (``ModelFitError``; the message names the model).
    """
    if not models:
        raise ValueError(f"models: none given; registered: {', '.join(REGISTRY)}")
    unknown = [m for m in models if m not in REGISTRY]
    if unknown:
        raise ValueError(f"models: unknown {unknown}; registered: {', '.join(REGISTRY)}")
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:  # it was fitted and scored once per mention, with one row each but one entry in the JSON line
        raise ValueError(f"models: {repeated} given more than once; name each model once (--set configures it)")
    if split not in ("test", "valid"):
        raise ValueError(f"split: must be 'test' or 'valid'; got {split!r}")
    overrides = overrides or {}
    built = [(name, create_model(name, **overrides.get(name, {}))) for name in models]  # bad params: before loading
    data = load_dataset(data_dir, fmt)
    if split == "valid":
        data = validation_split(data, days=valid_days, frac=valid_frac)
    log = logging.getLogger(__name__)
    log.info("%s: %d train events, %d sessions, %d items; %d test prefixes (%d test events dropped as unseen)",
             data.name, data.train.n_events, data.train.n_sessions, data.train.n_items, data.test.n_queries,
             data.n_dropped_test)
    if not data.test.n_queries:  # every metric would be 0/0: refuse rather than print a table of nan
        what = "test split" if split == "test" else "validation split (--split valid)"
        raise ValueError(f"the {what} of {data_dir} gives no queries ({data.test.sessions.n_queries} test sessions usable, "
                         f"{data.n_dropped_test} test events dropped as unseen in training; a query "
                         "needs a session with at least 2 events whose items appear in training)")
    if data.cleaning is not None:  # Online Retail: what the shared cleaning rule did (models/data/retail_cleaning.py)
        for line in data.cleaning.lines():  # type: ignore[attr-defined]
            log.info("cleaning: %s", line)
    reports = []
    for name, model in built:
        try:
            reports.append(fit_and_evaluate(name, model, data, ks=KS, max_queries=max_queries,
                                            batch_size=batch_size, seed=seed))
        except ModelFitError as exc:  # e.g. a log too small for the model: name it, no traceback
            raise ValueError(f"{name}: cannot fit on {data.name}: {exc}") from exc
    return data.name, reports


def format_table(reports: list[EvalReport]) -> str:
    """A fixed-width table: one row per model, HR/MRR @5/10/20, P/R/MAP@20, coverage, pop-bias, timings."""
    cols = ([f"HR@{k}" for k in KS] + [f"MRR@{k}" for k in KS]
            + ["P@20", "R@20", "MAP@20", "Coverage@20", "Popularity@20"])
    head = ["model", *[c.replace("Coverage", "Cov").replace("Popularity", "Pop") for c in cols],
            "train s", "pref/s", "peak MB"]
    rows = []
    for r in reports:
        rows.append([r.model, *[f"{r.metrics[c]:.4f}" for c in cols], f"{r.train_s:.1f}",
                     f"{r.prefixes_per_s:.0f}", f"{r.peak_mb:.0f}"])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def summary_json(dataset: str, reports: list[EvalReport]) -> str:
    """One JSON line: each model's HR@20, MRR@20, train and score seconds (null where undefined)."""
    return json.dumps({
        "dataset": dataset,
        "n_queries": reports[0].n_queries if reports else 0,
        "models": {r.model: {"HR@20": _num(r.metrics["HR@20"], 6), "MRR@20": _num(r.metrics["MRR@20"], 6),
                             "train_s": _num(r.train_s, 3), "score_s": _num(r.score_s, 3)} for r in reports},
    }, allow_nan=False)


def _num(x: float, digits: int) -> float | None:
    """``x`` rounded; None (JSON null) when undefined (NaN, e.g. a metric over no prefixes): NaN is not JSON."""
    return round(x, digits) if math.isfinite(x) else None


@app.command("eval")
def eval_command(
    data: Path = typer.Option(..., "--data", "--dataset", help="Dataset directory."),
    fmt: str = typer.Option("sessionrec", "--format", help=f"One of: {', '.join(FORMATS)}."),
    models: str = typer.Option("pop,sknn,vsknn,stan,vstan", "--models", help="Comma-separated registry names."),
    quick: bool = typer.Option(False, "--quick", help=f"Score a seeded sample of {QUICK_QUERIES} test prefixes."),
    max_queries: int | None = typer.Option(None, "--max-queries", min=1,
                                            help="Score a seeded sample of this many prefixes."),
    split: str = typer.Option("test", "--split", help="'test', or 'valid' (last sessions of train; for tuning)."),
    valid_days: float | None = typer.Option(None, "--valid-days",
                                            help="Validation = sessions ending in the last N days (N > 0)."),
    valid_frac: float | None = typer.Option(None, "--valid-frac", help=(
        "Validation = last fraction of sessions, in (0, 1) (default 0.1; not with --valid-days).")),
    set_: list[str] = typer.Option([], "--set", help="Override a hyper-parameter: model.param=value (repeatable)."),
    params_file: Path | None = typer.Option(None, "--params-file",
                                            help="JSON {model: {param: value}} (e.g. from bench/tune_baselines.py); --set wins."),
    batch_size: int = typer.Option(500, "--batch-size", min=1, help="Prefixes per recommend call."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the prefix sample."),
) -> None:
    """Fit and evaluate recommenders; print a table and end with one JSON line."""
    # open ranges (typer's min/max are closed): usage errors naming the option, before the dataset is loaded
    if valid_days is not None and not (valid_days > 0 and math.isfinite(valid_days)):
        raise typer.BadParameter(f"must be a positive number of days; got {valid_days}", param_hint="--valid-days")
    if valid_frac is not None and not 0 < valid_frac < 1:
        raise typer.BadParameter(f"must be a fraction in (0, 1); got {valid_frac}", param_hint="--valid-frac")
    # options that would otherwise be silently ignored
    given = [hint for hint, value in (("--valid-days", valid_days), ("--valid-frac", valid_frac)) if value is not None]
    if split != "valid" and given:
        raise typer.BadParameter(f"applies only with --split valid; got --split {split}", param_hint=given[0])
    if len(given) == 2:
        raise typer.BadParameter("give one of --valid-days and --valid-frac", param_hint="--valid-frac")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    names = [m.strip() for m in models.split(",") if m.strip()]
    limit = max_queries if max_queries is not None else (QUICK_QUERIES if quick else None)
    try:
        overrides = read_params_file(params_file) if params_file else {}
        for model, params in parse_overrides(set_).items():
            if model not in names:  # --params-file may hold other models (a tuned file covers many)
                raise typer.BadParameter(f"model {model!r} is not evaluated (--models {','.join(names)}); "
                                         f"got {next(p for p in set_ if p.startswith(model + '.'))!r}",
                                         param_hint="--set")
            overrides.setdefault(model, {}).update(params)
        name, reports = run_eval(data, fmt, names, max_queries=limit, split=split, valid_days=valid_days,
                                 valid_frac=0.1 if valid_frac is None else valid_frac, overrides=overrides,
                                 batch_size=batch_size, seed=seed)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(f"# {name}: {reports[0].n_queries if reports else 0} prefixes")
    typer.echo(format_table(reports))
    typer.echo(summary_json(name, reports))
