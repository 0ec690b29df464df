"""GRU4Rec: a session's prefix through one GRU layer, scored against tied item embeddings.

The settings follow Hidasi & Czapp 2023 ("The effect of third party implementations on
reproducibility", RecSys 2023), which found the working GRU4Rec to be: cross-entropy loss,
sampled negatives (the mini-batch's own targets plus items drawn by ``popularity ** alpha``)
with the logQ correction, and the *constrained* embedding (the input item embedding is the
output weight matrix). Unlike the original session-parallel mini-batches (Hidasi et al. 2016)
every training example here is one (prefix -> next item) pair of a training session, the prefix
cut to its newest ``max_len`` items; scoring uses the full softmax over the catalogue.

Model directory (``save``/``load``, :mod:`models.persistence`)::

    params.json   {"class": "GRU4Rec", "version": 1, "params": {...constructor arguments}}
    arrays.npz    net__item_emb (n_items, d) float32        tied input/output item embedding
                  net__item_bias (n_items,) float32         output bias
                  net__gru.* (the GRU's weights and biases) float32
                  train_loss (epochs,) float64              mean sampled cross-entropy per epoch
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence
from tqdm.auto import tqdm

from models.base import Histories, InteractionLog
from models.errors import ModelFitError, ModelFormatError, NotFittedError
from models.persistence import load_model_dir, save_model_dir
from models.session_index import check_histories, mask_seen
from models.topk import topk

__all__ = ["GRU4Rec"]

logger = logging.getLogger(__name__)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous count after."""
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _GRUNet(nn.Module):
    """Item embedding (n_items, d) shared by input and output, one GRU layer (d -> d), output bias."""

    def __init__(self, n_items: int, d: int) -> None:
        super().__init__()
        self.item_emb = nn.Parameter(torch.empty(n_items, d))
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.gru = nn.GRU(d, d, batch_first=True)

    def init_weights(self, gen: torch.Generator) -> None:
        """GRU4Rec's uniform ``±sqrt(6 / (fan_in + fan_out))`` for the embedding, torch's
        ``±1/sqrt(d)`` for the GRU, zero biases; drawn from ``gen`` only."""
        n_items, d = self.item_emb.shape
        with torch.no_grad():
            a = math.sqrt(6.0 / (n_items + d))
            self.item_emb.copy_(torch.rand(self.item_emb.shape, generator=gen) * (2 * a) - a)
            self.item_bias.zero_()
            k = 1.0 / math.sqrt(d)
            for name, p in self.gru.named_parameters():
                if name.startswith("bias"):
                    p.zero_()
                else:
                    p.copy_(torch.rand(p.shape, generator=gen) * (2 * k) - k)

    def encode(self, x: torch.Tensor, lens: torch.Tensor, *, dropout: float = 0.0,
               gen: torch.Generator | None = None) -> torch.Tensor:
        """Last hidden state of each prefix.

        Parameters
        ----------
        x : int64 tensor of shape (B, T)
            Item indices, oldest first, right-padded (entries at positions >= ``lens`` ignored).
        lens : int64 tensor of shape (B,)
            Prefix lengths, each in ``[1, T]``.
        dropout : float
            Dropout on the item embeddings (training only; the mask is drawn from ``gen``).

        Returns
        -------
        float32 tensor of shape (B, d).
        """
        packed = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
        emb = nn.functional.embedding(packed.data, self.item_emb)
        if dropout > 0 and gen is not None:
            emb = emb * (torch.empty_like(emb).bernoulli_(1.0 - dropout, generator=gen) / (1.0 - dropout))
        _, h_n = self.gru(PackedSequence(emb, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices))
        return h_n[0]


def _session_examples(log: InteractionLog, max_len: int
                      ) -> tuple[NDArray[np.int32], NDArray[np.int64], NDArray[np.int64]]:
    """Every (prefix -> next item) pair of every session of ``log``, events ordered by (session, ts).

    Returns
    -------
    (x, lens, y) : int32 (n_examples, max_len) prefixes (oldest first, right-padded with 0),
        int64 (n_examples,) prefix lengths in ``[1, max_len]``, int64 (n_examples,) next items.
    """
    order = np.lexsort((log.ts, log.session_idx))  # stable: equal times keep log order
    items = log.item_idx[order]
    counts = np.bincount(log.session_idx, minlength=log.n_sessions)
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n_pairs = np.maximum(counts - 1, 0)
    sess = np.repeat(np.arange(len(counts)), n_pairs)
    first = np.concatenate([[0], np.cumsum(n_pairs)])[:-1]
    cut = bounds[sess] + (np.arange(int(n_pairs.sum())) - np.repeat(first, n_pairs) + 1)  # target position
    start = np.maximum(bounds[sess], cut - max_len)
    lens = cut - start
    pos = start[:, None] + np.arange(max_len)[None, :]
    valid = pos < cut[:, None]
    x = np.where(valid, items[np.minimum(pos, len(items) - 1)], 0).astype(np.int32)
    return x, lens.astype(np.int64), items[cut].astype(np.int64)


