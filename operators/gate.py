"""The gate: champion and challenger scored on the same held-out prefixes, and the verdict.

The held-out slice (the newest ``gate.holdout_hours`` of the lake, which the challenger never
saw) is cut into session-rec's next-item queries (every position of every session,
``models.data.task.expand_sessions``), sampled to ``gate.max_queries`` with a fixed seed. Each
model gets the same prefixes in its own item indices (items it does not know are left out of
the prefix; a query is kept only when both models know at least one of its items) and ranks
with ``models.evaluate.rank_queries``; the lists are mapped back to shop ids and scored with
``models.evaluate.score_rankings`` against the same targets. A target a model does not know
is a miss for it: knowing the new items is part of being better.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from models.base import Histories, InteractionLog
from models.data.task import NextItemTask, expand_sessions
from models.evaluate import rank_queries, sample_queries, score_rankings
from operators.model_version import ModelVersion

__all__ = ["holdout_task", "evaluate_versions", "GateVerdict", "decide"]


def holdout_task(holdout: InteractionLog, max_queries: int, seed: int = 0) -> NextItemTask:
    """Next-item queries of the held-out sessions, in the holdout's own item indices (seeded sample)."""
    b = holdout.session_bounds()
    sessions = Histories(indptr=b, items=holdout.item_idx, ts=holdout.ts)
    return sample_queries(expand_sessions(sessions), max_queries, seed)


def _to_model(task: NextItemTask, sel: NDArray[np.int64], lookup: NDArray[np.int32]) -> NextItemTask:
    """Queries ``sel`` of ``task`` as pairs in a model's indices: the prefix's known items, a dummy target."""
    pre = task.prefixes(sel)
    mapped = lookup[pre.items]
    keep = mapped >= 0
    lens = np.add.reduceat(keep.astype(np.int64), pre.indptr[:-1]) if len(pre.items) else np.zeros(0, np.int64)
    seq_items = mapped[keep]
    seq_lens = lens + 1  # + the dummy target
    indptr = np.concatenate([[0], np.cumsum(seq_lens)]).astype(np.int64)
    items = np.zeros(int(indptr[-1]), np.int32)
    starts = indptr[:-1]
    pos = np.repeat(starts, lens) + (np.arange(len(seq_items)) - np.repeat(np.cumsum(lens) - lens, lens))
    items[pos] = seq_items
    return NextItemTask(Histories(indptr=indptr, items=items), np.arange(len(sel), dtype=np.int64), lens)


def evaluate_versions(holdout: InteractionLog, versions: Mapping[str, ModelVersion], *, max_queries: int,
                      ks: tuple[int, ...] = (10, 20), seed: int = 0) -> tuple[dict[str, dict[str, float]], int]:
    """Score every version on the same held-out prefixes.

    Parameters
    ----------
    holdout : InteractionLog
        The held-out slice with ``item_ids`` (shop ids).
    versions : mapping of name -> ModelVersion
        E.g. ``{"champion": ..., "challenger": ...}``.
    max_queries : int
        Sample of prefixes (seeded: the same for every version).
    ks : tuple of int
        Cut-offs of ``HR@k``, ``MRR@k`` ...

    Returns
    -------
    (metrics per name, number of queries scored)
    """
    assert holdout.item_ids is not None
    task = holdout_task(holdout, max_queries, seed)
    ids = list(holdout.item_ids)
    lookups = {name: np.array([v.item_index.get(i, -1) for i in ids], dtype=np.int32) for name, v in versions.items()}
    pre = task.prefixes()
    starts = pre.indptr[:-1]
    ok = np.ones(task.n_queries, bool)
    for lk in lookups.values():
        known = (lk[pre.items] >= 0).astype(np.int64)
        ok &= (np.add.reduceat(known, starts) > 0) if len(pre.items) else np.zeros(task.n_queries, bool)
    sel = np.flatnonzero(ok)
    common = task.subset(sel)
    counts = np.bincount(holdout.item_idx, minlength=holdout.n_items).astype(np.int64)
    out: dict[str, dict[str, float]] = {}
    for name, v in versions.items():
        if not len(sel):
            out[name] = {}
            continue
        recs, _ = rank_queries(v.model, _to_model(task, sel, lookups[name]), max(ks), warmup=False)
        back = {m: h for h, m in enumerate(lookups[name]) if m >= 0}  # model idx -> holdout idx
        to_holdout = np.array([back.get(m, -1) for m in range(len(v.item_ids))] + [-1], dtype=np.int32)
        out[name] = score_rankings(to_holdout[recs], common, counts, ks)  # -1 (pad) maps to the last entry
    return out, int(len(sel))


@dataclass(frozen=True)
class GateVerdict:
    promoted: bool
    reason: str


def decide(challenger: Mapping[str, float], champion: Mapping[str, float] | None, *, metric: str, margin: float,
           n_queries: int, min_queries: int) -> GateVerdict:
    """Promote only if the challenger beats the champion by ``margin`` (relative) on ``metric``.

    No champion: promoted. Fewer than ``min_queries`` held-out prefixes: rejected (the evidence
    is too thin to replace what serves).
    """
    if champion is None:
        return GateVerdict(True, "no champion was serving")
    if n_queries < min_queries:
        return GateVerdict(False, f"holdout too small: {n_queries} prefixes < gate.min_queries={min_queries}")
    c, k = challenger.get(metric, 0.0), champion.get(metric, 0.0)
    need = k * (1.0 + margin)
    if c > k and c >= need:
        return GateVerdict(True, f"{metric} {c:.4f} beats the champion's {k:.4f} by more than "
                                 f"{margin:.0%} (needed {need:.4f}) on {n_queries} held-out prefixes")
    return GateVerdict(False, f"{metric} {c:.4f} does not beat the champion's {k:.4f} by {margin:.0%} "
                              f"(needed {need:.4f}) on {n_queries} held-out prefixes")
