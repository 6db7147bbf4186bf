"""Status at any size: the daemon's ``GET /status`` and ``GET /metrics``, its CPU while the
gallery page polls, ``imgrag serve``'s ``/status``, and the whole ``imgrag status``
command, over an indexed, idle folder of 3,000 and 30,000 images (prints JSON).

How each library is built (said again in the JSON's ``built``): a folder of hard links to
four small PNGs, in subfolders of 1,000; ``imgrag ingest`` indexes the four originals
through the emulator (embed-v-4-0 at 256 dimensions), which makes the collection and
registers the source; then a point for every link is written straight into the embedded
store, with the payload the indexer would write (the original's, with the link's path,
folder, name, size and mtime) and the original's vector. So the daemon's first reconcile
finds every file indexed and unchanged, as after a finished backfill.

Then, with ``imgrag watch`` running (no periodic rescan): ``/status`` and ``/metrics`` p50
over sequential requests on one connection, beside ``/health`` p50 (a route that reads
nothing: the floor of a request to this server on this machine); the daemon's CPU
(percent of one core) over ``POLL_SECONDS`` idle, and again while polled as the gallery
does (``/status`` every 1.5 s with the ETag it got); ``imgrag status`` (the whole command,
through the daemon), median of three. Then the daemon stops and ``imgrag serve`` runs over
the same store: ``/status`` p50 once its background walk is done, and its CPU while polled.

Ratios are against the smallest size of the same run. Goals (issue "Status at any size"):
``/status`` p50 at 1,000,000 <= 50 ms; at 30,000 within 1.5x of 3,000; the idle daemon
with the page open at 1,000,000 <= 2 % of a core; ``imgrag status`` at 30,000 within 1.2x.

Usage: ``python -m bench status_scale`` (3,000 and 30,000);
``STATUS_SCALE_SIZES=3000,1000000 python -m bench.status_scale`` for the million (about
1 GB of vectors and a few GB of disk for the store; the links cost only inodes).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from imgrag.connectors.index import Point
from imgrag.connectors.stores.edge import EdgeIndex
from imgrag.pipeline.keys import point_id
from PIL import Image

from bench._emulator import emulator_process

SIZES = [int(n) for n in os.environ.get("STATUS_SCALE_SIZES", "3000,30000").split(",")]
POLL_SECONDS = float(os.environ.get("STATUS_SCALE_POLL_SECONDS", "30"))
REQUESTS = int(os.environ.get("STATUS_SCALE_REQUESTS", "40"))
ORIGINALS = 4
PER_FOLDER = 1000
COLLECTION = "bench"
KEY = "bench-key"
REPO = Path(__file__).resolve().parent.parent


def env_for(tmp: Path, url: str) -> dict[str, str]:
    return {
        **os.environ,
        "IMGRAG_CONFIG": str(REPO / "configs" / "default.toml"),
        "IMGRAG_STATE_DIR": str(tmp / "state"),
        "IMGRAG_EMBEDDER__PROVIDER": "foundry",
        "IMGRAG_EMBEDDER__ENDPOINT": url,
        "IMGRAG_EMBEDDER__MODEL": "embed-v-4-0",
        "IMGRAG_EMBEDDER__DIMENSIONS": "256",
        "IMGRAG_INGEST__RESCAN_MINUTES": "0",
        "IMGRAG_STORE__COLLECTION": COLLECTION,
        "IMGRAG_API__PORT": "0",
        "AZURE_INFERENCE_CREDENTIAL": KEY,
    }


def imgrag(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "imgrag.pipeline.cli", *args]
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
    if run.returncode != 0:
        raise RuntimeError(f"imgrag {' '.join(args)}: {run.stderr[-2000:]}")
    return run


def build(tmp: Path, env: dict[str, str], size: int) -> dict[str, Any]:
    """The folder, its four originals indexed, and a point per link written into the store."""
    root = tmp / "library"
    originals = []
    for i in range(ORIGINALS):
        path = root / f"original_{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        colour = ((i * 67) % 256, (i * 131) % 256, (i * 29) % 256)
        Image.new("RGB", (64, 48), colour).save(path)
        originals.append(path)
    imgrag(env, "ingest", str(root))
    links = []
    for n in range(size - ORIGINALS):
        rel = f"d{n // PER_FOLDER:04d}/img_{n:07d}.png"
        (root / rel).parent.mkdir(exist_ok=True)
        os.link(originals[n % ORIGINALS], root / rel)
        links.append((rel, n % ORIGINALS))
    started = time.perf_counter()
    store = tmp / "state" / "store"
    index = EdgeIndex(store, state_dir=tmp / "state")
    try:
        spec = index.recorded_spec(COLLECTION)
        assert spec is not None
        index.ensure_collection(spec)
        first = next(iter(index.file_states()))
        source = first.source
        assert source is not None
        model = {}
        for i, path in enumerate(originals):
            pid = point_id(source, path.name)
            payload, vector = index.payload_by_id(pid), index.vector_by_id(pid)
            assert payload is not None and vector is not None
            model[i] = (payload, vector)
        for start in range(0, len(links), 1000):
            points = []
            for rel, i in links[start : start + 1000]:
                payload, vector = model[i]
                st = (root / rel).stat()
                folder, name = rel.rsplit("/", 1)
                written = {**payload, "path": rel, "folder": folder, "filename": name,
                           "size": st.st_size, "mtime_ns": st.st_mtime_ns}  # fmt: skip
                points.append(Point(id=point_id(source, rel), vector=vector, payload=written))
            index.upsert(points)
        assert index.count() == size
    finally:
        index.close()
    return {
        "root": root,
        "source": source,
        "write_seconds": round(time.perf_counter() - started, 1),
    }


def p50(client: httpx.Client, path: str, n: int) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        res = client.get(path)
        times.append(time.perf_counter() - started)
        res.raise_for_status()
    return round(statistics.median(times) * 1000, 1)


def cpu_percent(proc: psutil.Process, seconds: float, client: httpx.Client | None) -> float:
    """The process's CPU over ``seconds``, idle or polled as the page does (every 1.5 s,
    with the ETag of the last answer)."""
    before = proc.cpu_times()
    started = time.monotonic()
    tag = None
    while time.monotonic() - started < seconds:
        if client is not None:
            res = client.get("/status", headers={"If-None-Match": tag} if tag else {})
            tag = res.headers.get("etag") or tag
        time.sleep(1.5)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return round(100 * used / (time.monotonic() - started), 2)


def wait_for(check: Any, what: str, timeout: float = 3600) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def status_of(client: httpx.Client) -> dict[str, Any]:
    try:
        return client.get("/status").json()  # type: ignore[no-any-return]
    except (httpx.HTTPError, ValueError):
        return {}


def with_daemon(tmp: Path, env: dict[str, str], root: Path, size: int) -> dict[str, Any]:
    log = (tmp / "daemon.log").open("w")
    argv = [sys.executable, "-m", "imgrag.pipeline.cli", "watch", str(root)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
    daemon_file = tmp / "state" / "daemon.json"
    try:
        info = wait_for(
            lambda: (json.loads(daemon_file.read_text()) if daemon_file.exists() else {}).get(
                "port"
            ),
            "the daemon",
        )
        started = time.perf_counter()
        with httpx.Client(base_url=f"http://127.0.0.1:{info}", timeout=120) as client:
            wait_for(
                lambda: (
                    (s := status_of(client)).get("indexed") == size
                    and s.get("pending_live")
                    and s.get("pending") == 0
                ),
                "the first reconcile",
            )
            ready = time.perf_counter() - started
            out = {
                "daemon_ready_seconds": round(ready, 1),
                "health_p50_ms": p50(client, "/health", REQUESTS),
                "status_p50_ms": p50(client, "/status", REQUESTS),
                "metrics_p50_ms": p50(client, "/metrics", REQUESTS),
            }
            daemon = psutil.Process(proc.pid)
            out["idle_cpu_percent"] = cpu_percent(daemon, POLL_SECONDS / 2, None)
            out["page_polling_cpu_percent"] = cpu_percent(daemon, POLL_SECONDS, client)
            cli = []
            for _ in range(3):
                t = time.perf_counter()
                imgrag(env, "status")
                cli.append(time.perf_counter() - t)
            out["imgrag_status_seconds"] = round(statistics.median(cli), 2)
        return out
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=600)
        log.close()


def with_serve(env: dict[str, str], size: int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "imgrag.pipeline.cli", "serve", "--port", "0"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split("gallery on ", 1)[1].split("/ ", 1)[0]
        with httpx.Client(base_url=url, timeout=120) as client:
            started = time.perf_counter()
            wait_for(lambda: status_of(client).get("pending_as_of"), "serve's background walk")
            walk = time.perf_counter() - started
            status = status_of(client)
            assert status["indexed"] == size, status
            return {
                "serve_background_walk_seconds": round(walk, 1),
                "serve_status_p50_ms": p50(client, "/status", REQUESTS),
                "serve_polled_cpu_percent": cpu_percent(
                    psutil.Process(proc.pid), POLL_SECONDS, client
                ),
            }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=600)


def one_size(size: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as name,
        emulator_process(api_key=KEY, backend="tiny", model="embed-v-4-0") as emulator,
    ):
        tmp = Path(name)
        env = env_for(tmp, emulator.url)
        built = build(tmp, env, size)
        out: dict[str, Any] = {"images": size, "points_write_seconds": built["write_seconds"]}
        out.update(with_daemon(tmp, env, built["root"], size))
        out.update(with_serve(env, size))
        return out


def main() -> None:
    results = [one_size(size) for size in SIZES]
    base = results[0]
    for r in results[1:]:
        for key in ("status_p50_ms", "metrics_p50_ms", "imgrag_status_seconds",
                    "serve_status_p50_ms"):  # fmt: skip
            r[f"{key}_ratio_to_{base['images']}"] = round(r[key] / max(base[key], 1e-9), 2)
    print(json.dumps({
        "built": (
            f"a folder of hard links to {ORIGINALS} small PNGs ({PER_FOLDER} per subfolder); "
            f"the {ORIGINALS} originals indexed by `imgrag ingest` through the emulator "
            "(embed-v-4-0, 256 dimensions), then one point per link written straight into "
            "the embedded store with the indexer's payload and the original's vector"
        ),
        "poll_seconds": POLL_SECONDS,
        "requests_per_p50": REQUESTS,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "sizes": results,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
