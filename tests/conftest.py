"""Shared fixtures: a Foundry emulator on loopback, reused across tests and reset for each."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from imgrag.connectors.emulator import EmulatorHandle, EmulatorOptions, running_emulator
from pydantic import SecretStr

EMULATOR_KEY = "emulator-test-key-0f9e"
"""The api key the shared emulator accepts."""

_RUNTIME_FIELDS = ("latency_ms", "jitter", "rpm", "tpm", "max_concurrency", "fail_rate")


@pytest.fixture(scope="session")
def emulator_session() -> Iterator[EmulatorHandle]:
    """One Cohere-embed-v3-english emulator (tiny backend, key auth) for the whole run."""
    options = EmulatorOptions(port=0, api_key=SecretStr(EMULATOR_KEY), backend="tiny")
    with running_emulator(options) as handle:
        yield handle


@pytest.fixture
def emulator(emulator_session: EmulatorHandle) -> Iterator[EmulatorHandle]:
    """The shared emulator with a clean log, no pending faults, fresh quota and default limits."""
    state = emulator_session.state
    baseline = {name: getattr(state.options, name) for name in _RUNTIME_FIELDS}
    state.reset()
    state.accepted_tokens.clear()
    yield emulator_session
    state.release()
    for name, value in baseline.items():
        setattr(state.options, name, value)
    state.reset()
    state.accepted_tokens.clear()
