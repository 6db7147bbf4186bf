"""What ``imgrag status`` and the daemon's ``GET /status`` report: indexed, pending and failed
files, and why. Both build it with ``build_status``.

**Pending**, everywhere: the distinct files on disk below the folder that the index does not
hold as they are now and that have not failed for good unchanged, i.e. what the next pass
would index. It is never more than the files on disk, and 0 when no folder is known.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgrag.connectors.embedder import Usage
from imgrag.connectors.index import FileState
from imgrag.pipeline.candidates import Rules, walk
from imgrag.pipeline.ingest import needs_work
from imgrag.pipeline.journal import Journal
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from imgrag.pipeline.config import Settings


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


def build_status(
    *,
    known: Mapping[str, FileState],
    journal: Journal,
    root: Path | None,
    rules: Rules,
    embedder: Mapping[str, Any],
    store: Mapping[str, Any],
    usage: Usage | None = None,
    daemon: Mapping[str, Any] | None = None,
    waiting_for: str | None = None,
    health: str | None = None,
    problems: list[str] | None = None,
    recent_failures: int = 10,
) -> StatusReport:
    """The report for an index whose files are ``known`` (path → state), with the journal's
    failures and, when ``root`` is given, the files there still pending. Blocking: it walks
    the folder, so async callers run it in a worker thread."""
    recent = [
        FailureOut(path=f.path, reason=f.reason, message=f.message, kind=f.kind)
        for f in journal.recent(recent_failures)
    ]
    pending = count_pending(root, rules, known, journal) if root is not None else 0
    return StatusReport(
        indexed=len(known),
        pending=pending,
        failed=journal.count(),
        failed_by_reason=journal.by_reason(),
        failures=recent,
        usage=usage or Usage(),
        embedder=dict(embedder),
        store=dict(store),
        daemon=dict(daemon) if daemon is not None else None,
        waiting_for=waiting_for,
        health=health,
        problems=problems or [],
    )


async def read_status(settings: Settings, target: str | Path | None) -> StatusReport:
    """The status without a daemon: read from the store and the journal. Never calls the
    embedder (a remote one bills every request); what the collection was made for comes
    from the record stored with it. ``target`` (a source name or a folder) narrows the
    report to that source; without it every registered source is counted."""
    from imgrag.connectors.stores import open_index
    from imgrag.pipeline.runtime import registry, rules_for, state_paths
    from imgrag.pipeline.sources import SourceError

    paths = state_paths(settings)
    name = settings.store.collection

    def read() -> tuple[list[FileState], dict[str, Any]]:
        index = open_index(settings.store, paths)
        try:
            spec = index.recorded_spec(name)
            if spec is None:
                return [], {"provider": settings.embedder.provider, "model": None}
            index.ensure_collection(spec)
            described = {
                "provider": spec.provider,
                "model": spec.model,
                "dimension": spec.dimension,
            }
            return list(index.file_states()), described
        finally:
            index.close()

    states, embedder = await asyncio.to_thread(read)
    reg = registry(settings)
    entries = [(e.name, Path(e.root)) for e in reg.entries()]
    raw_roots = {e.name: e.root for e in reg.entries()}
    scope = ""
    if target is not None:
        entry = reg.get(str(target))
        if entry is None and Path(target).is_dir():
            resolved = reg.resolve(Path(target), register=False)
            entry_name, entry_root, scope = resolved.name, resolved.root, resolved.scope
        elif entry is None:
            raise SourceError(
                f"{target}: no such source or folder; `imgrag sources` lists the sources"
            )
        else:
            entry_name, entry_root = entry.name, Path(entry.root)
        entries = [(entry_name, entry_root)]
    by_source: dict[str, dict[str, FileState]] = {n: {} for n, _ in entries}
    legacy: dict[str, int] = {}
    for st in states:
        if st.source is None:
            legacy[st.root or "?"] = legacy.get(st.root or "?", 0) + 1
        elif st.source in by_source:
            by_source[st.source][st.path] = st
    if scope:
        prefix = scope + "/"
        for known in by_source.values():
            for p in [p for p in known if not p.startswith(prefix)]:
                del known[p]
    paths.root.mkdir(parents=True, exist_ok=True)
    journal = Journal(paths.journal)
    rules = rules_for(settings)
    try:

        def build() -> StatusReport:
            per = [
                _blob_status(settings, n, raw_roots[n], by_source[n], journal)
                if raw_roots.get(n, "").startswith("az://")
                else source_status(n, root, by_source[n], journal, rules, scope)
                for n, root in entries
            ]
            scoped = journal.scoped(entries[0][0]) if target is not None else journal
            recent = [
                FailureOut(path=f.path, reason=f.reason, message=f.message, kind=f.kind)
                for f in scoped.recent(10)
            ]
            return StatusReport(
                indexed=sum(p.indexed for p in per) if target is not None else len(states),
                pending=sum(p.pending for p in per),
                failed=scoped.count(),
                failed_by_reason=scoped.by_reason(),
                failures=recent,
                embedder=dict(embedder),
                store={"kind": settings.store.kind, "collection": name},
                sources=per,
                legacy={} if target is not None else legacy,
            )

        return await asyncio.to_thread(build)
    finally:
        journal.close()


def _blob_status(
    settings: Settings, name: str, root: str, known: Mapping[str, FileState], journal: Journal
) -> SourceStatus:
    from imgrag.pipeline.blob_source import blob_source_status

    return blob_source_status(settings, name, root, known, journal)
