"""Emulator settings: what the ``imgrag emulator`` flags and tests can set."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from imgrag.connectors.catalog import CATALOG, lookup
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

DEFAULT_PORT = 8088
API_KEY_ENV = "IMGRAG_EMULATOR_API_KEY"
SUPPORTED_API_VERSIONS = ("2025-04-01",)
"""The GA version of the Model Inference API. ``2024-05-01-preview`` was deprecated on
2025-04-10 and retired on 2026-04-10 (the API's version lifecycle page)."""
EndpointKind = Literal["foundry", "serverless", "managed"]
ENTRA_AUDIENCE: dict[str, str | None] = {
    "foundry": "https://cognitiveservices.azure.com",
    "managed": "https://ml.azure.com",
    "serverless": None,  # serverless API endpoints take keys only
}


class EmulatorOptions(BaseModel):
    """How the emulator behaves. Quota, latency and faults may be changed while it runs."""

    # Assignment is validated so run-time changes (``state.options.fail_rate = 1.0``) stay sane.
    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    api_key: SecretStr | None = None
    """Key accepted on ``api-key`` and ``Authorization: Bearer``; None serves without a key."""
    cache_dir: Path | None = None
    """Where the local backend keeps the model it builds (the CLI passes the state
    directory's cache, so the emulator and the daemon build it once between them)."""
    require_auth: bool | None = None
    """Force auth on or off; None means "on when api_key is set". Entra tests set True and
    manage ``state.accepted_tokens``."""
    model: str = "Cohere-embed-v3-english"
    endpoint_kind: EndpointKind = "foundry"
    """Which Azure endpoint to behave like: a Foundry resource (``api-key`` or Bearer, keys or
    Entra tokens for cognitiveservices), a serverless API endpoint (``Authorization: Bearer
    <key>`` only) or a managed online endpoint (Bearer key, or Entra tokens for ml.azure.com)."""
    deployments: list[str] = Field(default_factory=list)
    """Deployment names that serve ``model``; empty means one deployment named like the model."""
    api_versions: list[str] = Field(default_factory=lambda: list(SUPPORTED_API_VERSIONS))
    rate_windows: list[float] = Field(default_factory=lambda: [1.0, 10.0, 60.0])
    """Windows (seconds) over which ``rpm`` is enforced, each allowing ``rpm * window / 60``
    requests, as the service does over 1 s and 10 s; ``tpm`` is enforced per minute."""
    retry_headers: bool = True
    """Send Retry-After / retry-after-ms on 429; False names the wait only in the message."""
    message_wait_s: float | None = Field(default=None, ge=0)
    """Without retry headers: the wait the 429 message names (None = the real wait)."""
    message_wait_max_s: float | None = Field(default=None, ge=0)
    """With ``message_wait_s``: name a wait drawn uniformly between the two instead."""
    ratelimit_headers: bool = True
    """Send ``x-ratelimit-limit-*`` / ``-remaining-*``; False hides the quota from clients."""
    max_request_bytes: int | None = Field(default=None, gt=0)
    """Overrides the profile's request-size cap (413 above it)."""
    backend: Literal["auto", "local", "tiny"] = "auto"
    image_only: bool = False
    """Answer the text route with 404, like a deployment without the text modality."""
    latency_ms: float = Field(default=0.0, ge=0)
    jitter: float = Field(default=0.2, ge=0, le=1)
    """Latency varies uniformly by this fraction either side of ``latency_ms``."""
    rpm: int = Field(default=0, ge=0)
    tpm: int = Field(default=0, ge=0)
    max_concurrency: int = Field(default=0, ge=0)
    fail_rate: float = Field(default=0.0, ge=0, le=1)
    seed: int = 0
    """Seeds the random latency jitter and random failures, for reproducible runs."""
    max_image_bytes: int | None = Field(default=None, gt=0)
    """Overrides the profile's per-image limit (5 MB for the real models)."""

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        facts = lookup(value)
        if facts is None:
            known = ", ".join(m.name for m in CATALOG.values())
            raise ValueError(f"unknown model {value!r}; the emulator serves: {known}")
        return facts.name

    @property
    def auth_required(self) -> bool:
        """Whether requests must carry a valid key or token."""
        return self.api_key is not None if self.require_auth is None else self.require_auth

    @property
    def deployment_names(self) -> list[str]:
        return self.deployments or [self.model]
