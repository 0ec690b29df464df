"""``fusionrec simulate`` (a live synthetic shop) and ``fusionrec replay`` (a real log) into Kafka."""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import msgspec
import typer

from flows.cli import app
from flows.commands.platform import require_broker
from operators.schema import Event
from operators.settings import Settings

__all__ = ["simulate_cmd", "replay_cmd", "shift_to"]

log = logging.getLogger(__name__)

_MAX_RATE_TS_SPACING = 100.0
"""Events per second of simulated time when ``simulate --rate 0`` sends as fast as possible."""


def shift_to(events: Iterator[Event], start_ts: float) -> Iterator[Event]:
    """Shift event times so the first event lands at ``start_ts`` (gaps unchanged)."""
    offset: float | None = None
    for ev in events:
        if offset is None:
            offset = start_ts - ev.ts
        yield msgspec.structs.replace(ev, ts=ev.ts + offset)


_NAMED_BY = "--brokers (default [kafka] brokers, FUSIONREC_KAFKA__BROKERS)"
"""Where ``simulate``'s and ``replay``'s broker address comes from, for ``require_broker``'s message."""


def _kafka(brokers: str | None, topic: str | None, catalog_topic: str | None) -> tuple[str, str, str]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    k = Settings().kafka
    return brokers or k.brokers, topic or k.events_topic, catalog_topic or k.catalog_topic


