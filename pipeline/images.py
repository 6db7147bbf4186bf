"""Image normalization: what every image goes through before it is embedded.

Decoding happens in worker threads. A decompression bomb is rejected before its pixels are
decoded; EXIF orientation is applied; animations give their first frame; exotic modes are
converted; large images are shrunk (with JPEG draft mode when possible) so the encoded
result fits the model's limits.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
from imgrag._errors import ImageRejected
from imgrag.connectors.embedder import EmbedderInfo, ImageInput
from PIL import ExifTags, Image, UnidentifiedImageError

try:  # fpng: a PNG encoder an order of magnitude faster than zlib at level 1 (x86-64 wheels)
    import fpng_py as _fpng  # type: ignore[import-untyped, import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - Pillow's encoder is the fallback
    _fpng = None

try:  # HEIC/HEIF when the optional extra is installed
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - depends on the optional extra
    pass

# A 12-megapixel photo is ~12M pixels; 100M pixels is far beyond any camera image we expect.
MAX_PIXELS = 100_000_000
Format = Literal["png", "jpeg", "webp"]
# Cohere Embed v4 downsamples any image above 2,458,624 pixels (1568 x 1568) to that area
# before embedding it (its model card on Amazon Bedrock, "Image sizing"); pixels beyond that
# cost preparation time and upload bytes and are thrown away by the service. Embed v3
# publishes no input resolution; it gets the same budget.
MODEL_PIXELS = 1568 * 1568
# Wide panoramas stay within this side even when under the area budget.
DEFAULT_MAX_SIDE = 2048


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What the header says, read without decoding the pixels."""

    width: int
    height: int
    source_format: str
    taken_at: str | None
    camera: str | None


# Pillow opens these but needs an outside program or OS library to decode them.
_NEEDS_TOOLS = frozenset({"EPS", "WMF", "EMF"})
_Z_RLE = 3  # zlib's Z_RLE strategy, as Pillow's PNG encoder takes it (compress_type)
_DEEP_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I;32", "I;32B"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@contextmanager
def _opened(raw: bytes, max_pixels: int) -> Iterator[Image.Image]:
    """Open (not decode) an image, mapping every Pillow failure to ImageRejected.

    Failures inside the ``with`` body (decoding) are mapped too: a hostile file can make a
    decoder raise almost anything.
    """
    if len(raw) == 0:
        raise ImageRejected("empty", "the file is empty (0 bytes)")
    fmt = "unknown"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as img:
                fmt = img.format or fmt
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
    except NotImplementedError as exc:
        kind = "this file" if fmt == "unknown" else f"this {fmt} file"
        raise ImageRejected(
            "unsupported_format", f"Pillow recognises {kind} but cannot decode it: {exc}"
        ) from None
    except MemoryError:
        raise ImageRejected("too_large", "not enough memory to decode the image") from None
    except Exception as exc:
        if fmt in _NEEDS_TOOLS:
            raise ImageRejected(
                "unsupported_format", f"{fmt} needs a program imgrag does not use: {exc}"
            ) from None
        raise ImageRejected(
            "undecodable", f"the image is corrupt or truncated: {_describe(exc)}"
        ) from None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, OSError | ValueError | SyntaxError | EOFError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def probe(raw: bytes, *, max_pixels: int = MAX_PIXELS) -> ImageFacts:
    """Identify an image from its header (cheap); raise ImageRejected when it is not one."""
    with _opened(raw, max_pixels) as img:
        width, height = img.size
        source_format = (img.format or "unknown").lower()
        exif = _exif(img)
        turned = _orientation(exif) in (5, 6, 7, 8) and not _oriented_by_pillow(img)
    if turned:
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
    max_area: int = MODEL_PIXELS,
    on_decoded: Callable[[Image.Image], None] | None = None,
) -> NormalizedImage:
    """Decode, orient, convert and shrink an image; raise ImageRejected with a reason.

    ``on_decoded`` sees the oriented RGB(A) image before it is encoded (ingestion makes the
    gallery's thumbnail from it, so nothing decodes the file twice); it must not modify it.

    An image within ``max_side`` and ``max_area`` is encoded exactly as before (same bytes,
    so the same embedding input); a larger one is decoded at reduced scale where the format
    allows it, downscaled once, and encoded with the fast settings.
    """
    with _opened(raw, max_pixels) as img:
        if getattr(img, "is_animated", False):
            img.seek(0)
        target = fit(img.size, max_side, max_area)
        if target is not None and img.format == "JPEG":
            # draft() decodes at 1/2, 1/4 or 1/8 scale, never below the size asked for: the
            # IDCT does most of the downscale for free. Asked for the target itself (not a
            # square), a 12 MP photo decodes at half scale.
            img.draft("RGB", target)
        img.load()  # errors here are mapped by _opened
        orientation = _orientation(_exif(img))
        decoded = img
    fast = target is not None
    if fast and orientation not in _TRANSPOSE and _plain_rgb(decoded):
        # _to_rgb would only copy it: shrink first, so a large image (a 49 MP PNG has no
        # scaled decoder) never has a second full-size copy. The same pixels either way.
        decoded = _shrunk(decoded, max_side, max_area)
    img = _to_rgb(decoded)
    del decoded
    if orientation in _TRANSPOSE:
        img = img.transpose(_TRANSPOSE[orientation])
    if fast:
        img = _shrunk(img, max_side, max_area)
    if on_decoded is not None:
        on_decoded(img)
    data = _encode(img, fmt, fast=fast)
    while len(data) > max_bytes and max(img.size) > 64:
        # Encoded size scales with pixel count: aim just under the limit in one step.
        scale = min(0.9, 0.95 * (max_bytes / len(data)) ** 0.5)
        img.thumbnail((int(img.width * scale), int(img.height * scale)), Image.Resampling.BILINEAR)
        data = _encode(img, fmt, fast=fast)
    return NormalizedImage(data=data, mime=f"image/{fmt}", width=img.width, height=img.height)


