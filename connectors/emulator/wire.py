"""Request and response bodies of the Foundry Models embeddings REST API, as pydantic models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EncodingFormat = Literal["float", "base64", "int8", "uint8", "binary", "ubinary"]
WireInputType = Literal["document", "query", "text"]


class _Request(BaseModel):
    # Unknown top-level fields are kept so the app can apply the ``extra-parameters`` rule.
    model_config = ConfigDict(extra="allow")

    input_type: WireInputType | None = None
    model: str | None = None
    dimensions: int | None = Field(default=None, gt=0)
    encoding_format: EncodingFormat | None = None

    @property
    def extra_fields(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


class ImageEmbeddingInput(BaseModel):
    """One image as a data URL, with an optional caption."""

    model_config = ConfigDict(extra="forbid")

    image: str
    text: str | None = None


class ImageEmbeddingsRequest(_Request):
    """Body of ``POST /images/embeddings``."""

    input: list[ImageEmbeddingInput] = Field(min_length=1)


class TextEmbeddingsRequest(_Request):
    """Body of ``POST /embeddings``."""

    input: list[str] | str

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingItem(BaseModel):
    index: int
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | list[int] | str


class UsageOut(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    """Body of a successful embeddings answer."""

    id: str
    object: Literal["list"] = "list"
    model: str
    data: list[EmbeddingItem]
    usage: UsageOut


class ModelInfoOut(BaseModel):
    """Body of ``GET /info``; the ``emulator`` block is ours, the rest mirrors the service."""

    model_name: str
    # Cohere deployments answer "embedding" (the azure-ai-inference SDK's load_client
    # accepts it for that reason, see its _patch.py).
    model_type: Literal["embedding", "embeddings"] = "embedding"
    model_provider_name: str
    emulator: dict[str, Any] = Field(default_factory=dict)


class ErrorDetail(BaseModel):
    """Which parameter was refused and the value it carried."""

    loc: list[str]
    value: Any = None


class ErrorInfo(BaseModel):
    code: str
    message: str
    status: int
    detail: ErrorDetail | None = None


class ErrorBody(BaseModel):
    """Error answer: ``{"error": {"code", "message", "status", "detail"}}``.

    Nested under ``error`` because that is what azure-core clients parse into the message.
    """

    error: ErrorInfo
