"""A background HNSW build that outlives the process that started it, and is adopted by the
next one that opens the store.

A build is a child process (``edge_rebuild.py``) working on a copy of the live generation.
It used to die with its parent, so a short-lived writer (``imgrag ingest``, a script) threw
its graph away at exit and the next process searched every vector until it had waited long
enough to build again. Now the builder runs in its own session and holds a file lock for its
whole life; whoever opens the store next sees the lock and adopts the build instead of
starting another. Files beside the generations, one build at a time per collection::

    build.json      which generation is being built, from which, by which pid, since when
    build.lock      locked by the builder while it runs (the kernel drops it when it exits)
    build.touched   ids written to the live generation since the copy, one per line,
                    appended before each write: the adopter replays them, even after kill -9
    build.done      the builder's result, written when its copy is flushed
    build.log       the builder's stderr (its last line is the reason a build failed)
    graph.json      the last finished build's points and seconds: the next one's estimate
    outside         how many points were written since the live generation's graphs
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from imgrag.connectors.stores.edge_generations import is_complete
from imgrag.connectors.stores.owner_lock import try_lock, unlock
from pydantic import BaseModel

META = "build.json"
LOCK = "build.lock"
TOUCHED = "build.touched"
DONE = "build.done"
LOG = "build.log"
GRAPH = "graph.json"
OUTSIDE = "outside"
_SIDE_FILES = (META, TOUCHED, DONE, LOG)
log = logging.getLogger(__name__)

# Builders this process started and left running at close: kept referenced so Popen never
# warns that one is still running, and reaped when the next build starts.
_detached: list[subprocess.Popen[bytes]] = []
_at_exit: list[bool] = []  # set once the exit hook is registered (on the first detach)


class BuildMeta(BaseModel):
    final: str
    """The generation the build becomes."""
    base: str
    """The live generation it was copied from: only an opener of that one may adopt it."""
    pid: int
    started: float
    """Wall-clock start (seconds since the epoch), so an adopter knows its age."""
    points: int


class GraphRecord(BaseModel):
    points: int
    seconds: float
    left_outside: int = 0
    """Points the engine left outside every graph it was given (too few to be worth one):
    a later process needs that many more before a build is due, or builds would loop."""


def lock_held(collection: Path) -> bool:
    """Whether a builder of ``collection`` is alive (it holds ``build.lock``)."""
    try:  # never created here: asking must leave a store it does not open untouched
        f = open(collection / LOCK, "r+b")  # noqa: SIM115 - closed below
    except OSError:
        return False
    with f:
        if try_lock(f):
            unlock(f)
            return False
        return True


class Build:
    """A build in flight, started here or adopted: its copy, builder, and ids touched since."""

    def __init__(
        self, collection: Path, meta: BuildMeta, proc: subprocess.Popen[bytes] | None
    ) -> None:
        self.collection = collection
        self.meta = meta
        self.directory = collection / f"{meta.final}.building"
        self.final = collection / meta.final
        self.proc = proc
        self.adopted = proc is None
        self.started = time.monotonic() - max(0.0, time.time() - meta.started)
        self.touched: set[str] = set()
        self._log: IO[str] | None = None
        self._detached = False

    def record(self, ids: list[str]) -> None:
        """Note ids about to be written to the live generation (before the write)."""
        if not self._detached:
            if self._log is None:
                self._log = open(self.collection / TOUCHED, "a")  # noqa: SIM115 - detach closes
            self._log.write("".join(f"{i}\n" for i in ids))
            self._log.flush()
        self.touched.update(ids)

    def running(self) -> bool:
        """Whether the builder still works. Its lock decides: it is released only as the
        builder exits, after its result is written (``poll`` may still say running then)."""
        if sys.platform == "win32":  # pragma: no cover - no lock handed down there
            return self.proc is not None and self.proc.poll() is None
        return lock_held(self.collection)

    def result(self) -> dict[str, object] | None:
        """What the builder reported, or None when it ended without finishing."""
        try:
            found = json.loads((self.collection / DONE).read_text())
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def failure(self) -> str:
        """The last line the builder wrote to its log, or a plain reason."""
        with contextlib.suppress(OSError):
            lines = (self.collection / LOG).read_text(errors="replace").strip().splitlines()
            if lines:
                return lines[-1]
        code = self.proc.returncode if self.proc is not None else None
        return f"the builder exited with {code}" if code is not None else "the builder died"

    def copy(self) -> Path:
        """The built copy: still ``.building``, or already renamed by a swap cut short."""
        return self.directory if self.directory.exists() else self.final

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def detach(self) -> None:
        """Leave the builder running for the next opener; stop recording here."""
        self._detached = True
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.proc is not None and self.proc.poll() is None:
            if not _at_exit:
                atexit.register(_leave_running)
                _at_exit.append(True)
            _detached.append(self.proc)

    def kill(self) -> None:
        """Stop the builder (the collection is being dropped)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        elif self.meta.pid > 0 and lock_held(self.collection):
            with contextlib.suppress(OSError):
                os.kill(self.meta.pid, getattr(signal, "SIGKILL", signal.SIGTERM))
            deadline = time.monotonic() + 10
            while lock_held(self.collection) and time.monotonic() < deadline:
                time.sleep(0.05)  # the kernel releases the lock as the process goes

    def clear(self) -> None:
        """Forget this build's side files (its copy is the caller's to keep or delete)."""
        self.detach()
        clear(self.collection)


