"""Configuration sections read by connectors. The pipeline composes them into its settings.

Secrets are SecretStr and are filled from the environment (AZURE_INFERENCE_CREDENTIAL,
QDRANT_API_KEY) by the settings loader; they never print.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DeploymentConfig(_Section):
    """One ``[[embedder.deployments]]`` entry: a deployment of the same model, with its own
    endpoint, credential and quota. Unset fields take the ``[embedder]`` section's value."""

    name: str = ""
    """A label for status and metrics; empty = ``<host>/<model>``."""
    endpoint: str
    model: str = ""
    """The deployment name sent as ``model``; empty = ``[embedder] model``."""
    endpoint_kind: Literal["auto", "foundry", "serverless", "managed"] | None = None
    auth: Literal["key", "entra"] | None = None
    api_key_env: str = ""
    """The environment variable holding this deployment's key (auth = "key"); empty =
    ``AZURE_INFERENCE_CREDENTIAL``, the section's key."""
    entra_scope: str | None = None
    requests_per_minute: int | None = Field(default=None, ge=0)
    tokens_per_minute: int | None = Field(default=None, ge=0)
    max_concurrency: int | None = Field(default=None, gt=0)


class EmbedderConfig(_Section):
    """``[embedder]``: which model embeds, where it runs, and how fast it may be called."""

    provider: Literal["local", "foundry"] = "local"
    model: str = "Cohere-embed-v3-english"
    """For Foundry: the deployment name, sent as ``model`` (it may differ from the model)."""
    family: str = ""
    """The model behind the deployment (e.g. ``embed-v-4-0``); empty = learned from
    ``GET /info``, else taken from ``model`` when that names a known model."""
    endpoint: str = ""
    endpoint_kind: Literal["auto", "foundry", "serverless", "managed"] = "auto"
    """``auto`` recognizes the kind from the host name."""
    auth: Literal["key", "entra"] = "key"
    api_key: SecretStr | None = Field(default=None, exclude=True)
    api_version: str = "2025-04-01"
    entra_scope: str = ""
    """Empty = the scope of the endpoint kind (cognitiveservices or ml.azure.com)."""
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
    max_request_bytes: int | None = Field(default=None, gt=0)
    """Cap on one request's body; default the model's (about 20 MB for Cohere)."""
    max_attempts: int = Field(default=6, gt=0)
    """Attempts for transient failures other than throttling (5xx, 408, connection)."""
    throttle_budget_seconds: float = Field(default=600.0, gt=0)
    """How long one request keeps waiting out 429s before it is reported as unavailable."""
    timeout_seconds: float = Field(default=60.0, gt=0)
    deployments: list[DeploymentConfig] = Field(default_factory=list)
    """Several deployments of the same model used as one pool (``[[embedder.deployments]]``);
    empty = the single ``endpoint`` above."""


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
    """Embedded store, build by count: this many new points outside an HNSW graph start a
    background build once writes pause or the oldest of them has waited
    ``edge_settle_seconds``. A quarter of it is the smallest segment given a graph."""
    edge_build_after_seconds: float = Field(default=60.0, gt=0)
    """Embedded store, build by age: the longest new points wait outside a graph under a
    steady trickle of writes, once there are a quarter of ``edge_index_threshold``."""
    edge_settle_seconds: float = Field(default=2.0, ge=0)
    """Embedded store: quiet time after the last write before a flush or a build."""
