"""``api.app.load_model_then_build_vectors``: at start, the vector index's first lists are laid out before the catalog
is swapped in, and the model version loads after it (issue 14: the two at once held ~1.1 GB per worker at 1M items)."""

from __future__ import annotations

import asyncio
import json
import threading
from types import SimpleNamespace

import numpy as np
import orjson

from api.app import load_model_then_build_vectors
from api.catalog import CatalogView
from operators.model_version import ModelWatcher
from operators.settings import ApiSettings, Settings
from operators.training import train_model
from simulators.shop import SyntheticShop


class _RecordingGate(threading.Event):
    """A gate that records, when it is opened, what ``seen`` returns then."""

    def __init__(self, seen: object) -> None:
        super().__init__()
        self.seen, self.at_open = seen, []

    def set(self) -> None:
        self.at_open.append(self.seen())  # type: ignore[operator]
        super().set()


def _catalog(ids: list[str]) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    return [(i, orjson.dumps({"item_id": i, "vector": rng.normal(size=4).tolist()})) for i in ids]


def test_the_first_lists_are_laid_out_before_the_swap_and_the_version_loads_after_it(tmp_path):
    s = Settings(stream={"model_dir": tmp_path / "models"})
    path = train_model(SyntheticShop(n_items=120, n_users=40, seed=2).history(2000), s, "covisit")
    ids = json.loads((path / "item_ids.json").read_text())
    view = CatalogView.from_settings(ApiSettings(vector_exact_below=50), initial_load=True)
    watcher = ModelWatcher(s.stream.model_dir, intern_ids=view.intern_ids)
    gate = view.vector_build_gate = _RecordingGate(lambda: (watcher._current is not None, watcher._interned))
    svc = SimpleNamespace(catalog_view=view, models=watcher)

    async def start() -> None:
        task = asyncio.create_task(load_model_then_build_vectors(svc, poll_s=0.01))  # type: ignore[arg-type]
        await asyncio.sleep(0.2)
        assert not gate.is_set() and watcher._current is None  # the version waits for the catalog
        view.load_initial(_catalog(ids), orjson.loads)  # as the reader thread does once caught up
        queued = view._queue[-1][1][1]  # the built vector index, not swapped in yet: its first lists are laid out
        assert queued._build is None and queued.approximate and queued._buf is None  # the row matrix already dropped
        assert watcher._current is None  # ... before the version loads
        await asyncio.wait_for(task, 30)

    asyncio.run(start())
    assert gate.at_open == [(True, True)]  # opened once the version was loaded, its ids the catalog's strings
    assert view.vectors.approximate and len(view.vectors) == len(ids)


def test_without_a_version_the_lists_are_built_once_the_catalog_is(tmp_path):
    view = CatalogView.from_settings(ApiSettings(vector_exact_below=50), initial_load=True)
    svc = SimpleNamespace(catalog_view=view, models=ModelWatcher(tmp_path / "no-models"))

    async def start() -> None:
        task = asyncio.create_task(load_model_then_build_vectors(svc, poll_s=0.01))  # type: ignore[arg-type]
        view.load_initial(_catalog([f"i{k}" for k in range(80)]), orjson.loads)
        await asyncio.wait_for(task, 30)

    asyncio.run(start())
    assert view.vector_build_gate is not None and view.vector_build_gate.is_set()
    assert view.vectors.wait_built(60) and view.vectors.approximate and svc.models.current() is None


def test_a_cancelled_start_opens_the_gate_and_no_gate_means_nothing_to_order():
    view = CatalogView.from_settings(ApiSettings(), initial_load=True)  # never built
    svc = SimpleNamespace(catalog_view=view, models=None)

    async def start() -> None:
        task = asyncio.create_task(load_model_then_build_vectors(svc, poll_s=0.01))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(start())
    assert view.vector_build_gate is not None and view.vector_build_gate.is_set()
    off = CatalogView.from_settings(ApiSettings(vector_build_waits_for_model_s=0), initial_load=True)
    assert off.vector_build_gate is None
    asyncio.run(load_model_then_build_vectors(SimpleNamespace(catalog_view=off, models=None)))  # type: ignore[arg-type]
