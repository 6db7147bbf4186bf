"""Sidecar metadata: ``photo.txt`` holds a caption, ``photo.json`` a caption, tags and more."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from imgrag._errors import ReadRefused, SidecarError
from imgrag.pipeline.names import is_plain, stored
from imgrag.pipeline.reading import read_inside
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_SIDECAR_BYTES = 64 * 1024
MAX_CAPTION_CHARS = 2000
# Metadata nests a few levels; the limit keeps every consumer (payload, store) clear of
# recursion limits.
MAX_JSON_DEPTH = 32


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


def read_sidecar(image: Path, root: Path | None = None) -> tuple[Sidecar, str]:
    """The sidecar (empty when there is none) and a signature that changes when it is edited.

    A sidecar is read only when it is a regular file whose real path is inside ``root``
    (default: the image's folder), at most MAX_SIDECAR_BYTES; anything else that exists
    under its name (a FIFO, a device, a link out of the folder) is a SidecarError.
    """
    real_root = Path(os.path.realpath(root if root is not None else image.parent))
    txt, js = sidecar_paths(image)
    caption: str | None = None
    data: dict[str, Any] = {}
    digest = hashlib.sha256()
    for path in (txt, js):
        name = stored(path.name)
        try:
            if path.is_dir():
                continue  # a folder that happens to share the name
            raw, _ = read_inside(path, real_root, MAX_SIDECAR_BYTES)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except ReadRefused as exc:
            if exc.too_large:
                raise SidecarError(f"{name} is over {MAX_SIDECAR_BYTES // 1024} KB") from None
            raise SidecarError(str(exc)) from None
        except OSError as exc:
            raise SidecarError(f"{name} cannot be read: {exc.strerror or exc}") from None
        digest.update(os.fsencode(path.name) + b"\x00" + raw)
        if path == txt:
            caption = raw.decode("utf-8", "replace").strip()[:MAX_CAPTION_CHARS] or None
        else:
            data = parse_json_object(raw, name)
    if caption and not data.get("caption"):
        data["caption"] = caption
    try:
        sidecar = Sidecar.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise SidecarError(f"{stored(js.name)}: {where}: {err['msg']}") from None
    return sidecar, digest.hexdigest()[:16] if data or caption else ""


class _Refused(ValueError):
    """A JSON value we do not take (NaN, infinities, numbers no store can hold)."""


def parse_json_object(raw: bytes, name: str = "sidecar") -> dict[str, Any]:
    """A JSON object from untrusted bytes, with limits: MAX_JSON_DEPTH levels, finite
    numbers, 64-bit integers, valid Unicode text. SidecarError says what is wrong."""
    if _depth(raw) > MAX_JSON_DEPTH:
        raise SidecarError(f"{name} nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        loaded = json.loads(raw, parse_constant=_no_constant, parse_float=_finite, parse_int=_int64)
    except _Refused as exc:
        raise SidecarError(f"{name}: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise SidecarError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(loaded, dict):
        raise SidecarError(f"{name} must hold a JSON object")
    if not _valid_text(loaded):
        raise SidecarError(f"{name} holds text that is not valid Unicode (a lone surrogate)")
    return loaded


def _no_constant(token: str) -> Any:
    raise _Refused(f"{token} is not a number JSON allows")


def _finite(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise _Refused(f"{token} is too large for a number")
    return value


def _int64(token: str) -> int:
    value = int(token)
    if not -(2**63) <= value < 2**63:
        raise _Refused(f"{token[:40]} is outside the 64-bit integer range")
    return value


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _depth(raw: bytes) -> int:
    """How deeply arrays and objects nest, counted without parsing (so without recursion)."""
    skeleton = _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in skeleton:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _valid_text(value: Any) -> bool:
    """No string (key or value) holds a lone surrogate, which no payload can store."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not is_plain(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True
