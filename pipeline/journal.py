"""The failure journal: files that could not be indexed, why, and whether to try again.

SQLite in the state directory. A permanent failure (undecodable, too large, rejected by the
service) is retried only when the file or its sidecar changes, or on ``imgrag retry``. A
transient one (service or store unavailable) is retried on the next pass.
"""

from __future__ import annotations

import array
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from imgrag._errors import DiskFull
from pydantic import BaseModel

Kind = Literal["permanent", "transient"]
_MIN_FREE = 1_000_000  # below this, any SQLite I/O error is taken for a full disk

_SCHEMA = """
CREATE TABLE IF NOT EXISTS failures (
    source TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL,
    signature TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    PRIMARY KEY (source, path)
)
"""
_COLUMNS = "path, signature, kind, reason, message, attempts, first_at, last_at"
_RECYCLE_SCHEMA = """
CREATE TABLE IF NOT EXISTS recycled (
    embed_key TEXT PRIMARY KEY,
    vector BLOB NOT NULL,
    deleted_at REAL NOT NULL
)
"""
RECYCLE_SECONDS = 7 * 24 * 3600
"""How long the vector of a deleted point stays reusable by its embed key: long enough for
the other half of any move, across batches, passes and restarts."""


class Failure(BaseModel):
    """One file that is not indexed, and why."""

    path: str
    kind: Kind
    reason: str
    message: str
    attempts: int
    last_at: float
    source: str = ""


class _Connection(sqlite3.Connection):
    """A connection whose "database or disk is full" is DiskFull: one line, no traceback.

    SQLite never maps a sparse file (it writes each page of its -shm file), so a full disk
    is an error here, not a signal.
    """

    folder = Path(".")

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.OperationalError as exc:
            raise _full_disk(exc, self.folder) from None

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        try:
            return super().executemany(sql, parameters)
        except sqlite3.OperationalError as exc:
            raise _full_disk(exc, self.folder) from None


