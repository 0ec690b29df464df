"""Embedding store (mmap round trip, format errors) and the ``fusionrec embed`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from models.cleora import EmbeddingStore, StoreFormatError, build_graph, embed, embed_new_nodes


@pytest.fixture
def store() -> EmbeddingStore:
    return embed(build_graph([["u1", "a b c"], ["u2", "b c"], ["u3", "c d é"]], "user complex::item"), 16, 3,
                 keep_basis=True, name="tiny")


def test_save_load_maps_without_copy(tmp_path, store):
    path = store.save(tmp_path / "s")
    back = EmbeddingStore.load(path)
    assert isinstance(back.vectors, np.memmap) and isinstance(back.basis, np.memmap)
    assert back.labels == store.labels and "é" in back.labels
    assert np.array_equal(np.asarray(back.vectors), store.vectors)
    m = back.manifest
    assert (m["graph"], m["dim"], m["iterations"], m["seed"], m["n_embedded"]) == ("tiny", 16, 3, 0, len(store))
    assert m["columns"] == "user complex::item" and "created" in m
    assert np.array_equal(embed_new_nodes([["a", "d"]], back), embed_new_nodes([["a", "d"]], store))


def test_load_errors_name_the_problem(tmp_path, store):
    path = store.save(tmp_path / "s")
    (path / "label_offsets.npy").unlink()
    with pytest.raises(StoreFormatError, match="missing label_offsets.npy"):
        EmbeddingStore.load(path)
    path = store.save(tmp_path / "t")
    man = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**man, "format_version": 99}))
    with pytest.raises(StoreFormatError, match="format_version must be 1; got 99"):
        EmbeddingStore.load(path)
    (path / "manifest.json").write_text(json.dumps({**man, "dim": 8}))
    with pytest.raises(StoreFormatError, match=r"expected float32 \(n, dim=8\)"):
        EmbeddingStore.load(path)


def test_store_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="labels: 2 labels for 3 vector rows"):
        EmbeddingStore(["a", "b"], np.zeros((3, 4), np.float32), {})


def test_embed_rejects_bad_parameters(store):
    g = build_graph([["a", "b"]])
    for kw, match in [({"dim": 0}, "dim: must be in"), ({"n_iter": 0}, "n_iter: must be >= 1"),
                      ({"seed": -1}, "seed: must be >= 0")]:
        with pytest.raises(ValueError, match=match):
            embed(g, **{"dim": 8, "n_iter": 2, **kw})


def test_cli_embed_tsv_and_events(tmp_path):
    import typer

    from flows.commands.embed import embed_command

    app = typer.Typer()  # a private app: other engineers' commands are not imported here
    app.command("embed")(embed_command)
    app.command("version")(lambda: None)

    tsv = tmp_path / "g.tsv"
    tsv.write_text("u1\ta b c\nu2\tb c\n\nu3\tc d\n")
    res = CliRunner().invoke(app, ["embed", str(tsv), "--out", str(tmp_path / "o"), "--columns",
                                   "user complex::item", "--dim", "8", "--iterations", "3"])
    assert res.exit_code == 0, res.output
    assert EmbeddingStore.load(tmp_path / "o").manifest["n_embedded"] == 7
    ev = tmp_path / "ev.jsonl"
    ev.write_text('{"user_id": "1", "session_id": "s", "item_id": "a", "type": "view", "ts": 1}\n'
                  '{"user_id": "1", "session_id": "s", "item_id": "b", "type": "view", "ts": 2}\n')
    res = CliRunner().invoke(app, ["embed", str(ev), "--events", "--out", str(tmp_path / "e"), "--dim", "8"])
    assert res.exit_code == 0, res.output
    assert sorted(EmbeddingStore.load(tmp_path / "e").labels) == ["a", "b"]
    # ids follow the one id rule, as in training: 12345, 12345.0 and "12345.0" are one node
    ev.write_text('{"user_id": 1, "session_id": "s", "item_id": 12345, "type": "view", "ts": 1}\n'
                  '{"user_id": "1", "session_id": "s", "item_id": 12345.0, "type": "view", "ts": 2}\n'
                  '{"user_id": "1.0", "session_id": "s", "items": ["12345.0", {"item_id": "b"}], "type": "purchase", "ts": 3}\n')
    res = CliRunner().invoke(app, ["embed", str(ev), "--events", "--out", str(tmp_path / "c"), "--dim", "8"])
    assert res.exit_code == 0, res.output
    assert sorted(EmbeddingStore.load(tmp_path / "c").labels) == ["12345", "b"]
    res = CliRunner().invoke(app, ["embed", str(tsv), "--out", str(tmp_path / "x"), "--columns", "a b c"])
    assert res.exit_code == 2 and "columns: at most two columns" in res.output
    # a line that is JSON but no object is named in JSON's terms, not Python's
    ev.write_text('{"user_id": "1", "session_id": "s", "item_id": "a", "type": "view", "ts": 1}\n[1, 2]\n')
    res = CliRunner().invoke(app, ["embed", str(ev), "--events", "--out", str(tmp_path / "j"), "--dim", "8"])
    assert res.exit_code == 2 and "must be a JSON object; got array" in " ".join(res.output.split()), res.output


@pytest.mark.parametrize(("args", "hint", "says"), [
    (["--markov", "nope"], "--markov", "must be one of left, symmetric; got 'nope'"),
    (["--events", "--group-by", "nope"], "--group-by", "must be one of user_id, session_id, event; got 'nope'"),
    (["--events", "--shape", "star"], "--shape", "must be one of clique, bipartite; got 'star'"),
    (["--shape", "bipartite"], "--shape", "applies only with --events"),
    (["--type", "view"], "--type", "applies only with --events"),
    (["--group-by", "user_id"], "--group-by", "applies only with --events"),
    (["--events", "--columns", "user complex::item"], "--columns", "applies to a TSV input only"),
    (["--out", "a-file"], "--out", "a-file is a file"),
])
def test_cli_embed_options_are_checked_before_the_input_is_read(tmp_path, monkeypatch, args, hint, says):
    """``--shape``, ``--type`` and ``--group-by`` without ``--events`` were silently ignored, ``--shape nope`` too;
    ``--markov nope`` failed after the graph was built; ``--out`` naming a file was a NotADirectoryError traceback."""
    import typer

    import flows.commands.embed
    from flows.commands.embed import embed_command

    def no_read(*a, **k):
        raise AssertionError("the input was read")

    app = typer.Typer()
    app.command("embed")(embed_command)
    app.command("version")(lambda: None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(flows.commands.embed, "_run", no_read)
    (tmp_path / "a-file").write_text("")
    (tmp_path / "g.tsv").write_text("u1\ta b c\n")
    res = CliRunner().invoke(app, ["embed", "g.tsv", "--out", "emb", *args])
    assert res.exit_code == 2, res.output
    flat = " ".join(res.output.replace("│", " ").split())
    assert f"Invalid value for {hint}: {says}" in flat, res.output


def test_cli_embed_to_an_out_it_cannot_write_is_one_line(tmp_path):
    import typer

    from flows.commands.embed import embed_command

    app = typer.Typer()
    app.command("embed")(embed_command)
    app.command("version")(lambda: None)
    tsv = tmp_path / "g.tsv"
    tsv.write_text("u1\ta b c\nu2\tb c\n")
    (tmp_path / "a-file").write_text("")
    for out, why in (("/proc/fusionrec-emb", "No such file or directory"), (tmp_path / "a-file" / "emb", "Not a directory")):
        res = CliRunner().invoke(app, ["embed", str(tsv), "--out", str(out), "--columns", "user complex::item", "--dim", "8"])
        assert res.exit_code == 2, res.output
        assert res.output.strip().splitlines()[-1] == f"error: --out {out}: cannot write the embedding store: {why}"
        assert "Traceback" not in res.output
