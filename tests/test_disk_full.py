"""A full disk under the state directory, on a real tmpfs: one line and an exit code, never
SIGBUS (qdrant-edge writes sparse files through mmap), and nothing indexed is lost.

The tmpfs is mounted by the test, which needs root (as here and in CI); elsewhere the
tests skip and say why.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from imgrag import DiskFull, StoreError
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.connectors.index import CollectionSpec, Point
from imgrag.connectors.stores import EdgeIndex
from imgrag.pipeline.journal import Journal

from tests import images_factory as f
from tests.test_cli_ingest import cli_env, imgrag, make_folder

REPO = Path(__file__).resolve().parent.parent
TMPFS_MB = 320


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh tmpfs of TMPFS_MB megabytes, unmounted afterwards whatever happened."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; run as root (as CI does) to test a full disk")
    mount = tmp_path / "state"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Take all but ``leave`` bytes of the filesystem with one file; returns it."""
    filler = disk / "filler"
    st = os.statvfs(disk)
    take = st.f_bavail * st.f_frsize - leave
    assert take > 0
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, take)
    finally:
        os.close(fd)
    return filler


def assert_one_clean_line(run: subprocess.CompletedProcess[str], what: str) -> None:
    # A signal shows as a negative return code (the shell's 128+N).
    assert 0 <= run.returncode < 128, f"{what} died with {run.returncode}: {run.stderr[-500:]}"
    assert "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().count("\n") == 0, run.stderr


