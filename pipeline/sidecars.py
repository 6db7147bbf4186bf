"""Sidecar metadata: ``photo.txt`` holds a caption, ``photo.json`` a caption, tags and more."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_SIDECAR_BYTES = 64 * 1024
MAX_CAPTION_CHARS = 2000


class SidecarError(Exception):
    """The sidecar exists but is not usable; the message says why."""


class Sidecar(BaseModel):
    """What a sidecar may say about its image."""

    model_config = ConfigDict(extra="allow")

    caption: str | None = Field(default=None, max_length=MAX_CAPTION_CHARS)
    tags: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @property
    def extra_metadata(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def sidecar_paths(image: Path) -> tuple[Path, Path]:
    """``photo.jpg`` → (``photo.txt``, ``photo.json``)."""
    return image.with_suffix(".txt"), image.with_suffix(".json")


def read_sidecar(image: Path) -> tuple[Sidecar, str]:
    """The sidecar (empty when there is none) and a signature that changes when it is edited."""
    txt, js = sidecar_paths(image)
    caption: str | None = None
    data: dict[str, Any] = {}
    digest = hashlib.sha256()
    for path in (txt, js):
        try:
            raw = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            continue
        if len(raw) > MAX_SIDECAR_BYTES:
            raise SidecarError(f"{path.name} is over {MAX_SIDECAR_BYTES // 1024} KB")
        digest.update(path.name.encode() + b"\x00" + raw)
        if path == txt:
            caption = raw.decode("utf-8", "replace").strip()[:MAX_CAPTION_CHARS] or None
        else:
            try:
                loaded = json.loads(raw)
            except ValueError as exc:
                raise SidecarError(f"{path.name} is not valid JSON: {exc}") from None
            if not isinstance(loaded, dict):
                raise SidecarError(f"{path.name} must hold a JSON object")
            data = loaded
    if caption and not data.get("caption"):
        data["caption"] = caption
    try:
        sidecar = Sidecar.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise SidecarError(f"{js.name}: {where}: {err['msg']}") from None
    return sidecar, digest.hexdigest()[:16] if data or caption else ""
