"""``imgrag serve``: the gallery and search API for an index this process does not ingest
into: a collection on a Qdrant server, or the embedded store of a stopped daemon.

It is the daemon's app (``api.py``) with the same Host check, token, CSP and thumbnails by
point id, served from the registered sources' roots only; the status it shows is read from
the index and the journal, as ``imgrag status`` reads it without a daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import uvicorn
from imgrag.connectors.errors import StoreLocked
from imgrag.connectors.factory import create_embedder
from imgrag.connectors.index import FileState, Index
from imgrag.connectors.stores import open_index
from imgrag.pipeline.api import SignalFreeServer, create_api
from imgrag.pipeline.config import Settings
from imgrag.pipeline.daemon_client import read_daemon_file
from imgrag.pipeline.ingest import FatalError
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.metrics import Metrics
from imgrag.pipeline.retrieval import SearchService
from imgrag.pipeline.runtime import (
    collection_spec,
    probe,
    registry,
    rules_for,
    source_list,
    state_paths,
)
from imgrag.pipeline.status import FailureOut, StatusReport, source_status
from imgrag.pipeline.thumbnails import LiveRoots
from starlette.applications import Starlette

log = logging.getLogger("imgrag.serve")

_STATES_SECONDS = 5.0
"""How long the points' states read for ``/status`` are reused (the page asks every 1.5 s)."""


class ServeError(FatalError):
    """The gallery cannot be served as asked; the message is one line with the fix."""


def _locked(settings: Settings, exc: StoreLocked) -> ServeError:
    """The line for a store another process holds: the daemon's URL when it is a daemon."""
    info = read_daemon_file(state_paths(settings).daemon, starting=True)
    if info is not None and not info.starting:
        return ServeError(
            f"the daemon (pid {info.pid}) owns this index and serves its gallery: "
            f"open {info.url}/ instead (imgrag serve is for a stopped daemon's store or a "
            "Qdrant server)"
        )
    if info is not None:
        return ServeError(
            f"the daemon (pid {info.pid}) owns this index and is starting: open its gallery "
            "once it is up (imgrag status shows its address)"
        )
    return ServeError(str(exc))


def status_reader(settings: Settings, index: Index, journal: Journal) -> Callable[[], StatusReport]:
    """``/status`` for a served index: every registered source's counts (pending walks its
    folder), the journal's failures, what the collection was made for. Blocking."""
    reg = registry(settings)
    rules = rules_for(settings)
    name = settings.store.collection
    spec = index.recorded_spec(name)
    described = (
        {"provider": spec.provider, "model": spec.model, "dimension": spec.dimension}
        if spec is not None
        else {}
    )
    cache: dict[str, tuple[float, list[FileState]]] = {}

    def states() -> list[FileState]:
        at, held = cache.get("states", (0.0, []))
        if not held or time.monotonic() - at > _STATES_SECONDS:
            held = list(index.file_states())
            cache["states"] = (time.monotonic(), held)
        return held

    def report() -> StatusReport:
        points = states()
        by_source: dict[str, dict[str, FileState]] = {}
        legacy: dict[str, int] = {}
        for st in points:
            if st.source is None:
                legacy[st.root or "?"] = legacy.get(st.root or "?", 0) + 1
            else:
                by_source.setdefault(st.source, {})[st.path] = st
        per = [
            source_status(e.name, Path(e.root), by_source.get(e.name, {}), journal, rules)
            for e in reg.entries()
        ]
        return StatusReport(
            indexed=len(points),
            pending=sum(p.pending for p in per),
            failed=journal.count(),
            failed_by_reason=journal.by_reason(),
            failures=[
                FailureOut(path=f.path, reason=f.reason, message=f.message, kind=f.kind)
                for f in journal.recent(10)
            ],
            embedder=described,
            store={"kind": settings.store.kind, "collection": name},
            sources=per,
            legacy=legacy,
        )

    return report


@contextlib.asynccontextmanager
async def gallery_app(
    settings: Settings, *, index: Index | None = None, host: str | None = None
) -> AsyncIterator[Starlette]:
    """The gallery app over the configured index (or ``index``), with the embedder it was
    made with for queries; everything is closed on exit. Raises ServeError (one line) when
    the store is locked or holds no such collection, and the connectors' errors when the
    embedder does not answer or is another model than the collection's."""
    paths = state_paths(settings)
    if index is None:
        try:
            index = open_index(settings.store, paths)
        except StoreLocked as exc:
            raise _locked(settings, exc) from None
    with contextlib.ExitStack() as closing:
        closing.callback(index.close)
        name = settings.store.collection
        if index.recorded_spec(name) is None:
            where = "the embedded store" if settings.store.kind == "edge" else "the server"
            raise ServeError(
                f"{where} holds no collection {name!r}: index a folder first (imgrag ingest "
                "DIR), or name the collection in [store] collection (IMGRAG_STORE__COLLECTION)"
            )
        embedder = create_embedder(settings.embedder, paths)
        try:
            await probe(embedder)
            index.ensure_collection(collection_spec(settings, embedder))  # the same model
            paths.root.mkdir(parents=True, exist_ok=True)
            journal = Journal(paths.journal)
            closing.callback(journal.close)
            report = status_reader(settings, index, journal)
            registered = registry(settings)
            service = SearchService(
                embedder,
                index,
                source=name,
                image_format=settings.embedder.image_format,
                sources=source_list(settings),
            )
            yield create_api(
                service,
                report,
                Metrics(report),
                settings.api.token,
                thumbs_dir=settings.state_dir / "thumbs",
                roots=LiveRoots(lambda: [Path(e.root) for e in registered.entries()]),
                allowed_hosts=[host or settings.api.host, *settings.api.allowed_hosts],
            )
        finally:
            await embedder.aclose()


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, or ServeError naming the address and the fix."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        why = (exc.strerror or str(exc)).split(" (while attempting", 1)[0]
        if exc.errno == errno.EADDRINUSE:
            fix = "give --port a free port (0 picks one)"
            why = "in use"
        elif exc.errno == errno.EADDRNOTAVAIL or (exc.errno or 0) < 0:  # < 0: name lookup
            fix = "give --host an address of this machine (127.0.0.1: this machine only)"
        else:
            fix = "give --port a port above 1023 (0 picks a free one)"
        raise ServeError(f"cannot listen on {host}:{port} ({why}): {fix}") from None


async def run_serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    ready: Callable[[str], None] = lambda url: None,
) -> None:
    """Serve the gallery until SIGINT/SIGTERM; ``ready`` hears the URL once it listens."""
    host = host or settings.api.host
    port = settings.api.port if port is None else port
    # The store first (a running daemon's is locked: say where its gallery is), then the
    # port, both before the model loads: either fails at once.
    try:
        index = open_index(settings.store, state_paths(settings))
    except StoreLocked as exc:
        raise _locked(settings, exc) from None
    try:
        sock = listen(host, port)
    except BaseException:
        index.close()
        raise
    try:
        async with gallery_app(settings, index=index, host=host) as app:
            server = SignalFreeServer(
                uvicorn.Config(
                    app,
                    log_config=None,  # uvicorn's loggers go through imgrag's one format
                    log_level="warning",
                    access_log=False,
                    lifespan="off",
                    timeout_graceful_shutdown=2,
                )
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
            task = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            if server.started:
                bound = sock.getsockname()[1]
                shown = f"[{host}]" if ":" in host else host
                ready(f"http://{shown}:{bound}")
            await task
    finally:
        sock.close()
    log.info("stopped serving (pid %d)", os.getpid())
