"""The trainer's gate: bad challengers are rejected with a reason, a better one is promoted, rollback is live.

The lake is written directly (``LakePartition``) from a synthetic shop; models are the fast
ones (``pop``, ``covisit``) through ``models.registry``.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import _register, app
from models.base import InteractionLog
from operators.lake.schema import events_table
from operators.lake.store import LakePartition
from operators.model_registry import read_card, read_runs, rollback
from operators.model_version import ModelWatcher, latest_version_path
from operators.settings import Settings
from operators.trainer import run_once
from simulators.shop import SyntheticShop


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    shop = SyntheticShop(n_items=400, n_users=300, seed=4)
    events = shop.history(40000, rate_per_s=2.0)  # ~5.5 simulated hours
    for p in range(2):
        rows = [(p, k, e) for k, e in enumerate(e for e in events if zlib.crc32(e.user_id.encode()) % 2 == p)]
        LakePartition(root, "events", p).append(events_table(rows), len(rows))
    return root


def _settings(lake, tmp_path) -> Settings:
    return Settings(stream={"model_dir": tmp_path / "models"}, lake={"lake_dir": lake},
                    trainer={"window_days": 1.0, "min_events": 500},
                    gate={"holdout_hours": 1.0, "margin": 0.02, "min_queries": 100, "max_queries": 5000})


def shuffled(il: InteractionLog) -> InteractionLog:
    """The items of the log permuted at random: no co-visitation left."""
    return replace(il, item_idx=np.random.default_rng(0).permutation(il.item_idx))


def truncated(il: InteractionLog) -> InteractionLog:
    """The first 3 % of the sessions only."""
    keep = il.session_idx < max(1, il.n_sessions // 33)
    return replace(il, session_idx=il.session_idx[keep], item_idx=il.item_idx[keep], ts=il.ts[keep],
                   event_type=il.event_type[keep] if il.event_type is not None else None)


def test_gate_rejects_bad_challengers_promotes_better_and_rolls_back(lake, tmp_path):
    s = _settings(lake, tmp_path)
    model_dir = s.stream.model_dir
    first = run_once(s, model="pop")
    assert first["verdict"] == "promoted" and first["reason"] == "no champion was serving"
    pop_version = first["challenger"]

    better = run_once(s, model="covisit")
    assert better["verdict"] == "promoted", better
    assert better["champion"] == pop_version and better["metrics"]["challenger"] > 1.02 * better["metrics"]["champion"]
    champion = better["challenger"]
    assert latest_version_path(model_dir).name == champion

    for transform in (shuffled, truncated):
        bad = run_once(s, model="covisit", transform=transform)
        assert bad["verdict"] == "rejected", bad
        assert bad["metrics"]["challenger"] < 0.8 * bad["metrics"]["champion"], bad
        assert latest_version_path(model_dir).name == champion  # the champion keeps serving
        card = read_card(model_dir / bad["challenger"])
        assert card["gate"]["verdict"] == "rejected" and "does not beat the champion" in card["gate"]["reason"]
        assert card["gate"]["transform"] == transform.__name__ and card["gate"]["champion_version"] == champion
        assert card["counts"]["events"] > 0 and card["window"]["end"] and card["code_version"]
    assert [r["verdict"] for r in read_runs(model_dir)] == ["promoted", "promoted", "rejected", "rejected"]

    watcher = ModelWatcher(model_dir)  # what the flow and the API use
    assert watcher.current().version == champion
    t0 = time.monotonic()
    assert rollback(model_dir) == pop_version
    while watcher.current().version != pop_version:
        assert time.monotonic() - t0 < 5.0, "rollback not picked up"
        time.sleep(0.05)
    assert time.monotonic() - t0 <= 2.5


def test_a_champion_saved_by_an_older_version_is_replaced_not_a_failed_run_forever(lake, tmp_path):
    """After an upgrade that changed a model's saved format, the serving champion cannot be loaded
    by anything: the trainer promotes its challenger (saying why) instead of failing every run."""
    s = _settings(lake, tmp_path)
    old = run_once(s, model="pop")["challenger"]
    meta = s.stream.model_dir / old / "model" / "params.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "version": -1}))  # an older format
    run = run_once(s, model="covisit")
    assert run["verdict"] == "promoted" and "cannot be read by this version" in run["reason"], run
    assert run["champion"] == old and run["metrics"]["champion"] is None
    assert latest_version_path(s.stream.model_dir).name == run["challenger"]
    card = read_card(s.stream.model_dir / run["challenger"])
    assert "version must be" in card["gate"]["champion_unreadable"]


def test_the_watcher_does_not_reload_a_broken_version_at_every_check(lake, tmp_path, monkeypatch):
    """A version that cannot be loaded is logged and tried again after 30 s, not every 2 s (a log
    line with a traceback per check); a newly promoted one is loaded at the next check."""
    import operators.model_version as mv

    s = _settings(lake, tmp_path)
    broken = run_once(s, model="pop")["challenger"]
    meta = s.stream.model_dir / broken / "model" / "params.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "version": -1}))
    calls: list[str] = []
    real = mv.load_version

    def counted(path):
        calls.append(path.name)
        return real(path)

    monkeypatch.setattr(mv, "load_version", counted)
    clock = [1000.0]
    monkeypatch.setattr(mv, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    watcher = ModelWatcher(s.stream.model_dir, check_every_s=2.0)
    for _ in range(10):  # 20 s of checks
        assert watcher.current() is None
        clock[0] += 2.0
    assert calls == [broken]
    assert watcher.load_error is not None and broken in watcher.load_error and "ModelFormatError" in watcher.load_error
    clock[0] += 12.0  # 32 s after the failure: tried again
    assert watcher.current() is None and calls == [broken, broken]
    good = run_once(s, model="covisit")["challenger"]  # promoted: the champion cannot be read
    clock[0] += 2.0
    assert watcher.current().version == good and calls[-1] == good and watcher.load_error is None


def test_models_cli(lake, tmp_path, monkeypatch):
    s = _settings(lake, tmp_path)
    monkeypatch.setenv("FUSIONREC_STREAM__MODEL_DIR", str(s.stream.model_dir))
    _register()
    none = CliRunner().invoke(app, ["models", "list"])  # says where it looked (a new user's run kept them elsewhere)
    assert none.exit_code == 0 and f"no model versions under {s.stream.model_dir}" in none.output
    a = run_once(s, model="pop")["challenger"]
    b = run_once(s, model="covisit")["challenger"]
    _register()
    runner = CliRunner()
    out = runner.invoke(app, ["models", "list"])
    assert out.exit_code == 0 and f"* {b}" in out.output and f"  {a}" in out.output
    card = json.loads(runner.invoke(app, ["models", "show"]).output)
    assert card["version"] == b and card["gate"]["verdict"] == "promoted"
    assert runner.invoke(app, ["models", "rollback"]).exit_code == 0
    assert latest_version_path(s.stream.model_dir).name == a
    assert runner.invoke(app, ["models", "promote", b]).exit_code == 0
    assert latest_version_path(s.stream.model_dir).name == b
    assert runner.invoke(app, ["models", "promote", "nope"]).exit_code != 0


def test_a_version_cut_short_by_a_crash_is_no_version(tmp_path, monkeypatch):
    """``kill -9`` after ``write_version`` wrote the manifest, before its rename: ``.tmp-<v>`` was listed as
    version ``<v>`` (which promote and show refuse), and rollback chose it and failed with a traceback."""
    import shutil

    from operators.model_registry import list_versions
    from operators.training import train_model

    s = Settings(stream={"model_dir": tmp_path / "models"})
    path = train_model(SyntheticShop(n_items=200, n_users=50, seed=1).history(3000), s, "covisit")
    cut = "20000101T000000000000Z-0ld0ld"  # older than the real version: the rollback target by name
    shutil.copytree(path, path.with_name(f".tmp-{cut}"))
    manifest = path.with_name(f".tmp-{cut}") / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": cut}))
    assert [v["version"] for v in list_versions(s.stream.model_dir)] == [path.name]
    monkeypatch.setenv("FUSIONREC_STREAM__MODEL_DIR", str(s.stream.model_dir))
    _register()
    out = CliRunner().invoke(app, ["models", "rollback"])
    assert out.exit_code == 2 and "no earlier version" in " ".join(out.output.replace("│", " ").split()), out.output


def test_train_from_the_lake_cli(lake, tmp_path, monkeypatch):
    model_dir = tmp_path / "models"
    monkeypatch.setenv("FUSIONREC_STREAM__MODEL_DIR", str(model_dir))
    _register()
    out = CliRunner().invoke(app, ["train", "--lake", str(lake), "--window", "2h", "--model", "covisit"])
    assert out.exit_code == 0, out.output
    card = read_card(latest_version_path(model_dir))
    w = card["window"]
    assert w["end_ts"] - w["start_ts"] == pytest.approx(7200.0)
    assert 0 < card["counts"]["events"] < 40000 and card["counts"]["items"] > 100 and card["model_name"] == "covisit"
    bad = CliRunner().invoke(app, ["train", "--lake", str(tmp_path / "empty"), "--window", "2h"])
    assert bad.exit_code == 2 and "archive" in " ".join(bad.output.split())


@pytest.mark.parametrize("window", ["100000d", "1e400"])
def test_a_window_longer_than_the_lake_trains_on_the_whole_lake(lake, tmp_path, monkeypatch, window):
    """It failed with 'year -711 is out of range' (the card's start before year 1) or, for an infinite window,
    read nothing ('no interactions': a start of -inf matched no date partition)."""
    from operators.lake.read import lake_time_range

    model_dir = tmp_path / "models"
    monkeypatch.setenv("FUSIONREC_STREAM__MODEL_DIR", str(model_dir))
    _register()
    out = CliRunner().invoke(app, ["train", "--lake", str(lake), "--window", window, "--model", "covisit"])
    assert out.exit_code == 0, out.output
    card = read_card(latest_version_path(model_dir))
    assert card["window"]["start_ts"] == lake_time_range(lake)[0]
    assert card["counts"]["events"] == sum(1 for _ in SyntheticShop(n_items=400, n_users=300, seed=4)
                                           .history(40000, rate_per_s=2.0) if _.type != "search")


def test_every_version_has_a_card(tmp_path):
    from operators.training import train_model

    s = Settings(stream={"model_dir": tmp_path / "models"})
    events = SyntheticShop(n_items=200, n_users=50, seed=1).history(3000)
    path = train_model(events, s, "covisit")
    card = read_card(path)
    assert latest_version_path(s.stream.model_dir) == path
    assert card["source"] == "events" and card["counts"]["interactions"] > 0 and card["code_version"]
    assert card["window"]["start_ts"] == min(e.ts for e in events if e.type != "search")


def test_side_data_takes_the_catalog_as_the_api_does():
    """A record that deletes itself, one the catalog rule rejects (a nested vector, a string ``deleted``) or one
    that is not an object gives no side data; ``"deleted": false`` is no attribute word."""
    from operators.lake.training import side_data

    catalog = {"live": json.dumps({"item_id": "live", "title": "a", "deleted": False, "vector": [1.0, 0.0]}),
               "gone": json.dumps({"item_id": "gone", "title": "b", "deleted": True, "vector": [0.0, 1.0]}),
               "nested": json.dumps({"item_id": "nested", "title": "c", "vector": [[1.0], [0.0]]}),
               "flag": json.dumps({"item_id": "flag", "title": "d", "deleted": "true"}),
               "list": "[1, 2]"}
    side = side_data(catalog, ["live", "gone", "nested", "flag", "list"])
    assert side["title"] == ["a", "", "", "", ""]
    assert "deleted" not in side["attributes"][0]
    assert side["vector"][1].tolist() == [True, False, False, False, False]


def test_lake_training_gives_catalog_side_data_to_emde(tmp_path):
    """EMDE trained from the lake reads titles, attributes and vectors of the catalog as of the window's end."""
    from operators.lake.schema import catalog_table
    from operators.lake.training import side_data, train_from_lake
    from operators.model_version import load_version

    shop = SyntheticShop(n_items=200, n_users=80, seed=3)
    events = shop.history(4000, rate_per_s=1.0)
    lake = tmp_path / "lake"
    LakePartition(lake, "events", 0).append(events_table([(0, k, e) for k, e in enumerate(events)]), len(events))
    items = shop.catalog()
    msgs = [(0, k, events[0].ts, it["item_id"].encode(), json.dumps(it).encode()) for k, it in enumerate(items)]
    LakePartition(lake, "catalog", 0).append(catalog_table(msgs), len(msgs))
    ids = [it["item_id"] for it in items[:3]] + ["unknown"]
    side = side_data({it["item_id"]: json.dumps(it) for it in items}, ids)
    assert side["title"][:3] == [it["title"] for it in items[:3]] and side["title"][3] == ""
    assert f"category {items[0]['category']}" in side["attributes"][0] and "vector" not in side["attributes"][0]
    assert side["vector"][0].shape == (4, len(items[0]["vector"])) and side["vector"][1].tolist() == [1, 1, 1, 0]

    s = Settings(stream={"model_dir": tmp_path / "models"})
    path = train_from_lake(s, 30 * 86400.0, "emde", lake_dir=lake, cleora_dim=0,
                           modalities="title=text:8x32,attributes=text:8x32,vector=dense:8x32",
                           views=("session", "last"), hidden=64, epochs=1, progress=False)
    v = load_version(path)
    assert {m.name for m in v.model.modality_specs_} == {"title", "attributes", "vector"}
    assert read_card(path)["counts"]["catalog_items"] == len(items)
