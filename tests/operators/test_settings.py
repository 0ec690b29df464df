"""Configuration typos are errors that name them, never silently ignored (operators/settings.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from pydantic import ValidationError

from operators.settings import ConfigError, Settings


def _empty_config(tmp_path) -> str:
    """A config file without settings (a named file that does not exist is an error)."""
    p = tmp_path / "empty.toml"
    p.write_text("")
    return str(p)


def test_unknown_key_in_a_toml_block_is_refused(tmp_path, monkeypatch):
    cfg = tmp_path / "fusionrec.toml"
    cfg.write_text("[api]\nprot = 9000\n")
    monkeypatch.setenv("FUSIONREC_CONFIG", str(cfg))
    with pytest.raises(ValidationError, match=r"api\.prot"):
        Settings()
    cfg.write_text("[api]\nport = 9000\n")
    assert Settings().api.port == 9000


@pytest.mark.parametrize("line, field", [("[api]\nautogroup_nice = true", "api.autogroup_nice"),
                                         ("[api]\nport = false", "api.port"),
                                         ("[stream]\nmax_age_s = true", "stream.max_age_s"),
                                         ("seed = true", "seed")])
def test_true_or_false_for_a_number_is_refused(tmp_path, monkeypatch, line, field):
    """pydantic's lax mode reads TOML's true as 1: ``autogroup_nice = true`` meant a nice of 1."""
    cfg = tmp_path / "fusionrec.toml"
    cfg.write_text(line + "\n")
    monkeypatch.setenv("FUSIONREC_CONFIG", str(cfg))
    with pytest.raises(ValidationError, match=rf"{re.escape(field)}\n.*expected a number, got (true|false)"):
        Settings()
    cfg.write_text("[api]\nautogroup_nice = 3\nfeedback = false\n")  # numbers and bools where they belong
    s = Settings()
    assert (s.api.autogroup_nice, s.api.feedback) == (3, False)


def test_unknown_block_field_in_the_environment_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSIONREC_CONFIG", _empty_config(tmp_path))
    monkeypatch.setenv("FUSIONREC_KAFKA__BROKER", "kafka:9092")  # the field is "brokers"
    with pytest.raises(ValidationError, match=r"kafka\.broker"):
        Settings()
    monkeypatch.delenv("FUSIONREC_KAFKA__BROKER")
    monkeypatch.setenv("FUSIONREC_KAFKA__BROKERS", "kafka:9092")
    assert Settings().kafka.brokers == "kafka:9092"


def test_unknown_block_in_the_environment_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSIONREC_CONFIG", _empty_config(tmp_path))
    monkeypatch.setenv("FUSIONREC_APII__PORT", "9000")
    with pytest.raises(ValidationError, match="FUSIONREC_APII__PORT: no setting 'apii'"):
        Settings()
    monkeypatch.delenv("FUSIONREC_APII__PORT")
    monkeypatch.setenv("FUSIONREC_DATASETS", "/data")  # the benchmarks' own variable, not a setting
    assert Settings().api.port == 8000


def test_cli_prints_a_configuration_error_and_exits_2(tmp_path):
    cfg = tmp_path / "fusionrec.toml"
    cfg.write_text("[stream]\nworkers_typo = 2\n")
    env = {"FUSIONREC_CONFIG": str(cfg), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "flows.cli", "topics"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "configuration error" in out.stderr and "stream.workers_typo" in out.stderr
    assert "Traceback" not in out.stderr


def test_rate_limit_is_checked_when_the_settings_load(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSIONREC_CONFIG", _empty_config(tmp_path))
    monkeypatch.setenv("FUSIONREC_API__RATE_LIMIT", "abc")
    with pytest.raises(ValidationError, match=r"api\.rate_limit[\s\S]*'abc' is not a rate limit"):
        Settings()
    monkeypatch.setenv("FUSIONREC_API__RATE_LIMIT", "10/second;100/minute")
    assert Settings().api.rate_limit == "10/second;100/minute"
    monkeypatch.setenv("FUSIONREC_API__RATE_LIMIT", "")  # empty: no limit, as before
    assert Settings().api.rate_limit == ""
    # a window of 0 would refuse every request: a configuration error, for the event limit too (trial 13b, D6)
    monkeypatch.setenv("FUSIONREC_API__EVENT_RATE_LIMIT", "0/second")
    with pytest.raises(ValidationError, match=r"api\.event_rate_limit[\s\S]*allows nothing"):
        Settings()
    # the parser reads a window of 0 as 1 (10/0second was 10 per second, silently; a fresh-user try)
    for text in ("10/0second", "10 per 0 seconds"):
        monkeypatch.setenv("FUSIONREC_API__EVENT_RATE_LIMIT", text)
        with pytest.raises(ValidationError, match=r"api\.event_rate_limit[\s\S]*window of 0"):
            Settings()
    monkeypatch.setenv("FUSIONREC_API__EVENT_RATE_LIMIT", "100/10 seconds")
    assert Settings().api.event_rate_limit == "100/10 seconds"


@pytest.mark.parametrize("brokers", ["", " ", "a:9092,", ",a:9092"])
def test_an_empty_broker_list_or_entry_is_refused(monkeypatch, tmp_path, brokers):
    """``FUSIONREC_KAFKA__BROKERS=`` was accepted; the first command then failed 11 s later naming a blank address."""
    monkeypatch.setenv("FUSIONREC_CONFIG", _empty_config(tmp_path))
    monkeypatch.setenv("FUSIONREC_KAFKA__BROKERS", brokers)
    with pytest.raises(ValidationError, match=r"kafka\.brokers[\s\S]*host:port"):
        Settings()


def test_request_secret_shorter_than_16_bytes_is_refused_at_load(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSIONREC_CONFIG", _empty_config(tmp_path))
    monkeypatch.setenv("FUSIONREC_API__REQUEST_SECRET", "short")
    with pytest.raises(ValidationError, match=r"api\.request_secret[\s\S]*at least 16 bytes; got 5"):
        Settings()
    monkeypatch.setenv("FUSIONREC_API__REQUEST_SECRET", "0123456789abcdef")
    assert Settings().api.request_secret == "0123456789abcdef"


@pytest.mark.parametrize(("env", "toml", "field"), [
    ({"FUSIONREC_TRAINER__EVERY_S": "inf"}, None, "trainer.every_s"),  # the trainer crashed after its first run
    ({"FUSIONREC_STREAM__HALF_LIFE_S": "1e999"}, None, "stream.half_life_s"),
    ({"FUSIONREC_API__BODY_TIMEOUT_S": "-inf"}, None, "api.body_timeout_s"),
    ({}, "[analytics]\nattribution_window_s = inf\n", "analytics.attribution_window_s"),  # TOML's own inf
    ({}, "[stream]\nmax_age_s = nan\n", "stream.max_age_s"),
])
def test_a_number_that_is_not_finite_is_refused_at_load(monkeypatch, tmp_path, env, toml, field):
    """``inf`` passed every ``gt=0`` bound: ``[trainer] every_s = inf`` was an OverflowError traceback once the first
    run ended (``threading.Event.wait``)."""
    cfg = tmp_path / "fusionrec.toml"
    cfg.write_text(toml or "")
    monkeypatch.setenv("FUSIONREC_CONFIG", str(cfg))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=rf"{re.escape(field)}\n.*finite number"):
        Settings()
    for name in env:
        monkeypatch.setenv(name, "30")
    cfg.write_text((toml or "").replace("inf", "30").replace("nan", "30"))
    assert Settings()


def test_toml_syntax_error_names_the_file_and_line(monkeypatch, tmp_path):
    cfg = tmp_path / "fusionrec.toml"
    cfg.write_text("[api]\nport = 9000\n[kafka\n")
    monkeypatch.setenv("FUSIONREC_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match=rf"{re.escape(str(cfg))}: not valid TOML: .*line 3"):
        Settings()


def test_a_list_setting_that_is_not_json_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSIONREC_CONFIG", _empty_config(tmp_path))
    monkeypatch.setenv("FUSIONREC_API__PORT", "9000")  # a scalar of the same block: not blamed
    monkeypatch.setenv("FUSIONREC_API__ADMIN_KEYS", "notjson")
    with pytest.raises(ConfigError, match=r"FUSIONREC_API__ADMIN_KEYS: the value must be JSON.*\[\"key1\"\]") as err:
        Settings()
    assert "FUSIONREC_API__PORT" not in str(err.value)
    monkeypatch.setenv("FUSIONREC_API__ADMIN_KEYS", '["a-long-admin-key-0001"]')
    assert Settings().api.admin_keys == ["a-long-admin-key-0001"]


@pytest.mark.parametrize(("env", "toml", "says"), [
    ({"FUSIONREC_API__RATE_LIMIT": "abc"}, None, "api.rate_limit"),
    ({"FUSIONREC_API__REQUEST_SECRET": "short"}, None, "api.request_secret"),
    ({"FUSIONREC_API__ADMIN_KEYS": "notjson"}, None, "FUSIONREC_API__ADMIN_KEYS: the value must be JSON"),
    ({}, "[kafka\n", "not valid TOML"),
    ({}, "api = 3\n", "api: must be a table ([api] in the config file); got number"),  # not "instance of ApiSettings"
])
def test_cli_reports_unreadable_configuration_and_exits_2(tmp_path, env, toml, says):
    full = {"PATH": "/usr/bin:/bin", **env}
    if toml is not None:
        cfg = tmp_path / "bad.toml"
        cfg.write_text(toml)
        full["FUSIONREC_CONFIG"] = str(cfg)
    out = subprocess.run([sys.executable, "-m", "flows.cli", "models", "list"], env=full, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "fusionrec: configuration error" in out.stderr and says in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_config_file_named_but_missing_is_an_error(monkeypatch, tmp_path):
    """FUSIONREC_CONFIG=/typo.toml silently ran on the defaults."""
    monkeypatch.setenv("FUSIONREC_CONFIG", str(tmp_path / "typo.toml"))
    with pytest.raises(ConfigError, match=r"FUSIONREC_CONFIG=.*typo\.toml: no such file"):
        Settings()
    monkeypatch.delenv("FUSIONREC_CONFIG")
    monkeypatch.chdir(tmp_path)  # ./fusionrec.toml stays optional
    assert Settings().api.port > 0


@pytest.mark.parametrize(("api", "says"), [
    ({"catalog_exclude": ["vector", "hidden"]}, "hidden_attribute 'hidden' is in api.catalog_exclude"),
    ({"stock_attribute": "hidden"}, "must name different attributes"),
])
def test_the_serving_rules_attributes_are_indexed_and_distinct(api, says):
    """An excluded serving attribute was never indexed, so its rule stopped hiding items without a word."""
    with pytest.raises(ValidationError, match=re.escape(says)):
        Settings(api=api)
    assert Settings(api={"catalog_exclude": ["vector"], "stock_attribute": None, "hidden_attribute": "concealed"})


@pytest.mark.parametrize("metric", ["NOPE@20", "HR@5", "Coverage@20", "hr@20"])
def test_a_gate_metric_the_gate_does_not_compute_is_refused_at_load(monkeypatch, tmp_path, metric):
    """``[gate] metric = "HR@5"`` (or a typo) loaded, and the gate compared 0 with 0 on every run: no challenger was
    ever promoted, each run "rejected" with a reason naming a metric nobody computes."""
    monkeypatch.setenv("FUSIONREC_CONFIG", _empty_config(tmp_path))
    monkeypatch.setenv("FUSIONREC_GATE__METRIC", metric)
    with pytest.raises(ValidationError, match=rf"gate\.metric[\s\S]*must be one of HR@10, MRR@10, [\s\S]*got '{metric}'"):
        Settings()


def test_a_trainer_model_that_is_not_registered_is_refused_at_load(monkeypatch, tmp_path):
    """``[trainer] model = "fusoin"`` loaded, and failed only when the trainer (or ``fusionrec run``'s) first ran."""
    from models.registry import REGISTRY

    cfg = tmp_path / "fusionrec.toml"
    cfg.write_text('[trainer]\nmodel = "fusoin"\n')
    monkeypatch.setenv("FUSIONREC_CONFIG", str(cfg))
    with pytest.raises(ValidationError, match=rf"trainer\.model\n.*unknown model 'fusoin'; registered: "
                                              rf"{re.escape(', '.join(REGISTRY))}"):
        Settings()
    cfg.write_text('[trainer]\nmodel = "covisit"\n')
    assert Settings().trainer.model == "covisit"


def test_cli_names_an_unregistered_trainer_model_and_exits_2(tmp_path):
    cfg = tmp_path / "fusionrec.toml"
    cfg.write_text('[trainer]\nmodel = "fusoin"\n')
    env = {"FUSIONREC_CONFIG": str(cfg), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "flows.cli", "trainer", "--once"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "fusionrec: configuration error (1):\n  trainer.model: unknown model 'fusoin'; registered: pop, covisit, " \
        in out.stderr
    assert "Traceback" not in out.stderr


def test_every_gate_metric_is_one_the_gate_computes():
    """``GATE_METRICS`` is what ``evaluate_versions`` scores by default: its ``ks`` and ``score_rankings``' keys."""
    import inspect

    from models.evaluate import score_rankings
    from operators.gate import evaluate_versions
    from operators.settings import GATE_METRICS

    ks = inspect.signature(evaluate_versions).parameters["ks"].default
    assert {int(m.split("@")[1]) for m in GATE_METRICS} == set(ks)
    source = inspect.getsource(score_rankings)
    assert all(f'out[f"{m.split("@")[0]}@{{k}}"]' in source for m in GATE_METRICS)


@pytest.mark.parametrize(("toml", "says"), [
    ('[[event_types]]\nname = "view"\nrequires = ["itemid"]\n',
     r"event_types\.0\.requires[\s\S]*'itemid' is no event field \(so no event of the type would pass\); "
     r"fields: event_id, ts, type, user_id, session_id, item_id, items,"),
    ('[[event_types]]\nname = "view"\nrequires = ["item_id|basket"]\n', r"'basket' is no event field"),
    ('[[event_types]]\nname = "view"\nrequires = ["extra"]\n', r"'extra' is no event field"),
    ('[[event_types]]\nname = "view"\nweight = 1\n[[event_types]]\nname = "click"\n[[event_types]]\nname = "view"\n'
     'weight = 3\n', r"event_types[\s\S]*names must be unique; repeated \['view'\]"),
])
def test_event_types_that_no_event_could_pass_or_repeated_are_refused_at_load(monkeypatch, tmp_path, toml, says):
    """``requires = ["itemid"]`` loaded, and every event of the type was then refused ("itemid: required") by the API
    and dead-lettered by the flow, even one carrying ``itemid`` (kept in ``extra``); a repeated name loaded too."""
    path = tmp_path / "fusionrec.toml"
    path.write_text(toml)
    monkeypatch.setenv("FUSIONREC_CONFIG", str(path))
    with pytest.raises(ValidationError, match=says):
        Settings()
    path.write_text('[[event_types]]\nname = "view"\nrequires = ["item_id|items", "session_id"]\n')
    assert [t.requires for t in Settings().event_types] == [["item_id|items", "session_id"]]


def test_a_trainer_interval_longer_than_a_thread_can_wait_is_refused_at_load(monkeypatch, tmp_path):
    """``[trainer] every_s = 1e300`` is finite, but ``threading.Event.wait`` takes at most ``TIMEOUT_MAX``: the
    trainer died with an OverflowError once its first run ended."""
    monkeypatch.setenv("FUSIONREC_CONFIG", _empty_config(tmp_path))
    monkeypatch.setenv("FUSIONREC_TRAINER__EVERY_S", "1e300")
    with pytest.raises(ValidationError, match=r"trainer\.every_s\n.*less than or equal to"):
        Settings()
    monkeypatch.setenv("FUSIONREC_TRAINER__EVERY_S", str(365 * 86400.0))
    assert Settings().trainer.every_s == 365 * 86400.0
