"""``fusionrec trainer`` (train, gate, promote on a schedule) and ``fusionrec models list|show|promote|rollback``."""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from flows.cli import app
from operators.settings import Settings

models_app = typer.Typer(no_args_is_help=True, help="The model registry: versions, cards, promotion, rollback.")
app.add_typer(models_app, name="models")


def _settings() -> Settings:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return Settings()


def _duration(text: str, option: str) -> float:
    """``text`` (``6h``, ``10m``, ``45s``, ``1d`` or plain seconds) in seconds, positive and at most
    ``threading.TIMEOUT_MAX`` (~292 years: the longest wait ``threading.Event.wait`` takes).

    Raises
    ------
    typer.BadParameter
        If it is not such a duration (exit status 2, the message names ``option``).
    """
    from operators.lake.read import parse_window

    try:
        seconds = parse_window(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds > threading.TIMEOUT_MAX:  # a longer wait is Event.wait's OverflowError
        raise typer.BadParameter(f"must be a positive duration like 6h, 10m, 45s or 1d, at most "
                                 f"{threading.TIMEOUT_MAX:.0f} s; got {text!r}", param_hint=option)
    return seconds


@app.command("trainer")
def trainer_cmd(
    every: Annotated[str | None, typer.Option(help="Interval between runs, e.g. 6h, 10m (default trainer.every_s)")
                     ] = None,
    once: Annotated[bool, typer.Option(help="One run, then exit")] = False,
    delay: Annotated[str, typer.Option(help="Wait this long before the first run, e.g. 4m (0 = at once)")] = "0",
    model: Annotated[str | None, typer.Option(help="Challenger model (default trainer.model)")] = None,
) -> None:
    """Every interval: train a challenger on the lake, gate it against the serving model, promote or keep."""
    from models.registry import REGISTRY
    from operators.trainer import run_once

    every_given = _duration(every, "--every") if every is not None else None
    delay_s = 0.0 if delay.strip() in ("0", "") else _duration(delay, "--delay")
    if once and every_given is not None:  # else silently ignored: one run has no interval
        raise typer.BadParameter(f"is the interval between runs; --once runs once (got --every {every!r})",
                                 param_hint="--every")
    s = _settings()
    challenger = model or s.trainer.model
    if challenger not in REGISTRY:  # before the delay: not the first run's error hours later, nor a skip saying nothing
        # (``[trainer] model`` is checked when the settings load: a configuration error)
        raise typer.BadParameter(f"unknown model {challenger!r}; registered: {', '.join(REGISTRY)}",
                                 param_hint="--model")
    if s.trainer.cpus is not None:  # first: threads and processes started later inherit the CPUs
        from operators.scheduling import confine_to_cpus

        confine_to_cpus(s.trainer.cpus)
    if s.trainer.autogroup_nice is not None:  # a background job: the flow and the API keep the CPU they need
        from operators.scheduling import set_own_session_nice

        set_own_session_nice(s.trainer.autogroup_nice, "trainer.autogroup_nice")
    every_s = every_given if every_given is not None else s.trainer.every_s
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if delay_s and stop.wait(delay_s):
        return
    while True:
        run = run_once(s, model=model)
        typer.echo(f"trainer: {run['verdict']}: {run['reason']}")
        if once or stop.wait(every_s):
            return


def _model_dir(s: Settings) -> Path:
    """``[stream] model_dir``, refused (usage error) when it exists but is no directory."""
    model_dir = Path(s.stream.model_dir)
    if model_dir.exists() and not model_dir.is_dir():
        raise typer.BadParameter(f"{model_dir} is not a directory", param_hint="[stream] model_dir")
    return model_dir


@models_app.command("list")
def models_list() -> None:
    """Versions, oldest first: serving marker, model, data window end, gate verdict and metric."""
    from operators.model_registry import list_versions

    s = _settings()
    versions = list_versions(_model_dir(s))
    if not versions:  # say where it looked: `fusionrec run` keeps its versions under its own --var
        typer.echo(f"no model versions under {s.stream.model_dir} ([stream] model_dir; `fusionrec run` keeps its "
                   "versions under var/run/models: FUSIONREC_STREAM__MODEL_DIR=var/run/models fusionrec models list)",
                   err=True)
    for v in versions:
        gate = v.get("gate") or {}
        metric = gate.get("metric")
        score = (gate.get("challenger") or {}).get(metric) if metric else None
        typer.echo(f"{'*' if v['serving'] else ' '} {v['version']}  {v.get('model_name', '?'):<8} "
                   f"window end {(v.get('window') or {}).get('end', '-'):<20} {gate.get('verdict', '-'):<9} "
                   f"{f'{metric}={score:.4f}' if score is not None else ''}")


@models_app.command("show")
def models_show(version: Annotated[str | None, typer.Argument(help="Version (default: the serving one)")] = None) -> None:
    """The model card of a version (JSON)."""
    from operators.model_registry import read_card
    from operators.model_version import latest_version_path

    s = _settings()
    if version is not None and (Path(version).name != version or version in ("", ".", "..")):
        raise typer.BadParameter(f"{version!r}: not a version name (one directory under {s.stream.model_dir})",
                                 param_hint="VERSION")
    path = _model_dir(s) / version if version else latest_version_path(_model_dir(s))
    if path is None or not (path / "manifest.json").exists():
        raise typer.BadParameter(f"no version {version or 'serving'} under {s.stream.model_dir}", param_hint="VERSION")
    typer.echo(json.dumps(read_card(path), indent=2))


@models_app.command("promote")
def models_promote(version: Annotated[str, typer.Argument(help="Version to serve")],
                   reason: Annotated[str, typer.Option(help="Recorded in promotions.jsonl")] = "by hand") -> None:
    """Serve VERSION (the flow and the API follow LATEST within ~2 s, without a restart)."""
    from operators.model_registry import promote

    s = _settings()
    try:
        promote(s.stream.model_dir, version, reason)
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc), param_hint="VERSION") from exc
    typer.echo(f"serving {version}")


@models_app.command("rollback")
def models_rollback(reason: Annotated[str, typer.Option(help="Recorded in promotions.jsonl")] = "by hand") -> None:
    """Serve again the version that served before the current one."""
    from operators.model_registry import rollback

    s = _settings()
    try:
        version = rollback(s.stream.model_dir, reason)
    except LookupError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"rolled back: serving {version}")
