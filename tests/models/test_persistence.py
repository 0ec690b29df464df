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


@pytest.mark.parametrize("name", ["ease", "slist"])
@pytest.mark.parametrize("broken", ["truncated params", "params of another model", "truncated weights"])
def test_ease_and_slist_directories_that_are_broken_are_format_errors(tmp_path: Path, name: str, broken: str) -> None:
    """EASE and SLIST write their own files (weights.npy): a truncated params.json was a JSONDecodeError, another
    model's a KeyError, a truncated weights.npy a bare ValueError; each is a ModelFormatError naming the directory."""
    from models.registry import create_model

    log = InteractionLog(session_idx=np.array([0, 0, 1, 1, 2, 2], np.int32),
                         item_idx=np.array([0, 1, 1, 2, 0, 2], np.int32), ts=np.arange(6.0), n_items=3)
    model = create_model(name).fit(log)
    model.save(tmp_path / name)
    cls = type(model)
    cls.load(tmp_path / name)  # the intact directory loads
    if broken == "truncated params":
        (tmp_path / name / "params.json").write_text('{"lambda_": 1')
    elif broken == "params of another model":
        (tmp_path / name / "params.json").write_text('{"format": "fusionrec.slist", "alpha": 1}' if name == "slist"
                                                     else '{"lambda_": 1.0}')
    else:
        data = (tmp_path / name / "weights.npy").read_bytes()
        (tmp_path / name / "weights.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match=str(tmp_path / name)):
        cls.load(tmp_path / name)


@pytest.mark.parametrize("name", ["pop", "covisit", "itemknn", "stan", "vsknn", "emde", "gru4rec"])
def test_an_unknown_or_ill_typed_saved_parameter_is_a_format_error(tmp_path: Path, name: str) -> None:
    """A parameter hand-added to params.json (or one of the wrong kind) was a TypeError from the model's
    constructor; it is a ModelFormatError naming params.json, so the trainer sets such a champion aside."""
    import json

    from models.registry import create_model

    log = InteractionLog(session_idx=np.repeat(np.arange(6, dtype=np.int32), 3),
                         item_idx=np.array([0, 1, 2, 1, 2, 3, 2, 3, 0, 3, 0, 1, 0, 2, 3, 1, 3, 0], np.int32),
                         ts=np.arange(18.0), n_items=4)
    fast = {"emde": {"epochs": 1}, "gru4rec": {"epochs": 1, "d": 8}}.get(name, {})
    model = create_model(name, **fast).fit(log)
    model.save(tmp_path / name)
    type(model).load(tmp_path / name)  # the intact directory loads
    meta_path = tmp_path / name / "params.json"
    meta = json.loads(meta_path.read_text())
    params = meta["params"] if isinstance(meta.get("params"), dict) else meta  # covisit writes its params flat
    params["bogus"] = 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="params.json"):
        type(model).load(tmp_path / name)
