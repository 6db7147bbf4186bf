"""Sources: the named folders one index holds, kept in ``sources.json`` in the state directory.

A source is a name and an absolute root. Point ids, payloads, reconciliation and the failure
journal are keyed by it, so ingesting one folder never touches another's points. A folder
inside a registered root is that source (with a ``scope``, the subfolder); a new folder gets
``--source NAME`` or a stable name made from its absolute path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from imgrag._errors import SourceError
from pydantic import BaseModel, Field, ValidationError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SourceEntry(BaseModel):
    name: str
    root: str
    added_at: float = Field(default_factory=time.time)


class _File(BaseModel):
    sources: list[SourceEntry] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a folder named on the command line is: a source, its root, and the subfolder
    (relative POSIX path, "" for the whole root)."""

    name: str
    root: Path
    scope: str = ""


BLOB_SCHEME = "az://"


def uri_of(arg: str | Path) -> str | None:
    """The ``az://`` address a command-line argument names, or None for a folder.

    A ``Path`` argument has its ``//`` collapsed (``az:/acct/c``); both forms are read.
    """
    text = str(arg)
    if text.startswith(BLOB_SCHEME):
        return text
    if text.startswith("az:/"):
        return BLOB_SCHEME + text[len("az:/") :]
    return None


def is_blob_root(root: str) -> bool:
    """Whether a registered source root is a blob container rather than a folder."""
    return uri_of(root) is not None


def absolute(directory: Path) -> Path:
    """The folder as an absolute, normalized path (links kept: the user's name for it)."""
    return Path(os.path.abspath(os.path.expanduser(directory)))


def derived_name(root: Path) -> str:
    """A stable name for a root: its folder name and a hash of the machine and the path, so
    two machines feeding one server collection never share a name by accident."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", root.name).strip("-.")[:40] or "root"
    digest = hashlib.sha1(
        f"{socket.gethostname()}\x00{root}".encode("utf-8", "surrogateescape"),
        usedforsecurity=False,
    ).hexdigest()[:8]
    return f"{base}-{digest}"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise SourceError(
            f"source name {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _inside(path: Path, root: Path) -> str | None:
    """``path`` relative to ``root`` as POSIX ("" when equal), or None when outside."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    return PurePosixPath(*rel.parts).as_posix() if rel.parts else ""


class Registry:
    """The sources of one state directory. Reads are fresh each call (another process, a
    daemon, may have added one); writes replace the file atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def entries(self) -> list[SourceEntry]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        try:
            return _File.model_validate(json.loads(text)).sources
        except (ValueError, ValidationError) as exc:
            raise SourceError(
                f"{self.path}: not a sources file ({exc.__class__.__name__}); move it away "
                "and ingest the folders again (their stored vectors are reused)"
            ) from None

    def get(self, name_or_dir: str) -> SourceEntry | None:
        """The source named so, or whose root is that folder."""
        entries = self.entries()
        for e in entries:
            if e.name == name_or_dir:
                return e
        wanted = str(absolute(Path(name_or_dir)))
        return next((e for e in entries if e.root in (wanted, name_or_dir)), None)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time, across threads and processes (a daemon adding a source
        while a command registers another); POSIX advisory lock, threads only elsewhere."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                import fcntl
            except ImportError:  # Windows: the daemon serializes through its API
                yield
                return
            with open(self.path.with_suffix(".lock"), "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)

    def resolve(
        self, directory: Path, name: str | None = None, *, register: bool = True
    ) -> Resolved:
        """The source for ``directory``: the registered one whose root holds it, else a new
        one (named ``name`` or derived from the path), registered when ``register``."""
        path = absolute(directory)
        with self._locked() if register else self._lock:
            entries = self.entries()
            holders = [(e, _inside(path, Path(e.root))) for e in entries]
            inside = [(e, rel) for e, rel in holders if rel is not None]
            if name is not None:
                check_name(name)
                named = next((e for e in entries if e.name == name), None)
                if named is not None:
                    rel = _inside(path, Path(named.root))
                    if rel is None:
                        raise SourceError(
                            f"source {name!r} is the folder {named.root}, not {path}; name "
                            "another source, or `imgrag forget "
                            f"{name}` first to move it"
                        )
                    return Resolved(named.name, Path(named.root), rel)
            if inside:
                entry, rel = max(inside, key=lambda item: len(item[0].root))
                if name is not None and entry.name != name:
                    raise SourceError(
                        f"{path} is inside source {entry.name!r} ({entry.root}); drop --source "
                        f"to ingest it as part of {entry.name!r}"
                    )
                return Resolved(entry.name, Path(entry.root), rel or "")
            below = [e for e in entries if _inside(Path(e.root), path) is not None]
            if below:
                raise SourceError(
                    f"{path} holds source {below[0].name!r} ({below[0].root}); ingest the "
                    f"sources one by one, or `imgrag forget {below[0].name}` first"
                )
            new = SourceEntry(name=name or derived_name(path), root=str(path))
            if register:
                self._write([*entries, new])
            return Resolved(new.name, path)

    def register_root(self, name: str, root: str) -> SourceEntry:
        """Register a source that is not a folder (``az://account/container``) under ``name``;
        the entry already there when it names the same root."""
        check_name(name)
        with self._locked():
            entries = self.entries()
            for e in entries:
                if e.name == name and e.root == root:
                    return e
                if e.name == name:
                    raise SourceError(
                        f"source {name!r} is {e.root}, not {root}; name the source another way, "
                        f"or `imgrag forget {name}` first"
                    )
            new = SourceEntry(name=name, root=root)
            self._write([*entries, new])
            return new

    def remove(self, name: str) -> bool:
        with self._locked():
            entries = self.entries()
            kept = [e for e in entries if e.name != name]
            if len(kept) == len(entries):
                return False
            self._write(kept)
            return True

    def _write(self, entries: list[SourceEntry]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(_File(sources=entries).model_dump_json(indent=2), encoding="utf-8")
        os.replace(tmp, self.path)
