"""Points are removed only for files known gone: a folder that cannot be listed proves nothing.

The unreadable-folder tests run the real ``imgrag ingest`` in a child process whose
capabilities drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: as root (here and in CI) a
``chmod 000`` folder is otherwise readable, so the test would prove nothing.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from imgrag import FatalError
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.pipeline.candidates import Rules, walk

from tests import images_factory as f
from tests.ingest_harness import pipeline
from tests.test_cli_ingest import REPO, cli_env, imgrag

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2


def _drop_dac_capabilities() -> None:
    """preexec_fn: after exec, root no longer bypasses file permissions."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _unreadable_for_child(folder: Path) -> None:
    """Skip (with the reason) unless a child without DAC capabilities really cannot list it."""
    if os.geteuid() != 0:
        # Without root a plain chmod 000 is enforced already.
        folder.chmod(0)
        return
    folder.chmod(0)
    probe = subprocess.run(
        [sys.executable, "-c", f"import os; os.listdir({str(folder)!r})"],
        preexec_fn=_drop_dac_capabilities,
        capture_output=True,
        text=True,
    )
    if probe.returncode == 0 or "PermissionError" not in probe.stderr:
        folder.chmod(0o755)
        pytest.skip(f"cannot make a folder unreadable for a child process here: {probe.stderr}")


def add(root: Path, rel: str, seed: int) -> None:
    f.save(f.photo(seed, (48, 32)), root / rel, "PNG")


async def test_missing_root_removes_nothing(tmp_path: Path, emulator: EmulatorHandle) -> None:
    async with pipeline(tmp_path, emulator) as p:
        for i in range(3):
            add(p.root, f"a/p{i}.png", i)
        assert (await p.ingestor.reconcile()).indexed == 3
        os.rename(p.root, tmp_path / "away")
        summary = await p.ingestor.reconcile()
        assert p.paths() == ["a/p0.png", "a/p1.png", "a/p2.png"]
        assert (summary.removed, summary.root_missing) == (0, True)
        # Events for the vanished files prove nothing either while the root is gone.
        assert (await p.ingestor.update(["a/p0.png"])).removed == 0
        assert await p.ingestor.remove_folder("a") == 0
        os.rename(tmp_path / "away", p.root)
        calls = p.embed_calls()
        back = await p.ingestor.reconcile()
        assert (back.unchanged, back.removed, p.embed_calls()) == (3, 0, calls)


async def test_deleted_files_and_folders_are_still_removed(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    async with pipeline(tmp_path, emulator) as p:
        add(p.root, "keep.png", 1)
        add(p.root, "a/b/deep.png", 2)
        add(p.root, "c/gone.png", 3)
        await p.ingestor.reconcile()
        shutil.rmtree(p.root / "a")
        (p.root / "c" / "gone.png").unlink()
        summary = await p.ingestor.reconcile()
        assert summary.removed == 2  # known gone: their folders listed without them
        assert p.paths() == ["keep.png"]


async def test_a_pass_that_would_empty_the_index_refuses(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    async with pipeline(tmp_path, emulator) as p:
        add(p.root, "x.png", 1)
        add(p.root, "y.png", 2)
        await p.ingestor.reconcile()
        for name in ("x.png", "y.png"):
            (p.root / name).unlink()  # an unmounted drive leaves an empty mount point
        with pytest.raises(FatalError, match=r"refusing to remove all 2 .* --prune"):
            await p.ingestor.reconcile()
        assert p.paths() == ["x.png", "y.png"]
        assert (await p.ingestor.reconcile(prune=True)).removed == 2
        assert p.paths() == []


def test_include_matching_nothing_is_refused_until_confirmed(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    root = tmp_path / "inbox"
    for i in range(3):
        add(root, f"p{i}.png", i)
    env = cli_env(tmp_path, emulator)
    assert imgrag("ingest", str(root), env=env).returncode == 0
    nothing = {**env, "IMGRAG_INGEST__INCLUDE": "[]"}
    run = imgrag("ingest", str(root), env=nothing)
    assert run.returncode == 1, run.stdout
    assert "refusing to remove all 3" in run.stderr and "--prune" in run.stderr
    assert run.stderr.strip().count("\n") == 0 and "Traceback" not in run.stderr
    assert json.loads(imgrag("status", "--json", env=env).stdout)["indexed"] == 3
    pruned = imgrag("ingest", str(root), "--prune", "--json", env=nothing)
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["removed"] == 3


def test_walk_notes_what_it_cannot_list(tmp_path: Path) -> None:
    from imgrag.pipeline.candidates import Listing

    listing = Listing()
    assert list(walk(tmp_path / "nowhere", Rules(include=["*.png"]), listing=listing)) == []
    assert listing.root_missing and not listing.covers("a.png")
    listing = Listing(unreadable={"a/locked": "Permission denied"})
    assert not listing.covers("a/locked/x.png") and not listing.covers("a/locked")
    assert listing.covers("a/lock.png") and listing.covers("a/lockedx/y.png")


def test_unreadable_subfolder_removes_nothing_under_it(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    root = tmp_path / "inbox"
    for i in range(2):
        add(root, f"open/o{i}.png", i)
        add(root, f"locked/l{i}.png", 10 + i)
    env = cli_env(tmp_path, emulator)
    first = imgrag("ingest", str(root), "--json", env=env)
    assert json.loads(first.stdout)["indexed"] == 4, first.stderr
    (root / "open" / "o1.png").unlink()  # really gone: its folder lists without it
    _unreadable_for_child(root / "locked")
    try:
        run = subprocess.run(
            [sys.executable, "-m", "imgrag.pipeline.cli", "ingest", str(root), "--json"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=_drop_dac_capabilities if os.geteuid() == 0 else None,
        )
    finally:
        (root / "locked").chmod(0o755)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["removed"] == 1  # o1.png only
    assert summary["unreadable"] == {"locked": "Permission denied"}
    assert "could not read 1 folders: locked (Permission denied)" in run.stderr
    status = json.loads(imgrag("status", "--json", env=env).stdout)
    assert status["indexed"] == 3


def test_daemon_reports_the_folders_it_cannot_read(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    from tests.test_daemon_api import spawn_watch, started, status_of, wait_for

    root = tmp_path / "inbox"
    add(root, "open/o.png", 1)
    add(root, "locked/l.png", 2)
    env = cli_env(tmp_path, emulator, IMGRAG_API__PORT="0")
    assert json.loads(imgrag("ingest", str(root), "--json", env=env).stdout)["indexed"] == 2
    _unreadable_for_child(root / "locked")
    log = tmp_path / "daemon.log"
    try:
        proc = spawn_watch(
            root,
            env,
            log,
            preexec_fn=_drop_dac_capabilities if os.geteuid() == 0 else None,
        )
        try:
            info = started(proc, tmp_path / "state" / "daemon.json", log)
            wait_for(
                lambda: (status_of(info.url) or {}).get("health") == "degraded",
                what="the unreadable folder reported",
            )
            status = status_of(info.url) or {}
            assert status["indexed"] == 2  # l.png kept
            assert any(
                "cannot read 1 folders: locked (Permission denied)" in p
                for p in status["problems"]  # type: ignore[union-attr]
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    finally:
        (root / "locked").chmod(0o755)
