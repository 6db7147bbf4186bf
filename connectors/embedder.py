"""The Embedder protocol: what the pipeline needs from any embedding backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

InputType = Literal["document", "query", "text"]


@dataclass(frozen=True, slots=True)
class ImageInput:
    """One image to embed: encoded bytes (already normalized) plus an optional caption."""

    data: bytes
    mime: str = "image/png"
    text: str | None = None


class EmbedderInfo(BaseModel):
    """What an embedder is and what it accepts."""

    model_config = ConfigDict(frozen=True)

    provider: str
    model: str
    dimension: int
    family: str = ""
    """The catalog model behind the deployment (e.g. Cohere-embed-v3-english); "" unknown."""
    max_images_per_request: int = 1
    supports_input_type: bool = True
    supports_image_text: bool = True
    supports_text: bool = True
    max_image_bytes: int = 5 * 1024 * 1024
    max_image_side: int = 4096
    tokens_per_image: int = 1000
    recommended_concurrency: int = 1
    """How many embedding requests the pipeline should keep in flight at once."""


@dataclass(slots=True)
class Embedding:
    """One vector plus what was actually applied when it was computed."""

    vector: list[float]
    input_type: InputType | None
    """The input_type the service applied; None when it had to be omitted."""
    text_applied: bool = False
    """Whether the caption of an image+text pair was part of the embedding."""


class DeploymentUsage(BaseModel):
    """One deployment of a pool: its counters, whether it is in service, its share."""

    name: str
    endpoint: str
    requests: int = 0
    images: int = 0
    throttled: int = 0
    failures: int = 0
    """Requests that failed there and went to another deployment (5xx, timeouts, refusals)."""
    healthy: bool = True
    share: float = 0.0
    """Fraction of the pool's embedded inputs this deployment served."""


class Usage(BaseModel):
    """Counters since the embedder was created. ``Embedder.usage`` returns a snapshot."""

    requests: int = 0
    images: int = 0
    texts: int = 0
    tokens: int = 0
    retries: int = 0
    throttled: int = 0
    deployments: list[DeploymentUsage] = Field(default_factory=list)
    """Per deployment when the embedder is a pool of several; empty otherwise."""


@runtime_checkable
class Embedder(Protocol):
    """Turns images, image+text pairs and texts into vectors of one space."""

    @property
    def info(self) -> EmbedderInfo: ...

    @property
    def usage(self) -> Usage: ...

    async def embed_images(
        self, items: Sequence[ImageInput], input_type: InputType
    ) -> list[Embedding]: ...

    async def embed_texts(self, texts: Sequence[str], input_type: InputType) -> list[Embedding]: ...

    async def probe(self) -> EmbedderInfo:
        """Check the embedder works before any real work (a remote one: one small, billed
        request) and return its info, now with the dimension it really serves."""
        ...

    async def aclose(self) -> None: ...
