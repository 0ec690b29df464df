"""``fusionrec broker | topics | train | flow | serve | run``: start each piece, or all of them.

``run`` is what ``make run`` calls: a local Tansu broker, the topics, a synthetic shop's
history (trained on and replayed), the Bytewax flow, the API and a live simulated shop, all
as child processes in their own process groups, each restarted with backoff when it fails
(``flows/supervisor.py``); Ctrl-C stops every one of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flows.cli import app
from flows.run_lock import LOCK_NAME, RunDirBusy, RunDirLock, lock_run_dir
from flows.stop import STOP_REQUESTED, STOP_SIGNALS, check_stop, deferred_interrupts, handle_stop_signals
from flows.supervisor import Supervisor
from models.errors import ModelFitError
from operators.broker import (
    BrokerStartError,
    LocalBroker,
    PortInUseError,
    die_with_parent,
    port_in_use,
    wait_for_port,
)
from operators.kafka import (
    MAX_MESSAGE_BYTES,
    TopicLayoutError,
    check_co_partitioned,
    ensure_topics,
    platform_topics,
)
from operators.scheduling import ONE_BOX_API_NICE, ONE_BOX_TRAINER_NICE, one_box_trainer_cpus
from operators.schema import Event
from operators.settings import Settings

if TYPE_CHECKING:
    from operators.catalog_rule import CatalogCheck

log = logging.getLogger("fusionrec")


def _settings() -> Settings:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return Settings()


def _topics(s: Settings) -> None:
    k = s.kafka
    ensure_topics(k.brokers, platform_topics(s))  # analytics too: the same specs at start and after a broker restart
    check_co_partitioned(k.brokers, [k.events_topic, k.served_topic])


PORT_RANGE: dict[str, int] = {"min": 1, "max": 65535}
"""``typer.Option(**PORT_RANGE)`` for every port option: a port outside 1-65535 is a usage error (exit
status 2) naming the option, not an ``OverflowError`` from ``bind()``."""


@app.command("broker")
def broker_cmd(port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1", **PORT_RANGE)] = 9092) -> None:
    """Run a local Kafka-protocol broker (Tansu, in-memory storage) until Ctrl-C or SIGTERM (exit 0).

    Exit status 2 when the port is taken, out of range (1-65535) or the broker does not start; 1 when
    it stops by itself.
    """
    _settings()
    b = LocalBroker(port)
    handlers = handle_stop_signals((signal.SIGINT, signal.SIGTERM))  # SIGTERM = Ctrl-C
    try:
        try:
            with deferred_interrupts():
                b.start()  # once: LocalBroker's context manager would start it again (and find its own port taken)
        except (PortInUseError, BrokerStartError) as exc:
            typer.echo(f"fusionrec broker: {exc}; choose another port with --port", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"broker on {b.bootstrap} (memory storage; Ctrl-C stops it)")
        while b.proc is not None and b.proc.poll() is None:
            time.sleep(0.5)
            check_stop()
        code = b.proc.returncode if b.proc is not None else None
        typer.echo(f"fusionrec broker: the broker exited by itself (status {code})", err=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM: stop the broker, exit 0
    finally:
        _ignore_stop_signals()
        b.stop()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


@app.command("topics")
def topics_cmd() -> None:
    """Create the platform's topics if missing: events, served, events.dead, user-topn, catalog,
    item-links, and the compacted <events>.stats, <events>.popularity, <events>.optimizer,
    <user-topn>.checkpoint and analytics (``operators.kafka.platform_topics``)."""
    from confluent_kafka import KafkaException

    s = _settings()
    require_broker(s.kafka.brokers, "topics")
    try:
        _topics(s)
    except (KafkaException, TimeoutError) as exc:  # the broker went away or refused, after answering the probe
        typer.echo(f"fusionrec topics: the broker at {s.kafka.brokers} failed while creating or checking the topics: "
                   f"{_kafka_reason(exc)}", err=True)
        raise typer.Exit(1) from None
    except TopicLayoutError as exc:
        typer.echo(f"fusionrec topics: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"topics ready on {s.kafka.brokers}")


BROKER_WAIT_S = 10.0
"""How long ``topics`` and ``catalog`` wait for the broker's answer to a metadata request before they
give up with one line naming it (exit status 1)."""

CATALOG_ACK_S = 25.0
"""How long ``catalog`` waits for the broker to acknowledge each record before it fails (exit status 1)."""


def _kafka_reason(exc: BaseException) -> str:
    """The text of a ``KafkaException`` (its ``KafkaError``'s string) or of any other exception."""
    err = exc.args[0] if exc.args else None
    return err.str() if hasattr(err, "str") else str(exc)


def require_broker(brokers: str, command: str, named_by: str = "[kafka] brokers (FUSIONREC_KAFKA__BROKERS)") -> None:
    """Return when a broker of ``brokers`` answers a metadata request within ``BROKER_WAIT_S``; ``named_by`` is
    where the address came from, for the message (``topics``, ``catalog``, ``simulate``, ``replay``).

    Raises
    ------
    typer.Exit
        Status 1 after one line on stderr naming the address and what to check (librdkafka's own
        connection errors are not logged: the probe's client logs nothing).
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": brokers, "log_level": 0}).list_topics(timeout=BROKER_WAIT_S)
    except KafkaException as exc:
        typer.echo(f"fusionrec {command}: cannot reach the broker at {brokers} (no answer to a metadata request "
                   f"within {BROKER_WAIT_S:g} s: {_kafka_reason(exc)}); check that it is running and that "
                   f"{named_by} names it", err=True)
        raise typer.Exit(1) from None


@app.command("train")
def train_cmd(
    events: Annotated[Path | None, typer.Option(help="JSONL event log to train on")] = None,
    simulate: Annotated[int | None, typer.Option(help="Or: train on this many synthetic-shop events (at least 1)",
                                                 min=1)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic shop", min=0)] = 0,
    model: Annotated[str, typer.Option(help=(
        "Registered model (models/registry.py): fusion (default: EMDE + V-STAN/STAN under a learned ranker, "
        "the validation winner), emde, vstan, covisit (seconds to train), router (user top-N: "
        "whichever of EASE and EMDE wins validation), ..."))] = "fusion",
    lake: Annotated[Path | None, typer.Option(help="Or: train on the event lake under this directory")] = None,
    window: Annotated[str | None, typer.Option(help=(
        "With --lake: the newest window to train on, e.g. 30d, 12h (default 30d)"), show_default=False)] = None,
) -> None:
    """Train a model and write a new model version (running flows and APIs pick it up without restart)."""
    from operators.training import read_events_jsonl, train_model

    given = [name for name, v in (("--events", events), ("--simulate", simulate), ("--lake", lake)) if v is not None]
    if len(given) > 1:
        raise typer.BadParameter(f"give one source of events, not {' and '.join(given)}", param_hint="/".join(given))
    if window is not None and lake is None:  # else silently ignored
        raise typer.BadParameter(f"applies only with --lake DIR (the lake's newest window); got {window!r} with "
                                 f"{given[0] if given else 'no --lake'}", param_hint="--window")
    s = _settings()
    if lake is not None:
        from operators.lake.read import parse_window
        from operators.lake.training import train_from_lake

        try:
            path = train_from_lake(s, parse_window(window or "30d"), model, lake_dir=lake)
        except (ValueError, FileNotFoundError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--lake/--window/--model") from exc
        typer.echo(f"model version written: {path}")
        return
    if events is not None:
        if not events.is_file():  # a directory was an IsADirectoryError traceback once training read it
            why = "is a directory" if events.is_dir() else "no such file"
            raise typer.BadParameter(f"{events}: {why}; give a JSONL event log", param_hint="--events")
        stream = read_events_jsonl(events, s)
    elif simulate is not None:
        from simulators.shop import SyntheticShop

        stream = iter(SyntheticShop(seed=seed).history(simulate))
    else:
        raise typer.BadParameter("give --events FILE, --simulate N or --lake DIR", param_hint="--events")
    source = "--simulate" if events is None else "--events"
    try:
        path = train_model(stream, s, model)
    except (ValueError, KeyError, FileNotFoundError, ModelFitError) as exc:  # unknown model, too small a log, no file
        msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        from models.registry import REGISTRY

        if isinstance(exc, ModelFitError | ValueError) and events is None and model in REGISTRY:
            msg = f"{simulate} simulated events are too few to train {model!r} ({msg}); simulate more"
        raise typer.BadParameter(msg, param_hint=f"--model/{source}") from exc
    typer.echo(f"model version written: {path}")


CATALOG_CHUNK_LINES = 1_000
"""Items ``catalog`` parses, checks and sends together (its memory: one chunk, plus a dict of each item's
last line number during the first pass)."""


def _catalog_line(line: bytes, lineno: int, rejected: list[tuple[int, str]]) -> dict | None:
    """``catalog``'s parse of one line: the JSON object with its canonical ``item_id``; None for a blank
    line, or for a line rejected (appended to ``rejected`` with its number and reason)."""
    import orjson

    from operators.ids import BadId, canonical_id

    if not line.strip():
        return None
    try:
        item = orjson.loads(line.rstrip(b"\r\n"))  # without its newline: a column in the line, not "line 2"
    except orjson.JSONDecodeError as exc:
        rejected.append((lineno, f"not JSON: {exc.msg} (column {exc.colno})"))
        return None
    if not isinstance(item, dict):
        rejected.append((lineno, f"needs a JSON object with an item_id; got a {type(item).__name__}"))
        return None
    try:
        item["item_id"] = canonical_id(item.get("item_id"))
    except BadId as exc:
        rejected.append((lineno, f"item_id: {exc}"))
        return None
    return item


@app.command("catalog")
def catalog_cmd(
    items: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                          help="JSONL file: one item object per line, each with a string item_id")],
) -> None:
    """Publish catalog items (new or changed) to the compacted catalog topic.

    Values are coerced or items rejected by the catalog rule (operators/catalog_rule.py: a numeric
    string for a number becomes the number, ...; a value that still does not fit rejects the item);
    a line that is not a JSON object with a valid item_id (not JSON, a number out of range, an empty
    id, ...) is rejected too. The rest are published: the summary line says how many were published,
    coerced and rejected, and each rejected line is printed with its number and reason (exit status 0).
    A line ``{"item_id": ..., "deleted": true}`` deletes the item; ``"deleted": false`` publishes it
    as any other line, without ``deleted`` (a command, not an attribute); any other ``deleted``
    (``"true"``, ``1``) is rejected by the rule, naming the field, and so is an item whose vector
    (``api.vector_attribute``) is not a flat array of finite numbers (of ``api.vector_dim`` when
    set), and so is an item over a size limit (``api.catalog_max_value_bytes`` for one string value,
    ``api.catalog_max_attributes``, ``api.catalog_max_item_bytes`` for the record as JSON), naming the
    attribute, and so is an item that would bring the file's distinct attribute names beyond
    ``api.catalog_max_attribute_names``: nothing over a limit is published. An attribute's type comes from
    its first value in the file, in file order (a line that a later line of its item supersedes counts; a
    rejected line fixes no attribute type for later lines). The serving attributes
    (``api.hidden_attribute``, ``api.in_stock_attribute``: bools; ``api.stock_attribute``: a number) have these types whatever value comes first: ``"hidden": "true"``
    is published as ``true``, ``"hidden": "maybe"`` is rejected. When an item has several lines,
    the last one wins (only it is published; if the catalog rule rejects it, nothing is published
    for that item).

    A broker that does not answer within 10 s, or does not acknowledge every record, is one line
    naming its address (exit status 1); publishing the file again is safe (the topic keeps the last
    record per item).

    The API's IQL index and, with an EMDE model version, the flow and the API pick new items up
    within about a second (recommendable by title at once, by M′·Q once they have interactions).

    The file is read twice (each item's last line, then those lines ``CATALOG_CHUNK_LINES`` at a
    time), so memory does not grow with the file: never hold it whole.
    """
    s = _settings()
    with _rereadable(items) as path:
        _publish_catalog(s, path, shown=items)


@contextlib.contextmanager
def _rereadable(path: Path) -> Iterator[Path]:
    """``path`` itself if it is a regular file, else (a pipe, ``/dev/stdin``, ``<(...)``) a temporary copy of
    what it gives: ``catalog`` reads its file twice, and a pipe is empty the second time."""
    if path.is_file():
        yield path
        return
    with tempfile.NamedTemporaryFile(prefix="fusionrec-catalog-", suffix=".jsonl") as copy:
        with open(path, "rb") as src:
            shutil.copyfileobj(src, copy, 1 << 20)
        copy.flush()
        yield Path(copy.name)


def _catalog_first_pass(items: Path, rule: Callable[..., CatalogCheck], rejected: list[tuple[int, str]]
                        ) -> tuple[set[int], CatalogCheck | None]:
    """``catalog``'s pass 1 over ``items``: the numbers of the items' last lines, and the attribute types.

    The last line of an item wins (the compacted topic keeps one record per item, whatever the send
    order); only the winning line numbers are kept, not the items. The types are those the file's first
    values fix, in file order and superseded lines included: every line goes through ``rule``
    (``check_catalog`` with the command's settings), ``CATALOG_CHUNK_LINES`` at a time, and a line it
    rejects fixes no type. So a number first stays a number when a later line of its item wins, and a
    numeric string there is coerced to it, not the number to a string. Returns the winning line numbers
    and the rule's state (types and unindexed attributes; None when no line is a valid item). Lines that
    are not a JSON object with a valid item_id are appended to ``rejected``.
    """
    latest: dict[str, int] = {}
    types: CatalogCheck | None = None
    chunk: list[dict] = []
    with open(items, "rb") as f:
        for lineno, line in enumerate(f, 1):
            item = _catalog_line(line, lineno, rejected)
            if item is not None:
                latest[item["item_id"]] = lineno
                chunk.append(item)
            if len(chunk) >= CATALOG_CHUNK_LINES:
                types, chunk = rule(chunk, start=types), []
    if chunk:
        types = rule(chunk, start=types)
    return set(latest.values()), types


def _publish_catalog(s: Settings, items: Path, shown: Path) -> None:
    """``catalog``'s body: ``items`` is a regular file (read twice); ``shown`` names it in messages."""
    from confluent_kafka import KafkaError, KafkaException

    from operators.catalog_rule import CatalogCheck, CatalogLimits, check_catalog, serving_kinds
    from simulators.producer import EventProducer

    rejected: list[tuple[int, str]] = []  # (line number, reason): not published
    # the serving attributes (hidden, in_stock, stock) have fixed types whatever value comes first
    serving = serving_kinds(s.api.hidden_attribute, s.api.in_stock_attribute, s.api.stock_attribute)
    limits = CatalogLimits.from_settings(s.api)  # sizes: a line over one is rejected, never published
    # pass 1: each item's last line, and the types of the file's first values (the catalog-wide names limit
    # counts the published items only: pass 2)
    winners, types = _catalog_first_pass(items, functools.partial(
        check_catalog, declared=serving, exclude=s.api.catalog_exclude, vector_attribute=s.api.vector_attribute,
        vector_dim=s.api.vector_dim, limits=dataclasses.replace(limits, max_attribute_names=None)), rejected)
    last = max(winners, default=0)
    # pass 2: the winning lines, CATALOG_CHUNK_LINES at a time, through the catalog rule
    # (operators/catalog_rule.py, as the API's index applies it: coerce or reject whole items;
    # "deleted": true is a tombstone), and sent; the types from pass 1, the counts of pass 2 alone
    check = CatalogCheck(kinds=types.kinds, unindexed=types.unindexed) if types is not None else None
    p: EventProducer | None = None
    n = n_deleted = 0
    problem = None
    with open(items, "rb") as f:
        chunk: list[dict] = []
        lines: list[int] = []
        for lineno, line in enumerate(f, 1):
            if lineno in winners and (item := _catalog_line(line, lineno, [])) is not None:
                chunk.append(item)
                lines.append(lineno)
            if len(chunk) >= CATALOG_CHUNK_LINES or chunk and lineno == last:
                check = check_catalog(chunk, serving, exclude=s.api.catalog_exclude,
                                      vector_attribute=s.api.vector_attribute, vector_dim=s.api.vector_dim, start=check,
                                      limits=limits)
                rejected += [(lines[pos], f"item {item_id!r}: {reason}") for pos, item_id, reason in check.rejected]
                skipped = {pos for pos, _, _ in check.rejected} | {pos for pos, _ in check.deleted}
                accepted_lines = [lineno for pos, lineno in enumerate(lines) if pos not in skipped]
                chunk, lines = [], []
                if not (check.accepted or check.deleted):
                    continue
                if p is None:
                    require_broker(s.kafka.brokers, "catalog")
                    # a record the broker has not acknowledged within CATALOG_ACK_S fails (librdkafka's default:
                    # 5 minutes); neither librdkafka's connection errors nor a warning per failed record are
                    # logged: one line says it below
                    logging.getLogger("simulators.producer").setLevel(logging.ERROR)
                    p = EventProducer.from_settings(s.kafka, config={"message.timeout.ms": int(CATALOG_ACK_S * 1000),
                                                                     "log_level": 2})
                try:
                    for accepted, lineno in zip(check.accepted, accepted_lines, strict=True):
                        try:
                            p.send_item(accepted)
                        except KafkaException as exc:  # one record too large for the producer: that line only
                            if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                                raise
                            rejected.append((lineno, f"item {accepted['item_id']!r}: the record is larger than "
                                                     f"{MAX_MESSAGE_BYTES:,} bytes (message.max.bytes)"))
                            continue
                        n += 1
                    for _, item_id in check.deleted:
                        p.produce(s.kafka.catalog_topic, item_id.encode(), None)  # type: ignore[arg-type]
                except KafkaException as exc:
                    problem = _kafka_reason(exc)
                    break
                n_deleted += len(check.deleted)
    rejected.sort()
    if p is not None:
        if problem is None:
            try:
                p.close(CATALOG_ACK_S + 5)  # one flush for all: by then each record is acknowledged or failed
            except KafkaException as exc:
                problem = _kafka_reason(exc)
        if problem is not None or p.delivered < p.sent:
            typer.echo(f"fusionrec catalog: the broker at {s.kafka.brokers} acknowledged {p.delivered} of "
                       f"{p.sent} records ({problem or dict(p.errors)}); check that it is running and that "
                       f"{s.kafka.catalog_topic!r} exists (fusionrec topics), then publish the file again", err=True)
            raise typer.Exit(1)
    coerced_by = check.coerced if check is not None else {}
    coerced = ", ".join(f"{a} {k}" for a, k in sorted(coerced_by.items()))
    typer.echo(f"published {n} items to {s.kafka.catalog_topic} on {s.kafka.brokers}; "
               f"coerced {sum(coerced_by.values())} values{f' ({coerced})' if coerced else ''}; "
               f"rejected {len(rejected)} lines; deleted {n_deleted}")
    for lineno, reason in rejected:
        typer.echo(f"  rejected {shown}:{lineno}: {reason}", err=True)


@app.command("flow")
def flow_cmd(workers: Annotated[int, typer.Option("-w", "--workers", help="Worker threads", min=1)] = 1) -> None:
    """Run the real-time dataflow (same as ``python -m bytewax.run flows.realtime:flow -w N``); a broker that does
    not answer within 10 s is one line naming it (exit status 1)."""
    require_broker(_settings().kafka.brokers, "flow")  # else a Rust panic and five chained tracebacks
    os.execv(sys.executable, [sys.executable, "-m", "bytewax.run", "flows.realtime:flow", "-w", str(workers)])


@app.command("serve")
def serve_cmd(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option(help="default: api.port / FUSIONREC_API__PORT: 8000", show_default=False,
                                             **PORT_RANGE)] = None,
    workers: Annotated[int | None, typer.Option(help="uvicorn worker processes (default: api.workers / "
                                                     "FUSIONREC_API__WORKERS: 1)", show_default=False, min=1)] = None,
) -> None:
    """Run the HTTP API with uvicorn (settings from fusionrec.toml / FUSIONREC_*).

    Refuses a non-loopback ``--host`` unless keys are required, an admin key is configured and no
    development key is (README, "Security"). A port already taken is one line and exit status 2, checked
    before the app loads anything or reaches a broker.
    """
    s = _settings()
    bind_host, bind_port = host or s.api.host, port or s.api.port
    try:
        busy = port_in_use(bind_port, bind_host)
    except OSError as exc:  # e.g. an address of another machine
        typer.echo(f"fusionrec serve: cannot listen on {bind_host}:{bind_port}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    if busy:
        typer.echo(f"fusionrec serve: port {bind_port} on {bind_host} is already in use; choose another with --port N "
                   "or FUSIONREC_API__PORT=N ([api] port)", err=True)
        raise typer.Exit(2)
    import uvicorn

    from operators.exposure import exposure_problem

    problem = exposure_problem(host or s.api.host, s.api.require_keys, s.api.admin_keys, s.api.client_keys)
    if problem:
        typer.echo(f"fusionrec serve: {problem}", err=True)
        raise typer.Exit(2)

    # the protocol bounds slow clients: request head deadline and size (api/http_protocol.py)
    uvicorn.run("api.app:create_app", factory=True, host=host or s.api.host, port=port or s.api.port,
                workers=workers or s.api.workers, log_level="warning", h11_max_incomplete_event_size=s.api.max_header_bytes,
                http="api.http_protocol:HttpProtocol", timeout_keep_alive=s.api.keep_alive_s,
                # the client address (rate limits) comes from X-Forwarded-For only behind configured proxies
                proxy_headers=s.api.forwarded_allow_ips is not None,
                forwarded_allow_ips=s.api.forwarded_allow_ips)  # type: ignore[arg-type]


def _child(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    out = open(log_path, "ab")  # noqa: SIM115 - closed when the child exits
    return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=die_with_parent)


def _ignore_stop_signals() -> None:
    """From the start of a clean stop: a second Ctrl-C or SIGTERM must not cut it short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _stop_all(children: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(children):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in reversed(children):
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@app.command("run")
def run_cmd(
    port: Annotated[int | None, typer.Option(
        help="Broker port (default: the port in kafka.brokers / FUSIONREC_KAFKA__BROKERS: 9092)",
        show_default=False, **PORT_RANGE)] = None,
    api_port: Annotated[int | None, typer.Option(
        help="API port (default: api.port / FUSIONREC_API__PORT: 8000)", show_default=False, **PORT_RANGE)] = None,
    workers: Annotated[int, typer.Option("-w", "--workers", help="Flow worker threads (1: the thread that applies every partition also reads them; see README, Scaling)")] = 1,
    history: Annotated[int, typer.Option(help="Synthetic history events to train on and replay")] = 30000,
    rate: Annotated[float, typer.Option(help="Live simulated events per second")] = 50.0,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic shop and of the live A/B test", min=0)] = 0,
    replay: Annotated[Path | None, typer.Option(help="Replay this real log instead of the synthetic shop")] = None,
    replay_format: Annotated[str | None, typer.Option("--format", help=(
        "With --replay: the log's format, sessionrec (default) | srgnn | online_retail"), show_default=False)] = None,
    replay_limit: Annotated[int, typer.Option(help="Max events to replay (0 = all)")] = 200000,
    var: Annotated[Path | None, typer.Option(help=(
        "Run directory for state, models and logs (default: \\[run] var_dir / FUSIONREC_RUN__VAR_DIR: var/run); "
        "one run at a time per directory"), show_default=False)] = None,
    model: Annotated[str, typer.Option(help=(
        "Model of the first version: fusion (default; EMDE + V-STAN/STAN under a learned ranker, the "
        "validation winner; about a minute on the synthetic shop), emde (sketches and M′·Q in the stream, new "
        "items by title and by M′·Q) or covisit (seconds to train)"))] = "fusion",
    train_seconds: Annotated[float, typer.Option(help="EMDE: safety stop of the network training, seconds (it trains whole epochs; passing the stop is an error)")] = 600.0,
    trainer_every: Annotated[str, typer.Option(help=(
        "The learning loop: archive events to the lake and run the gated trainer this often (first run after "
        "4/5 of it; holdout = the newest 3 min); 0 = off"))] = "5m",
) -> None:
    """Start the whole platform embedded: broker, topics, training, flow, API, live shop.

    Ctrl-C (or SIGTERM/SIGHUP) at any moment stops everything and exits 0 (so ``make run`` ends
    quietly); a second Ctrl-C while stopping is ignored. Each run starts fresh logs in ``var``
    (the previous run's are kept as ``*.log.1``). It starts nothing (exit status 2) when the broker or
    the API port is already taken, e.g. by another ``fusionrec run``, or when another run holds the run
    directory's lock (``flows/run_lock.py``; the message names its PID).
    """
    handlers = handle_stop_signals(STOP_SIGNALS)
    brokers: list[LocalBroker] = []
    children: list[subprocess.Popen[bytes]] = []
    lock: RunDirLock | None = None
    try:  # from the first line: a Ctrl-C while the options are checked is a clean stop too
        check_stop()  # a Ctrl-C while the commands were loaded, its exception lost
        s = _settings()
        port = port or _broker_port(s)
        api_port = api_port or s.api.port
        var = var or s.run.var_dir
        problems = _run_problems(model, train_seconds, trainer_every, workers, history, rate, replay, replay_format,
                                 replay_limit, var)
        problems += _busy_ports(port, api_port)
        if problems:  # before anything in var is deleted or anything started
            for line in problems:
                typer.echo(f"fusionrec run: {line}", err=True)
            raise typer.Exit(2)
        try:
            lock = lock_run_dir(var)  # before anything in var is touched; held until the children are stopped
        except OSError as exc:  # /proc/x, a read-only or a foreign directory: one line, not a traceback
            typer.echo(f"fusionrec run: --var: cannot use {var} as the run directory: {exc.strerror or exc}",
                       err=True)
            raise typer.Exit(2) from None
        # the replayed log is read before anything in var is deleted or started: a file not of its --format stops here
        replayed = _read_replay_log(s, replay, replay_format or DEFAULT_REPLAY_FORMAT, replay_limit) if replay else None
        _run(port, api_port, workers, history, rate, seed, replayed, var, model, train_seconds, trainer_every,
             children, brokers)
    except (PortInUseError, BrokerStartError, RunDirBusy) as exc:  # e.g. a port taken since the check
        typer.echo(f"fusionrec run: {exc}", err=True)
        raise typer.Exit(2) from None
    except BaseException as exc:
        # a Ctrl-C, or an error it surfaced as once a stop was asked for: confluent-kafka's flush drops the
        # KeyboardInterrupt and fails with "SystemError: ... returned NULL without setting an exception"
        surfaced = STOP_REQUESTED.is_set() and isinstance(exc, Exception) and not isinstance(exc, typer.Exit)
        if not (isinstance(exc, KeyboardInterrupt) or surfaced):
            raise
        _ignore_stop_signals()
        handlers.clear()  # and none until the process has exited
        typer.echo("stopping...")
    finally:
        _ignore_stop_signals()
        _stop_all(children)
        for b in brokers:
            b.stop()
        if lock is not None:
            lock.release()
        for sig, handler in handlers.items():  # not stopped by a signal: as they were (run called in-process)
            signal.signal(sig, handler)


DEFAULT_REPLAY_FORMAT = "sessionrec"
"""``run --replay``'s log format when ``--format`` is not given."""


def _train_params(model: str, train_seconds: float) -> dict[str, object]:
    """The first version's fit parameters: the network's safety stop (EMDE alone or inside the fusion), and
    for the fusion one GRU network, so the first version is ready in about a minute (the default's
    three networks on a log this small took ~2x as long; the trainer's later versions use the defaults)."""
    from models.hybrid import DEFAULT_LISTS

    stop = {"max_train_seconds": train_seconds}
    lists = {name: dict(p) for name, p in DEFAULT_LISTS.items()}
    lists["gru4rec"]["n_models"] = 1
    return {"emde": stop, "fusion": {"emde": stop, "knn": lists}}.get(model, {})


def _run_problems(model: str, train_seconds: float, trainer_every: str, workers: int, history: int, rate: float,
                  replay: Path | None, replay_format: str | None, replay_limit: int, var: Path) -> list[str]:
    """One message per option of ``run`` that would make it fail after it started, or that it would ignore
    (none: all fine).

    Checked before ``run`` deletes the previous run's state or starts the broker: the model name and
    its parameters, the trainer interval, the counts, and the replayed log and its format (``None``: not
    given, ``DEFAULT_REPLAY_FORMAT``; given without ``--replay``, a problem).
    """
    from models.registry import REGISTRY, create_model
    from operators.lake.read import parse_window
    from simulators.replay import REPLAY_FORMATS, resolve_log_path

    problems = []
    if model not in REGISTRY:
        problems.append(f"--model: unknown model {model!r}; registered: {', '.join(REGISTRY)}")
    elif not train_seconds > 0:
        problems.append(f"--train-seconds: must be positive; got {train_seconds}")
    else:
        try:
            create_model(model, **_train_params(model, train_seconds))
        except ValueError as exc:
            problems.append(f"--model {model}: {exc}")
    if trainer_every.strip() not in ("0", ""):
        try:
            ok = math.isfinite(parse_window(trainer_every))
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"--trainer-every: must be a duration like 5m, 1h or 90s, or 0 (off); got {trainer_every!r}")
    if workers < 1:
        problems.append(f"--workers: must be >= 1; got {workers}")
    if replay_limit < 0:
        problems.append(f"--replay-limit: must be >= 0 (0 = all); got {replay_limit}")
    if replay is None:
        if history < 1:
            problems.append(f"--history: must be >= 1 (the first model trains on it); got {history}")
        if not (rate > 0 and math.isfinite(rate)):
            problems.append(f"--rate: must be a positive number of events per second; got {rate}")
    if replay_format is not None and replay_format not in REPLAY_FORMATS:  # with --replay or without
        problems.append(f"--format: must be one of {', '.join(REPLAY_FORMATS)}; got {replay_format!r}")
    elif replay is None and replay_format is not None:  # else silently ignored
        problems.append(f"--format: applies only with --replay PATH (the replayed log's format); got "
                        f"{replay_format!r} without --replay")
    elif replay is not None and not replay.exists():
        problems.append(f"--replay: {replay} does not exist")
    elif replay is not None:
        try:
            resolve_log_path(replay, replay_format or DEFAULT_REPLAY_FORMAT)
        except (ValueError, OSError) as exc:
            problems.append(f"--replay: {exc}")
    if var.exists() and not var.is_dir():
        problems.append(f"--var: {var} is not a directory")
    elif var.is_dir():  # `--var .` or an empty FUSIONREC_RUN__VAR_DIR in a checkout: its api/ is the source code
        foreign = sorted(e.name for e in var.iterdir() if not _is_run_entry(e.name))
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            problems.append(f"--var: {var} holds {shown}, which no fusionrec run writes, and run deletes the state, "
                            f"api, lake and serving directories of its run directory; give a new or empty directory, "
                            f"or a previous run's (default [run] var_dir: var/run)")
    return problems


RUN_ENTRIES = frozenset({"state", "api", "lake", "serving", "models", LOCK_NAME})
"""What ``run`` writes in its run directory, besides its logs (``*.log`` and the previous run's ``*.log.1``)."""


def _is_run_entry(name: str) -> bool:
    return name in RUN_ENTRIES or name.endswith((".log", ".log.1"))


def _broker_port(s: Settings) -> int:
    """The port of the first ``[kafka] brokers`` entry (9092 when it names none)."""
    _, _, tail = s.kafka.brokers.split(",")[0].strip().rpartition(":")
    return int(tail) if tail.isdigit() else 9092


def _busy_ports(port: int, api_port: int) -> list[str]:
    """One message per port of ``run`` that another process already listens on or that is no TCP port (none:
    all free)."""
    if not 1 <= port <= 65535:  # --port is checked by typer; this one came from [kafka] brokers
        return [f"broker port {port} (from [kafka] brokers / FUSIONREC_KAFKA__BROKERS) is not a TCP port (1-65535); "
                "choose one with --port N"]
    busy = []
    if port_in_use(port):
        busy.append(f"broker port {port} on 127.0.0.1 is already in use (another fusionrec run?); choose another "
                    "with --port N or FUSIONREC_KAFKA__BROKERS=127.0.0.1:N ([kafka] brokers)")
    if api_port == port or port_in_use(api_port):
        busy.append(f"API port {api_port} on 127.0.0.1 is already in use (another fusionrec run?); choose another "
                    "with --api-port N or FUSIONREC_API__PORT=N ([api] port)")
    return busy


def _rotate_logs(var: Path) -> None:
    """Keep one previous run's logs: ``x.log`` -> ``x.log.1`` (replacing the older one)."""
    for log_file in var.glob("*.log"):
        log_file.replace(log_file.with_name(log_file.name + ".1"))


def _run(port: int, api_port: int, workers: int, history: int, rate: float, seed: int, replayed: _Replayed | None,
         var: Path, model: str, train_seconds: float, trainer_every: str,
         children: list[subprocess.Popen[bytes]], brokers: list[LocalBroker]) -> None:
    """The body of ``run``: supervises the children until Ctrl-C (KeyboardInterrupt out of it);
    the broker and the children are appended to ``brokers``/``children`` as they start, so the
    caller stops them whatever happens."""
    var.mkdir(parents=True, exist_ok=True)
    _rotate_logs(var)
    for stale in ("state", "api", "lake", "serving"):  # the in-memory broker starts empty: so do the flow's, the API's state and the lake
        shutil.rmtree(var / stale, ignore_errors=True)
    env = dict(os.environ, FUSIONREC_KAFKA__BROKERS=f"127.0.0.1:{port}",
               FUSIONREC_STREAM__STATE_DIR=str(var / "state"), FUSIONREC_STREAM__MODEL_DIR=str(var / "models"),
               FUSIONREC_STREAM__SERVING_DIR=str(var / "serving"),
               FUSIONREC_API__PORT=str(api_port), FUSIONREC_LAKE__LAKE_DIR=str(var / "lake"),
               FUSIONREC_GATE__HOLDOUT_HOURS=os.environ.get("FUSIONREC_GATE__HOLDOUT_HOURS", "0.05"),
               FUSIONREC_ANALYTICS__BUCKET_S="60")  # minute buckets: the live dashboard moves at once
    os.environ.update(env)
    s = Settings()
    if not s.api.admin_keys and not s.api.client_keys:  # the API listens on loopback only: convenience keys
        env.update(FUSIONREC_API__ADMIN_KEYS='["admin-dev-key"]', FUSIONREC_API__CLIENT_KEYS='["client-dev-key"]')
        os.environ.update(env)
        s = Settings()
    if s.api.autogroup_nice is None:  # one box: the API's session yields CPU to the flow (operators/scheduling.py)
        env["FUSIONREC_API__AUTOGROUP_NICE"] = str(ONE_BOX_API_NICE)
    if s.trainer.autogroup_nice is None:  # and the gated trainer takes only what the flow and the API leave
        env["FUSIONREC_TRAINER__AUTOGROUP_NICE"] = str(ONE_BOX_TRAINER_NICE)
    if s.trainer.cpus is None and (trainer_cpus := one_box_trainer_cpus()) is not None:  # and never every CPU
        env["FUSIONREC_TRAINER__CPUS"] = str(trainer_cpus)
    broker = LocalBroker(port, log_path=var / "broker.log")
    brokers.append(broker)
    with deferred_interrupts():
        broker.start()

    def restart_broker() -> subprocess.Popen[bytes]:
        if broker.proc is None or broker.proc.poll() is not None:
            with deferred_interrupts():
                broker.start()
        assert broker.proc is not None
        return broker.proc

    sup = Supervisor(notify=lambda msg: typer.echo(msg, err=True))
    sup.add("broker", restart_broker, after_restart=lambda: _topics(s), service=True)  # comes back empty: topics again

    def supervise(name: str, args: list[str], log_name: str, service: bool = True) -> None:
        """Start and supervise a child; a service (all but the simulators, which may finish) is restarted
        after any exit: the trainer exits 0 on a SIGTERM, and was left stopped for the rest of the run."""
        def start() -> subprocess.Popen[bytes]:
            with deferred_interrupts():  # a Ctrl-C while it starts: stopped with the others
                p = _child(args, env, var / log_name)
                children.append(p)
            return p
        sup.add(name, start, service=service)

    try:
        _topics(s)
    except TopicLayoutError as exc:  # an external broker's topics, created apart
        typer.echo(f"fusionrec run: {exc}", err=True)
        raise typer.Exit(1) from None
    check_stop()
    _seed_and_train(s, history, seed, replayed, model, train_seconds)
    check_stop()
    supervise("flow", [sys.executable, "-m", "bytewax.run", "flows.realtime:flow", "-w", str(workers)], "flow.log")
    supervise("analytics", [sys.executable, "-m", "bytewax.run", "flows.analytics.dataflow:flow", "-w", "1"],
              "analytics.log")  # attribution + counters (flows/analytics/dataflow.py)
    supervise("api", [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--host", "127.0.0.1",
                      "--port", str(api_port), "--log-level", "warning", "--http", "api.http_protocol:HttpProtocol",
                      "--no-proxy-headers"],  # loopback: X-Forwarded-For must not choose the rate limits' address
              "api.log")
    if trainer_every not in ("0", ""):  # the learning loop (issue 12): lake + gated trainer
        from operators.lake.read import parse_window

        first = f"{0.8 * parse_window(trainer_every):.0f}s"
        supervise("archive", [sys.executable, "-m", "bytewax.run", "flows.archive.dataflow:flow", "-w", "1"], "archive.log")
        supervise("trainer", [sys.executable, "-m", "flows.cli", "trainer", "--every", trainer_every,
                              "--delay", first, "--model", model], "trainer.log")
    wait_for_port("127.0.0.1", api_port, 30)
    if replayed is None:
        supervise("simulate", [sys.executable, "-m", "flows.cli", "simulate", "--brokers", s.kafka.brokers,
                               "--events", "100000000", "--rate", str(rate), "--seed", str(seed),
                               "--skip-history", str(history), "--no-progress"], "simulate.log", service=False)
        # --replace: a restarted simulate-ab finds the campaign its previous instance created
        supervise("simulate-ab", [sys.executable, "-m", "flows.cli", "simulate-ab", "--api",
                                  f"http://127.0.0.1:{api_port}", "--seed", str(seed), "--replace"], "simulate-ab.log",
                  service=False)
    base = f"http://127.0.0.1:{api_port}"
    ab = "   (campaign home-ab: a live A/B test with a control group)" if replayed is None else ""
    typer.echo(f"""
fusionrec is running (logs in {var}/):
  broker           127.0.0.1:{port}   (Tansu, in-memory)
  API              {base}
  recommendations  {base}/v1/recommendations?user_id=<user>
  health/metrics   {base}/healthz (live)   {base}/readyz (ready)   {base}/metrics (admin key)
  dashboard        {base}/dashboard   (it asks for the admin key){ab}
  keys (X-API-Key) admin {s.api.admin_keys[:1]}, client {s.api.client_keys[:1]}
  learning loop    lake in {var}/lake, gated trainer every {trainer_every} (verdicts on the dashboard's ops panel)
A failed piece is restarted with backoff (logs in {var}/); Ctrl-C stops everything.""")
    while True:
        check_stop()
        time.sleep(1.0)
        sup.tick()


_Replayed = tuple[list[Event], list[dict[str, Any]]]
"""``run --replay``'s log as read: its events and its catalog."""


def _read_replay_log(s: Settings, replay: Path, fmt: str, limit: int) -> _Replayed:
    """The events (at most ``limit``, 0 = all) and the catalog of the replayed log, cleaned as ``replay`` cleans
    them; a file that is not of ``fmt`` is one line (exit status 2)."""
    from operators.retail_cleaning import CleaningReport, cleaning_rule
    from simulators.replay import ReplayFormatError, read_replay, replay_catalog, resolve_log_path

    rule, report = cleaning_rule(s.retail_cleaning), CleaningReport()
    try:
        path = resolve_log_path(replay, fmt)
        events = list(read_replay(path, fmt, limit=limit or None, cleaning=rule, report=report))
        catalog = replay_catalog(path, fmt, rule)
    except ReplayFormatError as exc:
        typer.echo(f"fusionrec run: --replay: {exc} (--format {fmt})", err=True)
        raise typer.Exit(2) from None
    if fmt == "online_retail":  # the same cleaned lines train the model and go to Kafka
        typer.echo("cleaning (Online Retail):\n  " + "\n  ".join(report.lines()))
    return events, catalog


def _seed_and_train(s: Settings, history: int, seed: int, replayed: _Replayed | None,
                    model: str = "fusion", train_seconds: float = 600.0) -> None:
    """Train the first model version on the history (or the replayed log, ``_read_replay_log``), then produce the
    catalog and the events to Kafka."""
    from operators.training import train_model
    from simulators.producer import EventProducer

    if replayed is not None:
        events, catalog = replayed
    else:
        from simulators.shop import SyntheticShop

        shop = SyntheticShop(seed=seed)
        # the same call `fusionrec simulate --skip-history` repeats, so the live shop continues it
        events = shop.history(history, end_ts=time.time(), rate_per_s=max(1.0, history / 7 / 86400))
        catalog = shop.catalog()  # after the history: it includes the items that appeared during it
    typer.echo(f"training {model} on {len(events)} events...")
    try:
        train_model(events, s, model, **_train_params(model, train_seconds))
    except (ValueError, ModelFitError) as exc:  # too few events for the model: one line; the caller stops the rest
        given = "the --replay log" if replayed is not None else f"--history {history}"
        typer.echo(f"fusionrec run: cannot train {model!r} on {len(events)} events ({given}, --train-seconds "
                   f"{train_seconds:g}): {exc}", err=True)
        raise typer.Exit(2) from None
    check_stop()
    with EventProducer.from_settings(s.kafka) as p:
        p.send_catalog(catalog)
        p.send_events(events, progress=True)
