"""The ``flow`` attribute ``bytewax.run <module>:flow`` reads, built on first access (importing a dataflow
module does no work: tests build their flows from their own settings)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from bytewax.dataflow import Dataflow

from operators.settings import Settings

__all__ = ["lazy_flow"]


def lazy_flow(build_flow: Callable[[Settings], Dataflow]) -> Callable[[str], Dataflow]:
    """A module ``__getattr__`` (PEP 562) whose ``flow`` is ``build_flow(Settings())``, with INFO logging to stderr
    (what ``bytewax.run`` gives a dataflow's logs).

    Usage, at the end of a dataflow module: ``__getattr__ = lazy_flow(build_flow)``.

    Raises
    ------
    AttributeError
        From the returned function, for any other name.
    """
    def module_getattr(name: str) -> Dataflow:
        if name == "flow":
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
            return build_flow(Settings())
        raise AttributeError(name)
    return module_getattr
