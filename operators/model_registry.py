"""The model registry on disk: versions with their cards, the promotion log, rollback, trainer runs.

Everything lives under ``stream.model_dir`` next to the versions (``operators/model_version.py``)::

    model_dir/
      LATEST                  the serving version (the flow and the API follow it within ~2 s)
      promotions.jsonl        every change of LATEST: {"ts", "action": promote|rollback, "version", "reason"}
      trainer_runs.jsonl      every trainer run: verdict (promoted | rejected | skipped | failed), why, metrics
      <version>/card.json     the model card: data window, counts, metrics against the champion, gate, code

``fusionrec models list | show | promote | rollback`` and ``fusionrec trainer`` read and write these.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from operators.model_version import PROMOTIONS, latest_version_path, point_latest

__all__ = ["CARD", "RUNS", "iso", "read_card", "write_card", "list_versions", "promote", "rollback", "rollback_target",
           "append_run", "read_runs", "code_version"]

CARD = "card.json"
RUNS = "trainer_runs.jsonl"
_ROOT = Path(__file__).resolve().parents[1]


def iso(ts: float) -> str:
    """Epoch seconds -> ``2026-12-03T04:30:00Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def code_version() -> str:
    """The code that trained a model: ``git describe`` of the checkout (``-dirty`` if modified), else the package version."""
    try:
        out = subprocess.run(["git", "-C", str(_ROOT), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"fusionrec {metadata.version('fusionrec')}"
    except metadata.PackageNotFoundError:
        return "unknown"


def read_card(version_dir: Path) -> dict[str, Any]:
    """The version's card merged over its manifest (a version without a card shows its manifest)."""
    version_dir = Path(version_dir)
    out: dict[str, Any] = json.loads((version_dir / "manifest.json").read_text())
    card = version_dir / CARD
    if card.exists():
        out.update(json.loads(card.read_text()))
    return out


def write_card(version_dir: Path, card: dict[str, Any]) -> None:
    """Write (replace atomically) ``version_dir/card.json``."""
    path = Path(version_dir) / CARD
    tmp = path.with_name(f".{CARD}.tmp")
    tmp.write_text(json.dumps(card, indent=2, default=str))
    os.replace(tmp, path)


def _log(model_dir: Path, name: str) -> list[dict[str, Any]]:
    path = Path(model_dir) / name
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash mid-write
            continue
    return out


def list_versions(model_dir: Path) -> list[dict[str, Any]]:
    """Every complete version, oldest first: its card plus ``serving`` (is LATEST) and ``promoted`` (ever served).

    A ``.tmp-<version>`` directory is a version being written, or left by a crash before its rename
    (``write_version``): not a version, though it may hold a manifest naming one.
    """
    model_dir = Path(model_dir)
    latest = latest_version_path(model_dir)
    ever = {e["version"] for e in _log(model_dir, PROMOTIONS)}
    out = []
    for d in sorted(p for p in model_dir.iterdir()
                    if not p.name.startswith(".") and p.is_dir() and (p / "manifest.json").exists()) \
            if model_dir.is_dir() else []:
        card = read_card(d)
        card["serving"] = latest is not None and d.name == latest.name
        card["promoted"] = d.name in ever or card["serving"]
        out.append(card)
    return out


def _stack(model_dir: Path) -> list[str]:
    """Versions that served, in order, with rolled-back ones popped: the last one is LATEST."""
    stack: list[str] = []
    for e in _log(model_dir, PROMOTIONS):
        if e.get("action") == "rollback":
            while stack and stack[-1] != e["version"]:
                stack.pop()
            if not stack:
                stack.append(e["version"])
        elif not stack or stack[-1] != e["version"]:
            stack.append(e["version"])
    return stack


def rollback_target(model_dir: Path) -> str | None:
    """The version that served before the current one (None when there is none)."""
    latest = latest_version_path(model_dir)
    stack = _stack(model_dir)
    if latest is None:
        return None
    if stack and stack[-1] == latest.name and len(stack) >= 2:
        return stack[-2]
    older = [v["version"] for v in list_versions(model_dir) if v["version"] < latest.name]  # names sort by time
    return older[-1] if older else None


def promote(model_dir: Path, version: str, reason: str = "by hand") -> None:
    """Serve ``version``: point LATEST at it (flow and API follow within ~2 s) and log why.

    Raises
    ------
    FileNotFoundError
        If ``version`` is not a complete version under ``model_dir``.
    """
    point_latest(model_dir, version, action="promote", reason=reason)


def rollback(model_dir: Path, reason: str = "by hand") -> str:
    """Serve the version that served before the current one again; returns its name.

    Raises
    ------
    LookupError
        If no earlier version exists.
    """
    target = rollback_target(model_dir)
    if target is None:
        raise LookupError(f"{model_dir}: no earlier version to roll back to")
    point_latest(model_dir, target, action="rollback", reason=reason)
    return target


def append_run(model_dir: Path, run: dict[str, Any]) -> None:
    """Append one trainer run (a JSON line) to ``model_dir/trainer_runs.jsonl``."""
    Path(model_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(model_dir) / RUNS, "a") as f:
        f.write(json.dumps({"ts": time.time(), **run}, default=str) + "\n")


def read_runs(model_dir: Path, last: int | None = None) -> list[dict[str, Any]]:
    """Trainer runs, oldest first (the ``last`` ones when given)."""
    runs = _log(model_dir, RUNS)
    return runs[-last:] if last else runs
