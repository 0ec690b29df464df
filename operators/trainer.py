"""One trainer run: train a challenger on the lake, gate it against the serving champion, promote or not.

A run (``fusionrec trainer --every 6h`` repeats it):

1. The window is the newest ``trainer.window_days`` of the lake; its newest
   ``gate.holdout_hours`` are held out. The challenger trains on the rest, with the catalog as
   of the holdout's start.
2. The challenger is written as a version (not serving) and loaded back from disk, so what is
   scored is what would serve; the champion is the version LATEST points at.
3. Both are scored on the same held-out prefixes (``operators/gate.py``); the challenger is
   promoted only if it beats the champion by ``gate.margin`` on ``gate.metric``.
4. The challenger's card records the window, counts, both models' metrics, the verdict and
   why; the run is appended to ``trainer_runs.jsonl`` (the dashboard and ``/metrics`` read it).

A promoted challenger is served as gated, not retrained on the full window: what goes live is
exactly what was measured, and the held-out slice (at most ``gate.holdout_hours`` old) enters
the next run's training.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.base import InteractionLog
from models.errors import ModelFormatError
from operators.gate import GateVerdict, decide, evaluate_versions
from operators.lake.read import read_catalog
from operators.lake.training import read_window, side_data, window_bounds, window_card
from operators.model_registry import append_run, iso, promote, write_card
from operators.model_version import latest_version_path, load_version
from operators.settings import Settings
from operators.training import fit_model, write_fitted

__all__ = ["run_once"]

log = logging.getLogger(__name__)


def run_once(settings: Settings, *, model: str | None = None,
             transform: Callable[[InteractionLog], InteractionLog] | None = None, **params: object) -> dict[str, Any]:
    """One trainer run; never raises (a failure is a run with verdict ``failed`` and the error).

    A champion that this version cannot load (``ModelFormatError``: saved by an older fusionrec) is
    left out of the gate; the challenger is then promoted and the reason says so.

    Parameters
    ----------
    settings : Settings
        ``lake``, ``trainer``, ``gate`` and ``stream.model_dir`` are used.
    model : str, optional
        Registered model of the challenger (default ``trainer.model``).
    transform : callable, optional
        Applied to the challenger's training log before fitting (tests: shuffled or truncated data).
    **params
        Hyper-parameters of the challenger.

    Returns
    -------
    The run record also appended to ``model_dir/trainer_runs.jsonl``: ``verdict`` (promoted,
    rejected, skipped, failed), ``reason``, ``challenger``, ``champion``, ``metrics``, ``duration_s``.
    """
    t0 = time.perf_counter()
    model = model or settings.trainer.model
    model_dir = Path(settings.stream.model_dir)
    run: dict[str, Any] = {"model": model, "challenger": None, "champion": None}
    try:
        run.update(_run(settings, model, transform, params))
    except Exception as exc:  # the trainer keeps running; the run says what broke
        log.exception("trainer run failed")
        run.update(verdict="failed", reason=f"{type(exc).__name__}: {exc}", error=traceback.format_exc(limit=5))
    run["duration_s"] = round(time.perf_counter() - t0, 3)
    append_run(model_dir, run)
    log.info("trainer run: %s (%s) in %.1f s", run["verdict"], run["reason"], run["duration_s"])
    return run


def _run(settings: Settings, model: str, transform: Callable[[InteractionLog], InteractionLog] | None,
         params: dict[str, object]) -> dict[str, Any]:
    tr, gate = settings.trainer, settings.gate
    lake_dir = Path(settings.lake.lake_dir)
    try:
        start, end = window_bounds(settings, tr.window_days * 86400.0, lake_dir)
    except FileNotFoundError as exc:
        return {"verdict": "skipped", "reason": str(exc)}
    cut = end - gate.holdout_hours * 3600.0
    t0 = time.perf_counter()
    train = read_window(settings, start, cut, lake_dir)
    holdout = read_window(settings, cut, end, lake_dir)
    if train.log.n_events < tr.min_events:
        return {"verdict": "skipped", "reason": f"{train.log.n_events} training interactions before the holdout "
                                                f"< trainer.min_events={tr.min_events}"}
    catalog = read_catalog(lake_dir, cut)
    il = transform(train.log) if transform is not None else train.log
    assert il.item_ids is not None
    read_s = time.perf_counter() - t0
    rec, fit_s = fit_model(il, settings, model, side=side_data(catalog, il.item_ids, settings.api.vector_attribute),
                           **params)
    path = write_fitted(rec, il, settings, model, fit_s, promote=False)
    challenger = load_version(path)
    champ_path = latest_version_path(settings.stream.model_dir)
    versions = {"challenger": challenger}
    champion_card: dict[str, Any] | None = None
    unreadable: str | None = None
    if champ_path is not None:
        try:
            versions["champion"] = load_version(champ_path)
            champion_card = {"version": champ_path.name, **versions["champion"].manifest}
        except ModelFormatError as exc:  # saved by an older fusionrec: nothing can serve it any more
            unreadable = f"{champ_path.name}: {exc}"
            log.warning("champion %s cannot be read by this version (%s): the gate runs without it",
                        champ_path.name, exc)
    t1 = time.perf_counter()
    metrics, n_queries = evaluate_versions(holdout.log, versions, max_queries=gate.max_queries, seed=settings.seed)
    eval_s = time.perf_counter() - t1
    if unreadable is not None:  # nothing can serve the champion: the challenger replaces it unconditionally
        verdict = GateVerdict(True, f"the champion cannot be read by this version ({unreadable}): "
                                    "promoted without a comparison")
    else:
        verdict = decide(metrics["challenger"], metrics.get("champion"), metric=gate.metric, margin=gate.margin,
                         n_queries=n_queries, min_queries=gate.min_queries)
    card = window_card(train, catalog_items=len(catalog), model=model, read_s=read_s, fit_s=fit_s)
    card["gate"] = {"verdict": "promoted" if verdict.promoted else "rejected", "reason": verdict.reason,
                    "metric": gate.metric, "margin": gate.margin, "holdout": {
                        "start": iso(cut), "end": iso(end), "events": holdout.n_rows, "queries": n_queries},
                    "challenger": metrics["challenger"], "champion": metrics.get("champion"),
                    "champion_version": champ_path.name if champ_path else None, "eval_s": round(eval_s, 3),
                    "champion_unreadable": unreadable}
    if transform is not None:
        card["gate"]["transform"] = getattr(transform, "__name__", repr(transform))
    write_card(path, card)
    if verdict.promoted:
        promote(settings.stream.model_dir, path.name, reason=f"trainer: {verdict.reason}")
    return {"verdict": card["gate"]["verdict"], "reason": verdict.reason, "challenger": path.name,
            "champion": champ_path.name if champ_path else None, "metric": gate.metric,
            "metrics": {"challenger": metrics["challenger"].get(gate.metric),
                        "champion": (metrics.get("champion") or {}).get(gate.metric)},
            "queries": n_queries, "window": card["window"], "train_s": round(fit_s, 3),
            "champion_card": {k: champion_card.get(k) for k in ("version", "model_name", "n_events")}
            if champion_card else None}
