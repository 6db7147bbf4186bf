"""Which files in a folder are images to index, and walking a folder for them."""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import functools
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from imgrag.pipeline.names import is_plain, on_disk, printable, stored

log = logging.getLogger("imgrag.candidates")

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
        # str.split, not PurePosixPath: this runs for every file of every rescan.
        parts = [p for p in rel_path.split("/") if p and p != "."]
        if not parts or any(p.startswith(".") for p in parts):
            return False  # hidden files and folders, including the state directory
        name = parts[-1]
        lower = name.lower()
        if name in _LITTER or name.startswith("~$") or lower.endswith(_PARTIAL_SUFFIXES):
            return False
        path = rel_path.lower()
        include = _pattern(tuple(self.include))
        if not (include.match(path) or include.match(lower)):
            return False
        exclude = _pattern(tuple(self.exclude))
        return not (exclude.match(path) or exclude.match(lower))


_Match = Callable[[str], "re.Match[str] | None"]


def _wanted_name(name: str, rel: str, include: _Match, exclude: _Match | None) -> bool:
    """``Rules.wants(rel)`` for a plain ``rel`` in a folder already known not hidden."""
    if name[0] == "." or name in _LITTER or name.startswith("~$"):
        return False
    lower = name.lower()
    if lower.endswith(_PARTIAL_SUFFIXES):
        return False
    path = rel.lower()
    if not (include(path) or include(lower)):
        return False
    return exclude is None or not (exclude(path) or exclude(lower))


@functools.lru_cache(maxsize=64)
def _endings(globs: tuple[str, ...]) -> tuple[str, ...] | None:
    """For globs that are all ``*`` and a literal ASCII ending without ``/`` ("*.jpg"), the
    lowercased endings: such a glob matches a path exactly when its name ends so. Else None."""
    out = []
    for glob in globs:
        tail = glob[1:]
        if (
            not glob.startswith("*")
            or not tail
            or not tail.isascii()
            or any(c in tail for c in "*?[]/\\")
        ):
            return None
        out.append(tail.lower())
    return tuple(out) if out else None


@functools.lru_cache(maxsize=64)
def _pattern(globs: tuple[str, ...]) -> re.Pattern[str]:
    """One regular expression for a list of globs (fnmatch's, lowercased): one match call
    per file instead of one per glob. No globs match nothing."""
    if not globs:
        return re.compile(r"(?!)")
    return re.compile("|".join(f"(?:{fnmatch.translate(g.lower())})" for g in globs))


