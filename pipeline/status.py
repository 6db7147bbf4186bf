"""What ``imgrag status`` and the daemon's ``GET /status`` report: indexed, pending and failed
files, and why. Every door builds it with ``build_status``.

**Pending**, everywhere: the distinct files on disk below the folder that the index does not
hold as they are now and that have not failed for good unchanged, i.e. what the next pass
would index. It is never more than the files on disk, and 0 when no folder is known.

**Counts that are kept, not recounted.** A report costs the same at any size when it can:
indexed comes from the index's count on its indexed ``source`` field (a daemon's watched
source: from what its indexer wrote), failed from the journal's SQL count, and pending, for a
source a daemon watches, from what the daemon saw and has not finished. For a source nobody
watches, pending needs a walk: ``imgrag status`` without a daemon walks once, now; the
daemon's API and ``imgrag serve`` read the last walk a ``Survey`` took in the background,
and the report says how old it is (``pending_live`` false, ``pending_as_of``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgrag._errors import QueryError, SourceError
from imgrag.connectors.embedder import Usage
from imgrag.connectors.index import FileState, Index
from imgrag.connectors.stores.schema import source_filter
from imgrag.pipeline.candidates import Rules, walk
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.source import needs_work
from imgrag.pipeline.sources import Registry, uri_of
from pydantic import BaseModel, Field

log = logging.getLogger("imgrag.status")

SURVEY_SECONDS = 300.0
"""A background walk older than this is taken again when a report asks (never more often)."""


class FailureOut(BaseModel):
    path: str
    reason: str
    message: str
    kind: str = "permanent"


class FailurePage(BaseModel):
    """One page of the failures, newest first: ``imgrag failures`` and ``GET /failures``."""

    total: int
    offset: int
    limit: int
    failures: list[FailureOut] = Field(default_factory=list)


MAX_FAILURE_PAGE = 500
"""The most failures one page holds: a request's answer stays bounded at any size."""


def failure_page(journal: Journal, offset: int, limit: int) -> FailurePage:
    """One page of the journal's failures (two indexed SQL reads, never the whole table)."""
    if offset < 0 or not 1 <= limit <= MAX_FAILURE_PAGE:
        raise QueryError(f"a page of failures is 1 to {MAX_FAILURE_PAGE} from offset 0 or more")
    rows = journal.recent(limit, offset)
    return FailurePage(
        total=journal.count(),
        offset=offset,
        limit=limit,
        failures=[
            FailureOut(path=f.path, reason=f.reason, message=f.message, kind=f.kind)
            for f in rows
        ],
    )


class SourceStatus(BaseModel):
    """One source of the index: its root, whether that lists, and its counts."""

    name: str
    root: str
    reachable: bool
    watched: bool = False
    """Whether a running daemon follows it (its counts are then live)."""
    indexed: int
    pending: int
    failed: int
    failed_by_reason: dict[str, int] = Field(default_factory=dict)
    pending_live: bool = True
    """Whether ``pending`` is current: a daemon's kept count, or a walk made for this
    report. False: it comes from the last background walk (``pending_as_of``)."""
    pending_as_of: float | None = None
    """When ``pending`` is not live: when its walk started (Unix time); None while the
    first walk is still running (``pending`` is then 0, not yet counted)."""


class StatusReport(BaseModel):
    """The state of an index and, when one runs, of its daemon."""

    indexed: int
    pending: int
    failed: int
    failed_by_reason: dict[str, int] = Field(default_factory=dict)
    failures: list[FailureOut] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    embedder: dict[str, Any] = Field(default_factory=dict)
    store: dict[str, Any] = Field(default_factory=dict)
    daemon: dict[str, Any] | None = None
    waiting_for: str | None = None
    health: str | None = None
    """The daemon's health: "ok", "degraded" (see ``problems``) or "stopping"."""
    problems: list[str] = Field(default_factory=list)
    """Why the daemon is degraded: a task down, the root missing, a refused key, ..."""
    sources: list[SourceStatus] = Field(default_factory=list)
    """Per source (all of them, or the one asked for)."""
    legacy: dict[str, int] = Field(default_factory=dict)
    """Points from before sources no registered source adopted yet: recorded root → count."""
    pending_live: bool = True
    """Whether every source's pending count is current (see ``SourceStatus``)."""
    pending_as_of: float | None = None
    """When not live: the oldest walk behind ``pending`` (Unix time); None while one is
    still running."""
    pending_age: float | None = None
    """Seconds between ``pending_as_of`` and this report."""

    def pending_words(self) -> str:
        """How ``pending`` is shown: "12 pending", or "12 pending as of 12 s ago"."""
        return pending_words(self.pending, self.pending_live, self.pending_as_of)


