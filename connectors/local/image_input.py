"""Encoded image bytes -> the network's input tensor and a small thumbnail for colours."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from imgrag._errors import RequestRejected
from PIL import Image, UnidentifiedImageError

INPUT_SIZE = 224
RESIZE_SIZE = 256  # shorter side before the centre crop: the usual 0.875 ImageNet crop
COLOUR_SIDE = 48
# EfficientNet-Lite was trained on TF-style inputs: (x - 127) / 128.
_MEAN = 127.0
_SCALE = 1.0 / 128.0


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """One decoded image: network input (3, 224, 224) float32 and an RGB colour thumbnail."""

    pixels: npt.NDArray[np.float32]
    thumbnail: npt.NDArray[np.uint8]


def decode_rgb(data: bytes) -> Image.Image:
    """Decode bytes to an RGB image; transparency is flattened on white, like a viewer shows it."""
    try:
        img = Image.open(io.BytesIO(data))
        # JPEG can decode at 1/2, 1/4, 1/8 scale for free; we never need more than RESIZE_SIZE.
        img.draft("RGB", (RESIZE_SIZE, RESIZE_SIZE))
        img.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise RequestRejected(f"image could not be decoded: {exc}", status=400) from exc
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def prepare(data: bytes) -> PreparedImage:
    """Resize the shorter side to 256, centre-crop 224, normalize; thumbnail the whole image."""
    img = decode_rgb(data)
    w, h = img.size
    scale = RESIZE_SIZE / min(w, h)
    size = (max(INPUT_SIZE, round(w * scale)), max(INPUT_SIZE, round(h * scale)))
    resized = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    left = (size[0] - INPUT_SIZE) // 2
    top = (size[1] - INPUT_SIZE) // 2
    crop = resized.crop((left, top, left + INPUT_SIZE, top + INPUT_SIZE))
    arr = np.asarray(crop, dtype=np.float32)
    pixels = ((arr - _MEAN) * _SCALE).transpose(2, 0, 1)
    thumb = np.asarray(resized.resize((COLOUR_SIDE, COLOUR_SIDE), Image.Resampling.BOX))
    return PreparedImage(pixels=np.ascontiguousarray(pixels), thumbnail=thumb)
