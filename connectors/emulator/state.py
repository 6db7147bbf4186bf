"""What a running emulator knows: options, backend, request log, scripted faults, quota."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Literal

from imgrag.connectors.catalog import ModelFacts, lookup
from imgrag.connectors.embedder import Embedder
from imgrag.connectors.emulator.faults import FaultScript, InjectedFault, RandomFaults
from imgrag.connectors.emulator.options import EmulatorOptions
from imgrag.connectors.emulator.quota import QuotaLimiter
from pydantic import BaseModel

AuthKind = Literal["api-key", "bearer-key", "bearer-token"]


class RequestRecord(BaseModel):
    """One request as the emulator saw it. Never holds a key or token value."""

    route: Literal["images", "texts", "info"]
    path: str
    request_id: str
    status: int | None = None
    """Answer status; None while the request is still being served."""
    error_code: str | None = None
    api_version: str | None = None
    model: str | None = None
    input_type: str | None = None
    inputs: int = 0
    text_inputs: list[int] = []
    """Indexes of image inputs that carried a ``text`` caption."""
    dimensions: int | None = None
    encoding_format: str | None = None
    tokens: int = 0
    user_agent: str | None = None
    client_request_id: str | None = None
    auth: AuthKind | None = None
    """Which credential was accepted, or None when none was (or none was needed)."""


class EmulatorState:
    """Shared between the server thread and tests; every mutator is thread-safe."""

    def __init__(self, options: EmulatorOptions, backend: Embedder, backend_name: str) -> None:
        facts = lookup(options.model)
        assert facts is not None  # EmulatorOptions validated the name
        self.options = options
        self.profile: ModelFacts = facts
        self.backend = backend
        self.backend_name = backend_name
        self.accepted_tokens: set[str] = set()
        """Bearer tokens accepted for any audience (Entra ID tests add and revoke them)."""
        self.issued_tokens: dict[str, str] = {}
        """Tokens from ``issue_token``, each valid for one audience only."""
        self.requests: list[RequestRecord] = []
        self.quota = QuotaLimiter()
        self.faults = FaultScript()
        self.random = RandomFaults(options.seed)
        self.started_at = time.time()
        self._cond = threading.Condition()
        self._gate = threading.Event()
        self._gate.set()
        self._held = 0

    # --- facts --------------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        """Vector length served by default: the backend's, which may differ from the profile's."""
        return self.backend.info.dimension

    @property
    def dimension_note(self) -> str | None:
        if self.dimension == self.profile.dimension:
            return None
        return (
            f"backend {self.backend_name!r} produces {self.dimension} dimensions; "
            f"the real {self.profile.name} produces {self.profile.dimension}"
        )

    @property
    def max_image_bytes(self) -> int:
        return self.options.max_image_bytes or self.profile.max_image_bytes

    @property
    def max_request_bytes(self) -> int:
        return self.options.max_request_bytes or self.profile.max_request_bytes

    def issue_token(self, scope: str) -> str:
        """A bearer token for ``scope`` (``<audience>/.default``), as Entra ID would issue."""
        audience = scope.removesuffix("/.default").rstrip("/")
        token = f"emulator-token-{len(self.issued_tokens) + 1}"
        self.issued_tokens[token] = audience
        return token

    def token_audience(self, token: str) -> str | None:
        """The audience a known token was issued for ("*" for any), or None if unknown."""
        if token in self.accepted_tokens:
            return "*"
        return self.issued_tokens.get(token)

    @property
    def in_flight(self) -> int:
        """Requests holding a concurrency slot right now."""
        return self.quota.in_flight

    @property
    def held(self) -> int:
        """Requests waiting at the gate closed by ``hold()``."""
        return self._held

    # --- scripted faults ----------------------------------------------------------------

    def inject(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: float | None = None,
        retry_after_ms: int | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``count`` embeddings requests with ``status``.

        Retry hints are sent only when given. ``body`` replaces the error JSON; with status
        200 it lets tests send malformed successful answers.
        """
        fault = InjectedFault(status, retry_after, retry_after_ms, body, dict(headers or {}))
        self.faults.push(fault, count)

    def hold(self) -> None:
        """Keep admitted embeddings requests waiting (holding their slot) until ``release``."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    async def pass_gate(self) -> None:
        if self._gate.is_set():
            return
        self._change(held=+1)
        try:
            # A worker thread waits so the gate can be opened from any thread.
            await asyncio.to_thread(self._gate.wait)
        finally:
            self._change(held=-1)

    def reset(self) -> None:
        """Forget the request log, pending faults and the quota window."""
        with self._cond:
            self.requests.clear()
        self.issued_tokens.clear()
        self.faults.clear()
        self.quota.reset()

    # --- synchronisation for tests ------------------------------------------------------

    def wait_for(self, predicate: Callable[[EmulatorState], bool], timeout: float = 10.0) -> None:
        """Block until ``predicate(state)`` holds; TimeoutError after ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self), timeout):
                raise TimeoutError(f"emulator state did not reach the condition in {timeout}s")

    def notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def log(self, record: RequestRecord) -> None:
        with self._cond:
            self.requests.append(record)
            self._cond.notify_all()

    def _change(self, held: int) -> None:
        with self._cond:
            self._held += held
            self._cond.notify_all()
