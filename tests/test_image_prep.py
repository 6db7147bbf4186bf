"""Preparation for the embedder: unchanged bytes under the limit, one cheap shrink above it.

The pixel budget comes from Cohere Embed v4's published image sizing (images above
2,458,624 pixels are downsampled to that area by the service; Amazon Bedrock's Embed v4
model card), and Microsoft's Foundry how-to sends PNG data URLs, which stay the default.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from imgrag.connectors.embedder import EmbedderInfo
from imgrag.pipeline.images import DEFAULT_MAX_SIDE, MODEL_PIXELS, fit, for_embedder, normalize
from PIL import Image, ImageOps

FOUNDRY = EmbedderInfo(provider="foundry", model="Cohere-embed-v3-english", dimension=1024)


def _photo(width: int, height: int, seed: int = 3) -> Image.Image:
    """Smooth gradients plus noise: compresses like a photo, not like a flat test card."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 200, y / height * 180, (x + y) / (width + height) * 220], -1)
    pixels = base + rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _file(img: Image.Image, fmt: str, orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    img.save(buf, format=fmt, exif=exif.tobytes(), **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _before(raw: bytes) -> bytes:
    """What preparation produced before this change for an image within the limits: the
    oriented RGB pixels as a PNG at zlib level 1 with the default strategy."""
    with Image.open(io.BytesIO(raw)) as img:
        oriented = ImageOps.exif_transpose(img).convert("RGB")
    buf = io.BytesIO()
    oriented.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("size", "fmt", "orientation"),
    [
        ((1568, 1568), "JPEG", None),  # exactly the model's area
        ((1800, 1300), "JPEG", 6),  # under the area, turned by EXIF
        ((2048, 1000), "PNG", None),  # the widest side allowed
        ((640, 480), "WEBP", 3),
    ],
)
def test_images_within_the_limits_give_the_same_bytes_as_before(
    size: tuple[int, int], fmt: str, orientation: int | None
) -> None:
    raw = _file(_photo(*size), fmt, orientation)
    item = for_embedder(raw, FOUNDRY, "png")
    assert item.mime == "image/png"
    assert item.data == _before(raw)


def test_a_large_photo_is_shrunk_to_the_models_pixel_budget() -> None:
    raw = _file(_photo(4000, 3000), "JPEG", 6)  # a 12 MP camera photo, stored turned
    item = for_embedder(raw, FOUNDRY, "png")
    with Image.open(io.BytesIO(item.data)) as out:
        assert out.format == "PNG"
        out.load()
        width, height = out.size
    assert (width, height) == (1357, 1810)  # displayed upright: portrait
    assert width * height <= MODEL_PIXELS
    assert len(item.data) <= FOUNDRY.max_image_bytes


def test_the_fast_encoding_is_lossless() -> None:
    """Shrunk images take the fast PNG encoder; decoding it gives back exactly the pixels a
    plain Pillow PNG of the same shrink holds."""
    raw = _file(_photo(3000, 2000), "PNG")
    fast = normalize(raw)
    slow = normalize(raw, fmt="webp")  # same shrink, other encoder: compare sizes only
    assert (fast.width, fast.height) == (slow.width, slow.height)
    with Image.open(io.BytesIO(raw)) as img:
        expected = img.convert("RGB").resize(
            (fast.width, fast.height), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
    with Image.open(io.BytesIO(fast.data)) as out:
        assert np.array_equal(np.asarray(out.convert("RGB")), np.asarray(expected))


def test_fit_keeps_the_aspect_and_both_limits() -> None:
    assert fit((1568, 1568), DEFAULT_MAX_SIDE, MODEL_PIXELS) is None
    assert fit((4000, 3000), DEFAULT_MAX_SIDE, MODEL_PIXELS) == (1810, 1357)
    assert fit((8000, 1000), DEFAULT_MAX_SIDE, MODEL_PIXELS) == (2048, 256)
    assert fit((1000, 1000), 512, MODEL_PIXELS) == (512, 512)
