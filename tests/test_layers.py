"""Imports point one way (DESIGN.md): models/ and state/ import nothing of ours, and so on."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"flows", "operators", "state", "api", "simulators", "models"}
ALLOWED = {
    "models": {"models"},
    "state": {"state"},
    "operators": {"operators", "state", "models"},
    "simulators": {"simulators", "operators"},
    "flows": {"flows", "operators", "state", "models"},
    "api": {"api", "operators", "state", "models"},
}
# The CLI modules (flows/commands/*.py) start every piece, so they may also import simulators.
EXTRA = {"flows/commands/": {"simulators"}}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out & PACKAGES


FILES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path):
    rel = str(path.relative_to(ROOT))
    pkg = rel.split("/")[0]
    allowed = set(ALLOWED[pkg])
    for prefix, extra in EXTRA.items():
        if rel.startswith(prefix):
            allowed |= extra
    wrong = _imports(path) - allowed
    assert not wrong, f"{rel} imports {sorted(wrong)}; {pkg}/ may import only {sorted(allowed)}"
