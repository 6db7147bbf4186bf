"""Real image files of every awkward kind, made with Pillow."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image


def photo(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A small RGB picture with structure (gradient + blocks), different for each seed."""
    w, h = size
    img = Image.new("RGB", size)
    px = img.load()
    assert px is not None
    for y in range(h):
        for x in range(w):
            px[x, y] = (
                (x * 255 // w + seed * 53) % 256,
                (y * 255 // h + seed * 97) % 256,
                ((x // 8 + y // 8) * 40 + seed * 29) % 256,
            )
    return img


def big_noisy_photo(size: tuple[int, int] = (4000, 3000)) -> Image.Image:
    """A camera-sized picture with sensor-like noise, so it compresses like a real photo."""
    base = photo(5, (size[0] // 20, size[1] // 20)).resize(size, Image.Resampling.BILINEAR)
    noise = Image.effect_noise(size, 40).convert("RGB")
    return Image.blend(base, noise, 0.25)


def save(img: Image.Image, path: Path, fmt: str | None = None, **params: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **params)
    return path


def jpeg_bytes(img: Image.Image, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **params)
    return buf.getvalue()


def exif_rotated_jpeg(path: Path, seed: int = 1) -> Path:
    """A landscape JPEG whose EXIF says: rotate 90° clockwise to display (orientation 6)."""
    img = photo(seed, (120, 60))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Acme"
    exif[0x0110] = "Acme Cam 3"
    exif.get_ifd(0x8769)[0x9003] = "2024:05:17 10:30:00"
    return save(img, path, "JPEG", exif=exif.tobytes())


def cmyk_jpeg(path: Path) -> Path:
    return save(photo(2).convert("CMYK"), path, "JPEG")


def png16(path: Path) -> Path:
    img = Image.new("I;16", (40, 30))
    img.putdata([(i * 1000) % 65535 for i in range(40 * 30)])
    return save(img, path, "PNG")


def palette_png_with_transparency(path: Path) -> Path:
    img = photo(3).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    img.info["transparency"] = 0
    return save(img, path, "PNG", transparency=0)


def animated_gif(path: Path) -> Path:
    frames = [photo(i, (48, 48)).convert("P") for i in range(3)]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(
        path, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0
    )
    return path


def decompression_bomb(path: Path) -> Path:
    """A tiny PNG file whose header claims 20000x20000 pixels (400 megapixels)."""
    img = Image.new("1", (20000, 20000))
    return save(img, path, "PNG", optimize=True)


def corrupt_jpeg(path: Path) -> Path:
    data = jpeg_bytes(photo(4, (200, 150)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 3])
    return path