class GRU4Rec:
    """Session-based recommendations with a GRU (Hidasi et al. 2016; Hidasi & Czapp 2023 settings).

    A prefix (its newest ``max_len`` items) -> tied item embedding (dim ``d``) -> dropout -> one GRU
    layer -> last hidden state ``h``; the score of item ``i`` is ``h · E[i] + b[i]``. Trained on
    every (prefix -> next item) pair of the training sessions with sampled cross-entropy: the
    candidates of a mini-batch are its own targets plus ``n_sample`` items drawn by
    ``popularity ** sample_alpha`` (one seeded draw per batch, shared by its rows); each
    candidate's logit is lowered by ``logq`` times the log of its expected count in the
    candidate set (the logQ correction: ``batch_size * p_target(i)`` for the in-batch targets,
    ``n_sample * p_sample(i)`` for the drawn ones), and a candidate equal to a row's target
    other than its own column is masked (accidental hit). An empty history scores ``b``.

    Parameters
    ----------
    d : int, default 128
        Embedding and hidden size.
    max_len : int, default 20
        Newest items of a prefix the GRU reads (training and scoring).
    epochs : int, default 5
        Whole passes over the examples (fixed; never cut by time).
    batch_size : int, default 256
    lr : float, default 2e-3
        Adam's learning rate.
    n_sample : int, default 2048
        Extra negatives per mini-batch drawn by ``popularity ** sample_alpha`` (0 = in-batch only).
    sample_alpha : float, default 0.75
    logq : float, default 1.0
        Scale of the logQ correction (0 = off).
    dropout : float, default 0.2
        Dropout on the input item embeddings while training.
    n_threads : int, default 2
        torch threads during ``fit`` and scoring (restored afterwards).
    random_state : int or None, default 0
        Seeds the weights, the example order, the negatives and the dropout masks.
    progress : bool, default True
        tqdm bar over training examples (examples/s).

    Attributes
    ----------
    net_ : the trained network (``item_emb`` (n_items, d), ``item_bias`` (n_items,), ``gru``).
    n_items_ : int
    train_loss_ : list of float, the mean sampled cross-entropy of every epoch.
    n_examples_ : int, training examples per epoch.
    examples_per_s_ : float, training throughput (examples x epochs / training seconds).

    References
    ----------
    B. Hidasi, A. Karatzoglou, L. Baltrunas, D. Tikk, "Session-based Recommendations with
    Recurrent Neural Networks", ICLR 2016. B. Hidasi, A. Karatzoglou, "Recurrent Neural Networks
    with Top-k Gains for Session-based Recommendations", CIKM 2018. B. Hidasi, Á. T. Czapp, "The
    effect of third party implementations on reproducibility", RecSys 2023. X. Yi et al.,
    "Sampling-bias-corrected neural modeling for large corpus item recommendations", RecSys 2019.
    """

    def __init__(self, d: int = 128, max_len: int = 20, epochs: int = 5, batch_size: int = 256, lr: float = 2e-3,
                 n_sample: int = 2048, sample_alpha: float = 0.75, logq: float = 1.0, dropout: float = 0.2,
                 n_threads: int = 2, random_state: int | None = 0, progress: bool = True) -> None:
        self.d = d
        self.max_len = max_len
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.n_sample = n_sample
        self.sample_alpha = sample_alpha
        self.logq = logq
        self.dropout = dropout
        self.n_threads = n_threads
        self.random_state = random_state
        self.progress = progress

    def get_params(self) -> dict[str, object]:
        """Constructor arguments as stored (scikit-learn's rule)."""
        return {n: getattr(self, n) for n in inspect.signature(type(self).__init__).parameters if n != "self"}

    def _validate(self) -> None:
        for name in ("d", "max_len", "epochs", "batch_size", "n_threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"GRU4Rec: {name} must be >= 1; got {getattr(self, name)}")
        if self.n_sample < 0:
            raise ValueError(f"GRU4Rec: n_sample must be >= 0; got {self.n_sample}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GRU4Rec: dropout must lie in [0, 1); got {self.dropout}")
        if self.lr <= 0:
            raise ValueError(f"GRU4Rec: lr must be > 0; got {self.lr}")

    # ----------------------------------------------------------------- fit
    def fit(self, log: InteractionLog) -> Self:
        """Train on every (prefix -> next item) pair of the sessions of ``log``.

        Raises
        ------
        ValueError
            If a hyper-parameter is invalid (the message names it).
        ModelFitError
            If the log gives no training pair (no session has two events) or the loss is not finite.
        """
        self._validate()
        x_np, lens_np, y_np = _session_examples(log, int(self.max_len))
        n = len(y_np)
        if n == 0:
            raise ModelFitError("GRU4Rec.fit: no session has two events; nothing to learn from")
        rng = np.random.default_rng(self.random_state)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        pop = np.bincount(log.item_idx, minlength=log.n_items).astype(np.float64)
        sample_w = pop ** float(self.sample_alpha)
        sample_cdf = np.cumsum(sample_w) / sample_w.sum()
        with np.errstate(divide="ignore"):  # items absent from training are never candidates
            target_pop = np.bincount(y_np, minlength=log.n_items).astype(np.float64)
            logq_batch = torch.from_numpy(np.log(self.batch_size * target_pop / n).astype(np.float32))
            logq_sample = torch.from_numpy(np.log(self.n_sample * sample_w / sample_w.sum()).astype(np.float32))
        x_t, lens_t, y_t = torch.from_numpy(x_np), torch.from_numpy(lens_np), torch.from_numpy(y_np)
        net = _GRUNet(log.n_items, int(self.d))
        n_batches = math.ceil(n / self.batch_size)
        losses: list[float] = []
        t0 = time.perf_counter()
        with _torch_threads(self.n_threads):
            net.init_weights(gen)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr, fused=True)
            net.train()
            with tqdm(total=self.epochs * n, desc="GRU4Rec", unit="ex", unit_scale=True, disable=not self.progress,
                      leave=False) as bar:
                for _ in range(int(self.epochs)):
                    order = torch.from_numpy(rng.permutation(n))
                    total = 0.0
                    for b in range(n_batches):
                        rows = order[b * self.batch_size:(b + 1) * self.batch_size]
                        lens = lens_t[rows]
                        x = x_t[rows, :int(lens.max())].long()
                        y = y_t[rows]
                        sampled = torch.from_numpy(np.minimum(
                            np.searchsorted(sample_cdf, rng.random(self.n_sample), side="right"), log.n_items - 1))
                        loss = self._batch_loss(net, x, lens, y, sampled, logq_batch, logq_sample, gen)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        total += float(loss.detach())
                        bar.update(len(rows))
                    losses.append(total / n_batches)
            net.eval()
        train_s = time.perf_counter() - t0
        if not np.all(np.isfinite(losses)):
            raise ModelFitError(f"GRU4Rec.fit: training loss is not finite: {losses}")
        self.net_ = net
        self.n_items_ = int(log.n_items)
        self.train_loss_ = losses
        self.n_examples_ = int(n)
        self.examples_per_s_ = self.epochs * n / max(train_s, 1e-9)
        logger.info("gru4rec: %d examples x %d epochs in %.1f s (%.0f examples/s), loss per epoch %s",
                    n, self.epochs, train_s, self.examples_per_s_, [round(v, 4) for v in losses])
        return self

    def _batch_loss(self, net: _GRUNet, x: torch.Tensor, lens: torch.Tensor, y: torch.Tensor,
                    sampled: torch.Tensor, logq_batch: torch.Tensor, logq_sample: torch.Tensor,
                    gen: torch.Generator) -> torch.Tensor:
        """Sampled softmax cross-entropy of one mini-batch (row ``r``'s positive is candidate ``r``)."""
        h = net.encode(x, lens, dropout=float(self.dropout), gen=gen)
        cand = torch.cat([y, sampled])
        logits = torch.addmm(net.item_bias[cand], h, net.item_emb[cand].T)
        if self.logq:
            logits = logits - self.logq * torch.cat([logq_batch[y], logq_sample[sampled]])
        rows = torch.arange(len(y))
        hit = cand[None, :] == y[:, None]
        hit[rows, rows] = False
        logits = logits.masked_fill(hit, -torch.inf)
        return nn.functional.cross_entropy(logits, rows)

    # ----------------------------------------------------------------- scoring
    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise NotFittedError(self)

    def _hidden(self, histories: Histories) -> torch.Tensor:
        """Last GRU state of each history's newest ``max_len`` items, (n_queries, d); zeros if empty."""
        lens_all = np.diff(histories.indptr)
        lens = np.minimum(lens_all, self.max_len)
        h = torch.zeros(histories.n_queries, self.net_.item_emb.shape[1])
        nonempty = np.flatnonzero(lens > 0)
        if len(nonempty):
            ln = lens[nonempty]
            end = histories.indptr[1:][nonempty]
            pos = (end - ln)[:, None] + np.arange(int(ln.max()))[None, :]
            valid = pos < end[:, None]
            x = np.where(valid, histories.items[np.minimum(pos, len(histories.items) - 1)], 0).astype(np.int64)
            h[torch.from_numpy(nonempty)] = self.net_.encode(torch.from_numpy(x), torch.from_numpy(ln.astype(np.int64)))
        return h

    def score(self, histories: Histories) -> NDArray[np.float32]:
        """Full-softmax logits ``h · E[i] + b[i]`` of every item, (n_queries, n_items) float32.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        ValueError
            If a history holds an index outside ``[0, n_items_)``.
        """
        self._check_fitted()
        check_histories(histories, self.n_items_, "GRU4Rec")
        with _torch_threads(self.n_threads), torch.no_grad():
            h = self._hidden(histories)
            return torch.addmm(self.net_.item_bias, h, self.net_.item_emb.T).numpy()

    def recommend(self, histories: Histories, n: int = 20, *, exclude_seen: bool = False,
                  batch_size: int = 1024) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Top-``n`` items for each history (see :class:`models.base.Recommender`).

        Returns
        -------
        (ids, scores) : int32 and float32 arrays of shape (n_queries, n), best first (scores are
        the logits), padded with -1 / -inf.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        ValueError
            If a history holds an index outside ``[0, n_items_)`` or ``n < 1``.
        """
        self._check_fitted()
        check_histories(histories, self.n_items_, "GRU4Rec")
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        q = histories.n_queries
        ids = np.full((q, n), -1, np.int32)
        scores = np.full((q, n), -np.inf, np.float32)
        for s in range(0, q, batch_size):
            sub = histories.slice(s, min(q, s + batch_size))
            sc = self.score(sub)
            if exclude_seen:
                mask_seen(sc, sub)
            ids[s:s + sub.n_queries], scores[s:s + sub.n_queries] = topk(sc, n)
        return ids, scores

    def similar_items(self, item_idx: NDArray[np.int32], n: int = 20
                      ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """The likeliest next items after each given item alone (the item itself excluded)."""
        q = np.asarray(item_idx, dtype=np.int32)
        return self.recommend(Histories(indptr=np.arange(len(q) + 1, dtype=np.int64), items=q), n,
                              exclude_seen=True)

    # ----------------------------------------------------------------- persistence
    def save(self, path: Path) -> None:
        """Write ``arrays.npz`` (the network's tensors as arrays) and ``params.json`` to ``path``."""
        self._check_fitted()
        arrays = {f"net__{k}": v.detach().numpy() for k, v in self.net_.state_dict().items()}
        save_model_dir(path, "GRU4Rec", self.get_params(),
                       {**arrays, "train_loss": np.asarray(self.train_loss_, dtype=np.float64)})

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a directory written by :meth:`save` (``allow_pickle=False``).

        Raises
        ------
        ModelFormatError
            If a file is missing, the class/version differ, or the tensors do not match the network.
        """
        params, arrays = load_model_dir(path, "GRU4Rec")
        model = cls(**params)
        state = {k.removeprefix("net__"): torch.from_numpy(v) for k, v in arrays.items() if k.startswith("net__")}
        if "item_emb" not in state or state["item_emb"].ndim != 2:
            raise ModelFormatError(f"{path}: arrays.npz holds no 2-D net__item_emb")
        n_items, d = state["item_emb"].shape
        if d != model.d:
            raise ModelFormatError(f"{path}: net__item_emb has dim {d}; params.json says d={model.d}")
        net = _GRUNet(int(n_items), int(d))
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelFormatError(f"{path}: the saved tensors do not match a GRU4Rec network ({exc})") from exc
        net.eval()
        model.net_ = net
        model.n_items_ = int(n_items)
        model.train_loss_ = [float(v) for v in arrays.get("train_loss", [])]
        return model
