"""`fusionrec run`'s first model version: the defaults, but one GRU network and the EMDE safety stop."""

from __future__ import annotations

from flows.commands.platform import _train_params
from models.hybrid import DEFAULT_LISTS, SessionFusion


def test_the_first_fusion_trains_one_gru_network_and_otherwise_the_default_lists() -> None:
    params = _train_params("fusion", 90.0)
    assert params["emde"] == {"max_train_seconds": 90.0}
    lists = params["knn"]
    assert list(lists) == list(DEFAULT_LISTS)
    assert lists["gru4rec"] == {**DEFAULT_LISTS["gru4rec"], "n_models": 1}
    assert DEFAULT_LISTS["gru4rec"]["n_models"] == 3  # the defaults themselves are not changed
    assert {k: v for k, v in lists.items() if k != "gru4rec"} == {k: dict(v) for k, v in DEFAULT_LISTS.items()
                                                                 if k != "gru4rec"}
    assert SessionFusion(**params)._knn_params()["gru4rec"]["n_models"] == 1
    assert _train_params("emde", 5.0) == {"max_train_seconds": 5.0}
    assert _train_params("covisit", 5.0) == {}
