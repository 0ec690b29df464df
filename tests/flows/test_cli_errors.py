"""Bad input to ``fusionrec eval`` / ``fusionrec catalog`` is one clear error and exit status 2, not a traceback."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flows.commands.eval  # noqa: F401  (registers the command)
import flows.commands.platform  # noqa: F401  (registers the command)
from flows.cli import app
from flows.commands.eval import summary_json
from models.evaluate import EvalReport

T0 = 1_400_000_000.0


@pytest.fixture()
def tiny_sessionrec(tmp_path: Path) -> Path:
    head = "SessionId\tItemId\tTime\n"
    train = [(1, "a", 0), (1, "b", 5), (2, "b", 10), (2, "c", 20), (3, "c", 40), (3, "a", 50)]
    test = [(10, "a", 100), (10, "b", 110), (10, "c", 130)]
    for name, rows in (("x_train_full.txt", train), ("x_test.txt", test)):
        (tmp_path / name).write_text(head + "".join(f"{s}\t{i}\t{T0 + t}\n" for s, i, t in rows))
    return tmp_path


def _fails(args: list[str], *expected: str) -> str:
    result = CliRunner().invoke(app, args)
    out = result.output
    assert result.exit_code == 2, out
    assert "Traceback" not in out and not isinstance(result.exception, TypeError | ValueError), out
    flat = " ".join(out.replace("│", " ").split())  # typer's usage-error box wraps long lines
    for text in expected:
        assert text in flat, out
    return out


def _eval(data: Path, *extra: str) -> list[str]:
    return ["eval", "--data", str(data), "--format", "sessionrec", *extra]


def test_eval_without_a_model_says_so(tiny_sessionrec: Path) -> None:
    _fails(_eval(tiny_sessionrec, "--models", ""), "error: models: none given")
    _fails(_eval(tiny_sessionrec, "--models", " , "), "error: models: none given")


def test_eval_hyper_parameter_of_the_wrong_type_names_model_and_parameter(tiny_sessionrec: Path,
                                                                          tmp_path: Path) -> None:
    _fails(_eval(tiny_sessionrec, "--models", "stan", "--set", "stan.k=abc"), "error: stan.k: expected int; got 'abc'")
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"stan": {"k": "many"}}))
    _fails(_eval(tiny_sessionrec, "--models", "stan", "--params-file", str(params)), "error: stan.k:", "'many'")
    # a value of the right type the model's own checks refuse
    _fails(_eval(tiny_sessionrec, "--models", "stan", "--set", "stan.k=0"), "error: stan:", "k: must be >= 1")
    _fails(_eval(tiny_sessionrec, "--models", "stan", "--set", "stan.lambda_spw=x"), "error: stan.lambda_spw:")


def test_eval_negative_seed_of_a_sequence_model_names_model_and_parameter(tiny_sessionrec: Path) -> None:
    """``--set seq_ensemble.random_state=-1`` passed the checks, the data was loaded, and fit died in numpy's seeding
    with a bare ``error: expected non-negative integer`` naming neither the model nor the parameter, and ``lr=NaN``
    with torch's ``Invalid learning rate: nan`` (trial 36)."""
    for name in ("gru4rec", "sasrec", "seq_ensemble"):
        _fails(_eval(tiny_sessionrec, "--models", name, "--set", f"{name}.random_state=-1"),
               f"error: {name}:", "random_state must be None or >= 0; got -1")
    for param, value in (("lr", "Infinity"), ("logq", "-Infinity")):
        _fails(_eval(tiny_sessionrec, "--models", "seq_ensemble", "--set", f"seq_ensemble.{param}={value}"),
               "error: seq_ensemble:", f"{param} must be a finite number")
    for param in ("lr", "sample_alpha"):  # NaN: refused for any model's float (registry), before the model's check
        _fails(_eval(tiny_sessionrec, "--models", "seq_ensemble", "--set", f"seq_ensemble.{param}=NaN"),
               f"error: seq_ensemble.{param}: expected a number; got NaN")


@pytest.mark.parametrize("param", ["stan.lambda_spw", "vstan.lambda_idf", "emde.lr", "ease.lambda_"])
def test_eval_nan_float_override_of_any_model_names_model_and_parameter(tiny_sessionrec: Path, param: str) -> None:
    """A NaN float hyper-parameter of any registered model is refused before the data is loaded (session 36's trial
    found it for the sequence models only; a bound check such as ``lr <= 0`` is False for NaN and passed it)."""
    name = param.split(".")[0]
    _fails(_eval(tiny_sessionrec, "--models", name, "--set", f"{param}=NaN"), f"error: {param}: expected a number; got NaN")


def test_eval_refuses_a_model_named_twice(tiny_sessionrec: Path) -> None:
    """``--models pop,pop`` fitted and scored pop twice: two table rows, one entry in the JSON line (trial 36)."""
    _fails(_eval(tiny_sessionrec, "--models", "pop,stan,pop"), "error: models: ['pop'] given more than once")


def test_eval_integer_override_beyond_64_bits_names_model_and_parameter(tiny_sessionrec: Path) -> None:
    """``--set gru4rec.max_len=10**23`` passed the checks and fit died with an OverflowError traceback (``d`` with a
    torch one; trial 36): an int override must fit in 64 bits."""
    huge = "100000000000000000000000"
    _fails(_eval(tiny_sessionrec, "--models", "gru4rec", "--set", f"gru4rec.max_len={huge}"),
           f"error: gru4rec.max_len: expected an int of at most 64 bits; got {huge}")
    _fails(_eval(tiny_sessionrec, "--models", "seq_ensemble", "--set", f"seq_ensemble.d=-{huge}"),
           "error: seq_ensemble.d: expected an int of at most 64 bits")


