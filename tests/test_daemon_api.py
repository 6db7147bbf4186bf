"""``imgrag watch`` in a subprocess: its local API, and searching from another process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from imgrag import Retriever
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.pipeline.daemon_client import DaemonInfo, read_daemon_file
from prometheus_client.parser import text_string_to_metric_families

from tests import images_factory as f
from tests.test_cli_ingest import AUTH, REPO, cli_env, imgrag


def wait_for(condition, timeout: float = 60.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def status_of(url: str) -> dict[str, object] | None:
    try:
        return httpx.get(f"{url}/status", headers=AUTH, timeout=5).json()  # type: ignore[no-any-return]
    except httpx.HTTPError:
        return None


def spawn_watch(
    roots: Path | Sequence[Path], env: dict[str, str], log: Path, **popen: Any
) -> subprocess.Popen[str]:
    """``imgrag watch ROOT...`` in a subprocess, its messages going to ``log``; ``popen``
    adds arguments for Popen."""
    folders = [roots] if isinstance(roots, Path) else list(roots)
    with log.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "imgrag.pipeline.cli", "watch", *map(str, folders)],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            **popen,
        )


def started(proc: subprocess.Popen[str], state: Path, log: Path) -> DaemonInfo:
    """The daemon's address once ``daemon.json`` names it; fails with its log if it exits."""
    wait_for(lambda: read_daemon_file(state) is not None or proc.poll() is not None, what="start")
    info = read_daemon_file(state)
    assert info is not None, log.read_text()
    return info


