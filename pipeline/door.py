"""The one door to the index: every command, ``Retriever`` and the daemon's API go through it.

``open_door`` decides, in this one place, who answers: a running daemon of this index (then
every request is handed to it, writes included: it owns the store and its watchers must see
what changes), or this process, which then opens the store itself. The two doors offer the
same operations, the way qdrant-client has one base over its remote and local clients:

- ``LocalDoor`` opens the store in this process. In the daemon it also knows the sources
  being watched (``Watching``), so its status counts them live and ``forget`` stops them.
- ``DaemonDoor`` hands each operation to the daemon's local API, which answers it with the
  daemon's own ``LocalDoor``.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from imgrag._errors import StoreLocked
from imgrag.connectors.index import FileState, Index
from imgrag.pipeline.api_token import api_token
from imgrag.pipeline.core import Core
from imgrag.pipeline.daemon_client import DaemonClient
from imgrag.pipeline.forget import Forgotten, forget_source
from imgrag.pipeline.ingest import Indexer, Summary
from imgrag.pipeline.journal import Journal

if TYPE_CHECKING:
    from imgrag.pipeline.query import SearchQuery
from imgrag._errors import SourceError
from imgrag.pipeline.retrieval import SearchHit, SearchService
from imgrag.pipeline.runtime import Reader, Runtime, open_reader, open_runtime
from imgrag.pipeline.sources import Resolved, uri_of
from imgrag.pipeline.status import (
    FailurePage,
    Live,
    SourceStatus,
    StatusReport,
    Survey,
    build_status,
    failure_page,
    source_status,
    surveyor,
)

Track = Callable[[Indexer, str, str], contextlib.AbstractContextManager[None]]
"""Shows a pass's progress: (ingestor, what, source name)."""
OnStart = Callable[[Callable[[], None]], None]
"""Hears how to stop a pass once it runs (the CLI binds it to Ctrl+C)."""


class Watching(Protocol):
    """What the daemon's fleet of watched sources offers its door."""

    def live(self) -> Live:
        """The watched sources' live counts, health, usage and embedder."""
        ...

    def roots(self) -> list[Path]:
        """The folders of the sources being watched."""
        ...

    async def watch(self, source: Resolved) -> bool:
        """Start watching ``source``; False when it already was."""
        ...

    async def unwatch(self, name: str) -> bool:
        """Stop watching source ``name`` (its in-flight work flushed); False if it was not."""
        ...

    async def ingest(self, source: Resolved, prune: bool) -> Summary:
        """One pass over ``source``: by its daemon when watched, else by a passing one."""
        ...

    async def ingest_blob(self, uri: str, prune: bool) -> Summary:
        """One pass over a blob container prefix."""
        ...


@dataclass(frozen=True)
class _Pass:
    """A one-shot pass over a folder, as ``imgrag ingest`` or ``imgrag retry`` asked."""

    folder: Path
    name: str | None
    prune: bool
    retry: bool
    track: Track | None
    on_start: OnStart | None


