"""GRU4Rec and SASRec networks in one ensemble: a recurrent and a self-attention prefix encoder, mean logit.

:class:`models.gru4rec.GRU4Rec` ensembles networks of one kind from consecutive seeds (``n_models``). Networks of
two kinds err in different ways, so their mean is a better list than the mean of as many networks of one kind:
on rsc15 100k validation, 3 GRU networks score .6808 HR@20 and 3 SASRec networks .6794, while the 6 together
score .6912, and 2 GRUs with 1 SASRec .6830 (bench/RESULTS.md, issue 11 session 35).

Network ``m`` has the encoder ``encoders[m % len(encoders)]`` and the seed ``random_state + m``; training,
scoring (one product of the networks' hidden states side by side against their item embeddings side by side),
persistence and ``ensemble_examples`` are GRU4Rec's. With ``encoders`` starting ``"gru"``, network 0 is
GRU4Rec's single model bit for bit, so a large log that affords one network (``ensemble_examples``) trains
and scores exactly GRU4Rec.

References
----------
B. Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks", ICLR 2016. W.-C. Kang,
J. McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018. T. G. Dietterich, "Ensemble methods in
machine learning", MCS 2000 (diverse members).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from models.gru4rec import GRU4Rec, _GRUNet
from models.sasrec import SASRec, _SelfAttentionNet

__all__ = ["SequenceEnsemble", "ENCODERS"]

ENCODERS: tuple[str, ...] = ("gru", "attention")
"""Prefix encoders a network may have: GRU4Rec's GRU, SASRec's self-attention blocks."""


class SequenceEnsemble(SASRec):
    """An ensemble of GRU4Rec and SASRec networks scored by their mean logit.

    Parameters are :class:`models.sasrec.SASRec`'s (``n_layers``, ``n_heads`` shape the attention networks;
    ``n_models`` and ``ensemble_examples`` count the networks as GRU4Rec does) plus:

    encoders : sequence of str, default ("gru", "attention")
        Network ``m``'s prefix encoder is ``encoders[m % len(encoders)]``, each ``"gru"`` or ``"attention"``.
    n_models : int, default 2

    Raises (``fit``) ``ValueError`` for a bad hyper-parameter, as SASRec, and for an unknown or empty
    ``encoders``.
    """

    def __init__(self, d: int = 128, max_len: int = 10, epochs: int = 5, batch_size: int = 256, lr: float = 2e-3,
                 n_sample: int = 2048, sample_alpha: float = 0.75, logq: float = 1.0, dropout: float = 0.2,
                 n_threads: int = 1, random_state: int | None = 0, progress: bool = True,
                 epoch_examples: int | None = None, score_threads: int = 2, n_layers: int = 2,
                 n_heads: int = 2, n_models: int = 2, ensemble_examples: int | None = None,
                 encoders: Sequence[str] = ENCODERS) -> None:
        super().__init__(d=d, max_len=max_len, epochs=epochs, batch_size=batch_size, lr=lr, n_sample=n_sample,
                         sample_alpha=sample_alpha, logq=logq, dropout=dropout, n_threads=n_threads,
                         random_state=random_state, progress=progress, epoch_examples=epoch_examples,
                         score_threads=score_threads, n_layers=n_layers, n_heads=n_heads, n_models=n_models,
                         ensemble_examples=ensemble_examples)
        self.encoders = encoders

    def _validate(self) -> None:
        # a list or tuple of names only: a string or a mapping (its keys) would pass a set test and fail at fit
        if (not isinstance(self.encoders, (list, tuple)) or not self.encoders
                or not all(isinstance(e, str) and e in ENCODERS for e in self.encoders)):
            raise ValueError(f"SequenceEnsemble: encoders must be a non-empty list of {list(ENCODERS)}; "
                             f"got {self.encoders!r}")
        if "attention" in self.encoders:
            super()._validate()  # SASRec's: n_layers, n_heads shape the attention networks
        else:
            GRU4Rec._validate(self)  # GRU networks only: n_layers and n_heads play no part

    def encoder(self, index: int) -> str:
        """Prefix encoder of network ``index``: ``encoders[index % len(encoders)]``."""
        return str(self.encoders[index % len(self.encoders)])

    def _make_net(self, n_items: int, index: int = 0) -> nn.Module:
        if self.encoder(index) == "gru":
            return _GRUNet(n_items, int(self.d))
        return _SelfAttentionNet(n_items, int(self.d), int(self.max_len), int(self.n_layers), int(self.n_heads))
