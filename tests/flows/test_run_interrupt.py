"""``fusionrec run`` interrupted by Ctrl-C (SIGINT) at any moment, the first second included: a short
message, exit status 0, no traceback, and nothing it started left running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from operators.broker import port_in_use


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    script = Path(sys.executable).with_name("fusionrec")  # the console script, as a user starts it
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]
    port, api_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSIONREC_")}
    p = subprocess.Popen([*cmd, "run", "--port", str(port), "--api-port", str(api_port), "--var", str(tmp_path / "var"),
                          "--model", "covisit", "--history", "300", "--trainer-every", "0"],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         # a terminal's Ctrl-C, even when the tests run where SIGINT is ignored (a background job)
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return p, port


def _interrupt(p: subprocess.Popen[str]) -> str:
    p.send_signal(signal.SIGINT)
    try:
        out, _ = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        raise AssertionError(f"run did not stop within 60 s of Ctrl-C:\n{out}") from None
    return out


@pytest.mark.parametrize("delay_s", [0.15, 0.4, 0.8, 1.2])
def test_ctrl_c_in_the_first_second_is_a_clean_stop(tmp_path: Path, delay_s: float) -> None:
    p, port = _start(tmp_path)
    time.sleep(delay_s)  # loading the commands, checking the options, or starting the broker
    out = _interrupt(p)
    assert p.returncode == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out and "Aborted" not in out, out
    assert "fusionrec: interrupted" in out or "stopping..." in out, out
    assert not port_in_use(port), "the broker outlived run"


def test_ctrl_c_while_training_stops_the_broker(tmp_path: Path) -> None:
    p, port = _start(tmp_path)
    assert p.stdout is not None
    deadline = time.monotonic() + 60
    for line in p.stdout:  # the broker runs and the topics exist once training begins
        if line.startswith("training ") or time.monotonic() > deadline:
            break
    assert port_in_use(port), "the broker should be running by now"
    out = _interrupt(p)
    assert p.returncode == 0, out
    assert "stopping..." in out and "Traceback" not in out, out
    assert not port_in_use(port), "the broker outlived run"


_CTRL_C_WHILE_LOADING = """
import os, signal, sys, time
import flows.cli

def _register():  # a Ctrl-C lands while the commands load, then an extension's import fails from it
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)  # a KeyboardInterrupt raised here would cut the loading short
    print("loaded", flush=True)
    raise ImportError("numba._devicearray failed to import")

flows.cli._register = _register
sys.argv = ["fusionrec", "run"]
flows.cli.main()
"""


def test_ctrl_c_while_the_commands_load_is_held_until_they_are_loaded() -> None:
    """A KeyboardInterrupt inside a C extension's import is printed there and becomes an ImportError
    (numba's ``_dispatcher``): the commands load with the Ctrl-C held, and the error it caused is its
    debris, reported as the interrupt."""
    p = subprocess.run([sys.executable, "-c", _CTRL_C_WHILE_LOADING], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[2],
                       # a terminal's Ctrl-C, even when the tests run where SIGINT is ignored (a background job)
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "loaded", p.stdout
    assert p.stderr.strip() == "fusionrec: interrupted", p.stderr
