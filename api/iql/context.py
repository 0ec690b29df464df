"""Per-request values an IQL plan is bound to: current item, user, cart, parameters, time."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RequestContext"]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What ``context.*``, ``$param`` and ``now()`` refer to in one request.

    Parameters
    ----------
    item : mapping, optional
        Attributes of the current item (``context.item.*``); e.g. ``CatalogIndex.get(item_id)``.
    user : mapping, optional
        Attributes of the user (``context.user.*``), e.g. ``{"segment": "vip"}``. One also given in
        ``params`` as ``user.<a>`` (the API's request parameter) is named so by a binding error.
    cart : sequence of mappings
        Attributes of each cart item (``MIN(context.cart.price)``, ``ANY(context.cart.brand)``).
    params : mapping
        Request parameters by name without ``$``; strings are coerced to the compared type.
    now_s : float
        Request time in epoch seconds (``now()``); defaults to the wall clock at construction.
    """

    item: Mapping[str, Any] | None = None
    user: Mapping[str, Any] | None = None
    cart: Sequence[Mapping[str, Any]] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    now_s: float = field(default_factory=time.time)