class Door(ABC):
    """The operations every way to the index offers."""

    where: str
    """Who answers, for people: "no daemon running", or the daemon's pid and sources."""

    @abstractmethod
    async def search(self, query: SearchQuery) -> list[SearchHit]: ...

    @abstractmethod
    async def status(self, target: str | None = None) -> StatusReport:
        """Every source of the index, watched or not (or the one ``target`` names)."""

    @abstractmethod
    async def failures(self, offset: int = 0, limit: int = 50) -> FailurePage:
        """One page of the files that failed, newest first."""

    @abstractmethod
    async def ingest(
        self,
        target: str,
        *,
        name: str | None = None,
        prune: bool = False,
        retry: bool = False,
        track: Track | None = None,
        on_start: OnStart | None = None,
    ) -> Summary:
        """One reconcile pass over a folder (or its source) or an ``az://`` location; with
        ``retry``, the source's recorded failures are forgotten first (once the pass may
        run: a refused pass keeps them)."""

    @abstractmethod
    async def forget(self, source: str) -> Forgotten:
        """Remove one source's points, failures and registration (watching it stops)."""

    @abstractmethod
    async def watch(self, folder: Path, name: str | None = None) -> dict[str, Any]:
        """Have the daemon watch one more folder."""

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> Door:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class LocalDoor(Door):
    """This process owns the store. Reading opens it without a probe; a one-shot ingest
    opens it for writing; in the daemon, ``runtime`` and ``watching`` are the daemon's."""

    def __init__(
        self,
        core: Core,
        *,
        reader: Reader | None = None,
        runtime: Runtime | None = None,
        watching: Watching | None = None,
    ) -> None:
        self.core = core
        self.where = "no daemon running" if watching is None else "this daemon"
        self._reader = reader
        self._runtime = runtime
        self._watching = watching
        self._journal: Journal | None = runtime.journal if runtime is not None else None
        self._service: SearchService | None = None
        self._survey: Survey | None = None
        self._kept = watching is not None

    def keep_counts(self) -> None:
        """Answer status from kept counts, as a server must (``imgrag serve``; a daemon's
        door does): no walk or read of every point per report; the sources nobody watches
        are walked in the background, and their pending count shows its age."""
        self._kept = True
        survey = self.survey()
        if survey is not None:
            survey.last()  # the first walk starts now, in the background

    def survey(self) -> Survey | None:
        """The background walks of the sources nobody watches (None: counted per report)."""
        if self._kept and self._survey is None:
            take = surveyor(self.core.registry, self._index(), self.journal(), self._count)
            self._survey = Survey(take)
        return self._survey

    # -- the parts, opened on first need -----------------------------------------------------

    def _index(self) -> Index | None:
        if self._runtime is not None:
            return self._runtime.index
        if self._reader is None:
            self._reader = open_reader(self.core)
        return self._reader.index if self._reader.spec is not None else None

    def journal(self) -> Journal:
        if self._journal is None:
            self._journal = self.core.open_journal()
        return self._journal

    def service(self) -> SearchService | None:
        """The search service; None while the collection does not exist."""
        if self._service is not None:
            return self._service
        core = self.core
        if self._runtime is not None:
            made = SearchService(
                self._runtime.embedder,
                self._runtime.index,
                source=core.collection,
                image_format=core.settings.embedder.image_format,
                sources=self.sources,
            )
        else:
            if self._index() is None:
                return None
            reader = self._reader
            assert reader is not None and reader.spec is not None
            made = SearchService(
                reader.embedder,
                reader.index,
                source=core.collection,
                image_format=core.settings.embedder.image_format,
                sources=self.sources,
                model=reader.spec.model,
            )
        self._service = made
        return made

    def watched(self) -> list[str]:
        """The names of the sources this process watches (none without a daemon)."""
        return list(self._watching.live().watched) if self._watching is not None else []

    def payload(self, point_id: str) -> dict[str, Any] | None:
        """A point's stored payload (None when there is no such point). Blocking."""
        index = self._index()
        return index.payload_by_id(point_id) if index is not None else None

    def sources(self) -> list[tuple[str, str]]:
        """The registered sources as (name, root)."""
        return [(e.name, e.root) for e in self.core.registry.entries()]

    def roots(self) -> list[Path]:
        """The folders whose images the gallery serves: every folder source of the index."""
        roots = [Path(root) for _, root in self.sources() if uri_of(root) is None]
        if self._watching is not None:
            roots += [r for r in self._watching.roots() if r not in roots]
        return roots

    # -- the operations -----------------------------------------------------------------------

    async def search(self, query: SearchQuery) -> list[SearchHit]:
        service = await asyncio.to_thread(self.service)
        if service is None:
            return []  # no collection yet: nothing indexed, nothing to embed
        return await service.run(query)

    def status_now(self, target: str | None = None) -> StatusReport:
        """The status report. Blocking: reads counts, or (``imgrag status`` without a daemon)
        reads the index and walks the folders."""
        core = self.core
        live = self._watching.live() if self._watching is not None else None
        index = self._index()
        store: dict[str, Any] = {"kind": core.settings.store.kind, "collection": core.collection}
        if index is not None:
            store["graph"] = index.graph_status().model_dump()
        return build_status(
            core.registry,
            index,
            self.journal(),
            self._count,
            target=target,
            live=live,  # a daemon's report says what its embedder is, live
            store=store,
            embedder=self._recorded() if live is None else None,
            survey=self.survey(),
        )

    def _recorded(self) -> dict[str, Any]:
        """What the collection was made with, from its record (no embedder is asked)."""
        core = self.core
        if self._runtime is not None:
            spec = self._runtime.index.recorded_spec(core.collection)
        else:
            spec = self._reader.spec if self._reader is not None else None
        if spec is None:
            return {"provider": core.settings.embedder.provider, "model": None}
        return {
            "provider": spec.provider,
            "model": spec.model,
            "dimension": spec.dimension,
            "family": spec.family,
        }

    def _count(
        self, name: str, root: str, known: Mapping[str, FileState], journal: Journal, below: str
    ) -> SourceStatus:
        if uri_of(root) is not None:
            counted: SourceStatus = _blobs().blob_source_status(
                self.core, name, root, known, journal
            )
            return counted
        return source_status(name, Path(root), known, journal, self.core.rules, below)

    async def status(self, target: str | None = None) -> StatusReport:
        return await asyncio.to_thread(self.status_now, target)

    async def failures(self, offset: int = 0, limit: int = 50) -> FailurePage:
        return await asyncio.to_thread(failure_page, self.journal(), offset, limit)

    async def ingest(
        self,
        target: str,
        *,
        name: str | None = None,
        prune: bool = False,
        retry: bool = False,
        track: Track | None = None,
        on_start: OnStart | None = None,
    ) -> Summary:
        uri = uri_of(target)
        if self._watching is not None:
            if uri is not None:
                return await self._watching.ingest_blob(uri, prune)
            resolved = self.core.registry.resolve(_folder(target), name)
            cleared = self._clear(resolved.name) if retry else 0
            summary = await self._watching.ingest(resolved, prune)
            self._walk_again(resolved.name)
            return summary.model_copy(update={"cleared": cleared})
        await self._close_reader()
        if uri is not None:
            done: Summary = await _blobs().ingest_blob(
                self.core, uri, prune=prune, on_start=on_start
            )
            return done
        pass_ = _Pass(_folder(target), name, prune, retry, track, on_start)
        return await self._ingest_folder(pass_)

    def _clear(self, source: str) -> int:
        """Forget ``source``'s permanent failures (other sources' stay recorded)."""
        return self.journal().scoped(source).clear_permanent()

    async def _ingest_folder(self, p: _Pass) -> Summary:
        async with open_runtime(self.core) as runtime:
            # Registered only once the store is ours: a refused run leaves no source behind.
            resolved = self.core.registry.resolve(p.folder, p.name)
            cleared = runtime.journal.scoped(resolved.name).clear_permanent() if p.retry else 0
            ingestor = runtime.ingestor(resolved)
            if p.on_start is not None:
                p.on_start(ingestor.stop)
            showing = p.track(ingestor, "ingest", resolved.name) if p.track else _nothing()
            try:
                with showing:
                    summary = await ingestor.reconcile(prune=p.prune)
            finally:
                await ingestor.close()
        return summary.model_copy(update={"cleared": cleared})

    async def forget(self, source: str) -> Forgotten:
        if self._watching is not None:
            entry = self.core.registry.get(source)
            await self._watching.unwatch(entry.name if entry is not None else source)
        index = self._index()
        gone = await asyncio.to_thread(forget_source, self.core, index, self.journal(), source)
        for name in {gone.source, source}:  # its name, or the root it was asked by
            self._walk_again(name)
        return gone

    def _walk_again(self, source: str) -> None:
        """A pass or a forget changed ``source``: its last walk no longer counts."""
        if self._survey is not None:
            self._survey.drop(source)

    async def watch(self, folder: Path, name: str | None = None) -> dict[str, Any]:
        if self._watching is None:
            raise SourceError("no daemon runs: `imgrag watch FOLDER` starts one")
        resolved = self.core.registry.resolve(folder, name)
        added = await self._watching.watch(resolved)
        return {"name": resolved.name, "root": str(resolved.root), "added": added}

    async def _close_reader(self) -> None:
        if self._reader is not None:
            reader, self._reader, self._service = self._reader, None, None
            await reader.aclose()

    async def aclose(self) -> None:
        try:
            if self._runtime is None:
                await self._close_reader()
        finally:
            if self._journal is not None and self._runtime is None:
                self._journal.close()
            self._journal = None


