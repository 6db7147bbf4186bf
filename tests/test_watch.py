"""The daemon with a real watchdog observer on real folders."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.pipeline.daemon import Daemon

from tests import images_factory as f
from tests.ingest_harness import Pipeline, pipeline, until

SETTLE = 0.5


@asynccontextmanager
async def watching(
    tmp_path: Path, emulator: EmulatorHandle, *, polling: bool = False, rescan_minutes: float = 0
) -> AsyncIterator[tuple[Pipeline, Daemon]]:
    async with pipeline(tmp_path, emulator) as p:
        daemon = Daemon(
            p.ingestor,
            settle_seconds=SETTLE,
            rescan_minutes=rescan_minutes,
            polling=polling,
        )
        task = asyncio.create_task(daemon.run())
        await until(daemon.ready.is_set, what="the initial reconcile")
        try:
            yield p, daemon
        finally:
            daemon.stop()
            await asyncio.wait_for(task, timeout=30)


def png_bytes(seed: int) -> bytes:
    import io

    buf = io.BytesIO()
    f.photo(seed, (160, 120)).save(buf, format="PNG")
    return buf.getvalue()


async def test_slow_copy_is_indexed_once_and_complete(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    data = png_bytes(1)
    async with watching(tmp_path, emulator) as (p, _):
        target = p.root / "slow.png"
        chunk = len(data) // 8 + 1
        with target.open("wb") as fh:
            for i in range(0, len(data), chunk):  # ~2 s of writing, like a slow network copy
                fh.write(data[i : i + chunk])
                fh.flush()
                await asyncio.sleep(0.25)
        await until(lambda: p.paths() == ["slow.png"], what="slow.png indexed")
        assert p.points()["slow.png"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert p.embed_calls() == 1
        assert p.runtime.journal.count() == 0  # no failure was recorded for the partial file


async def test_atomic_rename_overwrite_and_delete(tmp_path: Path, emulator: EmulatorHandle) -> None:
    async with watching(tmp_path, emulator) as (p, _):
        part = p.root / "photo.png.part"
        part.write_bytes(png_bytes(2))
        os.rename(part, p.root / "photo.png")
        await until(lambda: p.paths() == ["photo.png"], what="renamed file indexed")
        first = p.points()["photo.png"]["sha256"]

        tmp = p.root / ".photo.png.tmp"
        tmp.write_bytes(png_bytes(3))
        os.replace(tmp, p.root / "photo.png")  # overwrite in place, atomically
        await until(
            lambda: p.points().get("photo.png", {}).get("sha256") not in (None, first),
            what="new content indexed",
        )
        assert p.embed_calls() == 2

        (p.root / "photo.png").unlink()
        await until(lambda: p.paths() == [], what="deleted file removed")


async def test_directory_move_and_delete(tmp_path: Path, emulator: EmulatorHandle) -> None:
    async with watching(tmp_path, emulator) as (p, _):
        for i in range(3):
            f.save(f.photo(40 + i), p.root / "trip" / f"d{i}.png", "PNG")
        await until(lambda: len(p.paths()) == 3, what="three files indexed")
        calls = p.embed_calls()
        os.rename(p.root / "trip", p.root / "holiday")
        expected = [f"holiday/d{i}.png" for i in range(3)]
        await until(lambda: p.paths() == expected, what="moved folder re-pathed")
        assert p.embed_calls() == calls  # vectors reused, nothing paid twice
        shutil.rmtree(p.root / "holiday")
        await until(lambda: p.paths() == [], what="deleted folder removed")


async def test_folder_moved_in_from_outside(tmp_path: Path, emulator: EmulatorHandle) -> None:
    outside = tmp_path / "camera"
    for i in range(2):
        f.save(f.photo(50 + i), outside / f"c{i}.png", "PNG")
    async with watching(tmp_path, emulator) as (p, _):
        os.rename(outside, p.root / "camera")
        await until(lambda: p.paths() == ["camera/c0.png", "camera/c1.png"], what="imported folder")


async def test_sidecar_edit_updates_the_point(tmp_path: Path, emulator: EmulatorHandle) -> None:
    async with watching(tmp_path, emulator) as (p, _):
        f.save(f.photo(60), p.root / "cat.png", "PNG")
        await until(lambda: p.paths() == ["cat.png"], what="cat indexed")
        (p.root / "cat.json").write_text('{"tags": ["sofa"]}')
        await until(
            lambda: p.points()["cat.png"].get("tags") == ["sofa"], what="tags from the sidecar"
        )
        assert p.embed_calls() == 1


@pytest.mark.parametrize("polling", [True], ids=["polling"])
async def test_polling_observer(tmp_path: Path, emulator: EmulatorHandle, polling: bool) -> None:
    async with watching(tmp_path, emulator, polling=polling) as (p, daemon):
        assert daemon.watch_mode == "polling"
        f.save(f.photo(70), p.root / "net.png", "PNG")
        await until(lambda: p.paths() == ["net.png"], what="file seen by polling")


async def test_outage_then_recovery_while_watching(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("imgrag.pipeline.daemon._RETRY_MIN_SECONDS", 0.2)
    async with watching(tmp_path, emulator) as (p, daemon):
        emulator.state.options.fail_rate = 1.0
        for i in range(3):
            f.save(f.photo(80 + i), p.root / f"o{i}.png", "PNG")
        await until(lambda: len(p.runtime.journal.transient_paths()) == 3, what="failures recorded")
        assert p.paths() == []
        emulator.state.options.fail_rate = 0.0
        await until(
            lambda: (
                len(p.paths()) == 3
                and p.runtime.journal.count() == 0
                and daemon.waiting_for is None
            ),
            what="recovered after the outage",
        )


async def test_inotify_limit_falls_back_to_polling(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import imgrag.pipeline.watcher as watcher

    class Exhausted(watcher.Observer):  # type: ignore[misc,valid-type]
        def start(self) -> None:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(watcher, "Observer", Exhausted)
    async with watching(tmp_path, emulator) as (p, daemon):
        assert daemon.watch_mode == "polling"
        f.save(f.photo(90), p.root / "x.png", "PNG")
        await until(lambda: p.paths() == ["x.png"], what="file seen after the fallback")


async def test_rescan_catches_what_events_missed(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imgrag.pipeline.watcher as watcher

    monkeypatch.setattr(watcher.FolderWatcher, "_note", lambda self, event: None)  # deaf
    async with watching(tmp_path, emulator, rescan_minutes=0.01) as (p, _):
        f.save(f.photo(91), p.root / "missed.png", "PNG")
        await until(lambda: p.paths() == ["missed.png"], what="the periodic rescan")
