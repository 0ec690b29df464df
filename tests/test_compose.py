"""docker-compose.yml stays valid: it parses, its commands exist, its environment is valid Settings."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from flows.cli import _register, app
from operators.settings import Settings

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker-compose.yml").read_text())


def _commands() -> set[str]:
    _register()
    return {c.name for c in app.registered_commands}


@pytest.mark.parametrize("name", sorted(COMPOSE["services"]))
def test_service_commands_and_environment(name, monkeypatch):
    svc = COMPOSE["services"][name]
    assert "image" in svc
    cmd = svc.get("command")
    if svc["image"].startswith("fusionrec"):
        if cmd[0] == "fusionrec":
            assert cmd[1] in _commands(), f"{name}: unknown subcommand {cmd[1]}"
        else:
            assert cmd[:3] == ["python", "-m", "bytewax.run"]
            assert cmd[3] in ("flows.realtime:flow", "flows.analytics.dataflow:flow")
            module = importlib.import_module(cmd[3].split(":")[0])
            assert callable(module.build_flow)
        env = {k: str(v) for k, v in svc["environment"].items() if k.startswith("FUSIONREC_")}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        s = Settings()
        assert s.kafka.brokers == "kafka:9092"


def test_flow_processes_agree_on_addresses():
    flows = [s for n, s in COMPOSE["services"].items() if n.startswith("flow-")]
    addrs = {s["environment"]["BYTEWAX_ADDRESSES"] for s in flows}
    ids = sorted(s["environment"]["BYTEWAX_PROCESS_ID"] for s in flows)
    assert len(addrs) == 1 and ids == [str(i) for i in range(len(flows))]
    assert len(next(iter(addrs)).split(";")) == len(flows)