def test_eval_accepts_well_typed_overrides(tiny_sessionrec: Path) -> None:
    result = CliRunner().invoke(app, _eval(tiny_sessionrec, "--models", "stan", "--set", "stan.k=5",
                                           "--set", "stan.lambda_spw=null"))
    assert result.exit_code == 0, result.output
    json.loads(result.output.strip().splitlines()[-1])


@pytest.mark.parametrize("content", [b"\x00\x01garbage bytes", pickle.dumps([print])])
def test_eval_unreadable_srgnn_pickle_is_named(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "all_train_seq.txt").write_bytes(content)
    (tmp_path / "test.txt").write_bytes(pickle.dumps(([[1]], [1])))
    _fails(["eval", "--data", str(tmp_path), "--format", "srgnn", "--models", "pop"],
           f"error: cannot read {tmp_path / 'all_train_seq.txt'}:")


@pytest.mark.parametrize(("option", "value"), [("--max-queries", "-3"), ("--max-queries", "0"),
                                               ("--batch-size", "0")])
def test_eval_rejects_non_positive_counts_up_front(tiny_sessionrec: Path, option: str, value: str) -> None:
    _fails(_eval(tiny_sessionrec, "--models", "pop", option, value), option)


def test_summary_json_writes_an_undefined_metric_as_null() -> None:
    report = EvalReport("pop", 0, {"HR@20": math.nan, "MRR@20": math.nan}, train_s=0.1, score_s=0.0)
    line = json.loads(summary_json("d", [report]))  # strict JSON: NaN would not be written (allow_nan=False)
    assert line["models"]["pop"]["HR@20"] is None and line["models"]["pop"]["MRR@20"] is None


def test_catalog_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    _fails(["catalog", str(tmp_path / "nonexistent.jsonl")], "does not exist")


def test_train_on_a_file_without_one_valid_event_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's API examples leave out ``event_id`` / ``ts`` (the API fills them in); a training
    file needs them, and when no line has them the error names the first line's problem."""
    monkeypatch.chdir(tmp_path)
    events = tmp_path / "events.jsonl"
    events.write_text('{"type":"view","user_id":"u1","item_id":"i1"}\n{"type":"view","user_id":"u2","item_id":"i2"}\n')
    _fails(["train", "--events", str(events)], "no line is a valid event", "line 1: event_id: required")


@pytest.mark.parametrize("args", [["--every", "abc"], ["--every", "0"], ["--every", "-5m"], ["--every", "inf"],
                                  ["--delay", "xyz"], ["--delay", "-1h"],
                                  ["--delay", "1e300"], ["--delay", "99999999999d"], ["--every", "1e300s"]])
