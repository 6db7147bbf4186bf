"""Shared fixtures: a Foundry emulator on loopback, reused across tests and reset for each."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from imgrag.connectors.emulator import EmulatorHandle, EmulatorOptions, running_emulator
from imgrag.connectors.stores import edge_builds
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


def _cleaned(handle: EmulatorHandle) -> Iterator[EmulatorHandle]:
    """Lend a shared emulator with a clean log, no pending faults, fresh quota and default
    limits, and leave it that way for the next test."""
    state = handle.state
    baseline = {name: getattr(state.options, name) for name in _RUNTIME_FIELDS}
    state.reset()
    state.accepted_tokens.clear()
    yield handle
    state.release()
    for name, value in baseline.items():
        setattr(state.options, name, value)
    state.reset()
    state.accepted_tokens.clear()


@pytest.fixture
def emulator(emulator_session: EmulatorHandle) -> Iterator[EmulatorHandle]:
    """The shared emulator with a clean log, no pending faults, fresh quota and default limits."""
    yield from _cleaned(emulator_session)


@pytest.fixture(scope="session")
def v4_emulator_session() -> Iterator[EmulatorHandle]:
    """One embed-v-4-0 emulator (tiny backend, key auth) for the whole run."""
    options = EmulatorOptions(
        port=0, api_key=SecretStr(EMULATOR_KEY), backend="tiny", model="embed-v-4-0"
    )
    with running_emulator(options) as handle:
        yield handle


@pytest.fixture
def v4_emulator(v4_emulator_session: EmulatorHandle) -> Iterator[EmulatorHandle]:
    """The shared embed-v-4-0 emulator, cleaned like ``emulator``."""
    yield from _cleaned(v4_emulator_session)


@pytest.fixture(scope="session")
def no_input_type_emulator_session() -> Iterator[EmulatorHandle]:
    """One emulator serving a model that takes no ``input_type`` (tiny backend, key auth)."""
    options = EmulatorOptions(
        port=0, api_key=SecretStr(EMULATOR_KEY), backend="tiny", model="emulator-no-input-type"
    )
    with running_emulator(options) as handle:
        yield handle


@pytest.fixture
def no_input_type_emulator(
    no_input_type_emulator_session: EmulatorHandle,
) -> Iterator[EmulatorHandle]:
    """The shared no-``input_type`` emulator, cleaned like ``emulator``."""
    yield from _cleaned(no_input_type_emulator_session)


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``condition`` every 20 ms until it holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def _user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-user data and config directories point into a temporary folder, for this
    process and the subprocesses it starts: no test reads or writes the real user's state."""
    home = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))


@pytest.fixture(scope="session", autouse=True)
def _no_builder_outlives_the_run() -> Iterator[None]:
    """HNSW builders that stores closed in this process left running (they outlive their
    process by design) are stopped when the run ends, not left to take the CPU."""
    yield
    for proc in edge_builds._detached:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
