"""Route to whichever registered model wins validation on the shop's own log (issue 11, user top-N).

No model wins every task: on MovieLens-style user top-N (returning customers, "what next
from everything they did") a closed-form item-item model (EASE) beats EMDE, while on
anonymous sessions the EMDE-kNN fusion wins. :class:`ValidationRouter` fits each candidate
on the training log minus a validation cut, scores them there with the evaluation harness,
refits the winner on the whole log and serves it. Nothing of the test set is used.

The validation cut follows the task: ``task="user"`` holds out the newest 20 % of every
history (:func:`models.data.holdout_user_futures`, the MovieLens protocol, metric P@20 with
seen items excluded); ``task="next"`` holds out the latest sessions
(:func:`models.data.holdout_sessions`, metric HR@20).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray

from models.base import Histories, InteractionLog
from models.errors import ModelFormatError, NotFittedError
from models.persistence import construct_saved, load_model_dir, save_model_dir

__all__ = ["ValidationRouter"]

logger = logging.getLogger(__name__)

_TASKS = {"user": "P@20", "next": "HR@20"}


class ValidationRouter:
    """Serve the candidate with the best validation metric.

    Parameters
    ----------
    candidates : mapping of registry name -> parameter overrides
        The models to compare (``models.registry.REGISTRY`` names); at least one.
    task : {"user", "next"}, default "user"
        The validation cut and its metric: ``"user"`` (newest ``holdout_frac`` of every history,
        P@20, seen items excluded) or ``"next"`` (latest ``holdout_frac`` of sessions, HR@20).
    holdout_frac : float, default 0.2
        Fraction held out, in (0, 1).
    max_queries : int, default 5000
        Validation queries scored per candidate (a seeded sample when there are more).
    random_state : int
        Seed of the query sample.

    Attributes
    ----------
    chosen_ : str
        Registry name of the winner.
    validation_ : dict of str -> dict
        Each candidate's validation metric, train seconds, or the error that excluded it.
    model_ : Recommender
        The winner, refitted on the whole log.

    Raises (from ``fit``)
    ---------------------
    ValueError
        On an unknown candidate or task, or when every candidate fails to fit (the messages are listed).
    """

    def __init__(self, candidates: Mapping[str, Mapping[str, Any]] | None = None, task: str = "user",
                 holdout_frac: float = 0.2, max_queries: int = 5000, random_state: int = 0) -> None:
        self.candidates = candidates
        self.task = task
        self.holdout_frac = holdout_frac
        self.max_queries = max_queries
        self.random_state = random_state

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments as stored (scikit-learn's rule)."""
        return {k: getattr(self, k) for k in ("candidates", "task", "holdout_frac", "max_queries", "random_state")}

    def _candidates(self) -> dict[str, dict[str, Any]]:
        from models.registry import REGISTRY
        spec = self.candidates if self.candidates is not None else {"ease": {}, "emde_user": {}}
        names = ", ".join(n for n in REGISTRY if n != "router")
        if not isinstance(spec, Mapping) or not all(isinstance(p, Mapping) for p in spec.values()):
            raise ValueError(f"candidates must map a registered model name to its parameters, e.g. "
                             f'{{"ease": {{}}, "emde_user": {{"epochs": 5}}}}; got {spec!r}')
        if not spec:
            raise ValueError(f"candidates: at least one registered model ({names})")
        for name in spec:
            if name not in REGISTRY or name == "router":
                raise ValueError(f"candidates: unknown model {name!r}; registered: {names}")
        return {name: dict(p) for name, p in spec.items()}

    def _check_params(self) -> None:
        if self.task not in _TASKS:
            raise ValueError(f"task must be one of {sorted(_TASKS)}; got {self.task!r}")
        if isinstance(self.holdout_frac, bool) or not isinstance(self.holdout_frac, int | float) \
                or not 0.0 < self.holdout_frac < 1.0:
            raise ValueError(f"holdout_frac must be a number in (0, 1); got {self.holdout_frac!r}")
        if isinstance(self.max_queries, bool) or not isinstance(self.max_queries, int) or self.max_queries < 1:
            raise ValueError(f"max_queries must be an integer >= 1; got {self.max_queries!r}")

    def fit(self, log: InteractionLog) -> Self:
        """Fit every candidate on ``log`` minus the validation cut, pick the best, refit it on ``log``.

        A candidate whose fit raises ``ValueError`` or ``MemoryError`` (e.g. EASE on a catalogue
        too large for its dense inverse) is excluded and the reason kept in ``validation_``; a
        candidate with a parameter its model does not take is an error, not an exclusion.

        Raises
        ------
        ValueError
            On a bad parameter (of the router or of a candidate), or when every candidate fails to fit.
        """
        from models.data.encoding import Dataset
        from models.data.validation import holdout_sessions, holdout_user_futures
        from models.evaluate import fit_and_evaluate
        from models.registry import create_model

        self._check_params()
        candidates = self._candidates()
        models = {name: create_model(name, **params) for name, params in candidates.items()}  # bad params raise here
        if self.task == "user":
            inner, task = holdout_user_futures(log, frac=self.holdout_frac, name="router")
        else:
            inner, task, _ = holdout_sessions(log, frac=self.holdout_frac, name="router")
        valid = Dataset(name="router/valid", train=inner, test=task, exclude_seen=self.task == "user")
        metric = _TASKS[self.task]
        results: dict[str, dict[str, Any]] = {}
        for name, model in models.items():
            try:
                r = fit_and_evaluate(name, model, valid, max_queries=self.max_queries, seed=self.random_state)
            except (ValueError, MemoryError) as exc:  # it cannot fit this log (e.g. EASE's max_items)
                logger.warning("router: %s excluded (%s)", name, exc)
                results[name] = {"error": str(exc)}
                continue
            results[name] = {metric: r.metrics[metric], "train_s": round(r.train_s, 3), "n_queries": r.n_queries}
            logger.info("router: %s %s=%.4f on %d validation queries", name, metric, r.metrics[metric], r.n_queries)
        scored = [(v[metric], -i, name) for i, (name, v) in enumerate(results.items()) if metric in v]
        if not scored:
            raise ValueError("router: every candidate failed: " + "; ".join(f"{k}: {v['error']}" for k, v in results.items()))
        chosen = max(scored)[2]  # best metric; ties go to the first listed
        self.model_ = create_model(chosen, **candidates[chosen]).fit(log)
        self.chosen_, self.validation_, self.metric_ = chosen, results, metric
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(self)

    def recommend(self, histories: Histories, n: int = 20, *, exclude_seen: bool = False
                  ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """The winner's top-``n`` (see :class:`models.base.Recommender`).

        Raises
        ------
        NotFittedError
            Before ``fit``.
        """
        self._check_fitted()
        return self.model_.recommend(histories, n, exclude_seen=exclude_seen)

    def similar_items(self, item_idx: NDArray[np.int32], n: int = 20
                      ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """The winner's similar items."""
        self._check_fitted()
        return self.model_.similar_items(item_idx, n)

    def save(self, path: Path | str) -> None:
        """``params.json`` (parameters, the winner's name, every candidate's validation result; no
        arrays of its own) and the winner's own directory under ``path / "model"``."""
        self._check_fitted()
        path = Path(path)
        save_model_dir(path, type(self).__name__, {**self.get_params(), "chosen": self.chosen_,
                                                   "metric": self.metric_, "validation": self.validation_}, {})
        self.model_.save(path / "model")

    @classmethod
    def load(cls, path: Path | str) -> Self:
        """Read a directory written by :meth:`save`.

        Raises
        ------
        ModelFormatError
            If a file is missing or unreadable, or the winner is not a registered model.
        """
        from models.registry import model_class

        path = Path(path)
        params, _ = load_model_dir(path, cls.__name__)
        chosen, metric, validation = params.pop("chosen"), params.pop("metric"), params.pop("validation")
        try:
            winner_cls = model_class(str(chosen))
        except ValueError as exc:
            raise ModelFormatError(f"{path / 'params.json'}: {exc}") from exc
        model = construct_saved(cls, params, path)
        model.model_, model.chosen_ = winner_cls.load(path / "model"), str(chosen)
        model.validation_, model.metric_ = validation, str(metric)  # type: ignore[assignment]
        return model
