"""Files and folders no camera makes: every Pillow mode in every format Pillow writes, other
formats named .jpg, damaged bytes, odd names, bad sidecars, links that loop."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

from PIL import Image, ImageCms

from tests import images_factory as f

# Modes Pillow can create; each is tried in each format Pillow can save.
MODES = (
    "1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
    "LAB", "HSV", "I", "I;16", "I;16L", "I;16B", "I;16N", "F",
)  # fmt: skip
Image.init()
FORMATS = tuple(sorted(Image.SAVE))
# Every reason a file may be journaled with (docs/ingestion.md: "What happens to odd and
# hostile files").
REASONS = {
    "empty", "undecodable", "unsupported_format", "too_large", "bad_sidecar", "unreadable",
    "bad_name", "rejected", "store_rejected", "internal_error",
}  # fmt: skip

ICC = {
    "srgb": ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
    "garbage": b"\x00\x00\x02\x0cnot really a colour profile" * 8,
}


def picture(mode: str, size: tuple[int, int] = (24, 16), *, palette: bool = False) -> Image.Image:
    """A structured picture (not a flat colour) in ``mode``."""
    base = f.photo(7, size)
    if mode == "P":
        return base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16 if palette else 256)
    if mode == "PA":
        return base.convert("RGBA").convert("PA") if _can(base, "PA") else Image.new("PA", size)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        img = Image.new(mode, size)
        img.putdata([(i * 997) % 65536 for i in range(size[0] * size[1])])
        return img
    if mode in ("I", "F"):
        img = Image.new(mode, size)
        img.putdata([(i * 7919) % 100_000 - 50_000 for i in range(size[0] * size[1])])
        return img
    if mode == "LAB":
        return Image.merge("LAB", [base.convert("L")] * 3)
    return base.convert(mode) if _can(base, mode) else Image.new(mode, size)


def _can(img: Image.Image, mode: str) -> bool:
    try:
        img.convert(mode)
    except ValueError:
        return False
    return True


def encoded(
    mode: str,
    fmt: str,
    *,
    size: tuple[int, int] = (24, 16),
    transparency: bool = False,
    palette: bool = False,
    icc: str | None = None,
    orientation: int | None = None,
) -> bytes | None:
    """``mode`` saved as ``fmt`` with the options asked for, or None when Pillow cannot
    write that combination."""
    img = picture(mode, size, palette=palette)
    params: dict[str, object] = {}
    if transparency:
        params["transparency"] = (0, 0, 0) if mode == "RGB" else 0
    if icc is not None:
        params["icc_profile"] = ICC[icc]
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        params["exif"] = exif.tobytes()
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt, **params)
    except Exception:  # Pillow raises many kinds for "cannot write this"
        return None
    return buf.getvalue()


def pillow_reads(raw: bytes) -> bool:
    """Whether Pillow itself opens and decodes these bytes."""
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
    except Exception:
        return False
    return True


# -- findings of the issue: one file that used to stop everything -------------------------


def mode1_png_with_trns(path: Path) -> Path:
    """A black-and-white PNG whose tRNS chunk makes black transparent."""
    img = f.photo(2, (32, 24)).convert("1")
    return f.save(img, path, "PNG", transparency=0)


def tiff16_big_endian(path: Path) -> Path:
    """A valid 16-bit big-endian grey TIFF (mode I;16B), a gradient over the full range."""
    img = Image.new("I;16B", (40, 30))
    img.putdata([(x * 65535) // 39 for _y in range(30) for x in range(40)])
    return f.save(img, path, "TIFF")


def dds_unknown_pixel_format(path: Path) -> Path:
    """A DDS header Pillow opens, with pixel format flags it does not implement."""
    header = bytearray(124)
    struct.pack_into("<3I", header, 0, 0x1007, 16, 16)  # flags, height, width
    struct.pack_into("<4I", header, 68, 32, 0x80000, 0, 32)  # pf size, unknown flags
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"DDS " + struct.pack("<I", 124) + bytes(header) + bytes(16 * 16 * 4))
    return path


# -- other formats named .jpg -----------------------------------------------------------


def psd_rgb(path: Path, size: tuple[int, int] = (20, 12)) -> Path:
    """A minimal Photoshop file (RGB, 8 bits, raw channels); Pillow reads PSD, never writes it."""
    w, h = size
    rgb = f.photo(4, size)
    channels = b"".join(band.tobytes() for band in rgb.split())
    data = (
        b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, h, w, 8, 3)
        + struct.pack(">I", 0) + struct.pack(">I", 0) + struct.pack(">I", 0)
        + struct.pack(">H", 0) + channels
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def ico(path: Path) -> Path:
    return f.save(f.photo(5, (32, 32)), path, "ICO")


def pdf(path: Path) -> Path:
    return f.save(f.photo(6, (32, 32)), path, "PDF")


def svg_text(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>\n')
    return path


def mp4_header(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ftyp = struct.pack(">I", 24) + b"ftypisom" + struct.pack(">I", 512) + b"isomiso2"
    path.write_bytes(ftyp + struct.pack(">I", 8) + b"free" + bytes(256))
    return path


RENAMED = {
    "dds": dds_unknown_pixel_format,
    "psd": psd_rgb,
    "ico": ico,
    "pdf": pdf,
    "svg": svg_text,
    "mp4": mp4_header,
}


# -- names, sidecars and links ----------------------------------------------------------


ODD_NAMES = {
    "invalid_utf8": b"caf\xe9-\xff.png",  # Latin-1 bytes, not UTF-8
    "newline": b"line\nERROR forged log line.png",
    "long": b"l" * 246 + b".png",  # 250 bytes
    "escape_sequence": b"\x1b[31mred\x1b[0m.png",
}
# How the index stores each: valid UTF-8 as it is, other bytes escaped as \xHH.
STORED_NAMES = {
    "invalid_utf8": "caf\\xe9-\\xff.png",
    "newline": "line\nERROR forged log line.png",
    "long": "l" * 246 + ".png",
    "escape_sequence": "\x1b[31mred\x1b[0m.png",
}


def odd_name_paths(root: Path) -> dict[str, Path]:
    """Images under names that are legal on disk and awkward everywhere else."""
    out = {}
    for i, (kind, name) in enumerate(ODD_NAMES.items()):
        path = Path(os.fsdecode(os.path.join(os.fsencode(root), name)))
        f.save(f.photo(40 + i, (24, 16)), path, "PNG")
        out[kind] = path
    return out


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def char_device_zero(path: Path) -> Path | None:
    """A character device node like /dev/zero inside the folder (root only), else None."""
    if os.geteuid() != 0:
        return None
    try:
        os.mknod(path, 0o644 | 0o020000, os.makedev(1, 5))
    except OSError:
        return None
    return path


def symlink_loop(folder: Path) -> None:
    """``loop-a.jpg`` → ``loop-b.jpg`` → ``loop-a.jpg``, and a folder link to its parent."""
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink("loop-b.jpg", folder / "loop-a.jpg")
    os.symlink("loop-a.jpg", folder / "loop-b.jpg")
    os.symlink("..", folder / "up")


# -- a whole hostile folder --------------------------------------------------------------

ANY = "any reason"
"""Expected outcome for files Pillow may or may not make sense of (damaged bytes)."""


def build_corpus(root: Path) -> dict[str, str | None]:
    """Fill ``root`` with every kind of hostile file; stored path → expected reason (None:
    indexed; ANY: indexed or journaled with any reason). Links that loop, FIFOs and devices
    named as images are not candidates and are not listed."""
    root.mkdir(parents=True, exist_ok=True)
    expect: dict[str, str | None] = {}

    def put(rel: str, raw: bytes, outcome: str | None = None) -> Path:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)
        expect[rel] = outcome
        return path

    for i in range(3):
        put(f"good/p{i}.png", _png(f.photo(60 + i)))
    variants = {
        "modes/bw-trns.png": ("1", "PNG", {"transparency": True}),
        "modes/deep.tif": ("I;16B", "TIFF", {}),
        "modes/lab.tif": ("LAB", "TIFF", {}),
        "modes/float.tif": ("F", "TIFF", {}),
        "modes/cmyk-icc.jpg": ("CMYK", "JPEG", {"icc": "srgb"}),
        "modes/palette-trns.gif": ("P", "GIF", {"transparency": True, "palette": True}),
        "modes/la.png": ("LA", "PNG", {}),
        "modes/turned.jpg": ("RGB", "JPEG", {"orientation": 6}),
        "modes/garbage-icc.png": ("RGB", "PNG", {"icc": "garbage"}),
    }
    for rel, (mode, fmt, opts) in variants.items():
        raw = encoded(mode, fmt, **opts)  # type: ignore[arg-type]
        assert raw is not None, rel
        put(rel, raw)
    good_jpeg = f.jpeg_bytes(f.photo(70, (64, 48)))
    put("damaged/empty.jpg", b"", "empty")
    put("damaged/truncated.jpg", good_jpeg[: len(good_jpeg) // 3], "undecodable")
    flipped = bytearray(_png(f.photo(71)))
    flipped[1] ^= 0xFF  # the PNG signature
    put("damaged/flipped.png", bytes(flipped), "undecodable")
    cut = bytearray(_png(f.photo(72)))
    put("damaged/cut-late.png", bytes(cut[: len(cut) - 40]), ANY)
    for kind, make in RENAMED.items():
        make(root / "renamed" / f"{kind}.jpg")
        expect[f"renamed/{kind}.jpg"] = {
            "dds": "unsupported_format",
            "psd": None,
            "ico": None,
        }.get(kind, "undecodable")
    for kind in odd_name_paths(root / "names"):
        expect[f"names/{STORED_NAMES[kind]}"] = None
    sidecars = {
        "nan.json": (b'{"v": NaN}', "bad_sidecar"),
        "deep.json": (b"[" * 30_000 + b"]" * 30_000, "bad_sidecar"),
        "ok.json": (b'{"caption": "a fine caption", "tags": ["x"]}', None),
    }
    for name, (content, outcome) in sidecars.items():
        stem = name.split(".")[0]
        put(f"sidecars/{stem}.png", _png(f.photo(80 + len(expect))), outcome)
        (root / "sidecars" / name).write_bytes(content)
    put("sidecars/big.png", _png(f.photo(90)), "bad_sidecar")
    with (root / "sidecars" / "big.json").open("wb") as fh:
        fh.truncate(10 * 1024 * 1024)
    put("sidecars/fifo.png", _png(f.photo(91)), "bad_sidecar")
    fifo(root / "sidecars" / "fifo.txt")
    put("sidecars/passwd.png", _png(f.photo(92)), "bad_sidecar")
    os.symlink("/etc/passwd", root / "sidecars" / "passwd.txt")
    put("sidecars/zero.png", _png(f.photo(93)), "bad_sidecar")
    os.symlink("/dev/zero", root / "sidecars" / "zero.txt")
    if char_device_zero(root / "sidecars" / "device.txt") is not None:
        put("sidecars/device.png", _png(f.photo(94)), "bad_sidecar")
    symlink_loop(root / "links")
    fifo(root / "links" / "pipe.jpg")
    os.symlink("/etc/passwd", root / "links" / "passwd.jpg")
    return expect


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
