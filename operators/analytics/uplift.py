"""Uplift of exposed over control users with a confidence interval (normal approximation).

For each metric the estimate is the relative uplift ``exposed / control - 1`` and its interval
comes from the delta method on the log of the ratio of two independent estimates:
``log(e / c) +- z * sqrt(var(log e) + var(log c))``, then ``exp(.) - 1``.

* conversion rate ``p = converted / users``: ``var(log p) = (1 - p) / (n p)`` (binomial);
* AOS (items per order) and AOV (revenue per order), ``m = sum x / n`` over orders:
  ``var(log m) = s^2 / (n m^2)`` with the sample variance ``s^2`` from the sums of squares.
  Orders are treated as independent (a user's several orders are not clustered), which narrows
  the interval slightly when users order repeatedly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

__all__ = ["GroupTotals", "Uplift", "uplift", "METHOD"]

METHOD = "normal approximation (delta method on the log ratio), 95 %"


@dataclass(frozen=True)
class GroupTotals:
    """Sums over a group's users and orders (``analytics.join.GROUP_FIELDS``)."""

    users: float = 0.0
    converted: float = 0.0
    orders: float = 0.0
    items: float = 0.0
    items_sq: float = 0.0
    revenue: float = 0.0
    revenue_sq: float = 0.0

    def rate(self) -> tuple[float, float] | None:
        """(conversion rate, var of its log) or None when undefined."""
        n, k = self.users, self.converted
        if n <= 0 or k <= 0 or k > n:
            return None  # undefined (k > n only when users were counted outside the window summed)
        p = k / n
        return p, (1 - p) / (n * p)

    def mean(self, total: float, total_sq: float) -> tuple[float, float] | None:
        """(mean per order, var of its log) or None when undefined (< 2 orders or zero mean)."""
        n = self.orders
        if n < 2 or total <= 0:
            return None
        m = total / n
        s2 = max(total_sq - n * m * m, 0.0) / (n - 1)
        return m, s2 / (n * m * m)


@dataclass(frozen=True)
class Uplift:
    """One metric, exposed vs control: values, relative uplift and its interval (None if undefined)."""

    metric: str
    exposed: float | None
    control: float | None
    uplift: float | None
    ci_low: float | None
    ci_high: float | None


def _ratio(metric: str, e: tuple[float, float] | None, c: tuple[float, float] | None, z: float) -> Uplift:
    if e is None or c is None:
        return Uplift(metric, None if e is None else e[0], None if c is None else c[0], None, None, None)
    lr = math.log(e[0] / c[0])
    half = z * math.sqrt(e[1] + c[1])
    return Uplift(metric, e[0], c[0], math.exp(lr) - 1, math.exp(lr - half) - 1, math.exp(lr + half) - 1)


def uplift(exposed: GroupTotals, control: GroupTotals, level: float = 0.95) -> list[Uplift]:
    """Conversion rate, AOS and AOV uplift of ``exposed`` over ``control`` (see module docstring).

    Examples
    --------
    >>> u = uplift(GroupTotals(users=1000, converted=300), GroupTotals(users=1000, converted=200))[0]
    >>> round(u.uplift, 2), u.ci_low > 0
    (0.5, True)
    """
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return [
        _ratio("conversion", exposed.rate(), control.rate(), z),
        _ratio("aos", exposed.mean(exposed.items, exposed.items_sq), control.mean(control.items, control.items_sq), z),
        _ratio("aov", exposed.mean(exposed.revenue, exposed.revenue_sq),
               control.mean(control.revenue, control.revenue_sq), z),
    ]
