"""A second ``fusionrec run`` on the same run directory stops at once (exit status 2) naming the first one's
PID, and touches nothing of its state; a killed run leaves no stale lock (``flows/run_lock.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flows.commands.platform  # noqa: F401  (registers the commands)
from flows.cli import app
from flows.run_lock import LOCK_NAME, RunDirBusy, lock_run_dir
from operators.broker import free_port

STATE = ("state", "api", "lake", "serving")


def _first_run(var: Path) -> None:
    """What a live first run has in its run directory."""
    for name in STATE:
        (var / name).mkdir(parents=True)
    (var / "flow.log").write_text("the first run's log\n")


def test_a_second_lock_of_the_same_directory_names_the_holder(tmp_path: Path) -> None:
    held = lock_run_dir(tmp_path / "run")
    try:
        with pytest.raises(RunDirBusy, match=rf"another fusionrec run \(pid {os.getpid()}\) is using the run "
                                             rf"directory {tmp_path / 'run'}; stop it first") as err:
            lock_run_dir(tmp_path / "run")
        assert err.value.pid == os.getpid()
        assert "FUSIONREC_RUN__VAR_DIR=DIR" in str(err.value) and "--var DIR" in str(err.value)
        lock_run_dir(tmp_path / "other").release()  # another directory: no conflict
    finally:
        held.release()
    lock_run_dir(tmp_path / "run").release()  # released: free again


def test_a_killed_run_leaves_no_stale_lock(tmp_path: Path) -> None:
    var = tmp_path / "run"
    code = ("import sys, time; from pathlib import Path; from flows.run_lock import lock_run_dir; "
            "lock_run_dir(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)")
    root = Path(__file__).resolve().parents[2]
    holder = subprocess.Popen([sys.executable, "-c", code, str(var)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(root)))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy, match=f"pid {holder.pid}"):
            lock_run_dir(var)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        holder.stdout.close()  # type: ignore[union-attr]
    assert (var / LOCK_NAME).read_text().strip() == str(holder.pid)  # the file stays, the lock does not
    lock_run_dir(var).release()


@pytest.mark.parametrize("by_env", [False, True], ids=["--var", "FUSIONREC_RUN__VAR_DIR"])
def test_a_second_run_on_the_same_directory_stops_before_touching_it(
        by_env: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trial 31, finding 2: on other ports, the second run deleted the first one's state and rotated its logs."""
    def no_child(*a: object, **k: object) -> None:
        raise AssertionError(f"a child was started: {a}")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "Popen", no_child)
    var = tmp_path / "var" / "run"
    _first_run(var)
    args = ["run", "--port", str(free_port()), "--api-port", str(free_port()), "--trainer-every", "0"]
    if by_env:
        monkeypatch.setenv("FUSIONREC_RUN__VAR_DIR", str(var))
    else:
        args += ["--var", str(var)]
    first = lock_run_dir(var)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        first.release()
    assert result.exit_code == 2, result.output
    assert f"fusionrec run: another fusionrec run (pid {os.getpid()}) is using the run directory {var}" in result.output
    assert "Traceback" not in result.output
    assert all((var / name).is_dir() for name in STATE)
    assert (var / "flow.log").read_text() == "the first run's log\n" and not (var / "flow.log.1").exists()


def test_the_run_directory_setting_defaults_to_var_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from operators.settings import Settings

    monkeypatch.delenv("FUSIONREC_RUN__VAR_DIR", raising=False)
    assert Settings().run.var_dir == Path("var/run")
    monkeypatch.setenv("FUSIONREC_RUN__VAR_DIR", "var/run2")
    assert Settings().run.var_dir == Path("var/run2")
