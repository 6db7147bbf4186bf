"""Normalization of real image files of every awkward kind."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from imgrag import ImageRejected
from imgrag.pipeline.images import _to_rgb, normalize, probe
from PIL import Image

from tests import hostile_factory as h
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
    ("maker", "reason", "header_ok"),
    [
        (lambda p: p.write_bytes(b"") or p, "empty", False),
        (lambda p: p.write_bytes(b"this is not an image at all" * 10) or p, "undecodable", False),
        (f.corrupt_jpeg, "undecodable", True),
        (f.decompression_bomb, "too_large", False),
    ],
    ids=["zero-byte", "not-an-image", "truncated-jpeg", "decompression-bomb"],
)
def test_bad_files_are_rejected_with_a_reason(  # type: ignore[no-untyped-def]
    tmp_path: Path, maker, reason: str, header_ok: bool
) -> None:
    path = tmp_path / "bad.jpg"
    maker(path)
    raw = path.read_bytes()
    # Each entry point on its own: normalize() decodes, so it rejects every one of them;
    # probe() reads only the header, so a file cut after a good header passes it.
    with pytest.raises(ImageRejected) as info:
        normalize(raw)
    assert info.value.reason == reason and str(info.value)
    if header_ok:
        assert probe(raw).width == 200
    else:
        with pytest.raises(ImageRejected) as info:
            probe(raw)
        assert info.value.reason == reason and str(info.value)


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


# -- every mode, every format, and what the issue found ---------------------------------


def assert_normalized(raw: bytes, size: tuple[int, int]) -> Image.Image:
    """``normalize`` gives a PNG in RGB or RGBA of the displayed size, with no metadata
    carried over from the source."""
    out = decoded(normalize(raw).data)
    assert out.format == "PNG" and out.mode in ("RGB", "RGBA")
    assert out.size == size
    assert "transparency" not in out.info and "icc_profile" not in out.info
    return out


# Pillow still reads and writes IM files, and says each time that it will stop.
pytestmark = pytest.mark.filterwarnings("ignore:IM image format:DeprecationWarning")


def test_every_mode_in_every_format_pillow_writes() -> None:
    """What Pillow writes and reads back is normalized; what it writes but cannot read
    (PDF, PALM, ...) is rejected with a reason. Nothing else may escape."""
    tried = 0
    failures: list[str] = []
    for mode in h.MODES:
        for fmt in h.FORMATS:
            raw = h.encoded(mode, fmt)
            if raw is None:
                continue  # Pillow cannot write this mode in this format
            tried += 1
            try:
                if h.pillow_reads(raw):
                    with Image.open(io.BytesIO(raw)) as img:
                        size = img.size
                    assert_normalized(raw, size)
                else:
                    with pytest.raises(ImageRejected) as info:
                        normalize(raw)
                    assert info.value.reason in ("undecodable", "unsupported_format")
            except BaseException as exc:  # collect them all: one report for the matrix
                failures.append(f"{mode} as {fmt}: {type(exc).__name__}: {exc}")
    assert tried > 150, tried  # the matrix really ran
    assert failures == []


def test_modes_no_format_stores_are_converted() -> None:
    """HSV and premultiplied modes reach normalization only from code, never from a file;
    they convert all the same."""
    for mode in ("HSV", "La", "RGBa", "RGBX", "I;16N"):
        out = _to_rgb(h.picture(mode))
        assert out.mode in ("RGB", "RGBA") and out.size == (24, 16) and out.info == {}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(h.MODES),
    fmt=st.sampled_from(("PNG", "TIFF", "WEBP", "GIF", "JPEG", "BMP", "ICO", "TGA", "PPM")),
    size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    transparency=st.booleans(),
    palette=st.booleans(),
    icc=st.sampled_from((None, "srgb", "garbage")),
    orientation=st.one_of(st.none(), st.integers(1, 8)),
)
def test_normalize_takes_any_variant_pillow_reads(
    mode: str,
    fmt: str,
    size: tuple[int, int],
    transparency: bool,
    palette: bool,
    icc: str | None,
    orientation: int | None,
) -> None:
    raw = h.encoded(
        mode, fmt, size=size, transparency=transparency, palette=palette, icc=icc,
        orientation=orientation,
    )  # fmt: skip
    assume(raw is not None and h.pillow_reads(raw))
    assert raw is not None
    facts = probe(raw)
    assert_normalized(raw, (facts.width, facts.height))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied(orientation: int) -> None:
    """A picture with a marked corner, stored as each orientation would store it, comes
    out as displayed: the marked corner top-left, landscape."""
    shown = Image.new("RGB", (40, 20), (0, 0, 255))
    shown.paste((255, 0, 0), (0, 0, 10, 10))
    t = Image.Transpose
    how_stored = {  # the inverse of what each orientation asks the viewer to do
        2: t.FLIP_LEFT_RIGHT, 3: t.ROTATE_180, 4: t.FLIP_TOP_BOTTOM, 5: t.TRANSPOSE,
        6: t.ROTATE_90, 7: t.TRANSVERSE, 8: t.ROTATE_270,
    }  # fmt: skip
    stored = shown.transpose(how_stored[orientation]) if orientation > 1 else shown
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, format="PNG", exif=exif.tobytes())
    out = assert_normalized(buf.getvalue(), (40, 20)).convert("RGB")
    assert out.getpixel((2, 2)) == (255, 0, 0) and out.getpixel((37, 17)) == (0, 0, 255)


def test_mode_1_png_with_trns_is_normalized(tmp_path: Path) -> None:
    """Issue finding: ValueError 'transparency for RGB must be list or tuple' on encoding."""
    raw = h.mode1_png_with_trns(tmp_path / "bw.png").read_bytes()
    out = assert_normalized(raw, (32, 24))
    assert out.mode == "RGBA"
    alphas = set(out.getchannel("A").tobytes())
    assert alphas == {0, 255}  # black became transparent, white stayed


def test_big_endian_16_bit_tiff_is_normalized_with_contrast(tmp_path: Path) -> None:
    """Issue finding: a valid I;16B TIFF was rejected as undecodable."""
    raw = h.tiff16_big_endian(tmp_path / "deep.tif").read_bytes()
    out = assert_normalized(raw, (40, 30)).convert("L")
    assert out.getpixel((0, 0)) < 5 and out.getpixel((39, 0)) > 250  # full range, in order


@pytest.mark.parametrize("mode", ["LAB", "I;16L", "I", "F", "CMYK", "YCbCr", "LA", "PA"])
def test_colour_spaces_and_deep_modes(mode: str) -> None:
    raw = h.encoded(mode, "TIFF") or h.encoded(mode, "PNG") or h.encoded(mode, "IM")
    assert raw is not None, f"no Pillow writer takes mode {mode}"
    assert_normalized(raw, (24, 16))


def test_icc_profile_is_applied_not_copied() -> None:
    raw = h.encoded("RGB", "PNG", icc="srgb")
    assert raw is not None and b"iCCP" in raw
    assert b"iCCP" not in normalize(raw).data
    broken = h.encoded("RGB", "JPEG", icc="garbage")
    assert broken is not None
    assert_normalized(broken, (24, 16))  # an unusable profile is ignored, not fatal


def test_a_format_pillow_opens_but_cannot_decode_is_unsupported(tmp_path: Path) -> None:
    """Issue finding: a DDS named scan.jpg raised NotImplementedError out of the pass."""
    raw = h.dds_unknown_pixel_format(tmp_path / "scan.jpg").read_bytes()
    for entry in (probe, normalize):
        with pytest.raises(ImageRejected) as info:
            entry(raw)
        assert info.value.reason == "unsupported_format"


@pytest.mark.parametrize("kind", sorted(h.RENAMED))
def test_other_formats_named_jpg(tmp_path: Path, kind: str) -> None:
    """PSD and ICO are images Pillow reads; PDF, SVG and MP4 are not; DDS of an unknown
    pixel format is unsupported. Each gets its answer, none an exception of another kind."""
    raw = h.RENAMED[kind](tmp_path / "photo.jpg").read_bytes()
    expected = {"psd": None, "ico": None, "dds": "unsupported_format"}.get(kind, "undecodable")
    if expected is None:
        facts = probe(raw)
        assert_normalized(raw, (facts.width, facts.height))
    else:
        with pytest.raises(ImageRejected) as info:
            normalize(raw)
        assert info.value.reason == expected


@settings(max_examples=80, deadline=None)
@given(
    kind=st.sampled_from(("PNG", "JPEG", "GIF", "TIFF", "WEBP", "BMP")),
    data=st.data(),
)
def test_truncated_and_bit_flipped_files_are_rejected_or_read(
    kind: str, data: st.DataObject
) -> None:
    """A damaged file is normalized (when Pillow still makes sense of it) or rejected with
    a reason: never any other exception."""
    raw = bytearray(h.encoded("RGB", kind, size=(32, 24)) or b"")
    assert raw
    cut = data.draw(st.integers(0, len(raw)), label="truncate at")
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, 63), st.integers(1, 255)), max_size=4), label="flips"
    )
    damaged = raw[:cut]
    for offset, mask in flips:
        if offset < len(damaged):
            damaged[offset] ^= mask  # headers live in the first bytes
    try:
        out = normalize(bytes(damaged))
    except ImageRejected as exc:
        assert exc.reason in h.REASONS and str(exc)
    else:
        assert decoded(out.data).mode in ("RGB", "RGBA")
