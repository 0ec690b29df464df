"""SASRec-style self-attention over a session's prefix, trained and scored as :class:`models.gru4rec.GRU4Rec`.

The prefix encoder is the only difference from GRU4Rec: the newest ``max_len`` items' tied embeddings plus a
learned embedding of each position counted from the newest item, through ``n_layers`` pre-norm Transformer
blocks (self-attention over the whole prefix, then a position-wise feed-forward layer), a final layer norm,
and the newest position's output is ``h``. Training (sampled softmax with logQ, lazy Adam on item rows), the
full-softmax scoring, persistence and thread settings are GRU4Rec's.

Every training example is one (prefix -> next item) pair and only the newest position is read, so the
attention needs no causal mask (each prefix is its own example; SASRec's mask serves training all positions
of a sequence at once). There is no dropout inside the blocks: torch draws those masks from its global
generator, so the only dropout is GRU4Rec's on the input embeddings, drawn from the model's own seeded
generator (the same seed gives the same weights).

Model directory: GRU4Rec's, with ``"class": "SASRec"`` and the blocks' tensors under ``net__blocks.*``,
``net__pos_emb`` (max_len, d) and ``net__out_norm.*``.

References
----------
W.-C. Kang, J. McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from models.gru4rec import GRU4Rec

__all__ = ["SASRec"]


class _SelfAttentionNet(nn.Module):
    """Item embedding (n_items, d) shared by input and output, position embedding (max_len, d),
    ``n_layers`` pre-norm Transformer blocks (``n_heads`` heads, feed-forward 2d), a final layer norm."""

    def __init__(self, n_items: int, d: int, max_len: int, n_layers: int, n_heads: int) -> None:
        super().__init__()
        self.item_emb = nn.Parameter(torch.empty(n_items, d))
        self.item_bias = nn.Parameter(torch.zeros(n_items, 1))
        self.pos_emb = nn.Parameter(torch.zeros(max_len, d))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d, n_heads, dim_feedforward=2 * d, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(n_layers))
        self.out_norm = nn.LayerNorm(d)

    def init_weights(self, gen: torch.Generator) -> None:
        """Uniform ``±sqrt(6 / (fan_in + fan_out))`` for the item embedding and every weight matrix, drawn from
        ``gen`` only (torch's own initialisation uses its global generator); zero biases, unit norms, position
        embeddings uniform in ``±0.02``."""
        n_items, d = self.item_emb.shape
        with torch.no_grad():
            a = math.sqrt(6.0 / (n_items + d))
            self.item_emb.copy_(torch.rand(self.item_emb.shape, generator=gen) * (2 * a) - a)
            self.item_bias.zero_()
            self.pos_emb.copy_(torch.rand(self.pos_emb.shape, generator=gen) * 0.04 - 0.02)
            for name, p in [*self.blocks.named_parameters(), *self.out_norm.named_parameters()]:
                if "norm" in name:
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
                elif p.ndim == 2:
                    # in_proj_weight stacks Q, K and V: each (d, d) block keeps its own fan
                    fan_out, fan_in = (d, p.shape[1]) if name.endswith("in_proj_weight") else p.shape
                    b = math.sqrt(6.0 / (fan_in + fan_out))
                    p.copy_(torch.rand(p.shape, generator=gen) * (2 * b) - b)
                else:
                    p.zero_()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encoding of each prefix, all of one length: x int64 (B, L), oldest first -> (B, d) float32."""
        return self.encode_embedded(nn.functional.embedding(x, self.item_emb))

    def encode_embedded(self, inp: torch.Tensor) -> torch.Tensor:
        """Embedded prefixes ``inp`` (B, L, d) float32, L <= max_len -> the newest position's output (B, d)."""
        length = inp.shape[1]
        z = inp + self.pos_emb[:length].flip(0)  # position 0 is the newest item
        for block in self.blocks:
            z = block(z)
        return self.out_norm(z[:, -1])

    def dense_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters dense Adam updates (every one but the item rows)."""
        yield self.pos_emb
        yield from self.blocks.parameters()
        yield from self.out_norm.parameters()


class SASRec(GRU4Rec):
    """Session-based recommendations with self-attention over the prefix (Kang & McAuley 2018).

    Parameters are :class:`models.gru4rec.GRU4Rec`'s plus:

    n_layers : int, default 2
        Transformer blocks.
    n_heads : int, default 2
        Attention heads per block; must divide ``d``.

    Raises (``fit``) ``ValueError`` for a bad hyper-parameter, as GRU4Rec, and when ``n_heads`` does not
    divide ``d``.
    """

    def __init__(self, d: int = 128, max_len: int = 10, epochs: int = 5, batch_size: int = 256, lr: float = 2e-3,
                 n_sample: int = 2048, sample_alpha: float = 0.75, logq: float = 1.0, dropout: float = 0.2,
                 n_threads: int = 1, random_state: int | None = 0, progress: bool = True,
                 epoch_examples: int | None = None, score_threads: int = 2, n_layers: int = 2,
                 n_heads: int = 2, n_models: int = 1, ensemble_examples: int | None = None) -> None:
        super().__init__(d=d, max_len=max_len, epochs=epochs, batch_size=batch_size, lr=lr, n_sample=n_sample,
                         sample_alpha=sample_alpha, logq=logq, dropout=dropout, n_threads=n_threads,
                         random_state=random_state, progress=progress, epoch_examples=epoch_examples,
                         score_threads=score_threads, n_models=n_models, ensemble_examples=ensemble_examples)
        self.n_layers = n_layers
        self.n_heads = n_heads

    def _validate(self) -> None:
        super()._validate()
        if int(self.n_layers) < 1 or int(self.n_heads) < 1 or int(self.d) % int(self.n_heads):
            raise ValueError(f"SASRec: n_layers and n_heads must be >= 1 and n_heads must divide d; "
                             f"got n_layers={self.n_layers}, n_heads={self.n_heads}, d={self.d}")

    def _make_net(self, n_items: int, index: int = 0) -> nn.Module:
        return _SelfAttentionNet(n_items, int(self.d), int(self.max_len), int(self.n_layers), int(self.n_heads))
