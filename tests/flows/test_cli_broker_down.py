"""``fusionrec topics`` / ``catalog`` / ``simulate`` / ``replay`` with no broker at the configured address: one line naming
it and what to check, exit status 1, no traceback, within the probe's wait (not after 65 s)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flows.commands.platform
from flows.cli import app

WAIT_S = 2.0


@pytest.fixture()
def nobody_listens(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A free port on 127.0.0.1 nobody listens on, set as ``[kafka] brokers``; the probe waits ``WAIT_S``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FUSIONREC_KAFKA__BROKERS", address)
    monkeypatch.setattr(flows.commands.platform, "BROKER_WAIT_S", WAIT_S)
    return address


def _fails_naming_the_broker(args: list[str], address: str,
                             named_by: str = "[kafka] brokers (FUSIONREC_KAFKA__BROKERS)") -> None:
    t0 = time.monotonic()
    result = CliRunner().invoke(app, args)
    took = time.monotonic() - t0
    out = result.output
    assert result.exit_code == 1, out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in out and "KafkaException" not in out, out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert f"fusionrec {args[0]}: cannot reach the broker at {address}" in lines[0], out
    assert f"within {WAIT_S:g} s" in lines[0] and f"check that it is running and that {named_by} names it" in lines[0], out
    assert took < WAIT_S + 5, took


def test_topics_without_a_broker_is_one_line_naming_it(nobody_listens: str) -> None:
    _fails_naming_the_broker(["topics"], nobody_listens)


def test_catalog_without_a_broker_is_one_line_naming_it_early(nobody_listens: str, tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_bytes(b'{"item_id": "a", "title": "x"}\n{"item_id": "b", "title": "y"}\n'
                      b'{"item_id": "c", "deleted": true}\n')
    _fails_naming_the_broker(["catalog", str(items)], nobody_listens)


@pytest.mark.parametrize("given", ["settings", "--brokers"])
@pytest.mark.parametrize("command", ["simulate", "replay"])
def test_simulate_and_replay_without_a_broker_are_one_line_naming_it(
        command: str, given: str, nobody_listens: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``simulate`` and ``replay`` with nobody at the address logged librdkafka's connection errors and hung (still
    running after 40 s); they say so in one line, exit status 1, as ``topics`` and ``catalog`` do."""
    import flows.commands.simulate  # noqa: F401  (registers the commands)

    log = tmp_path / "log_test.txt"
    log.write_text("SessionId\tItemId\tTime\n1\ta\t1400000000\n1\tb\t1400000005\n")
    args = ["simulate", "--events", "5", "--no-progress"] if command == "simulate" else ["replay", str(log), "--no-progress"]
    if given == "--brokers":  # the option names the address, the settings another one
        monkeypatch.setenv("FUSIONREC_KAFKA__BROKERS", "127.0.0.1:9")
        args += ["--brokers", nobody_listens]
    _fails_naming_the_broker(args, nobody_listens, "--brokers (default [kafka] brokers, FUSIONREC_KAFKA__BROKERS)")


@pytest.mark.parametrize("command", ["flow", "analytics", "archive"])
def test_dataflow_commands_without_a_broker_are_one_line_naming_it(
        command: str, nobody_listens: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``flow`` and ``archive`` ended in a Rust panic and five chained tracebacks after 12 s, ``analytics`` in a
    KafkaException traceback; the dataflow is not started without a broker that answers."""
    import os

    import flows.commands.analytics  # noqa: F401  (registers the commands)
    import flows.commands.lake  # noqa: F401

    def no_exec(*a: object) -> None:
        raise AssertionError(f"the dataflow was started: {a}")

    monkeypatch.setattr(os, "execv", no_exec)
    _fails_naming_the_broker([command], nobody_listens)


def test_catalog_whose_records_are_not_acknowledged_is_one_line_not_a_traceback(
        nobody_listens: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker that answered the probe and is gone before the records are acknowledged: one line with the counts."""
    monkeypatch.setattr(flows.commands.platform, "require_broker", lambda *a, **k: None)
    monkeypatch.setattr(flows.commands.platform, "CATALOG_ACK_S", WAIT_S)
    items = tmp_path / "items.jsonl"
    items.write_bytes(b'{"item_id": "a", "title": "x"}\n{"item_id": "b", "title": "y"}\n'
                      b'{"item_id": "c", "deleted": true}\n')
    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["catalog", str(items)])
    out = result.output
    assert result.exit_code == 1, out
    assert "Traceback" not in out and "published" not in out, out
    assert out.strip().splitlines() == [
        f"fusionrec catalog: the broker at {nobody_listens} acknowledged 0 of 3 records ({{'_MSG_TIMED_OUT': 3}}); "
        "check that it is running and that 'catalog' exists (fusionrec topics), then publish the file again"], out
    assert time.monotonic() - t0 < WAIT_S + 6


def test_catalog_of_only_rejected_lines_reports_them_without_a_broker(nobody_listens: str, tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_bytes(b'{"item_id": "t13-d", "title": "x", "price": 1e999}\n{"item_id": "", "title": "y"}\n')
    result = CliRunner().invoke(app, ["catalog", str(items)])
    out = result.output
    assert result.exit_code == 0, out
    assert "published 0 items" in out and "rejected 2 lines" in out, out
    assert f"rejected {items}:1: not JSON: number is infinity" in out, out
    assert f"rejected {items}:2: item_id: must be a non-empty string" in out, out


def test_catalog_rejects_a_serving_attribute_of_no_coercible_kind_without_a_broker(
        nobody_listens: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The serving attributes have fixed types whatever value comes first (a bool, a bool, a number; the
    configured names): a first value no coercion fits rejects the line naming the attribute."""
    monkeypatch.setenv("FUSIONREC_API__HIDDEN_ATTRIBUTE", "concealed")
    items = tmp_path / "items.jsonl"
    items.write_bytes(b'{"item_id": "h", "concealed": "maybe"}\n{"item_id": "i", "in_stock": "no"}\n'
                      b'{"item_id": "s", "stock": "none"}\n')
    result = CliRunner().invoke(app, ["catalog", str(items)])
    out = result.output
    assert result.exit_code == 0, out
    assert "published 0 items" in out and "rejected 3 lines" in out, out
    assert f"rejected {items}:1: item 'h': attribute 'concealed' must be a bool; got 'maybe' (str)" in out, out
    assert f"rejected {items}:2: item 'i': attribute 'in_stock' must be a bool; got 'no' (str)" in out, out
    assert f"rejected {items}:3: item 's': attribute 'stock' must be a number; got 'none' (str)" in out, out