def test_trainer_bad_interval_names_the_option(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.commands.trainer  # noqa: F401  (registers the command)

    monkeypatch.chdir(tmp_path)
    _fails(["trainer", *args, "--once"], args[0], "positive duration", repr(args[1]))


@pytest.mark.parametrize("test_rows", [[(10, "a", 100), (11, "b", 110)], []])
def test_eval_of_a_test_split_without_queries_is_an_error(tiny_sessionrec: Path, test_rows: list) -> None:
    """Sessions of length 1 (or none at all) give no prefix to score: no table of nan."""
    (tiny_sessionrec / "x_test.txt").write_text(
        "SessionId\tItemId\tTime\n" + "".join(f"{s}\t{i}\t{T0 + t}\n" for s, i, t in test_rows))
    out = _fails(_eval(tiny_sessionrec, "--models", "pop"), f"error: the test split of {tiny_sessionrec} gives no queries")
    assert "nan" not in out and "inf" not in out


def test_eval_model_fit_error_names_the_model(tiny_sessionrec: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.errors import ModelFitError

    def fail(name: str, *args: object, **kwargs: object) -> EvalReport:
        raise ModelFitError("EMDE: the log gives 0 training examples; need >= 2")

    monkeypatch.setattr(flows.commands.eval, "fit_and_evaluate", fail)
    _fails(_eval(tiny_sessionrec, "--models", "emde"), "error: emde: cannot fit", "0 training examples")


def test_eval_emde_on_a_log_too_small_is_a_clean_error(tiny_sessionrec: Path) -> None:
    """The trial's repro without a stand-in: one training session of two events is one EMDE example."""
    (tiny_sessionrec / "x_train_full.txt").write_text(f"SessionId\tItemId\tTime\n1\ta\t{T0}\n1\tb\t{T0 + 5}\n")
    (tiny_sessionrec / "x_test.txt").write_text(f"SessionId\tItemId\tTime\n10\ta\t{T0 + 100}\n10\tb\t{T0 + 110}\n")
    _fails(_eval(tiny_sessionrec, "--models", "emde"), "error: emde: cannot fit", "training examples")


@pytest.mark.parametrize(("args", "expected"), [
    (["--model", "nosuch"], "--model: unknown model 'nosuch'; registered:"),
    (["--trainer-every", "abc"], "--trainer-every: must be a duration"),
    (["--history", "0"], "--history: must be >= 1"),
    (["--train-seconds", "0"], "--train-seconds: must be positive"),
    (["--replay", "nowhere.tsv"], "--replay: nowhere.tsv does not exist"),
    # --format was checked only with --replay: a bogus one, or one given alone, was silently ignored
    (["--format", "bogus"], "--format: must be one of sessionrec, srgnn, online_retail; got 'bogus'"),
    (["--format", "srgnn"], "--format: applies only with --replay PATH"),
    (["--replay", "nowhere.tsv", "--format", "bogus"], "--format: must be one of"),
])
def test_run_checks_its_options_before_deleting_or_starting_anything(
        args: list[str], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from operators.broker import free_port, port_in_use

    def no_child(*a: object, **k: object) -> None:
        raise AssertionError(f"a child was started: {a}")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "Popen", no_child)
    var = tmp_path / "run"
    for stale in ("state", "api", "lake", "serving"):  # the previous run's: deleted only once run starts
        (var / stale).mkdir(parents=True)
    port, api_port = free_port(), free_port()
    _fails(["run", "--port", str(port), "--api-port", str(api_port), "--var", str(var), *args], expected)
    assert all((var / stale).is_dir() for stale in ("state", "api", "lake", "serving"))
    assert not port_in_use(port) and not list(var.glob("*.log"))


_NOT_OF_ITS_FORMAT = [  # (file name, bytes, --format, what the one line says)
    ("passwd.tsv", b"root:x:0:0:root:/root:/bin/bash\n", "sessionrec", "needs columns SessionId, ItemId, Time"),
    ("binary.tsv", b"\x7fELF\x02\x01\x01\x00\xd0\xff\n", "sessionrec", "not a session-rec TSV (UTF-8 text)"),
    ("ragged.tsv", b"SessionId\tItemId\tTime\n1\ta\n", "sessionrec", "not a readable session-rec TSV: CSV parse error"),
    ("words.tsv", b"SessionId\tItemId\tTime\n1\ta\tyesterday\n", "sessionrec", "not a readable session-rec TSV"),
    ("all_train_seq.txt", b"not a pickle", "srgnn", "not an SR-GNN pickle"),
]


@pytest.mark.parametrize(("name", "content", "fmt", "expected"), _NOT_OF_ITS_FORMAT)
def test_run_with_a_replayed_file_not_of_its_format_says_so_before_starting_anything(
        name: str, content: bytes, fmt: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``run --replay /etc/passwd`` started the broker, created the topics, deleted the run directory's state and
    then died with a ReplayFormatError traceback (a binary file: UnicodeDecodeError; a ragged row: ArrowInvalid)."""
    import subprocess

    import operators.broker
    from operators.broker import free_port

    def no_child(*a: object, **k: object) -> None:
        raise AssertionError(f"a child was started: {a}")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "Popen", no_child)
    monkeypatch.setattr(operators.broker.LocalBroker, "start", no_child)
    log = tmp_path / name
    log.write_bytes(content)
    var = tmp_path / "run"
    (var / "state").mkdir(parents=True)
    port = free_port()
    api_port = next(p for p in iter(free_port, None) if p != port)  # two binds may get the same port
    out = _fails(["run", "--port", str(port), "--api-port", str(api_port), "--var", str(var),
                  "--replay", str(log), "--format", fmt], f"fusionrec run: --replay: {log}", expected, f"(--format {fmt})")
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    assert (var / "state").is_dir() and not list(var.glob("*.log*"))


@pytest.mark.parametrize(("name", "content", "fmt", "expected"), _NOT_OF_ITS_FORMAT)
def test_replay_of_a_file_not_of_its_format_says_so_before_anything_is_sent(
        name: str, content: bytes, fmt: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``replay /etc/passwd`` ended in a ReplayFormatError traceback (exit status 1)."""
    import flows.commands.simulate  # noqa: F401  (registers the command)
    import simulators.producer

    def no_producer(*a: object, **k: object) -> None:
        raise AssertionError("a producer was created")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(simulators.producer.EventProducer, "__init__", no_producer)
    log = tmp_path / name
    log.write_bytes(content)
    out = _fails(["replay", str(log), "--format", fmt], f"fusionrec replay: {log}", expected)
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out


_RUN_ENV = ("FUSIONREC_KAFKA__BROKERS", "FUSIONREC_STREAM__STATE_DIR", "FUSIONREC_STREAM__MODEL_DIR",
            "FUSIONREC_STREAM__SERVING_DIR", "FUSIONREC_API__PORT", "FUSIONREC_LAKE__LAKE_DIR",
            "FUSIONREC_GATE__HOLDOUT_HOURS", "FUSIONREC_ANALYTICS__BUCKET_S", "FUSIONREC_API__ADMIN_KEYS",
            "FUSIONREC_API__CLIENT_KEYS")
"""What ``run`` exports to its children through ``os.environ`` (in-process, a later test would read them)."""


@pytest.mark.parametrize(("args", "expected"), [
    (["--history", "1"],
     "fusionrec run: cannot train 'covisit' on 1 events (--history 1, --train-seconds 600): graph: no hyperedge"),
    (["--replay", "header_only.tsv"],
     "fusionrec run: cannot train 'covisit' on 0 events (the --replay log, --train-seconds 600): events: no interactions"),
])
def test_run_with_too_few_events_to_train_says_so_and_stops_everything(
        args: list[str], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``run --history 1`` ended in an EmptyGraphError traceback, and ``run --replay`` of a log with a header only
    in a ValueError one, after the broker had started (exit status 1)."""
    import flows.commands.platform
    from operators.broker import free_port, port_in_use

    def no_child(*a: object, **k: object) -> None:
        raise AssertionError(f"a child was started: {a}")

    for name in _RUN_ENV:  # run exports these to its children (os.environ): restored after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(flows.commands.platform, "_child", no_child)  # the broker (Tansu) starts for real
    (tmp_path / "header_only.tsv").write_text("SessionId\tItemId\tTime\n")
    port = free_port()
    api_port = next(p for p in iter(free_port, None) if p != port)
    out = _fails(["run", "--port", str(port), "--api-port", str(api_port), "--var", str(tmp_path / "run"),
                  "--model", "covisit", *args], expected)
    assert "Traceback" not in out, out
    assert not port_in_use(port)  # the broker it started is stopped


@pytest.mark.parametrize("how", ["--var .", "FUSIONREC_RUN__VAR_DIR="])
def test_run_refuses_a_run_directory_holding_what_no_run_writes(
        how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--var .`` or an empty ``FUSIONREC_RUN__VAR_DIR`` in a checkout made run delete ./api (the API's source
    code), ./state, ./lake and ./serving before starting; such a directory is refused before anything is touched."""
    import subprocess

    from operators.broker import free_port

    def no_child(*a: object, **k: object) -> None:
        raise AssertionError(f"a child was started: {a}")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "Popen", no_child)
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "app.py").write_text("source\n")
    (tmp_path / "README.md").write_text("readme\n")
    (tmp_path / "flow.log").write_text("a previous run's log\n")
    args = ["--var", "."] if how == "--var ." else []
    if how != "--var .":
        monkeypatch.setenv("FUSIONREC_RUN__VAR_DIR", "")
    port = free_port()
    api_port = next(p for p in iter(free_port, None) if p != port)
    _fails(["run", "--port", str(port), "--api-port", str(api_port), "--model", "covisit", *args],
           "fusionrec run: --var: . holds README.md, which no fusionrec run writes")
    assert (tmp_path / "api" / "app.py").read_text() == "source\n"
    assert (tmp_path / "flow.log").exists() and not (tmp_path / "flow.log.1").exists()


def test_run_with_a_run_directory_it_cannot_create_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``run --var /proc/x`` (or under a file) was a FileNotFoundError traceback (exit status 1)."""
    from operators.broker import free_port, port_in_use

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    port = free_port()
    api_port = next(p for p in iter(free_port, None) if p != port)
    for var, why in (("/proc/fusionrec-run", "No such file or directory"), (tmp_path / "a-file" / "run", "Not a directory")):
        out = _fails(["run", "--port", str(port), "--api-port", str(api_port), "--var", str(var)],
                     f"fusionrec run: --var: cannot use {var} as the run directory: {why}")
        assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
        assert not port_in_use(port)


@pytest.mark.parametrize(("args", "option", "bound"), [
    (["broker", "--port", "99999"], "--port", "65535"),
    (["broker", "--port", "-1"], "--port", "1"),
    (["broker", "--port", "0"], "--port", "1"),
    (["run", "--port", "99999"], "--port", "65535"),
    (["run", "--api-port", "70000", "--port", "59117"], "--api-port", "65535"),
    (["serve", "--port", "99999"], "--port", "65535"),
])
def test_a_port_out_of_range_is_a_usage_error(args: list[str], option: str, bound: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    def no_child(*a: object, **k: object) -> None:
        raise AssertionError(f"a child was started: {a}")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "Popen", no_child)
    out = _fails(args + (["--var", str(tmp_path / "run")] if args[0] == "run" else []), f"Invalid value for '{option}'",
                 bound)
    assert "OverflowError" not in out and not (tmp_path / "run").exists()


def test_run_with_a_broker_port_out_of_range_in_the_settings_says_so(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from operators.broker import free_port

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FUSIONREC_KAFKA__BROKERS", "127.0.0.1:99999")  # run's default --port comes from here
    _fails(["run", "--api-port", str(free_port()), "--var", str(tmp_path / "run")],
           "broker port 99999 (from [kafka] brokers / FUSIONREC_KAFKA__BROKERS) is not a TCP port (1-65535)")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("n", ["-5", "0"])
def test_train_simulate_needs_at_least_one_event(n):
    """``train --simulate -5`` said "give --events FILE, --simulate N or --lake DIR" (trial 13, D9)."""
    _fails(["train", "--simulate", n, "--model", "covisit"], "--simulate", "greater than or equal to 1")


@pytest.mark.parametrize("source", [["--simulate", "3000"], ["--events", "e.jsonl"]])
def test_train_window_applies_only_with_a_lake(source: list[str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``train --simulate 3000 --window 5d`` (or ``--window garbage``) trained on all the events and said nothing."""
    import operators.training

    def no_training(*a: object, **k: object) -> None:
        raise AssertionError("a model was trained")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(operators.training, "train_model", no_training)
    (tmp_path / "e.jsonl").write_text("")
    _fails(["train", *source, "--window", "5d", "--model", "covisit"],
           f"Invalid value for --window: applies only with --lake DIR (the lake's newest window); got '5d' with {source[0]}")


def test_train_takes_one_source_of_events(tmp_path):
    """``train --simulate 100 --events FILE`` trained on the file and ignored ``--simulate`` without a word
    (session 29's new-user trial, F4)."""
    _fails(["train", "--simulate", "100", "--events", str(tmp_path / "e.jsonl"), "--model", "covisit"],
           "give one source of events, not --events and --simulate")
    _fails(["train", "--simulate", "100", "--lake", str(tmp_path), "--model", "covisit"],
           "not --simulate and --lake")


@pytest.mark.parametrize(("n", "model"), [("3", "fusion"), ("1", "covisit")])
def test_train_on_too_few_simulated_events_says_so(tmp_path, monkeypatch, n, model):
    """``train --simulate 3`` (the default model) ended in a ModelFitError traceback (trial 13b, D4)."""
    monkeypatch.setenv("FUSIONREC_STREAM__MODEL_DIR", str(tmp_path / "models"))
    _fails(["train", "--simulate", n, "--model", model], "--simulate", f"{n} simulated events are too few")


@pytest.mark.parametrize(("args", "option"), [
    (["--limit", "-5"], "--limit"), (["--limit", "0"], "--limit"),
    (["--rate", "0"], "--rate"), (["--rate", "-1"], "--rate"), (["--rate", "nan"], "--rate"),
    (["--speed", "0"], "--speed"), (["--speed", "-2"], "--speed"),
    (["--source", ""], "--source"), (["--source", "  "], "--source"),  # ids ":<row>" of every file collide
])
def test_replay_bad_option_values_are_usage_errors_before_anything_is_sent(
        args: list[str], option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``replay --limit -5`` replayed the whole file; ``--rate 0`` / ``--speed 0`` ended in a traceback after
    the catalog was published (trial 31, finding 6)."""
    import flows.commands.simulate  # noqa: F401  (registers the command)
    import simulators.producer

    def no_producer(*a: object, **k: object) -> None:
        raise AssertionError("a producer was created")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(simulators.producer.EventProducer, "__init__", no_producer)
    log = tmp_path / "log_test.txt"
    log.write_text(f"SessionId\tItemId\tTime\n1\ta\t{T0}\n1\tb\t{T0 + 5}\n")
    _fails(["replay", str(log), *args], f"Invalid value for {option}" if args[0] != "--limit" else "'--limit'")


@pytest.mark.parametrize("command", ["flow", "analytics", "archive"])
@pytest.mark.parametrize("workers", ["0", "-1"])
def test_dataflow_commands_need_at_least_one_worker(command: str, workers: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``flow -w 0`` ran 7.6 s and exited 0; ``flow -w -1`` was bytewax's OverflowError (trial 31, finding 6)."""
    import os

    import flows.commands.analytics  # noqa: F401  (registers the command)
    import flows.commands.lake  # noqa: F401  (registers the command)

    def no_exec(*a: object) -> None:
        raise AssertionError(f"the dataflow was started: {a}")

    monkeypatch.setattr(os, "execv", no_exec)
    _fails([command, "-w", workers], "Invalid value for '-w' / '--workers'", "1")


def test_serve_on_a_taken_port_says_so_before_loading_anything(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """It loaded the checkpoint and the optimizer snapshot and reached a broker for 17 s, then failed with
    uvicorn's "address already in use", exit status 3 (trial 31, finding 6)."""
    import socket

    import uvicorn

    def no_server(*a: object, **k: object) -> None:
        raise AssertionError("the API was started")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(uvicorn, "run", no_server)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _fails(["serve", "--port", str(port)], f"fusionrec serve: port {port} on 127.0.0.1 is already in use",
               "--port N or FUSIONREC_API__PORT=N")


@pytest.mark.parametrize("args", [
    ["run", "--model", "covisit"],
    ["train", "--simulate", "300", "--model", "covisit"],
    ["simulate", "--events", "1"],
    ["simulate-ab", "--visits", "1"],
    ["eval", "--data", ".", "--models", "pop"],
    ["embed", "graph.tsv", "--out", "emb"],
])
def test_a_negative_seed_is_a_usage_error_before_anything_starts(args: list[str], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``run --seed -1`` started the broker, created the topics and rotated the logs, then died with numpy's
    ``ValueError: expected non-negative integer`` (exit 1); ``train`` and ``simulate`` the same (new-user trial)."""
    import subprocess

    import flows.commands.analytics  # noqa: F401  (registers the command)
    import flows.commands.embed  # noqa: F401  (registers the command)
    import flows.commands.simulate  # noqa: F401  (registers the command)
    from operators.broker import free_port

    def no_child(*a: object, **k: object) -> None:
        raise AssertionError(f"a child was started: {a}")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "Popen", no_child)
    monkeypatch.setenv("FUSIONREC_STREAM__MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("FUSIONREC_API__ADMIN_KEYS", '["a-key-a-key-a-key"]')  # simulate-ab needs keys to go on
    monkeypatch.setenv("FUSIONREC_API__CLIENT_KEYS", '["c-key-c-key-c-key"]')
    (tmp_path / "graph.tsv").write_text("a b\n")
    var = tmp_path / "run"
    if args[0] == "run":
        args = [*args, "--port", str(free_port()), "--api-port", str(free_port()), "--var", str(var)]
    _fails([*args, "--seed", "-1"], "Invalid value for '--seed'", "greater than or equal to 0")
    assert not var.exists() and not (tmp_path / "models").exists() and not (tmp_path / "emb").exists()


@pytest.mark.parametrize(("args", "option"), [
    (["--n-items", "0"], "'--n-items'"), (["--n-items", "-3"], "'--n-items'"),
    (["--n-users", "0"], "'--n-users'"), (["--events", "-5"], "'--events'"), (["--events", "0"], "'--events'"),
    (["--skip-history", "-1"], "'--skip-history'"),
    (["--rate", "-1"], "--rate"), (["--rate", "nan"], "--rate"), (["--rate", "inf"], "--rate"),
])
def test_simulate_bad_option_values_are_usage_errors_before_anything_is_sent(
        args: list[str], option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``simulate --n-items 0`` ended in a ValueError traceback and ``--events -5`` ran (new-user trial)."""
    import flows.commands.simulate  # noqa: F401  (registers the command)
    import simulators.producer

    def no_producer(*a: object, **k: object) -> None:
        raise AssertionError("a producer was created")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(simulators.producer.EventProducer, "__init__", no_producer)
    _fails(["simulate", "--no-progress", *args], f"Invalid value for {option}")


@pytest.fixture()
def ab_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``simulate-ab``'s keys (it needs an admin and a client key), in an empty working directory."""
    import flows.commands.analytics  # noqa: F401  (registers the command)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FUSIONREC_API__ADMIN_KEYS", '["a-key-a-key-a-key"]')
    monkeypatch.setenv("FUSIONREC_API__CLIENT_KEYS", '["c-key-c-key-c-key"]')


@pytest.mark.parametrize(("args", "option"), [
    (["--control-share", "5"], "--control-share"), (["--control-share", "1"], "--control-share"),
    (["--control-share", "-0.1"], "--control-share"), (["--control-share", "nan"], "--control-share"),
    (["--visits-per-s", "0"], "--visits-per-s"), (["--visits-per-s", "-3"], "--visits-per-s"),
    (["--visits-per-s", "inf"], "--visits-per-s"), (["--visits-per-s", "nan"], "--visits-per-s"),
    (["--ctr-popular", "2"], "'--ctr-popular'"), (["--ctr-popular", "-0.1"], "'--ctr-popular'"),
    (["--ctr-personalized", "1.5"], "'--ctr-personalized'"), (["--ctr-personalized", "nan"], "'--ctr-personalized'"),
    (["--visits", "-1"], "'--visits'"),
    (["--api", "127.0.0.1:8000"], "--api"), (["--api", "ftp://127.0.0.1:8000"], "--api"), (["--api", "http://"], "--api"),
])
def test_simulate_ab_bad_option_values_are_usage_errors_before_any_request(
        args: list[str], option: str, ab_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``simulate-ab`` took ``--control-share 5``, ``--visits-per-s 0`` or ``-3``, ``--ctr-popular 2`` and
    ``--visits -1`` (new-user trial)."""
    import httpx

    def no_client(*a: object, **k: object) -> None:
        raise AssertionError("an HTTP client was created")

    monkeypatch.setattr(httpx.Client, "__init__", no_client)
    api = [] if args[0] == "--api" else ["--api", "http://127.0.0.1:9"]
    _fails(["simulate-ab", *api, *args], f"Invalid value for {option}")


def test_simulate_ab_with_an_unreachable_api_says_so_in_one_line(ab_keys: None) -> None:
    """It died with a ConnectError traceback (exit status 1) when nothing listened at ``--api``."""
    import socket

    with socket.socket() as reserved:  # bound, not listening: a connection is refused
        reserved.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{reserved.getsockname()[1]}"
        result = CliRunner().invoke(app, ["simulate-ab", "--api", url, "--visits", "1"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fusionrec simulate-ab: cannot reach the API at {url}"), \
        result.stderr


@pytest.mark.parametrize(("status", "body", "campaign", "replace", "said"), [
    (403, b'{"error":{"field":"api_key","reason":"this key lacks the \'admin\' scope"}}', "home-ab", False,
     "403 api_key: this key lacks the 'admin' scope (the key is api.admin_keys[0]"),
    (422, b'{"error":{"field":"campaign_id","reason":"String should match pattern"}}', "a?b", False,
     "422 campaign_id: String should match pattern"),
    (422, b'{"error":{"field":"campaign_id","reason":"String should match pattern"}}', "a?b", True,
     "422 campaign_id: String should match pattern"),
    # with --replace these were PUT to a normalised path (/v1/campaigns/, /v1/campaigns/, /v1/): 307, 405, 404
    (422, b'{"error":{"field":"campaign_id","reason":"String should match pattern"}}', "", True,
     "422 campaign_id: String should match pattern"),
    (422, b'{"error":{"field":"campaign_id","reason":"String should match pattern"}}', ".", True,
     "422 campaign_id: String should match pattern"),
    (422, b'{"error":{"field":"campaign_id","reason":"String should match pattern"}}', "..", True,
     "422 campaign_id: String should match pattern"),
    (502, b"<html>bad gateway</html>", "home-ab", False, "502 <html>bad gateway</html>"),
])
def test_simulate_ab_with_a_campaign_the_api_refuses_says_so_in_one_line(
        status: int, body: bytes, campaign: str, replace: bool, said: str, ab_keys: None) -> None:
    """A refused campaign (a key without the admin scope, an invalid one) died with a RuntimeError traceback; it is
    one line naming the status and the API's error (exit status 1). The campaign is created by a POST (its id in the
    body), with ``--replace`` too (a PUT follows only a 409: the id is then a valid one, one path segment)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    requests: list[tuple[str, str, object]] = []

    class Refuse(BaseHTTPRequestHandler):
        def _refuse(self) -> None:
            sent = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append((self.command, self.path, sent.get("campaign_id")))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_PUT = do_POST = _refuse

        def log_message(self, *args: object) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Refuse) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = CliRunner().invoke(app, ["simulate-ab", "--api", url, "--visits", "1", "--campaign", campaign,
                                          *(["--replace"] if replace else [])])
        server.shutdown()
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"fusionrec simulate-ab: the API at {url} refused to create campaign {campaign!r}: "
                               f"{said}"), lines[0]
    assert requests == [("POST", "/v1/campaigns", campaign)]


@pytest.mark.integration
def test_simulate_ab_leaves_an_existing_campaign_unless_told_to_replace_it(ab_keys: None, broker: str,
                                                                          tmp_path: Path) -> None:
    """``simulate-ab`` PUT its campaign, silently replacing one of the same id (new-user trial): it stops with one
    line (exit status 1) and the campaign unchanged, unless ``--replace`` is given."""
    import httpx

    from tests.harness import ApiServer, make_settings

    theirs = {"scenario": "popular", "n": 3, "arms": [{"name": "mine", "strategy": "popular"}]}
    with ApiServer(make_settings(broker, tmp_path, partitions=1)) as api:
        c = httpx.Client(base_url=api.url, timeout=10)
        assert c.put("/v1/campaigns/home-ab", json=theirs).status_code == 201
        before = c.get("/v1/campaigns/home-ab").json()
        result = CliRunner().invoke(app, ["simulate-ab", "--api", api.url, "--visits", "1"])
        assert result.exit_code == 1, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert result.stderr.strip().splitlines() == [
            f"fusionrec simulate-ab: the API at {api.url} already has campaign 'home-ab'; left unchanged: pass "
            "--replace to replace it, or --campaign another id"], result.stderr
        assert c.get("/v1/campaigns/home-ab").json() == before  # version 1, its own arms

        result = CliRunner().invoke(app, ["simulate-ab", "--api", api.url, "--visits", "1", "--campaign", "new-ab"])
        assert result.exit_code == 0, result.output
        assert c.get("/v1/campaigns/new-ab").json()["version"] == 1  # a new id is created as before

        result = CliRunner().invoke(app, ["simulate-ab", "--api", api.url, "--visits", "1", "--replace"])
        assert result.exit_code == 0, result.output
        after = c.get("/v1/campaigns/home-ab").json()
        assert after["version"] == 2 and [a["name"] for a in after["arms"]] == ["personalized", "popular"]
        assert after["created_ts"] == before["created_ts"]


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_serve_needs_at_least_one_worker(workers: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve --workers 0`` and ``--workers -1`` were accepted and the server started (new-user trial)."""
    import uvicorn

    from operators.broker import free_port

    def no_server(*a: object, **k: object) -> None:
        raise AssertionError("the API was started")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(uvicorn, "run", no_server)
    _fails(["serve", "--port", str(free_port()), "--workers", workers], "Invalid value for '--workers'",
           "greater than or equal to 1")


@pytest.mark.parametrize(("option", "value"), [("--valid-days", "-1"), ("--valid-days", "0"), ("--valid-days", "nan"),
                                               ("--valid-frac", "0"), ("--valid-frac", "1"), ("--valid-frac", "5"),
                                               ("--valid-frac", "-0.1")])
def test_eval_rejects_a_validation_split_option_out_of_range_before_loading(
        tiny_sessionrec: Path, option: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``eval --split valid --valid-days -1`` loaded the dataset, then said the split "leaves train or validation
    empty"; ``--valid-frac 5`` said "frac must be in (0, 1)" after loading (sweep after a new-user trial)."""
    def no_load(*a: object, **k: object) -> None:
        raise AssertionError("the dataset was loaded")

    monkeypatch.setattr(flows.commands.eval, "load_dataset", no_load)
    _fails(_eval(tiny_sessionrec, "--models", "pop", "--split", "valid", option, value), f"Invalid value for {option}")


@pytest.mark.parametrize(("extra", "hint", "says"), [
    (("--valid-days", "2"), "--valid-days", "applies only with --split valid; got --split test"),
    (("--valid-frac", "0.3"), "--valid-frac", "applies only with --split valid; got --split test"),
    (("--split", "valid", "--valid-days", "2", "--valid-frac", "0.3"), "--valid-frac",
     "give one of --valid-days and --valid-frac"),
    (("--set", "pop.k=1"), "--set", "model 'pop' is not evaluated (--models sknn); got 'pop.k=1'"),
    (("--set", "nope.k=1"), "--set", "model 'nope' is not evaluated (--models sknn); got 'nope.k=1'"),
])
def test_eval_refuses_options_it_would_ignore_before_loading(
        tiny_sessionrec: Path, extra: tuple[str, ...], hint: str, says: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--valid-days`` / ``--valid-frac`` with ``--split test``, ``--valid-frac`` beside ``--valid-days``, and a
    ``--set`` for a model not in ``--models`` were silently ignored (the same table as without them)."""
    def no_load(*a: object, **k: object) -> None:
        raise AssertionError("the dataset was loaded")

    monkeypatch.setattr(flows.commands.eval, "load_dataset", no_load)
    _fails(_eval(tiny_sessionrec, "--models", "sknn", *extra), f"Invalid value for {hint}: {says}")


def test_eval_validation_split_defaults_to_a_tenth(tiny_sessionrec: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--valid-frac`` has no default in the options any more (to tell it given from not): 0.1 still applies."""
    seen: list[tuple[float | None, float]] = []

    def record(data: object, *, days: float | None, frac: float) -> object:
        seen.append((days, frac))
        raise ValueError("recorded")

    monkeypatch.setattr(flows.commands.eval, "validation_split", record)
    _fails(_eval(tiny_sessionrec, "--models", "pop", "--split", "valid"), "error: recorded")
    _fails(_eval(tiny_sessionrec, "--models", "pop", "--split", "valid", "--valid-days", "3"), "error: recorded")
    assert seen == [(None, 0.1), (3.0, 0.1)]


@pytest.mark.parametrize(("args", "hint", "says"), [
    (["--model", "nope", "--once"], "--model", "unknown model 'nope'; registered: pop, covisit"),
    (["--once", "--every", "1h"], "--every", "is the interval between runs; --once runs once (got --every '1h')"),
])
def test_trainer_refuses_an_unknown_model_and_an_interval_with_once(
        args: list[str], hint: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``trainer --model nope --once`` said "skipped: no archived events" (exit status 0) and would have failed
    only once the lake held events; ``--every`` with ``--once`` was silently ignored. (An unknown ``[trainer] model``
    is a configuration error when the settings load: tests/operators/test_settings.py.)"""
    import flows.commands.trainer  # noqa: F401  (registers the command)
    import operators.trainer

    def no_run(*a: object, **k: object) -> None:
        raise AssertionError("the trainer ran")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(operators.trainer, "run_once", no_run)
    _fails(["trainer", *args], f"Invalid value for {hint}: {says}")


def test_models_promote_takes_a_version_name_not_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``models promote v1/../v2`` (a complete version through a path) failed naming an internal file
    (``.LATEST-v1/../v2``: No such file or directory); a path is refused as no version name, LATEST unchanged."""
    import flows.commands.trainer  # noqa: F401  (registers the command)
    from operators.model_version import point_latest

    models = tmp_path / "models"
    for v in ("v1", "v2"):
        (models / v).mkdir(parents=True)
        (models / v / "manifest.json").write_text("{}")
    (tmp_path / "elsewhere" / "v3").mkdir(parents=True)
    (tmp_path / "elsewhere" / "v3" / "manifest.json").write_text("{}")
    point_latest(models, "v1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FUSIONREC_STREAM__MODEL_DIR", str(models))
    for version in ("v1/../v2", "../elsewhere/v3", ".."):
        _fails(["models", "promote", version], f"Invalid value for VERSION: '{version}': not a version name (one "
                                               f"directory under {models})")
        assert (models / "LATEST").read_text() == "v1" and not list(models.glob(".LATEST-*"))
    assert CliRunner().invoke(app, ["models", "promote", "v2"]).exit_code == 0
    assert (models / "LATEST").read_text() == "v2"


def test_models_list_and_show_refuse_a_model_dir_that_is_a_file_and_show_takes_a_version_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``[stream] model_dir`` naming a file said "no model versions"; ``models show ../elsewhere/v3`` read a card
    outside the model directory. Both are usage errors now, as ``models promote`` refuses a path."""
    import flows.commands.trainer  # noqa: F401  (registers the command)

    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0\n")
    monkeypatch.setenv("FUSIONREC_STREAM__MODEL_DIR", str(a_file))
    for args in (["models", "list"], ["models", "show"]):
        _fails(args, f"Invalid value for [stream] model_dir: {a_file} is not a directory")
    models = tmp_path / "models"
    (models / "v1").mkdir(parents=True)
    (models / "v1" / "manifest.json").write_text("{}")
    (tmp_path / "elsewhere" / "v3").mkdir(parents=True)
    (tmp_path / "elsewhere" / "v3" / "manifest.json").write_text("{}")
    monkeypatch.setenv("FUSIONREC_STREAM__MODEL_DIR", str(models))
    for version in ("../elsewhere/v3", "v1/../v1", ".."):
        _fails(["models", "show", version], f"'{version}': not a version name (one directory under {models})")


def test_eval_movielens_ratings_without_a_column_is_one_line(tmp_path: Path) -> None:
    """A tab-separated ratings.csv (read as one column) was a KeyError traceback, exit status 1."""
    (tmp_path / "ratings.csv").write_text("userId\tmovieId\trating\ttimestamp\n1\t2\t4.0\t5\n")
    _fails(["eval", "--data", str(tmp_path), "--format", "movielens", "--models", "pop"],
           "ratings.csv: MovieLens needs columns", "missing ['userId', 'movieId', 'rating', 'timestamp']")


def test_train_events_that_is_no_file_is_a_usage_error(tmp_path: Path) -> None:
    """A directory was an IsADirectoryError traceback (exit 1); a missing file named --model/--events."""
    _fails(["train", "--events", str(tmp_path), "--model", "covisit"], "Invalid value for --events:", "is a directory")
    _fails(["train", "--events", str(tmp_path / "nope.jsonl"), "--model", "covisit"], "Invalid value for --events:", "no such file")
