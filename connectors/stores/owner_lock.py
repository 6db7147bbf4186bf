"""One owner per embedded store: an OS file lock plus a small file naming the owning process.

The OS lock (not the pid file) decides: it is released by the kernel when the owner dies,
so a crash never leaves a stale lock behind. The pid file only makes the error useful.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO

from imgrag._errors import StoreError, StoreLocked
from pydantic import BaseModel

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def try_lock(f: IO[bytes]) -> bool:
        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def unlock(f: IO[bytes]) -> None:
        with contextlib.suppress(OSError):
            msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def try_lock(f: IO[bytes]) -> bool:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def unlock(f: IO[bytes]) -> None:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


LOCK_FILE = ".lock"
OWNER_FILE = "owner.json"


class Owner(BaseModel):
    """Who holds the store, as written in ``owner.json``."""

    pid: int
    command: str = ""
    host: str = ""
    since: float = 0.0


def _command() -> str:
    # Program name and subcommand only: later arguments may carry secrets (--api-key ...).
    argv = sys.argv or [""]
    parts = [Path(argv[0]).name]
    if len(argv) > 1 and not argv[1].startswith("-"):
        parts.append(argv[1])
    return " ".join(p for p in parts if p)


def read_owner(directory: Path) -> Owner | None:
    """The recorded owner of the store under ``directory``, if any."""
    try:
        return Owner.model_validate_json((directory / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None


class OwnerLock:
    """Holds the store under ``directory`` for this process until ``release``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        f = open(directory / LOCK_FILE, "a+b")  # noqa: SIM115 - held open for the lock's life
        if not try_lock(f):
            f.close()
            raise locked_error(directory)
        self._file: IO[bytes] | None = f
        owner = Owner(
            pid=os.getpid(), command=_command(), host=socket.gethostname(), since=time.time()
        )
        tmp = directory / (OWNER_FILE + ".tmp")
        try:
            tmp.write_text(json.dumps(owner.model_dump()))
            os.replace(tmp, directory / OWNER_FILE)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                # The OS lock alone decides; on a full disk only the nicer error is lost.
                with contextlib.suppress(OSError):
                    tmp.unlink()
                return
            self.release()
            raise StoreError(f"cannot write {directory / OWNER_FILE}: {exc.strerror}") from None

    def release(self) -> None:
        """Give the store up; safe to call twice."""
        f, self._file = self._file, None
        if f is None:
            return
        owner = read_owner(self.directory)
        if owner is not None and owner.pid == os.getpid():
            with contextlib.suppress(OSError):
                (self.directory / OWNER_FILE).unlink()
        unlock(f)
        f.close()


def locked_error(directory: Path) -> StoreLocked:
    owner = read_owner(directory)
    if owner is None:
        who, pid = "another process", None
    else:
        what = f" ({owner.command}?)" if owner.command else ""
        where = f" on {owner.host}" if owner.host and owner.host != socket.gethostname() else ""
        who, pid = f"process {owner.pid}{what}{where}", owner.pid
    return StoreLocked(
        f"the index under {directory} is open in {who}; stop it and try again, or let the "
        "daemon (`imgrag watch`) be the one process that holds it (every command then goes "
        'through it), or use a Qdrant server ([store] kind = "qdrant") for several processes',
        pid=pid,
    )
