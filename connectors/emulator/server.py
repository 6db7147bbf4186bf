"""Running the emulator with uvicorn: in the foreground (CLI) or a background thread (tests)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from imgrag.connectors.catalog import lookup
from imgrag.connectors.embedder import Embedder
from imgrag.connectors.emulator.app import create_app
from imgrag.connectors.emulator.backends import make_backend
from imgrag.connectors.emulator.options import EmulatorOptions
from imgrag.connectors.emulator.state import EmulatorState

API_VERSION = "2025-04-01"


@dataclass(frozen=True, slots=True)
class EmulatorHandle:
    """A running emulator: where it listens and its live state."""

    url: str
    """The endpoint to configure, e.g. ``http://127.0.0.1:PORT/models``."""
    root_url: str
    """The same API without the ``/models`` prefix."""
    host: str
    port: int
    state: EmulatorState
    api_version: str = API_VERSION

    @property
    def api_key(self) -> str | None:
        key = self.state.options.api_key
        return key.get_secret_value() if key else None

    @property
    def options(self) -> EmulatorOptions:
        return self.state.options


class _Server(uvicorn.Server):
    """uvicorn.Server that reports once its sockets listen."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[_Server], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started(self)


def bound_port(server: uvicorn.Server) -> int:
    """The port the server actually listens on (meaningful with port 0)."""
    for srv in server.servers:
        for sock in srv.sockets:
            return int(sock.getsockname()[1])
    raise RuntimeError("the emulator is not listening")


def build_state(options: EmulatorOptions, embedder: Embedder | None = None) -> EmulatorState:
    """Options plus a backend (given, or chosen by ``options.backend``) as a fresh state."""
    if embedder is not None:
        return EmulatorState(options, embedder, embedder.info.provider)
    facts = lookup(options.model)
    assert facts is not None
    made, name = make_backend(options.backend, facts.dimension, options.cache_dir)
    return EmulatorState(options, made, name)


def _config(app: Any, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )


@contextmanager
def running_emulator(
    options: EmulatorOptions | None = None,
    *,
    embedder: Embedder | None = None,
    startup_timeout: float = 20.0,
    **overrides: Any,
) -> Iterator[EmulatorHandle]:
    """Serve the emulator on 127.0.0.1 (ephemeral port) in a background thread.

    ``overrides`` are EmulatorOptions fields (``api_key="k", model="embed-v-4-0"``);
    ``host`` and ``port`` default to loopback and 0. ``embedder`` replaces the backend named
    by the options (the caller keeps ownership); a backend built here is closed on exit.
    """
    values = {"host": "127.0.0.1", "port": 0}
    if options is not None:
        values |= options.model_dump(exclude_unset=True)
    values |= overrides
    opts = EmulatorOptions.model_validate(values)
    state = build_state(opts, embedder)
    started = threading.Event()
    server = _Server(_config(create_app(state), opts.host, opts.port), lambda _: started.set())
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
        finally:
            started.set()  # wake the caller even when startup failed

    thread = threading.Thread(target=run, name="imgrag-emulator", daemon=True)
    thread.start()
    try:
        if not started.wait(startup_timeout):
            raise RuntimeError(f"the emulator did not start within {startup_timeout}s")
        if not server.started:
            cause = f"{failure[0]!r}" if failure else "see the log above"
            raise RuntimeError(f"the emulator failed to start on {opts.host}:{opts.port} ({cause})")
        port = bound_port(server)
        host = opts.host if opts.host not in ("0.0.0.0", "::") else "127.0.0.1"
        root = f"http://{host}:{port}"
        yield EmulatorHandle(url=f"{root}/models", root_url=root, host=host, port=port, state=state)
    finally:
        state.release()
        server.should_exit = True
        thread.join(timeout=10)
        if embedder is None:
            asyncio.run(state.backend.aclose())


def serve(options: EmulatorOptions, on_ready: Callable[[str, EmulatorState], None]) -> None:
    """Serve in the foreground until interrupted; calls ``on_ready(endpoint, state)`` once up."""
    state = build_state(options)

    def started(server: uvicorn.Server) -> None:
        host = options.host if options.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        on_ready(f"http://{host}:{bound_port(server)}/models", state)

    server = _Server(_config(create_app(state), options.host, options.port), started)
    try:
        server.run()
    finally:
        asyncio.run(state.backend.aclose())
