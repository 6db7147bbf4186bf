"""A read-only state directory: every command says so in one line naming the directory and
the fix, never a traceback. The directory is a real tmpfs mounted read-only by the test, so
it runs as root (as the suite does here and in CI) and is skipped, saying why, elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from imgrag import Retriever, StateNotWritable
from imgrag.connectors.emulator import EmulatorHandle

from tests import images_factory as f
from tests.test_cli_ingest import cli_env, imgrag

COMMANDS = [
    ["status"],
    ["search", "red"],
    ["sources"],
    ["ingest", "{root}"],
    ["retry", "{root}"],
    ["forget", "{root}"],
    ["watch", "{root}"],
    ["serve", "--port", "0"],
]


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def read_only_state(
    tmp_path_factory: pytest.TempPathFactory, emulator_session: EmulatorHandle
) -> Iterator[tuple[Path, dict[str, str]]]:
    """An indexed folder whose state directory is a tmpfs remounted read-only."""
    tmp_path = tmp_path_factory.mktemp("readonly")
    emulator = emulator_session
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a read-only tmpfs needs root and mount(8)")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", "size=512m", "tmpfs", str(mnt))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        root = tmp_path / "inbox"
        for i in range(2):
            f.save(f.photo(i, (40, 30)), root / f"p{i}.png", "PNG")
        env = cli_env(tmp_path, emulator, IMGRAG_STATE_DIR=str(mnt / "state"))
        done = imgrag("ingest", str(root), env=env)
        assert done.returncode == 0, done.stderr
        remounted = _mount("-o", "remount,ro", str(mnt))
        assert remounted.returncode == 0, remounted.stderr
        with pytest.raises(OSError):
            (mnt / "state" / "probe").write_text("x")
        yield root, env
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_every_command_is_one_line_naming_the_directory_and_the_fix(
    read_only_state: tuple[Path, dict[str, str]], command: list[str]
) -> None:
    root, env = read_only_state
    done = imgrag(*(a.format(root=root) for a in command), env=env, timeout=120)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert env["IMGRAG_STATE_DIR"] in lines[0] and "read-only" in lines[0].lower()
    assert "IMGRAG_STATE_DIR" in lines[0] and "writable" in lines[0]


def test_the_python_door_raises_the_same_error(
    read_only_state: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, env = read_only_state
    for name, value in env.items():
        if name.startswith(("IMGRAG_", "AZURE_")):
            monkeypatch.setenv(name, value)
    with pytest.raises(StateNotWritable, match="cannot be written"):
        Retriever.from_config()
