"""The EMDE sketch network (shallow residual feed-forward, torch) and its training loop.

Input: a batch of (normalised) history sketches, sparse. The first layer is an
``EmbeddingBag`` in ``sum`` mode, i.e. ``sketch @ W`` that only touches non-zero cells;
then batch norm and leaky ReLU, then ``n_layers - 1`` residual blocks
``h <- h + leaky_relu(bn(linear(h)))``; the output is shaped as a sketch (one logit per
bucket of every depth row) and turned into probabilities by a softmax per depth row.
The loss is the cross-entropy of each depth row against the target sketch (normalised
to 1 across the width), averaged over rows.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp
import torch
from numpy.typing import NDArray
from torch import nn

from models.errors import ModelFitError
from models.jit import PARALLEL_LAUNCH, njit_cached
from models.progress import progress_bar

__all__ = ["SketchNetwork", "TrainInputs", "train_network", "sparse_batch", "row_log_softmax", "csr_times_dense"]

log = logging.getLogger(__name__)


class _Residual(nn.Module):
    """``h + leaky_relu(bn(linear(h)))``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, hidden)
        self.bn = nn.BatchNorm1d(hidden)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + nn.functional.leaky_relu(self.bn(self.linear(h)))


class SketchNetwork(nn.Module):
    """Shallow residual network from an input sketch to an output sketch.

    Parameters
    ----------
    n_in : int
        Length of the flat input sketch.
    out_blocks : sequence of (depth, width)
        Layout of the output sketch: modality blocks of ``depth`` rows of ``width`` buckets.
    hidden : int, default 1024
    n_layers : int, default 2
        Hidden layers (1-5): the input layer plus ``n_layers - 1`` residual blocks.
    """

    def __init__(self, n_in: int, out_blocks: Sequence[tuple[int, int]], hidden: int = 1024,
                 n_layers: int = 2) -> None:
        super().__init__()
        if not 1 <= n_layers <= 5:
            raise ValueError(f"n_layers must lie in [1, 5]; got {n_layers}")
        self.out_blocks = [(int(d), int(w)) for d, w in out_blocks]
        self.embed = nn.EmbeddingBag(n_in, hidden, mode="sum")
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.bn = nn.BatchNorm1d(hidden)
        self.blocks = nn.ModuleList([_Residual(hidden) for _ in range(n_layers - 1)])
        self.out = nn.Linear(hidden, sum(d * w for d, w in self.out_blocks))

    def init_weights(self, generator: torch.Generator) -> None:
        """Re-initialise every weight from ``generator`` (no global RNG involved)."""
        with torch.no_grad():
            self.embed.weight.normal_(0.0, 0.1, generator=generator)
            for lin in [b.linear for b in self.blocks] + [self.out]:
                bound = 1.0 / math.sqrt(lin.in_features)
                lin.weight.uniform_(-bound, bound, generator=generator)
                lin.bias.zero_()

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, sum(depth * width)) for a CSR batch of input sketches."""
        return self.head(self.embed(indices, offsets, per_sample_weights=weights))

    def embed_csr(self, x: sp.csr_array) -> torch.Tensor:
        """``x @ W`` of the input layer for a scipy CSR batch, shape (n, hidden), differentiable in ``W``.

        The same product as ``self.embed`` (``EmbeddingBag`` in sum mode), as two compiled
        sparse-dense products (:func:`csr_times_dense`): ``x @ W`` forward, ``x.T @ grad``
        backward (no index sort, no scatter).
        """
        x = sp.csr_array(x, dtype=np.float32)
        return _SparseInput.apply(self.embed.weight, x, sp.csr_array(x.T))

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits from the input layer's pre-activation ``sketch @ W`` of shape (batch, hidden)."""
        h = nn.functional.leaky_relu(self.bn(h + self.bias))
        for block in self.blocks:
            h = block(h)
        return self.out(h)


@njit_cached(parallel=True)
def _csr_times_dense(indptr, indices, data, dense, out) -> None:  # noqa: ANN001
    """``out = csr @ dense``: rows in parallel, each row's non-zeros summed in stored order (float32)."""
    h = dense.shape[1]
    for i in numba.prange(len(indptr) - 1):
        acc = out[i]
        acc[:] = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            v = data[p]
            src = dense[indices[p]]
            for a in range(h):
                acc[a] += v * src[a]


