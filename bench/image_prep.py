"""Image preparation for Foundry against the decode floor, in one run (prints JSON).

- ``ratio``: CPU per large photo that ingestion spends on the Foundry path (probe, decode,
  orient, downscale, PNG, base64) divided by a full Pillow decode of the same file.
- ``encoders``: the encoder options measured on the prepared image (time and bytes).
- ``counter_thread_rate_during_step``: which steps release the GIL (about 1) or hold it.
- ``images_per_second``: the Foundry preparation with one thread and with one per core.

The photos: no package on PyPI that we found ships real camera JPEGs of 12 MP and more, so
the large files are mosaics of the real photos bundled in scikit-image, placed at their
native resolution (never upscaled), saved as JPEG quality 92 like a camera; a second set
adds sensor-like noise (the costly case for PNG). The pixels are photographic; the layout
(tiles) is not a single scene.

Usage: ``python -m bench.image_prep``
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import numpy as np
from imgrag.connectors.embedder import EmbedderInfo
from imgrag.pipeline.images import for_embedder, probe
from PIL import Image

_SOURCES = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "ihc.png",
)
SIZES = ((4000, 3000), (5184, 3888))  # 12 MP and 20 MP, the common camera sizes
RUNS = 3
FOUNDRY = EmbedderInfo(provider="foundry", model="Cohere-embed-v3-english", dimension=1024)


def _tiles() -> list[Image.Image]:
    data = resources.files("skimage") / "data"
    out = []
    for name in _SOURCES:
        path = data / name
        if path.is_file():
            with Image.open(io.BytesIO(path.read_bytes())) as img:
                out.append(img.convert("RGB"))
    return out


def photos(noise: float) -> list[bytes]:
    """Mosaics of real photos at native resolution, as camera JPEGs."""
    tiles = _tiles()
    rng = np.random.default_rng(7)
    files = []
    for width, height in SIZES:
        canvas = Image.new("RGB", (width, height))
        x = y = row = 0
        k = 0
        while y < height:
            tile = tiles[k % len(tiles)]
            k += 1
            canvas.paste(tile, (x, y))
            row = max(row, tile.height)
            x += tile.width
            if x >= width:
                x, y, row = 0, y + row, 0
        if noise:
            pixels = np.asarray(canvas, dtype=np.float32)
            pixels += rng.normal(0, noise, pixels.shape).astype(np.float32)
            canvas = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        buf = io.BytesIO()
        canvas.save(buf, format="JPEG", quality=92)
        files.append(buf.getvalue())
    return files


def full_decode(raw: bytes) -> None:
    with Image.open(io.BytesIO(raw)) as img:
        img.load()


def foundry_path(raw: bytes) -> None:
    probe(raw)
    item = for_embedder(raw, FOUNDRY, "png")
    base64.b64encode(item.data)


def cpu_ms(fn: Callable[[bytes], None], files: list[bytes]) -> float:
    started = time.process_time()
    for _ in range(RUNS):
        for raw in files:
            fn(raw)
    return (time.process_time() - started) * 1000 / (RUNS * len(files))


def encoders(raw: bytes) -> dict[str, Any]:
    """Each option on the image the Foundry path encodes (after decode and downscale)."""
    with Image.open(io.BytesIO(raw)) as img:
        img.draft("RGB", (1810, 1357))
        prepared = img.convert("RGB").resize((1810, 1357), Image.Resampling.BILINEAR)
    options: dict[str, Callable[[io.BytesIO], None]] = {
        "png_level1_default_strategy": lambda b: prepared.save(b, "PNG", compress_level=1),
        "png_level1_rle": lambda b: prepared.save(b, "PNG", compress_level=1, compress_type=3),
        "png_level1_huffman_only": lambda b: prepared.save(
            b, "PNG", compress_level=1, compress_type=2
        ),
        "png_level0_stored": lambda b: prepared.save(b, "PNG", compress_level=0),
        "png_level6": lambda b: prepared.save(b, "PNG", compress_level=6),
        "jpeg_q90": lambda b: prepared.save(b, "JPEG", quality=90),
        "webp_q90_method4": lambda b: prepared.save(b, "WEBP", quality=90, method=4),
        "webp_q90_method0": lambda b: prepared.save(b, "WEBP", quality=90, method=0),
    }
    try:
        import fpng_py  # type: ignore[import-untyped, import-not-found, unused-ignore]

        width, height = prepared.size

        def _fpng(b: io.BytesIO) -> None:
            pixels = prepared.tobytes()
            b.write(fpng_py.fpng_encode_image_to_memory(pixels, width, height, 3))

        options["fpng"] = _fpng
    except ImportError:
        pass
    out: dict[str, Any] = {"pixels": f"{prepared.width}x{prepared.height}"}
    for name, save in options.items():
        started = time.process_time()
        for _ in range(RUNS):
            buf = io.BytesIO()
            save(buf)
        ms = (time.process_time() - started) * 1000 / RUNS
        out[name] = {"cpu_ms": round(ms, 1), "kilobytes": len(buf.getvalue()) // 1024}
    return out


def gil_share(raw: bytes) -> dict[str, float]:
    """How fast a pure-Python counting thread runs while each step runs on another thread,
    as a share of its rate while that thread sleeps: about 1 when the step releases the
    GIL, near the pure-Python row when it holds it."""
    import threading

    with Image.open(io.BytesIO(raw)) as img:
        img.load()
        full = img.convert("RGB")
    small = full.resize((1810, 1357), Image.Resampling.BILINEAR)
    steps: dict[str, Callable[[], object]] = {
        "idle": lambda: time.sleep(0.1),
        "jpeg_decode": lambda: full_decode(raw),
        "resize": lambda: full.resize((1810, 1357), Image.Resampling.BILINEAR),
        "png_zlib_level1": lambda: small.save(io.BytesIO(), "PNG", compress_level=1),
        "pure_python": lambda: sum(range(3_000_000)),
    }
    try:
        import fpng_py

        pixels = small.tobytes()
        steps["fpng"] = lambda: fpng_py.fpng_encode_image_to_memory(pixels, 1810, 1357, 3)
    except ImportError:
        pass
    rates: dict[str, float] = {}
    for name, step in steps.items():
        stop = threading.Event()
        counted: list[int] = []

        def count(stop: threading.Event = stop, counted: list[int] = counted) -> None:
            n = 0
            while not stop.is_set():
                n += 1
            counted.append(n)

        thread = threading.Thread(target=count)
        thread.start()
        started = time.perf_counter()
        for _ in range(5):
            step()
        wall = time.perf_counter() - started
        stop.set()
        thread.join()
        rates[name] = counted[0] / wall
    return {k: round(v / rates["idle"], 2) for k, v in rates.items() if k != "idle"}


def throughput(files: list[bytes], threads: int) -> float:
    work = files * max(2, 4 * threads // len(files))
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(foundry_path, work))
    return len(work) / (time.perf_counter() - started)


def main() -> None:
    result: dict[str, Any] = {"sizes": [f"{w}x{h}" for w, h in SIZES], "runs": RUNS}
    for label, noise in (("photos", 0.0), ("noisy_photos", 6.0)):
        files = photos(noise)
        decode = cpu_ms(full_decode, files)
        path = cpu_ms(foundry_path, files)
        result[label] = {
            "jpeg_megabytes": [round(len(f) / 1e6, 2) for f in files],
            "full_decode_cpu_ms": round(decode, 1),
            "foundry_path_cpu_ms": round(path, 1),
            "ratio": round(path / decode, 2),
        }
    files = photos(0.0)
    result["encoders"] = encoders(files[0])
    result["counter_thread_rate_during_step"] = gil_share(files[0])
    cores = os.cpu_count() or 1
    one = throughput(files, 1)
    many = throughput(files, cores)
    result["images_per_second"] = {
        "one_thread": round(one, 2),
        f"{cores}_threads": round(many, 2),
        "speedup": round(many / one, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