def clear(collection: Path) -> None:
    for name in _SIDE_FILES:
        with contextlib.suppress(OSError):
            (collection / name).unlink()


def start(collection: Path, final: str, base: str, points: int) -> Build:
    """Start the builder on ``<final>.building`` (already copied) in its own session."""
    _reap()
    lock = open(collection / LOCK, "a+b")  # noqa: SIM115 - handed to the child below
    try:
        if not try_lock(lock):  # never touch the files of a builder that still runs
            raise OSError("another builder of this collection is still running")
        clear(collection)
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        # Written first: a builder is never alive without the record that lets it be adopted.
        meta = BuildMeta(final=final, base=base, pid=0, started=time.time(), points=points)
        _write_atomic(collection / META, meta.model_dump_json())
        with open(collection / LOG, "wb") as stderr:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "imgrag.connectors.stores.edge_rebuild",
                    str(collection / f"{final}.building"),
                    str(collection / DONE),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
                **_detached_child(lock),
            )
    finally:
        lock.close()
    meta = meta.model_copy(update={"pid": proc.pid})
    with contextlib.suppress(OSError):  # best effort: a pid-0 record is still adopted
        _write_atomic(collection / META, meta.model_dump_json())
    return Build(collection, meta, proc)


def _detached_child(lock: IO[bytes]) -> dict[str, Any]:
    """Popen arguments for a builder that outlives this process and holds ``lock``."""
    if sys.platform == "win32":  # pragma: no cover - no fd passing: the build is not adopted
        flags = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP
        return {"creationflags": flags}
    # Its own session: Ctrl+C in the terminal stops the command, not its build. The child
    # holds the lock from its first instant; ours is closed once it runs.
    return {"start_new_session": True, "pass_fds": (lock.fileno(),)}


def adopt(collection: Path, live: str) -> Build | None:
    """The build a previous owner left for generation ``live``, running or finished.

    A build of another generation, or one whose builder died before finishing, is not
    adoptable: its side files are cleared (the copy goes with the other leftovers), and so
    are temporary files a crash left between a write and its rename."""
    for tmp in collection.glob("*.tmp"):  # one listing of a small folder, at open only
        with contextlib.suppress(OSError):
            tmp.unlink()
    try:
        meta = BuildMeta.model_validate_json((collection / META).read_text())
    except (OSError, ValueError):
        meta = None
    alive = lock_held(collection)
    if meta is not None and meta.base == live:
        build = Build(collection, meta, None)
        copy = build.copy()
        if alive or (build.result() is not None and is_complete(copy)):
            with contextlib.suppress(OSError):
                text = (collection / TOUCHED).read_text()
                build.touched.update(line for line in text.splitlines() if line)
            return build
        log.warning(
            "embedded store: an HNSW build an earlier process left ended unfinished (%s); "
            "a new one starts when due",
            build.failure(),
        )
        build.clear()
        return None
    if alive and meta is not None:  # a builder of another generation: stop it
        Build(collection, meta, None).kill()
    clear(collection)
    return None


def busy(collection: Path) -> bool:
    """Whether some builder (not adopted here) still runs: no other may start meanwhile."""
    return lock_held(collection)


def record_graph(collection: Path, record: GraphRecord) -> None:
    with contextlib.suppress(OSError):
        _write_atomic(collection / GRAPH, record.model_dump_json())


def last_graph(collection: Path) -> GraphRecord | None:
    try:
        return GraphRecord.model_validate_json((collection / GRAPH).read_text())
    except (OSError, ValueError):
        return None


def expected_seconds(collection: Path, points: int) -> float | None:
    """How long a build of ``points`` should take, from the last one; None when unknown."""
    last = last_graph(collection)
    if last is None or last.points <= 0:
        return None
    return round(last.seconds * points / last.points, 1)


def read_outside(collection: Path) -> int | None:
    try:
        return max(0, int((collection / OUTSIDE).read_text()))
    except (OSError, ValueError):
        return None


def write_outside(collection: Path, count: int) -> None:
    with contextlib.suppress(OSError):  # an estimate only: a lost update costs a late build
        _write_atomic(collection / OUTSIDE, str(count))


def _leave_running() -> None:
    """At exit: builders left running are meant to outlive this process (the next opener
    adopts them); mark them so Popen does not warn that they still run."""
    for proc in _detached:
        if proc.poll() is None:
            proc.returncode = 0


def _reap() -> None:
    _detached[:] = [p for p in _detached if p.poll() is None]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
