"""A saved model directory that is truncated or hand-broken fails to load with ``ModelFormatError``
naming the file (the trainer replaces an unreadable champion on that error), never a bare traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.base import InteractionLog
from models.errors import ModelFormatError
from models.popularity import Popularity


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    log = InteractionLog(session_idx=np.array([0, 0, 1, 1], np.int32), item_idx=np.array([0, 1, 1, 2], np.int32),
                         ts=np.arange(4.0), n_items=3)
    Popularity().fit(log).save(tmp_path / "pop")
    assert Popularity.load(tmp_path / "pop").scores_.shape == (3,)
    return tmp_path / "pop"


@pytest.mark.parametrize("text", ["", '{"class": "Popul', "[1, 2]", '{"class": "Popularity", "version": 1, '
                                                                          '"params": [1]}'])
def test_a_broken_params_json_is_a_format_error_naming_it(saved: Path, text: str) -> None:
    (saved / "params.json").write_text(text)
    with pytest.raises(ModelFormatError, match="params.json"):
        Popularity.load(saved)


def test_params_json_that_is_not_utf8_is_a_format_error(saved: Path) -> None:
    (saved / "params.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ModelFormatError, match="params.json: unreadable"):
        Popularity.load(saved)


def test_a_truncated_arrays_npz_is_a_format_error_naming_it(saved: Path) -> None:
    data = (saved / "arrays.npz").read_bytes()
    (saved / "arrays.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="arrays.npz: unreadable"):
        Popularity.load(saved)
