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


def deployment_lines(usage: Usage) -> list[str]:
    """One line per deployment of a pool: requests, throttles, health, share of the load."""
    return [
        f"  deployment {d.name}: {'in service' if d.healthy else 'OUT of service'}, "
        f"{d.requests} requests, {d.throttled} throttled, {d.failures} failed, "
        f"{d.share:.0%} of the load"
        for d in usage.deployments
    ]


def count_pending(
    root: Path, rules: Rules, known: Mapping[str, FileState], journal: Journal
) -> int:
    """Files below ``root`` the next pass would index (see the module docstring)."""
    permanent = journal.permanent_failures()
    return sum(
        1
        for s in walk(root, rules)
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


async def read_status(settings: Settings, root: Path | None) -> StatusReport:
    """The status without a daemon: read from the store and the journal. Never calls the
    embedder (a remote one bills every request); what the collection was made for comes
    from the record stored with it."""
    from imgrag.connectors.stores import open_index
    from imgrag.pipeline.runtime import rules_for, state_paths

    paths = state_paths(settings)
    name = settings.store.collection

    def read() -> tuple[dict[str, FileState], dict[str, Any]]:
        index = open_index(settings.store, paths)
        try:
            spec = index.recorded_spec(name)
            if spec is None:
                return {}, {"provider": settings.embedder.provider, "model": None}
            index.ensure_collection(spec)
            described = {
                "provider": spec.provider,
                "model": spec.model,
                "dimension": spec.dimension,
            }
            return {s.path: s for s in index.file_states()}, described
        finally:
            index.close()

    known, embedder = await asyncio.to_thread(read)
    paths.root.mkdir(parents=True, exist_ok=True)
    journal = Journal(paths.journal)
    try:
        return await asyncio.to_thread(
            lambda: build_status(
                known=known,
                journal=journal,
                root=root,
                rules=rules_for(settings),
                embedder=embedder,
                store={"kind": settings.store.kind, "collection": name},
            )
        )
    finally:
        journal.close()
