"""The Foundry embeddings wire format: request bodies and validated responses."""

from __future__ import annotations

import base64
import math
from typing import Any, Literal

import numpy as np
from imgrag._errors import MalformedResponse
from pydantic import BaseModel, ConfigDict, ValidationError


class _EmbeddingItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    index: int
    embedding: list[float] | str
    object: str = "embedding"


class _UsageBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingsResponse(BaseModel):
    """``{"data": [...], "model": ..., "usage": {...}}`` as the service sends it."""

    model_config = ConfigDict(extra="ignore")

    data: list[_EmbeddingItem]
    model: str | None = None
    object: str | None = None
    usage: _UsageBody | None = None


class ServiceError(BaseModel):
    """What the service says when it refuses a request, reduced to one readable line.

    The service answers in several shapes: nested under ``error`` (``code``, ``message``,
    ``details``; the message is sometimes itself a JSON string) or flat (``code``,
    ``message``, ``detail.loc`` naming the refused parameter).
    """

    code: str = ""
    message: str = ""
    detail: str = ""
    loc: list[str] = []

    @classmethod
    def from_response(cls, body: bytes) -> ServiceError:
        import json

        try:
            raw: Any = json.loads(body)
        except ValueError:
            return cls(message=body[:300].decode("utf-8", "replace").strip())
        if not isinstance(raw, dict):
            return cls(message=str(raw)[:300])
        err = raw.get("error", raw)
        if isinstance(err, str):
            return cls(message=err, detail=_text(raw.get("detail")) or _text(raw.get("message")))
        if not isinstance(err, dict):
            return cls(message=str(err)[:300])
        detail = err.get("detail", raw.get("detail"))
        loc: list[str] = []
        for part in detail if isinstance(detail, list) else [detail]:
            if isinstance(part, dict) and isinstance(part.get("loc"), list):
                loc = [str(p) for p in part["loc"]]
                break
        details = err.get("details", raw.get("details"))
        return cls(
            code=_text(err.get("code")),
            message=_unwrap(_text(err.get("message")) or _text(raw.get("message"))),
            detail=_text(details) if details else ("" if loc else _text(detail)),
            loc=loc,
        )

    def text(self) -> str:
        parts = [p for p in (self.code, self.message, self.detail) if p]
        where = f" (at {'.'.join(self.loc)})" if self.loc else ""
        return (": ".join(parts) if parts else "(no message)") + where


def _unwrap(message: str) -> str:
    """``'{"message":"invalid data uri"}'`` -> ``'invalid data uri'``."""
    import json

    if message.startswith("{"):
        try:
            inner = json.loads(message)
        except ValueError:
            return message
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
    return message


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def decode_vectors(
    body: bytes,
    *,
    expected: int,
    encoding: Literal["float", "base64"],
    dimensions: int | None,
    request_id: str,
) -> tuple[list[list[float]], int | None]:
    """Validate an embeddings response and return vectors in input order plus billed tokens.

    Raises MalformedResponse quoting the request id when anything is off.
    """

    def bad(why: str) -> MalformedResponse:
        return MalformedResponse(f"malformed embeddings response ({why}); request id {request_id}")

    try:
        parsed = EmbeddingsResponse.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise bad(f"{where}: {first['msg']}") from None
    if len(parsed.data) != expected:
        raise bad(f"{len(parsed.data)} embeddings for {expected} inputs")
    if sorted(item.index for item in parsed.data) != list(range(expected)):
        raise bad("indexes do not match the inputs")
    vectors: list[list[float]] = [[] for _ in range(expected)]
    dim: int | None = None
    for item in parsed.data:
        vec = _decode(item.embedding, encoding, bad)
        if dim is None:
            dim = len(vec)
        if len(vec) != dim or dim == 0:
            raise bad("embeddings of different dimensions")
        if not all(math.isfinite(x) for x in vec):
            raise bad("non-finite numbers in an embedding")
        vectors[item.index] = vec
    if dimensions is not None and dim != dimensions:
        raise bad(f"asked for {dimensions} dimensions, got {dim}")
    tokens = parsed.usage.prompt_tokens or parsed.usage.total_tokens if parsed.usage else None
    return vectors, tokens


def _decode(value: list[float] | str, encoding: str, bad: Any) -> list[float]:
    if isinstance(value, list):
        return value
    if encoding != "base64":
        raise bad("embedding is a string but float encoding was asked for")
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raise bad("embedding is not valid base64") from None
    if len(raw) % 4:
        raise bad("base64 embedding is not a whole number of float32 values")
    return np.frombuffer(raw, dtype="<f4").astype(float).tolist()
