"""Test harness for real parts: a flow subprocess, an API over HTTP, catch-up waits, state dumps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import httpx
import tomli_w
import uvicorn

from api.app import create_app
from api.http_protocol import server_config
from operators.broker import free_port, wait_for_port
from operators.kafka import ensure_topics, high_watermarks, platform_topics
from operators.schema import Event, encode_event
from operators.settings import Settings
from state import keys
from state.partition import PartitionDB, list_partitions, partition_path, read_stored_offset
from state.popularity import PopularityStore
from state.users import UserStore

if TYPE_CHECKING:
    from api.feedback_reader import FeedbackReader
    from simulators.producer import EventProducer

ROOT = Path(__file__).resolve().parents[1]

T = TypeVar("T")


def wait_for(pred: Callable[[], T], timeout_s: float = 20.0, what: str = "condition") -> T:
    """Poll ``pred`` every 0.1 s until it returns a truthy value, and return that value.

    Raises ``AssertionError`` naming ``what`` after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def wait_model_list(client: httpx.Client, user: str, timeout_s: float = 30.0, **params: object) -> dict:
    """GET ``/v1/recommendations`` for ``user`` until the body comes from the model, and return it.

    The flow writing a user's top-N list does not mean the API has read it: lists reach the
    API through the top-N topic. Raises ``AssertionError`` after ``timeout_s`` seconds.
    """
    def body() -> dict | None:
        b = client.get("/v1/recommendations", params={"user_id": user, **params}).json()
        return b if str(b.get("source", "")).startswith("model") else None

    return wait_for(body, timeout_s, f"a model list for {user}")


def time_until_visible(producer: EventProducer, client: httpx.Client, topic: str, event: Event,
                       timeout_s: float = 10.0, poll_s: float = 0.005) -> float | None:
    """Send ``event`` and poll its user's list until it shows it (``last_event_ts >= event.ts``).

    Returns the milliseconds from the send until the list showed it, or None after ``timeout_s``
    (or when the API never answered). The event → visible probe of ``bench/api.py`` and
    ``bench/stream.py``.
    """
    t0 = time.perf_counter()
    producer.produce(topic, event.user_id.encode(), encode_event(event))
    producer.flush(5)
    while time.perf_counter() - t0 < timeout_s:
        try:
            body = client.get("/v1/recommendations", params={"user_id": event.user_id, "n": 5}).json()
        except (httpx.HTTPError, ValueError):
            body = {}
        if (body.get("last_event_ts") or 0) >= event.ts:
            return (time.perf_counter() - t0) * 1000
        time.sleep(poll_s)
    return None


def make_settings(bootstrap: str, tmp: Path, partitions: int = 4, *, create_topics: bool = True,
                  **stream: object) -> Settings:
    """Settings with topics unique to one test and state/models under ``tmp`` (created on ``bootstrap``
    unless ``create_topics`` is False)."""
    tag = uuid.uuid4().hex[:8]
    s = Settings(
        kafka={"brokers": bootstrap, "events_topic": f"events-{tag}", "served_topic": f"served-{tag}", "dead_topic": f"dead-{tag}",
               "topn_topic": f"topn-{tag}", "catalog_topic": f"catalog-{tag}", "item_links_topic": f"links-{tag}", "partitions": partitions},
        stream={"state_dir": tmp / "state", "model_dir": tmp / "models", "serving_dir": tmp / "serving",
                "batch_size": 500, **stream},
        # open on loopback and unthrottled for the tests; the key matrix and the limits have their own tests
        api={"require_keys": False, "rate_limit": None, "event_rate_limit": None, "event_item_rate_limit": None},
    )
    if create_topics:
        ensure_topics(s.kafka.brokers, platform_topics(s))
    return s


def write_config(settings: Settings, path: Path) -> Path:
    path.write_text(tomli_w.dumps(settings.model_dump(mode="json", exclude_none=True)))
    return path


