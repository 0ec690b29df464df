"""A second ``fusionrec run`` (or ``fusionrec broker``) on a machine where its ports are taken: a clear
one-line error and exit status 2, nothing started; the embedded broker never says "listening" unless
the broker it started is the one listening (a port answered by someone else while its child died,
Tansu's ``AddrInUse`` panic, is an error with the child's output)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flows.commands.platform  # noqa: F401  (registers the commands)
import operators.broker
from flows.cli import app
from operators.broker import BrokerStartError, LocalBroker, PortInUseError

pytestmark = pytest.mark.integration


@pytest.fixture
def taken() -> Iterator[int]:
    """A port on 127.0.0.1 someone else listens on (as the first platform's broker or API would)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.fixture
def no_spawn(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records any child process started (there must be none)."""
    spawned: list[object] = []

    def popen(*args: object, **kwargs: object) -> None:
        spawned.append(args)
        raise AssertionError(f"a child was started: {args}")

    monkeypatch.setattr(subprocess, "Popen", popen)
    return spawned


def test_run_with_the_broker_port_taken_starts_nothing(taken: int, no_spawn: list[object], tmp_path: Path) -> None:
    var = tmp_path / "var"
    result = CliRunner().invoke(app, ["run", "--port", str(taken), "--api-port", str(operators.broker.free_port()),
                                      "--var", str(var)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert f"broker port {taken} on 127.0.0.1 is already in use" in lines[0]
    assert "--port" in lines[0] and "FUSIONREC_KAFKA__BROKERS" in lines[0]
    assert not no_spawn and not var.exists()  # no child, and no other run's state wiped


def test_run_with_the_api_port_taken_starts_nothing(taken: int, no_spawn: list[object], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSIONREC_API__PORT", str(taken))  # the default --api-port comes from [api] port
    var = tmp_path / "var"
    result = CliRunner().invoke(app, ["run", "--port", str(operators.broker.free_port()), "--var", str(var)])
    assert result.exit_code == 2, result.output
    assert f"API port {taken} on 127.0.0.1 is already in use" in result.output
    assert "--api-port" in result.output and "FUSIONREC_API__PORT" in result.output
    assert not no_spawn and not var.exists()


def test_broker_command_with_its_port_taken_is_a_clear_error(taken: int, no_spawn: list[object]) -> None:
    result = CliRunner().invoke(app, ["broker", "--port", str(taken)])
    assert result.exit_code == 2, result.output
    assert f"broker port {taken} on 127.0.0.1 is already in use" in result.output and "--port" in result.output
    assert not no_spawn


def test_embedded_broker_on_a_taken_port_starts_nothing(taken: int, no_spawn: list[object]) -> None:
    b = LocalBroker(taken)
    with pytest.raises(PortInUseError, match=f"broker port {taken} on 127.0.0.1 is already in use"):
        b.start()
    assert b.proc is None and not no_spawn


@pytest.mark.parametrize("to_file", [False, True], ids=["no-log", "log-file"])
def test_a_port_answered_by_someone_else_while_our_broker_died_is_an_error(
        taken: int, to_file: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:  # noqa: ANN001
    # the race the check cannot close: the port is taken after the check, before Tansu binds it
    monkeypatch.setattr(operators.broker, "port_in_use", lambda port, host="127.0.0.1": False)
    b = LocalBroker(taken, log_path=tmp_path / "broker.log" if to_file else None)
    with caplog.at_level("INFO", logger="operators.broker"), pytest.raises(BrokerStartError) as err:
        b.start(timeout_s=10)
    assert f"the broker on 127.0.0.1:{taken} exited" in str(err.value)
    assert "AddrInUse" in str(err.value) and "\n" not in str(err.value)  # the child's output tail, on one line
    assert "listening" not in caplog.text
    assert b.proc is None
