"""``imgrag watch``: one process that owns the index, runs a daemon per source (folders and
blob containers), and serves the local API, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from imgrag.connectors.errors import StoreError
from imgrag.pipeline.api import SignalFreeServer, create_api
from imgrag.pipeline.config import Settings, load_settings
from imgrag.pipeline.credentials import RenewableEmbedder
from imgrag.pipeline.daemon import Daemon, DaemonFailed
from imgrag.pipeline.daemon_client import (
    DaemonInfo,
    index_of,
    read_daemon_file,
    write_daemon_file,
)
from imgrag.pipeline.ingest import FatalError, Summary
from imgrag.pipeline.metrics import Metrics
from imgrag.pipeline.progress import Board
from imgrag.pipeline.retrieval import SearchService
from imgrag.pipeline.runtime import (
    Runtime,
    open_runtime,
    resolve_source,
    rules_for,
    source_list,
    state_paths,
)
from imgrag.pipeline.sources import Resolved
from imgrag.pipeline.status import FailureOut, SourceStatus, StatusReport
from imgrag.pipeline.supervisor import Supervisor
from imgrag.pipeline.thumbnails import LiveRoots

if TYPE_CHECKING:
    from imgrag.connectors.blob import BlobSourceConfig

log = logging.getLogger("imgrag.daemon")


class Fleet:
    """One daemon per source, sharing one embedder, index and API: ``imgrag watch A B``, and
    sources added later through ``POST /sources``. Stopping one stops all."""

    def __init__(self, settings: Settings, runtime: Runtime, make: Callable[[Resolved], Daemon]):
        self.settings = settings
        self.runtime = runtime
        self._make = make
        self.daemons: dict[str, Daemon] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()
        self.supervisor = Supervisor(self.stopping)
        """Runs the fleet's own tasks (the local API); its problems show in health."""
        self.started_at = time.time()
        self._adding = asyncio.Lock()

    def add(self, source: Resolved) -> tuple[Daemon, bool]:
        """Watch ``source`` (its whole root); (its daemon, whether it is new)."""
        if source.name in self.daemons:
            return self.daemons[source.name], False
        return self.add_daemon(source.name, self._make(Resolved(source.name, source.root))), True

    def add_daemon(self, name: str, daemon: Daemon) -> Daemon:
        """Run a daemon made elsewhere (a blob source's) as one of the fleet."""
        self.daemons[name] = daemon
        task = asyncio.create_task(daemon.run())
        task.add_done_callback(lambda _t: self.stop())  # one failing daemon ends the process
        self._tasks[name] = task
        return daemon

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
            await daemon.ingestor.close()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if self.supervisor.failed:
            raise DaemonFailed(self.supervisor.failed)

    @property
    def primary(self) -> Daemon:
        return next(iter(self.daemons.values()))

    @property
    def left(self) -> int:
        return sum(d.left for d in self.daemons.values())

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

    async def ingest(self, source: Resolved, prune: bool) -> Summary:
        """One reconcile pass for a source, as ``imgrag ingest`` asked through the API: the
        watched source's own daemon runs it in turn; another source gets a passing ingestor."""
        daemon = self.daemons.get(source.name)
        if daemon is not None:
            summary = await daemon._pass(
                "reconcile", functools.partial(daemon.ingestor.reconcile, prune=prune)
            )
            if summary is None:
                raise FatalError(
                    "the daemon could not run the pass: " + "; ".join(daemon.problems.values())
                    if daemon.problems
                    else "the daemon is stopping"
                )
            return summary
        ingestor = self.runtime.ingestor(source)
        try:
            return await ingestor.reconcile(prune=prune)
        finally:
            await ingestor.close()