class FlowProcess:
    """``python -m bytewax.run <flow>`` (default ``flows.realtime:flow``) as a child process configured by a TOML file."""

    def __init__(self, settings: Settings, config_path: Path, workers: int = 1, processes: int = 1,
                 flow: str = "flows.realtime:flow") -> None:
        self.settings = settings
        self.flow = flow
        self.config = write_config(settings, config_path)
        self.workers, self.processes = workers, processes
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log = config_path.with_suffix(".log")

    def start(self) -> FlowProcess:
        env = dict(os.environ, FUSIONREC_CONFIG=str(self.config), PYTHONPATH=str(ROOT))
        args = [sys.executable, "-m", "bytewax.run", self.flow, "-w", str(self.workers)]
        out = open(self.log, "ab")  # noqa: SIM115
        if self.processes == 1:
            self.procs = [subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                           start_new_session=True)]
        else:
            for _attempt in range(5):  # a free port can be taken by another test before Bytewax binds it
                ports = [free_port() for _ in range(self.processes)]
                hosts = ";".join(f"127.0.0.1:{p}" for p in ports)
                mark = self.log.stat().st_size if self.log.exists() else 0
                self.procs = [subprocess.Popen(args + ["-i", str(i), "-a", hosts], env=env, stdout=out,
                                               stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
                              for i in range(self.processes)]
                time.sleep(1.0)
                if self.alive() or "Address already in use" not in self.log.read_bytes()[mark:].decode(errors="replace"):
                    break
                self.kill9()
        return self

    def kill9(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_caught_up(settings: Settings, flow: FlowProcess | None = None, timeout_s: float = 120.0,
                   state_dir: Path | None = None, pending: bool = True) -> None:
    """Block until every partition's stored offset (under ``state_dir``, default the stream's) reaches the log end.

    For the realtime flow (default ``state_dir``) also wait until no user is pending rescoring,
    unless ``pending=False``.
    """
    k = settings.kafka
    realtime = state_dir is None and pending
    state_dir = settings.stream.state_dir if state_dir is None else state_dir
    end = high_watermarks(k.brokers, k.events_topic)
    deadline = time.monotonic() + timeout_s
    while True:
        stored = {p: read_stored_offset(state_dir, k.events_topic, p) or 0 for p in end}
        if all(stored[p] >= end[p] for p in end) and not (realtime and pending_users(settings)):
            return
        if flow is not None and not flow.alive():
            raise RuntimeError(f"flow died:\n{flow.log_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"flow not caught up after {timeout_s} s: stored {stored}, end {end}")
        time.sleep(0.1)


def pending_users(settings: Settings) -> int:
    """Users applied but not yet rescored (``r:`` markers; the debounce), over all partitions."""
    topic, n = settings.kafka.events_topic, 0
    for p in list_partitions(settings.stream.state_dir, topic):
        try:
            db = PartitionDB(partition_path(settings.stream.state_dir, topic, p), read_only=True)
        except Exception:  # the writer is compacting: count it as pending and look again
            return 1
        try:
            n += sum(1 for _ in db.scan(keys.DIRTY))
        finally:
            db.close()
    return n


def stored_total(settings: Settings) -> int:
    """Sum over partitions of the committed next offsets (messages consumed so far)."""
    k = settings.kafka
    return sum(read_stored_offset(settings.stream.state_dir, k.events_topic, p) or 0
               for p in range(k.partitions))


def dump_state(settings: Settings) -> dict[str, object]:
    """Everything the stream stored, per partition, for equality checks (read-only open)."""
    out: dict[str, object] = {}
    topic = settings.kafka.events_topic
    for p in list_partitions(settings.stream.state_dir, topic):
        db = PartitionDB(partition_path(settings.stream.state_dir, topic, p), read_only=True)
        try:
            users = {u: st for u, st in UserStore(db).all().items()}
            pop = {i: (round(r.score, 9), r.last_ts) for i, r in PopularityStore(db, 1.0)._rows.items()}
            out[str(p)] = {"offset": db.stored_offset(), "users": users, "popularity": pop,
                           "dead": dict(db.scan(b"d:")), "links": dict(db.scan(b"l:")),
                           "window": dict(db.scan(b"w:"))}  # windowed popularity (state/window_popularity.py)
        finally:
            db.close()
    return out


class ApiServer:
    """The Starlette app under uvicorn in a background thread, on a free port."""

    def __init__(self, settings: Settings, **config: object) -> None:
        """``config``: more ``uvicorn.Config`` arguments (e.g. ``http``, the protocol class)."""
        self.port = free_port()
        self.server = uvicorn.Server(server_config(create_app(settings), settings.api, **{
            "host": "127.0.0.1", "port": self.port, "log_level": "warning", "lifespan": "on", **config}))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ApiServer:
        self.thread.start()
        wait_for_port("127.0.0.1", self.port, 20)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def fold_feedback(reader: FeedbackReader, total: int, timeout_s: float = 30.0) -> None:
    """Drain ``reader`` until it has read ``total`` records of its topics and holds none back; fails otherwise."""
    assert reader.wait_caught_up(timeout_s)
    deadline = time.monotonic() + timeout_s
    while (reader._held or sum(reader._pos.values()) < total) and time.monotonic() < deadline:
        reader.drain(None)
        time.sleep(0.05)
    reader.drain(None)
    assert not reader._held and sum(reader._pos.values()) >= total
