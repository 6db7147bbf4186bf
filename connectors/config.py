"""Configuration sections read by connectors. The pipeline composes them into its settings.

Secrets are SecretStr and are filled from the environment (AZURE_INFERENCE_CREDENTIAL,
QDRANT_API_KEY) by the settings loader; they never print.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EmbedderConfig(_Section):
    """``[embedder]``: which model embeds, where it runs, and how fast it may be called."""

    provider: Literal["local", "foundry"] = "local"
    model: str = "Cohere-embed-v3-english"
    endpoint: str = ""
    auth: Literal["key", "entra"] = "key"
    api_key: SecretStr | None = Field(default=None, exclude=True)
    api_version: str = "2024-05-01-preview"
    entra_scope: str = "https://cognitiveservices.azure.com/.default"
    entra_interactive: bool = False
    dimensions: int | None = Field(default=None, gt=0)
    encoding_format: Literal["float", "base64"] = "float"
    image_format: Literal["png", "jpeg", "webp"] = "png"
    max_images_per_request: int | None = Field(default=None, gt=0)
    on_unsupported: Literal["error", "omit"] = "error"
    max_concurrency: int = Field(default=8, gt=0)
    requests_per_minute: int = Field(default=0, ge=0)
    tokens_per_minute: int = Field(default=0, ge=0)
    tokens_per_image: int | None = Field(default=None, ge=0)
    max_attempts: int = Field(default=6, gt=0)
    timeout_seconds: float = Field(default=60.0, gt=0)


class StoreConfig(_Section):
    """``[store]``: the vector index."""

    kind: Literal["edge", "qdrant"] = "edge"
    url: str = ""
    collection: str = "images"
    api_key: SecretStr | None = Field(default=None, exclude=True)
    prefer_grpc: bool = False
    timeout_seconds: float = Field(default=30.0, gt=0)
    shard_number: int | None = Field(default=None, gt=0)
    replication_factor: int | None = Field(default=None, gt=0)
    write_consistency_factor: int | None = Field(default=None, gt=0)
    on_disk: bool = False
    quantization: Literal["none", "int8"] = "none"
    max_attempts: int = Field(default=5, gt=0)
    edge_index_threshold: int = Field(default=20_000, gt=0)
