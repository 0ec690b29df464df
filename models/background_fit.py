"""Fit registered models in a child process while this one fits something else.

``SessionFusion.fit`` fits its list models (V-STAN, STAN, GRU4Rec) twice: on the log without its newest
sessions (for the ranker's examples) and on the whole log (to serve). The two fits do not depend on each
other, and GRU4Rec trains on one thread, so on two cores they can run side by side: the whole-log fit in a
child process, the other here. Both run exactly as they would in sequence (the same code, seeds and torch
thread counts), so the fitted models, and every score they give, are bit-identical; only the wall time
changes (``tests/models/test_background_fit.py``). Two one-thread GRU fits side by side each kept the speed of
one alone (bench/RESULTS.md, issue 11 session 26).

The child is a fresh interpreter (``python -m models.background_fit IN OUT PARENT_PID``), not a ``multiprocessing``
process: spawning would re-import the caller's ``__main__`` script, and forking would copy the parent's torch
and OpenMP threads mid-state. Input and output go through pickles in a private temporary directory.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from models.base import InteractionLog
from models.errors import ModelFitError

__all__ = ["ModelsFit", "fit_models"]

logger = logging.getLogger(__name__)
_ROOT = Path(__file__).resolve().parents[1]  # the folder holding the ``models`` package


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


class ModelsFit:
    """Models being fitted: in a child process (``background=True``) or, lazily, in this one.

    ``result()`` returns the fitted models in the order of ``specs`` and re-raises a fit's error (or a
    ``ModelFitError`` if the child died without answering). ``close()`` stops a child still running; use the
    object as a context manager so an error here never leaves one behind.

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
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        if background and not sys.executable:  # an embedded interpreter: nothing to start a child with
            logger.warning("no Python executable to fit the list models in a child process: fitting them here")
            background = False
        if background:
            self._dir = tempfile.TemporaryDirectory(prefix="fusionrec-fit-")
            src, self._out = Path(self._dir.name) / "in.pkl", Path(self._dir.name) / "out.pkl"
            self._err = Path(self._dir.name) / "stderr.txt"
            with open(src, "wb") as f:
                pickle.dump((self._specs, log, _threads()), f, protocol=pickle.HIGHEST_PROTOCOL)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
            with open(self._err, "wb") as err:  # its progress bars would garble this process's
                self._proc = subprocess.Popen([sys.executable, "-m", "models.background_fit", str(src), str(self._out),
                                               str(os.getpid())],
                                              env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err)

    def __enter__(self) -> ModelsFit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
            if self._proc is None:
                self._models = fit_models(self._specs, self._log)
            else:
                try:
                    self._models = self._receive()
                finally:
                    self.close()
        return self._models

    def _receive(self) -> list[Any]:
        assert self._proc is not None
        code = self._proc.wait()
        if not self._out.exists():
            tail = self._err.read_text(errors="replace")[-2000:]
            raise ModelFitError(f"the list models' fit process died without an answer (exit code {code}):\n{tail}")
        with open(self._out, "rb") as f:
            answer = pickle.load(f)
        if not answer[0]:
            raise answer[1] from ModelFitError(f"in the list models' fit process:\n{answer[2]}")
        return answer[1]

    def close(self) -> None:
        """Stop the child process (if any), ending a fit in progress, and remove its files."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _exit_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """End this process when its parent ``parent`` (a pid) is gone (``kill -9`` of the trainer): a daemon
    thread watches this process's parent pid, so an orphaned fit never runs on for minutes."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="fusionrec-fit-parent-watch", daemon=True).start()


def _main(src: str, out: str, parent: int) -> int:
    """The child: read ``(specs, log)`` from ``src``, fit, write ``(True, models)`` or
    ``(False, error, traceback)`` to ``out`` (through a temporary name, so a half-written answer is never read)."""
    import torch

    _exit_with_parent(parent)
    with open(src, "rb") as f:
        specs, log, threads = pickle.load(f)
    os.unlink(src)  # read: nothing of the log is left behind, whatever happens next
    torch.set_num_threads(threads)  # the parent's count: a model that sets none fits as it would there

    try:
        payload = pickle.dumps((True, fit_models(specs, log)), protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent, which re-raises it
        try:
            payload = pickle.dumps((False, exc, traceback.format_exc()))
        except Exception:  # noqa: BLE001 - an exception that does not pickle goes back as its text
            payload = pickle.dumps((False, ModelFitError(repr(exc)), traceback.format_exc()))
    tmp = out + ".part"
    with open(tmp, "wb") as f:
        f.write(payload)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
