"""Memory of the daemon's app under concurrent large query images: six clients each send the
same large image to ``POST /search``: a 49-megapixel PNG of about 150 KB (over the limit for
formats decoded at full size), a 36-megapixel PNG (at that limit) and a 49-megapixel JPEG.
The app runs in its own process (the tiny embedder, the embedded store); its resident memory
is read from ``/proc`` before and at its peak (VmHWM). Prints JSON."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from PIL import Image

from bench.search_latency import wait_serving

CLIENTS = 6

_SERVER = """
import sys
from pathlib import Path
import uvicorn
from imgrag.connectors.config import StoreConfig
from imgrag.connectors.index import CollectionSpec
from imgrag.connectors.tiny import TinyEmbedder
from imgrag.pipeline.api import create_api
from imgrag.pipeline.config import Settings
from imgrag.pipeline.core import Core
from imgrag.pipeline.door import LocalDoor
from imgrag.pipeline.metrics import Metrics
from imgrag.pipeline.runtime import Runtime

core = Core.build(Settings(state_dir=Path(sys.argv[1]), store=StoreConfig(collection="bench")))
index = core.open_index()
index.ensure_collection(CollectionSpec(name="bench", model="tiny", dimension=64, provider="tiny"))
door = LocalDoor(core, runtime=Runtime(core, TinyEmbedder(64), index, core.open_journal()))
app = create_api(door, Metrics(door.status_now))
config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
uvicorn.Server(config).run()
"""


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of ``pid``, in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024
    return out


def _image(fmt: str, side: int) -> bytes:
    img = Image.new("RGB", (side, side), (200, 30, 30))
    img.paste((20, 20, 220), (0, 0, side // 2, side // 3))
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 50} if fmt == "JPEG" else {"compress_level": 9}))
    return buf.getvalue()


async def _round(url: str, raw: bytes) -> list[int]:
    body = {"image": base64.b64encode(raw).decode("ascii"), "limit": 3}
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        answers = await asyncio.gather(*(http.post("/search", json=body) for _ in range(CLIENTS)))
    return [r.status_code for r in answers]


def run(fmt: str, side: int) -> dict[str, object]:
    raw = _image(fmt, side)
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        proc = subprocess.Popen([sys.executable, "-c", _SERVER, tmp, str(port)])
        url = f"http://127.0.0.1:{port}"
        try:
            wait_serving(url, proc)
            before = _memory(proc.pid)
            statuses = asyncio.run(_round(url, raw))
            after = _memory(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return {
        "format": fmt,
        "megapixels": side * side / 1e6,
        "image_kb": len(raw) // 1024,
        "clients": CLIENTS,
        "statuses": " ".join(map(str, statuses)),
        "rss_before_mb": before["VmRSS"],
        "rss_peak_mb": after["VmHWM"],
        "rss_after_mb": after["VmRSS"],
        "peak_rise_mb": after["VmHWM"] - before["VmRSS"],
    }


def main() -> dict[str, object]:
    return {
        "benchmark": "query_image_memory",
        "runs": [run("PNG", 7000), run("PNG", 6000), run("JPEG", 7000)],
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
