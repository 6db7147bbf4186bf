"""Real photos bundled inside scikit-image, queries naming their content, and augmentations.

Only files present in the installed package are used (skimage.data fetches others over
the network). Queries were written from looking at the photos, before any tuning.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

PIPELINE_MAX_SIDE = 512  # LocalEmbedder.info.max_image_side; the pipeline downscales to it


@dataclass(frozen=True, slots=True)
class Photo:
    """One bundled photo, the queries that name it, and a caption for image+text tests."""

    key: str
    filename: str
    queries: tuple[str, ...]
    caption: str


PHOTOS: tuple[Photo, ...] = (
    Photo("cat", "chelsea.png", ("a photo of a cat", "a tabby cat"), "our neighbour's pet"),
    Photo(
        "coffee",
        "coffee.png",
        ("a cup of coffee", "espresso on a saucer"),
        "breakfast at the hotel",
    ),
    Photo(
        "astronaut",
        "astronaut.png",
        ("an astronaut", "a woman in an orange space suit"),
        "crew portrait for the mission",
    ),
    Photo(
        "rocket",
        "rocket.jpg",
        ("a rocket on the launch pad", "a space rocket at night"),
        "launch night in Florida",
    ),
    Photo(
        "galaxies",
        "hubble_deep_field.jpg",
        ("galaxies in deep space", "a starry night sky"),
        "telescope image of the early universe",
    ),
    Photo(
        "motorcycle",
        "motorcycle_left.png",
        ("a motorcycle", "a red motorbike in a garage"),
        "my first bike, 1983",
    ),
    Photo(
        "cameraman",
        "camera.png",
        ("a man with a camera", "a photographer with a tripod"),
        "the photographer on campus",
    ),
    Photo("coins", "coins.png", ("old coins", "a collection of ancient coins"), "museum visit"),
    Photo(
        "moon",
        "moon.png",
        ("the surface of the moon", "craters on the moon"),
        "lunar survey frame",
    ),
    Photo(
        "retina",
        "retina.jpg",
        ("the retina of an eye", "a fundus photograph of an eye"),
        "eye exam, left eye",
    ),
    Photo("brick", "brick.png", ("a brick wall", "a brick pavement"), "outside the office"),
    Photo("grass", "grass.png", ("grass", "a lawn"), "the garden after rain"),
    Photo("gravel", "gravel.png", ("gravel", "small stones on the ground"), "the driveway"),
)

# A third phrasing per photo, never seen by bench/local_sweep.py: it shows how much the
# recipe choice overfits the sweep's own queries.
HELD_OUT_QUERIES: dict[str, str] = {
    "cat": "a kitten",
    "coffee": "a coffee cup",
    "astronaut": "a NASA astronaut portrait",
    "rocket": "a rocket launch site",
    "galaxies": "outer space",
    "motorcycle": "a motorbike",
    "cameraman": "a cameraman",
    "coins": "coins",
    "moon": "the moon",
    "retina": "an eye",
    "brick": "bricks",
    "grass": "a field of grass",
    "gravel": "pebbles",
}

# (photo key, hue rotation in degrees, query): the same photo recoloured; the query names
# the colour of exactly one version, so only the colour term can rank it first.
COLOUR_VARIANTS: dict[str, tuple[tuple[int, str], ...]] = {
    "motorcycle": (
        (0, "a red motorcycle"),
        (120, "a green motorcycle"),
        (220, "a blue motorcycle"),
    ),
    "astronaut": (
        (0, "an astronaut in an orange suit"),
        (120, "an astronaut in a green suit"),
        (220, "an astronaut in a blue suit"),
    ),
}


def photo_path(filename: str) -> Path:
    """Path of a photo inside the installed scikit-image; fails if it is not bundled."""
    path = Path(str(resources.files("skimage").joinpath("data", filename)))
    if not path.is_file():
        raise FileNotFoundError(f"{filename} is not bundled with this scikit-image")
    return path


def load(photo: Photo) -> Image.Image:
    """The photo as RGB."""
    with Image.open(photo_path(photo.filename)) as img:
        return img.convert("RGB")


def as_pipeline_png(data: bytes) -> bytes:
    """What the ingestion pipeline sends: EXIF-transposed, RGB, at most 512 px, PNG."""
    with Image.open(io.BytesIO(data)) as img:
        fixed = ImageOps.exif_transpose(img).convert("RGB")
    fixed.thumbnail((PIPELINE_MAX_SIDE, PIPELINE_MAX_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    fixed.save(out, "PNG")
    return out.getvalue()


def encode(img: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    """Encode a Pillow image to bytes."""
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def _flip(img: Image.Image) -> bytes:
    return encode(ImageOps.mirror(img))


def _crop(img: Image.Image) -> bytes:
    w, h = img.size
    return encode(img.crop((w // 10, h // 10, w - w // 10, h - h // 10)))


def _resize(img: Image.Image) -> bytes:
    w, h = img.size
    return encode(img.resize((w // 2, h // 2), Image.Resampling.BILINEAR))


def _jpeg(img: Image.Image) -> bytes:
    return encode(img, "JPEG", quality=60)


def _exif_rotated(img: Image.Image) -> bytes:
    # Pixels stored rotated with Orientation=6, as a phone writes them; exif_transpose
    # (applied by as_pipeline_png, as by the pipeline) must restore the upright photo.
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=92, exif=exif)


AUGMENTATIONS: dict[str, Callable[[Image.Image], bytes]] = {
    "flip": _flip,
    "crop80": _crop,
    "resize50": _resize,
    "jpeg60": _jpeg,
    "exif_rotate": _exif_rotated,
}


def hue_rotated(img: Image.Image, degrees: int) -> Image.Image:
    """The image with every hue turned by ``degrees``."""
    if degrees % 360 == 0:
        return img
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + round(degrees * 255 / 360)) % 256).astype(
        np.uint8
    )
    return Image.fromarray(hsv, "HSV").convert("RGB")


def gallery() -> list[bytes]:
    """Every photo as the pipeline would send it, in PHOTOS order."""
    return [as_pipeline_png(encode(load(p))) for p in PHOTOS]


def augmented() -> list[tuple[int, str, bytes]]:
    """(photo index, augmentation name, pipeline bytes) for every photo and augmentation."""
    out = []
    for i, photo in enumerate(PHOTOS):
        img = load(photo)
        for name, make in AUGMENTATIONS.items():
            out.append((i, name, as_pipeline_png(make(img))))
    return out


def colour_variants() -> list[tuple[str, int, str, bytes]]:
    """(photo key, hue shift, query, pipeline bytes) for each recoloured version."""
    by_key = {p.key: p for p in PHOTOS}
    out = []
    for key, variants in COLOUR_VARIANTS.items():
        img = load(by_key[key])
        for degrees, query in variants:
            out.append((key, degrees, query, as_pipeline_png(encode(hue_rotated(img, degrees)))))
    return out
