"""Backfill of 2,000 blobs from Azurite against the same 2,000 files from a local folder, in
one run, both through the Foundry emulator at 100 ms latency. Prints JSON: images/s of each
``imgrag ingest`` and the ratio blob / folder.

Needs Azurite (`make azurite` puts it in ./node_modules).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench._emulator import emulator_process
from bench.ingest_backfill import KEY, LATENCY_MS, env_for, make_folder

N = 2000
CONCURRENCY = 16
REPO = Path(__file__).resolve().parents[1]
# Azurite's published development account (Microsoft, "Use the Azurite emulator").
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _azurite(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    command = REPO / "node_modules" / ".bin" / "azurite"
    found = str(command) if command.exists() else shutil.which("azurite")
    if found is None:
        raise SystemExit("azurite is not installed: run `make azurite`")
    port = _free_port()
    proc = subprocess.Popen(
        [found, "--silent", "--location", str(workdir), "--blobHost", "127.0.0.1",
         "--blobPort", str(port), "--queuePort", str(_free_port()), "--tablePort",
         str(_free_port()), "--skipApiVersionCheck", "--loose", "--disableTelemetry"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("azurite did not start")
        time.sleep(0.1)  # polling a port while a subprocess starts


def _upload(conn: str, container: str, root: Path) -> None:
    from azure.storage.blob import ContainerClient

    client = ContainerClient.from_connection_string(conn, container)
    client.create_container()
    files = sorted(root.iterdir())

    def one(path: Path) -> None:
        client.get_blob_client(path.name).upload_blob(path.read_bytes(), overwrite=True)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, files))


def _ingest(target: str, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "imgrag.pipeline.cli", "ingest", target, "--json"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if done.returncode != 0:
        raise RuntimeError(f"imgrag ingest {target} failed: {done.stderr.strip()[-300:]}")
    summary: dict[str, object] = json.loads(done.stdout)
    return summary


def _rate(summary: dict[str, object]) -> float:
    return round(int(summary["indexed"]) / float(summary["seconds"]), 1)  # type: ignore[call-overload,arg-type]


def main() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = work / "inbox"
        make_folder(root, N)
        azurite, port = _azurite(work / "azurite")
        try:
            conn = (
                f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
            )
            _upload(conn, "bench", root)
            with emulator_process(
                api_key=KEY, backend="tiny", latency_ms=LATENCY_MS, jitter=0.1
            ) as server:
                extra = {"IMGRAG_EMBEDDER__MAX_CONCURRENCY": str(CONCURRENCY)}
                folder = _ingest(str(root), env_for(work / "state-folder", server.url, **extra))
                blob_env = env_for(
                    work / "state-blob",
                    server.url,
                    AZURE_STORAGE_CONNECTION_STRING=conn,
                    **extra,
                )
                blob = _ingest(f"az://{ACCOUNT}/bench", blob_env)
        finally:
            azurite.terminate()
            azurite.wait(timeout=10)
    for name, summary in (("folder", folder), ("blob", blob)):
        if summary["indexed"] != N or summary["failed"]:
            raise RuntimeError(f"{name} ingest indexed {summary['indexed']} of {N}: {summary}")
    return {
        "benchmark": "blob_backfill",
        "images": N,
        "latency_ms": LATENCY_MS,
        "max_concurrency": CONCURRENCY,
        "folder_images_per_s": _rate(folder),
        "blob_images_per_s": _rate(blob),
        "ratio_blob_to_folder": round(_rate(blob) / _rate(folder), 3),
        "folder_seconds": folder["seconds"],
        "blob_seconds": blob["seconds"],
        "requests": {"folder": folder["requests"], "blob": blob["requests"]},
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