def _full_disk(exc: sqlite3.OperationalError, folder: Path) -> Exception:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = 0
    if "full" in str(exc) or free < _MIN_FREE:
        return DiskFull(str(folder), free // 10**6, _MIN_FREE // 10**6)
    return exc


def _text(value: str) -> str:
    """Valid UTF-8 for SQLite: a lone surrogate (a name's undecodable byte) is escaped."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


class Journal:
    """Thread-safe access to the failure journal. Rows are keyed by (source, path): a journal
    ``scoped`` to a source reads and writes only that source's rows; the unscoped one reads
    every source's (and writes rows of the source "", from before sources existed)."""

    source: str | None = None
    _view = False

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, factory=_Connection
        )
        assert isinstance(db, _Connection)
        db.folder = path.parent
        self._db = db
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._lock = threading.Lock()
        self._migrate()

    def _migrate(self) -> None:
        """A journal from before sources (``path`` its key) gains the source column; its rows
        belong to source "" until a source adopts them."""
        columns = [r[1] for r in self._db.execute("PRAGMA table_info(failures)").fetchall()]
        if columns and "source" not in columns:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("ALTER TABLE failures RENAME TO failures_old")
                self._db.execute(_SCHEMA)
                self._db.execute(
                    f"INSERT INTO failures (source, {_COLUMNS}) "
                    f"SELECT '', {_COLUMNS} FROM failures_old"
                )
                self._db.execute("DROP TABLE failures_old")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        else:
            self._db.execute(_SCHEMA)
        # Pages of the failures, newest first, walk this index instead of sorting the table.
        self._db.execute("CREATE INDEX IF NOT EXISTS failures_newest ON failures (last_at)")
        self._db.execute(_RECYCLE_SCHEMA)

    def recycle(self, vectors: Mapping[str, Sequence[float]]) -> None:
        """Keep the vectors of points about to be deleted, by embed key (every source's), so
        the other half of a move reuses them: in a later batch, or after a kill."""
        now = time.time()
        rows = [(key, array.array("f", v).tobytes(), now) for key, v in vectors.items()]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO recycled VALUES (?, ?, ?)", rows)
                self._db.execute(
                    "DELETE FROM recycled WHERE deleted_at < ?", (now - RECYCLE_SECONDS,)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def recycled(self, key: str) -> list[float] | None:
        """The vector a deleted point with embed key ``key`` had, if it was kept."""
        with self._lock:
            row = self._db.execute(
                "SELECT vector FROM recycled WHERE embed_key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        vector = array.array("f")
        vector.frombytes(row[0])
        return vector.tolist()

    def scoped(self, source: str) -> Journal:
        """A view of this journal for one source (same connection; close the original)."""
        view = object.__new__(Journal)
        view._db = self._db
        view._lock = self._lock
        view.source = source
        view._view = True
        return view

    def adopt(self, source: str) -> int:
        """Rows from before sources (source "") become ``source``'s."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE OR IGNORE failures SET source = ? WHERE source = ''", (source,)
            )
            return cur.rowcount

    def forget_source(self, source: str) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM failures WHERE source = ?", (source,)).rowcount

    def _where(self, extra: str = "") -> tuple[str, tuple[str, ...]]:
        """The WHERE clause restricting to this journal's source (and ``extra``)."""
        if self.source is None:
            return (f" WHERE {extra}" if extra else ""), ()
        return " WHERE source = ?" + (f" AND {extra}" if extra else ""), (self.source,)

    @property
    def _writer(self) -> str:
        return self.source or ""

    def close(self) -> None:
        if self._view:
            return  # a scoped view shares its parent's connection; the parent closes it
        with self._lock:
            self._db.close()

    def record(self, path: str, signature: str, kind: Kind, reason: str, message: str) -> None:
        now = time.time()
        with self._lock:
            self._db.execute(
                """INSERT INTO failures
                     (source, path, signature, kind, reason, message, first_at, last_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(source, path) DO UPDATE SET signature=excluded.signature,
                     kind=excluded.kind, reason=excluded.reason, message=excluded.message,
                     attempts=attempts + 1, last_at=excluded.last_at""",
                (self._writer, _text(path), signature, kind, reason, _text(message[:1000]),
                 now, now),
            )  # fmt: skip

    def clear(self, paths: Iterable[str]) -> None:
        with self._lock:
            self._db.executemany(
                "DELETE FROM failures WHERE source = ? AND path = ?",
                [(self._writer, p) for p in paths],
            )

    def clear_folder(self, prefix: str) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM failures WHERE source = ? AND (path = ? OR substr(path, 1, ?) = ?)",
                (self._writer, prefix, len(prefix) + 1, prefix + "/"),
            )

    def clear_permanent(self) -> int:
        """Forget permanent failures so the next pass tries those files again."""
        where, args = self._where("kind = 'permanent'")
        with self._lock:
            cur = self._db.execute("DELETE FROM failures" + where, args)
            return cur.rowcount

    def permanent_signature(self, path: str) -> tuple[str, str] | None:
        """(signature, reason) of a permanent failure for this path, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT signature, reason FROM failures "
                "WHERE source = ? AND path = ? AND kind = 'permanent'",
                (self._writer, path),
            ).fetchone()
        return (row[0], row[1]) if row else None

    def permanent_failures(self) -> dict[str, tuple[str, str]]:
        """Every permanent failure as path → (signature, reason), for a reconcile pass."""
        where, args = self._where("kind = 'permanent'")
        with self._lock:
            rows = self._db.execute(
                "SELECT path, signature, reason FROM failures" + where, args
            ).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def transient_paths(self) -> list[str]:
        where, args = self._where("kind = 'transient'")
        with self._lock:
            rows = self._db.execute("SELECT path FROM failures" + where, args)
            return [r[0] for r in rows.fetchall()]

    def count(self) -> int:
        where, args = self._where()
        with self._lock:
            return int(
                self._db.execute("SELECT count(*) FROM failures" + where, args).fetchone()[0]
            )

    def by_reason(self) -> dict[str, int]:
        where, args = self._where()
        with self._lock:
            rows = self._db.execute(
                f"SELECT reason, count(*) FROM failures{where} GROUP BY reason ORDER BY 2 DESC",
                args,
            ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def recent(self, limit: int = 10, offset: int = 0) -> list[Failure]:
        """The failures, newest first, a page at a time (``offset`` of them skipped)."""
        where, args = self._where()
        with self._lock:
            rows = self._db.execute(
                "SELECT path, kind, reason, message, attempts, last_at, source FROM failures"
                f"{where} ORDER BY last_at DESC, rowid DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [
            Failure(path=r[0], kind=r[1], reason=r[2], message=r[3], attempts=r[4], last_at=r[5],
                    source=r[6])
            for r in rows
        ]  # fmt: skip