def _add_routes(app: Any, settings: Settings, fleet: Fleet) -> None:
    """``POST /sources`` (watch one more folder) and ``POST /ingest`` (one pass), the routes
    ``imgrag watch`` and ``imgrag ingest`` use when this daemon owns the index."""
    from imgrag.pipeline.sources import SourceError
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    token = settings.api.token

    def refused(request: Request) -> Response | None:
        if token is None:
            return None
        given = request.headers.get("authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token.get_secret_value()}".encode()):
            return None
        return JSONResponse({"error": "missing or wrong bearer token (IMGRAG_API_TOKEN)"}, 401)

    async def body(request: Request) -> tuple[Resolved, dict[str, Any]]:
        # JSON only: a page elsewhere cannot send it without the browser asking first (CORS),
        # so no web page can make the daemon watch a folder.
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise SourceError("send the body as JSON (Content-Type: application/json)")
        data = await request.json()
        shape = 'the body must be {"path": "/absolute/folder", "name": null}'
        if not isinstance(data, dict) or not isinstance(data.get("path"), str):
            raise SourceError(shape)
        name, path = data.get("name"), Path(data["path"])
        if name is not None and not isinstance(name, str):
            raise SourceError(f"name: a source name is text, not {name!r}; {shape}")
        if not path.is_absolute() or not path.is_dir():
            raise SourceError(f"{path} is not an existing folder given by its absolute path")
        resolved = resolve_source(settings, path, name if name else None)
        return resolved, data

    async def add_source(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        try:
            resolved, _ = await body(request)
        except (SourceError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        async with fleet._adding:
            _, added = fleet.add(resolved)
        log.warning("%s source %s (%s)", "watching" if added else "already watching",
                    resolved.name, resolved.root)  # fmt: skip
        return JSONResponse(
            {"name": resolved.name, "root": str(resolved.root), "added": added,
             "sources": list(fleet.daemons)}
        )  # fmt: skip

    async def ingest(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        try:
            resolved, data = await body(request)
            summary = await fleet.ingest(resolved, bool(data.get("prune")))
        except (SourceError, ValueError, FatalError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return Response(summary.model_dump_json(), media_type="application/json")

    app.add_route("/sources", add_source, methods=["POST"])
    app.add_route("/ingest", ingest, methods=["POST"])


async def run_watch(
    settings: Settings,
    roots: Path | Sequence[Path],
    *,
    polling: bool = False,
    api: bool = True,
    announce: Callable[[str], None] = lambda line: None,
    on_summary: Callable[[str, Summary], None] | None = None,
    blobs: Sequence[BlobSourceConfig] = (),
    progress: Board | None = None,
) -> None:
    """``imgrag watch A [B ...]``: one daemon for every folder (and every blob source in
    ``blobs``), with its local API, until SIGINT/SIGTERM. A subfolder of a source is watched
    as its whole source. ``progress`` shows each pass as it runs."""
    folders = [roots] if isinstance(roots, Path) else list(roots)
    sources = list({s.name: s for s in (resolve_source(settings, r) for r in folders)}.values())
    first_root = str(sources[0].root) if sources else _blob_uri(blobs[0])
    daemon_file = state_paths(settings).daemon

    def starting() -> None:
        # The store is ours: say so at once, so status and search wait instead of failing.
        write_daemon_file(
            daemon_file,
            DaemonInfo(
                pid=os.getpid(),
                host=settings.api.host,
                port=0,
                root=first_root,
                started_at=time.time(),
                index=index_of(settings),
            ),
        )

    # Until the daemon takes SIGINT/SIGTERM itself (it flushes), a stop while the store opens,
    # the model loads or the embedder is waited for ends the start with its exit line.
    me = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: me.cancel() if me is not None else None)
    try:
        async with open_runtime(
            settings, wait_for_embedder=True, on_store_open=starting if api else None
        ) as runtime:
            await _serve(
                settings, runtime, sources, polling, api, announce, on_summary, blobs, progress
            )
    except asyncio.CancelledError:
        if me is None or not me.cancelling():
            raise
        me.uncancel()
        announce("stopped while starting: nothing indexed; every file is left for the next start")
    finally:
        info = read_daemon_file(daemon_file, starting=True)
        if info is not None and info.pid == os.getpid():
            daemon_file.unlink(missing_ok=True)


async def _serve(
    settings: Settings,
    runtime: Runtime,
    sources: list[Resolved],
    polling: bool,
    api: bool,
    announce: Callable[[str], None],
    on_summary: Callable[[str, Summary], None] | None,
    blobs: Sequence[BlobSourceConfig] = (),
    board: Board | None = None,
) -> None:
    from imgrag.connectors.factory import create_embedder

    embedder = RenewableEmbedder(runtime.embedder)
    runtime.embedder = embedder
    metrics_box: list[Metrics] = []
    current_key = [settings.embedder.api_key]
    runtime_first = [embedder.inner]

    async def renew_credential() -> None:
        """Re-read the key (config file and environment); probe with it."""
        try:
            fresh = load_settings(settings.config_path)
        except Exception as exc:  # a half-edited file: keep the key in use
            log.warning("could not re-read the settings: %s", exc)
            fresh = settings
        key = fresh.embedder.api_key
        if key is not None and key != current_key[0]:
            new = create_embedder(
                settings.embedder.model_copy(update={"api_key": key}),
                state_paths(settings),
            )
            old = embedder.inner
            embedder.replace(new)
            current_key[0] = key
            if old is not runtime_first[0]:
                await old.aclose()
            log.warning("re-read the embedder key from the settings")
        await embedder.probe()

    def make(source: Resolved) -> Daemon:
        ingestor = runtime.ingestor(
            source, observe_embed=lambda s: metrics_box[0].embed_seconds.observe(s)
        )
        return Daemon(
            source.root,
            ingestor,
            ingestor.journal,
            settle_seconds=settings.ingest.settle_seconds,
            rescan_minutes=settings.ingest.rescan_minutes,
            polling=polling,
            on_summary=on_summary,
            renew_credential=renew_credential,
            progress=functools.partial(board.track, ingestor, source=source.name)
            if board is not None
            else None,
        )

    fleet = Fleet(settings, runtime, make)
    for source in sources:
        fleet.add(source)
    if blobs:
        from imgrag.pipeline.blob_source import make_blob_daemon

        for config in blobs:
            blob = make_blob_daemon(
                runtime,
                config,
                observe_embed=lambda s: metrics_box[0].embed_seconds.observe(s),
                on_summary=on_summary,
                renew_credential=renew_credential,
            )
            fleet.add_daemon(blob.ingestor.source, blob)
    info = embedder.info
    rules = rules_for(settings)

    def report() -> StatusReport:
        per: list[SourceStatus] = []
        for daemon in list(fleet.daemons.values()):
            per.append(daemon.source_status(rules))
        journal = runtime.journal
        recent = [
            FailureOut(path=f.path, reason=f.reason, message=f.message, kind=f.kind)
            for f in journal.recent(10)
        ]
        primary = fleet.primary
        return StatusReport(
            indexed=sum(p.indexed for p in per),
            pending=sum(p.pending for p in per),
            failed=journal.count(),
            failed_by_reason=journal.by_reason(),
            failures=recent,
            usage=embedder.usage,
            embedder={"provider": info.provider, "model": info.model, "dimension": info.dimension},
            store={"kind": settings.store.kind, "collection": settings.store.collection},
            daemon={
                "pid": os.getpid(),
                "root": primary.display_root,
                "roots": [d.display_root for d in fleet.daemons.values()],
                "watching": primary.watch_mode,
                "started_at": fleet.started_at,
            },
            waiting_for=next(
                (d.waiting_for for d in fleet.daemons.values() if d.waiting_for), None
            ),
            health=fleet.health_report()["status"],
            problems=fleet.health_report()["problems"],
            sources=per,
        )

    metrics_box.append(Metrics(report))
    fleet.install_signal_handlers()
    serving: asyncio.Task[None] | None = None
    servers: list[uvicorn.Server] = []
    daemon_file = state_paths(settings).daemon
    try:
        if api:
            service = SearchService(
                embedder,
                runtime.index,
                source=settings.store.collection,
                image_format=settings.embedder.image_format,
                sources=source_list(settings),
            )
            app = create_api(
                service,
                report,
                metrics_box[0],
                settings.api.token,
                fleet.health_report,
                thumbs_dir=settings.state_dir / "thumbs",
                roots=LiveRoots(lambda: [d.root for d in fleet.daemons.values()]),
                allowed_hosts=[settings.api.host, *settings.api.allowed_hosts],
            )
            _add_routes(app, settings, fleet)
            first = asyncio.get_running_loop().create_future()

            async def serve_api() -> None:
                port = settings.api.port
                if servers and servers[-1].servers:  # a restart keeps the port it had
                    port = servers[-1].servers[0].sockets[0].getsockname()[1]
                server = SignalFreeServer(
                    uvicorn.Config(
                        app,
                        host=settings.api.host,
                        port=port,
                        log_config=None,  # its loggers go through imgrag's one format
                        log_level="warning",
                        access_log=False,
                        lifespan="off",
                        timeout_graceful_shutdown=2,
                    )
                )
                servers.append(server)
                # Bound here: a port in use is an OSError, where uvicorn would sys.exit out
                # of the event loop with a traceback.
                family = socket.AF_INET6 if ":" in settings.api.host else socket.AF_INET
                sock = socket.create_server((settings.api.host, port), family=family)
                task = asyncio.create_task(server.serve(sockets=[sock]))
                while not server.started:
                    if task.done():
                        task.result()  # raises the reason it could not start
                        raise OSError(f"the local API could not listen on port {port}")
                    await asyncio.sleep(0.01)
                bound = server.servers[0].sockets[0].getsockname()[1]
                write_daemon_file(
                    daemon_file,
                    DaemonInfo(
                        pid=os.getpid(),
                        host=settings.api.host,
                        port=bound,
                        root=fleet.primary.display_root,
                        started_at=fleet.started_at,
                        index=index_of(settings),
                    ),
                )
                if not first.done():
                    first.set_result(bound)
                await task
                if not server.should_exit:
                    raise RuntimeError("the local API stopped serving")

            async def api_task() -> None:
                try:
                    await serve_api()
                except BaseException as exc:
                    if not first.done():
                        first.set_exception(exc)
                        return
                    raise

            async def supervised_api() -> None:
                await fleet.supervisor.run("api", api_task)

            serving = asyncio.create_task(supervised_api())
            try:
                port = await first
            except OSError as exc:
                fleet.stop()
                await fleet.run()
                raise StoreError(
                    f"the local API could not listen on {settings.api.host}:"
                    f"{settings.api.port} ({exc.strerror or exc}); set [api] port "
                    "(IMGRAG_API__PORT) to a free port"
                ) from None
            announce(f"local API on http://{settings.api.host}:{port}")
        for source in sources:
            announce(
                f"watching {source.root} as source {source.name} (model {info.model}, store "
                f"{settings.store.kind}:{settings.store.collection}); Ctrl+C stops"
            )
        for name, d in fleet.daemons.items():
            if d.display_root.startswith("az://"):
                announce(f"watching {d.display_root} as source {name} ({d.watch_mode})")
        try:
            await fleet.run()
        finally:
            await embedder.aclose()
            if servers:
                servers[-1].should_exit = True
            if serving is not None:
                await serving
            daemon_file.unlink(missing_ok=True)
    finally:
        if serving is not None and not serving.done():
            serving.cancel()
    left = fleet.left
    announce(
        f"stopped: in-flight work flushed; {left} files left for the next start"
        if left
        else "stopped: in-flight work finished and flushed; nothing left"
    )


def _blob_uri(config: BlobSourceConfig) -> str:
    from imgrag.pipeline.blob_source import location_uri

    return location_uri(config)
