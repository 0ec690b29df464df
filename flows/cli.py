"""The ``fusionrec`` command: one subcommand per piece, each startable alone.

Commands are small functions in the modules of ``flows/commands/``, named after what they start;
this file only registers them, so importing it does no work (not even importing typer: ``app`` is
built on first use, so ``main`` sees a Ctrl-C from the moment the console script has imported it).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flows.stop import STOP_REQUESTED, deferred_interrupts, handle_stop_signals

if TYPE_CHECKING:
    import typer

__all__ = ["app", "main"]  # noqa: F822 - app is built on first use by __getattr__

_STOPPED_BY_CTRL_C = ("run", "broker")
"""Commands that run until Ctrl-C: for them it is the normal stop (exit status 0), from the first moment."""

_app: typer.Typer | None = None


def __getattr__(name: str) -> typer.Typer:
    """``app``, the typer application every ``flows.commands`` module adds its commands to (built once)."""
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        import typer

        _app = typer.Typer(no_args_is_help=True, add_completion=False,
                           help="fusionrec: real-time multi-modal recommendations.")
    return _app


def main() -> None:
    """Console-script entry point. A configuration error (``fusionrec.toml`` or a ``FUSIONREC_*``
    variable: wrong type, unknown key, a missing or unparsable file, a non-JSON list) is one clear
    message and exit status 2, not a traceback. So is a Ctrl-C that no command handles itself (e.g.
    while the commands are still being loaded): ``fusionrec: interrupted``, exit status 130, or 0
    for the commands that run until Ctrl-C (``run``, ``broker``)."""
    handle_stop_signals((signal.SIGINT,))  # a Ctrl-C from the first moment is marked (flows/stop.py)
    try:
        _main()
    except KeyboardInterrupt:
        _interrupted()
    except Exception:
        # A Ctrl-C that lands inside a C extension's import (numba's ``_dispatcher`` importing
        # ``_devicearray``) comes out as an ImportError: after a stop signal, any error is its debris.
        if not STOP_REQUESTED.is_set():
            raise
        _interrupted()
    except SystemExit as exc:
        if STOP_REQUESTED.is_set() and sys.argv[1:2] and sys.argv[1] in _STOPPED_BY_CTRL_C:
            _exit_after_stop(exc.code)
        raise


def _interrupted() -> None:
    """Report a Ctrl-C that no command handled and exit: status 0 for ``run`` and ``broker``, else 130.

    Raises:
        SystemExit: always.
    """
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    print("fusionrec: interrupted", file=sys.stderr)
    raise SystemExit(0 if command in _STOPPED_BY_CTRL_C else 130) from None


def _exit_after_stop(code: object) -> None:
    """End a process that a command stopped cleanly after Ctrl-C (its children and broker are stopped).

    Without it, a KeyboardInterrupt that crossed a C extension's embedded ``PyRun_*`` call on its way to the
    command's handler leaves CPython's "unhandled Ctrl-C" mark set, and the interpreter then kills itself
    with SIGINT at exit (status -2 / 130 instead of 0); and worker threads still scoring would delay the exit.
    Streams and log handlers are flushed first."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or a broken pipe: nothing more to say
            pass
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def _main() -> None:
    from pydantic import ValidationError

    from operators.settings import ConfigError

    with deferred_interrupts():  # a Ctrl-C inside a C extension's import would print its traceback
        _register()
    import typer

    app = __getattr__("app")
    try:
        app()
    except ConfigError as exc:
        typer.echo(f"fusionrec: configuration error: {exc}", err=True)
        raise SystemExit(2) from None
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        typer.echo(f"fusionrec: configuration error ({exc.error_count()}):", err=True)
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "settings"
            typer.echo(f"  {where}: {_config_message(err, where)}", err=True)
        raise SystemExit(2) from None


def _config_message(err: Mapping[str, Any], where: str) -> str:
    """A settings error in the config file's terms: a section given as a value is "must be a table ([api])",
    not pydantic's "a valid dictionary or instance of ApiSettings"."""
    from operators.parse import json_type

    if err["type"] in ("model_type", "dict_type"):
        return f"must be a table ([{where}] in the config file); got {json_type(err.get('input'))}"
    return str(err["msg"]).removeprefix("Value error, ")


def _register() -> None:
    """Import the command modules of ``flows.commands`` (each adds its commands to ``app``)."""
    import importlib
    import pkgutil

    import flows.commands

    for mod in pkgutil.iter_modules(flows.commands.__path__):
        importlib.import_module(f"flows.commands.{mod.name}")


if __name__ == "__main__":  # python -m flows.cli: use the importable module's app, not __main__'s
    import flows.cli

    flows.cli.main()