def test_ingest_on_a_full_disk_stops_with_one_line_then_a_rerun_converges(
    tmp_path: Path, emulator: EmulatorHandle, small_disk: Path
) -> None:
    root = tmp_path / "inbox"
    make_folder(root, 6)
    env = cli_env(tmp_path, emulator, IMGRAG_STATE_DIR=str(small_disk))
    first = imgrag("ingest", str(root), "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["indexed"] == 6

    for i in range(6, 40):
        f.save(f.photo(i, (48, 32)), root / "new" / f"img{i}.png", "PNG")
    filler = fill(small_disk, leave=192 * 1024)

    full = imgrag("ingest", str(root), env=env)
    assert_one_clean_line(full, "ingest")
    assert full.returncode != 0
    pattern = rf"no space left under {re.escape(str(small_disk))}: \d+ MB free, need \d+"
    assert re.search(pattern, full.stderr), full.stderr

    filler.unlink()
    rerun = imgrag("ingest", str(root), "--json", env=env)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    # The six indexed before the disk filled are still there: not embedded again.
    assert (summary["unchanged"], summary["indexed"] + summary["reused"]) == (6, 34), summary
    after = json.loads(imgrag("status", str(root), "--json", env=env).stdout)
    assert (after["indexed"], after["pending"], after["failed"]) == (40, 0, 0)


def test_status_on_a_full_disk_does_not_die_by_a_signal(
    tmp_path: Path, emulator: EmulatorHandle, small_disk: Path
) -> None:
    root = tmp_path / "inbox"
    make_folder(root, 6)
    env = cli_env(tmp_path, emulator, IMGRAG_STATE_DIR=str(small_disk))
    assert imgrag("ingest", str(root), env=env).returncode == 0
    for i in range(6, 40):
        f.save(f.photo(i, (48, 32)), root / "new" / f"img{i}.png", "PNG")
    fill(small_disk, leave=0)
    imgrag("ingest", str(root), env=env)  # stopped by the full disk, however it stops
    status = imgrag("status", str(root), "--json", env=env)
    assert_one_clean_line(status, "status")
    # Either it reports (the store opens read-mostly) or it names the full disk.
    assert status.returncode == 0 or f"no space left under {small_disk}" in status.stderr, (
        status.stderr
    )


def test_failure_journal_on_a_full_disk_raises_disk_full(small_disk: Path) -> None:
    journal = Journal(small_disk / "journal.sqlite")
    try:
        journal.record("a.jpg", "sig", "permanent", "undecodable", "first")
        fill(small_disk, leave=0)
        with pytest.raises(DiskFull) as caught:  # not sqlite3.OperationalError
            for i in range(10_000):
                journal.record(f"f{i}.jpg", "sig", "transient", "store_unavailable", "x" * 900)
        assert f"no space left under {small_disk}:" in str(caught.value)
        assert journal.permanent_signature("a.jpg") == ("sig", "undecodable")
    finally:
        journal.close()


def test_background_build_waits_for_room_for_its_copy(small_disk: Path) -> None:
    index = EdgeIndex(small_disk / "store", auto_build=False)
    try:
        index.ensure_collection(CollectionSpec(name="images", model="m", dimension=64))
        points = [
            Point(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{i}")),
                vector=[i % 5 + 1.0] * 64,
                payload={},
            )
            for i in range(200)
        ]
        index.upsert(points)
        # Room for writes (72 MiB and the batch), not for a copy of the store beside it.
        fill(small_disk, leave=110 * 1024 * 1024)
        with pytest.raises(StoreError, match="background HNSW build postponed: no space left"):
            index.request_index_build()
        assert not list((small_disk / "store" / "images").glob("*.building"))
        index.upsert([Point(id=str(uuid.uuid4()), vector=[2.0] * 64, payload={})])
        assert index.count() == 201
    finally:
        index.close()


WRITER = textwrap.dedent(
    """
    import sys, uuid
    from imgrag import StoreError
    from imgrag.connectors.index import CollectionSpec, Point
    from imgrag.connectors.stores import EdgeIndex

    def batch(start):
        return [
            Point(id=str(uuid.uuid5(uuid.NAMESPACE_URL, str(i))), vector=[1.0 + i % 7] * 1024,
                  payload={"path": f"p{i}"})
            for i in range(start, start + 32)
        ]

    index = EdgeIndex(sys.argv[1])
    index.ensure_collection(CollectionSpec(name="images", model="m", dimension=1024))
    index.upsert(batch(0))
    print("ready", flush=True)
    sys.stdin.readline()  # the disk is full now
    start = 32
    try:
        for _ in range(200):  # far more than fits
            index.upsert(batch(start))
            start += 32
        print("no error", flush=True)
    except StoreError as exc:
        print("full", start, exc, flush=True)
    sys.stdin.readline()  # space is back
    index.upsert(batch(start))
    print("count", index.count(), start + 32, flush=True)
    index.close()
    """
)


def test_store_refuses_writes_on_a_full_disk_and_resumes_without_reopening(
    small_disk: Path,
) -> None:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(small_disk / "store")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr
        filler = fill(small_disk, leave=64 * 1024)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        line = proc.stdout.readline().strip()
        assert line.startswith("full "), (line, proc.wait(timeout=60), proc.stderr.read())
        assert f"no space left under {small_disk / 'store'}:" in line
        filler.unlink()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        word, count, expected = proc.stdout.readline().split()
        assert word == "count" and count == expected  # every acknowledged point is there
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_the_daemon_pauses_on_a_full_disk_and_resumes_when_space_is_back(
    tmp_path: Path, small_disk: Path, emulator: EmulatorHandle
) -> None:
    """A full disk under the state directory pauses the daemon (health says why) instead of
    killing it; once space is back it indexes what arrived meanwhile, losing nothing."""
    from tests.test_daemon_api import spawn_watch, status_of, wait_for
    from tests.test_daemon_stop import health_of, started

    root = tmp_path / "inbox"
    make_folder(root, 4)
    env = cli_env(tmp_path, emulator, IMGRAG_API__PORT="0")
    log = tmp_path / "watch.log"
    proc = spawn_watch(root, env, log)
    try:
        info = started(proc, small_disk / "daemon.json", log)
        wait_for(lambda: (status_of(info.url) or {}).get("indexed") == 4, what="the backfill")
        filler = fill(small_disk, leave=64 * 1024)
        for i in range(3):
            f.save(f.photo(100 + i, (48, 32)), root / f"late{i}.png", "PNG")
        wait_for(
            lambda: (health_of(info.url) or {}).get("status") == "degraded",
            timeout=120,
            what="health to say degraded",
        )
        health = health_of(info.url) or {}
        assert any("space" in str(p) or "store" in str(p) for p in health["problems"]), health
        assert proc.poll() is None, log.read_text()
        filler.unlink()
        wait_for(
            lambda: (status_of(info.url) or {}).get("indexed") == 7,
            timeout=180,
            what="the files that arrived on a full disk to be indexed",
        )
        wait_for(
            lambda: (health_of(info.url) or {}).get("status") == "ok",
            timeout=120,
            what="health to be ok again",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text()
