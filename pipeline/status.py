"""What ``imgrag status`` and the daemon's ``GET /status`` report: indexed, pending and failed
files, and why. Every door builds it with ``build_status``.

**Pending**, everywhere: the distinct files on disk below the folder that the index does not
hold as they are now and that have not failed for good unchanged, i.e. what the next pass
would index. It is never more than the files on disk, and 0 when no folder is known.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgrag._errors import SourceError
from imgrag.connectors.embedder import Usage
from imgrag.connectors.index import FileState, Index
from imgrag.pipeline.candidates import Rules, walk
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.source import needs_work
from imgrag.pipeline.sources import Registry
from pydantic import BaseModel, Field


class FailureOut(BaseModel):
    path: str
    reason: str
    message: str
    kind: str = "permanent"


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
) -> StatusReport:
    """The one status report, for ``imgrag status``, ``imgrag sources``, the daemon's and
    ``imgrag serve``'s ``/status`` and ``/metrics``.

    Its sources are every source of the index, watched or not: the registered ones, the
    ones a daemon watches, and (without a daemon, which reads every point anyway) the ones
    only the index knows. ``index`` is None when the collection does not exist yet.
    Blocking: it reads the index and walks folders, so async callers use a worker thread.
    """
    roots = {e.name: e.root for e in registry.entries()}
    watched = live.watched if live is not None else {}
    by_source: dict[str, dict[str, FileState]] = {}
    legacy: dict[str, int] = {}
    if index is not None and live is None:
        for st in index.file_states():
            if st.source is None:
                legacy[st.root or "?"] = legacy.get(st.root or "?", 0) + 1
            else:
                by_source.setdefault(st.source, {})[st.path] = st
                roots.setdefault(st.source, st.root or "?")
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
    scoped = journal.scoped(next(iter(scope.roots))) if scope.narrowed else journal
    kept_legacy = {} if scope.narrowed else legacy
    return StatusReport(
        indexed=sum(p.indexed for p in per) + sum(kept_legacy.values()),
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
        legacy=kept_legacy,
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
