"""Offline training on an event log: events -> ``InteractionLog`` -> model -> new model version."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from models.base import InteractionLog, Recommender
from models.registry import create_model
from operators.model_registry import code_version, iso, write_card
from operators.model_version import point_latest, write_version
from operators.parse import EventRules, validate_event_dict
from operators.schema import Event, encode_event
from operators.settings import Settings

__all__ = ["events_to_log", "train_model", "weighted_types", "fit_model", "write_fitted", "log_card", "train_covisitation", "read_events_jsonl", "write_events_jsonl"]

log = logging.getLogger(__name__)


def events_to_log(events: Iterable[Event], event_types: list[str]) -> InteractionLog:
    """Build the training log: one row per (event, item), sessions = ``session_id`` or ``user_id``.

    Returns
    -------
    InteractionLog sorted by (session, ts), with ``item_ids`` the shop id of each item_idx
    (in order of first appearance) and ``event_type`` codes indexing ``event_types``.
    Events of types not in ``event_types`` are skipped.
    """
    type_code = {t: i for i, t in enumerate(event_types)}
    items: dict[str, int] = {}
    sessions: dict[str, int] = {}
    sess, item, ts, et = [], [], [], []
    for e in events:
        code = type_code.get(e.type)
        if code is None:
            continue
        s = sessions.setdefault(e.session_id or e.user_id, len(sessions))
        for i in e.item_ids():
            sess.append(s)
            item.append(items.setdefault(i, len(items)))
            ts.append(e.ts)
            et.append(code)
    s_arr = np.asarray(sess, dtype=np.int32)
    t_arr = np.asarray(ts, dtype=np.float64)
    order = np.lexsort((t_arr, s_arr))
    return InteractionLog(session_idx=s_arr[order], item_idx=np.asarray(item, dtype=np.int32)[order],
                          ts=t_arr[order], n_items=len(items), event_type=np.asarray(et, dtype=np.int8)[order],
                          event_types=tuple(event_types), item_ids=tuple(items))


def cleora_item_vectors(log: InteractionLog, dim: int = 64, n_iter: int = 3, seed: int = 0) -> np.ndarray:
    """Cleora embeddings of the session–item hypergraph, one row per item_idx (float32, L2 rows).

    Each session is a hyperedge of its items (clique expansion, ``complex::reflexive::item``);
    items without a session neighbour get the zero vector.
    """
    from models.cleora import build_graph, embed

    assert log.item_ids is not None
    bounds = log.session_bounds()
    ids = np.asarray(log.item_ids, dtype=object)
    rows = [list(ids[log.item_idx[a:b]]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    store = embed(build_graph(rows, "complex::reflexive::item"), dim=dim, n_iter=n_iter, seed=seed,
                  name="session-item")
    return store.vectors_of(list(log.item_ids))


def weighted_types(settings: Settings) -> tuple[list[str], tuple[float, ...]]:
    """Event types with weight > 0 (the ones models train on) and their weights."""
    types = [t.name for t in settings.event_types if t.weight > 0]
    return types, tuple(t.weight for t in settings.event_types if t.weight > 0)


def fit_model(il: InteractionLog, settings: Settings, model: str = "covisit", *,
              side: dict[str, object] | None = None, **params: object) -> tuple[Recommender, float]:
    """Create the registered recommender ``model`` and fit it on ``il``; returns it and the fit seconds.

    ``side`` (item side data by modality name: titles, vectors) is passed to ``fit`` only when the
    model's ``fit`` takes it (EMDE); every other model gets the log alone, as the protocol says.

    Raises
    ------
    ValueError
        If ``il`` has no item, or ``model`` is not registered.
    """
    if il.n_items == 0:
        raise ValueError("events: no interactions with items of a weighted event type; nothing to train on")
    if model == "covisit":
        params.setdefault("type_weights", weighted_types(settings)[1])
    if model == "emde":
        params.setdefault("progress", True)
    t0 = time.perf_counter()
    rec = create_model(model, **params)
    if side and "side" in inspect.signature(rec.fit).parameters:
        rec.fit(il, side=side)  # type: ignore[call-arg]
    else:
        rec.fit(il)
    return rec, time.perf_counter() - t0


def write_fitted(rec: Recommender, il: InteractionLog, settings: Settings, model: str, fit_s: float, *,
                 cleora_dim: int = 64, promote: bool = True, **manifest: object) -> Path:
    """Write a fitted model as a new version (Cleora item vectors of ``il`` for M′·Q when ``cleora_dim``)."""
    assert il.item_ids is not None
    vectors = cleora_item_vectors(il, cleora_dim) if cleora_dim > 0 else None
    return write_version(settings.stream.model_dir, rec, list(il.item_ids), item_vectors=vectors, model_name=model,
                         n_events=il.n_events, n_sessions=il.n_sessions, train_s=round(fit_s, 3), promote=promote,
                         **manifest)


def log_card(il: InteractionLog, model: str, fit_s: float, *, source: str, start_ts: float | None = None,
             end_ts: float | None = None) -> dict[str, Any]:
    """A model card's data part: the window (default: the log's first and last ``ts``), counts,
    training time, when and by which code (``operators/model_registry.py`` describes cards)."""
    lo = float(il.ts.min()) if start_ts is None and il.n_events else start_ts
    hi = float(il.ts.max()) if end_ts is None and il.n_events else end_ts
    return {"model_name": model, "source": source, "code_version": code_version(), "trained_at": iso(time.time()),
            "window": {"start_ts": lo, "end_ts": hi, "start": iso(lo) if lo is not None else None,
                       "end": iso(hi) if hi is not None else None},
            "counts": {"interactions": il.n_events, "items": il.n_items, "sessions": il.n_sessions},
            "train_s": round(fit_s, 3)}


def train_model(events: Iterable[Event], settings: Settings, model: str = "covisit", *, cleora_dim: int = 64,
                **params: object) -> Path:
    """Fit the registered recommender ``model`` on ``events``; write a new version under ``model_dir``.

    Event types with weight 0 in the settings are left out of the training log. The running
    flow and API pick the new version up without a restart (``ModelWatcher``). Cleora item
    vectors of the session graph (``cleora_dim``; 0 = none) are saved with the version: the
    stream keeps each user's M′·Q embedding from them.

    Raises
    ------
    ValueError
        If no event touches an item through a weighted event type, or ``model`` is not registered.
    """
    il = events_to_log(events, weighted_types(settings)[0])
    rec, fit_s = fit_model(il, settings, model, **params)
    path = write_fitted(rec, il, settings, model, fit_s, cleora_dim=cleora_dim, promote=False)
    write_card(path, log_card(il, model, fit_s, source="events"))
    point_latest(settings.stream.model_dir, path.name, reason="fusionrec train")
    return path


def train_covisitation(events: Iterable[Event], settings: Settings, **params: object) -> Path:
    """``train_model(events, settings, "covisit", **params)``: the spine's default model."""
    return train_model(events, settings, "covisit", **params)


