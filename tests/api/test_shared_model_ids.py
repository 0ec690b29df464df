"""A model version's item ids shared with the catalog index (issue 14's memory: ~56 MB of strings at 1M items)."""

from __future__ import annotations

import importlib
import json

from api.catalog import CatalogView
from api.iql import CatalogIndex
from operators.model_version import ModelWatcher, load_version
from operators.settings import Settings
from operators.training import train_model
from simulators.shop import SyntheticShop


def test_the_current_version_holds_the_catalog_strings_once_a_catalog_is_in_use(tmp_path):
    s = Settings(stream={"model_dir": tmp_path / "models"})
    shop = SyntheticShop(n_items=120, n_users=40, seed=2)
    path = train_model(shop.history(2000), s, "covisit")
    own = json.loads((path / "item_ids.json").read_text())
    catalog = [(i + "#")[:-1] for i in own[:-5]] + ["only-in-catalog"]  # equal strings, other objects; 5 ids unknown
    view = CatalogView()
    watcher = ModelWatcher(s.stream.model_dir, check_every_s=0.0, intern_ids=view.intern_ids)
    plain = load_version(path)

    early = watcher.current()  # no catalog yet: the version keeps its strings, and is asked again later
    assert early is not None and early.item_ids == own and not watcher._interned

    view.index = CatalogIndex.build([{"item_id": i} for i in catalog])
    held = {id(x) for x in view.index.item_ids(range(view.index.capacity))}
    assert not any(id(x) in held for x in plain.item_ids)  # loaded alone: strings of its own
    later = watcher.current()
    assert later is early and watcher._interned  # the same version, its ids replaced in place
    assert later.item_ids == plain.item_ids == own
    assert [id(x) in held for x in later.item_ids] == [True] * (len(own) - 5) + [False] * 5
    assert dict(later.item_index) == dict(plain.item_index) == {x: k for k, x in enumerate(own)}
    assert view.index.intern_ids([]) == 0 and view.index.intern_ids(["nope"]) == 0


def test_the_ids_are_interned_before_the_model_loads(tmp_path, monkeypatch):
    """Issue 14: with a catalog in use, a version's ids become the catalog's strings as soon as they are read, so its
    own copies (~56 MB at 1M items) are freed before the model's arrays load, not beside them."""
    s = Settings(stream={"model_dir": tmp_path / "models"})
    path = train_model(SyntheticShop(n_items=120, n_users=40, seed=2).history(2000), s, "covisit")
    own = json.loads((path / "item_ids.json").read_text())
    view = CatalogView()
    view.index = CatalogIndex.build([{"item_id": (i + "#")[:-1]} for i in own])
    held = {id(x) for x in view.index.item_ids(range(view.index.capacity))}
    manifest = json.loads((path / "manifest.json").read_text())
    module, _, qualname = manifest["model_class"].partition(":")
    cls = getattr(importlib.import_module(module), qualname)
    calls: list[str] = []
    monkeypatch.setattr(cls, "load", _recording(cls.load, calls, "model"))
    watcher = ModelWatcher(s.stream.model_dir, intern_ids=_recording(view.intern_ids, calls, "ids"))
    version = watcher.current()
    assert calls == ["ids", "model"] and watcher._interned
    assert version is not None and version.item_ids == own and all(id(x) in held for x in version.item_ids)
    assert dict(version.item_index) == {x: k for k, x in enumerate(own)}


def _recording(fn, calls: list[str], name: str):
    def wrapped(*args, **kwargs):
        calls.append(name)
        return fn(*args, **kwargs)
    return wrapped
