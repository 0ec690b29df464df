"""A route matched on the path as the client sent it, so an encoded slash (``%2F``) stays inside its parameter."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from starlette.routing import Match, Route
from starlette.types import Scope

__all__ = ["RawPathRoute"]


class RawPathRoute(Route):
    """A ``Route`` whose ``{name}`` parameters may hold a percent-encoded ``/``.

    The server decodes the path before routing, so ``/v1/campaigns/nope%2Fx`` reached the router as
    ``/v1/campaigns/nope/x``: it matched no route (a 404 naming ``path``), and ``/v1/campaigns/home%2Farms``
    matched ``/v1/campaigns/{campaign_id}/arms`` as campaign ``home``. When the raw path holds an encoded slash,
    this route matches the raw path instead and decodes each parameter after the match, so the handler gets
    ``nope/x`` whole and refuses it as it refuses any other invalid id. Other paths match as for ``Route``.
    A path with an encoded slash is never redirected to its form without the trailing slash (Starlette's
    ``redirect_slashes``): ``/v1/campaigns/home%2F/`` was a 307 to campaign ``home``; it matches no route (404).
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        raw = scope.get("raw_path")
        if scope["type"] != "http" or not raw or b"%2f" not in raw.lower():
            return super().matches(scope)
        encoded = raw.decode("ascii", "replace")  # the server refuses a path that is not ASCII
        decoded = unquote(encoded)
        prefix = scope["path"].removesuffix(decoded)  # a root_path the server put in front, if any
        if prefix + decoded != scope["path"]:
            if scope["path"].rstrip("/").endswith(decoded.rstrip("/")):
                # the router's trailing-slash probe (its redirect): the path with the slashes after the id removed
                # or added, decoded, so ``/v1/campaigns/home%2F/`` would be sent to campaign ``home``: no match
                return Match.NONE, {}
            return super().matches(scope)  # not the path the server decoded: leave it to the plain match
        match, child = super().matches({**scope, "path": prefix + encoded})
        if match is not Match.NONE:
            params: dict[str, Any] = child["path_params"]
            for name in self.param_convertors:
                if isinstance(params.get(name), str):
                    params[name] = unquote(params[name])
        return match, child