class DaemonDoor(Door):
    """A running daemon owns the index: every operation goes to its local API."""

    def __init__(self, client: DaemonClient) -> None:
        self.client = client
        info = client.info
        self.where = f"daemon pid {info.pid} watching {info.root}"

    async def search(self, query: SearchQuery) -> list[SearchHit]:
        return await self.client.search(query)

    async def status(self, target: str | None = None) -> StatusReport:
        return await self.client.status(_absolute(target) if target is not None else None)

    async def failures(self, offset: int = 0, limit: int = 50) -> FailurePage:
        return await self.client.failures(offset, limit)

    async def ingest(
        self,
        target: str,
        *,
        name: str | None = None,
        prune: bool = False,
        retry: bool = False,
        track: Track | None = None,
        on_start: OnStart | None = None,
    ) -> Summary:
        return await self.client.ingest(_absolute(target), name, prune, retry=retry)

    async def forget(self, source: str) -> Forgotten:
        return Forgotten.model_validate(await self.client.forget(_absolute(source)))

    async def watch(self, folder: Path, name: str | None = None) -> dict[str, Any]:
        return await self.client.add_source(folder, name)

    async def aclose(self) -> None:
        await self.client.aclose()


async def find_daemon(core: Core, *, on_wait: Callable[[str], None] | None = None) -> Door | None:
    """The running daemon of this index, as a door (waited for briefly while it starts)."""
    client = await DaemonClient.discover(
        core.paths.daemon, api_token(core.settings), on_wait=on_wait, index=core.index_name
    )
    return DaemonDoor(client) if client is not None else None


