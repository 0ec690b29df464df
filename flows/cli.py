"""The ``fusionrec`` command: one subcommand per piece, each startable alone.

Commands are small functions in modules named after what they start; this file only
registers them, so importing it does no work.
"""

from __future__ import annotations

import typer

__all__ = ["app", "main"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help="fusionrec: real-time multi-modal recommendations.")


def main() -> None:
    """Console-script entry point. A configuration error (``fusionrec.toml`` or a ``FUSIONREC_*``
    variable: wrong type, unknown key, a missing or unparsable file, a non-JSON list) is one clear
    message and exit status 2, not a traceback."""
    from pydantic import ValidationError

    from operators.settings import ConfigError

    _register()
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
            typer.echo(f"  {where}: {err['msg'].removeprefix('Value error, ')}", err=True)
        raise SystemExit(2) from None


def _register() -> None:
    """Import command modules (each adds its commands to ``app``)."""
    import importlib
    import pkgutil

    import flows

    for mod in pkgutil.iter_modules(flows.__path__):
        if mod.name.startswith("cmd_"):
            importlib.import_module(f"flows.{mod.name}")


if __name__ == "__main__":  # python -m flows.cli: use the importable module's app, not __main__'s
    import flows.cli

    flows.cli.main()
