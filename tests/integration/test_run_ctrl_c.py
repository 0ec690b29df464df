"""``fusionrec run`` (what ``make run`` starts): Ctrl-C at start-up or while running, even twice, stops
everything and exits 0 (make prints no ``Error 130``), and each run starts fresh logs (issue 15)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from operators.broker import free_port
from operators.scheduling import ONE_BOX_API_NICE, autogroup_nice

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _start(var: Path, out: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "flows.cli", "run", "--port", str(free_port()), "--api-port", str(free_port()),
            "--var", str(var), "--history", "2000", "--trainer-every", "0", "-w", "1"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("FUSIONREC_CONFIG", None)
    return subprocess.Popen(args, stdout=open(out, "wb"), stderr=subprocess.STDOUT, cwd=ROOT, env=env,  # noqa: SIM115
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _wait_for(out: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in out.read_text(errors="replace"):
        assert time.monotonic() < deadline, out.read_text(errors="replace")[-2000:]
        time.sleep(0.2)


@pytest.fixture
def started():
    """The ``fusionrec run`` processes a test started; any still running at its end are killed (a failed
    assertion must not leave a whole platform running)."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        for sig, wait_s in ((signal.SIGINT, 60), (signal.SIGKILL, 10)):  # Ctrl-C stops its children too
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)
                    p.wait(wait_s)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass


def test_ctrl_c_exits_0_and_logs_start_fresh(tmp_path, started):
    var = tmp_path / "var"
    # 1: Ctrl-C during start-up (training)
    p = _start(var, tmp_path / "1.out")
    started.append(p)
    _wait_for(tmp_path / "1.out", "training fusion", 120)
    os.killpg(p.pid, signal.SIGINT)
    assert p.wait(60) == 0, (tmp_path / "1.out").read_text()[-2000:]
    first_broker_log = (var / "broker.log").read_bytes()
    # 2: Ctrl-C while running, and again while stopping
    p = _start(var, tmp_path / "2.out")
    started.append(p)
    _wait_for(tmp_path / "2.out", "Ctrl-C stops everything", 180)
    if Path("/proc/self/autogroup").exists():  # one box: the API's session yields CPU to the flow
        api = [c for c in _children(p.pid) if b"api.app:create_app" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(api) == 1
        deadline = time.monotonic() + 30  # set by the app's lifespan
        while autogroup_nice(Path(f"/proc/{api[0]}/autogroup")) != ONE_BOX_API_NICE:
            assert time.monotonic() < deadline, Path(f"/proc/{api[0]}/autogroup").read_text()
            time.sleep(0.2)
    os.killpg(p.pid, signal.SIGINT)
    time.sleep(0.3)
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGINT)
    assert p.wait(60) == 0, (tmp_path / "2.out").read_text()[-2000:]
    assert "stopping..." in (tmp_path / "2.out").read_text()
    # logs: the previous run's are kept once as *.log.1, the current ones start empty
    assert (var / "broker.log.1").read_bytes() == first_broker_log
    assert (var / "flow.log").exists() and not (var / "flow.log.1").exists()
