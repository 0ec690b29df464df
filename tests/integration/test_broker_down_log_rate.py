"""``fusionrec serve`` while its broker is down logs the outage, not every reconnect (issue 14).

librdkafka 2.16 re-bootstraps a client whose only broker refused a connection, with a fresh broker
object each time, so its own suppression of repeated errors never applies: every client wrote
"Connect to ... failed" to stderr every ~50 ms, ~160 lines/s from the API, whether it started
without a broker or its broker went away. Now librdkafka's lines go through Python logging, each
kind at most once a minute (``operators/kafka_log.py``): the first failure is logged, the API's own
ERROR says the broker does not answer, ``/healthz`` stays 200, ``/readyz`` 503, and the API is
ready again once the broker is back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from operators.broker import LocalBroker, free_port, wait_for_port
from operators.settings import Settings
from tests.harness import ROOT, make_settings, write_config

pytestmark = pytest.mark.integration

WATCH_S = 10.0
MAX_LINES = 20  # in WATCH_S; the old code wrote ~1,600


@contextmanager
def _serve(settings: Settings, tmp: Path) -> Iterator[tuple[httpx.Client, Path]]:
    """``fusionrec serve`` on a free port with ``settings``; its stdout and stderr go to a file."""
    config = write_config(settings, tmp / "fusionrec.toml")
    port, log = free_port(), tmp / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--port", str(port)], cwd=tmp,
                                env=dict(os.environ, FUSIONREC_CONFIG=str(config), PYTHONPATH=str(ROOT)),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, 30)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client, log
    finally:
        proc.kill()  # its clean stop is not under test (it waits ~10 s for a broker that is down)
        proc.wait(15)


def _lines_about(log: Path, address: str) -> list[str]:
    return [ln for ln in log.read_text(errors="replace").splitlines() if address in ln]


def _broker_reported_down(client: httpx.Client) -> bool:
    r = client.get("/readyz")
    return r.status_code == 503 and any(w.startswith("broker:") for w in r.json()["reasons"])


def _wait(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s"
        time.sleep(0.2)


def _watch(client: httpx.Client, log: Path, address: str) -> list[str]:
    """The lines naming ``address`` logged during ``WATCH_S`` seconds, the API alive and not ready all along."""
    before = len(_lines_about(log, address))
    deadline = time.monotonic() + WATCH_S
    while time.monotonic() < deadline:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        time.sleep(1.0)
    return _lines_about(log, address)[before:]


def test_serve_without_a_broker_reports_it_without_a_line_per_reconnect(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nobody listens
    with _serve(make_settings(address, tmp_path, partitions=1, create_topics=False), tmp_path) as (client, log):
        during = _watch(client, log, address)  # from its start: the old code's lines began at once
        assert len(during) < MAX_LINES, "\n".join(during[:5])
        _wait(lambda: _broker_reported_down(client), 10, "/readyz naming the broker")
        lines = _lines_about(log, address)
        assert any(f"Connect to ipv4#{address} failed" in ln for ln in lines), lines  # the first failure, once
        down = [ln for ln in lines if "api.durable_producer ERROR" in ln]
        assert len(down) == 1 and f"the event broker {address} does not answer" in down[0], lines


def test_serve_whose_broker_goes_away_logs_the_outage_once_and_recovers(tmp_path: Path) -> None:
    broker = LocalBroker(log_path=tmp_path / "broker.log").start()
    try:
        with _serve(make_settings(broker.bootstrap, tmp_path, partitions=1), tmp_path) as (client, log):
            _wait(lambda: client.get("/readyz").status_code == 200, 30, "ready")
            broker.stop()
            # known down after the acknowledgement timeout (5 s); each client's first failures come meanwhile
            _wait(lambda: _broker_reported_down(client), 20, "/readyz naming the broker")
            during = _watch(client, log, broker.bootstrap)
            assert len(during) < MAX_LINES, "\n".join(during[:5])
            broker.start()
            _wait(lambda: client.get("/readyz").status_code == 200, 30, "ready again")
    finally:
        broker.stop()