def write_events_jsonl(events: Iterable[Event], path: Path) -> int:
    """One event per line in the wire format; returns the count."""
    n = 0
    with open(path, "wb") as f:
        for e in events:
            f.write(encode_event(e) + b"\n")
            n += 1
    return n


def read_events_jsonl(path: Path, settings: Settings) -> Iterator[Event]:
    """Events from a JSONL file; invalid lines are logged with their line number and skipped.

    An event whose ``event_id`` an earlier line already had (a producer's retry, a log written
    twice) is skipped: the first copy counts, once, as the stream flow counts it
    (``operators/dedupe.py``); how many were skipped is logged at the end.

    Raises
    ------
    ValueError
        If the file has lines and none of them is a valid event (naming the first line's error:
        training files need ``event_id`` and ``ts`` on every line, which the API fills in itself).
    """
    rules = EventRules.from_specs(settings.event_types, settings.stream.max_event_bytes)
    valid, repeated, first_error = 0, 0, None
    seen: set[str] = set()
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                event = validate_event_dict(msgspec.json.decode(line), rules)
            except (ValueError, msgspec.DecodeError) as exc:
                log.warning("%s:%d: skipped: %s", path, lineno, exc)
                first_error = first_error or f"line {lineno}: {exc}"
                continue
            valid += 1
            if event.event_id in seen:
                repeated += 1
                continue
            seen.add(event.event_id)
            yield event
    if repeated:
        log.warning("%s: skipped %d events whose event_id an earlier line had (the first copy counts)", path, repeated)
    if not valid and first_error is not None:
        raise ValueError(f"{path}: no line is a valid event (the first: {first_error})")
