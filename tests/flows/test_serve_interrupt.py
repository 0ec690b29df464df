"""``fusionrec serve`` stopped by Ctrl-C (SIGINT): it exits within a few seconds, with its broker up or down,
and every event it answered 202 is in the topic."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from operators.broker import free_port
from operators.settings import Settings
from tests.harness import ROOT, make_settings, wait_for, write_config

pytestmark = pytest.mark.integration

STOP_BOUND_S = 6.0
"""``api.stop_timeout_s`` (2 s) plus the interpreter's own exit on a busy 2-core box. With its broker down, serve
took 15-20 s (fresh state; ~45 s with an optimizer snapshot to hand over): every reader thread was waited for
5 s in turn, then the feedback reader 5 s more, the snapshot's publication 30 s and the producer's flush 10 s."""


@contextlib.contextmanager
def _serve(settings: Settings, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client, Path]]:
    """``fusionrec serve`` on a free port, its lifespan started (``/healthz`` answers); output in a log file.
    On leaving: the client closed, the process killed if it still runs."""
    config = write_config(settings, tmp_path / "fusionrec.toml")
    port, log = free_port(), tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSIONREC_")}
    env.update(FUSIONREC_CONFIG=str(config), PYTHONPATH=str(ROOT))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--port", str(port)], cwd=tmp_path,
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                # a terminal's Ctrl-C, even when the tests run where SIGINT is ignored
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def started() -> bool:
        try:
            return client.get("/healthz").status_code == 200
        except httpx.TransportError:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            return False

    try:
        wait_for(started, timeout_s=60, what="serve started")
        yield proc, client, log
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _interrupt(proc: subprocess.Popen[bytes], log: Path) -> float:
    """Ctrl-C; the seconds until the process ended (exit status 0, no traceback)."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        out = log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"serve did not stop within 60 s of Ctrl-C:\n{out}") from None
    took = time.monotonic() - t0
    out = log.read_text(errors="replace")
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    return took


def _event_ids(broker: str, topic: str, n: int) -> set[str]:
    """The ``event_id`` of the first ``n`` records of ``topic`` (partition 0), read from its start."""
    c = Consumer({"bootstrap.servers": broker, "group.id": "serve-interrupt", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got: list[str] = []
    deadline = time.monotonic() + 20
    while len(got) < n and time.monotonic() < deadline:
        got += [orjson.loads(m.value())["event_id"] for m in c.consume(100, 0.2) if not m.error()]
    c.close()
    return set(got)


def test_ctrl_c_stops_serve_at_once_and_keeps_every_accepted_event(broker: str, tmp_path: Path) -> None:
    s = make_settings(broker, tmp_path, partitions=1)
    with _serve(s, tmp_path) as (proc, client, log):
        events = [{"type": "view", "user_id": f"u{k}", "item_id": f"i{k}"} for k in range(5)]
        r = client.post("/v1/events", json=events)
        assert r.status_code == 202, r.text
        accepted = set(r.json()["event_ids"])
        took = _interrupt(proc, log)  # at once: a 202 means the broker has acknowledged the events already
    assert took < STOP_BOUND_S, f"serve took {took:.1f} s to stop"
    assert _event_ids(broker, s.kafka.events_topic, len(accepted)) == accepted


def test_ctrl_c_stops_serve_at_once_when_its_broker_does_not_answer(tmp_path: Path) -> None:
    """Readers waiting on a broker nobody runs: the stop waits ``api.stop_timeout_s`` for them in all."""
    s = make_settings(f"127.0.0.1:{free_port()}", tmp_path, partitions=1, create_topics=False)
    with _serve(s, tmp_path) as (proc, _, log):
        time.sleep(1.0)  # the readers are in their broker calls (topic metadata, 10 s timeouts)
        took = _interrupt(proc, log)
    assert took < STOP_BOUND_S, f"serve took {took:.1f} s to stop with its broker down"


def test_ctrl_c_stops_serve_soon_while_an_event_waits_on_a_broker_that_does_not_answer(tmp_path: Path) -> None:
    """A POST waiting for the acknowledgement of a broker that does not answer (not yet known down): uvicorn waits
    for requests in flight before the lifespan stops, so the stop took the ack timeout (5 s) first, 7-9 s in all
    (new-user trial). The server's stop now ends that wait after a grace of 1 s (``DurableProducer.begin_stop``):
    the request is answered 503 (nothing accepted, retry with the same ids), and serve ends soon after."""
    import threading

    s = make_settings(f"127.0.0.1:{free_port()}", tmp_path, partitions=1, create_topics=False)
    answers: list[httpx.Response] = []
    with _serve(s, tmp_path) as (proc, client, log):
        post = threading.Thread(target=lambda: answers.append(
            client.post("/v1/events", json={"type": "view", "user_id": "u1", "item_id": "i1"})))
        post.start()
        time.sleep(0.3)  # the request waits for the acknowledgement
        took = _interrupt(proc, log)
        post.join(10)
    assert answers and answers[0].status_code == 503, answers
    assert "event_ids" in answers[0].json()["error"]
    assert took < STOP_BOUND_S + 1.0, f"serve took {took:.1f} s to stop with an event waiting on its broker"