def pending_words(pending: int, live: bool, as_of: float | None) -> str:
    """How a pending count is shown: never silently stale."""
    if live:
        return f"{pending} pending"
    if as_of is None:
        return "pending not counted yet (a walk is running)"
    return f"{pending} pending as of {max(0, round(time.time() - as_of))} s ago"


def source_status(
    name: str,
    root: Path,
    known: Mapping[str, FileState],
    journal: Journal,
    rules: Rules,
    scope: str = "",
) -> SourceStatus:
    """The counts of one source; ``known`` holds only its points, ``journal`` is scoped to it.
    Blocking (walks the root)."""
    scoped = journal if journal.source == name else journal.scoped(name)
    reachable = root.is_dir()
    return SourceStatus(
        name=name,
        root=str(root),
        reachable=reachable,
        indexed=len(known),
        pending=count_pending(root, rules, known, scoped, scope) if reachable else 0,
        failed=scoped.count(),
        failed_by_reason=scoped.by_reason(),
    )


def deployment_lines(usage: Usage) -> list[str]:
    """One line per deployment of a pool: requests, throttles, health, share of the load."""
    return [
        f"  deployment {d.name}: {'in service' if d.healthy else 'OUT of service'}, "
        f"{d.requests} requests, {d.throttled} throttled, {d.failures} failed, "
        f"{d.share:.0%} of the load"
        for d in usage.deployments
    ]


def count_pending(
    root: Path, rules: Rules, known: Mapping[str, FileState], journal: Journal, below: str = ""
) -> int:
    """Files below ``root`` (or its subfolder ``below``) the next pass would index (see the
    module docstring): each file found counts once, so never more than the files there."""
    permanent = journal.permanent_failures()
    return sum(
        1
        for s in walk(root, rules, below=below)
        if needs_work(known.get(s.rel), s, permanent.get(s.rel, ("", ""))[0] or None)
    )


Counter = Callable[[str, str, Mapping[str, FileState], Journal, str], SourceStatus]
"""Counts one source that nobody watches: (name, root, its points, journal, scope)."""


@dataclass(frozen=True)
class Snapshot:
    """One background walk of the sources nobody watches: their counts as of ``at``, and
    (when it read the whole index) the points from before sources."""

    sources: dict[str, SourceStatus]
    legacy: dict[str, int]
    at: float
    skipped: frozenset[str] = frozenset()
    found: dict[str, str] = field(default_factory=dict)
    """Sources only the index knows (name → recorded root), when it read the whole index."""


class Survey:
    """Pending counts of the sources nobody watches, from one walk each, taken in a
    background thread and kept with the time it started. A report reads the last one and
    never walks; one older than ``max_age`` (or over other sources) is taken again in the
    background when a report asks, one at a time."""

    def __init__(
        self, take: Callable[[frozenset[str]], Snapshot], max_age: float = SURVEY_SECONDS
    ) -> None:
        self._take = take
        self.max_age = max_age
        self._last: Snapshot | None = None
        self._running: threading.Thread | None = None
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self.taken = 0
        """How many walks were taken (each one reads the sources' points and walks them)."""

    def last(
        self, skip: frozenset[str] = frozenset(), need: frozenset[str] = frozenset()
    ) -> Snapshot | None:
        """The last walk (None before the first ends); starts another, in the background,
        when it is due: none yet, older than ``max_age``, over other watched sources
        (``skip``), or lacking a source in ``need``."""
        with self._lock:
            last = self._last
            due = (
                last is None
                or last.skipped != skip
                or time.time() - last.at > self.max_age
                or not need <= last.sources.keys()
            )
            if due and self._running is None:
                self._running = threading.Thread(
                    target=self._run, args=(skip,), name="imgrag-survey", daemon=True
                )
                self._running.start()
        return last

    def drop(self, name: str) -> None:
        """Forget what the last walk counted for source ``name`` (a pass changed it, or it
        was forgotten): the next report that needs it has it walked again."""
        with self._lock:
            last = self._last
            if last is not None:
                self._last = Snapshot(
                    {n: s for n, s in last.sources.items() if n != name},
                    last.legacy,
                    last.at,
                    last.skipped,
                    {n: r for n, r in last.found.items() if n != name},
                )

    def wait(self, timeout: float | None = None) -> Snapshot | None:
        """The walk running now, once done (or the last one when none runs)."""
        with self._done:
            self._done.wait_for(lambda: self._running is None, timeout)
            return self._last

    def _run(self, skip: frozenset[str]) -> None:
        try:
            taken: Snapshot | None = self._take(skip)
        except Exception as exc:  # the store closed, a root vanished: the next ask retries
            log.info("pending not counted: %s: %s", type(exc).__name__, exc)
            taken = None
        with self._done:
            if taken is not None:
                self._last = taken
                self.taken += 1
            self._running = None
            self._done.notify_all()