async def open_door(
    core: Core, *, write: bool = False, on_wait: Callable[[str], None] | None = None
) -> Door:
    """The door to the index: the daemon's when one runs, else this process's own.

    For reading, the store is opened now (no request to the embedder): when another
    process holds it, a daemon that is starting is waited for; any other owner is the
    StoreLocked error that names it. For writing, the store is opened by the pass itself.
    """
    daemon = await find_daemon(core, on_wait=on_wait)
    if daemon is not None:
        return daemon
    if write:
        return LocalDoor(core)
    try:
        reader = await asyncio.to_thread(open_reader, core)
    except StoreLocked:
        daemon = await find_daemon(core, on_wait=on_wait)
        if daemon is None:
            raise  # owned by a process that is not a daemon: its message names it
        return daemon
    return LocalDoor(core, reader=reader)


def _folder(target: str) -> Path:
    path = Path(target)
    if not path.is_dir():
        raise SourceError(f"{target} is not a folder: create it, or name another")
    return path


def _absolute(target: str) -> str:
    """What the daemon should be told: ``az://`` and source names as given, anything that
    names a folder made absolute here. The daemon runs in another folder: it must never
    resolve a relative path against its own."""
    if uri_of(target) is not None:
        return target
    path = Path(target)
    if path.exists() or "/" in target or target in (".", ".."):
        return str(path.absolute())
    return target  # a bare word: a source's name


def daemon_target(core: Core, target: str, watched: Iterable[str] = ()) -> str:
    """A target a client handed to the daemon: an absolute path, an ``az://`` address, or
    the name of a source. SourceError for anything else (a relative path would name a
    folder of the daemon's own working directory, not the client's)."""
    if uri_of(target) is not None or Path(target).is_absolute():
        return target
    names = {e.name for e in core.registry.entries()} | set(watched)
    if "/" not in target and target in names:
        return target
    raise SourceError(
        f"{target}: no such source; name a source (`imgrag sources` lists them) or its folder"
    )


def _blobs() -> ModuleType:
    """The blob sources' assembly. It brings the blob extra (azure-storage) and the daemon's
    machinery, so it loads only when an ``az://`` source is counted or ingested: a status
    or a search over folders never pays for it."""
    from imgrag.pipeline import blob_source

    return blob_source


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield
