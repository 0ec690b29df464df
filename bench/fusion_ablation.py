"""Fusion ranker ablation on a validation split: fit EMDE and the kNN models once, cache every
(prefix, candidate) pair's features, then refit only the LightGBM ranker per variant.

A variant adds feature groups (``+``-joined) on top of ``models.hybrid.candidate_features``:
``recent``, ``age``, ``sr``, ``prev``, ``sess`` (the candidate features issue 11's session 5 tried;
at commit a1aa580, before they became part of ``models/hybrid.py``, they were extra columns);
``cooc`` / ``cooc2`` (session 6's co-occurrence rows, computed by the model's own ``_ItemStats``;
since ``d10953e`` the adopted ``cooc2`` pair is part of the base features, so they now repeat those columns);
``rep`` (item repeat rate, session distinct ratio: part of the base features since session 11, so on caches
written after that it repeats them), ``time``, ``dwell`` (seconds to the next click: the candidate's in the history, the item's in training; session 36, not adopted) and ``votes`` (how many lists pool a candidate, their reciprocal-rank
fusion and its rank in the query; session 29, not adopted); ``base`` adds none. ``--rp`` refits the ranker with LightGBM parameter overrides, ``--emde-full``
scores the evaluation prefixes with an EMDE fitted on the whole validation-train log, ``--knn``
overrides the fusion's kNN models. Prints one JSON line per variant (HR@20, MRR@20, the pool's
recall, the features with the most gain).

    .venv/bin/python bench/fusion_ablation.py ../shared/datasets/retailrocket_mtd srgnn \
        bench/tuned/retailrocket_mtd.json var/ablation/rr --variants base,recent,age --emde-full
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from models.background_fit import ModelsFit, fit_models
from models.data import load_dataset
from models.data.validation import holdout_sessions, validation_split
from models.emde import EMDE
from models.evaluate import sample_queries
from models.hybrid import SessionFusion, _ItemStats
from models.registry import create_model

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
ap = argparse.ArgumentParser()
ap.add_argument("data")
ap.add_argument("fmt")
ap.add_argument("params")
ap.add_argument("cache")
ap.add_argument("--variants", default="base")
ap.add_argument("--rq", type=int, default=20000)
ap.add_argument("--rp", default="[{}]")
ap.add_argument("--emde-full", action="store_true")
ap.add_argument("--future", type=int, default=0,
                help="graded labels: the next item 2, the W items after it in the session 1 (0: next item only)")
ap.add_argument("--knn", default="")
ap.add_argument("--folds", type=int, default=1,
                help="ranker examples from this many rolling holdouts: fold f holds out the newest "
                     "holdout_frac of fold f-1's shortened log, its models fitted on what precedes it (base variant only)")
ap.add_argument("--fusion", default="", help="JSON of SessionFusion parameter overrides (own caches)")
ap.add_argument("--no-refit", default="",
                help="comma-separated list models scored on the evaluation prefixes as fitted on the ranker's "
                     "inner log (not refitted on the whole validation-train log)")
a = ap.parse_args()
cache = Path(a.cache)
cache.mkdir(parents=True, exist_ok=True)
data = validation_split(load_dataset(Path(a.data), a.fmt), frac=0.1)
params = json.loads(Path(a.params).read_text()).get("fusion", {})
if a.knn:
    params = {**params, "knn": json.loads(a.knn)}
if a.fusion:
    params = {**params, **json.loads(a.fusion)}
fus = SessionFusion(**params)
knn_params = fus._knn_params()
# the pair caches hold the model's feature columns: their names say which fusion parameters (the file's and
# the flags') and feature set wrote them, so a cache of an older feature set is never read by a newer model
KT = "_" + hashlib.md5((json.dumps(params, sort_keys=True) + ",".join(fus._feature_names(list(knn_params))))
                       .encode()).hexdigest()[:6]  # every fusion parameter in use, whichever flag or file set it
train = data.train
inner_log, task, _ = holdout_sessions(train, frac=fus.holdout_frac, name="fusion")
full_task = task
task = sample_queries(task, a.rq, seed=fus.random_state)
# EMDE's caches are named by its parameters when --fusion or the file changes them (a run with other EMDE
# parameters never loads the default's EMDE)
ET = ("_" + hashlib.md5(json.dumps(params["emde"], sort_keys=True).encode()).hexdigest()[:6]) if params.get("emde") else ""
emde_dir = cache / f"emde{ET}"
if emde_dir.exists():
    emde = EMDE.load(emde_dir)
else:
    emde = EMDE(**fus._emde_params()).fit(inner_log)
    emde.save(emde_dir)


def pairs(f, hist):
    return f._pairs(hist, desc="pairs")


tr_file = cache / f"train_{a.rq}{KT}.npz"
no_refit = {n for n in a.no_refit.split(",") if n}
te_file = cache / (("test_full" if a.emde_full else "test") + KT
                   + (("_norefit_" + "_".join(sorted(no_refit))) if no_refit else "") + ".npz")
# the whole-log list fits in a child process while the inner ones fit here (bit-identical, as SessionFusion.fit)
whole_specs = {n: p for n, p in knn_params.items() if n not in no_refit}
whole_fit = ModelsFit(whole_specs, train, background=not te_file.exists() and not tr_file.exists())
if not tr_file.exists():
    fus.emde_ = emde
    fus.stats_ = _ItemStats.from_log(inner_log)
    fus.knn_ = fit_models(knn_params, inner_log)
    r, i, x = pairs(fus, task.prefixes())
    np.savez(tr_file, r=r, i=i, x=x, y=task.next_items())
whole_models = dict(zip(whole_specs, whole_fit.result(), strict=True)) if not te_file.exists() else {}


def served_list_model(name, p):
    """A list model as the evaluation prefixes see it: refitted on the whole validation-train log, or kept as
    fitted on the inner log (--no-refit)."""
    return whole_models[name] if name in whole_models else create_model(name, **p).fit(inner_log)

emde_inner = emde
if a.emde_full:
    fdir = cache / f"emde_full{ET}"
    if fdir.exists():
        emde = EMDE.load(fdir)
    else:
        emde = EMDE(**fus._emde_params()).fit(train)
        emde.save(fdir)
if not te_file.exists():
    fus.emde_ = emde
    fus.stats_ = _ItemStats.from_log(train)
    fus.knn_ = [served_list_model(n, p) for n, p in knn_params.items()]
    t0 = time.time()
    r, i, x = pairs(fus, data.test.prefixes())
    print("test pairs s", round(time.time() - t0, 1), "queries", data.test.n_queries, flush=True)
    for m in fus.knn_:
        t0 = time.time()
        m.recommend(data.test.prefixes(), 50)
        print("knn", type(m).__name__, "s", round(time.time() - t0, 1), flush=True)
    np.savez(te_file, r=r, i=i, x=x, y=data.test.next_items())
tr = dict(np.load(tr_file))
fold_log = inner_log
for f in range(1, a.folds):
    fold_log, ftask, _ = holdout_sessions(fold_log, frac=fus.holdout_frac, name=f"fold {f}")
    ftask = sample_queries(ftask, a.rq, seed=fus.random_state)
    ff = cache / f"train_fold{f}_{a.rq}{KT}.npz"
    if not ff.exists():
        fdir_f = cache / f"emde_fold{f}{ET}"
        fus.emde_ = EMDE.load(fdir_f) if fdir_f.exists() else EMDE(**fus._emde_params()).fit(fold_log)
        if not fdir_f.exists():
            fus.emde_.save(fdir_f)
        fus.stats_ = _ItemStats.from_log(fold_log)
        fus.knn_ = [create_model(n, **p).fit(fold_log) for n, p in knn_params.items()]
        r, i, x = pairs(fus, ftask.prefixes())
        np.savez(ff, r=r, i=i, x=x, y=ftask.next_items())
    fz = dict(np.load(ff))
    nq0 = len(tr["y"])
    tr = {"r": np.concatenate([tr["r"], fz["r"] + nq0]), "i": np.concatenate([tr["i"], fz["i"]]),
          "x": np.concatenate([tr["x"], fz["x"]]), "y": np.concatenate([tr["y"], fz["y"]])}
    print(f"fold {f}: {len(fz['y'])} more ranker queries ({len(tr['y'])} in all)", flush=True)
te = dict(np.load(te_file))
names = fus._feature_names(list(knn_params))


# ---- extra features --------------------------------------------------------------------------
def seq_rules(log, window=5):
    n = log.n_items
    s, it = log.session_idx, log.item_idx
    src, dst, w = [], [], []
    for d in range(1, window + 1):
        same = s[d:] == s[:-d]
        src.append(it[:-d][same])
        dst.append(it[d:][same])
        w.append(np.full(same.sum(), 1.0 / d, np.float32))
    m = sp.csr_array((np.concatenate(w), (np.concatenate(src), np.concatenate(dst))), shape=(n, n))
    m.sum_duplicates()
    return m


def extra(log, hist, rows, items, which):
    cols, nm = [], []
    if which <= {""}:
        return np.zeros((len(rows), 0), np.float32), nm
    n = log.n_items
    lens = np.diff(hist.indptr)
    has = lens > 0
    last = np.zeros(len(lens), np.int64)
    last[has] = hist.items[hist.indptr[1:][has] - 1]
    lr = last[rows]
    if "recent" in which:
        N = log.n_events
        for share in (0.01, 0.1):
            c = np.bincount(log.item_idx[int(N * (1 - share)) :], minlength=n)
            cols.append(np.log1p(c)[items])
            nm.append(f"recent_pop_{share}")
    if "age" in which:
        lastpos = np.full(n, -1, np.int64)
        lastpos[log.item_idx] = np.arange(log.n_events)  # last write wins
        firstpos = np.full(n, log.n_events, np.int64)
        firstpos[log.item_idx[::-1]] = np.arange(log.n_events)[::-1]
        cols.append(np.log1p(log.n_events - lastpos[items]))
        nm.append("item_last_seen")
        cols.append(np.log1p(log.n_events - firstpos[items]))
        nm.append("item_first_seen")
    if "emde2" in which:  # a second EMDE, fitted with another seed: its log-probability and rank
        cols += _emde2_features(log, hist, rows, items)
        nm += ["emde2_log_prob", "emde2_rank"]
    if "gru" in which:
        cols_g, nm_g = _gru_features(log, hist, rows, items)
        cols += cols_g
        nm += nm_g
    if "votes" in which:  # how many lists pool the candidate, and their reciprocal-rank fusion (k 60)
        ranks = xbase(log)[:, [j for j, c in enumerate(names) if c.endswith("_rank")]]
        cols.append((ranks < fus.n_candidates).sum(1).astype(np.float32))
        nm.append("n_lists")
        rrf = (1.0 / (60.0 + ranks)).sum(1)
        cols.append(rrf)
        nm.append("rrf")
        cols.append(_query_rank(rows, rrf))
        nm.append("qrank_rrf")
    if "sr" in which:
        m = seq_rules(log)
        deg = np.asarray(m.sum(axis=1)).ravel()
        v = np.asarray(m[lr, items]).ravel()
        cols.append(np.where(has[rows], v / np.maximum(deg[lr], 1e-9), 0))
        nm.append("sr_from_last")
        cols.append(np.where(has[rows], np.log1p(v), 0))
        nm.append("sr_raw")
    if "prev" in which:
        t = _ItemStats.from_log(log)
        two = lens > 1
        prev = np.zeros(len(lens), np.int64)
        prev[two] = hist.items[hist.indptr[1:][two] - 2]
        pr = prev[rows]
        cols.append(
            np.where(
                two[rows], np.asarray(t.transitions[pr, items]).ravel() / np.maximum(t.out_degree[pr], 1), 0
            )
        )
        nm.append("trans_from_prev")
    if "sess" in which:  # the model's own sequential-rule score (models/hybrid.py _ItemStats.rule_scores)
        cols.append(_ItemStats.from_log(log).rule_scores(hist, rows, items))
        nm.append("sr_session")
    if "qrank" in which:  # per-query rank (0 = best) of item-level scores among the pooled candidates
        for c in ("log_popularity", "transition_from_last", "sequential_rules", "recent_popularity_10"):
            cols.append(_query_rank(rows, xbase(log)[:, names.index(c)]))
            nm.append(f"qrank_{c}")
    if "cooc" in which or "cooc2" in which:  # the model's own co-occurrence cosine (_ItemStats.cooc)
        st = _ItemStats.from_log(log)
        cols.append(np.where(has[rows], np.asarray(st.cooc[lr, items]).ravel(), 0))
        nm.append("cooc_cos_last")
    if "cooc" in which:  # the best cosine over the 10 newest history items
        best = np.zeros(len(rows), np.float32)
        for j in range(int(min(lens.max(initial=0), 10))):
            ok = lens > j
            it = np.zeros(len(lens), np.int64)
            it[ok] = hist.items[hist.indptr[1:][ok] - 1 - j]
            best = np.maximum(best, np.where(ok[rows], np.asarray(st.cooc[it[rows], items]).ravel(), 0))
        cols.append(best)
        nm.append("cooc_cos_best")
    if "cooc2" in which:  # its decayed sum over the 10 newest (_ItemStats.cooc_scores, as in models/hybrid.py)
        cols.append(st.cooc_scores(hist, rows, items))
        nm.append("cooc_cos_decayed")
    if "rep" in which:  # repeat consumption beyond the candidate's own count / age
        cols.append(_ItemStats._repeat_rate(log)[items])  # the model's own (models/hybrid.py)
        nm.append("item_repeat_rate_2")  # a second copy: the base columns hold them since session 11
        h_key = np.repeat(np.arange(len(lens), dtype=np.int64), lens) * n + hist.items
        distinct = np.bincount(np.repeat(np.arange(len(lens)), lens)[np.unique(h_key, return_index=True)[1]],
                               minlength=len(lens))
        cols.append((distinct / np.maximum(lens, 1))[rows])
        nm.append("session_distinct_ratio_2")
    if "time" in which:  # seconds between the last two events and since the session's first (NaN without ts)
        gap = np.full(len(lens), np.nan, np.float32)
        dur = np.full(len(lens), np.nan, np.float32)
        if hist.ts is not None:
            two = lens > 1
            end = hist.indptr[1:]
            gap[two] = np.log1p(np.maximum(hist.ts[end[two] - 1] - hist.ts[end[two] - 2], 0))
            dur[has] = np.log1p(np.maximum(hist.ts[end[has] - 1] - hist.ts[hist.indptr[:-1][has]], 0))
        cols.append(gap[rows])
        nm.append("last_gap_log_s")
        cols.append(dur[rows])
        nm.append("session_duration_log_s")
    if "dwell" in which:  # seconds until the next click (dwell): the candidate's in this history, the item's in training
        cols_d, nm_d = _dwell_features(log, hist, rows, items)
        cols += cols_d
        nm += nm_d
    if "markov2" in which:  # second-order transitions: P(candidate | prev, last) over consecutive triples, its support
        cols_m, nm_m = _markov2_features(log, hist, rows, items)
        cols += cols_m
        nm += nm_m
    if "sketch" in which:  # EMDE code agreement (share of DLSH rows in the same bucket) with the last item
        cols_in = (emde_inner if log is inner_log else emde).item_in_cols_
        agree = np.zeros(len(rows), np.float32)
        for lo in range(0, len(rows), 500_000):
            sl = slice(lo, lo + 500_000)
            agree[sl] = (cols_in[lr[sl]] == cols_in[items[sl]]).mean(1)
        cols.append(np.where(has[rows], agree, 0))
        nm.append("sketch_agree_last")
    return (np.stack(cols, 1).astype(np.float32) if cols else np.zeros((len(rows), 0), np.float32)), nm


def _markov2_features(log, hist, rows, items):
    """Second-order Markov: for training triples (a, b, c) consecutive in one session, P(c | a, b) and log1p of
    the (a, b) pair's count; plus the skip transition P(c two steps after b). NaN when the pair is unseen."""
    n = log.n_items
    s, it = log.session_idx, log.item_idx
    ok3 = (s[2:] == s[1:-1]) & (s[1:-1] == s[:-2])
    a, b, c = it[:-2][ok3].astype(np.int64), it[1:-1][ok3].astype(np.int64), it[2:][ok3].astype(np.int64)
    pkeys, pid = np.unique(a * n + b, return_inverse=True)
    m = sp.csr_array((np.ones(len(c), np.float32), (pid, c)), shape=(len(pkeys), n))
    m.sum_duplicates()
    deg = np.asarray(m.sum(axis=1)).ravel()
    skip = sp.csr_array((np.ones(len(c), np.float32), (a, c)), shape=(n, n))
    skip.sum_duplicates()
    sdeg = np.asarray(skip.sum(axis=1)).ravel()
    lens = np.diff(hist.indptr)
    two = lens > 1
    end = hist.indptr[1:]
    qlast = np.zeros(len(lens), np.int64)
    qprev = np.zeros(len(lens), np.int64)
    qlast[lens > 0] = hist.items[end[lens > 0] - 1]
    qprev[two] = hist.items[end[two] - 2]
    qk = qprev * n + qlast
    pos = np.clip(np.searchsorted(pkeys, qk), 0, max(len(pkeys) - 1, 0))
    found = two & (len(pkeys) > 0) & (pkeys[pos] == qk)
    f = found[rows]
    p2 = np.full(len(rows), np.nan, np.float32)
    p2[f] = np.asarray(m[pos[rows][f], items[f]]).ravel() / deg[pos[rows][f]]
    sup = np.where(f, np.log1p(deg[pos[rows]]), 0).astype(np.float32)
    # skip: the candidate two steps after the last item's predecessor... i.e. P(c | a = prev) two steps on
    has = two[rows]
    sk = np.full(len(rows), np.nan, np.float32)
    pr = qprev[rows][has]
    sk[has] = np.asarray(skip[pr, items[has]]).ravel() / np.maximum(sdeg[pr], 1)
    return [p2, sup, sk], ["markov2_prob", "markov2_support", "skip_from_prev"]


