"""``imgrag serve``: the gallery and search API for an index this process does not ingest
into: a collection on a Qdrant server, or the embedded store of a stopped daemon.

It is the daemon's app (``api.py``) over this process's own door (``door.py``): the same
Host check, token, CSP and thumbnails by point id, served from the index's folder sources
only, and the same status report ``imgrag status`` shows without a daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable

from imgrag._errors import ServeError
from imgrag.connectors.index import Index
from imgrag.pipeline.api import create_api, http_server, serve_on
from imgrag.pipeline.api_token import api_token
from imgrag.pipeline.core import Core
from imgrag.pipeline.door import DaemonDoor, LocalDoor, open_door
from imgrag.pipeline.metrics import Metrics
from imgrag.pipeline.runtime import CoreLike, Reader, as_core
from starlette.applications import Starlette

log = logging.getLogger("imgrag.serve")


def _elsewhere(door: DaemonDoor) -> ServeError:
    """A running daemon owns the index: it serves the gallery already."""
    info = door.client.info
    return ServeError(
        f"the daemon (pid {info.pid}) owns this index and serves its gallery: open "
        f"{info.url}/ instead (imgrag serve is for a stopped daemon's store or a Qdrant server)"
    )


async def _own_door(core: Core, index: Index | None) -> LocalDoor:
    """This process's door to the index, for reading; ServeError when a daemon has it."""
    if index is not None:
        return LocalDoor(core, reader=Reader(core, index))
    door = await open_door(core)
    if isinstance(door, DaemonDoor):
        await door.aclose()
        raise _elsewhere(door)
    assert isinstance(door, LocalDoor)
    return door


@contextlib.asynccontextmanager
async def gallery_app(
    settings: CoreLike, *, index: Index | None = None, host: str | None = None
) -> AsyncIterator[Starlette]:
    """The gallery app over the configured index (or ``index``), closed on exit. It opens
    the index through the one door, for reading (no request to the embedder: the
    collection's record says which model made it). Raises ServeError (one line) when a
    daemon owns the index or the store holds no such collection."""
    core = as_core(settings)
    async with _served(core, await _own_door(core, index), host) as app:
        yield app


@contextlib.asynccontextmanager
async def _served(core: Core, door: LocalDoor, host: str | None) -> AsyncIterator[Starlette]:
    """The app over ``door``; the door is closed on exit."""
    try:
        if door.service() is None:
            where = "the embedded store" if core.settings.store.kind == "edge" else "the server"
            raise ServeError(
                f"{where} holds no collection {core.collection!r}: index a folder first "
                "(imgrag ingest DIR), or name the collection in [store] collection "
                "(IMGRAG_STORE__COLLECTION)"
            )
        api = core.settings.api
        door.keep_counts()  # a poll never walks the folders nor reads every point
        yield create_api(
            door,
            Metrics(door.status_now),
            api_token(core.settings, create=True),
            allowed_hosts=[host or api.host, *api.allowed_hosts],
        )
    finally:
        await door.aclose()


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
    core: Core,
    *,
    host: str | None = None,
    port: int | None = None,
    ready: Callable[[str], None] = lambda url: None,
) -> None:
    """Serve the gallery until SIGINT/SIGTERM; ``ready`` hears the URL once it listens."""
    host = host or core.settings.api.host
    port = core.settings.api.port if port is None else port
    # The door first (a running daemon's index: say where its gallery is), then the port,
    # both before anything loads: either fails at once.
    door = await _own_door(core, None)
    try:
        sock = listen(host, port)
    except BaseException:
        await door.aclose()
        raise
    try:
        async with _served(core, door, host) as app:
            server = http_server(app)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
            shown = f"[{host}]" if ":" in host else host
            await serve_on(server, sock, lambda bound: ready(f"http://{shown}:{bound}"))
    finally:
        sock.close()
    log.info("stopped serving (pid %d)", os.getpid())
