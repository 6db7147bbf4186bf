"""What ``imgrag status`` reports: indexed, pending and failed files, and why."""

from __future__ import annotations

from typing import Any

from imgrag.connectors.embedder import Usage
from imgrag.pipeline.journal import Journal
from pydantic import BaseModel, Field


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


def failures_from(
    journal: Journal, limit: int = 10
) -> tuple[int, dict[str, int], list[FailureOut]]:
    recent = [
        FailureOut(path=f.path, reason=f.reason, message=f.message, kind=f.kind)
        for f in journal.recent(limit)
    ]
    return journal.count(), journal.by_reason(), recent
