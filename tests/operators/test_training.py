"""operators/training.py: an event log read for ``fusionrec train --events`` counts each event_id once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flows.commands.platform  # noqa: F401  (registers the command)
from flows.cli import app
from operators.settings import Settings
from operators.training import read_events_jsonl

T0 = 1_700_000_000.0


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _view(event_id: str, user: str, item: str, dt: float) -> dict:
    return {"event_id": event_id, "ts": T0 + dt, "type": "view", "user_id": user, "item_id": item}


def test_a_repeated_event_id_is_read_once_and_the_first_copy_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    log = _write(tmp_path / "events.jsonl", [
        _view("e1", "u1", "a", 0), _view("e2", "u1", "b", 1), _view("e1", "u1", "a", 0),
        _view("e2", "u1", "c", 5),  # same id, other body: a re-send is the first copy's, never a second event
        _view("e3", "u2", "a", 2), _view("e1", "u1", "a", 0)])
    events = list(read_events_jsonl(log, Settings()))
    assert [(e.event_id, e.item_id) for e in events] == [("e1", "a"), ("e2", "b"), ("e3", "a")]
    assert "skipped 3 events whose event_id an earlier line had" in caplog.text


def test_train_counts_re_sent_events_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model card's interaction count is the distinct events', however often each was re-sent."""
    monkeypatch.chdir(tmp_path)
    unique = [_view(f"e{k}", f"u{k % 3}", f"i{k % 5}", k) for k in range(12)]
    log = _write(tmp_path / "events.jsonl", unique + unique[:7] + unique[2:4] * 3)
    result = CliRunner().invoke(app, ["train", "--events", str(log), "--model", "covisit"])
    assert result.exit_code == 0, result.output
    cards = list((tmp_path / "var" / "models").glob("*/card.json"))
    assert len(cards) == 1
    assert json.loads(cards[0].read_text())["counts"]["interactions"] == len(unique)