def _plain_rgb(img: Image.Image) -> bool:
    """RGB with no transparency key and no colour profile: what _to_rgb leaves as it is."""
    return img.mode == "RGB" and "transparency" not in img.info and not img.info.get("icc_profile")


def _shrunk(img: Image.Image, max_side: int, max_area: int) -> Image.Image:
    size = fit(img.size, max_side, max_area)
    if size is None:
        return img
    # Bilinear is antialiased in Pillow; LANCZOS costs 2.6x the time for no difference an
    # embedding model can see. reduce() first (reducing_gap) keeps formats without a
    # scaled decoder (WebP, HEIC, PNG) cheap too.
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def fit(size: tuple[int, int], max_side: int, max_area: int) -> tuple[int, int] | None:
    """The size an image of ``size`` is shrunk to, or None when it already fits both limits."""
    width, height = size
    scale = min(1.0, max_side / max(width, height), (max_area / (width * height)) ** 0.5)
    if scale >= 1.0:
        return None
    return max(1, int(width * scale)), max(1, int(height * scale))


def for_embedder(
    raw: bytes,
    info: EmbedderInfo,
    fmt: Format = "png",
    text: str | None = None,
    on_decoded: Callable[[Image.Image], None] | None = None,
    max_pixels: int = MAX_PIXELS,
) -> ImageInput:
    """An image as this embedder takes it: the same for documents and for queries."""
    norm = normalize(
        raw,
        max_side=min(DEFAULT_MAX_SIDE, info.max_image_side),
        max_bytes=info.max_image_bytes,
        fmt=fmt,
        max_pixels=max_pixels,
        on_decoded=on_decoded,
    )
    return ImageInput(norm.data, norm.mime, text)


def _to_rgb(img: Image.Image) -> Image.Image:
    """A new RGB image, or RGBA where transparency matters (an alpha band or a tRNS
    colour); 16-bit and float scaled, colour profiles applied. Its ``info`` is empty, so
    nothing of the source (a transparency key, a profile) is carried into the encoding."""
    mode = img.mode
    key = img.info.get("transparency")
    alpha = mode in _ALPHA_MODES or key is not None
    try:
        if mode in _DEEP_MODES:
            out = _deep_to_rgb(img, key)
        elif mode == "LAB":
            out = _lab_to_rgb(img)
        else:
            out = _convert(img, "RGBA" if alpha else "RGB")
            out = _to_srgb(out, img)
    except ImageRejected:
        raise
    except (ValueError, OSError, TypeError) as exc:
        raise ImageRejected(
            "unsupported_format", f"mode {mode} cannot be converted to RGB: {exc}"
        ) from None
    if out is img:
        out = img.copy()
    out.info = {}
    return out


def _convert(img: Image.Image, target: str) -> Image.Image:
    if img.mode == target:
        return img
    try:
        return img.convert(target)
    except ValueError:
        # Modes without a direct route (premultiplied La, BGR;15, ...) go through one
        # Pillow knows.
        via = "RGBA" if target == "RGBA" else "RGB"
        for step in ("RGBA", "LA", "L"):
            try:
                return img.convert(step).convert(via)
            except ValueError:
                continue
        raise