def relative(root: Path, path: Path) -> str | None:
    """The POSIX path of ``path`` below ``root`` in its stored form (see ``names``), or None
    when it is outside."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    return stored(rel.as_posix()) if rel.parts else None


@dataclass(frozen=True, slots=True)
class Seen:
    """A candidate file as found on disk: enough to tell whether it changed."""

    rel: str
    """The path as the index and the journal store it (``names.stored``)."""
    size: int
    mtime_ns: int
    sidecar: str
    """Size and mtime of ``.txt``/``.json`` sidecars ("" when there are none)."""
    disk_rel: str | None = None
    """The path as the OS names it, when that differs from ``rel`` (bytes not UTF-8)."""

    @property
    def signature(self) -> str:
        return f"{self.size}:{self.mtime_ns}:{self.sidecar}"

    @property
    def disk(self) -> str:
        """The relative path to open."""
        return self.disk_rel if self.disk_rel is not None else self.rel


_SIDECAR_SUFFIXES = (".txt", ".json")


def _sidecar_sig(stats: dict[str, os.stat_result], stem: str) -> str:
    if not stats:
        return ""  # most folders have no sidecars: skip the lookups
    parts = []
    for suffix in _SIDECAR_SUFFIXES:
        st = stats.get(stem + suffix)
        if st is not None:
            parts.append(f"{suffix[1:]}{st.st_size}@{st.st_mtime_ns}")
    return ",".join(parts)


def seen(root: Path, rel: str, rules: Rules) -> Seen | None:
    """Stat one candidate (and its sidecars); None when it is gone, not wanted, not a
    regular file, or (through a link) outside the root."""
    if not rules.wants(rel):
        return None
    disk = _disk_name(root, rel)
    path = root / disk
    try:
        if not _inside(path, _real(root)):
            return None
        st = path.stat()
    except (OSError, ValueError):  # gone, unreadable, a link loop, a name the OS refuses
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    stats: dict[str, os.stat_result] = {}
    real_root = _real(root)
    for suffix in _SIDECAR_SUFFIXES:
        sidecar = path.with_suffix(suffix)
        with contextlib.suppress(OSError, ValueError):
            # The same sidecars walk() counts: regular files whose real path is inside the
            # root. Otherwise a FIFO or a link out of the root would give this file another
            # signature here than in a walk, and it would look changed on every pass.
            sidecar_st = sidecar.stat()
            if stat.S_ISREG(sidecar_st.st_mode) and _inside(sidecar, real_root):
                stats[path.stem + suffix] = sidecar_st
    return Seen(
        rel,
        st.st_size,
        st.st_mtime_ns,
        _sidecar_sig(stats, path.stem),
        disk if disk != rel else None,
    )


def _disk_name(root: Path, rel: str) -> str:
    """The on-disk path of a stored ``rel``; a real file spelled exactly ``rel`` wins."""
    disk = on_disk(rel)
    if disk != rel and os.path.lexists(root / rel):
        return rel
    return disk


@dataclass(slots=True)
class Listing:
    """How complete a walk was: what could not be listed, so nothing under it is removed."""

    root_missing: bool = False
    """The root itself could not be listed (moved away, deleted, unmounted, unreadable)."""
    unreadable: dict[str, str] = field(default_factory=dict)
    """Relative folder (or entry) → why it could not be read."""

    @property
    def complete(self) -> bool:
        return not self.root_missing and not self.unreadable

    def covers(self, rel: str) -> bool:
        """Whether the absence of ``rel`` from the walk means it is really gone: the root
        was listed and no folder on its way (nor the entry itself) failed to list."""
        if self.root_missing:
            return False
        return not any(rel == u or rel.startswith(u + "/") for u in self.unreadable)


def walk(
    root: Path, rules: Rules, below: str = "", listing: Listing | None = None
) -> Iterator[Seen]:
    """Every wanted file below ``root`` (or its subfolder ``below``), one folder at a time.

    Symbolic links are followed only when they resolve inside the root. A folder or entry
    that cannot be read is noted in ``listing`` (when given): the walk goes on, and the
    caller must not take what is below it for deleted.
    """
    for rows in walk_rows(root, rules, below, listing):
        for row in rows:
            yield Seen(*row)


Row = tuple[str, int, int, str, str | None]
"""A wanted file as ``walk_rows`` finds it: the fields of ``Seen``, in its order."""


def walk_rows(
    root: Path,
    rules: Rules,
    below: str = "",
    listing: Listing | None = None,
    *,
    present: set[str] | None = None,
    unchanged: Callable[[str, int, int, str], bool] | None = None,
) -> Iterator[list[Row]]:
    """``walk`` one folder at a time, each file a plain tuple.

    A rescan passes ``present`` (every wanted path found is added to it) and ``unchanged``
    (whether the index holds a path with this size, mtime and sidecar signature): such
    files get no row at all. No container is made per unchanged file, so the walk of an
    unchanged folder neither builds objects nor sets off the garbage collector, which
    scanning everything the process holds cost more than the rest of the pass.
    """
    walk = _Walk(root, rules, listing if listing is not None else Listing(), present, unchanged)
    stack = walk.start(below)
    while stack:
        folder, above, prefix = stack.pop()
        found = walk.list_folder(folder, above, prefix, stack, below)
        if found is not None:
            rows = walk.rows(prefix, found)
            if rows:
                yield rows


_Stacked = tuple[Path, frozenset[tuple[int, int]], str]
"""A folder still to list: its path, the (device, inode) of the folders above it up to the
root, and its on-disk path relative to the root ("a/b/")."""


@dataclass(slots=True)
class _Folder:
    """The files of one listed folder, as parallel lists (not a tuple per file: see
    ``walk_rows``), and the stats of its sidecar files by name."""

    entries: list[os.DirEntry[str]]
    names: list[str] = field(default_factory=list)
    lowers: list[str] = field(default_factory=list)
    stats: list[os.stat_result] = field(default_factory=list)
    sidecars: dict[str, os.stat_result] = field(default_factory=dict)


class _Walk:
    """One walk below a root: what stays the same from folder to folder."""

    def __init__(
        self,
        root: Path,
        rules: Rules,
        listing: Listing,
        present: set[str] | None,
        unchanged: Callable[[str, int, int, str], bool] | None,
    ) -> None:
        self.root = root
        self.rules = rules
        self.listing = listing
        self.present = present
        self.unchanged = unchanged
        self.real_root = _real(root)
        self.ignored = {_real(p) for p in rules.ignore_dirs}
        self.include = _pattern(tuple(rules.include)).match
        self.exclude = _pattern(tuple(rules.exclude)).match if rules.exclude else None
        # The usual rules ("*.jpg", ..., no exclude) come down to the name's ending.
        self.endings = None if rules.exclude else _endings(tuple(rules.include))
        self.start_folder = root

    def start(self, below: str) -> list[_Stacked]:
        """The first folder to list (``below`` the root), or none when it is reached
        through a link to a folder above it or lies out of the root."""
        root = self.root
        self.start_folder = root / on_disk(below) if below else root
        # Each folder carries the (device, inode) of the folders above it, up to the root: a
        # link back to one of them (a loop, or a link to a parent) is not followed again.
        above = _identity(root)
        folder = root
        for part in PurePosixPath(on_disk(below)).parts if below else ():
            folder = folder / part
            here = _identity(folder)
            if here & above or not _inside(folder, self.real_root):
                return []
            above |= here
        # Each folder also carries its on-disk path relative to the root ("a/b/"): per-file
        # paths are then string concatenations, not pathlib operations (a rescan's main cost).
        top = on_disk(below).strip("/") + "/" if below else ""
        return [(self.start_folder, above, top)]

    def list_folder(
        self,
        folder: Path,
        above: frozenset[tuple[int, int]],
        prefix: str,
        stack: list[_Stacked],
        below: str,
    ) -> _Folder | None:
        """The files of ``folder``; its subfolders go on ``stack``. None when it cannot be
        listed (noted in the listing: unknown, never "empty")."""
        try:
            with os.scandir(folder) as it:
                found = _Folder(list(it))
        except OSError as exc:
            # Gone, not a folder, EACCES, EIO, a stale mount: unknown, never "empty".
            if folder == self.start_folder and not below:
                self.listing.root_missing = True
            rel_folder = relative(self.root, folder) or below or "."
            self.listing.unreadable[rel_folder] = exc.strerror or type(exc).__name__
            return None
        for entry in found.entries:
            try:
                self._take(entry, above, prefix, stack, found)
            except ValueError:
                continue  # a name the OS cannot take back: the next scan sees it
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOENT):
                    continue  # a link loop is never a file; a vanished entry is seen next time
                # Unreadable while walking: the next scan sees it; keep its point.
                rel_entry = relative(self.root, Path(entry.path))
                if rel_entry is not None:
                    self.listing.unreadable[rel_entry] = exc.strerror or type(exc).__name__
        return found

    def _take(
        self,
        entry: os.DirEntry[str],
        above: frozenset[tuple[int, int]],
        prefix: str,
        stack: list[_Stacked],
        found: _Folder,
    ) -> None:
        if entry.is_symlink() and not _inside(Path(entry.path), self.real_root):
            return
        if entry.is_dir():
            st = entry.stat()
            key = (st.st_dev, st.st_ino)
            if key in above or entry.name.startswith("."):
                return
            path = Path(entry.path)
            if _real(path) not in self.ignored:
                stack.append((path, above | {key}, prefix + entry.name + "/"))
        elif entry.is_file():
            st = entry.stat()
            name = entry.name
            lower = name.lower()
            if lower.endswith(_SIDECAR_SUFFIXES):
                found.sidecars[name] = st
            found.names.append(name)
            found.lowers.append(lower)
            found.stats.append(st)

    def rows(self, prefix: str, found: _Folder) -> list[Row]:
        """The wanted files of one listed folder, less those ``unchanged`` says it holds."""
        rows: list[Row] = []
        # Per folder, not per file: whether its path is plain text and hides nothing, so a
        # plain name needs only the checks on itself (the same answers as rules.wants).
        plain = is_plain(prefix)
        shown = plain and not any(p.startswith(".") for p in prefix.split("/") if p and p != ".")
        fast = shown and self.endings is not None
        sidecars, present, unchanged = found.sidecars, self.present, self.unchanged
        names: set[str] | None = None
        for name, lower, st in zip(found.names, found.lowers, found.stats, strict=True):
            disk = prefix + name
            if fast and name.isascii():
                if not self._plain_wanted(name, lower):
                    continue
                rel = disk
            elif shown and (name.isascii() or is_plain(name)):
                rel = disk
                if not _wanted_name(name, disk, self.include, self.exclude):
                    continue
            else:
                if names is None:  # only odd names need the folder's other names
                    names = {e.name for e in found.entries}
                odd = self._odd_name(name, disk, names)
                if odd is None:
                    continue
                rel = odd
            sig = _sidecar_sig(sidecars, _stem(name)) if sidecars else ""
            if present is not None:
                present.add(rel)
            if unchanged is not None and unchanged(rel, st.st_size, st.st_mtime_ns, sig):
                continue
            rows.append((rel, st.st_size, st.st_mtime_ns, sig, disk if disk != rel else None))
        return rows

    def _plain_wanted(self, name: str, lower: str) -> bool:
        """A plain ASCII name in a plain folder, under the usual rules: its ending decides."""
        assert self.endings is not None
        return not (
            not lower.endswith(self.endings)
            or lower.endswith(_PARTIAL_SUFFIXES)
            or name[0] == "."
            or name in _LITTER
            or name.startswith("~$")
        )

    def _odd_name(self, name: str, disk: str, names: set[str]) -> str | None:
        """The stored path of a name that is not plain text, or None when it is not wanted
        (or another file of the folder is named as this one is stored)."""
        rel = stored(disk)
        if not self.rules.wants(rel):
            return None
        if rel != disk and stored(name) != name and stored(name) in names:
            # Two files, one index key: the one spelled as stored wins (seen()).
            log.warning("%s: skipped, a file is named as this one is stored", printable(rel))
            return None
        return rel


def _stem(name: str) -> str:
    dot = name.rfind(".")
    return name[:dot] if dot > 0 else name


def _identity(folder: Path) -> frozenset[tuple[int, int]]:
    try:
        st = folder.stat()
    except (OSError, ValueError):
        return frozenset()
    return frozenset({(st.st_dev, st.st_ino)})


def _real(path: Path) -> Path:
    """The real path, never raising on loops (``Path.resolve`` raises RuntimeError)."""
    return Path(os.path.realpath(path))


def _inside(path: Path, real_root: Path) -> bool:
    """Whether ``path`` exists and its real path is ``real_root`` or below it."""
    try:
        real = Path(os.path.realpath(path, strict=True))
        real.relative_to(real_root)
    except (OSError, ValueError):
        return False
    return True
