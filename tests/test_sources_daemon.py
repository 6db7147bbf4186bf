"""One daemon, many folders, in real subprocesses: ``imgrag watch A B``, a third folder added
to the running daemon from another process, ``imgrag ingest`` delegated to it, and the
pending count sampled while 2,000 files arrive and a folder is renamed."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.pipeline.daemon_client import DaemonInfo

from tests import images_factory as f
from tests.conftest import wait_until
from tests.test_cli_ingest import AUTH, cli_env, imgrag
from tests.test_daemon_api import spawn_watch, started


def status_of(info: DaemonInfo) -> dict[str, object]:
    try:
        body = httpx.get(f"{info.url}/status", headers=AUTH, timeout=10).json()
    except httpx.HTTPError:
        return {}
    return body if isinstance(body, dict) else {}


def images(root: Path, n: int, seed: int = 0) -> None:
    for i in range(n):
        f.save(f.photo(seed + i, (32, 24)), root / f"p{i}.png", "PNG")


@pytest.fixture
def watch(
    tmp_path: Path, emulator: EmulatorHandle
) -> Iterator[tuple[dict[str, str], list[Path], DaemonInfo]]:
    """``imgrag watch A B`` in a subprocess, up and done with its first reconcile."""
    a, b = tmp_path / "a", tmp_path / "b"
    images(a, 3)
    images(b, 2, seed=10)
    env = cli_env(tmp_path, emulator, IMGRAG_API__PORT="0", IMGRAG_INGEST__SETTLE_SECONDS="0.2")
    log = tmp_path / "daemon.log"
    proc = spawn_watch([a, b], env, log)
    try:
        info = started(proc, tmp_path / "state" / "daemon.json", log)
        wait_until(lambda: status_of(info).get("indexed") == 5, timeout=90, what="A and B")
        yield env, [a, b], info
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def test_watch_two_folders_then_add_a_third_from_another_process(
    watch: tuple[dict[str, str], list[Path], DaemonInfo], tmp_path: Path
) -> None:
    env, (a, b), info = watch
    report = status_of(info)
    assert sorted(s["root"] for s in report["sources"]) == [str(a), str(b)]  # type: ignore[attr-defined]
    c = tmp_path / "c"
    images(c, 4, seed=20)
    run = imgrag("watch", str(c), env=env)
    assert run.returncode == 0, run.stderr
    assert f"pid {info.pid}) now watches {c}" in run.stdout
    wait_until(lambda: status_of(info).get("indexed") == 9, timeout=90, what="C indexed")
    report = status_of(info)
    assert len(report["sources"]) == 3  # type: ignore[arg-type]
    # The new source is followed, not only reconciled once.
    f.save(f.photo(99, (32, 24)), c / "late.png", "PNG")
    wait_until(lambda: status_of(info).get("indexed") == 10, timeout=90, what="late.png")
    again = imgrag("watch", str(a), env=env)
    assert again.returncode == 0 and "already watches" in again.stdout, again.stderr


def test_ingest_is_delegated_to_the_running_daemon(
    watch: tuple[dict[str, str], list[Path], DaemonInfo], tmp_path: Path
) -> None:
    env, (a, _b), _info = watch
    d = tmp_path / "d"
    images(d, 2, seed=30)
    run = imgrag("ingest", str(d), "--json", env=env)
    assert run.returncode == 0, run.stderr
    assert "owns the index: it runs this pass" in run.stderr
    assert json.loads(run.stdout)["indexed"] == 2
    rerun = imgrag("ingest", str(a), "--json", env=env)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert (summary["removed"], summary["requests"], summary["unchanged"]) == (0, 0, 3)
    found = imgrag("search", "a photo", "--filter", f"root={d}", "--json", env=env)
    assert found.returncode == 0, found.stderr
    assert sorted(h["abs_path"] for h in json.loads(found.stdout)) == [
        str(d / "p0.png"),
        str(d / "p1.png"),
    ]
    status = imgrag("status", str(a), "--json", env=env)
    assert json.loads(status.stdout)["sources"][0]["indexed"] == 3


def test_pending_never_above_the_files_during_a_drop_and_a_rename(
    watch: tuple[dict[str, str], list[Path], DaemonInfo], tmp_path: Path
) -> None:
    """Status sampled while 2,000 files arrive in A and then A's folder of them is renamed:
    pending (distinct files waiting) never exceeds the files on disk."""
    _env, (a, b), info = watch
    seed = tmp_path / "seed.png"
    f.save(f.photo(5, (16, 12)), seed, "PNG")
    drop = a / "drop"
    drop.mkdir()
    total_files = 5 + 2000  # A and B's first files, plus the drop
    samples: list[tuple[int, int]] = []

    def sample() -> dict[str, object]:
        report = status_of(info)
        if report:
            samples.append((int(report["pending"]), int(report["indexed"])))  # type: ignore[call-overload]
        return report

    for i in range(2000):
        shutil.copyfile(seed, drop / f"f{i:04}.png")
        if i % 200 == 0:
            sample()
    wait_until(lambda: sample().get("indexed") == total_files, timeout=600, what="the drop")
    drop.rename(a / "renamed")
    wait_until(
        lambda: (r := sample()).get("indexed") == total_files and r.get("pending") == 0,
        timeout=600,
        what="the rename",
    )
    assert samples and max(p for p, _ in samples) <= total_files, max(samples)
    report = status_of(info)
    assert {s["root"]: s["indexed"] for s in report["sources"]} == {  # type: ignore[attr-defined]
        str(a): 2003,
        str(b): 2,
    }
