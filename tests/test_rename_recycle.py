"""A move never pays twice: when the two halves of a rename land in different batches (a
rename storm), or a kill -9 falls between them, the new name reuses the old point's vector.
Embedding requests are counted at the emulator; the store, journal and files are real."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.pipeline import ingest as ingest_module

from tests import images_factory as f
from tests.ingest_harness import pipeline
from tests.test_cli_ingest import REPO, cli_env, imgrag

N = 12


def photos(root: Path, n: int = N) -> list[str]:
    names = [f"p{i:02d}.png" for i in range(n)]
    for i, name in enumerate(names):
        f.save(f.photo(i, (40, 30)), root / name, "PNG")
    return names


def rename_all(root: Path, names: list[str]) -> list[str]:
    new = [f"renamed-{n}" for n in names]
    for old, name in zip(names, new, strict=True):
        (root / old).rename(root / name)
    return new


def image_requests(emulator: EmulatorHandle) -> int:
    return sum(1 for r in emulator.state.requests if r.route == "images")


async def test_a_storm_whose_halves_land_in_different_batches_pays_nothing(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small in-memory cache: a storm larger than it is what 3,000 renames are to 4,096.
    monkeypatch.setattr(ingest_module, "_VECTOR_CACHE", 8)
    async with pipeline(tmp_path, emulator) as p:
        names = photos(p.root)
        await p.ingestor.reconcile()
        assert image_requests(emulator) > 0
        emulator.state.reset()
        new = rename_all(p.root, names)
        gone = await p.ingestor.update(names)  # the old halves: one batch
        assert gone.removed == N
        done = await p.ingestor.update(new)  # the new halves: a later batch
        assert done.reused == N and done.indexed == 0, done
        assert image_requests(emulator) == 0
        assert p.paths() == sorted(new)


async def test_the_next_process_reuses_what_a_previous_one_deleted(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    async with pipeline(tmp_path, emulator) as p:
        names = photos(p.root)
        await p.ingestor.reconcile()
        new = rename_all(p.root, names)
        assert (await p.ingestor.update(names)).removed == N
    emulator.state.reset()
    async with pipeline(tmp_path, emulator) as p:  # a new process: nothing in memory
        done = await p.ingestor.update(new)
        assert done.reused == N and done.indexed == 0, done
        assert image_requests(emulator) == 0


_OLD_HALF_THEN_KILL = """
import asyncio, os, signal, sys
from pathlib import Path
from imgrag.pipeline.config import load_settings
from imgrag.pipeline.runtime import open_runtime

async def main() -> None:
    settings = load_settings(os.environ["IMGRAG_CONFIG"])
    root = Path(sys.argv[1])
    async with open_runtime(settings) as runtime:
        ingestor = runtime.ingestor(root)
        summary = await ingestor.update(sys.argv[2:])
        print(summary.removed, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # between the two halves of the rename

asyncio.run(main())
"""


def test_a_kill_9_between_the_halves_costs_no_request(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    names = photos(root)
    env = cli_env(tmp_path, emulator)
    assert imgrag("ingest", str(root), env=env).returncode == 0
    emulator.state.reset()
    assert imgrag("ingest", str(root), env=env).returncode == 0  # nothing to do: its probe
    probe = image_requests(emulator)
    rename_all(root, names)
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_OLD_HALF_THEN_KILL), str(root), *names],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -9, child.stderr
    assert child.stdout.split() == [str(N)]  # the old points were deleted before the kill
    emulator.state.reset()
    done = imgrag("ingest", str(root), "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert '"indexed": 0' in done.stdout and f'"reused": {N}' in done.stdout, done.stdout
    assert image_requests(emulator) == probe  # the start-up probe, no embedding
