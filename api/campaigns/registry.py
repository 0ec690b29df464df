"""Campaigns in memory for the request path, kept in step with the store other workers write."""

from __future__ import annotations

import time

from api.optimizer import OptimizerConfig
from operators.control_group import CONTROL_ARM
from state.campaigns import Campaign, CampaignStore

__all__ = ["CampaignRegistry", "optimizer_config", "declared_segment"]


def optimizer_config(campaign: Campaign | None) -> OptimizerConfig:
    """The optimizer knobs of a campaign (defaults for an unknown or deleted one)."""
    if campaign is None:
        return OptimizerConfig()
    o = campaign.optimizer
    return OptimizerConfig(o.prior_alpha, o.prior_beta, o.floor, o.half_life_s)


def declared_segment(campaign: Campaign | None, value: str) -> str:
    """The optimizer segment of a request's segment value: the value if the campaign declares it
    (``optimizer.segments``), else ``""`` (the campaign's global arm statistics). Bounds the optimizer's
    keys to the segments an admin declared, whatever values clients send."""
    return value if campaign is not None and value in campaign.optimizer.segments else ""


class CampaignRegistry:
    """All campaigns by id; re-read from the store when its generation changes.

    Parameters
    ----------
    store : CampaignStore
        The persistent store (shared by the API's worker processes).
    check_every_s : float
        How often ``get``/``all`` look at the store's generation (a small file read).
    """

    def __init__(self, store: CampaignStore, check_every_s: float = 0.5) -> None:
        self.store = store
        self.check_every_s = check_every_s
        self.generation, self._campaigns = store.load_all()
        self._checked = time.monotonic()

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.check_every_s:
            return
        self._checked = now
        if self.store.generation() != self.generation:
            self.generation, self._campaigns = self.store.load_all()

    def get(self, campaign_id: str) -> Campaign | None:
        self._refresh()
        return self._campaigns.get(campaign_id)

    def all(self) -> list[Campaign]:
        self._refresh()
        return sorted(self._campaigns.values(), key=lambda c: c.campaign_id)

    def config_of(self, campaign_id: str) -> OptimizerConfig:
        """Optimizer knobs by id (reader thread; no refresh, a slightly old copy is fine)."""
        return optimizer_config(self._campaigns.get(campaign_id))

    def declares(self, campaign_id: str, arm: str) -> bool:
        """True if the campaign exists and declares ``arm`` (or ``arm`` is its control group).

        A miss re-reads the store at once (a list served by another worker right after the campaign
        was written). Bounds the optimizer's keys to campaigns and arms that exist.
        """
        c = self._campaigns.get(campaign_id)
        if c is None:
            self._checked = 0.0
            self._refresh()
            c = self._campaigns.get(campaign_id)
        return c is not None and (arm == CONTROL_ARM or any(a.name == arm for a in c.arms))

    def segment_of(self, campaign_id: str, value: str) -> str:
        """``declared_segment`` by campaign id (reader thread; no refresh: ``declares`` ran first)."""
        return declared_segment(self._campaigns.get(campaign_id), value)

    def put(self, campaign: Campaign) -> None:
        """Write through to the store, then re-read it (other workers may have written too)."""
        self.store.put(campaign)
        self.generation, self._campaigns = self.store.load_all()

    def delete(self, campaign_id: str) -> bool:
        """Delete through the store; False if the campaign did not exist."""
        existed = self.get(campaign_id) is not None
        self.store.delete(campaign_id)
        self.generation, self._campaigns = self.store.load_all()
        return existed
