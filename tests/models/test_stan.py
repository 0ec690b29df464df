"""STAN and V-STAN equal a plain per-prefix loop over sessions written from the papers / session-rec."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_sknn import candidates, compare, random_log, random_prefixes, ranked, recency_rank

from models.base import Histories
from models.stan import STAN, VSTAN

DAY = 86_400.0


def oracle_stan(seqs, last_ts, rank, idf, prefix, now, p) -> dict[int, float]:
    n = len(prefix)
    w = {}
    for pos, item in enumerate(prefix, start=1):
        w[item] = math.exp((pos - n) / p["lambda_spw"])
    norm = math.sqrt(sum(v * v for v in w.values()))
    sims = []
    for s in candidates(seqs, prefix, rank, p["sample_size"]):
        shared = set(prefix) & set(seqs[s])
        sim = sum(w[i] for i in shared) / (norm * math.sqrt(len(set(seqs[s]))))
        sim *= math.exp(-(now - last_ts[s]) / (p["lambda_snh"] * DAY))
        sims.append((s, sim))
    scores: dict[int, float] = {}
    for s, sim in sorted(sims, key=lambda x: (-x[1], rank[x[0]]))[: p["k"]]:
        items = seqs[s]
        pos_last = {it: j + 1 for j, it in enumerate(items)}
        p_star = max(j + 1 for j, it in enumerate(items) if it in set(prefix))
        ipw = 1.0
        if "lambda_ipw" in p:
            newest = max(j + 1 for j, it in enumerate(prefix) if it in set(items))
            ipw = math.exp((newest - n) / p["lambda_ipw"])
        for item in set(items):
            v = sim * math.exp(-abs(pos_last[item] - p_star) / p["lambda_inh"])
            if "lambda_idf" in p:
                v = v * (1 + idf[item] * p["lambda_idf"])
            scores[item] = scores.get(item, 0.0) + v * ipw
    return scores


@pytest.mark.parametrize("cls", [STAN, VSTAN])
@pytest.mark.parametrize(("k", "sample_size"), [(15, 40), (300, 0)])
def test_stan_equals_the_loop(cls: type, k: int, sample_size: int) -> None:
    log, seqs = random_log()
    rank = recency_rank(log)
    last_ts = {int(s): float(t) for s, t in zip(log.session_idx, log.ts, strict=True)}
    counts = np.bincount(log.item_idx, minlength=log.n_items)
    idf = np.where(counts > 0, np.log(len(seqs) / np.maximum(counts, 1)), 0.0)
    params = {"k": k, "sample_size": sample_size, "lambda_spw": 1.5, "lambda_snh": 2.0, "lambda_inh": 2.5}
    if cls is VSTAN:
        params |= {"lambda_ipw": 1.8, "lambda_idf": 3.0}
    model = cls(**params).fit(log)
    prefixes = random_prefixes()
    now = 1e9 + 6e5
    hist = Histories.from_lists(prefixes, [[now - (len(p) - 1 - j) for j in range(len(p))] for p in prefixes])
    ids, scores = model.recommend(hist, 10)
    for q, prefix in enumerate(prefixes):
        want = oracle_stan(seqs, last_ts, rank, idf, prefix, now, params)
        compare(ids[q], scores[q], ranked(want, 10))


def test_without_timestamps_now_is_the_end_of_train() -> None:
    log, _ = random_log()
    model = STAN(k=10, sample_size=20).fit(log)
    prefixes = random_prefixes()
    t_end = float(log.ts.max())
    timed = Histories.from_lists(prefixes, [[t_end] * len(p) for p in prefixes])
    a = model.recommend(Histories.from_lists(prefixes), 5)
    b = model.recommend(timed, 5)
    np.testing.assert_array_equal(a[0], b[0])


def test_a_decay_of_zero_is_refused() -> None:
    log, _ = random_log()
    with pytest.raises(ValueError, match="lambda_inh: must be > 0 or None"):
        STAN(lambda_inh=0.0).fit(log)
