"""``fusionrec analytics`` (the analytics flow) and ``fusionrec simulate-ab`` (a live A/B test via the API)."""

from __future__ import annotations

import logging
import math
import os
import sys
from typing import Annotated

import numpy as np
import typer

from flows.cli import app
from flows.commands.platform import require_broker
from operators.settings import Settings

__all__ = ["analytics_cmd", "simulate_ab_cmd"]


@app.command("analytics")
def analytics_cmd(workers: Annotated[int, typer.Option("-w", "--workers", help="Worker threads", min=1)] = 1) -> None:
    """Run the analytics dataflow (same as ``python -m bytewax.run flows.analytics.dataflow:flow -w N``); a broker
    that does not answer within 10 s is one line naming it (exit status 1)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    require_broker(Settings().kafka.brokers, "analytics")  # else a KafkaException traceback
    os.execv(sys.executable, [sys.executable, "-m", "bytewax.run", "flows.analytics.dataflow:flow", "-w", str(workers)])


@app.command("simulate-ab")
def simulate_ab_cmd(
    api: Annotated[str | None, typer.Option(help="Base URL of the API, http://HOST:PORT (default: settings)")] = None,
    campaign: Annotated[str, typer.Option(help="Campaign to create and drive")] = "home-ab",
    visits_per_s: Annotated[float, typer.Option(help="Users asking for a list per second (positive)")] = 4.0,
    visits: Annotated[int, typer.Option(help="Visits before stopping (0 = forever)", min=0)] = 0,
    control_share: Annotated[float, typer.Option(help="Share of users held back (control group), in [0, 1)")] = 0.2,
    ctr_personalized: Annotated[float, typer.Option(help="True CTR of the 'personalized' arm", min=0.0,
                                                    max=1.0)] = 0.25,
    ctr_popular: Annotated[float, typer.Option(help="True CTR of the 'popular' arm", min=0.0, max=1.0)] = 0.10,
    seed: Annotated[int, typer.Option(help="Seed of the shop (users, catalog) and of the reactions", min=0)] = 0,
    replace: Annotated[bool, typer.Option(
        "--replace", help="Replace a campaign of the same id the API already holds (without it, an existing "
                          "campaign is left as it is and the command stops: exit status 1)")] = False,
) -> None:
    """Play users of the synthetic shop against a campaign of the running API, with known CTRs per arm.

    Events refused with 429 or 503 are retried after ``Retry-After`` with the same event ids; the ids
    carry a nonce of this run, so a restart with the same ``--seed`` sends new events.

    The campaign is created only if the API holds none of that id: an existing one is left as it is, and the
    command stops with one line saying so (exit status 1), unless --replace is given.

    A bad option value is a usage error (exit status 2) before any request; an API that cannot be reached
    is one line naming its URL, and an API that refuses to create the campaign (a key without the admin scope,
    an invalid campaign) one line naming the status and the API's error (exit status 1).
    """
    import httpx

    if not (visits_per_s > 0 and math.isfinite(visits_per_s)):  # a range check: 0 would divide, inf never wait
        raise typer.BadParameter(f"must be a positive number of visits per second; got {visits_per_s}",
                                 param_hint="--visits-per-s")
    if not 0 <= control_share < 1:  # as the campaign's control_share (api/campaigns/schema.py)
        raise typer.BadParameter(f"must be a share in [0, 1); got {control_share}", param_hint="--control-share")
    if api is not None:
        try:
            url = httpx.URL(api)
        except httpx.InvalidURL as exc:
            raise typer.BadParameter(f"must be a URL like http://127.0.0.1:8000; got {api!r} ({exc})",
                                     param_hint="--api") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise typer.BadParameter(f"must be a URL like http://127.0.0.1:8000; got {api!r}", param_hint="--api")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request
    from simulators.ab import ABSpec
    from simulators.ab_live import CampaignExists, CampaignRefused, LiveAB
    from simulators.shop import SyntheticShop

    s = Settings()
    if not s.api.admin_keys or not s.api.client_keys:
        raise typer.BadParameter("needs an admin and a client key: set api.admin_keys and api.client_keys "
                                 "(FUSIONREC_API__ADMIN_KEYS='[\"...\"]'); `fusionrec run` sets development keys")
    shop = SyntheticShop(seed=seed)
    cat = shop.catalog(vectors=False)
    spec = ABSpec(campaign_id=campaign, scenario="personalized", control_share=control_share,
                  arms={"personalized": ctr_personalized, "popular": ctr_popular})
    base_url = api or f"http://{s.api.host}:{s.api.port}"
    live = LiveAB(base_url, spec, shop.user_ids, [c["item_id"] for c in cat],
                  np.array([c["price"] for c in cat]), seed=seed, admin_key=s.api.admin_keys[0],
                  client_key=s.api.client_keys[0], replace=replace)
    typer.echo(f"A/B test {campaign!r}: arms {spec.arms} (true CTRs), control share {control_share}; "
               f"event ids live{seed}-{live.run_id}-*")
    try:
        live.run(visits_per_s, visits or None)
    except httpx.TransportError as exc:  # creating the campaign (a visit logs its own and goes on)
        typer.echo(f"fusionrec simulate-ab: cannot reach the API at {base_url} ({type(exc).__name__}: {exc}); check "
                   "that it is running (fusionrec serve, fusionrec run) and that --api ([api] host and port) names it",
                   err=True)
        raise typer.Exit(1) from None
    except CampaignExists as exc:  # before CampaignRefused, its base
        typer.echo(f"fusionrec simulate-ab: the API at {base_url} already has campaign {exc.campaign_id!r}; left "
                   "unchanged: pass --replace to replace it, or --campaign another id", err=True)
        raise typer.Exit(1) from None
    except CampaignRefused as exc:  # a key without the admin scope, an invalid campaign: the API's own words
        hint = (" (the key is api.admin_keys[0]: set FUSIONREC_API__ADMIN_KEYS to a key of the API's admin scope)"
                if exc.status in (401, 403) else "")
        typer.echo(f"fusionrec simulate-ab: the API at {base_url} refused to create campaign {exc.campaign_id!r}: "
                   f"{exc.status} {exc.error}{hint}", err=True)
        raise typer.Exit(1) from None
