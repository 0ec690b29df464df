"""``fusionrec archive``: the archiving dataflow that writes ``events`` and ``catalog`` into the lake."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from flows.cli import app
from flows.commands.platform import require_broker
from operators.settings import Settings


@app.command("archive")
def archive_cmd(workers: Annotated[int, typer.Option("-w", "--workers", help="Worker threads", min=1)] = 1) -> None:
    """Archive events and the catalog's change log to Parquet under lake.lake_dir, exactly once
    (same as ``python -m bytewax.run flows.archive.dataflow:flow -w N``); a broker that does not answer within 10 s
    is one line naming it (exit status 1)."""
    require_broker(Settings().kafka.brokers, "archive")  # else a Rust panic and five chained tracebacks
    os.execv(sys.executable, [sys.executable, "-m", "bytewax.run", "flows.archive.dataflow:flow", "-w", str(workers)])
