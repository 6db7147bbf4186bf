"""``imgrag watch`` as a real process: SIGTERM mid-backfill, a key refused mid-run."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from imgrag.connectors.emulator import EmulatorHandle, EmulatorOptions, running_emulator
from PIL import Image
from pydantic import SecretStr

from tests import images_factory as f
from tests.test_cli_ingest import REPO, cli_env, images_embedded, imgrag
from tests.test_daemon_api import spawn_watch, started, status_of, wait_for


def tiny_pngs(root: Path, n: int) -> None:
    """``n`` distinct 8x8 PNGs, spread over 10 folders (fast to write and to embed)."""
    for i in range(n):
        img = Image.new("RGB", (8, 8), (i % 256, (i // 256) % 256, 7))
        img.putpixel((i % 8, (i // 8) % 8), (255, 255, 255))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        folder = root / f"f{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i:05d}.png").write_bytes(buf.getvalue())


def health_of(url: str) -> dict[str, object] | None:
    try:
        return httpx.get(f"{url}/health", timeout=5).json()  # type: ignore[no-any-return]
    except httpx.HTTPError:
        return None


def test_sigterm_mid_backfill_exits_promptly_and_a_restart_converges(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    n = 5000
    root = tmp_path / "inbox"
    tiny_pngs(root, n)
    env = cli_env(tmp_path, emulator, IMGRAG_API__PORT="0", IMGRAG_EMBEDDER__MAX_CONCURRENCY="4")
    emulator.state.options.latency_ms = 20
    log = tmp_path / "first.log"
    state = tmp_path / "state" / "daemon.json"
    proc = spawn_watch(root, env, log)
    try:
        started(proc, state, log)
        emulator.state.wait_for(lambda s: images_embedded(emulator) >= 200, timeout=120)
        proc.send_signal(signal.SIGTERM)
        # The contract: exit 0 within 10 s, however much of the backfill is left.
        assert proc.wait(timeout=10) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said = log.read_text()
    left = re.search(r"stopped: .*; (\d+) files left for the next start", said)
    assert left is not None, said
    assert 0 < int(left.group(1)) < n
    assert "Traceback" not in said
    first_requests = images_embedded(emulator)

    emulator.state.options.latency_ms = 0
    log2 = tmp_path / "second.log"
    proc = spawn_watch(root, env, log2)
    try:
        info = started(proc, state, log2)
        wait_for(
            lambda: (status_of(info.url) or {}).get("indexed") == n,
            timeout=300,
            what="the restart to index the rest",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "nothing left" in log2.read_text()
    # Every file is indexed exactly once: what was flushed before the stop is not paid again;
    # only the requests abandoned in flight (at most max_concurrency) are paid twice.
    assert images_embedded(emulator) - first_requests <= n - first_requests + 4
    again = imgrag("ingest", str(root), "--json", env=env)
    summary = json.loads(again.stdout)
    assert (summary["unchanged"], summary["indexed"], summary["requests"]) == (n, 0, 0)


def test_sigterm_with_requests_hanging_abandons_them_and_the_api_answers_meanwhile(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    root = tmp_path / "inbox"
    for i in range(3):
        f.save(f.photo(i, (48, 32)), root / f"p{i}.png", "PNG")
    env = cli_env(tmp_path, emulator, IMGRAG_API__PORT="0", IMGRAG_INGEST__SETTLE_SECONDS="0.3")
    log = tmp_path / "daemon.log"
    state = tmp_path / "state" / "daemon.json"
    proc = spawn_watch(root, env, log)
    try:
        info = started(proc, state, log)
        wait_for(lambda: (status_of(info.url) or {}).get("indexed") == 3, what="the backfill")
        emulator.state.hold()  # the service stops answering mid-run
        f.save(f.photo(9, (48, 32)), root / "late.png", "PNG")
        emulator.state.wait_for(lambda s: s.held >= 1, timeout=60)
        proc.send_signal(signal.SIGTERM)
        # uvicorn does not take the signal: the API answers while the daemon drains.
        wait_for(
            lambda: (health_of(info.url) or {}).get("status") == "stopping",
            timeout=5,
            what="/health to say stopping",
        )
        assert proc.wait(timeout=10) == 0, log.read_text()
    finally:
        emulator.state.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said = log.read_text()
    assert "abandoning" in said and "files left for the next start" in said


@pytest.fixture
def keyed_emulator() -> Iterator[EmulatorHandle]:
    """An emulator of our own: the test rotates its key."""
    options = EmulatorOptions(port=0, api_key=SecretStr("key-one"), backend="tiny")
    with running_emulator(options) as handle:
        yield handle


def test_key_refused_mid_run_keeps_files_pending_and_recovers_when_fixed(
    tmp_path: Path, keyed_emulator: EmulatorHandle
) -> None:
    """A 401 from Foundry means the key was refused (azure-rest-api-specs, AI.Model
    inference: 401 Unauthorized); a rotated key is the common case in production."""
    emulator = keyed_emulator
    root = tmp_path / "inbox"
    f.save(f.photo(1, (48, 32)), root / "first.png", "PNG")
    config = tmp_path / "imgrag.toml"
    base = (REPO / "configs" / "default.toml").read_text()

    def write_config(key: str) -> None:
        text = re.sub(r"(?m)^\[embedder\]\s*$", f'[embedder]\napi_key = "{key}"', base, count=1)
        assert f'api_key = "{key}"' in text
        tmp = config.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(config)

    write_config("key-one")
    env = cli_env(tmp_path, emulator, IMGRAG_API__PORT="0", IMGRAG_CONFIG=str(config))
    env.pop("AZURE_INFERENCE_CREDENTIAL")
    log = tmp_path / "daemon.log"
    state = tmp_path / "state" / "daemon.json"
    proc = spawn_watch(root, env, log)
    try:
        info = started(proc, state, log)
        wait_for(lambda: (status_of(info.url) or {}).get("indexed") == 1, what="first.png")
        emulator.state.options.api_key = SecretStr("key-two")  # the key is rotated
        f.save(f.photo(2, (48, 32)), root / "second.png", "PNG")
        wait_for(
            lambda: (health_of(info.url) or {}).get("status") == "degraded",
            what="health to say degraded",
        )
        status = imgrag("status", "--json", env=env)
        report = json.loads(status.stdout)
        assert report["health"] == "degraded" and report["pending"] >= 1
        assert any("refuses the key" in p for p in report["problems"])
        assert report["failed"] == 0  # kept pending, not journaled as failed
        text = imgrag("status", env=env).stdout
        assert "degraded: the service refuses the key" in text
        assert proc.poll() is None
        write_config("key-two")  # the fix: the daemon re-reads it by itself
        wait_for(
            lambda: (
                (status_of(info.url) or {}).get("indexed") == 2
                and (health_of(info.url) or {}).get("status") == "ok"
            ),
            what="recovery with the new key",
        )
        assert "key-two" not in log.read_text() and "key-one" not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    assert proc.returncode == 0


def test_a_task_that_keeps_failing_ends_the_process_with_one_line(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    """The whole CLI in a child process, with a fault injected into its rescan task."""
    root = tmp_path / "inbox"
    root.mkdir()
    boot = (
        "import sys\n"
        "import imgrag.pipeline.daemon as d\n"
        "import imgrag.pipeline.supervisor as s\n"
        "s._RESTART_MIN_SECONDS = 0.01\n"
        "async def boom(self):\n"
        "    raise OSError('injected rescan fault')\n"
        "d.Daemon._rescan_loop = boom\n"
        "from imgrag.pipeline.cli import app\n"
        "sys.argv = ['imgrag', 'watch', sys.argv[1], '--no-api']\n"
        "app()\n"
    )
    env = cli_env(tmp_path, emulator)
    run = subprocess.run(
        [sys.executable, "-c", boot, str(root)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the rescan task failed 5 times in a row")
    assert "injected rescan fault" in last