def _deep_to_rgb(img: Image.Image, key: object) -> Image.Image:
    """16/32-bit integer and float images: the full range scaled to 8 bits (not clipped)."""
    pixels = np.asarray(img)
    if pixels.ndim != 2:
        raise ImageRejected("unsupported_format", f"mode {img.mode} with {pixels.ndim} axes")
    values = pixels.astype(np.float64)
    finite = np.isfinite(values)
    if finite.any():
        low, high = float(values[finite].min()), float(values[finite].max())
    else:
        low = high = 0.0
    span = (high - low) or 1.0
    scaled = np.where(finite, (values - low) * (255.0 / span), 0.0)
    gray = Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8), "L")
    if isinstance(key, int) and not isinstance(key, bool):
        mask = Image.fromarray(np.where(pixels == key, 0, 255).astype(np.uint8), "L")
        rgba = gray.convert("RGBA")
        rgba.putalpha(mask)
        return rgba
    return gray.convert("RGB")


def _lab_to_rgb(img: Image.Image) -> Image.Image:
    """CIE L*a*b* through littleCMS (Pillow has no direct LAB to RGB conversion)."""
    from PIL import ImageCms

    transform = ImageCms.buildTransform(
        ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
    )
    out = ImageCms.applyTransform(img, transform)
    if out is None:  # pragma: no cover - only with inPlace=True
        raise ImageRejected("unsupported_format", "the LAB image could not be converted")
    return out


def _to_srgb(out: Image.Image, source: Image.Image) -> Image.Image:
    """Apply an embedded ICC profile (RGB or CMYK) so colours mean what the file says.
    A profile littleCMS cannot use is ignored: the pixels are still an image."""
    icc = source.info.get("icc_profile")
    if not icc or not isinstance(icc, bytes):
        return out
    from PIL import ImageCms

    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
        srgb = ImageCms.createProfile("sRGB")
        if space == "RGB" and out.mode in ("RGB", "RGBA"):
            converted = ImageCms.profileToProfile(out, profile, srgb, outputMode=out.mode)
        elif space == "CMYK" and source.mode == "CMYK":
            converted = ImageCms.profileToProfile(source, profile, srgb, outputMode="RGB")
        else:
            return out
    except Exception:  # a broken or exotic profile must never fail the image
        return out
    return converted if converted is not None else out


def _encode(img: Image.Image, fmt: Format, *, fast: bool = False) -> bytes:
    """Encode for the embedder. ``fast`` is for images this module has just shrunk: their
    bytes are new anyway, so they take the quicker settings (bench/image_prep.py measures
    them); images passed through unchanged keep the original settings, byte for byte."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        if img.mode == "RGBA":  # JPEG has no alpha: what shows through is white, not black
            flat = Image.new("RGB", img.size, (255, 255, 255))
            flat.paste(img, mask=img.getchannel("A"))
            img = flat
        img.convert("RGB").save(buf, format="JPEG", quality=90)
    elif fmt == "webp":
        # method 0 is libwebp's fastest effort: about half the time of the default 4.
        img.save(buf, format="WEBP", quality=90, method=0 if fast else 4)
    elif fast and _fpng is not None and img.mode in ("RGB", "RGBA"):
        # Lossless, a standard PNG any decoder reads, ~15x faster than zlib at level 1.
        channels = len(img.mode)
        return bytes(_fpng.fpng_encode_image_to_memory(img.tobytes(), *img.size, channels))
    elif fast:
        # zlib's run-length strategy after Pillow's adaptive row filters: faster than the
        # default strategy at level 1 and smaller on photos (bench/image_prep.py).
        img.save(buf, format="PNG", compress_level=1, compress_type=_Z_RLE)
    else:
        img.save(buf, format="PNG", compress_level=1)  # speed over size; the limit is 5 MB
    return buf.getvalue()


def _exif(img: Image.Image) -> Image.Exif:
    try:
        return img.getexif()
    except Exception:  # malformed EXIF must never fail an image
        return Image.Exif()


def _oriented_by_pillow(img: Image.Image) -> bool:
    """Pillow applies a TIFF's orientation itself (and reports the displayed size) when it
    loads it; the size then differs from the stored width and length tags."""
    tags = getattr(img, "tag_v2", None)
    if img.format != "TIFF" or tags is None:
        return False
    return (tags.get(256), tags.get(257)) != img.size


def _orientation(exif: Image.Exif) -> int:
    try:
        value = exif.get(ExifTags.Base.Orientation)
    except Exception:
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


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
