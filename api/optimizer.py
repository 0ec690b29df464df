"""Thompson sampling over a campaign's arms: Beta-Bernoulli per (campaign, arm, segment).

Each arm's posterior is ``Beta(prior_alpha + rewards, prior_beta + pulls - rewards)`` where pulls
are served lists and rewards the lists that converted (``operators/attribution.py``). With a
half-life, both counts decay exponentially in time (discounted Thompson sampling, for drift):
old evidence fades, so an arm that got better is found again. An exploration floor keeps every
arm at least ``floor`` of the traffic: with probability ``floor * n_arms`` the arm is drawn
uniformly instead of by sampling.

References
----------
Chapelle & Li, "An Empirical Evaluation of Thompson Sampling", NIPS 2011.
Raj & Kalyani, "Taming Non-stationary Bandits: A Bayesian Approach", arXiv 1707.09727.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from state.bandit import ArmKey, ArmStats

__all__ = ["OptimizerConfig", "ArmReport", "ThompsonOptimizer"]


@dataclass(frozen=True, slots=True)
class OptimizerConfig:
    """Per-campaign optimizer knobs.

    Parameters
    ----------
    prior_alpha, prior_beta : float
        Beta prior (> 0; a campaign's are in [0.001, 1e6], ``api/campaigns/schema.py``); ``(1, 1)`` is uniform.
    floor : float
        Minimum share of traffic per arm, in [0, 1/n_arms].
    half_life_s : float or None
        Half-life of the evidence in seconds; None keeps it forever.
    """

    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    floor: float = 0.0
    half_life_s: float | None = None


@dataclass(frozen=True, slots=True)
class ArmReport:
    """What ``GET /v1/campaigns/{id}/arms`` shows for one arm."""

    arm: str
    segment: str
    pulls: int
    rewards: int
    pulls_discounted: float
    rewards_discounted: float
    alpha: float
    beta: float
    mean: float
    p_best: float


class ThompsonOptimizer:
    """Arm statistics of every campaign and the sampling rule over them.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness (seed it for reproducible choices).

    Examples
    --------
    >>> opt = ThompsonOptimizer(np.random.default_rng(0))
    >>> cfg = OptimizerConfig()
    >>> for _ in range(50):
    ...     opt.record(("home", "a", ""), ts=0.0, cfg=cfg, pulls=1, rewards=1)
    ...     opt.record(("home", "b", ""), ts=0.0, cfg=cfg, pulls=1, rewards=0)
    >>> opt.choose("home", ["a", "b"], "", cfg, now_ts=0.0)
    'a'
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.arms: dict[ArmKey, ArmStats] = {}
        self.dirty: set[ArmKey] = set()
        self._lock = threading.Lock()

    def record(self, key: ArmKey, ts: float, cfg: OptimizerConfig, pulls: int = 0, rewards: int = 0) -> None:
        """Count pulls and/or rewards of one (campaign, arm, segment) observed at ``ts`` (epoch s)."""
        with self._lock:
            st = self.arms.get(key)
            if st is None:
                st = self.arms[key] = ArmStats()
            st.add(ts, cfg.half_life_s, pulls, rewards)
            self.dirty.add(key)

    def _posterior(self, campaign_id: str, arms: Sequence[str], segment: str, cfg: OptimizerConfig,
                   now_ts: float) -> list[tuple[float, float]]:
        """``(alpha, beta)`` per arm as Python floats (the request path: no array per draw)."""
        out = []
        for arm in arms:
            st = self.arms.get((campaign_id, arm, segment))
            pr, rw = st.decayed(now_ts, cfg.half_life_s) if st is not None else (0.0, 0.0)
            rw = min(rw, pr)
            out.append((cfg.prior_alpha + rw, cfg.prior_beta + pr - rw))
        return out

    def posterior(self, campaign_id: str, arms: Sequence[str], segment: str, cfg: OptimizerConfig,
                  now_ts: float) -> tuple[np.ndarray, np.ndarray]:
        """Beta parameters (alpha, beta), float64 arrays of shape (n_arms,), as of ``now_ts``."""
        ab = np.array(self._posterior(campaign_id, arms, segment, cfg, now_ts), dtype=np.float64).reshape(len(arms), 2)
        return ab[:, 0].copy(), ab[:, 1].copy()

    def choose(self, campaign_id: str, arms: Sequence[str], segment: str, cfg: OptimizerConfig,
               now_ts: float) -> str:
        """One arm for one request: uniform with probability ``floor * n_arms``, else Thompson.

        One scalar beta draw per arm, in arm order: the same stream as one array draw (numpy draws an
        array's elements in order), at a seventh of its cost (no per-call array checks). Arms whose draws
        tie for the best (draws that underflow to 0 or round to 1) are chosen between uniformly, with one
        more draw from the same generator; no tie, no extra draw.
        """
        if len(arms) == 1:
            return arms[0]
        if cfg.floor > 0 and self.rng.random() < min(1.0, cfg.floor * len(arms)):
            return arms[int(self.rng.integers(len(arms)))]
        beta = self.rng.beta
        draws = [beta(a, b) for a, b in self._posterior(campaign_id, arms, segment, cfg, now_ts)]
        best = max(draws)
        ties = [i for i, d in enumerate(draws) if d == best]
        return arms[ties[0] if len(ties) == 1 else ties[int(self.rng.integers(len(ties)))]]

    def p_best(self, campaign_id: str, arms: Sequence[str], segment: str, cfg: OptimizerConfig,
               now_ts: float, draws: int = 10_000) -> np.ndarray:
        """P(arm has the highest conversion rate), Monte Carlo from the posteriors, shape (n_arms,).

        A draw where several arms tie for the best counts a share for each, as ``choose`` picks among them.
        """
        if not arms:
            return np.zeros(0)
        a, b = self.posterior(campaign_id, arms, segment, cfg, now_ts)
        rng = np.random.default_rng(0)  # a fixed stream: the report does not jitter between calls
        samples = rng.beta(a[None, :], b[None, :], size=(draws, len(arms)))
        wins = samples == samples.max(axis=1, keepdims=True)  # (draws, n_arms), a True per tied best
        return (wins / wins.sum(axis=1, keepdims=True)).sum(axis=0) / draws

    def report(self, campaign_id: str, arms: Sequence[str], segment: str, cfg: OptimizerConfig,
               now_ts: float) -> list[ArmReport]:
        """Per-arm pulls, rewards, posterior and P(best) for one segment."""
        a, b = self.posterior(campaign_id, arms, segment, cfg, now_ts)
        pb = self.p_best(campaign_id, arms, segment, cfg, now_ts)
        out = []
        for i, arm in enumerate(arms):
            st = self.arms.get((campaign_id, arm, segment)) or ArmStats()
            pd, rd = st.decayed(now_ts, cfg.half_life_s)
            out.append(ArmReport(arm, segment, st.total_pulls, st.total_rewards, round(pd, 6), round(rd, 6),
                                 float(a[i]), float(b[i]), float(a[i] / (a[i] + b[i])), float(pb[i])))
        return out

    def segments(self, campaign_id: str) -> list[str]:
        """Segments with any statistics for a campaign ("" = no segment), sorted."""
        return sorted({s for (c, _, s) in list(self.arms) if c == campaign_id} | {""})

    def take_dirty(self) -> dict[ArmKey, ArmStats]:
        """Arms changed since the last call (copies), for a snapshot delta."""
        with self._lock:
            keys, self.dirty = self.dirty, set()
            return {k: ArmStats(st.pulls, st.rewards, st.last_ts, st.total_pulls, st.total_rewards)
                    for k in keys if (st := self.arms.get(k)) is not None}
