"""The typer sub-commands of the ``fusionrec`` CLI, one module per command group.

Each module adds its commands to ``flows.cli.app`` when imported; ``flows/cli.py`` wires them
(it imports every module of this package before running the app). Importing this package alone
does no work.
"""
