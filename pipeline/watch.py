"""``imgrag watch``: one process that owns the index, runs a daemon per source (folders and
blob containers) in a ``Fleet``, and serves the one HTTP app (``api.py``) over its own door
to the index, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from imgrag._errors import DaemonFailed, FatalError, StoreError
from imgrag.pipeline.api import create_api, http_server, serve_on
from imgrag.pipeline.api_token import api_token, gallery_link
from imgrag.pipeline.blob_source import (
    blob_ingestor,
    config_for_uri,
    location_uri,
    make_blob_daemon,
    source_name,
)
from imgrag.pipeline.config import load_settings
from imgrag.pipeline.core import Core
from imgrag.pipeline.credentials import RenewableEmbedder
from imgrag.pipeline.daemon import Daemon
from imgrag.pipeline.daemon_client import DaemonInfo, read_daemon_file, write_daemon_file
from imgrag.pipeline.door import LocalDoor
from imgrag.pipeline.ingest import Indexer, Summary
from imgrag.pipeline.metrics import Metrics
from imgrag.pipeline.progress import Board
from imgrag.pipeline.runtime import Runtime, open_runtime
from imgrag.pipeline.sources import Resolved
from imgrag.pipeline.status import Live
from imgrag.pipeline.supervisor import Supervisor

if TYPE_CHECKING:
    from imgrag.connectors.blob import BlobSourceConfig

log = logging.getLogger("imgrag.daemon")

SummaryHook = Callable[[str, Summary], None]


@dataclass
class Hooks:
    """What the person running ``imgrag watch`` sees: lines, pass summaries, progress."""

    announce: Callable[[str], None] = lambda line: None
    on_summary: SummaryHook | None = None
    board: Board | None = None
    observe_embed: list[Callable[[float], None]] = field(default_factory=list)


class Fleet:
    """One daemon per source, sharing one embedder, index and API: ``imgrag watch A B``, and
    sources added later through ``POST /sources``. Stopping the fleet stops all; a daemon
    that fails stops the fleet. It is what the daemon's door knows as ``Watching``."""

    def __init__(self, runtime: Runtime, hooks: Hooks, *, polling: bool = False) -> None:
        self.core = runtime.core
        self.runtime = runtime
        self.hooks = hooks
        self.polling = polling
        self.daemons: dict[str, Daemon] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()
        self.supervisor = Supervisor(self.stopping)
        """Runs the fleet's own tasks (the local API); its problems show in health."""
        self.started_at = time.time()
        self._adding = asyncio.Lock()

    # -- making and running daemons -------------------------------------------------------------

    def _observe(self, seconds: float) -> None:
        for observe in self.hooks.observe_embed:
            observe(seconds)

    def folder_daemon(self, source: Resolved) -> Daemon:
        settings = self.core.settings
        ingestor = self.runtime.ingestor(source, observe_embed=self._observe)
        board = self.hooks.board
        return Daemon(
            ingestor,
            rescan_minutes=settings.ingest.rescan_minutes,
            polling=self.polling,
            on_summary=self.hooks.on_summary,
            renew_credential=self.renew_credential,
            progress=functools.partial(board.track, ingestor, source=source.name)
            if board is not None
            else None,
        )

    def add(self, source: Resolved) -> tuple[Daemon, bool]:
        """Watch ``source`` (its whole root); (its daemon, whether it is new)."""
        if source.name in self.daemons:
            return self.daemons[source.name], False
        whole = Resolved(source.name, source.root)
        return self.add_daemon(source.name, self.folder_daemon(whole)), True

    def add_blob(self, config: BlobSourceConfig) -> Daemon:
        blob = make_blob_daemon(
            self.runtime,
            config,
            observe_embed=self._observe,
            on_summary=self.hooks.on_summary,
            renew_credential=self.renew_credential,
        )
        return self.add_daemon(blob.indexer.source, blob)

    def add_daemon(self, name: str, daemon: Daemon) -> Daemon:
        self.daemons[name] = daemon
        task = asyncio.create_task(daemon.run())
        task.add_done_callback(functools.partial(self._ended, name))
        self._tasks[name] = task
        return daemon

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(name) is task:  # not one unwatched on purpose
            self.stop()  # one failing daemon ends the process

    async def renew_credential(self) -> None:
        """Re-read the key (config file and environment); probe with it."""
        embedder = self.runtime.embedder
        assert isinstance(embedder, RenewableEmbedder)
        settings = self.core.settings
        try:
            fresh = load_settings(settings.config_path)
        except Exception as exc:  # a half-edited file: keep the key in use
            log.warning("could not re-read the settings: %s", exc)
            fresh = settings
        key = fresh.embedder.api_key
        if key is not None and key != embedder.key:
            config = settings.embedder.model_copy(update={"api_key": key})
            await embedder.swap(self.core.create_embedder(config=config), key)
            log.warning("re-read the embedder key from the settings")
        await embedder.probe()

    def stop(self) -> None:
        for daemon in self.daemons.values():
            daemon.stop()
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)

    async def run(self) -> None:
        await self.stopping.wait()
        self.stop()  # also when the supervisor gave up on a fleet task
        results = await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for daemon in self.daemons.values():
            await daemon.indexer.close()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if self.supervisor.failed:
            raise DaemonFailed(self.supervisor.failed)

    @property
    def left(self) -> int:
        return sum(d.left for d in self.daemons.values())

    # -- what the door asks (Watching) ------------------------------------------------------

    def health_report(self) -> dict[str, Any]:
        own = {
            "status": "degraded" if self.supervisor.problems else "ok",
            "problems": list(self.supervisor.problems.values()),
            "restarts": dict(self.supervisor.restarts),
        }
        reports = [own, *(d.health_report() for d in self.daemons.values())]
        states = {r["status"] for r in reports}
        status = (
            "stopping" if "stopping" in states else "degraded" if "degraded" in states else "ok"
        )
        restarts: dict[str, int] = {}
        for r in reports:
            for k, v in r["restarts"].items():
                restarts[k] = restarts.get(k, 0) + v
        return {
            "status": status,
            "problems": [p for r in reports for p in r["problems"]],
            "restarts": restarts,
            "sources": list(self.daemons),
        }

    def live(self) -> Live:
        daemons = list(self.daemons.values())
        info = self.runtime.embedder.info
        health = self.health_report()
        return Live(
            watched={n: d.source_status for n, d in self.daemons.items()},
            daemon={
                "pid": os.getpid(),
                "root": daemons[0].display_root if daemons else "",
                "roots": [d.display_root for d in daemons],
                "watching": daemons[0].watch_mode if daemons else "",
                "started_at": self.started_at,
            },
            health=health["status"],
            problems=health["problems"],
            waiting_for=next((d.waiting_for for d in daemons if d.waiting_for), None),
            usage=self.runtime.embedder.usage,
            embedder={
                "provider": info.provider,
                "model": info.model,
                "dimension": info.dimension,
                "family": info.family,
            },
        )

    def roots(self) -> list[Path]:
        return [r for d in self.daemons.values() if (r := d.origin.local_root) is not None]

    async def watch(self, source: Resolved) -> bool:
        async with self._adding:
            _, added = self.add(source)
        log.warning("%s source %s (%s)", "watching" if added else "already watching",
                    source.name, source.root)  # fmt: skip
        return added

    async def unwatch(self, name: str) -> bool:
        daemon = self.daemons.pop(name, None)
        if daemon is None:
            return False
        task = self._tasks.pop(name)
        daemon.stop()
        await asyncio.gather(task, return_exceptions=True)
        await daemon.indexer.close()
        log.warning("stopped watching source %s (%s)", name, daemon.display_root)
        return True

    async def ingest(self, source: Resolved, prune: bool) -> Summary:
        """One reconcile pass for a source, as ``imgrag ingest`` asked through the API."""
        return await self._one_pass(source.name, lambda: self.runtime.ingestor(source), prune)

    async def ingest_blob(self, uri: str, prune: bool) -> Summary:
        config = config_for_uri(self.core.settings, uri)
        make = functools.partial(blob_ingestor, self.runtime, config)
        return await self._one_pass(source_name(config), make, prune)

    async def _one_pass(self, name: str, make: Callable[[], Indexer], prune: bool) -> Summary:
        """The watched source's own daemon runs the pass in turn; another source gets a
        passing indexer."""
        daemon = self.daemons.get(name)
        if daemon is not None:
            return await self._through(daemon, prune)
        indexer = make()
        try:
            return await indexer.reconcile(prune=prune)
        finally:
            await indexer.close()

    async def _through(self, daemon: Daemon, prune: bool) -> Summary:
        summary = await daemon._pass(
            "reconcile", functools.partial(daemon.indexer.reconcile, prune=prune)
        )
        if summary is None:
            raise FatalError(
                "the daemon could not run the pass: " + "; ".join(daemon.problems.values())
                if daemon.problems
                else "the daemon is stopping"
            )
        return summary