def surveyor(
    registry: Registry, index: Index | None, journal: Journal, count: Counter
) -> Callable[[frozenset[str]], Snapshot]:
    """What a ``Survey`` takes: every source but the skipped (watched) ones, its points
    read and its root walked. With nothing skipped it reads the whole index, so sources
    only the index knows and points from before sources are found too."""

    def take(skip: frozenset[str]) -> Snapshot:
        at = time.time()
        roots = {e.name: e.root for e in registry.entries() if e.name not in skip}
        registered = set(roots)
        if skip:
            by_source = {
                name: {s.path: s for s in index.file_states(source=name)} if index else {}
                for name in roots
            }
            legacy: dict[str, int] = {}
        else:
            by_source, legacy = _read_all(index, roots)
        counted = {
            name: count(name, root, by_source.get(name, {}), journal, "")
            for name, root in roots.items()
        }
        found = {name: root for name, root in roots.items() if name not in registered}
        return Snapshot(counted, legacy, at, skip, found)

    return take


@dataclass
class Live:
    """What a running daemon adds to the report: the live counts of the sources it watches
    (name → counter), its health, its usage and what its embedder is."""

    watched: Mapping[str, Callable[[], SourceStatus]]
    daemon: dict[str, Any]
    health: str
    problems: list[str]
    waiting_for: str | None
    usage: Usage
    embedder: dict[str, Any]


@dataclass
class _Scope:
    """The sources a report covers: name → root, and the folder below the root (if any)."""

    roots: dict[str, str]
    below: str = ""
    narrowed: bool = False


def build_status(
    registry: Registry,
    index: Index | None,
    journal: Journal,
    count: Counter,
    *,
    target: str | None = None,
    live: Live | None = None,
    store: Mapping[str, Any] | None = None,
    embedder: Mapping[str, Any] | None = None,
    survey: Survey | None = None,
) -> StatusReport:
    """The one status report, for ``imgrag status``, ``imgrag sources``, the daemon's and
    ``imgrag serve``'s ``/status`` and ``/metrics``.

    Its sources are every source of the index, watched or not: the registered ones, the
    ones a daemon watches, and the ones only the index knows (found when the whole index is
    read: without a daemon). ``index`` is None when the collection does not exist yet.

    Without ``survey`` (``imgrag status`` without a daemon) the sources nobody watches are
    counted now: their points read, their roots walked. With one (the daemon's API,
    ``imgrag serve``) nothing is walked or read point by point: indexed is the index's
    count, pending the survey's last walk, with its time. Blocking: async callers use a
    worker thread.
    """
    roots = {e.name: e.root for e in registry.entries()}
    watched = live.watched if live is not None else {}
    if survey is not None:
        return _report(_kept(registry, roots, index, journal, count, target, watched, survey),
                       journal, live, store, embedder)  # fmt: skip
    by_source: dict[str, dict[str, FileState]] = {}
    legacy: dict[str, int] = {}
    if index is not None and live is None:
        by_source, legacy = _read_all(index, roots)
    scope = _narrow(registry, roots, target)
    if index is not None and live is not None:
        for name in scope.roots:
            if name not in watched:
                by_source[name] = {s.path: s for s in index.file_states(source=name)}
    per = [
        watched[name]().model_copy(update={"watched": True})
        if name in watched
        else count(name, root, _below(by_source.get(name, {}), scope.below), journal, scope.below)
        for name, root in scope.roots.items()
    ]
    return _report(_Counted(per, {} if scope.narrowed else legacy, scope), journal, live,
                   store, embedder)  # fmt: skip


@dataclass
class _Counted:
    """The sources of a report, counted, with the points from before sources."""

    per: list[SourceStatus]
    legacy: dict[str, int]
    scope: _Scope