@app.command("simulate")
def simulate_cmd(
    brokers: Annotated[str | None, typer.Option(help="Bootstrap servers (default: settings)")] = None,
    events: Annotated[int, typer.Option(help="Live events to send (at least 1)", min=1)] = 20_000,
    rate: Annotated[float, typer.Option(help="Events per second (0 = as fast as possible)")] = 50.0,
    seed: Annotated[int, typer.Option(help="Shop seed: same seed, same shop and events", min=0)] = 0,
    n_items: Annotated[int, typer.Option(help="Initial catalog size (at least 1)", min=1)] = 2000,
    n_users: Annotated[int, typer.Option(help="Initial users (at least 1)", min=1)] = 500,
    skip_history: Annotated[
        int, typer.Option(help="Generate (and not send) this many history events first, as `run` trained on",
                          min=0)
    ] = 0,
    topic: Annotated[str | None, typer.Option(help="Events topic (default: settings)")] = None,
    catalog_topic: Annotated[str | None, typer.Option(help="Catalog topic (default: settings)")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
) -> None:
    """Run a seeded synthetic shop live: its catalog to the catalog topic, then events (ts = now) to Kafka.

    With ``--rate R`` events are stamped and sent in real time (an event's ``ts`` is the wall-clock
    second it is sent); new items are published to the catalog topic as they appear.
    """
    from simulators.producer import EventProducer
    from simulators.shop import SyntheticShop

    if not (rate >= 0 and math.isfinite(rate)):  # nan passes a range check: before the catalog is published
        raise typer.BadParameter(f"must be a number >= 0 (0 = as fast as possible); got {rate}", param_hint="--rate")
    brokers, topic, catalog_topic = _kafka(brokers, topic, catalog_topic)
    require_broker(brokers, "simulate", _NAMED_BY)  # one line within BROKER_WAIT_S, not a hang
    shop = SyntheticShop(n_items=n_items, n_users=n_users, seed=seed)
    if skip_history:
        # the same call `fusionrec run` trains on, so the live shop continues that history
        shop.history(skip_history, end_ts=time.time(), rate_per_s=max(1.0, skip_history / 7 / 86400))
    with EventProducer(brokers, events_topic=topic, catalog_topic=catalog_topic) as producer:
        n_items_sent = producer.send_catalog(shop.catalog())
        log.info("catalog: %d items to %s", n_items_sent, catalog_topic)
        stream = shop.events(
            events,
            # live at --rate; as fast as possible, a burst of simulated time that ends now (the flow
            # dead-letters events ahead of the receiving clock: stream.future_skew_s)
            start_ts=time.time() if rate else time.time() - events / _MAX_RATE_TS_SPACING,
            rate_per_s=rate or _MAX_RATE_TS_SPACING,
            on_new_item=producer.send_item,
        )
        sent = producer.send_events(stream, speed=1.0 if rate else None, progress=progress, total=events)
    typer.echo(
        f"sent {sent} events to {topic} and {n_items_sent} + new items to {catalog_topic}; "
        f"delivered {producer.delivered}, errors {dict(producer.errors) or 0}"
    )
    if producer.errors:
        raise typer.Exit(1)


@app.command("replay")
def replay_cmd(
    path: Annotated[Path, typer.Argument(help="Log file, or a dataset directory holding one", exists=True)],
    fmt: Annotated[str, typer.Option("--format", help="sessionrec | srgnn | online_retail")] = "sessionrec",
    speed: Annotated[float | None, typer.Option(help="Replay at event time x this factor")] = None,
    rate: Annotated[float | None, typer.Option(help="Replay at this many events per second")] = None,
    max_rate: Annotated[bool, typer.Option("--max-rate", help="As fast as possible (the default)")] = False,
    limit: Annotated[int | None, typer.Option(help="Replay only the first N events", min=1)] = None,
    now: Annotated[bool, typer.Option("--now", help="Shift event times so the first event is now")] = False,
    source: Annotated[str | None, typer.Option(help="Prefix of event ids (default: file stem)")] = None,
    catalog: Annotated[bool, typer.Option(help="Publish the item records the log carries first")] = True,
    brokers: Annotated[str | None, typer.Option(help="Bootstrap servers (default: settings)")] = None,
    topic: Annotated[str | None, typer.Option(help="Events topic (default: settings)")] = None,
    catalog_topic: Annotated[str | None, typer.Option(help="Catalog topic (default: settings)")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
) -> None:
    """Replay a real log (session-rec TSV, SR-GNN pickle, UCI Online Retail parquet) into Kafka, keyed by user."""
    from operators.retail_cleaning import CleaningReport, cleaning_rule
    from simulators.producer import EventProducer
    from simulators.replay import (
        REPLAY_FORMATS,
        ReplayFormatError,
        read_replay,
        replay_catalog,
        resolve_log_path,
    )

    if fmt not in REPLAY_FORMATS:
        raise typer.BadParameter(f"must be one of {list(REPLAY_FORMATS)}; got {fmt!r}", param_hint="--format")
    if sum(x is not None for x in (speed, rate)) + max_rate > 1:
        raise typer.BadParameter("give one of --speed, --rate, --max-rate", param_hint="--speed")
    for hint, value in (("--speed", speed), ("--rate", rate)):  # before the catalog is published
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise typer.BadParameter(f"must be a positive number; got {value}", param_hint=hint)
    if source is not None and not source.strip():  # ids ":<row>" of every file would collide
        raise typer.BadParameter("must not be empty: it prefixes every event id, so files replayed under one "
                                 "source would collide", param_hint="--source")
    brokers, topic, catalog_topic = _kafka(brokers, topic, catalog_topic)
    rule = cleaning_rule(Settings().retail_cleaning)
    report = CleaningReport()
    try:  # a file that is not of its --format: one line (exit status 2), before the catalog is published
        path = resolve_log_path(path, fmt)
        stream = read_replay(path, fmt, limit=limit, source=source, cleaning=rule, report=report)
        first = next(stream, None)
        stream = itertools.chain([] if first is None else [first], stream)
        require_broker(brokers, "replay", _NAMED_BY)  # one line within BROKER_WAIT_S, not a hang
        if now:
            stream = shift_to(stream, time.time())
        with EventProducer(brokers, events_topic=topic, catalog_topic=catalog_topic) as producer:
            n_items = producer.send_catalog(replay_catalog(path, fmt, rule)) if catalog else 0
            sent = producer.send_events(stream, speed=speed, rate_per_s=rate, progress=progress, total=limit)
    except ReplayFormatError as exc:
        typer.echo(f"fusionrec replay: {exc} (--format {fmt})", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"replayed {sent} events from {path} to {topic} ({n_items} catalog items); "
        f"delivered {producer.delivered}, errors {dict(producer.errors) or 0}"
    )
    if fmt == "online_retail":  # what the cleaning rule did ([retail_cleaning] in fusionrec.toml)
        typer.echo("cleaning (Online Retail):\n  " + "\n  ".join(report.lines()))
    if producer.errors:
        raise typer.Exit(1)
