"""The composition root: the parts every command shares, built once from the settings.

``Core.build(settings)`` makes the state paths, the source registry and the file rules;
it opens nothing. ``runtime.py`` opens the store and the embedder from a core, ``door.py``
decides whether this process or a running daemon answers, and everything else takes these
parts as arguments instead of re-deriving them from the settings.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from imgrag._errors import StateNotWritable
from imgrag.connectors.config import EmbedderConfig
from imgrag.connectors.embedder import Embedder
from imgrag.connectors.factory import create_embedder
from imgrag.connectors.index import CollectionSpec, Index
from imgrag.connectors.paths import StatePaths
from imgrag.connectors.stores import open_index
from imgrag.pipeline.candidates import Rules
from imgrag.pipeline.config import Settings
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.sources import Registry


@dataclass(frozen=True)
class Core:
    """Settings, state paths, the source registry and the file rules of one index."""

    settings: Settings
    paths: StatePaths
    registry: Registry
    rules: Rules

    @classmethod
    def build(cls, settings: Settings) -> Core:
        paths = StatePaths.under(settings.state_dir)
        rules = Rules(
            include=tuple(settings.ingest.include),
            exclude=tuple(settings.ingest.exclude),
            ignore_dirs=(settings.state_dir,),
        )
        return cls(settings, paths, Registry(paths.sources), rules)

    @property
    def collection(self) -> str:
        return self.settings.store.collection

    @property
    def index_name(self) -> str:
        """The index this core works on: the store kind, where it is, and the collection. A
        daemon serving another index must not answer for it."""
        store = self.settings.store
        where = store.url or "the state directory"
        return f"collection '{store.collection}' ({store.kind} store in {where})"

    @property
    def thumbs(self) -> Path:
        return self.settings.state_dir / "thumbs"

    def open_index(self) -> Index:
        """The configured store (StoreLocked when another process holds the embedded one)."""
        with state_writable(self.settings.state_dir):
            return open_index(self.settings.store, self.paths)

    def create_embedder(
        self, *, family: str = "", config: EmbedderConfig | None = None
    ) -> Embedder:
        """The configured embedder, not yet probed; ``family`` is the model a collection
        recorded, so a deployment with a custom name starts with the right limits."""
        config = config or self.settings.embedder
        if family and not config.family:
            config = config.model_copy(update={"family": family})
        return create_embedder(config, self.paths)

    def open_journal(self) -> Journal:
        with state_writable(self.settings.state_dir):
            self.paths.root.mkdir(parents=True, exist_ok=True)
            return Journal(self.paths.journal)

    def spec_for(self, embedder: Embedder) -> CollectionSpec:
        """What the collection must have been made for: this model, its dimension, documents."""
        info = embedder.info
        return CollectionSpec(
            name=self.collection,
            model=info.model,
            dimension=info.dimension,
            input_type="document",
            provider=info.provider,
            family=info.family,
        )


_NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


@contextlib.contextmanager
def state_writable(state_dir: Path) -> Iterator[None]:
    """Turn "read-only file system" or "permission denied" below ``state_dir`` into one
    line naming the directory and the fix (StateNotWritable)."""
    try:
        yield
    except OSError as exc:
        raise not_writable(state_dir, exc) or exc from None


def not_writable(state_dir: Path, exc: BaseException) -> StateNotWritable | None:
    """The one-line error for ``exc`` when it is a write refused below ``state_dir``."""
    if not isinstance(exc, OSError) or exc.errno not in _NOT_WRITABLE:
        return None
    where = str(exc.filename or state_dir)
    if not where.startswith(str(state_dir)):
        return None
    return StateNotWritable(
        f"the state directory {state_dir} cannot be written ({exc.strerror}: {where}): "
        "imgrag writes there even to read its index (the store's lock and segments); make it "
        "writable, or point --state-dir or IMGRAG_STATE_DIR at a writable folder (a copy of "
        "it, to read this index)"
    )
