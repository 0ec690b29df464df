"""``fusionrec broker`` starts one broker, serves Kafka clients until SIGTERM, then exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from operators.broker import free_port, port_in_use

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _wait_listening(port: int, proc: subprocess.Popen[str], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_in_use(port):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"port {port} never listened"
        time.sleep(0.1)


def test_broker_serves_until_sigterm_and_exits_0(tmp_path: Path) -> None:
    from confluent_kafka.admin import AdminClient

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSIONREC_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "broker", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(port, proc)
        meta = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
        assert [f"{b.host}:{b.port}" for b in meta.brokers.values()] == [f"127.0.0.1:{port}"]
        time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()  # still serving: not started twice
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out + err
    assert "Traceback" not in err and "PortInUseError" not in err, err
    assert f"broker on 127.0.0.1:{port}" in out
    deadline = time.monotonic() + 10
    while port_in_use(port) and time.monotonic() < deadline:  # the broker process stopped with it
        time.sleep(0.1)
    assert not port_in_use(port)


def test_broker_on_a_taken_port_is_a_clean_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FUSIONREC_")}
        env["PYTHONPATH"] = str(ROOT)
        r = subprocess.run([sys.executable, "-m", "flows.cli", "broker", "--port", str(port)], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "already in use" in r.stderr and "Traceback" not in r.stderr
