"""Configuration typos are errors that name them, never silently ignored (operators/settings.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from operators.settings import Settings


def test_unknown_key_in_a_toml_block_is_refused(tmp_path, monkeypatch):
    cfg = tmp_path / "fusionrec.toml"
    cfg.write_text("[api]\nprot = 9000\n")
    monkeypatch.setenv("FUSIONREC_CONFIG", str(cfg))
    with pytest.raises(ValidationError, match=r"api\.prot"):
        Settings()
    cfg.write_text("[api]\nport = 9000\n")
    assert Settings().api.port == 9000


def test_unknown_block_field_in_the_environment_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSIONREC_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("FUSIONREC_KAFKA__BROKER", "kafka:9092")  # the field is "brokers"
    with pytest.raises(ValidationError, match=r"kafka\.broker"):
        Settings()
    monkeypatch.delenv("FUSIONREC_KAFKA__BROKER")
    monkeypatch.setenv("FUSIONREC_KAFKA__BROKERS", "kafka:9092")
    assert Settings().kafka.brokers == "kafka:9092"


def test_unknown_block_in_the_environment_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSIONREC_CONFIG", str(tmp_path / "absent.toml"))
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
