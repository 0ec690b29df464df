"""models.background_fit: a child process's fit is the fit here, and its errors come back as themselves."""

from __future__ import annotations

import numpy as np
import pytest

from models.background_fit import ModelsFit
from models.base import InteractionLog


def _log(n_sessions: int = 300, seed: int = 0) -> InteractionLog:
    rng = np.random.default_rng(seed)
    lens = rng.integers(2, 6, n_sessions)
    session = np.repeat(np.arange(n_sessions, dtype=np.int32), lens)
    items = rng.integers(0, 40, len(session)).astype(np.int32)
    return InteractionLog(session_idx=session, item_idx=items, ts=np.arange(len(session), dtype=np.float64),
                          n_items=40)


def test_models_fitted_in_a_child_process_equal_those_fitted_here() -> None:
    specs = {"stan": {"k": 20, "sample_size": 100},
             "gru4rec": {"d": 8, "epochs": 1, "batch_size": 32, "n_sample": 8, "progress": False}}
    log = _log()
    with ModelsFit(specs, log, background=True) as fit:
        child = fit.result()
    here = ModelsFit(specs, log, background=False).result()
    assert [type(m).__name__ for m in child] == ["STAN", "GRU4Rec"]
    assert child[1].net_.item_emb.detach().numpy().tobytes() == here[1].net_.item_emb.detach().numpy().tobytes()
    from models.base import Histories
    hist = Histories.from_lists([[1, 2], [3]])
    for a, b in zip(child[0].recommend(hist, 5), here[0].recommend(hist, 5), strict=True):
        assert a.tobytes() == b.tobytes()


def test_a_fit_error_in_the_child_is_raised_here_as_itself() -> None:
    with ModelsFit({"gru4rec": {"lr": -1.0}}, _log(), background=True) as fit, \
            pytest.raises(ValueError, match="lr must be > 0"):
        fit.result()


def test_closing_stops_a_child_still_fitting_and_removes_its_files() -> None:
    fit = ModelsFit({"gru4rec": {"d": 8, "epochs": 50, "progress": False}}, _log(3000), background=True)
    folder = fit._dir.name  # noqa: SLF001 - the private folder is what must be removed
    proc = fit._proc  # noqa: SLF001
    fit.close()
    assert proc.poll() is not None
    import os
    assert not os.path.exists(folder)


def test_the_child_ends_when_its_parent_is_killed(tmp_path) -> None:
    """A trainer killed with -9 leaves no fit running on: the child watches its parent's pid."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        "from tests.models.test_background_fit import _log\n"
        "from models.background_fit import ModelsFit\n"
        "fit = ModelsFit({'gru4rec': {'d': 8, 'epochs': 500, 'progress': False}}, _log(3000), background=True)\n"
        "print(fit._proc.pid, flush=True)\n"
        "time.sleep(600)\n")
    root = str(Path(__file__).resolve().parents[2])
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, cwd=root,
                              env={**os.environ, "PYTHONPATH": root})
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state in ("Z", "X"):  # exited; reaping is its new parent's business
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the child {child} outlived its killed parent by 30 s")
