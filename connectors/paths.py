"""Where each piece of imgrag's state lives, decided once and handed to the connectors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class StatePaths:
    """The files and folders inside one state directory."""

    root: Path
    store: Path
    journal: Path
    cache: Path
    daemon: Path
    sources: Path

    @classmethod
    def under(cls, state_dir: Path) -> StatePaths:
        """The standard layout below ``state_dir``."""
        root = Path(state_dir)
        return cls(
            root=root,
            store=root / "store",
            journal=root / "journal.sqlite",
            cache=root / "cache",
            daemon=root / "daemon.json",
            sources=root / "sources.json",
        )
