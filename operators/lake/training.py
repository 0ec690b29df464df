"""Training from the lake: a window of archived events plus the catalog as of the window's end -> a version.

``fusionrec train --lake DIR --window 30d`` calls :func:`train_from_lake`; the trainer
(``operators/trainer.py``) reads its windows with the same functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from operators.catalog_rule import CatalogValueError, check_item
from operators.lake.read import LakeWindow, lake_time_range, read_catalog, read_interactions
from operators.model_registry import iso, write_card
from operators.model_version import point_latest
from operators.settings import Settings
from operators.training import fit_model, log_card, weighted_types, write_fitted

__all__ = ["side_data", "window_bounds", "read_window", "train_from_lake", "window_card"]

log = logging.getLogger(__name__)


def side_data(catalog: dict[str, str], item_ids: Sequence[str], vector_attribute: str = "vector") -> dict[str, Any]:
    """Side modalities of the catalogue ``item_ids`` from catalog records (JSON text by item id).

    Returns
    -------
    dict of modality name -> data, for EMDE modalities of the same name (``fit(log, side=...)``):
    ``"title"``: list of str; ``"attributes"``: list of str, the record's other scalar and
    list-of-string attributes as ``key value`` words (a text modality); and, when any record
    carries a list of numbers under ``vector_attribute``, that name -> ``(vectors float32
    (n_items, dim), present bool (n_items,))``. Items the catalog lacks get ``""`` / no vector.
    """
    records = [_checked(catalog[i], vector_attribute) if i in catalog else {} for i in item_ids]
    out: dict[str, Any] = {"title": [str(r.get("title") or "") for r in records],
                           "attributes": [_attribute_words(r, vector_attribute) for r in records]}
    vecs = [r.get(vector_attribute) for r in records]
    dim = next((len(v) for v in vecs if isinstance(v, list) and v), 0)
    if dim:
        arr = np.zeros((len(item_ids), dim), np.float32)
        present = np.zeros(len(item_ids), bool)
        for k, v in enumerate(vecs):
            if isinstance(v, list) and len(v) == dim and all(isinstance(x, int | float) for x in v):
                arr[k], present[k] = v, True
        out[vector_attribute] = (arr, present)
    return out


def _checked(raw: str | bytes, vector_attribute: str) -> dict[str, Any]:
    """One catalog record as the API's index takes it (the catalog rule's ``check_item``): an item that
    deletes itself (``"deleted": true``), one the rule rejects (e.g. a nested vector) or a value that is
    not a JSON object is no item ({}), and ``"deleted": false`` is no attribute."""
    try:
        record = orjson.loads(raw)
        checked = check_item(record, vector_attribute=vector_attribute) if isinstance(record, dict) else None
    except (orjson.JSONDecodeError, CatalogValueError):
        return {}
    return dict(checked) if checked is not None else {}


def _attribute_words(record: dict[str, Any], vector_attribute: str) -> str:
    words = []
    for key, value in record.items():
        if key in ("item_id", "title", vector_attribute):
            continue
        values = value if isinstance(value, list) else [value]
        words.extend(f"{key} {v}" for v in values if isinstance(v, str | int | float | bool))
    return " ".join(words)


def window_bounds(settings: Settings, window_s: float, lake_dir: Path | None = None) -> tuple[float, float]:
    """``(start, end)`` epoch seconds of a window ending just after the newest archived event.

    A window longer than the lake starts at the oldest archived event: the whole lake, whatever the
    window (``--window 100000d`` or ``1e400``; its start was a date before year 1, which the card cannot
    name, or ``-inf``, which matched no date partition, so nothing was read).

    Raises
    ------
    FileNotFoundError
        If the lake holds no event.
    """
    lake_dir = Path(lake_dir or settings.lake.lake_dir)
    rng = lake_time_range(lake_dir, "events")
    if rng is None:
        raise FileNotFoundError(f"{lake_dir}: no archived events (is `fusionrec archive` running?)")
    end = rng[1] + 1e-3
    return max(end - window_s, rng[0]), end


def read_window(settings: Settings, start_ts: float, end_ts: float, lake_dir: Path | None = None) -> LakeWindow:
    """Weighted-type events of ``[start_ts, end_ts)`` from the lake, in ``lake.read_batch_rows`` batches.

    The archiver may compact a file away between reading the manifests and scanning it: the read
    is retried (twice) with fresh manifests.
    """
    for attempt in range(3):
        try:
            return read_interactions(Path(lake_dir or settings.lake.lake_dir), start_ts, end_ts,
                                     weighted_types(settings)[0], batch_rows=settings.lake.read_batch_rows)
        except FileNotFoundError:
            if attempt == 2 or lake_time_range(Path(lake_dir or settings.lake.lake_dir)) is None:
                raise
            log.info("lake: a file was compacted away while reading; reading again")
    raise AssertionError("unreachable")


def train_from_lake(settings: Settings, window_s: float, model: str = "covisit", *, lake_dir: Path | None = None,
                    cleora_dim: int = 64, **params: object) -> Path:
    """Train ``model`` on the newest ``window_s`` seconds of the lake and the catalog as of the window's end.

    Writes a version with a model card (data window, counts, training time, code version) and
    points LATEST at it (no gate: that is ``fusionrec trainer``).

    Raises
    ------
    FileNotFoundError
        If the lake holds no event.
    ValueError
        If the window holds no weighted interaction, or ``model`` is not registered.
    """
    lake_dir = Path(lake_dir or settings.lake.lake_dir)
    t0 = time.perf_counter()
    start, end = window_bounds(settings, window_s, lake_dir)
    win = read_window(settings, start, end, lake_dir)
    catalog = read_catalog(lake_dir, end)
    assert win.log.item_ids is not None
    side = side_data(catalog, win.log.item_ids, settings.api.vector_attribute)
    read_s = time.perf_counter() - t0
    rec, fit_s = fit_model(win.log, settings, model, side=side, **params)
    path = write_fitted(rec, win.log, settings, model, fit_s, cleora_dim=cleora_dim, promote=False)
    write_card(path, window_card(win, catalog_items=len(catalog), model=model, read_s=read_s, fit_s=fit_s))
    point_latest(settings.stream.model_dir, path.name, reason=f"fusionrec train --lake (window {iso(start)} .. {iso(end)})")
    return path


def window_card(win: LakeWindow, *, catalog_items: int, model: str, read_s: float, fit_s: float) -> dict[str, Any]:
    """The data part of a model card: window, counts, times, code version."""
    card = log_card(win.log, model, fit_s, source="lake", start_ts=win.start_ts, end_ts=win.end_ts)
    card["counts"].update(events=win.n_rows, users=win.n_users, catalog_items=catalog_items)
    card["read_s"] = round(read_s, 3)
    return card
