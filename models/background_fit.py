"""Fit registered models in a child process while this one fits something else.

``SessionFusion.fit`` fits EMDE and its list models (V-STAN, STAN, GRU4Rec) on the same log, twice. They
need not wait for each other: the list models fit in one spawned child process while EMDE fits here, on the
other core. Both fit exactly as they would in sequence (the same code, seeds and torch thread counts), so the
fitted models, and every score they give, are bit-identical; only the wall time changes
(``tests/models/test_hybrid.py``).
"""

from __future__ import annotations

import multiprocessing
import pickle
import traceback
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from models.base import InteractionLog
from models.errors import ModelFitError

__all__ = ["ModelsFit", "fit_models"]


def fit_models(specs: Mapping[str, Mapping[str, Any]], log: InteractionLog) -> list[Any]:
    """Create each registered model of ``specs`` (name -> parameters, in order) and fit it on ``log``.

    Raises
    ------
    KeyError
        If a name is not registered (``models.registry``).
    ValueError, models.errors.ModelFitError
        As the models' own ``fit``.
    """
    from models.registry import create_model

    return [create_model(name, **dict(params)).fit(log) for name, params in specs.items()]


def _child(conn: Connection, specs: dict[str, dict[str, Any]], log: InteractionLog) -> None:
    """The child process: :func:`fit_models`, then ``(True, pickled models)`` or ``(False, error, traceback)``."""
    import torch

    torch.set_num_threads(1)  # the parent fits on the other core; a model sets its own count when it has one
    try:
        conn.send_bytes(pickle.dumps((True, fit_models(specs, log)), protocol=pickle.HIGHEST_PROTOCOL))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent, which re-raises it
        try:
            payload = pickle.dumps((False, exc, traceback.format_exc()))
        except Exception:  # noqa: BLE001 - an exception that does not pickle goes back as its text
            payload = pickle.dumps((False, ModelFitError(repr(exc)), traceback.format_exc()))
        conn.send_bytes(payload)
    finally:
        conn.close()


class ModelsFit:
    """Models being fitted: in a spawned child process (``background=True``) or, lazily, in this one.

    ``result()`` returns the fitted models in the order of ``specs`` and re-raises a fit's error (or a
    ``ModelFitError`` if the child died without answering). The child is spawned, never forked: the
    parent's torch and OpenMP threads must not be copied mid-state.

    Parameters
    ----------
    specs : mapping of registered model name -> parameters
    log : InteractionLog
    background : bool
        Fit in a child process now; otherwise in this process when ``result()`` is first called.
    """

    def __init__(self, specs: Mapping[str, Mapping[str, Any]], log: InteractionLog, *, background: bool) -> None:
        self._specs = {name: dict(p) for name, p in specs.items()}
        self._log = log
        self._models: list[Any] | None = None
        self._proc: Any = None
        self._conn: Connection | None = None
        if background:
            ctx = multiprocessing.get_context("spawn")
            self._conn, child_conn = ctx.Pipe(duplex=False)
            self._proc = ctx.Process(target=_child, args=(child_conn, self._specs, log), name="fusion-list-fit",
                                     daemon=True)
            self._proc.start()
            child_conn.close()

    def result(self) -> list[Any]:
        """The fitted models, in the order of ``specs`` (waits for the child, or fits them here).

        Raises
        ------
        ModelFitError
            If the child process died without answering (its exit code in the message).
        Exception
            A fit's own error, re-raised here.
        """
        if self._models is None:
            if self._conn is None:
                self._models = fit_models(self._specs, self._log)
            else:
                try:
                    self._models = self._receive()
                finally:
                    self.close()
        return self._models

    def _receive(self) -> list[Any]:
        assert self._conn is not None and self._proc is not None
        while not self._conn.poll(1.0):
            if not self._proc.is_alive():
                if self._conn.poll(0):
                    break
                raise ModelFitError(f"the list models' fit process died (exit code {self._proc.exitcode})")
        try:
            answer = pickle.loads(self._conn.recv_bytes())
        except EOFError:
            self._proc.join(5)
            raise ModelFitError(f"the list models' fit process died (exit code {self._proc.exitcode})") from None
        if not answer[0]:
            raise answer[1] from ModelFitError(f"in the list models' fit process:\n{answer[2]}")
        return answer[1]

    def close(self) -> None:
        """Stop the child process (if any), ending a fit in progress."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.terminate()
            self._proc.join()
            self._proc = None
