"""The CLI as users run it, in subprocesses: ingest, status, search, kill -9 and restart."""

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


def cli_env(tmp_path: Path, emulator: EmulatorHandle, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "IMGRAG_CONFIG": str(REPO / "configs" / "default.toml"),
        "IMGRAG_STATE_DIR": str(tmp_path / "state"),
        "IMGRAG_EMBEDDER__PROVIDER": "foundry",
        "IMGRAG_EMBEDDER__ENDPOINT": emulator.url,
        "IMGRAG_EMBEDDER__MAX_ATTEMPTS": "2",
        "IMGRAG_INGEST__SETTLE_SECONDS": "0",
        "IMGRAG_STORE__COLLECTION": "cli",
        "AZURE_INFERENCE_CREDENTIAL": EMULATOR_KEY,
    }
    env.update(extra)
    return env


def imgrag(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgrag.pipeline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def make_folder(root: Path, n: int) -> None:
    for i in range(n):
        f.save(f.photo(i, (48, 32)), root / f"d{i % 3}" / f"img{i}.png", "PNG")


def test_ingest_status_and_search_json(tmp_path: Path, emulator: EmulatorHandle) -> None:
    root = tmp_path / "inbox"
    make_folder(root, 5)
    (root / "broken.jpg").write_text("no image here")
    env = cli_env(tmp_path, emulator)
    run = imgrag("ingest", str(root), "--json", env=env)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert {k: summary[k] for k in ("indexed", "unchanged", "reused", "removed", "failed")} == {
        "indexed": 5, "unchanged": 0, "reused": 0, "removed": 0, "failed": 1,
    }  # fmt: skip
    assert summary["requests"] == 5 and summary["tokens"] == 5000

    strict = imgrag("ingest", str(root), "--strict", env=env)
    assert strict.returncode == 2 and "1 failed (1 undecodable)" in strict.stdout

    status = json.loads(imgrag("status", str(root), "--json", env=env).stdout)
    assert (status["indexed"], status["failed"], status["pending"]) == (5, 1, 0)
    assert status["failures"][0]["path"] == "broken.jpg"
    assert status["failures"][0]["reason"] == "undecodable"

    query = root / "d1" / "img1.png"
    found = imgrag("search", "--image", str(query), "--json", "--limit", "2", env=env)
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert hits[0]["path"] == "d1/img1.png" and hits[0]["abs_path"] == str(query.absolute())
    assert set(hits[0]) == {"id", "path", "abs_path", "score", "payload"}
    table = imgrag("search", "--image", str(query), "--limit", "2", env=env)
    assert table.returncode == 0 and "rank" in table.stdout and "d1/img1.png" in table.stdout
    folder = imgrag("search", "--image", str(query), "--filter", "folder=d2", "--json", env=env)
    assert {h["payload"]["folder"] for h in json.loads(folder.stdout)} == {"d2"}


def test_bad_config_and_wrong_key_are_one_clear_line(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    root = tmp_path / "inbox"
    make_folder(root, 1)
    bad = tmp_path / "bad.toml"
    bad.write_text("[embedder]\nmax_concurrency = 'lots'\n")
    run = imgrag("--config", str(bad), "ingest", str(root), env=cli_env(tmp_path, emulator))
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0
    assert str(bad) in run.stderr and "[embedder] max_concurrency" in run.stderr

    env = cli_env(tmp_path, emulator, AZURE_INFERENCE_CREDENTIAL="wrong-key-xyz")
    run = imgrag("ingest", str(root), env=env)
    assert run.returncode == 1
    assert "401" in run.stderr and "AZURE_INFERENCE_CREDENTIAL" in run.stderr
    assert "Traceback" not in run.stderr and "wrong-key-xyz" not in run.stderr


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
            lambda s: sum(r.status == 200 for r in s.requests if r.route == "images") >= 20,
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