async def run_watch(
    core: Core,
    roots: Path | Sequence[Path],
    *,
    polling: bool = False,
    api: bool = True,
    hooks: Hooks | None = None,
    blobs: Sequence[BlobSourceConfig] = (),
) -> None:
    """``imgrag watch A [B ...]``: one daemon for every folder (and every blob source in
    ``blobs``), with its local API, until SIGINT/SIGTERM. A subfolder of a source is watched
    as its whole source."""
    hooks = hooks or Hooks()
    folders = [roots] if isinstance(roots, Path) else list(roots)
    sources = list({s.name: s for s in (core.registry.resolve(r) for r in folders)}.values())
    first_root = str(sources[0].root) if sources else location_uri(blobs[0])
    publish = functools.partial(_publish, core, first_root, time.time())
    # Until the daemon takes SIGINT/SIGTERM itself (it flushes), a stop while the store opens,
    # the model loads or the embedder is waited for ends the start with its exit line.
    me = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: me.cancel() if me is not None else None)
    try:
        # The store is ours: say so at once, so status and search wait instead of failing.
        async with open_runtime(
            core,
            wait_for_embedder=True,
            on_store_open=functools.partial(publish, 0) if api else None,
        ) as runtime:
            runtime.embedder = RenewableEmbedder(runtime.embedder, core.settings.embedder.api_key)
            fleet = Fleet(runtime, hooks, polling=polling)
            for source in sources:
                fleet.add(source)
            for config in blobs:
                fleet.add_blob(config)
            await _serve(fleet, api, publish)
    except asyncio.CancelledError:
        if me is None or not me.cancelling():
            raise
        me.uncancel()
        hooks.announce(
            "stopped while starting: nothing indexed; every file is left for the next start"
        )
    finally:
        info = read_daemon_file(core.paths.daemon, starting=True)
        if info is not None and info.pid == os.getpid():
            core.paths.daemon.unlink(missing_ok=True)


