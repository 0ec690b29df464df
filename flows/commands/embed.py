"""``fusionrec embed``: build a Cleora graph from a TSV hyperedge file or a JSONL event log and embed it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import typer

from flows.cli import app
from models.cleora import GraphInputError, build_graph, embed, read_tsv, rows_from_events
from models.progress import progress_bar
from operators.ids import BadId, canonical_id
from operators.parse import json_type

__all__ = ["embed_command", "read_events"]


def read_events(path: Path) -> Iterator[dict]:
    """Events from a JSON-lines file, one object per line (blank lines skipped), their ids canonical.

    Raises
    ------
    typer.BadParameter
        On a line that is not a JSON object, or with an id the id rule refuses (the message gives
        the file and line number).
    """
    with open(path, encoding="utf-8") as fh:
        for no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError as exc:
                raise typer.BadParameter(f"{path}:{no}: not valid JSON ({exc.msg})") from exc
            if not isinstance(ev, dict):
                raise typer.BadParameter(f"{path}:{no}: must be a JSON object; got {json_type(ev)}")
            try:  # the one id rule (operators/ids.py), as training and the stream apply it: 12345.0 is 12345
                for field in ("user_id", "session_id", "item_id"):
                    if ev.get(field) is not None:
                        ev[field] = canonical_id(ev[field])
                if isinstance(ev.get("items"), list):
                    ev["items"] = [{**line, "item_id": canonical_id(line.get("item_id"))} if isinstance(line, dict)
                                   else canonical_id(line) for line in ev["items"]]
            except BadId as exc:
                raise typer.BadParameter(f"{path}:{no}: {exc}") from exc
            yield ev


@app.command("embed")
def embed_command(
    input_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="TSV hyperedges or JSONL events."),
    out: Path = typer.Option(..., "--out", help="Directory for the embedding store (replaced if present)."),
    columns: str = typer.Option("complex::reflexive::node", help="Cleora column spec of a TSV input."),
    events: bool = typer.Option(False, "--events", help="Input is a JSON-lines event log."),
    group_by: str = typer.Option("session_id", help="Events: user_id, session_id or event (baskets)."),
    event_type: list[str] = typer.Option([], "--type", help="Events: keep these types (repeatable)."),
    shape: str = typer.Option("clique", help="Events: clique (item–item) or bipartite (group–item)."),
    dim: int = typer.Option(256, min=1, max=65536),
    iterations: int = typer.Option(4, min=1),
    seed: int = typer.Option(0, min=0),
    markov: str = typer.Option("left", help="left or symmetric."),
    max_hyperedge_size: int = typer.Option(256, min=2),
    threads: int | None = typer.Option(None, min=1, help="Kernel threads (default: all cores)."),
    name: str | None = typer.Option(None, help="Graph name in the manifest (default: input file stem)."),
) -> None:
    """Embed a graph with Cleora and save vectors, ids and a manifest as memory-mappable files.

    Options are checked before the input is read: a ``--markov``, ``--group-by`` or ``--shape`` that is none of
    its values, an events option (``--group-by``, ``--type``, ``--shape``) without ``--events`` or ``--columns``
    with it, or an ``--out`` that is a file, is a usage error (exit status 2), never silently ignored.
    """
    _check_options(out, columns, events, group_by, event_type, shape, markov)
    try:
        _run(input_path, out, columns, events, group_by, event_type, shape, dim, iterations, seed, markov,
             max_hyperedge_size, threads, name)
    except (GraphInputError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except OSError as exc:  # --out under /proc, read-only, under a file: one line, not a traceback
        typer.echo(f"error: --out {out}: cannot write the embedding store: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None


_CHOICES = {"--markov": ("left", "symmetric"), "--group-by": ("user_id", "session_id", "event"),
            "--shape": ("clique", "bipartite")}


def _check_options(out: Path, columns: str, events: bool, group_by: str, event_type: list[str], shape: str,
                   markov: str) -> None:
    """Refuse (``typer.BadParameter``) a value that is none of its choices, and an option its input kind ignores."""
    for hint, value in (("--markov", markov), ("--group-by", group_by), ("--shape", shape)):
        if value not in _CHOICES[hint]:
            raise typer.BadParameter(f"must be one of {', '.join(_CHOICES[hint])}; got {value!r}", param_hint=hint)
    if events and columns != "complex::reflexive::node":
        raise typer.BadParameter("applies to a TSV input only; with --events the columns follow --shape",
                                 param_hint="--columns")
    if not events:
        given = [hint for hint, is_set in (("--group-by", group_by != "session_id"), ("--type", bool(event_type)),
                                           ("--shape", shape != "clique")) if is_set]
        if given:
            raise typer.BadParameter("applies only with --events (a JSON-lines event log)", param_hint=given[0])
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} is a file; give a directory (replaced if present)", param_hint="--out")


def _run(input_path: Path, out: Path, columns: str, events: bool, group_by: str, event_type: list[str],
         shape: str, dim: int, iterations: int, seed: int, markov: str, max_hyperedge_size: int,
         threads: int | None, name: str | None) -> None:
    """The command's body (separate so bad input becomes one error line and exit code 2)."""
    if events:
        evs = progress_bar(read_events(input_path), desc="read events", unit=" ev")
        rows, spec = rows_from_events(evs, group_by=group_by, types=set(event_type) or None, shape=shape)
    else:
        rows, spec = progress_bar(read_tsv(input_path), desc="read rows", unit=" rows"), columns
    graph = build_graph(rows, spec, max_hyperedge_size=max_hyperedge_size)
    typer.echo(f"graph: {graph.n_nodes:,} nodes, {graph.nnz:,} non-zeros, {graph.n_rows:,} rows "
               f"({graph.n_dropped:,} dropped, {graph.n_trimmed:,} trimmed), columns '{spec}'")
    with progress_bar(total=iterations, desc=f"propagate dim {dim}", unit=" it") as bar:
        store = embed(graph, dim, iterations, seed=seed, markov=markov, n_threads=threads, keep_basis=True,
                      name=name or input_path.stem, on_iteration=lambda _: bar.update(1))
    path = store.save(out)
    typer.echo(f"saved {len(store):,} vectors of dim {store.dim} to {path}")
    typer.echo(json.dumps(store.manifest, sort_keys=True))
