"""Emulator settings: what the ``imgrag emulator`` flags and tests can set."""

from __future__ import annotations

from typing import Literal

from imgrag.connectors.catalog import CATALOG, lookup
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

DEFAULT_PORT = 8088
API_KEY_ENV = "IMGRAG_EMULATOR_API_KEY"


class EmulatorOptions(BaseModel):
    """How the emulator behaves. Quota, latency and faults may be changed while it runs."""

    # Assignment is validated so run-time changes (``state.options.fail_rate = 1.0``) stay sane.
    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    api_key: SecretStr | None = None
    """Key accepted on ``api-key`` and ``Authorization: Bearer``; None serves without a key."""
    require_auth: bool | None = None
    """Force auth on or off; None means "on when api_key is set". Entra tests set True and
    manage ``state.accepted_tokens``."""
    model: str = "Cohere-embed-v3-english"
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