def _publish(core: Core, root: str, started_at: float, port: int) -> None:
    """Write ``daemon.json``: port 0 while starting, then the API's port."""
    settings = core.settings
    write_daemon_file(
        core.paths.daemon,
        DaemonInfo(
            pid=os.getpid(),
            host=settings.api.host,
            port=port,
            root=root,
            started_at=started_at,
            index=core.index_name,
        ),
    )


async def _serve(fleet: Fleet, api: bool, publish: Callable[[int], None]) -> None:
    """Run the fleet (and its API) until it stops; then say what was left."""
    core, hooks = fleet.core, fleet.hooks
    fleet.install_signal_handlers()
    server = _Api(fleet, publish) if api else None
    try:
        if server is not None:
            port = await server.start()
            url = f"http://{core.settings.api.host}:{port}"
            hooks.announce(
                f"local API on {url}; gallery: {gallery_link(url, api_token(core.settings))}"
            )
        _announce_sources(fleet)
        try:
            await fleet.run()
        finally:
            await fleet.runtime.embedder.aclose()
            if server is not None:
                await server.stop()
            core.paths.daemon.unlink(missing_ok=True)
    finally:
        if server is not None:
            server.cancel()
    left = fleet.left
    hooks.announce(
        f"stopped: in-flight work flushed; {left} files left for the next start"
        if left
        else "stopped: in-flight work finished and flushed; nothing left"
    )


def _announce_sources(fleet: Fleet) -> None:
    settings = fleet.core.settings
    info = fleet.runtime.embedder.info
    for name, d in fleet.daemons.items():
        if d.display_root.startswith("az://"):
            fleet.hooks.announce(f"watching {d.display_root} as source {name} ({d.watch_mode})")
        else:
            fleet.hooks.announce(
                f"watching {d.root} as source {name} (model {info.model}, store "
                f"{settings.store.kind}:{settings.store.collection}); Ctrl+C stops"
            )


class _Api:
    """The daemon's local API: the one HTTP app over the fleet's door, run under the fleet's
    supervisor (a restart keeps its port) and published in ``daemon.json`` once it listens."""

    def __init__(self, fleet: Fleet, publish: Callable[[int], None]) -> None:
        self.fleet = fleet
        self.publish = publish
        core = fleet.core
        settings = core.settings
        door = LocalDoor(core, runtime=fleet.runtime, watching=fleet)
        metrics = Metrics(door.status_now)
        fleet.hooks.observe_embed.append(metrics.embed_seconds.observe)
        self.app = create_api(
            door,
            metrics,
            api_token(settings, create=True),
            fleet.health_report,
            allowed_hosts=[settings.api.host, *settings.api.allowed_hosts],
            writes=True,
        )
        self.servers: list[uvicorn.Server] = []
        self.first: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Start serving; the port, or StoreError naming the fix when it cannot listen."""
        self.task = asyncio.create_task(self.fleet.supervisor.run("api", self._supervised))
        try:
            return await self.first
        except OSError as exc:
            self.fleet.stop()
            await self.fleet.run()
            api = self.fleet.core.settings.api
            raise StoreError(
                f"the local API could not listen on {api.host}:{api.port} "
                f"({exc.strerror or exc}); set [api] port (IMGRAG_API__PORT) to a free port"
            ) from None

    async def _supervised(self) -> None:
        try:
            await self._serve()
        except BaseException as exc:
            if not self.first.done():
                self.first.set_exception(exc)
                return
            raise

    async def _serve(self) -> None:
        api = self.fleet.core.settings.api
        port = api.port
        if self.servers and self.servers[-1].servers:  # a restart keeps the port it had
            port = self.servers[-1].servers[0].sockets[0].getsockname()[1]
        server = http_server(self.app)
        self.servers.append(server)
        # Bound here: a port in use is an OSError, where uvicorn would sys.exit out of the
        # event loop with a traceback.
        family = socket.AF_INET6 if ":" in api.host else socket.AF_INET
        sock = socket.create_server((api.host, port), family=family)
        await serve_on(server, sock, self._listening)
        if not server.should_exit:
            raise RuntimeError("the local API stopped serving")

    def _listening(self, port: int) -> None:
        self.publish(port)
        if not self.first.done():
            self.first.set_result(port)

    async def stop(self) -> None:
        if self.servers:
            self.servers[-1].should_exit = True
        if self.task is not None:
            await self.task

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
