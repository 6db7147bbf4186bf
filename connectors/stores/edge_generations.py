"""Shard generations of an embedded collection and the ``CURRENT`` file that names the live one.

A generation is a folder ``gen-NNNNNN`` holding one qdrant-edge shard. A background build
writes ``gen-NNNNNN.building``, renames it to the next number and only then points
``CURRENT`` at it. Whatever else lies around after a crash is a leftover copy, but that is
only known once ``CURRENT`` names a generation that really opens: until then nothing is
deleted.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

CURRENT_FILE = "CURRENT"
SHARD_CONFIG = "edge_config.json"
_NAME = re.compile(r"^gen-(\d{6})$")


def generation_name(number: int) -> str:
    return f"gen-{number:06d}"


def generation_number(name: str) -> int | None:
    """The number of a generation folder name, or None for anything else."""
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def read_current(directory: Path) -> str | None:
    """The generation ``CURRENT`` names, or None when it is missing, blank or not a name.

    Raises OSError when the file exists but cannot be read.
    """
    try:
        text = (directory / CURRENT_FILE).read_text(errors="replace").strip()
    except FileNotFoundError:
        return None
    return text if generation_number(text) is not None else None


def is_complete(folder: Path) -> bool:
    """Whether a generation folder holds a whole shard (its config, segments and WAL)."""
    return (
        (folder / SHARD_CONFIG).is_file()
        and (folder / "segments").is_dir()
        and (folder / "wal").is_dir()
    )


def complete_generations(directory: Path) -> list[str]:
    """Names of the complete generations in ``directory``, newest first."""
    found: list[tuple[int, str]] = []
    for entry in directory.iterdir():
        number = generation_number(entry.name)
        if number is not None and entry.is_dir() and is_complete(entry):
            found.append((number, entry.name))
    return [name for _, name in sorted(found, reverse=True)]


def newest_number(directory: Path) -> int:
    """The highest generation number used in ``directory`` (building copies included)."""
    numbers = [0]
    for entry in directory.iterdir():
        number = generation_number(entry.name.removesuffix(".building"))
        if number is not None:
            numbers.append(number)
    return max(numbers)


def remove_leftovers(directory: Path, live: str, keep: set[str] | None = None) -> None:
    """Delete copies a crashed build or swap left behind; call only once ``live`` is open.
    ``keep``: folders of a build that is still going (adopted by the caller)."""
    kept = {live, *(keep or set())}
    for entry in directory.iterdir():
        name = entry.name.removesuffix(".building")
        if entry.is_dir() and generation_number(name) is not None and entry.name not in kept:
            shutil.rmtree(entry, ignore_errors=True)
