"""``models.threads``: one kernel thread for small batches, in torch, numba and a model that picks its own count."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

from models.base import Histories
from models.gru4rec import GRU4Rec, _torch_threads
from models.threads import SMALL_BATCH_ROWS, kernel_threads, small_batch_threads, thread_cap
from tests.models.test_gru4rec import FAST, _walks


def _counts() -> tuple[int, int, int | None]:
    return torch.get_num_threads(), numba.get_num_threads(), thread_cap()


@pytest.fixture
def two_threads() -> None:
    old = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(2)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    yield
    torch.set_num_threads(old[0])
    numba.set_num_threads(old[1])


def test_the_cap_holds_inside_and_is_restored_after(two_threads: None) -> None:
    before = _counts()
    with kernel_threads(1):
        assert _counts() == (1, 1, 1)
        with kernel_threads(3):  # a nested wider cap never widens the outer one
            assert _counts() == (1, 1, 1)
        assert _counts() == (1, 1, 1)
    assert _counts() == before
    with pytest.raises(RuntimeError), kernel_threads(1):
        raise RuntimeError("the block failed")
    assert _counts() == before
    with pytest.raises(ValueError, match="n must be >= 1"), kernel_threads(0):
        pass


def test_a_model_that_sets_its_own_count_keeps_under_the_cap(two_threads: None) -> None:
    """GRU4Rec scores on ``score_threads`` (2): inside ``kernel_threads(1)`` it gets one."""
    with _torch_threads(2):
        assert torch.get_num_threads() == 2
    with kernel_threads(1), _torch_threads(2):
        assert torch.get_num_threads() == 1


def test_only_small_batches_are_capped(two_threads: None) -> None:
    with small_batch_threads(1):
        assert _counts() == (1, 1, 1)
    with small_batch_threads(SMALL_BATCH_ROWS - 1):
        assert thread_cap() == 1
    with small_batch_threads(SMALL_BATCH_ROWS):
        assert _counts()[2] is None and torch.get_num_threads() == 2


def test_one_thread_gives_the_same_lists(two_threads: None) -> None:
    """The cap is speed only: GRU4Rec's one-prefix lists (a product torch splits over two threads) are the same."""
    log = _walks(300, n_items=5_000, seed=1)
    model = GRU4Rec(**{**FAST, "d": 128, "epochs": 1}, score_threads=2).fit(log)
    prefixes = [Histories(indptr=np.array([0, 3], np.int64), items=log.item_idx[i:i + 3]) for i in range(0, 90, 3)]
    free = [model.recommend(h, 20) for h in prefixes]
    with kernel_threads(1):
        capped = [model.recommend(h, 20) for h in prefixes]
    for (ids_a, sc_a), (ids_b, sc_b) in zip(free, capped, strict=True):
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_allclose(sc_a, sc_b, rtol=1e-5, atol=0)
