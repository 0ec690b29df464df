"""Shared fixtures: one real Kafka-protocol broker (Tansu) per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from operators.broker import LocalBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """``127.0.0.1:PORT`` of a Tansu broker (in-memory) started for this session."""
    with LocalBroker() as b:
        yield b.bootstrap
