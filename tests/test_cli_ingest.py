"""The CLI in subprocesses, where the process is the point: kill -9 mid-backfill and restart.
Everything else about the CLI is tested in process (test_cli.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from imgrag.connectors.emulator import EmulatorHandle

from tests import images_factory as f
from tests.conftest import EMULATOR_KEY

REPO = Path(__file__).resolve().parent.parent
API_TOKEN = "cli-test-api-token-5e2b"
"""The local API token the daemons these tests start want (IMGRAG_API_TOKEN)."""
AUTH = {"authorization": f"Bearer {API_TOKEN}"}


def cli_settings(tmp_path: Path, emulator: EmulatorHandle) -> dict[str, str]:
    """The environment variables that point imgrag at the emulator and a fresh state dir."""
    return {
        "IMGRAG_CONFIG": str(REPO / "configs" / "default.toml"),
        "IMGRAG_STATE_DIR": str(tmp_path / "state"),
        "IMGRAG_EMBEDDER__PROVIDER": "foundry",
        "IMGRAG_EMBEDDER__ENDPOINT": emulator.url,
        "IMGRAG_EMBEDDER__MAX_ATTEMPTS": "2",
        "IMGRAG_INGEST__SETTLE_SECONDS": "0",
        "IMGRAG_STORE__COLLECTION": "cli",
        "AZURE_INFERENCE_CREDENTIAL": EMULATOR_KEY,
        "IMGRAG_API_TOKEN": API_TOKEN,
    }


def cli_env(tmp_path: Path, emulator: EmulatorHandle, **extra: str) -> dict[str, str]:
    """This process's environment with ``cli_settings`` and ``extra`` applied."""
    return {**os.environ, **cli_settings(tmp_path, emulator), **extra}


def imgrag(
    *args: str, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``imgrag ARGS`` in a child process, from the repository's top."""
    return subprocess.run(
        [sys.executable, "-m", "imgrag.pipeline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def spawn_imgrag(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``imgrag ARGS`` started in a child process with its output piped, not waited for."""
    return subprocess.Popen(
        [sys.executable, "-m", "imgrag.pipeline.cli", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def images_embedded(emulator: EmulatorHandle) -> int:
    """Image-embedding requests the emulator answered with 200."""
    return sum(1 for r in emulator.state.requests if r.route == "images" and r.status == 200)


def make_folder(root: Path, n: int) -> None:
    for i in range(n):
        f.save(f.photo(i, (48, 32)), root / f"d{i % 3}" / f"img{i}.png", "PNG")


def test_kill_9_mid_backfill_then_restart_converges(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    root = tmp_path / "inbox"
    n = 60
    make_folder(root, n)
    env = cli_env(tmp_path, emulator)
    emulator.state.options.latency_ms = 40
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgrag.pipeline.cli", "ingest", str(root)],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        emulator.state.wait_for(
            lambda s: images_embedded(emulator) >= 20,
            timeout=60,
        )
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before_restart = sum(1 for r in emulator.state.requests if r.route == "images")
    assert before_restart < n  # killed mid-backfill

    # What survived the kill; reading it never calls the embedder.
    stored = json.loads(imgrag("status", str(root), "--json", env=env).stdout)
    kept = stored["indexed"]
    assert stored["pending"] == n - kept
    assert sum(1 for r in emulator.state.requests if r.route == "images") == before_restart

    emulator.state.options.latency_ms = 0
    rerun = imgrag("ingest", str(root), "--json", env=env)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    # Exactly the files the kill lost are embedded again (one image per v3 request);
    # every stored one is recognized as unchanged.
    assert (summary["failed"], summary["unchanged"]) == (0, kept)
    assert summary["indexed"] == summary["requests"] == n - kept
    status = json.loads(imgrag("status", str(root), "--json", env=env).stdout)
    assert status["indexed"] == n and status["pending"] == 0  # exactly the folder, once
    again = json.loads(imgrag("ingest", str(root), "--json", env=env).stdout)
    assert (again["indexed"], again["unchanged"], again["requests"]) == (0, n, 0)


def test_sigterm_stops_ingest_promptly_and_says_what_is_left(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    root = tmp_path / "inbox"
    n = 300
    make_folder(root, n)
    env = cli_env(tmp_path, emulator, IMGRAG_EMBEDDER__MAX_CONCURRENCY="2")
    emulator.state.options.latency_ms = 30
    proc = spawn_imgrag("ingest", str(root), "--json", env=env)
    try:
        emulator.state.wait_for(
            lambda s: images_embedded(emulator) >= 20,
            timeout=60,
        )
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    done = summary["indexed"] + summary["reused"]  # some seeds repeat: identical images
    assert 0 < summary["left"] < n and done + summary["left"] == n
    emulator.state.options.latency_ms = 0
    rest = json.loads(imgrag("ingest", str(root), "--json", env=env).stdout)
    # What was flushed before the stop is not paid again.
    assert (rest["unchanged"], rest["indexed"] + rest["reused"]) == (done, summary["left"])
