"""README's command table says what the commands do: here, the topics ``fusionrec topics`` creates."""

from __future__ import annotations

from pathlib import Path

import pytest

from operators.kafka import platform_topics
from operators.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _command_row(command: str) -> str:
    """The README's row of the commands table that starts with ``| `fusionrec <command>` |``."""
    start = f"| `fusionrec {command}` |"
    rows = [line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith(start)]
    assert len(rows) == 1, f"{len(rows)} rows start with {start!r}"
    return rows[0]


def test_readme_topics_row_names_every_platform_topic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The row left out ``analytics``, which ``fusionrec topics --help`` lists and ``run`` creates (new-user trial).
    Derived topics may be written with their base as a placeholder: ``<events>.stats``."""
    monkeypatch.chdir(tmp_path)  # the default settings, no fusionrec.toml
    kafka = Settings().kafka
    row = _command_row("topics")
    missing = []
    for spec in platform_topics(Settings()):
        names = {f"`{spec.name}`"}
        for base in (kafka.events_topic, kafka.topn_topic):
            if spec.name.startswith(f"{base}."):
                names.add(f"`<{base}>{spec.name.removeprefix(base)}`")
        if not any(name in row for name in names):
            missing.append(spec.name)
    assert not missing, f"README's `fusionrec topics` row does not name {missing}"
