"""Whether the API may listen on an address with the configured keys (closed by default).

Shared by ``api.app.create_app`` and ``fusionrec serve`` / ``fusionrec run`` (``flows/``), which
must refuse to start before binding; it lives here because ``flows/`` may not import ``api/``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["DEV_KEYS", "exposure_problem", "is_loopback"]

DEV_KEYS = frozenset({"admin-dev-key", "client-dev-key"})
"""The convenience keys of ``fusionrec run`` (loopback only); refused on any other bind address."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``); ``0.0.0.0`` is not."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_problem(host: str, require_keys: bool, admin_keys: Iterable[str], client_keys: Iterable[str]) -> str | None:
    """Why the API must not listen on ``host`` with these key settings, or None if it may.

    Loopback may run anything; any other address needs ``require_keys``, at least one admin key
    and no development key (``DEV_KEYS``).
    """
    if is_loopback(host):
        return None
    where = f"refusing to listen on {host!r} (not loopback)"
    if not require_keys:
        return f"{where} with api.require_keys = false: set it true (FUSIONREC_API__REQUIRE_KEYS=true)"
    admin, client = list(admin_keys), list(client_keys)
    if not admin:
        return (f"{where} without an admin key: set api.admin_keys (FUSIONREC_API__ADMIN_KEYS='[\"<secret>\"]') "
                "and api.client_keys")
    dev = sorted(DEV_KEYS.intersection(admin + client))
    if dev:
        return f"{where} with the development keys {dev}: replace them in api.admin_keys / api.client_keys"
    short = [k[:4] + "…" for k in admin + client if len(k) < 16]
    if short:
        return f"{where}: keys shorter than 16 characters ({short}); use random keys (e.g. openssl rand -hex 24)"
    return None
