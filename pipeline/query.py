"""One search, as one value: what the Python API takes, the daemon's ``POST /search`` body
and what ``imgrag search`` builds."""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any

from imgrag._errors import FilterError, QueryError
from imgrag.pipeline.filters import build_filter
from PIL import Image
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from qdrant_client.http import models as qm

ImageLike = str | Path | bytes | Image.Image
"""A query image: a path, encoded bytes or a PIL image."""


class SearchQuery(BaseModel):
    """Search by ``text``, by an example ``image``, by both, or for images ``similar_to`` an
    indexed one (its path relative to the folder; no embedding call).

    In Python, ``image`` takes a path, bytes or a PIL image and holds the encoded bytes; in
    JSON it is base64. ``filter`` is a simple dict (``{"folder": "cats", "tags": [...],
    "taken_after": "2024-01-01"}``) or a Qdrant filter (``must``/``should``/``must_not``).
    ``min_score`` drops weaker hits; ``unique`` keeps one hit per identical image;
    ``source`` keeps only that source's images, and names the source ``similar_to`` paths
    belong to (default: any source holding that path).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str | None = None
    image: bytes | None = None
    similar_to: str | None = None
    limit: int = Field(default=10, ge=1, le=1000, strict=True)
    filter: dict[str, Any] | None = None
    min_score: float | None = Field(default=None, strict=True, allow_inf_nan=False)
    unique: bool = Field(default=False, strict=True)
    source: str | None = None

    @field_validator("image", mode="before")
    @classmethod
    def _image_bytes(cls, value: object, info: ValidationInfo) -> object:
        if value is None or isinstance(value, bytes):
            return value
        if info.mode == "json" and isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except binascii.Error:
                raise ValueError("image must be base64-encoded bytes") from None
        if isinstance(value, Image.Image):
            buf = io.BytesIO()
            value.save(buf, format="PNG")
            return buf.getvalue()
        if isinstance(value, str | Path):
            try:
                return Path(value).read_bytes()
            except OSError as exc:
                raise ValueError(
                    f"query image {value} cannot be read: {exc.strerror or exc}"
                ) from None
        return value

    @field_validator("filter", mode="before")
    @classmethod
    def _filter_dict(cls, value: object) -> object:
        if isinstance(value, qm.Filter):
            value = value.model_dump(mode="json", exclude_none=True)
        build_filter(value)  # type: ignore[arg-type]  # every door checks it alike (FilterError)
        return value

    @field_serializer("image", when_used="json-unless-none")
    def _image_base64(self, value: bytes, _info: SerializationInfo) -> str:
        return base64.b64encode(value).decode("ascii")

    @model_validator(mode="after")
    def _something_to_search_by(self) -> SearchQuery:
        if self.similar_to is not None:
            if self.text or self.image is not None:
                raise ValueError("similar_to searches by an indexed image: give no text or image")
        elif not self.text and self.image is None:
            raise ValueError("nothing to search by: give text, an image, both, or similar_to")
        return self


def build_query(**fields: Any) -> SearchQuery:
    """A ``SearchQuery`` from keyword arguments; an invalid one is a one-line QueryError."""
    from pydantic import ValidationError

    try:
        return SearchQuery(**fields)
    except ValidationError as exc:
        raise query_error(exc) from None


def query_error(exc: Any) -> QueryError | FilterError:
    """A SearchQuery's ValidationError as the error the caller sees: the FilterError a
    filter raised, else a QueryError naming the field."""
    cause = exc.errors()[0].get("ctx", {}).get("error")
    if isinstance(cause, FilterError):
        return FilterError(str(cause))
    return QueryError(describe_validation_error(exc))


def describe_validation_error(exc: Any) -> str:
    """The first problem of a pydantic ValidationError, as one line naming the field."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
