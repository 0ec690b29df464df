"""Progress bars written to a file that is not a terminal are lines at a sane rate, not ``\\r`` redraws piling
up into one line of megabytes (trial 31, finding 8.8: ``var/run/trainer.log``, ``make run``'s output)."""

from __future__ import annotations

import doctest
import io
import time
from types import SimpleNamespace

import pytest
from tqdm import tqdm

import models.progress
from models.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_file_gets_a_first_and_a_last_line_not_redraws() -> None:
    log = io.StringIO()
    with progress_bar(total=100_000, desc="EMDE", unit="ex", unit_scale=True, leave=False, file=log) as bar:
        for _ in range(100_000):
            bar.update(1)
    out = log.getvalue()
    assert "\r" not in out
    lines = out.splitlines()
    assert len(lines) == 2 and out.endswith("\n"), out
    assert lines[0].startswith("EMDE:   0%") and lines[1].startswith("EMDE: 100%") and "100k/100k" in lines[1]


def test_a_log_file_gets_one_line_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models.progress, "LOG_INTERVAL_S", 0.05)
    log = io.StringIO()
    bar = progress_bar(total=6, desc="fit", file=log)
    for _ in range(6):
        time.sleep(0.06)
        bar.update(1)
        bar.set_postfix_str("stage")  # a refresh between two intervals writes nothing
        bar.set_postfix_str("stage")
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert 7 <= len(lines) <= 8, lines  # the first, one per update, the last (repeating the sixth when it was quick)
    assert [line.split("|")[0] for line in lines[:2]] == ["fit:   0%", "fit:  17%"]
    assert lines[-1].startswith("fit: 100%") and "6/6" in lines[-1]


def test_a_disabled_bar_writes_nothing() -> None:
    log = io.StringIO()
    with progress_bar(total=3, disable=True, file=log) as bar:
        bar.update(3)
    assert log.getvalue() == ""


def test_a_terminal_keeps_tqdm_redrawing_in_place() -> None:
    term = _Terminal()
    with progress_bar(total=3, desc="fit", file=term) as bar:
        bar.update(3)
    assert isinstance(bar, tqdm) and "\rfit: 100%" in term.getvalue()


def test_the_docstring_example_runs() -> None:
    result = doctest.testmod(models.progress, raise_on_error=True)
    assert result.attempted > 0 and result.failed == 0


def test_the_rankers_boosting_bar_in_a_log_is_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """The fusion's LightGBM bar (models/hybrid.py), to stderr as captured (no terminal), as the trainer wrote
    it into trainer.log."""
    from models.hybrid import _boosting_bar

    bar, advance = _boosting_bar(500, "ranker")
    for i in range(500):
        advance(SimpleNamespace(iteration=i, begin_iteration=0))
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err, err[:500]
    assert len(err.splitlines()) == 2 and err.splitlines()[-1].startswith("ranker: 100%"), err


def test_the_fusions_query_bar_in_a_log_is_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """The fusion's query bar stage by stage (models/hybrid.py), to stderr as captured (no terminal)."""
    from models.hybrid import _StagedBar

    staged = _StagedBar(20_000, "candidates", ["emde", "knn", "features"])
    for _ in range(100):
        staged.chunk(200)
        for _ in range(3):
            staged.stage_done()
    staged.close()
    err = capsys.readouterr().err
    assert "\r" not in err, err[:500]
    assert len(err.splitlines()) == 2 and err.splitlines()[-1].startswith("candidates: 100%"), err