def _report(
    c: _Counted,
    journal: Journal,
    live: Live | None,
    store: Mapping[str, Any] | None,
    embedder: Mapping[str, Any] | None,
) -> StatusReport:
    per, scope = c.per, c.scope
    scoped = journal.scoped(next(iter(scope.roots))) if scope.narrowed else journal
    stale = [p.pending_as_of for p in per if not p.pending_live]
    as_of = None if not stale or None in stale else min(s for s in stale if s is not None)
    return StatusReport(
        indexed=sum(p.indexed for p in per) + sum(c.legacy.values()),
        pending=sum(p.pending for p in per),
        failed=scoped.count(),
        failed_by_reason=scoped.by_reason(),
        failures=[
            FailureOut(path=f.path, reason=f.reason, message=f.message, kind=f.kind)
            for f in scoped.recent(10)
        ],
        usage=live.usage if live is not None else Usage(),
        embedder=dict(live.embedder if live is not None else embedder or {}),
        store=dict(store or {}),
        daemon=live.daemon if live is not None else None,
        waiting_for=live.waiting_for if live is not None else None,
        health=live.health if live is not None else None,
        problems=live.problems if live is not None else [],
        sources=per,
        legacy=c.legacy,
        pending_live=not stale,
        pending_as_of=as_of,
        pending_age=round(time.time() - as_of, 1) if as_of is not None else None,
    )


def _read_all(
    index: Index | None, roots: dict[str, str]
) -> tuple[dict[str, dict[str, FileState]], dict[str, int]]:
    """Every point's file facts by source (sources only the index knows join ``roots``),
    and the points from before sources by recorded root. Reads the whole index."""
    by_source: dict[str, dict[str, FileState]] = {}
    legacy: dict[str, int] = {}
    for st in index.file_states() if index is not None else ():
        if st.source is None:
            legacy[st.root or "?"] = legacy.get(st.root or "?", 0) + 1
        else:
            by_source.setdefault(st.source, {})[st.path] = st
            roots.setdefault(st.source, st.root or "?")
    return by_source, legacy


def _kept(
    registry: Registry,
    roots: dict[str, str],
    index: Index | None,
    journal: Journal,
    count: Counter,
    target: str | None,
    watched: Mapping[str, Callable[[], SourceStatus]],
    survey: Survey,
) -> _Counted:
    """The sources counted from what is kept: the daemon's live counts, the index's count,
    the journal's, and the survey's last walk (a subfolder asked for is walked now)."""
    need = frozenset(name for name in roots if name not in watched)
    snap = survey.last(frozenset(watched), need) if need or not watched else None
    for name, root in (snap.found if snap is not None else {}).items():
        roots.setdefault(name, root)
    scope = _narrow(registry, roots, target)
    per = []
    for name, root in scope.roots.items():
        if name in watched:
            per.append(watched[name]().model_copy(update={"watched": True}))
        elif scope.below:  # a subfolder: its own walk, now (its points are read for it)
            known = {s.path: s for s in index.file_states(source=name)} if index else {}
            per.append(count(name, root, _below(known, scope.below), journal, scope.below))
        else:
            kept = snap.sources.get(name) if snap is not None else None
            per.append(_from_kept(name, root, index, journal, kept, snap))
    legacy = snap.legacy if snap is not None and not scope.narrowed else {}
    return _Counted(per, dict(legacy), scope)


def _from_kept(
    name: str,
    root: str,
    index: Index | None,
    journal: Journal,
    kept: SourceStatus | None,
    snap: Snapshot | None,
) -> SourceStatus:
    scoped = journal.scoped(name)
    local = uri_of(root) is None
    return SourceStatus(
        name=name,
        root=root,
        reachable=Path(root).is_dir() if local else kept is not None and kept.reachable,
        indexed=index.count(source_filter(name)) if index is not None else 0,
        pending=kept.pending if kept is not None else 0,
        failed=scoped.count(),
        failed_by_reason=scoped.by_reason(),
        pending_live=False,
        pending_as_of=snap.at if kept is not None and snap is not None else None,
    )


def _narrow(registry: Registry, roots: dict[str, str], target: str | None) -> _Scope:
    """The sources ``target`` (a source name, a root, or a folder inside one) names."""
    if target is None:
        return _Scope(roots)
    if target in roots:
        return _Scope({target: roots[target]}, narrowed=True)
    entry = registry.get(target)
    if entry is not None:
        return _Scope({entry.name: entry.root}, narrowed=True)
    if Path(target).is_dir():
        found = registry.resolve(Path(target), register=False)
        return _Scope({found.name: str(found.root)}, found.scope, narrowed=True)
    raise SourceError(f"{target}: no such source or folder; `imgrag sources` lists the sources")


def _below(known: dict[str, FileState], below: str) -> dict[str, FileState]:
    if not below:
        return known
    prefix = below + "/"
    return {p: s for p, s in known.items() if p.startswith(prefix)}
