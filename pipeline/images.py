"""Image normalization: what every image goes through before it is embedded.

Decoding happens in worker threads. A decompression bomb is rejected before its pixels are
decoded; EXIF orientation is applied; animations give their first frame; exotic modes are
converted; large images are shrunk (with JPEG draft mode when possible) so the encoded
result fits the model's limits.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from imgrag.connectors.embedder import EmbedderInfo, ImageInput
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF when the optional extra is installed
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - depends on the optional extra
    pass

# A 12-megapixel photo is ~12M pixels; 100M pixels is far beyond any camera image we expect.
MAX_PIXELS = 100_000_000
Format = Literal["png", "jpeg", "webp"]


class ImageRejected(Exception):
    """This file cannot be embedded; ``reason`` is a short code for the failure journal."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What the header says, read without decoding the pixels."""

    width: int
    height: int
    source_format: str
    taken_at: str | None
    camera: str | None


@contextmanager
def _opened(raw: bytes, max_pixels: int) -> Iterator[Image.Image]:
    """Open (not decode) an image, mapping every Pillow failure to ImageRejected."""
    if len(raw) == 0:
        raise ImageRejected("empty", "the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageRejected(
                        "too_large",
                        f"{width}x{height} pixels is over the {max_pixels:,}-pixel limit "
                        "(a decompression-bomb guard); shrink the image to index it",
                    )
                yield img
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("too_large", f"decompression bomb guard: {exc}") from None
    except UnidentifiedImageError:
        raise ImageRejected(
            "undecodable", "not an image Pillow can read (corrupt, or another file type)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected("undecodable", f"the image is corrupt or truncated: {exc}") from None


def probe(raw: bytes, *, max_pixels: int = MAX_PIXELS) -> ImageFacts:
    """Identify an image from its header (cheap); raise ImageRejected when it is not one."""
    with _opened(raw, max_pixels) as img:
        width, height = img.size
        source_format = (img.format or "unknown").lower()
        exif = img.getexif()
    if exif.get(ExifTags.Base.Orientation) in (5, 6, 7, 8):
        width, height = height, width  # as displayed
    taken_at, camera = _exif_facts(exif)
    return ImageFacts(width, height, source_format, taken_at, camera)


@dataclass(frozen=True, slots=True)
class NormalizedImage:
    """Encoded bytes ready for the embedder."""

    data: bytes
    mime: str
    width: int
    height: int


def normalize(
    raw: bytes,
    *,
    max_side: int = 2048,
    max_bytes: int = 5 * 1024 * 1024,
    fmt: Format = "png",
    max_pixels: int = MAX_PIXELS,
) -> NormalizedImage:
    """Decode, orient, convert and shrink an image; raise ImageRejected with a reason."""
    with _opened(raw, max_pixels) as img:
        if getattr(img, "is_animated", False):
            img.seek(0)
        if img.format == "JPEG" and max(img.size) > max_side:
            # draft() decodes at 1/2, 1/4 or 1/8 scale (never below the size asked for):
            # much faster for big photos.
            img.draft("RGB", (max_side, max_side))
        img.load()  # errors here are mapped by _opened
        img = ImageOps.exif_transpose(img) or img
        img = _to_rgb(img)
    # Pillow's bilinear downscale is antialiased; LANCZOS costs 2.6x the time for no
    # difference an embedding model can see.
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    data = _encode(img, fmt)
    while len(data) > max_bytes and max(img.size) > 64:
        # Encoded size scales with pixel count: aim just under the limit in one step.
        scale = min(0.9, 0.95 * (max_bytes / len(data)) ** 0.5)
        img.thumbnail((int(img.width * scale), int(img.height * scale)), Image.Resampling.BILINEAR)
        data = _encode(img, fmt)
    return NormalizedImage(data=data, mime=f"image/{fmt}", width=img.width, height=img.height)


def for_embedder(
    raw: bytes, info: EmbedderInfo, fmt: Format = "png", text: str | None = None
) -> ImageInput:
    """An image as this embedder takes it: the same for documents and for queries."""
    norm = normalize(
        raw, max_side=min(2048, info.max_image_side), max_bytes=info.max_image_bytes, fmt=fmt
    )
    return ImageInput(norm.data, norm.mime, text)


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB for opaque images, RGBA where transparency matters; 16-bit and float scaled."""
    if img.mode in ("RGB", "RGBA"):
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Scale the full range down to 8 bits instead of clipping everything to white.
        extrema = img.getextrema()
        low, high = extrema if isinstance(extrema[0], int | float) else extrema[0]
        span = (high - low) or 1
        img = img.point(lambda v: (v - low) * 255.0 / span, "F").convert("L")
        return img.convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        return img.convert("RGBA")
    if img.mode in ("LA", "PA"):
        return img.convert("RGBA")
    return img.convert("RGB")  # P, L, 1, CMYK, YCbCr, LAB, HSV


def _encode(img: Image.Image, fmt: Format) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.convert("RGB").save(buf, format="JPEG", quality=90)
    elif fmt == "webp":
        img.save(buf, format="WEBP", quality=90)
    else:
        img.save(buf, format="PNG", compress_level=1)  # speed over size; the limit is 5 MB
    return buf.getvalue()


_DATETIME_ORIGINAL = 0x9003
_EXIF_IFD = 0x8769


def _exif_facts(exif: Image.Exif) -> tuple[str | None, str | None]:
    """(taken_at ISO-8601, camera "Make Model") from EXIF, when present and sane."""
    taken: str | None = None
    raw = None
    try:
        raw = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(ExifTags.Base.DateTime)
    except Exception:  # malformed EXIF must never fail an image
        raw = None
    if isinstance(raw, str):
        try:
            taken = datetime.strptime(raw.strip("\x00 "), "%Y:%m:%d %H:%M:%S").isoformat()
        except ValueError:
            taken = None
    make = str(exif.get(ExifTags.Base.Make, "") or "").strip("\x00 ")
    model = str(exif.get(ExifTags.Base.Model, "") or "").strip("\x00 ")
    if model.startswith(make):
        make = ""
    camera = " ".join(p for p in (make, model) if p) or None
    return taken, camera
