"""Checking image inputs the way the service does: data URL, size limit, decodable format."""

from __future__ import annotations

import base64
import binascii
import io
import re

from imgrag.connectors.embedder import ImageInput
from PIL import Image, UnidentifiedImageError

# The formats the Foundry image embedding models document.
ACCEPTED_FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(?P<data>.*)$", re.S)
_WORD = re.compile(r"\S+")


class InputProblem(Exception):
    """An input the service would refuse with 400; the message names the input."""


def decode_image(index: int, url: str, text: str | None, max_bytes: int) -> tuple[ImageInput, int]:
    """Turn one ``data:image/...;base64,`` URL into checked image bytes and its pixel count."""
    match = _DATA_URL.match(url)
    if match is None:
        raise InputProblem(
            f"input[{index}].image is not a base64 data URL "
            "(expected 'data:image/<format>;base64,...'): invalid data uri"
        )
    mime = match["mime"].lower()
    if not mime.startswith("image/"):
        raise InputProblem(f"input[{index}].image has media type {mime!r}; an image is required")
    payload = match["data"]
    # Cheap bound before decoding: base64 is 4 characters per 3 bytes.
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise InputProblem(_too_large(index, len(payload) * 3 // 4, max_bytes))
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InputProblem(f"input[{index}].image is not valid base64") from None
    if len(data) > max_bytes:
        raise InputProblem(_too_large(index, len(data), max_bytes))
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            pixels = img.width * img.height
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InputProblem(f"input[{index}].image could not be decoded as an image") from None
    if fmt not in ACCEPTED_FORMATS:
        accepted = ", ".join(f.lower() for f in ACCEPTED_FORMATS)
        raise InputProblem(
            f"input[{index}].image format {fmt.lower()!r} is not supported ({accepted})"
        )
    return ImageInput(data=data, mime=ACCEPTED_FORMATS[fmt], text=text), pixels


def _too_large(index: int, size: int, limit: int) -> str:
    return f"input[{index}].image is {size} bytes; images may be at most {limit} bytes"


def image_tokens(pixels: int, per_image: int, pixel_priced: bool) -> int:
    """Tokens billed for one image: flat, or in proportion to 512x512 when priced by pixels."""
    if not pixel_priced:
        return per_image
    return max(1, round(per_image * pixels / (512 * 512)))


def text_tokens(text: str) -> int:
    """A word count stands in for the tokenizer: close enough to pace quota in tests."""
    return max(1, len(_WORD.findall(text)))
