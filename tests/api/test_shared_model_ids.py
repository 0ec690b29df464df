"""A model version's item ids shared with the catalog index (issue 14's memory: ~56 MB of strings at 1M items)."""

from __future__ import annotations

import json

from api.iql import CatalogIndex
from operators.model_version import ModelWatcher, load_version
from operators.settings import Settings
from operators.training import train_model
from simulators.shop import SyntheticShop


def test_a_loaded_version_holds_the_catalog_strings(tmp_path):
    s = Settings(stream={"model_dir": tmp_path / "models"})
    shop = SyntheticShop(n_items=120, n_users=40, seed=2)
    path = train_model(shop.history(2000), s, "covisit")
    own = json.loads((path / "item_ids.json").read_text())
    catalog = [(i + "#")[:-1] for i in own[:-5]] + ["only-in-catalog"]  # equal strings, other objects; 5 ids unknown
    index = CatalogIndex.build([{"item_id": i} for i in catalog])
    held = {id(x) for x in index.item_ids(range(index.capacity))}

    plain = load_version(path)
    assert not any(id(x) in held for x in plain.item_ids)  # loaded alone: strings of its own
    shared = ModelWatcher(s.stream.model_dir, share_ids=index.shared_ids).current()
    assert shared is not None and shared.item_ids == plain.item_ids == own
    assert [id(x) in held for x in shared.item_ids] == [True] * (len(own) - 5) + [False] * 5
    assert dict(shared.item_index) == dict(plain.item_index) == {x: k for k, x in enumerate(own)}
    assert index.shared_ids([]) == [] and index.shared_ids(["nope"]) == ["nope"]
