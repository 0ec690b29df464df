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


def test_option_help_shows_config_blocks_in_brackets(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run --help`` said ``(default:  var_dir / FUSIONREC_RUN__VAR_DIR: var/run)``: typer's rich help took
    ``[run]`` for a markup tag and dropped it. A ``[block]`` in any option's help is escaped (``\\[run]``)."""
    import re

    import typer
    from typer.testing import CliRunner

    from flows.cli import _register, app

    _register()  # every command, as the console script has them

    def commands(cmd: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
        subs = getattr(cmd, "commands", {})
        return [(path, cmd)] + [c for name, sub in subs.items() for c in commands(sub, (*path, name))]

    swallowed = [(" ".join(path), p.name, p.help) for path, cmd in commands(typer.main.get_command(app))
                 for p in getattr(cmd, "params", []) if re.search(r"(?<!\\)\[[a-z_]+\]", getattr(p, "help", None) or "")]
    assert not swallowed, swallowed
    monkeypatch.setenv("COLUMNS", "300")
    out = CliRunner().invoke(app, ["run", "--help"]).output
    assert "(default: [run] var_dir / FUSIONREC_RUN__VAR_DIR: var/run)" in " ".join(out.replace("│", " ").split())