@pytest.fixture
def daemon(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, dict[str, str], subprocess.Popen[str]]]:
    root = tmp_path / "inbox"
    for i in range(4):
        f.save(f.photo(i), root / ("a" if i % 2 else "b") / f"p{i}.png", "PNG")
    env = cli_env(tmp_path, emulator, IMGRAG_API__PORT="0", IMGRAG_INGEST__SETTLE_SECONDS="0.3")
    proc = spawn_watch(root, env, tmp_path / "daemon.log")
    state = tmp_path / "state" / "daemon.json"
    try:
        wait_for(
            lambda: read_daemon_file(state) is not None or proc.poll() is not None,
            what="daemon.json",
        )
        info = read_daemon_file(state)
        assert info is not None, (tmp_path / "daemon.log").read_text()
        wait_for(lambda: (status_of(info.url) or {}).get("indexed") == 4, what="initial reconcile")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield root, env, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_search_from_another_process_while_the_daemon_runs(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, env, proc = daemon
    with Retriever.from_config() as retriever:  # the store is locked: goes through the daemon
        assert retriever.mode == "daemon"
        hits = retriever.search(image=root / "a" / "p1.png", limit=2)
        assert hits[0].path == "a/p1.png"
        filtered = retriever.search(image=root / "a" / "p1.png", filter={"folder": "b"})
        assert {h.payload["folder"] for h in filtered} == {"b"}
        assert retriever.similar("b/p0.png")[0].path != "b/p0.png"
    run = imgrag("search", "--image", str(root / "b" / "p2.png"), "--json", env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)[0]["path"] == "b/p2.png"
    status = json.loads(imgrag("status", "--json", env=env).stdout)
    assert status["indexed"] == 4 and status["daemon"]["pid"] == proc.pid


def test_new_file_status_metrics_and_clean_shutdown(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, _env, proc = daemon
    info = read_daemon_file(tmp_path / "state" / "daemon.json")
    assert info is not None
    (root / "broken.png").write_text("not a png")
    f.save(f.photo(9), root / "new.png", "PNG")
    wait_for(
        lambda: (
            (status_of(info.url) or {}).get("indexed") == 5
            and (status_of(info.url) or {}).get("failed") == 1
        ),
        what="the new files",
    )
    status = status_of(info.url)
    assert status is not None and status["failures"][0]["reason"] == "undecodable"  # type: ignore[index]
    assert httpx.get(f"{info.url}/health").json()["status"] == "ok"
    text = httpx.get(f"{info.url}/metrics", headers=AUTH).text
    families = {fam.name: fam for fam in text_string_to_metric_families(text)}
    assert families["imgrag_files_indexed"].samples[0].value == 5
    assert families["imgrag_files_failed"].samples[0].value == 1
    assert families["imgrag_embed_requests"].samples[0].value >= 5
    assert "imgrag_embed_seconds" in families and "imgrag_search_seconds" in families
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert "stopped" in (tmp_path / "daemon.log").read_text()
    assert read_daemon_file(tmp_path / "state" / "daemon.json") is None
    assert not (tmp_path / "state" / "daemon.json").exists()


def test_bearer_token_guards_status_and_search(tmp_path: Path) -> None:
    from imgrag.pipeline.api import create_api
    from imgrag.pipeline.config import Settings
    from imgrag.pipeline.core import Core
    from imgrag.pipeline.door import LocalDoor
    from imgrag.pipeline.metrics import Metrics
    from imgrag.pipeline.status import StatusReport
    from pydantic import SecretStr
    from starlette.testclient import TestClient

    class OneIndexed(LocalDoor):
        def status_now(self, target: str | None = None) -> StatusReport:
            return StatusReport(indexed=1, pending=0, failed=0)

    door = OneIndexed(Core.build(Settings(state_dir=tmp_path / "state")))
    app = create_api(door, Metrics(door.status_now), SecretStr("s3cret"))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/health").status_code == 200
        assert client.get("/status").status_code == 401
        assert client.post("/search", json={"text": "x"}).status_code == 401
        ok = client.get("/status", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["indexed"] == 1
        bad = client.post("/search", headers={"Authorization": "Bearer s3cret"}, json={"limit": 0})
        assert bad.status_code == 400 and "limit" in bad.json()["error"]


def test_store_held_by_a_process_that_is_not_a_daemon_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imgrag import StoreLocked

    holder = (
        "import sys; from pathlib import Path; from imgrag.connectors.config import StoreConfig; "
        "from imgrag.connectors.stores import open_index; "
        "from imgrag.connectors.paths import StatePaths; "
        "index = open_index(StoreConfig(), StatePaths.under(Path(sys.argv[1]))); "
        "print('ready', flush=True); "
        "sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(tmp_path / "state")],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        monkeypatch.setenv("IMGRAG_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.setenv("IMGRAG_CONFIG", str(REPO / "configs" / "default.toml"))
        with pytest.raises(StoreLocked) as info:
            Retriever.from_config()
        assert f"process {proc.pid}" in str(info.value)
    finally:
        proc.communicate(timeout=30)  # closes stdin (the holder exits) and both pipes


def test_daemon_waits_for_an_embedder_that_is_down_at_start(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    root = tmp_path / "inbox"
    f.save(f.photo(3), root / "p.png", "PNG")
    emulator.state.options.fail_rate = 1.0
    env = cli_env(tmp_path, emulator, IMGRAG_API__PORT="0")
    log = tmp_path / "daemon.log"
    proc = spawn_watch(root, env, log)
    state = tmp_path / "state" / "daemon.json"
    try:
        wait_for(
            lambda: "waiting for the embedder" in log.read_text(),
            what="the daemon to say what it waits for",
        )
        assert proc.poll() is None  # still running, not crashed
        emulator.state.options.fail_rate = 0.0
        wait_for(lambda: read_daemon_file(state) is not None, what="the daemon to start")
        info = read_daemon_file(state)
        assert info is not None
        wait_for(lambda: (status_of(info.url) or {}).get("indexed") == 1, what="the file")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_retry_with_a_running_daemon_is_handed_to_it(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``imgrag retry`` goes through the one door: the daemon forgets the failures and runs
    the pass (it used to be refused, the store being the daemon's)."""
    root, env, _proc = daemon
    info = read_daemon_file(tmp_path / "state" / "daemon.json")
    assert info is not None
    (root / "broken.png").write_text("not a png")
    wait_for(lambda: (status_of(info.url) or {}).get("failed") == 1, what="the failure recorded")
    run = imgrag("retry", str(root), "--json", env=env)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert f"the daemon (pid {_proc.pid}) owns the index" in run.stderr
    summary = json.loads(run.stdout)
    assert summary["cleared"] == 1 and summary["failed"] == 1  # tried again, failed again
    status = status_of(info.url) or {}
    assert status.get("failed") == 1  # recorded anew, once
    assert status["failures"][0]["path"] == "broken.png"  # type: ignore[index]


def test_a_command_for_another_index_is_refused_not_run_by_the_daemon(  # type: ignore[no-untyped-def]
    daemon, tmp_path: Path
) -> None:
    """With the daemon serving one collection, an ``ingest`` or ``search`` configured for
    another is refused in one line; the daemon would have answered from its own index."""
    _root, env, _proc = daemon
    other = tmp_path / "other"
    f.save(f.photo(9), other / "x.png", "PNG")
    elsewhere = {**env, "IMGRAG_STORE__COLLECTION": "another"}
    for args in (("ingest", str(other)), ("search", "a photo")):
        run = imgrag(*args, env=elsewhere)
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
        assert run.stderr.count("\n") == 1, run.stderr
        assert "serves collection 'cli'" in run.stderr
        assert "configured for collection 'another'" in run.stderr
    status = json.loads(imgrag("status", "--json", env=env).stdout)
    assert status["indexed"] == 4  # x.png went nowhere
    assert imgrag("search", "a photo", env=env).returncode == 0
