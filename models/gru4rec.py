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
                  net__item_bias (n_items, 1) float32       output bias
                  net__gru.* (the GRU's weights and biases) float32
                  train_loss (epochs,) float64              mean sampled cross-entropy per epoch (networks' mean)
                  n_networks () int64                       networks saved (an ensemble's net1__*, net2__*, ...)
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

from models.base import Histories, InteractionLog, whole_epochs
from models.errors import ModelFitError, ModelFormatError, NotFittedError
from models.persistence import construct_saved, load_model_dir, save_model_dir
from models.progress import progress_bar
from models.session_index import check_histories, mask_seen
from models.threads import thread_cap
from models.topk import PARALLEL_ROWS, topk

__all__ = ["GRU4Rec"]

logger = logging.getLogger(__name__)

SCORE_BLOCK_CELLS = 1 << 21
"""(queries x items) float32 cells of probabilities ``recommend`` computes and cuts to its top n at once (8 MB):
a block under glibc's largest mmap threshold (32 MB), so it is served from the reused heap, not from fresh pages
the kernel zeroes on every call. On retailrocket's 37k items this is 64 rows, 1.75x faster than one 500-row
block (bench/RESULTS.md, issue 11 session 28)."""


def _net_prefix(m: int) -> str:
    """Key prefix of network ``m``'s tensors in ``arrays.npz`` (``net__`` for the first: a single model's files)."""
    return "net__" if m == 0 else f"net{m}__"


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous count after."""
    old = torch.get_num_threads()
    cap = thread_cap()  # a small batch's one thread (models.threads.kernel_threads) wins over the model's own count
    torch.set_num_threads(max(1, int(n) if cap is None else min(int(n), cap)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _GRUNet(nn.Module):
    """Item embedding (n_items, d) shared by input and output, one GRU layer (d -> d), output bias."""

    def __init__(self, n_items: int, d: int) -> None:
        super().__init__()
        self.item_emb = nn.Parameter(torch.empty(n_items, d))
        self.item_bias = nn.Parameter(torch.zeros(n_items, 1))
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

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden state of each prefix, all of one length (no padding, so no packing).

        Parameters
        ----------
        x : int64 tensor of shape (B, L), item indices, oldest first.

        Returns
        -------
        float32 tensor of shape (B, d).
        """
        return self.encode_embedded(nn.functional.embedding(x, self.item_emb))

    def encode_embedded(self, inp: torch.Tensor) -> torch.Tensor:
        """Last hidden state of embedded prefixes ``inp`` (B, L, d) float32: (B, d) float32."""
        return self.gru(inp)[1][0]

    def dense_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters dense Adam updates (every one but the item rows): the GRU's."""
        return self.gru.parameters()


class _RowAdam:
    """Adam over the item rows a mini-batch touches (lazy Adam, as torch's SparseAdam or GRU4Rec's
    indexed optimisers): rows absent from a batch keep their weights and moments unchanged.

    Bias correction uses the global step count. Updates are in place on the given tensors.
    """

    def __init__(self, params: list[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self, rows: torch.Tensor, grads: list[torch.Tensor]) -> None:
        """Update ``p[rows]`` of every parameter given the gradients of those rows (one per param)."""
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        for p, m, v, g in zip(self.params, self.m, self.v, grads, strict=True):
            mr = m[rows].mul_(b1).add_(g, alpha=1.0 - b1)
            vr = v[rows].mul_(b2).addcmul_(g, g, value=1.0 - b2)
            m[rows], v[rows] = mr, vr
            p[rows] -= (self.lr / c1) * mr / (vr.div(c2).sqrt_().add_(self.eps))


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


def _length_batches(lens: NDArray[np.int64], batch_size: int, rng: np.random.Generator
                    ) -> tuple[NDArray[np.int64], list[tuple[int, int]]]:
    """One epoch's mini-batches, each of prefixes of one length (length bucketing: no padding).

    Examples are shuffled, grouped by length (stable, so shuffled within a length), cut into
    batches of ``batch_size`` per length, and the batches shuffled.

    Returns
    -------
    (order, bounds) : example indices (n,) and the ``(start, end)`` slices of ``order`` per batch.
    """
    perm = rng.permutation(len(lens))
    order = perm[np.argsort(lens[perm], kind="stable")]
    sl = lens[order]
    g_start = np.flatnonzero(np.r_[True, sl[1:] != sl[:-1]])
    g_end = np.r_[g_start[1:], len(sl)]
    starts = np.concatenate([np.arange(a, b, batch_size) for a, b in zip(g_start, g_end, strict=True)])
    ends = np.minimum(starts + batch_size, np.repeat(g_end, np.ceil((g_end - g_start) / batch_size).astype(np.int64)))
    pick = rng.permutation(len(starts))
    return order, [(int(a), int(b)) for a, b in zip(starts[pick], ends[pick], strict=True)]


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
    other than its own column is masked (accidental hit). Item rows are updated by a lazy
    (row-wise) Adam, the GRU by Adam; mini-batches hold prefixes of one length (no padding).
    ``recommend`` returns full-softmax probabilities; an empty history scores ``softmax(b)``.

    Parameters
    ----------
    d : int, default 128
        Embedding and hidden size.
    max_len : int, default 10
        Newest items of a prefix the GRU reads (training and scoring). 10 and 20 gave the same
        validation HR@20 / MRR@20 on yoochoose 1/64 and rsc15 (bench/RESULTS.md); 10 trains faster.
    epochs : int, default 5
        Whole passes over the examples (fixed; never cut by time).
    epoch_examples : int or None, default None
        If set, the epochs are ``min(epochs, ceil(epoch_examples / n))`` for a log of ``n`` training
        examples: small logs get all ``epochs``, large ones the whole epochs that cover about
        ``epoch_examples`` examples. Still a function of the data alone (deterministic; never
        cut by time). ``SessionFusion``'s GRU list uses 10 epochs and 1.5 M (bench/RESULTS.md, issue 11 session 24).
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
    n_threads : int, default 1
        torch threads during ``fit`` and for the GRU steps while scoring (restored afterwards). One:
        its matrices are small (a batch is 256 x d), and on a 2-core box shared with another job two
        threads ran 3-12x slower than one (bench/RESULTS.md, GRU4Rec). Part of the result: two
        threads gave other weights than one on a 3k-item log (bench/RESULTS.md, issue 11 session 25).
    score_threads : int, default 2
        torch threads for the (queries x d) x (d x n_items) product and the softmax while scoring
        (restored afterwards): large enough to split. The GRU steps before them run on ``n_threads``:
        split over two threads they ran ~50x slower while another process used the other core. The
        scores equal one thread's to float rounding.
    random_state : int or None, default 0
        Seeds the weights (a torch generator), the example order, the negatives and the dropout
        masks (a numpy generator).
    progress : bool, default True
        tqdm bar over training examples (examples/s).
    n_models : int, default 1
        Networks trained from seeds ``random_state``, ``random_state + 1``, ... and scored together by
        their mean logit (the softmax of the mean: a renormalised geometric mean of their
        probabilities). Each costs a fit and a ``(queries x d)`` share of the scoring product. On the
        small rsc15 100k log, 3 networks lifted HR@20 from .652 to .681 on validation (seed variance
        of a network trained on ~47k examples; bench/RESULTS.md, issue 11 session 34).
    ensemble_examples : int or None, default None
        If set, fewer networks on a large log: ``min(n_models, floor(ensemble_examples / (epochs * n)))``
        (at least 1) for ``n`` training examples and the epochs :meth:`n_epochs` gives, so the
        ensemble's training passes stay within about this many examples. ``SessionFusion``'s GRU list
        uses 3 networks within 3 M: 3 on logs up to 100k examples, 1 on yoochoose's and larger.

    Attributes
    ----------
    net_ : the first trained network (``item_emb`` (n_items, d), ``item_bias`` (n_items,), ``gru``).
    nets_ : list of the trained networks, :meth:`n_networks` of them (``nets_[0]`` is ``net_``).
    n_items_ : int
    train_loss_ : list of float, the mean sampled cross-entropy of every epoch (the networks' mean).
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

    def __init__(self, d: int = 128, max_len: int = 10, epochs: int = 5, batch_size: int = 256, lr: float = 2e-3,
                 n_sample: int = 2048, sample_alpha: float = 0.75, logq: float = 1.0, dropout: float = 0.2,
                 n_threads: int = 1, random_state: int | None = 0, progress: bool = True,
                 epoch_examples: int | None = None, score_threads: int = 2, n_models: int = 1,
                 ensemble_examples: int | None = None) -> None:
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
        self.epoch_examples = epoch_examples
        self.score_threads = score_threads
        self.n_models = n_models
        self.ensemble_examples = ensemble_examples

    def get_params(self) -> dict[str, object]:
        """Constructor arguments as stored (scikit-learn's rule)."""
        return {n: getattr(self, n) for n in inspect.signature(type(self).__init__).parameters if n != "self"}

    def _validate(self) -> None:
        cls = type(self).__name__
        for name in ("d", "max_len", "epochs", "batch_size", "n_threads", "score_threads", "n_models"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{cls}: {name} must be >= 1; got {getattr(self, name)}")
        if self.epoch_examples is not None and int(self.epoch_examples) < 1:
            raise ValueError(f"{cls}: epoch_examples must be None or >= 1; got {self.epoch_examples}")
        if self.ensemble_examples is not None and int(self.ensemble_examples) < 1:
            raise ValueError(f"{cls}: ensemble_examples must be None or >= 1; got {self.ensemble_examples}")
        if self.n_sample < 0:
            raise ValueError(f"{cls}: n_sample must be >= 0; got {self.n_sample}")
        if self.random_state is not None and int(self.random_state) < 0:  # numpy's seeding refuses it only in fit
            raise ValueError(f"{cls}: random_state must be None or >= 0; got {self.random_state}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{cls}: dropout must lie in [0, 1); got {self.dropout}")
        for name in ("lr", "sample_alpha", "logq"):  # NaN or inf failed only in fit: torch's error, or a NaN loss
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"{cls}: {name} must be a finite number; got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"{cls}: lr must be > 0; got {self.lr}")

    # ----------------------------------------------------------------- fit
    def _make_net(self, n_items: int, index: int = 0) -> nn.Module:
        """The untrained network ``index`` of the ensemble for ``n_items`` items (a subclass swaps the prefix
        encoder, or varies it by ``index``)."""
        return _GRUNet(n_items, int(self.d))

    def n_epochs(self, n_examples: int) -> int:
        """Whole epochs ``fit`` runs on ``n_examples`` training examples: ``epochs``, or fewer when
        ``epoch_examples`` is set (``min(epochs, ceil(epoch_examples / n_examples))``, at least 1)."""
        return whole_epochs(self.epochs, self.epoch_examples, n_examples)

    def n_networks(self, n_examples: int) -> int:
        """Networks ``fit`` trains on ``n_examples`` training examples: ``n_models``, or fewer when
        ``ensemble_examples`` is set (``min(n_models, floor(ensemble_examples / (epochs * n_examples)))``,
        at least 1, with ``epochs`` from :meth:`n_epochs`). A function of the data alone."""
        if self.ensemble_examples is None or n_examples < 1:
            return int(self.n_models)
        per_network = self.n_epochs(n_examples) * int(n_examples)
        return max(1, min(int(self.n_models), int(self.ensemble_examples) // per_network))

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
            raise ModelFitError(f"{type(self).__name__}.fit: no session has two events; nothing to learn from")
        epochs = self.n_epochs(n)
        nets, losses, train_s = [], [], 0.0
        count = self.n_networks(n)
        for m in range(count):  # network m: seed random_state + m (network 0 is the single model's)
            seed = None if self.random_state is None else int(self.random_state) + m
            desc = type(self).__name__ + (f" {m + 1}/{count}" if count > 1 else "")
            net, net_losses, seconds = self._fit_net(log, x_np, lens_np, y_np, epochs, seed, desc, m)
            if not np.all(np.isfinite(net_losses)):
                raise ModelFitError(f"{type(self).__name__}.fit: training loss is not finite: {net_losses}")
            nets.append(net)
            losses.append(net_losses)
            train_s += seconds
        self._set_nets(nets)
        self.n_items_ = int(log.n_items)
        self.train_loss_ = [float(np.mean(col)) for col in zip(*losses, strict=True)]
        self.n_examples_ = int(n)
        self.examples_per_s_ = len(nets) * epochs * n / max(train_s, 1e-9)
        logger.info("%s: %d model(s) x %d examples x %d epochs in %.1f s (%.0f examples/s), loss per epoch %s",
                    type(self).__name__, len(nets), n, epochs, train_s, self.examples_per_s_,
                    [round(v, 4) for v in self.train_loss_])
        return self

    def _fit_net(self, log: InteractionLog, x_np: NDArray[np.int32], lens_np: NDArray[np.int64],
                 y_np: NDArray[np.int32], epochs: int, seed: int | None, desc: str, index: int
                 ) -> tuple[nn.Module, list[float], float]:
        """Network ``index`` trained from ``seed`` (``desc`` names its progress bar): (net in eval mode, mean loss
        per epoch, training seconds)."""
        n = len(y_np)
        rng = np.random.default_rng(seed)  # example order, negatives, dropout masks
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        pop = np.bincount(log.item_idx, minlength=log.n_items).astype(np.float64)
        sample_w = pop ** float(self.sample_alpha)
        sample_cdf = np.cumsum(sample_w) / sample_w.sum()
        with np.errstate(divide="ignore"):  # items absent from training are never candidates
            target_pop = np.bincount(y_np, minlength=log.n_items).astype(np.float64)
            logq_batch = torch.from_numpy(np.log(self.batch_size * target_pop / n).astype(np.float32))
            logq_sample = torch.from_numpy(np.log(self.n_sample * sample_w / sample_w.sum()).astype(np.float32))
        x_t, y_t = torch.from_numpy(x_np), torch.from_numpy(y_np)
        net = self._make_net(log.n_items, index)
        losses: list[float] = []
        t0 = time.perf_counter()
        with _torch_threads(self.n_threads):
            net.init_weights(gen)
            # item rows: lazy Adam over the rows a batch touches; the GRU: dense Adam
            opt_items = _RowAdam([net.item_emb.data, net.item_bias.data], lr=self.lr)
            opt_gru = torch.optim.Adam(net.dense_parameters(), lr=self.lr, fused=True)
            net.train()
            with progress_bar(total=epochs * n, desc=desc, unit="ex", unit_scale=True, disable=not self.progress,
                      leave=False) as bar:
                for _ in range(epochs):
                    order, bounds = _length_batches(lens_np, int(self.batch_size), rng)
                    total = 0.0
                    for s, e in bounds:
                        rows = torch.from_numpy(order[s:e])
                        x = x_t[rows, :int(lens_np[order[s]])].long()
                        y = y_t[rows]
                        sampled = torch.from_numpy(np.minimum(
                            np.searchsorted(sample_cdf, rng.random(self.n_sample), side="right"), log.n_items - 1))
                        uniq, inv = torch.unique(torch.cat([x.reshape(-1), y, sampled]), return_inverse=True)
                        emb = net.item_emb.detach()[uniq].requires_grad_()
                        bias = net.item_bias.detach()[uniq].requires_grad_()
                        keep = None
                        if self.dropout > 0:
                            keep = torch.from_numpy(rng.random((*x.shape, emb.shape[1]), dtype=np.float32)
                                                    >= self.dropout)
                        loss = self._batch_loss(net, emb, bias, inv[:x.numel()].view(x.shape), inv[x.numel():],
                                                y, sampled, logq_batch, logq_sample, keep)
                        opt_gru.zero_grad(set_to_none=True)
                        loss.backward()
                        opt_items.step(uniq, [emb.grad, bias.grad])
                        opt_gru.step()
                        total += float(loss.detach()) * (e - s)
                        bar.update(e - s)
                    losses.append(total / n)
            net.eval()
        return net, losses, time.perf_counter() - t0

    def _set_nets(self, nets: list[nn.Module]) -> None:
        """Keep the trained networks and the output layer their mean logit is scored with.

        One network: its own item embedding and bias (the single model, unchanged). Several: the
        item embeddings side by side, each divided by the count, and the mean bias, so one product
        of the networks' hidden states side by side gives the mean of their logits.
        """
        self.net_ = nets[0]
        self.nets_ = nets
        if len(nets) == 1:
            self.out_emb_, self.out_bias_ = nets[0].item_emb, nets[0].item_bias[:, 0]
        else:
            with torch.no_grad():
                self.out_emb_ = torch.cat([net.item_emb for net in nets], dim=1) / len(nets)
                self.out_bias_ = torch.stack([net.item_bias[:, 0] for net in nets]).mean(0)

    def _batch_loss(self, net: _GRUNet | nn.Module, emb: torch.Tensor, bias: torch.Tensor, x_rows: torch.Tensor,
                    cand_rows: torch.Tensor, y: torch.Tensor, sampled: torch.Tensor, logq_batch: torch.Tensor,
                    logq_sample: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Sampled softmax cross-entropy of one mini-batch (row ``r``'s positive is candidate ``r``).

        ``emb`` (U, d) and ``bias`` (U, 1) are the rows of the items the batch touches; ``x_rows``
        (B, L) and ``cand_rows`` (B + n_sample,) index them; ``keep`` is the dropout mask (B, L, d).
        """
        inp = nn.functional.embedding(x_rows, emb)
        if keep is not None:
            inp = inp * keep / (1.0 - self.dropout)
        h = net.encode_embedded(inp)
        logits = torch.addmm(bias[cand_rows, 0], h, nn.functional.embedding(cand_rows, emb).T)
        if self.logq:
            logits = logits - self.logq * torch.cat([logq_batch[y], logq_sample[sampled]])
        cand = torch.cat([y, sampled])
        hit = cand[None, :] == y[:, None]
        rows = torch.arange(len(y))
        hit[rows, rows] = False
        return nn.functional.cross_entropy(logits.masked_fill_(hit, -torch.inf), rows)

    # ----------------------------------------------------------------- scoring
    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise NotFittedError(self)

    def _hidden(self, histories: Histories) -> torch.Tensor:
        """Last state of each history's newest ``max_len`` items, (n_queries, n_models * d): the networks'
        states side by side; zeros if empty."""
        lens = np.minimum(np.diff(histories.indptr), self.max_len)
        d = self.net_.item_emb.shape[1]
        h = torch.zeros(histories.n_queries, d * len(self.nets_))
        end = histories.indptr[1:]
        for length in np.unique(lens[lens > 0]):  # one dense pass per prefix length (and network)
            q = np.flatnonzero(lens == length)
            x = torch.from_numpy(histories.items[(end[q] - length)[:, None] + np.arange(length)[None, :]].astype(np.int64))
            rows = torch.from_numpy(q)
            for m, net in enumerate(self.nets_):
                h[rows, m * d:(m + 1) * d] = net.encode(x)
        return h

    def score(self, histories: Histories) -> NDArray[np.float32]:
        """Full-softmax probability ``softmax(h · E + b)[i]`` of every item, (n_queries, n_items) float32.

        Probabilities, not logits: their relative rounding error does not depend on the batch
        (a logit near 0 would carry a large relative error from batch-size-dependent GEMM kernels).

        Raises
        ------
        NotFittedError
            Before ``fit``.
        ValueError
            If a history holds an index outside ``[0, n_items_)``.
        """
        self._check_fitted()
        check_histories(histories, self.n_items_, type(self).__name__)
        with torch.no_grad():
            with _torch_threads(self.n_threads):  # the GRU's small per-step products: split, they wait on a busy core
                h = self._hidden(histories)
            return self._probabilities(h)

    def _probabilities(self, h: torch.Tensor) -> NDArray[np.float32]:
        """``softmax(h · E + b)`` of hidden states ``h`` (m, n_models * d): (m, n_items) float32, on ``score_threads``
        (several networks: the softmax of their mean logit, a renormalised geometric mean of their probabilities)."""
        with _torch_threads(self.score_threads):
            return torch.softmax(torch.addmm(self.out_bias_, h, self.out_emb_.T), dim=1).numpy()

    def recommend(self, histories: Histories, n: int = 20, *, exclude_seen: bool = False,
                  batch_size: int = 1024) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Top-``n`` items for each history (see :class:`models.base.Recommender`).

        The GRU runs on ``batch_size`` histories at a time; their probabilities are computed and
        cut to the top ``n`` in blocks of :data:`SCORE_BLOCK_CELLS` cells (at least
        :data:`models.topk.PARALLEL_ROWS` rows), so no dense block leaves the allocator's reused
        heap (bench/RESULTS.md, issue 11 session 28). The lists do not depend on either size.

        Returns
        -------
        (ids, scores) : int32 and float32 arrays of shape (n_queries, n), best first (scores are
        the full-softmax probabilities), padded with -1 / -inf.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        ValueError
            If a history holds an index outside ``[0, n_items_)`` or ``n < 1``.
        """
        self._check_fitted()
        check_histories(histories, self.n_items_, type(self).__name__)
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        q = histories.n_queries
        ids = np.full((q, n), -1, np.int32)
        scores = np.full((q, n), -np.inf, np.float32)
        block = max(PARALLEL_ROWS, SCORE_BLOCK_CELLS // max(self.n_items_, 1))
        for s in range(0, q, batch_size):
            sub = histories.slice(s, min(q, s + batch_size))
            with torch.no_grad():
                with _torch_threads(self.n_threads):
                    h = self._hidden(sub)
                for lo in range(0, sub.n_queries, block):
                    hi = min(sub.n_queries, lo + block)
                    sc = self._probabilities(h[lo:hi])
                    if exclude_seen:
                        mask_seen(sc, sub.slice(lo, hi))
                    ids[s + lo:s + hi], scores[s + lo:s + hi] = topk(sc, n)
        return ids, scores

    def similar_items(self, item_idx: NDArray[np.int32], n: int = 20
                      ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """The likeliest next items after each given item alone (the item itself excluded)."""
        q = np.asarray(item_idx, dtype=np.int32)
        return self.recommend(Histories(indptr=np.arange(len(q) + 1, dtype=np.int64), items=q), n,
                              exclude_seen=True)

    # ----------------------------------------------------------------- persistence
    def save(self, path: Path) -> None:
        """Write ``arrays.npz`` (the networks' tensors as arrays: ``net__*`` the first, ``net<m>__*`` network
        ``m`` of an ensemble) and ``params.json`` to ``path``."""
        self._check_fitted()
        arrays = {f"{_net_prefix(m)}{k}": v.detach().numpy() for m, net in enumerate(self.nets_)
                  for k, v in net.state_dict().items()}
        save_model_dir(path, type(self).__name__, self.get_params(),
                       {**arrays, "train_loss": np.asarray(self.train_loss_, dtype=np.float64),
                        "n_networks": np.asarray(len(self.nets_), dtype=np.int64)})

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a directory written by :meth:`save` (``allow_pickle=False``).

        Raises
        ------
        ModelFormatError
            If a file is missing, the class/version differ, or the tensors do not match the network.
        """
        params, arrays = load_model_dir(path, cls.__name__)
        model = construct_saved(cls, params, path)
        nets, n_items = [], 0
        saved = int(arrays["n_networks"]) if "n_networks" in arrays else int(model.n_models)
        if not 1 <= saved <= int(model.n_models):
            raise ModelFormatError(f"{path}: arrays.npz says {saved} networks; params.json allows 1..{model.n_models}")
        for m in range(saved):
            prefix = _net_prefix(m)
            state = {k.removeprefix(prefix): torch.from_numpy(v) for k, v in arrays.items() if k.startswith(prefix)}
            if "item_emb" not in state or state["item_emb"].ndim != 2:
                raise ModelFormatError(f"{path}: arrays.npz holds no 2-D {prefix}item_emb "
                                       f"(params.json says n_models={model.n_models})")
            n_items, d = state["item_emb"].shape
            if d != model.d:
                raise ModelFormatError(f"{path}: {prefix}item_emb has dim {d}; params.json says d={model.d}")
            net = model._make_net(int(n_items), m)
            try:
                net.load_state_dict(state)
            except RuntimeError as exc:
                raise ModelFormatError(f"{path}: the saved tensors do not match a {cls.__name__} network ({exc})"
                                       ) from exc
            net.eval()
            nets.append(net)
        if len({int(net.item_emb.shape[0]) for net in nets}) != 1:
            raise ModelFormatError(f"{path}: the ensemble's networks hold different item counts")
        model._set_nets(nets)
        model.n_items_ = int(n_items)
        model.train_loss_ = [float(v) for v in arrays.get("train_loss", [])]
        return model