def _dwell_features(log, hist, rows, items):
    """Dwell = seconds from an event to the session's next one (unknown for the last). Per pair: log1p of the
    candidate's longest dwell in the query's history (NaN when absent or only last); log1p of the history's
    median dwell (per query); the item's median log1p dwell over training sessions (NaN when never followed)."""
    n = log.n_items
    same = log.session_idx[1:] == log.session_idx[:-1]
    d_log = np.log1p(np.maximum(log.ts[1:] - log.ts[:-1], 0.0))[same]
    it = log.item_idx[:-1][same]
    order = np.lexsort((d_log, it))
    it_s, d_s = it[order], d_log[order]
    lo = np.searchsorted(it_s, np.arange(n), "left")
    hi = np.searchsorted(it_s, np.arange(n), "right")
    item_med = np.full(n, np.nan, np.float32)
    has_d = hi > lo
    item_med[has_d] = d_s[(lo[has_d] + hi[has_d] - 1) // 2]
    lens = np.diff(hist.indptr)
    q = len(lens)
    cand = np.full(len(rows), np.nan, np.float32)
    qmed = np.full(q, np.nan, np.float32)
    if hist.ts is not None and len(hist.items):
        hq = np.repeat(np.arange(q, dtype=np.int64), lens)
        nxt_same = np.zeros(len(hist.items), bool)
        nxt_same[:-1] = hq[1:] == hq[:-1]
        dw = np.full(len(hist.items), np.nan)
        dw[:-1] = np.log1p(np.maximum(hist.ts[1:] - hist.ts[:-1], 0.0))
        dw[~nxt_same] = np.nan
        ok = ~np.isnan(dw)
        key = hq[ok] * n + hist.items[ok]
        kd = dw[ok]
        o = np.lexsort((-kd, key))
        key, kd = key[o], kd[o]
        first = np.ones(len(key), bool)
        first[1:] = key[1:] != key[:-1]
        ukey, umax = key[first], kd[first]
        pk = rows * n + items
        pos = np.minimum(np.searchsorted(ukey, pk), max(len(ukey) - 1, 0))
        if len(ukey):
            hit = ukey[pos] == pk
            cand[hit] = umax[pos[hit]]
        o2 = np.lexsort((dw[ok], hq[ok]))  # per-query median of the known dwells
        qk, vals = hq[ok][o2], dw[ok][o2]
        a_ = np.searchsorted(qk, np.arange(q), "left")
        b_ = np.searchsorted(qk, np.arange(q), "right")
        hv = b_ > a_
        qmed[hv] = vals[(a_[hv] + b_[hv] - 1) // 2]
    return [cand, qmed[rows], item_med[items]], ["dwell_candidate", "dwell_query_median", "dwell_item_median"]


def xbase(log):
    return tr["x"] if log is inner_log else te["x"]


def _query_rank(rows, v):
    """Rank of each pair's value within its query, descending (0 = the query's best)."""
    order = np.lexsort((-v, rows))
    start = np.searchsorted(rows[order], rows[order])
    rank = np.empty(len(rows), np.float32)
    rank[order] = np.arange(len(rows)) - start
    return rank


def _emde2_features(log, hist, rows, items):
    """EMDE fitted with ``random_state + 1`` (cached): log-probability minus the query's best, rank in its top 50."""
    from models.topk import SCORE_CELLS

    key = "tr" if log is inner_log else "te"
    f = cache / f"emde2_{key}{KT}.npz"
    if not f.exists():
        d = cache / (("emde_s2" if log is inner_log else "emde_full_s2") + ET)
        if d.exists():
            m = EMDE.load(d)
        else:
            m = EMDE(**{**fus._emde_params(), "random_state": fus.random_state + 1}).fit(log)
            m.save(d)
        q, n = hist.n_queries, log.n_items
        step = max(1, SCORE_CELLS // n)
        start = np.searchsorted(rows, np.arange(q + 1))
        v_out = np.zeros(len(rows), np.float32)
        rk_out = np.full(len(rows), float(fus.n_candidates), np.float32)
        for lo in range(0, q, step):
            hi = min(q, lo + step)
            ro = m.readout(m.layout_.raw_sketches(m.item_in_cols_, hist.slice(lo, hi), m.neighbours_))
            top, top_s = ro.top(fus.n_candidates)
            a0, a1 = start[lo], start[hi]
            rr, ii = rows[a0:a1] - lo, items[a0:a1]
            v_out[a0:a1] = ro.pairs(rr, ii) - top_s[rr, 0]
            tk = np.repeat(np.arange(hi - lo, dtype=np.int64), top.shape[1]) * n + top.ravel()
            pk = rr * n + ii
            srt = np.argsort(tk)
            pos = np.minimum(np.searchsorted(tk[srt], pk), len(tk) - 1)
            found = tk[srt][pos] == pk
            rk_out[a0:a1] = np.where(found, (srt[pos] % top.shape[1]).astype(np.float32), rk_out[a0:a1])
        np.savez(f, v=v_out, rk=rk_out)
    z = np.load(f)
    return [z["v"], z["rk"]]


def _gru_features(log, hist, rows, items, chunk=1000):
    """GRU4Rec (fitted once on the inner log, cached) log-probability minus the query's best, and rank."""
    from models.gru4rec import GRU4Rec

    key = "tr" if log is inner_log else "te"
    f = cache / f"gru_{key}{KT}.npz"
    if not f.exists():
        gdir = cache / "gru4rec"
        if gdir.exists():
            gru = GRU4Rec.load(gdir)
        else:
            gp = json.loads(Path(a.params).read_text()).get("gru4rec", {})
            gru = GRU4Rec(**gp).fit(inner_log)
            gru.save(gdir)
        q, n = hist.n_queries, log.n_items
        start = np.searchsorted(rows, np.arange(q + 1))
        v_out = np.zeros(len(rows), np.float32)
        rk_out = np.zeros(len(rows), np.float32)
        for lo in range(0, q, chunk):
            hi = min(q, lo + chunk)
            p = gru.score(hist.slice(lo, hi)) * 0.999
            lo_p, hi_p = start[lo], start[hi]
            rr, ii = rows[lo_p:hi_p] - lo, items[lo_p:hi_p]
            v = p[rr, ii]
            v_out[lo_p:hi_p] = np.log(v + 1e-30) - np.log(p.max(1)[rr] + 1e-30)
            flat = np.sort(p, 1) + np.arange(hi - lo)[:, None]
            below = np.searchsorted(flat.ravel(), rr + v, side="right") - rr * n
            rk_out[lo_p:hi_p] = n - below
        np.savez(f, v=v_out, rk=rk_out)
    z = np.load(f)
    return [z["v"], z["rk"]], ["gru_log_prob", "gru_rank"]


def run(variant, rp=None):
    rp = rp or {}
    import lightgbm as lgb

    which = set(variant.split("+"))
    t0 = time.time()
    xtr_e, nm = extra(inner_log, task.prefixes(), tr["r"], tr["i"], which)
    xte_e, _ = extra(train, data.test.prefixes(), te["r"], te["i"], which)
    xtr = np.hstack([tr["x"], xtr_e])
    xte = np.hstack([te["x"], xte_e])
    label = (tr["i"] == tr["y"][tr["r"]]).astype(np.float32)
    nq = len(tr["y"])
    pos = np.zeros(nq, bool)
    pos[tr["r"][label > 0]] = True
    if a.future:
        indptr, rest = task.rest()
        lens = np.minimum(np.diff(indptr), a.future + 1)
        q_of = np.repeat(np.arange(nq), lens)
        at = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        fut = np.unique(q_of[at > 0] * 10**9 + rest[np.repeat(indptr[:-1], lens) + at][at > 0])
        later = np.isin(tr["r"] * 10**9 + tr["i"], fut) & (label == 0)
        label = np.where(label > 0, 2.0, np.where(later, 1.0, 0.0)).astype(np.float32)
    keep = pos[tr["r"]]
    group = np.bincount(tr["r"][keep], minlength=nq)
    p = fus._ranker_params()
    p["monotone_constraints"] = p["monotone_constraints"] + [0] * len(nm)
    p.update(rp)
    if p.get("objective") == "binary":
        p.pop("lambdarank_truncation_level", None)
    ds = lgb.Dataset(
        xtr[keep], label[keep], group=group[group > 0], feature_name=names + nm, params={"max_bin": 63}
    )
    ranker = lgb.train(p, ds)
    s = np.round(ranker.predict(xte, num_threads=2), 3)
    r, c = te["r"], te["i"]
    order = np.lexsort((c, -xte[:, 0], -s, r))
    r, c = r[order], c[order]
    q = len(te["y"])
    start = np.searchsorted(r, np.arange(q))
    rank = np.arange(len(r)) - start[r]
    hit = (c == te["y"][r]) & (rank < 20)
    hr = np.zeros(q)
    mrr = np.zeros(q)
    hr[r[hit]] = 1
    mrr[r[hit]] = 1 / (rank[hit] + 1)
    imp = dict(zip(names + nm, ranker.feature_importance("gain").round(0)))
    top = sorted(imp.items(), key=lambda kv: -kv[1])[:8]
    print(
        json.dumps(
            {
                "variant": variant,
                "rp": rp,
                "HR@20": round(hr.mean(), 4),
                "MRR@20": round(mrr.mean(), 4),
                "pool_recall_test": round(float(np.isin(np.arange(q), r[c == te["y"][r]]).mean()), 4),
                "s": round(time.time() - t0, 1),
                "top_gain": [k for k, _ in top],
            }
        ),
        flush=True,
    )


for v in a.variants.split(","):
    for rp in json.loads(a.rp):
        run(v if v != "base" else "", rp)
