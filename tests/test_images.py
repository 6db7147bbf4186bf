"""Normalization of real image files of every awkward kind."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from imgrag.pipeline.images import ImageRejected, normalize, probe
from PIL import Image

from tests import images_factory as f


def decoded(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_exif_rotation_applied_and_facts_read(tmp_path: Path) -> None:
    raw = f.exif_rotated_jpeg(tmp_path / "r.jpg").read_bytes()
    facts = probe(raw)
    assert (facts.width, facts.height) == (60, 120)  # as displayed
    assert facts.taken_at == "2024-05-17T10:30:00"
    assert facts.camera == "Acme Cam 3"  # the make is already in the model name
    out = decoded(normalize(raw).data)
    assert out.format == "PNG" and out.size == (60, 120)


@pytest.mark.parametrize(
    ("maker", "mode"),
    [
        (f.cmyk_jpeg, "RGB"),
        (f.png16, "RGB"),
        (f.palette_png_with_transparency, "RGBA"),
        (f.animated_gif, "RGB"),
    ],
)
def test_modes_are_converted(tmp_path: Path, maker, mode: str) -> None:  # type: ignore[no-untyped-def]
    raw = maker(tmp_path / "img").read_bytes()
    out = decoded(normalize(raw).data)
    assert out.mode == mode


def test_sixteen_bit_keeps_contrast(tmp_path: Path) -> None:
    out = decoded(normalize(f.png16(tmp_path / "p.png").read_bytes()).data).convert("L")
    low, high = out.getextrema()
    assert high - low > 200  # scaled, not clipped to white


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    raw = f.animated_gif(tmp_path / "a.gif").read_bytes()
    first = f.photo(0, (48, 48)).convert("P").convert("RGB")
    out = decoded(normalize(raw).data).convert("RGB")
    diff = sum(abs(a - b) for a, b in zip(out.tobytes(), first.tobytes(), strict=True))
    assert diff / len(first.tobytes()) < 8


def test_large_image_is_downscaled_to_fit(tmp_path: Path) -> None:
    big = f.big_noisy_photo()
    raw = f.jpeg_bytes(big, quality=95)
    norm = normalize(raw, max_side=1024, max_bytes=300_000)
    assert max(norm.width, norm.height) <= 1024
    assert len(norm.data) <= 300_000


@pytest.mark.parametrize(
    ("maker", "reason"),
    [
        (lambda p: p.write_bytes(b"") or p, "empty"),
        (lambda p: p.write_bytes(b"this is not an image at all" * 10) or p, "undecodable"),
        (f.corrupt_jpeg, "undecodable"),
        (f.decompression_bomb, "too_large"),
    ],
    ids=["zero-byte", "not-an-image", "truncated-jpeg", "decompression-bomb"],
)
def test_bad_files_are_rejected_with_a_reason(tmp_path: Path, maker, reason: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.jpg"
    maker(path)
    raw = path.read_bytes()
    with pytest.raises(ImageRejected) as info:
        probe(raw)
        normalize(raw)
    assert info.value.reason == reason
    assert str(info.value)


def test_bomb_is_rejected_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = f.decompression_bomb(tmp_path / "bomb.png").read_bytes()
    loads: list[int] = []
    original = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(1) or original(self))
    with pytest.raises(ImageRejected):
        normalize(raw)
    assert loads == []


def test_heic_is_read_through_pillow_heif(tmp_path: Path) -> None:
    pytest.importorskip("pillow_heif", reason="HEIC needs the heif extra")
    path = tmp_path / "phone.heic"
    f.photo(6, (64, 48)).save(path, format="HEIF")
    raw = path.read_bytes()
    assert probe(raw).source_format == "heif"
    assert decoded(normalize(raw).data).size == (64, 48)