def csr_times_dense(x: sp.csr_array, dense: NDArray[np.float32]) -> NDArray[np.float32]:
    """``x @ dense`` for a float32 CSR ``x`` of shape (n, m) and a C-contiguous (m, h) float32 array.

    Returns a new (n, h) float32 array. Compiled and parallel over rows, with results bit-identical
    to ``torch.sparse.mm`` (the same products summed in the same order). In EMDE training (1,024
    sketches of ~560 non-zeros, 512 hidden units) the input layer's share of an epoch fell from
    34 % to 27 % with it (py-spy, retailrocket; bench/RESULTS.md, session 8).
    """
    out = np.empty((x.shape[0], dense.shape[1]), np.float32)
    with PARALLEL_LAUNCH:
        _csr_times_dense(x.indptr, x.indices, np.asarray(x.data, dtype=np.float32), dense, out)
    return out


class _SparseInput(torch.autograd.Function):
    """``x @ W`` with a scipy CSR ``x`` (and its transpose, for the gradient of ``W``)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, x: sp.csr_array, xt: sp.csr_array) -> torch.Tensor:  # noqa: ANN001
        ctx.xt = xt
        return torch.from_numpy(csr_times_dense(x, weight.detach().numpy()))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: ANN001
        return torch.from_numpy(csr_times_dense(ctx.xt, grad.contiguous().numpy())), None, None


def row_log_softmax(logits: torch.Tensor, out_blocks: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Log-softmax over the width of every depth row; same flat shape as ``logits``."""
    widths = {w for _, w in out_blocks}
    if len(widths) == 1:  # one width (the usual layout): a single softmax over every row, no copies
        w = widths.pop()
        return torch.log_softmax(logits.reshape(logits.shape[0], -1, w), dim=-1).reshape(logits.shape[0], -1)
    parts, start = [], 0
    for depth, width in out_blocks:
        block = logits[:, start:start + depth * width].reshape(-1, depth, width)
        parts.append(torch.log_softmax(block, dim=-1).reshape(-1, depth * width))
        start += depth * width
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def sparse_batch(x: sp.csr_array) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(indices, offsets, weights)`` of a CSR matrix for :class:`SketchNetwork`."""
    return (torch.from_numpy(np.asarray(x.indices, dtype=np.int64)),
            torch.from_numpy(np.asarray(x.indptr[:-1], dtype=np.int64)),
            torch.from_numpy(np.asarray(x.data, dtype=np.float32)))


@dataclass(frozen=True)
class TrainInputs:
    """Normalised input sketches of every training example, built once before training.

    The input of example ``j`` is ``examples[j] + items[last[j]]``: the views that depend on
    the whole history are stored per example, the views that depend on the newest item only
    (``last``, ``knn:last``: most of the non-zeros) once per item. A batch adds its examples'
    rows and their newest items' rows and embeds the sum (the same ``sketch @ W``).

    Attributes
    ----------
    examples : csr_array of shape (n_samples, n_in), float32
    items : csr_array of shape (n_items, n_in), float32, or None
    last : ndarray of shape (n_samples,), int64, or None
        Row of ``items`` of every example (with ``items``).
    """

    examples: sp.csr_array
    items: sp.csr_array | None = None
    last: NDArray[np.int64] | None = None

    def __post_init__(self) -> None:
        if (self.items is None) != (self.last is None):
            raise ValueError("TrainInputs: items and last go together")
        if self.last is not None and len(self.last) != self.examples.shape[0]:
            raise ValueError(f"TrainInputs: {self.examples.shape[0]} examples but {len(self.last)} last items")

    @property
    def n_samples(self) -> int:
        return int(self.examples.shape[0])

    def embed(self, net: SketchNetwork, rows: NDArray[np.int64]) -> torch.Tensor:
        """``sketch @ W`` of the examples ``rows`` (sorted), shape (len(rows), hidden)."""
        x = self.examples[rows]
        if self.items is not None:  # the views lie in disjoint columns: the sum is the concatenation
            x = x + self.items[self.last[rows]]
        return net.embed_csr(x)  # (not a gather of distinct items' rows: its backward is not deterministic)


def _out_block_codes(out_blocks: Sequence[tuple[int, int]], out_cols: NDArray[np.int32]
                     ) -> list[tuple[tuple[int, int, int], NDArray[np.int64]]]:
    """Per output block ``((first column, depth, width), bucket of every item in every row of it)``."""
    res, start, r = [], 0, 0
    for depth, width in out_blocks:
        code = np.asarray(out_cols[:, r:r + depth], dtype=np.int64) - start - np.arange(depth) * width
        res.append(((start, depth, width), code))
        start, r = start + depth * width, r + depth
    return res


def train_network(
    net: SketchNetwork,
    x: sp.csr_array | TrainInputs,
    targets: sp.csr_array,
    out_cols: NDArray[np.int32],
    *,
    epochs: int = 3,
    batch_size: int = 512,
    lr: float = 1e-3,
    lr_step_epochs: int = 1,
    lr_gamma: float = 0.5,
    random_state: int | np.random.Generator | None = None,
    max_seconds: float | None = None,
    progress: bool = True,
) -> list[float]:
    """Train ``net`` with Adam and step decay; deterministic on CPU for a fixed seed.

    Parameters
    ----------
    net : SketchNetwork
    x : csr_array of shape (n_samples, n_in), float32, or TrainInputs
        Normalised input sketches, precomputed (an epoch only gathers rows).
    targets : csr_array of shape (n_samples, n_items), float32
        Target items of each sample with weights summing to 1 per row (one item with
        weight 1 for next-item training).
    out_cols : ndarray of shape (n_items, n_out_rows), int32
        Column of every item's bucket in every row of the output sketch.
    epochs, batch_size, lr : training schedule; lr is multiplied by ``lr_gamma`` every
        ``lr_step_epochs`` epochs.
    random_state : int, Generator or None
        Seeds weight initialisation and the batch order.
    max_seconds : float, optional
        Safety stop: a batch that ends past this wall-clock budget raises ``ModelFitError``
        (a model cut by machine speed is a failure, never a result).
    progress : bool, default True
        Show a tqdm progress bar.

    Returns
    -------
    list of float: mean loss of every epoch.

    Raises
    ------
    ValueError
        If ``x`` and ``targets`` have different row counts.
    ModelFitError
        If the ``max_seconds`` safety stop fires.
    """
    inputs = x if isinstance(x, TrainInputs) else TrainInputs(sp.csr_array(x))
    if inputs.n_samples != targets.shape[0]:
        raise ValueError(f"x and targets must have one row count; got {inputs.n_samples} and {targets.shape[0]}")
    rng = np.random.default_rng(random_state)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    net.init_weights(gen)
    opt = torch.optim.Adam(net.parameters(), lr=lr, fused=True)  # one kernel: ~5x faster than foreach on CPU
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step_epochs, gamma=lr_gamma)
    cols_t = torch.from_numpy(np.asarray(out_cols, dtype=np.int64))
    n_rows = out_cols.shape[1]
    n = targets.shape[0]
    blocks, codes, target_item = _out_block_codes(net.out_blocks, out_cols), None, None
    t_csr = sp.csr_array(targets)
    if t_csr.nnz == n and np.all(np.diff(t_csr.indptr) == 1) and np.all(t_csr.data == 1):
        target_item = np.asarray(t_csr.indices, dtype=np.int64)  # the same loss, fused
        codes = [torch.from_numpy(c) for _, c in blocks]
        blocks = [b for b, _ in blocks]
    n_batches = math.ceil(n / batch_size)
    start_t = time.perf_counter()
    losses: list[float] = []
    net.train()
    with progress_bar(total=epochs * n, desc="EMDE", unit="ex", unit_scale=True, disable=not progress,
              leave=False) as bar:  # examples/s
        for _ in range(epochs):
            order = rng.permutation(n)
            total = 0.0
            for b in range(n_batches):
                rows = np.sort(order[b * batch_size:(b + 1) * batch_size])
                if len(rows) < 2:  # batch norm needs two samples
                    continue
                logits = net.head(inputs.embed(net, rows))
                if codes is not None:  # one target item per example: fused cross-entropy per block
                    tgt = torch.from_numpy(target_item[rows])
                    loss = sum(nn.functional.cross_entropy(
                        logits[:, start:start + d * w].reshape(-1, w), code[tgt].reshape(-1), reduction="sum")
                        for (start, d, w), code in zip(blocks, codes, strict=True)) / (len(rows) * n_rows)
                else:
                    tb = targets[rows].tocoo()
                    logp = row_log_softmax(logits, net.out_blocks)
                    gathered = logp[torch.from_numpy(tb.row.astype(np.int64))[:, None],
                                    cols_t[torch.from_numpy(tb.col.astype(np.int64))]]
                    wt = torch.from_numpy(tb.data.astype(np.float32))
                    loss = -(wt * gathered.sum(dim=1)).sum() / (len(rows) * n_rows)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                bar.update(len(rows))
                if max_seconds is not None and time.perf_counter() - start_t > max_seconds:
                    net.eval()
                    raise ModelFitError(f"EMDE training passed its {max_seconds:.0f} s safety stop after "
                                        f"{len(losses)} of {epochs} epochs; raise max_train_seconds or lower "
                                        f"epochs (training runs whole epochs)")
            sched.step()
            losses.append(total / n_batches)
    net.eval()
    return losses
