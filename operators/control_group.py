"""Control group: which users of a campaign are held back from recommendations (deterministic).

The facade asks ``group_of(user_id, campaign_id, share)`` before serving; a held-back user gets
no list (or the campaign's baseline) and the served ``rec_request`` event carries
``arm == CONTROL_ARM``. The analytics flow compares those users with the exposed ones.
"""

from __future__ import annotations

import hashlib

__all__ = ["CONTROL_ARM", "EXPOSED", "CONTROL", "user_fraction", "group_of"]

CONTROL_ARM = "control"
"""``arm`` of a ``rec_request`` for a held-back user."""
EXPOSED = "exposed"
CONTROL = "control"


def user_fraction(user_id: str, campaign_id: str) -> float:
    """A uniform number in [0, 1) fixed by (campaign, user): blake2b, so every process agrees.

    Salting with the campaign makes different campaigns hold back different users.

    Examples
    --------
    >>> user_fraction("u1", "home") == user_fraction("u1", "home")
    True
    """
    h = hashlib.blake2b(f"{campaign_id}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


def group_of(user_id: str, campaign_id: str, control_share: float) -> str:
    """``CONTROL`` for a ``control_share`` of users (by hash), ``EXPOSED`` for the others.

    Raises
    ------
    ValueError
        If ``control_share`` is not in [0, 1).
    """
    if not 0.0 <= control_share < 1.0:
        raise ValueError(f"control_share: must be in [0, 1); got {control_share!r}")
    return CONTROL if user_fraction(user_id, campaign_id) < control_share else EXPOSED
