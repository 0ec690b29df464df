"""flows/supervisor.py with real child processes: failed ones restart with backoff, the rest keep running."""

from __future__ import annotations

import subprocess
import sys
import time

from flows.supervisor import Supervisor


def _until(pred, timeout_s: float = 20.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_failing_child_is_restarted_with_growing_backoff_while_others_keep_running(tmp_path):
    counter = tmp_path / "starts"
    # fails (exit 3) on its first three starts, then keeps running
    script = (f"import pathlib, sys, time; p = pathlib.Path({str(counter)!r}); n = int(p.read_text() or 0) "
              "if p.exists() else 0; p.write_text(str(n + 1)); sys.exit(3) if n < 3 else time.sleep(60)")
    procs: list[subprocess.Popen[bytes]] = []

    def start(args: list[str]):  # noqa: ANN202
        def go() -> subprocess.Popen[bytes]:
            procs.append(subprocess.Popen(args))
            return procs[-1]
        return go

    messages: list[str] = []
    sup = Supervisor(initial_backoff_s=0.2, max_backoff_s=0.8, notify=messages.append)
    flaky = sup.add("flaky", start([sys.executable, "-c", script]))
    steady = sup.add("steady", start([sys.executable, "-c", "import time; time.sleep(60)"]))
    steady_pid = steady.proc.pid
    try:
        _until(lambda: (sup.tick() or True) and flaky.restarts == 3 and flaky.exit_code() is None)
        time.sleep(0.5)
        sup.tick()
        assert flaky.exit_code() is None and flaky.restarts == 3  # the fourth start runs
        assert [code for _, code in flaky.history] == [3, 3, 3]
        gaps = [b - a for (a, _), (b, _) in zip(flaky.history, flaky.history[1:])]
        assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # backoff doubles: 0.2 s, 0.4 s, 0.8 s
        assert steady.proc.pid == steady_pid and steady.exit_code() is None and steady.restarts == 0
        assert sum("exited with code 3" in m for m in messages) == 3
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_child_that_finished_cleanly_is_left_alone():
    sup = Supervisor(initial_backoff_s=0.1)
    done = sup.add("done", lambda: subprocess.Popen([sys.executable, "-c", "pass"]))
    done.proc.wait()
    for _ in range(5):
        sup.tick()
        time.sleep(0.05)
    assert done.restarts == 0 and done.history == []


def test_a_service_that_exits_cleanly_is_restarted():
    """``fusionrec run``'s trainer exits 0 on a SIGTERM of its own: it was left stopped, without a word, for the
    rest of the run (the flow and the API, killed by the same signal, were restarted)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        procs.append(subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(60) if len(sys.argv) > 1 "
                                       "else None", *(["keep"] if procs else [])]))
        return procs[-1]

    messages: list[str] = []
    sup = Supervisor(initial_backoff_s=0.1, notify=messages.append)
    service = sup.add("trainer", start, service=True)
    try:
        service.proc.wait()
        _until(lambda: (sup.tick() or True) and service.restarts == 1)
        assert service.history[0][1] == 0 and service.exit_code() is None
        assert any("trainer exited with code 0; restarting" in m for m in messages)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
