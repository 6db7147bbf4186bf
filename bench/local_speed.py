"""Speed and memory of the offline local embedder; prints JSON.

- images/s end to end (PNG decode + resize + network + ConSE) at batch 1, 8 and 32 on the
  bundled photos as the pipeline sends them (PNG, at most 512 px), through
  LocalEmbedder.encode_images;
- the same for eager torch EfficientNet-Lite0 (same decoding, same process) and the ratio;
- first start on an empty cache, and cold start of a new process with a warm cache;
- peak RSS of a production-like process (start + batches of 32 + texts; no torch import).
The eager baseline runs with torch's default threads before onnxruntime is loaded.
Run: python -m bench.local_speed
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from imgrag.connectors.embedder import ImageInput
from imgrag.connectors.local import LocalEmbedder
from imgrag.connectors.local.image_input import prepare

from bench._local_photos import PHOTOS, encode, gallery, load

MIN_SECONDS = 4.0

# Runs in a fresh interpreter so imports, session creation and memory are measured alone.
# VmHWM, not ru_maxrss: Linux carries the parent's high-water mark across fork+exec.
_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from imgrag.connectors.embedder import ImageInput
from imgrag.connectors.local import LocalEmbedder
e = LocalEmbedder(Path(sys.argv[1]))
ready = time.perf_counter() - t0
images = [ImageInput(open(p, "rb").read()) for p in sys.argv[2:] if p != "--start-only"]
e.encode_texts(["a photo of a cat"])
e.encode_images(images[:1])
first = time.perf_counter() - t0
if "--start-only" in sys.argv:
    print(json.dumps({"ready_seconds": ready, "first_embedding_seconds": first}))
    raise SystemExit
batch = (images * 32)[:32]
for _ in range(4):
    e.encode_images(batch)
e.encode_texts(["a photo of a cat"] * 256)
print(json.dumps({
    "ready_seconds": ready,
    "first_embedding_seconds": first,
    "imports_torch": "torch" in sys.modules,
    "peak_rss_mb": next(
        int(line.split()[1]) / 1024
        for line in open("/proc/self/status")
        if line.startswith("VmHWM:")
    ),
    "exported": e.load_report.built,
    "bank_source": e.load_report.bank_source,
}))
"""


def throughput(run: Callable[[list[bytes]], object], images: list[bytes], batch: int) -> float:
    """Images per second for batches of ``batch`` cycled from ``images``, after one warm-up."""
    batches = [[images[(s + j) % len(images)] for j in range(batch)] for s in range(len(images))]
    run(batches[0])
    done, started, i = 0, time.perf_counter(), 0
    while time.perf_counter() - started < MIN_SECONDS or done < 2 * batch:
        run(batches[i % len(batches)])
        done += batch
        i += 1
    return done / (time.perf_counter() - started)


def eager_torch_runner() -> Callable[[list[bytes]], object]:
    """Baseline: the same decoding, then the eager torch network instead of onnxruntime."""
    import torch
    from imgrag.connectors.local.torch_reference import load_eager_efficientnet

    model = load_eager_efficientnet()
    pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))

    def run(batch: list[bytes]) -> object:
        pixels = np.stack([p.pixels for p in pool.map(prepare, batch)])
        with torch.inference_mode():
            return torch.softmax(model(torch.from_numpy(pixels)), dim=-1).numpy()

    return run


def run_child(cache: Path, photo_files: list[str], *extra: str) -> tuple[dict, float]:
    """Run _CHILD in a new interpreter; its JSON and its wall time."""
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(cache), *photo_files, *extra],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(child.stdout), time.perf_counter() - started


def main() -> None:
    # Other processes on a small machine change every figure; the load average says how much.
    load_before = os.getloadavg()[0]
    images = gallery()
    originals = [encode(load(p)) for p in PHOTOS]
    # The baseline runs first: once onnxruntime's thread pools exist in the process, eager
    # torch on the same 2 cores slows down by 2-20x, which would flatter the ratio.
    eager = eager_torch_runner()
    baseline = {f"batch_{b}": round(throughput(eager, images, b), 1) for b in (1, 8, 32)}
    del eager
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        started = time.perf_counter()
        embedder = LocalEmbedder(cache)
        first_start = time.perf_counter() - started
        exported = list(embedder.load_report.built)

        def onnx(batch: list[bytes]) -> object:
            return embedder.encode_images([ImageInput(b) for b in batch])

        local = {f"batch_{b}": round(throughput(onnx, images, b), 1) for b in (1, 8, 32)}
        local_originals_32 = round(throughput(onnx, originals, 32), 1)

        photo_files = []
        for i, data in enumerate(images[:4]):
            path = cache / f"photo{i}.png"
            path.write_bytes(data)
            photo_files.append(str(path))
        start, start_wall = run_child(cache, photo_files, "--start-only")
        warm, _ = run_child(cache, photo_files)

    result = {
        "model": embedder.info.model,
        "cpus": os.cpu_count(),
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "input": "13 bundled photos as the pipeline sends them: PNG, longest side <= 512 px",
        "images_per_second": local,
        "images_per_second_original_sizes_batch_32": local_originals_32,
        "eager_torch_images_per_second": baseline,
        "speedup_vs_eager_torch": {
            k: round(local[k] / baseline[k], 2) for k in local if baseline[k] > 0
        },
        "first_start_empty_cache_seconds": round(first_start, 2),
        "first_start_exported": exported,
        "cold_start_warm_cache": {
            "embedder_ready_seconds": round(start["ready_seconds"], 2),
            "first_embedding_seconds": round(start["first_embedding_seconds"], 2),
            "process_wall_seconds_incl_interpreter": round(start_wall, 2),
            "imports_torch": warm["imports_torch"],
            "exported": warm["exported"],
            "bank_source": warm["bank_source"],
        },
        "peak_rss_mb": round(warm["peak_rss_mb"], 1),
        "peak_rss_workload": "warm-cache start, 4 batches of 32 images, 256 texts",
        "bench_process_peak_rss_mb_with_torch_baseline": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
