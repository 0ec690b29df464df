"""EMDE: the sketch recommender (DLSH codes per modality, history sketches, sketch network).

Model directory (``save``/``load``; read by the stream and the API)::

    model_dir/
      params.json   {"format": "fusionrec.emde", "version": 1, "params": {...hyper-parameters},
                     "modalities": [...ModalitySpec], "layout": {...SketchLayout},
                     "n_items": int, "out_blocks": [[depth, width], ...], "train_loss": [...]}
      arrays.npz    item_in_cols (n_items, in_depth) int32    columns of an item within one view
                    item_out_cols (n_items, out_depth) int32  columns of an item in the output sketch
                    codes__<modality> (n_items, depth) int32  DLSH buckets
                    dlsh__<modality>__{mean,scale,projections,biases}  fitted codebooks
                    graph__<modality> (n_items, dim) float16   Cleora vectors of graph modalities
                                                               (new items' codes by M′·Q)
                    item_ids (n_items,) str                    when the log had shop ids
                    knn_{indptr,indices,data}                  neighbour matrix (knn:* views)
      network.npz   the torch state dict as arrays

The stream keeps one raw input sketch per user (``layout_.input_dim`` floats), updates it
per event with ``sketch.update_sketch(s, item_in_cols_[item] + layout_.offset(view), w, decay)``
for each view, and scores with :meth:`EMDE.recommend_sketches`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
import torch
from numpy.typing import NDArray

from models.base import Histories, InteractionLog, whole_epochs
from models.emde.dlsh import DLSHCodebook
from models.emde.examples import future_examples, next_item_examples
from models.emde.layout import SketchLayout
from models.emde.modality import ModalitySpec, code_modality, parse_modalities
from models.emde.neighbours import cooccurrence_neighbours
from models.emde.network import SketchNetwork, TrainInputs, row_log_softmax, sparse_batch, train_network
from models.emde.readout import BucketReadout, row_top
from models.emde.sketch import item_columns
from models.errors import ModelFitError, NotFittedError

__all__ = ["EMDE"]

DEFAULT_MODALITIES = "g=sessions:16x128:3,s=transitions:16x128:2:in"


class EMDE:
    """Efficient Manifold Density Estimator recommender (Dąbrowski et al. 2020).

    Parameters
    ----------
    modalities : str or sequence of ModalitySpec / dict
        Item modalities (see :mod:`models.emde.modality`); a string is parsed by
        :func:`~models.emde.modality.parse_modalities`.
    views : sequence of str, default ("session", "last")
        Input views (see :mod:`models.emde.layout`); add ``"type:<name>"`` per event type and
        ``"knn:session"`` / ``"knn:last"`` for item-kNN-style neighbour views (better offline,
        see bench/RESULTS.md; the stream folds these views per event, ``operators.sketch_state``).
        ``"past"`` (the history without its newest item) with ``"last"``, ``view_norm="row"``,
        ``time_unit="seconds"``, ``alpha=0.9``, ``decay_w=0.01`` is the official EMDE session-rec
        input; the stream does not fold ``past`` yet.
    view_norm : {"view", "row"}, default "view"
        L2-normalise every input view, or every depth row of every view (official).
    knn_k : int, default 10
        Co-occurrence neighbours per item for ``knn:*`` views.
    alpha : float, default 0.9
        Decay base of history sketches: weight ``alpha ** (decay_w * age)``.
    decay_w : float, default 1
    time_unit : {"position", "seconds"}, default "position"
    objective : {"next", "future"}, default "next"
        ``next``: prefix -> next item (sessions); ``future``: past -> later events (users).
    hidden : int, default 512
    n_layers : int, default 2
        Hidden layers (1-5).
    epochs, batch_size, lr, lr_step_epochs, lr_gamma
        Adam with step decay.
    epoch_examples : int or None, default None
        If set, the network trains ``min(epochs, ceil(epoch_examples / n))`` whole epochs on ``n``
        training examples (:func:`models.base.whole_epochs`): a large log gets fewer passes, each
        still whole. A function of the data alone, never of time. ``SessionFusion``'s EMDE uses
        1,000,000 (``models.hybrid.EMDE_EPOCH_EXAMPLES``).
    max_prefix : int, default 50
        Newest events kept per training prefix / history.
    n_cuts : int, default 4
        ``future`` objective: random cuts per history.
    decoder : {"mean", "popularity"}, default "mean"
        Readout of the output sketch. ``mean``: the mean over output depth rows of the item's
        bucket log-probability. ``popularity``: the official EMDE session-rec decoder,
        ``log p(i) + sum_rows [log out(code_row(i)) - log prior(code_row(i))]`` (divided by the
        number of rows, which keeps the ranking), with ``p`` the item's train frequency and
        ``prior`` the frequency-weighted share of each bucket; ``pop_weight`` scales the
        correction (1 = the official decoder). It lifted HR@20 on retailrocket validation by
        4.3 % (bench/RESULTS.md) but over-corrects when buckets hold about one item each (tiny
        catalogues: it then divides by ``p(i) ** (rows - 1)``), so it is opt-in.
    pop_weight : float, default 1.0
    max_train_seconds : float, optional
        Safety stop of the network training: when it fires, ``fit`` raises ``ModelFitError``
        (quality never depends on machine speed; train for ``epochs``).
    random_state : int or None
    progress : bool, default False
        tqdm progress bar during training.
    """

    def __init__(self, modalities: str | Sequence[ModalitySpec | Mapping[str, Any]] = DEFAULT_MODALITIES,
                 *, views: Sequence[str] = ("session", "last"), alpha: float = 0.9,
                 decay_w: float = 1.0, time_unit: str = "position", objective: str = "next", hidden: int = 512,
                 n_layers: int = 2, epochs: int = 3, batch_size: int = 1024, lr: float = 3e-3,
                 lr_step_epochs: int = 1, lr_gamma: float = 0.5, max_prefix: int = 50, n_cuts: int = 4,
                 max_train_seconds: float | None = None, random_state: int | None = 0,
                 progress: bool = False, knn_k: int = 10, decoder: str = "mean",
                 pop_weight: float = 1.0, view_norm: str = "view", epoch_examples: int | None = None) -> None:
        self.modalities = modalities
        self.views = tuple(views)
        self.view_norm = view_norm
        self.alpha = alpha
        self.decay_w = decay_w
        self.time_unit = time_unit
        self.objective = objective
        self.hidden = hidden
        self.n_layers = n_layers
        self.epochs = epochs
        self.epoch_examples = epoch_examples
        self.batch_size = batch_size
        self.lr = lr
        self.lr_step_epochs = lr_step_epochs
        self.lr_gamma = lr_gamma
        self.max_prefix = max_prefix
        self.n_cuts = n_cuts
        self.max_train_seconds = max_train_seconds
        self.random_state = random_state
        self.progress = progress
        self.knn_k = knn_k
        self.decoder = decoder
        self.pop_weight = pop_weight

    # ----------------------------------------------------------------- parameters
    _PARAMS = ("views", "alpha", "decay_w", "time_unit", "objective", "hidden", "n_layers", "epochs",
               "batch_size", "lr", "lr_step_epochs", "lr_gamma", "max_prefix", "n_cuts",
               "max_train_seconds", "random_state", "progress", "knn_k", "decoder", "pop_weight", "view_norm",
               "epoch_examples")

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as JSON-able values (modalities as a list of dicts)."""
        d = {k: getattr(self, k) for k in self._PARAMS}
        d["views"] = list(self.views)
        d["modalities"] = [m.to_dict() for m in self._specs()]
        return d

    def _specs(self) -> tuple[ModalitySpec, ...]:
        if isinstance(self.modalities, str):
            return parse_modalities(self.modalities)
        return tuple(m if isinstance(m, ModalitySpec) else ModalitySpec.from_dict(m) for m in self.modalities)

    # ----------------------------------------------------------------- fit
    def fit(self, log: InteractionLog, *, side: Mapping[str, Any] | None = None) -> Self:
        """Code the items, build training sketches from ``log`` and train the network.

        Parameters
        ----------
        log : InteractionLog
        side : mapping, optional
            In-memory side data per modality name: list of titles (text/sentence) or an
            array (n_items, dim) / ``(vectors, present)`` pair (dense).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            On an invalid objective/time unit or a modality without its data.
        ModelFitError
            If the log yields no training example or training produced NaN.
        """
        if self.objective not in ("next", "future"):
            raise ValueError(f"objective must be 'next' or 'future'; got {self.objective!r}")
        if self.decoder not in ("popularity", "mean"):
            raise ValueError(f"decoder must be 'popularity' or 'mean'; got {self.decoder!r}")
        if self.time_unit not in ("position", "seconds"):
            raise ValueError(f"time_unit must be 'position' or 'seconds'; got {self.time_unit!r}")
        if self.view_norm not in ("view", "row"):
            raise ValueError(f"view_norm must be 'view' or 'row'; got {self.view_norm!r}")
        t0 = time.perf_counter()
        rng = np.random.default_rng(self.random_state)
        specs = self._specs()
        if len({m.name for m in specs}) != len(specs):
            raise ValueError(f"modality names must be unique; got {[m.name for m in specs]}")
        self.codes_: dict[str, NDArray[np.int32]] = {}
        self.codebooks_: dict[str, DLSHCodebook | None] = {}
        self.graph_vectors_: dict[str, NDArray[np.float16]] = {}
        for spec in specs:
            self.codes_[spec.name], self.codebooks_[spec.name], vec = code_modality(
                spec, log, side, np.random.default_rng(rng.integers(2**62)))
            if vec is not None:
                self.graph_vectors_[spec.name] = vec
        self.modality_specs_ = specs
        self._build_layout(log.n_items, log.event_types)
        self.item_ids_ = log.item_ids
        self._fit_popularity(log)
        self.neighbours_ = (cooccurrence_neighbours(log, self.knn_k)
                            if any(v.startswith("knn:") for v in self.views) else None)
        if self.objective == "next":
            hist, nxt = next_item_examples(log, self.max_prefix)
            targets = sp.csr_array((np.ones(len(nxt), np.float32), (np.arange(len(nxt)), nxt)),
                                   shape=(len(nxt), log.n_items))
        else:
            hist, targets = future_examples(log, n_cuts=self.n_cuts, max_history=self.max_prefix,
                                            random_state=rng)
        if hist.n_queries < 2:
            raise ModelFitError(f"EMDE: the log gives {hist.n_queries} training examples; need >= 2")
        self.network_ = SketchNetwork(self.layout_.input_dim, self.out_blocks_, self.hidden, self.n_layers)
        self.train_loss_ = train_network(
            self.network_, self._train_inputs(hist), targets, self.item_out_cols_,
            epochs=whole_epochs(self.epochs, self.epoch_examples, hist.n_queries), batch_size=self.batch_size,
            lr=self.lr, lr_step_epochs=self.lr_step_epochs, lr_gamma=self.lr_gamma, random_state=rng,
            max_seconds=self.max_train_seconds, progress=self.progress)
        if not np.all(np.isfinite(self.train_loss_)):
            raise ModelFitError(f"EMDE: training loss is not finite: {self.train_loss_}")
        self.fit_seconds_ = time.perf_counter() - t0
        self._bias_ = None
        return self

    def _train_inputs(self, hist: Histories, chunk: int = 65_536) -> TrainInputs:
        """Normalised input sketches of the training histories, built once (in chunks of queries).

        The history views are stored per example; the item views (``last``, ``knn:last``) once
        per item, with one extra empty row for empty histories.
        """
        lay = self.layout_
        parts = [lay.normalise(lay.raw_sketches(self.item_in_cols_, _slice(hist, s, min(s + chunk, hist.n_queries)),
                                                self.neighbours_, views=lay.history_views))
                 for s in range(0, hist.n_queries, chunk)]
        examples = sp.csr_array(sp.vstack(parts, format="csr"), dtype=np.float32)
        if not lay.item_views:
            return TrainInputs(examples)
        items = lay.item_sketches(self.item_in_cols_, self.neighbours_)
        items = sp.csr_array(sp.vstack([items, sp.csr_array((1, lay.input_dim), dtype=np.float32)], format="csr"))
        lens = np.diff(hist.indptr)
        last = np.full(hist.n_queries, self.n_items_, np.int64)
        last[lens > 0] = hist.items[hist.indptr[1:][lens > 0] - 1]
        return TrainInputs(examples, items, last)

    def _fit_popularity(self, log: InteractionLog) -> None:
        """``item_log_pop_`` (n_items,) and ``bucket_log_prior_`` (out_dim,) of the popularity decoder.

        Counts are smoothed by +1 so that every item and bucket has a finite log-frequency.
        """
        counts = np.bincount(log.item_idx, minlength=log.n_items).astype(np.float64) + 1.0
        self.item_log_pop_ = np.log(counts / counts.sum()).astype(np.float32)
        out_dim = sum(d * w for d, w in self.out_blocks_)
        r = self.item_out_cols_.shape[1]
        per_row = np.bincount(self.item_out_cols_.ravel(), weights=np.repeat(counts, r), minlength=out_dim)
        self.bucket_log_prior_ = np.log(np.maximum(per_row / counts.sum(), 1e-12)).astype(np.float32)

    def _item_bias(self) -> NDArray[np.float32] | None:
        """Per-item additive readout term of the popularity decoder, (n_items,), or None."""
        if self.decoder != "popularity" or getattr(self, "item_log_pop_", None) is None:
            return None
        if getattr(self, "_bias_", None) is None:
            r = self.item_out_cols_.shape[1]
            bias = (self.item_log_pop_ - self.bucket_log_prior_[self.item_out_cols_].sum(axis=1)) / r
            self._bias_ = (self.pop_weight * bias).astype(np.float32)
        return self._bias_

    def _build_layout(self, n_items: int, event_types: Sequence[str]) -> None:
        """Item columns and layouts from ``codes_`` and the modality specs."""
        self.item_in_cols_, self.item_out_cols_ = self.item_columns(self.codes_)
        self.out_blocks_ = [(m.depth, m.width) for m in self.modality_specs_ if m.output]
        self.n_items_ = n_items
        view_dim = sum(m.depth * m.width for m in self.modality_specs_ if m.input)
        row_widths = tuple(m.width for m in self.modality_specs_ if m.input for _ in range(m.depth))
        self.layout_ = SketchLayout(views=self.views, view_dim=view_dim, alpha=self.alpha,
                                    decay_w=self.decay_w, time_unit=self.time_unit,
                                    event_types=tuple(event_types), norm=self.view_norm, row_widths=row_widths)

    def item_columns(self, codes: Mapping[str, NDArray[np.int32]]
                     ) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
        """Sketch columns of items given their DLSH codes per modality.

        Parameters
        ----------
        codes : mapping of modality name to int32 array (n, depth of that modality)
            One entry per modality of ``modality_specs_``, the same ``n`` rows in each.

        Returns
        -------
        (in_cols, out_cols) : int32 arrays (n, in_depth) and (n, out_depth): the columns of
        each item within one input view and in the output sketch (``item_in_cols_`` rows).

        Raises
        ------
        ValueError
            If no modality is an input or none an output.
        """
        ins, outs, in_off, out_off = [], [], 0, 0
        for spec in self.modality_specs_:
            c = codes[spec.name]
            if spec.input:
                ins.append(item_columns(c, spec.width, in_off))
                in_off += spec.depth * spec.width
            if spec.output:
                outs.append(item_columns(c, spec.width, out_off))
                out_off += spec.depth * spec.width
        if not ins or not outs:
            raise ValueError("EMDE needs at least one input and one output modality")
        return np.concatenate(ins, axis=1), np.concatenate(outs, axis=1)

    # ----------------------------------------------------------------- scoring
    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise NotFittedError(self)

    def readout(self, raw: sp.csr_array | NDArray[np.floating]) -> BucketReadout:
        """The network's output for raw input sketches, as a lazily scored readout.

        Parameters
        ----------
        raw : csr_array or ndarray of shape (n_queries, layout_.input_dim)
            Unnormalised input sketches.

        Returns
        -------
        BucketReadout whose item score is the mean over output depth rows of the item's bucket
        log-probability plus the popularity decoder's item term (:mod:`models.emde.readout`);
        its ``top(k)`` never builds the (n_queries, n_items) matrix.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        """
        self._check_fitted()
        x = self.layout_.normalise(raw)
        with torch.no_grad():
            logp = row_log_softmax(self.network_(*sparse_batch(x)), self.out_blocks_).numpy()
        return BucketReadout(logp, self.item_out_cols_, self._item_bias())

    def _mean_log_probs(self, raw: sp.csr_array | NDArray[np.floating]) -> NDArray[np.float32]:
        """:meth:`readout`'s scores for every item, (n_queries, n_items) float32, C-contiguous."""
        return self.readout(raw).dense()

    def score_sketches(self, raw: sp.csr_array | NDArray[np.floating]) -> NDArray[np.float32]:
        """Score every item for a batch of raw input sketches.

        Parameters
        ----------
        raw : csr_array or ndarray of shape (n_queries, layout_.input_dim)
            Unnormalised input sketches (as the stream keeps them).

        Returns
        -------
        ndarray of shape (n_queries, n_items), float32: the geometric mean over all output
        depth rows of the item's bucket probability (the Count-Min readout with the
        minimum replaced by the geometric mean), computed as ``exp(log_probs @ C)`` with
        ``C`` the sparse one-hot code matrix (entries ``1 / n_rows``).
        """
        return np.exp(self._mean_log_probs(raw))

    def recommend_sketches(self, raw: sp.csr_array | NDArray[np.floating], n: int = 20, *,
                           exclude: sp.csr_array | None = None
                           ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Top-``n`` items for raw input sketches (the stream's entry point).

        Parameters
        ----------
        raw : csr_array or ndarray of shape (n_queries, layout_.input_dim)
        n : int
        exclude : csr_array of shape (n_queries, n_items), optional
            Non-zero cells are never returned.

        Returns
        -------
        (ids, scores) : int32 and float32 arrays of shape (n_queries, n), best first, scores
        the geometric-mean probabilities; padded with -1 / -inf.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        readout = self.readout(raw)
        q, n_items = readout.shape
        k = min(n, n_items)
        ids = np.full((q, n), -1, np.int32)
        scores = np.full((q, n), -np.inf, np.float32)
        if exclude is None:
            top, top_logp = readout.top(k)  # ties: the lower item index first
        else:
            mean_logp = readout.dense()
            ex = sp.coo_array(exclude)
            mean_logp[ex.row, ex.col] = -np.inf
            top = row_top(mean_logp, k)
            top_logp = np.take_along_axis(mean_logp, np.maximum(top, 0).astype(np.int64), axis=1)
        ids[:, :k] = top
        ok = top >= 0
        scores[:, :k][ok] = np.exp(top_logp[ok])
        return ids, scores

    def recommend(self, histories: Histories, n: int = 20, *, exclude_seen: bool = False,
                  batch_size: int = 1024) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Top-``n`` items for each history (see :class:`models.base.Recommender`).

        Returns
        -------
        (ids, scores) : int32 and float32 arrays of shape (n_queries, n), padded with -1/-inf.

        Raises
        ------
        ValueError
            If a history holds an item index outside ``[0, n_items_)`` (the message gives both).
        """
        self._check_fitted()
        items = np.asarray(histories.items)
        if len(items) and (items.min() < 0 or items.max() >= self.n_items_):
            bad = items[(items < 0) | (items >= self.n_items_)][0]
            raise ValueError(f"histories.items: item index {bad} outside the catalogue [0, {self.n_items_})")
        q = histories.n_queries
        ids = np.full((q, n), -1, np.int32)
        scores = np.full((q, n), -np.inf, np.float32)
        for s in range(0, q, batch_size):
            e = min(q, s + batch_size)
            sub = _slice(histories, s, e)
            raw = self.layout_.raw_sketches(self.item_in_cols_, sub, self.neighbours_)
            exclude = None
            if exclude_seen:
                lens = np.diff(sub.indptr)
                exclude = sp.csr_array((np.ones(len(sub.items), np.float32),
                                        (np.repeat(np.arange(e - s), lens), sub.items)), shape=(e - s, self.n_items_))
            ids[s:e], scores[s:e] = self.recommend_sketches(raw, n, exclude=exclude)
        return ids, scores

    def similar_items(self, item_idx: NDArray[np.int32], n: int = 20
                      ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Items most likely next to each given item: its one-item history sketch, scored.

        The item itself is excluded. Returns int32/float32 arrays of shape (len(item_idx), n).
        """
        self._check_fitted()
        item_idx = np.asarray(item_idx, dtype=np.int32)
        hist = Histories(indptr=np.arange(len(item_idx) + 1, dtype=np.int64), items=item_idx,
                         ts=np.zeros(len(item_idx)))
        return self.recommend(hist, n, exclude_seen=True)

    # ----------------------------------------------------------------- persistence
    def save(self, path: Path | str) -> None:
        """Write the model directory described in the module docstring."""
        from models.emde.model_dir import save_emde

        self._check_fitted()
        save_emde(self, Path(path))

    @classmethod
    def load(cls, path: Path | str) -> Self:
        """Read a model directory written by :meth:`save` (no pickle).

        Raises
        ------
        ModelFormatError
            If a file is missing or the format/version does not match.
        """
        from models.emde.model_dir import load_emde

        return load_emde(cls, Path(path))


def _slice(h: Histories, s: int, e: int) -> Histories:
    """Queries ``s:e`` of a batch of histories."""
    a, b = h.indptr[s], h.indptr[e]
    return Histories(indptr=h.indptr[s:e + 1] - a, items=h.items[a:b],
                     ts=None if h.ts is None else h.ts[a:b],
                     event_type=None if h.event_type is None else h.event_type[a:b])

