"""The daemon never dies quietly and never deletes what it cannot see (real watchdog, real
folders, the emulator over HTTP, the embedded store)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.pipeline import daemon as daemon_module
from imgrag.pipeline import supervisor as supervisor_module
from imgrag.pipeline import watcher as watcher_module
from imgrag.pipeline.daemon import Daemon

from tests import images_factory as f
from tests.ingest_harness import pipeline, until
from tests.test_watch import watching


def add(root: Path, rel: str, seed: int) -> None:
    f.save(f.photo(seed, (48, 32)), root / rel, "PNG")


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short backoffs so restarts and recoveries happen within a test."""
    monkeypatch.setattr(supervisor_module, "_RESTART_MIN_SECONDS", 0.2)
    monkeypatch.setattr(daemon_module, "_RECOVER_MIN_SECONDS", 0.2)
    monkeypatch.setattr(daemon_module, "_ROOT_CHECK_SECONDS", 0.2)


async def test_root_moved_away_and_back(
    tmp_path: Path, emulator: EmulatorHandle, quick: None
) -> None:
    async with watching(tmp_path, emulator, rescan_minutes=0.005) as (p, daemon):
        for i in range(5):
            add(p.root, f"d{i % 2}/p{i}.png", i)
        await until(lambda: len(p.paths()) == 5, what="five files indexed")
        calls = p.embed_calls()
        os.rename(p.root, tmp_path / "away")
        await until(lambda: "root" in daemon.problems, what="the root reported missing")
        assert daemon.health == "degraded"
        assert "root missing: waiting" in daemon.problems["root"]
        # A rescan while it is away (the old code emptied the index here) removes nothing.
        assert (await p.ingestor.reconcile()).removed == 0
        assert len(p.paths()) == 5
        os.rename(tmp_path / "away", p.root)
        await until(lambda: daemon.health == "ok", what="the daemon to resume by itself")
        assert len(p.paths()) == 5 and p.embed_calls() == calls  # 0 requests on return
        add(p.root, "after.png", 9)  # and it watches the root again
        await until(lambda: "after.png" in p.paths(), what="a file dropped after the return")


async def test_root_deleted_and_recreated_is_watched_again(
    tmp_path: Path, emulator: EmulatorHandle, quick: None
) -> None:
    async with watching(tmp_path, emulator) as (p, daemon):  # no periodic rescan
        add(p.root, "old.png", 1)
        await until(lambda: p.paths() == ["old.png"], what="old.png indexed")
        shutil.rmtree(p.root)
        await until(lambda: "root" in daemon.problems, what="the root reported missing")
        assert p.paths() == ["old.png"]
        p.root.mkdir()
        await until(lambda: "root" not in daemon.problems, what="the root seen again")
        # An empty root would remove every point: refused, and said so.
        assert "refusing to remove all 1" in daemon.problems.get("prune", "")
        add(p.root, "new.png", 2)
        await until(lambda: "new.png" in p.paths(), what="new.png indexed by the new watcher")


async def test_a_crashing_task_is_restarted_and_health_says_degraded(
    tmp_path: Path, emulator: EmulatorHandle, quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "_MAX_FAILURES", 1000)
    broken = asyncio.Event()
    broken.set()
    real = watcher_module.FolderWatcher.next_changes

    async def crashing(self, timeout=None):  # type: ignore[no-untyped-def]
        if broken.is_set():
            raise ValueError("injected watcher fault")
        return await real(self, timeout)

    monkeypatch.setattr(watcher_module.FolderWatcher, "next_changes", crashing)
    async with watching(tmp_path, emulator) as (p, daemon):
        await until(lambda: daemon.restarts.get("follow", 0) >= 2, what="restarts")
        await until(lambda: daemon.health == "degraded", what="degraded")
        assert any("follow task down (ValueError: injected" in x for x in daemon.problems.values())
        broken.clear()
        await until(lambda: daemon.health == "ok", what="the task back up")
        add(p.root, "later.png", 3)
        await until(lambda: p.paths() == ["later.png"], what="a file after the restart")


async def test_a_task_that_keeps_failing_ends_the_daemon(
    tmp_path: Path, emulator: EmulatorHandle, quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "_MAX_FAILURES", 3)
    monkeypatch.setattr(supervisor_module, "_RESTART_MIN_SECONDS", 0.01)

    async def always(self):  # type: ignore[no-untyped-def]
        raise OSError("injected rescan fault")

    monkeypatch.setattr(Daemon, "_rescan_loop", always)
    async with pipeline(tmp_path, emulator) as p:
        daemon = Daemon(p.ingestor, settle_seconds=0.2, rescan_minutes=1)
        from imgrag import FatalError  # DaemonFailed ends the CLI in one line

        with pytest.raises(FatalError) as info:
            await asyncio.wait_for(daemon.run(), timeout=30)
        message = str(info.value)
        assert "the rescan task failed 3 times in a row" in message
        assert "injected rescan fault" in message and "\n" not in message
