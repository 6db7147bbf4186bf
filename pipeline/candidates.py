"""Which files in a folder are images to index, and walking a folder for them."""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Names that are never final files: partial downloads, editor locks, OS litter.
_PARTIAL_SUFFIXES = (".part", ".crdownload", ".tmp", ".partial", ".download", ".swp")
_LITTER = {".DS_Store", "Thumbs.db", "desktop.ini"}


@dataclass(frozen=True, slots=True)
class Rules:
    """Which files to index. One rule for ``include`` and ``exclude`` globs alike: a glob
    matches a file when it matches its relative POSIX path or its name, ignoring case
    (``*.jpg`` takes ``a/B.JPG``; ``raw/*`` and ``RAW/*`` both take ``raw/x.png``). A file is
    indexed when some include glob matches it and no exclude glob does."""

    include: Sequence[str]
    exclude: Sequence[str] = ()
    ignore_dirs: Sequence[Path] = ()

    def wants(self, rel_path: str) -> bool:
        """Whether the file at this relative (POSIX) path should be indexed."""
        parts = PurePosixPath(rel_path).parts
        if not parts or any(p.startswith(".") for p in parts):
            return False  # hidden files and folders, including the state directory
        name = parts[-1]
        lower = name.lower()
        if name in _LITTER or name.startswith("~$") or lower.endswith(_PARTIAL_SUFFIXES):
            return False
        path = rel_path.lower()
        return any(_matches(path, lower, g) for g in self.include) and not any(
            _matches(path, lower, g) for g in self.exclude
        )


def _matches(path: str, name: str, glob: str) -> bool:
    pattern = glob.lower()
    return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(name, pattern)


def relative(root: Path, path: Path) -> str | None:
    """The POSIX path of ``path`` below ``root``, or None when it is outside."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    return rel.as_posix() if rel.parts else None


@dataclass(frozen=True, slots=True)
class Seen:
    """A candidate file as found on disk: enough to tell whether it changed."""

    rel: str
    size: int
    mtime_ns: int
    sidecar: str
    """Size and mtime of ``.txt``/``.json`` sidecars ("" when there are none)."""

    @property
    def signature(self) -> str:
        return f"{self.size}:{self.mtime_ns}:{self.sidecar}"


_SIDECAR_SUFFIXES = (".txt", ".json")


def _sidecar_sig(stats: dict[str, os.stat_result], stem: str) -> str:
    parts = []
    for suffix in _SIDECAR_SUFFIXES:
        st = stats.get(stem + suffix)
        if st is not None:
            parts.append(f"{suffix[1:]}{st.st_size}@{st.st_mtime_ns}")
    return ",".join(parts)


def seen(root: Path, rel: str, rules: Rules) -> Seen | None:
    """Stat one candidate (and its sidecars); None when it is gone or not wanted."""
    if not rules.wants(rel):
        return None
    path = root / rel
    try:
        if path.is_symlink() and not _inside(path, root.resolve()):
            return None
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    if not os.path.isfile(path):
        return None
    stats: dict[str, os.stat_result] = {}
    for suffix in _SIDECAR_SUFFIXES:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, PermissionError):
            stats[path.stem + suffix] = path.with_suffix(suffix).stat()
    return Seen(rel, st.st_size, st.st_mtime_ns, _sidecar_sig(stats, path.stem))


def walk(root: Path, rules: Rules, below: str = "") -> Iterator[Seen]:
    """Every wanted file below ``root`` (or its subfolder ``below``), one folder at a time.

    Symbolic links are followed only when they resolve inside the root.
    """
    real_root = root.resolve()
    ignored = {p.resolve() for p in rules.ignore_dirs}
    stack = [root / below if below else root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        files: list[tuple[Path, os.stat_result]] = []
        sidecars: dict[str, os.stat_result] = {}
        for entry in entries:
            path = Path(entry.path)
            try:
                if entry.is_symlink() and not _inside(path, real_root):
                    continue
                if entry.is_dir():
                    if not entry.name.startswith(".") and path.resolve() not in ignored:
                        stack.append(path)
                elif entry.is_file():
                    if entry.name.lower().endswith(_SIDECAR_SUFFIXES):
                        sidecars[entry.name] = entry.stat()
                    files.append((path, entry.stat()))
            except (FileNotFoundError, PermissionError):
                continue  # vanished or unreadable while walking: the next scan sees it
        for path, st in files:
            rel = relative(root, path)
            if rel is None or not rules.wants(rel):
                continue
            yield Seen(rel, st.st_size, st.st_mtime_ns, _sidecar_sig(sidecars, path.stem))


def _inside(path: Path, real_root: Path) -> bool:
    try:
        path.resolve().relative_to(real_root)
    except (ValueError, OSError):
        return False
    return True
