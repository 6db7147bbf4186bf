"""The daemon's local HTTP API: the gallery page, thumbnails and images by point id, and the
routes for health, status, search and Prometheus metrics. The client side, and the
``daemon.json`` that tells clients where to find it, is in ``daemon_client.py``.

Every answer but the page, its assets and images is JSON, errors included. Requests must name
a loopback host or one of ``[api] allowed_hosts`` (a page elsewhere cannot reach the API by
rebinding its DNS name to 127.0.0.1), and with a token set every route but ``/health`` needs
it, as a bearer header or the cookie the page sets from ``/?token=...``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import io
import json
import mimetypes
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import uvicorn
from imgrag._errors import (
    ConfigError,
    ConnectorError,
    ImgragError,
    NotServable,
    QueryError,
    SourceError,
)
from imgrag.pipeline.door import LocalDoor, daemon_target
from imgrag.pipeline.filters import too_deep
from imgrag.pipeline.metrics import Metrics
from imgrag.pipeline.query import SearchQuery, describe_validation_error, query_error
from imgrag.pipeline.retrieval import query_image_problem
from imgrag.pipeline.sources import uri_of
from imgrag.pipeline.status import failure_page
from imgrag.pipeline.thumbnails import (
    adopt_flat_cache,
    cached_path,
    file_of,
    recorded_sha256,
    thumbnail,
    valid_id,
)
from PIL import Image, UnidentifiedImageError
from pydantic import SecretStr, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

MAX_BODY = 32 * 1024 * 1024
"""Largest ``POST /search`` body: a base64 query image of about 24 MB."""
MAX_DEPTH = 48
"""Deepest nesting of objects and lists a request body may have."""
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
COOKIE = "imgrag_token"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_THUMB_CACHE = {"Cache-Control": "max-age=60"}
_ASSETS = {"gallery.js": "text/javascript", "gallery.css": "text/css"}
_NO_TOKEN = (
    "missing or wrong token: open the link imgrag watch or imgrag serve printed (/?token=..., "
    "the token is the state directory's api_token file) or send 'Authorization: Bearer'"
)


def _whole(text: str) -> int:
    """A query parameter that must be a small whole number."""
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise QueryError(f"{text[:20]!r} is not a whole number (0 to 999999999)")
    return int(text)


def _error(
    status: int, message: str, exc: Exception | type[Exception] | None = None
) -> JSONResponse:
    """A JSON error; with ``exc`` (an error or its class), its class as ``kind``, so a client
    raises the same one (the two doors to the index fail alike)."""
    body = {"error": message}
    if exc is not None:
        body["kind"] = (exc if isinstance(exc, type) else type(exc)).__name__
    return JSONResponse(body, status_code=status)


def _parse(body: bytes, error: type[ImgragError]) -> Any:
    """A request body's JSON; ``error`` when it is not JSON or nests deeper than MAX_DEPTH."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise error(f"the body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise error(f"the body is not valid JSON: {exc}") from None
    if too_deep(data, MAX_DEPTH):
        raise error(f"the body nests deeper than {MAX_DEPTH} levels")
    return data


_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(:[0-9]{1,5})?")
"""A Host header: a name or a bracketed IPv6 address, then an optional port; nothing else."""


def _host_name(host: str) -> str:
    """The name in a Host header, without its port (``[::1]:80`` → ``[::1]``); "" when the
    header is not exactly a name and an optional port (``127.0.0.1:80@evil.test``)."""
    match = _HOST.fullmatch(host.strip().lower())
    return match.group(1) if match else ""


def _asset(name: str) -> bytes:
    return resources.files("imgrag.pipeline.gallery").joinpath(name).read_bytes()


class _Guard(BaseHTTPMiddleware):
    """The Host check and the security headers, on every answer."""

    def __init__(self, app: Any, allowed: frozenset[str]) -> None:
        super().__init__(app)
        self.allowed = allowed

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        name = _host_name(request.headers.get("host", ""))
        if name not in self.allowed:
            shown = name or request.headers.get("host", "(none)")[:100]
            response: Response = _error(
                421, f"host {shown!r} is not served: add it to [api] allowed_hosts", ConfigError
            )
        else:
            response = await call_next(request)
        return _hardened(response)


def _hardened(response: Response) -> Response:
    """The security headers. Set by _Guard on every answer, and on the 500s, which Starlette
    makes outside every middleware."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def create_api(
    door: LocalDoor,
    metrics: Metrics,
    token: SecretStr | None = None,
    health_report: Callable[[], dict[str, Any]] | None = None,
    *,
    allowed_hosts: Sequence[str] = (),
    writes: bool = False,
) -> Starlette:
    """The one HTTP app: the daemon serves it on loopback, and so does ``imgrag serve``.

    Every answer comes from ``door``, this process's own door to the index. ``/health``
    says ``ok``, ``degraded`` (with the problems: a task down, the root missing, a refused
    key, a store that cannot write) or ``stopping``. ``/`` is the gallery; ``/thumb/{id}``
    and ``/image/{id}`` serve a point's file when it lies below its recorded root and that
    root is one of the index's folder sources. With ``writes`` (the daemon), ``POST
    /sources``, ``/ingest`` and ``/forget`` take the commands the CLI hands over.
    """
    allowed = LOOPBACK | {_host_name(h) for h in allowed_hosts if h}
    app = _Routes(door, metrics, token, health_report)
    guarded = app.guarded
    routes = [
        Route("/", app.page),
        Route("/static/{name}", _static),
        Route("/health", app.health),
        Route("/status", guarded(app.status)),
        Route("/failures", guarded(app.failures)),
        Route("/search", guarded(app.search), methods=["POST"]),
        Route("/thumb/{id}", guarded(app.thumb)),
        Route("/image/{id}", guarded(app.image)),
        Route("/metrics", guarded(app.prometheus)),
    ]
    if writes:
        routes += [
            Route(path, guarded(functools.partial(handler, door)), methods=["POST"])
            for path, handler in _WRITES.items()
        ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(_Guard, allowed=frozenset(allowed))],
        exception_handlers={HTTPException: _http_error, Exception: _http_error},
    )


class _Routes:
    """The read routes over one door, and the one token check every guarded route uses."""

    def __init__(
        self,
        door: LocalDoor,
        metrics: Metrics,
        token: SecretStr | None,
        health_report: Callable[[], dict[str, Any]] | None,
    ) -> None:
        self.door = door
        self.metrics = metrics
        self.expected = token.get_secret_value() if token is not None else None
        self.health_report = health_report

    def authorized(self, request: Request) -> bool:
        if self.expected is None:
            return True
        header = request.headers.get("authorization", "")
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(
            header.encode(), f"Bearer {self.expected}".encode()
        ) or hmac.compare_digest(cookie.encode(), self.expected.encode())

    def guarded(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            if not self.authorized(request):
                return _error(401, _NO_TOKEN)
            return await handler(request)

        return route

    async def page(self, request: Request) -> Response:
        given = request.query_params.get("token")
        expected = self.expected
        if expected is not None and given is not None:
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return _error(401, _NO_TOKEN)
            # The token goes into a cookie and out of the address bar (and the history).
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, expected, httponly=True, samesite="strict")
            return response
        if not self.authorized(request):
            return _error(401, _NO_TOKEN)
        return Response(_asset("index.html"), media_type="text/html; charset=utf-8")

    async def health(self, request: Request) -> Response:
        state = self.health_report() if self.health_report is not None else {"status": "ok"}
        return JSONResponse({**state, "pid": os.getpid()})

    async def failures(self, request: Request) -> Response:
        """A page of the failures: ``?offset=0&limit=50`` (at most 500), newest first."""
        try:
            offset = _whole(request.query_params.get("offset", "0"))
            limit = _whole(request.query_params.get("limit", "50"))
            page = await asyncio.to_thread(failure_page, self.door.journal(), offset, limit)
        except QueryError as exc:
            return _error(400, str(exc), exc)
        return Response(page.model_dump_json(), media_type="application/json")

    async def status(self, request: Request) -> Response:
        target = request.query_params.get("source")
        try:  # reading the index and walking folders: off the event loop
            if target is not None:
                target = daemon_target(self.door.core, target, self.door.watched())
            report = await asyncio.to_thread(self.door.status_now, target)
        except SourceError as exc:
            return _error(404, str(exc), exc)
        # The gallery polls with the tag it has: an unchanged report is a bodiless 304.
        tag = (
            '"'
            + hashlib.blake2b(
                report.model_dump_json(exclude={"pending_age"}).encode(), digest_size=12
            ).hexdigest()
            + '"'
        )
        headers = {"ETag": tag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers=headers)
        return Response(report.model_dump_json(), media_type="application/json", headers=headers)

    async def search(self, request: Request) -> Response:
        query = await _query(request)
        if isinstance(query, Response):
            return query
        started = time.perf_counter()
        try:
            hits = await self.door.search(query)
        except ConnectorError as exc:  # the embedder or the store did not answer as asked
            return _error(502, str(exc), exc)
        except ImgragError as exc:  # a bad query, filter or query image
            return _error(400, str(exc), exc)
        except ValidationError as exc:  # a Qdrant filter of the wrong shape
            return _error(400, f"filter: {describe_validation_error(exc)}", QueryError)
        finally:
            self.metrics.search_seconds.observe(time.perf_counter() - started)
        return JSONResponse([h.model_dump(mode="json") for h in hits])

    async def thumb(self, request: Request) -> Response:
        return await _thumb(self.door, request.path_params["id"])

    async def image(self, request: Request) -> Response:
        return await _image(self.door, request.path_params["id"])

    async def prometheus(self, request: Request) -> Response:
        body = await asyncio.to_thread(self.metrics.render)  # kept counts: SQLite, the store
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def _http_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _error(exc.status_code, str(exc.detail))
    return _hardened(_error(500, f"internal error: {type(exc).__name__}: {exc}"))


async def _static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _ASSETS:
        return _error(404, f"no asset {name!r}")
    return Response(_asset(name), media_type=_ASSETS[name])


async def _query(request: Request) -> SearchQuery | Response:
    """The search body as a query, or the 4xx that says what is wrong with it."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return _error(415, "send the query as JSON (Content-Type: application/json)", QueryError)
    body = await _read_body(request)
    if isinstance(body, Response):
        return body
    try:
        data = _parse(body, QueryError)
    except QueryError as exc:
        return _error(400, str(exc), exc)
    if not isinstance(data, dict):
        return _error(400, 'the body must be a JSON object such as {"text": "a cat"}', QueryError)
    if isinstance(data.get("image"), str):
        problem = _image_problem(data["image"])
        if problem is not None:
            return problem
    try:
        return SearchQuery.model_validate_json(body)
    except ValidationError as exc:
        error = query_error(exc)
        return _error(400, str(error), error)


async def _thumb(door: LocalDoor, pid: str) -> Response:
    thumbs_dir = door.core.thumbs
    if not valid_id(pid):
        return _error(404, "not an image id")
    await asyncio.to_thread(adopt_flat_cache, thumbs_dir, recorded_sha256(door.payload))
    payload = await asyncio.to_thread(door.payload, pid)
    if payload is not None and payload.get("kind") == "blob":
        # Made at ingest from the downloaded bytes; the blob is never fetched for it.
        cached = cached_path(str(payload.get("sha256") or ""), thumbs_dir)
        if cached is None or not cached.is_file():
            return _error(404, "no thumbnail was made for this blob when it was indexed")
        return FileResponse(cached, media_type="image/webp", headers=_THUMB_CACHE)
    try:
        path = await asyncio.to_thread(thumbnail, pid, payload, thumbs_dir, door.roots())
    except NotServable as exc:
        return _error(404, str(exc))
    return FileResponse(path, media_type="image/webp", headers=_THUMB_CACHE)


async def _image(door: LocalDoor, pid: str) -> Response:
    if not valid_id(pid):
        return _error(404, "not an image id")
    payload = await asyncio.to_thread(door.payload, pid)
    if payload is not None and payload.get("kind") == "blob":
        return _error(
            404,
            "full images of blob sources are not served: open the blob's URL (the hit's "
            "abs_path) with your storage credentials",
        )
    try:
        path = await asyncio.to_thread(file_of, payload, door.roots())
    except NotServable as exc:
        return _error(404, str(exc))
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media)


# -- the commands the CLI hands to the daemon -------------------------------------------------


async def _command(request: Request, shape: str) -> dict[str, Any]:
    """A command's JSON body. JSON only: a page elsewhere cannot send it without the
    browser asking first (CORS), so no web page can make the daemon watch or forget."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise SourceError("send the body as JSON (Content-Type: application/json)")
    body = await _read_body(request)
    if isinstance(body, Response):
        raise SourceError(f"the body is over {MAX_BODY // 2**20} MiB")
    data = _parse(body, SourceError)
    if not isinstance(data, dict):
        raise SourceError(f"the body must be {shape}")
    return data


def _target(data: dict[str, Any], shape: str, door: LocalDoor) -> tuple[str, str | None]:
    """(path, name) of a watch or ingest command: an absolute folder, or az:// for ingest."""
    path, name = data.get("path"), data.get("name")
    if not isinstance(path, str):
        raise SourceError(f"the body must be {shape}")
    if name is not None and not isinstance(name, str):
        raise SourceError(f"name: a source name is text, not {name!r}; {shape}")
    if uri_of(path) is None:
        if not Path(path).is_absolute() or not Path(path).is_dir():
            raise SourceError(f"{path} is not an existing folder given by its absolute path")
        settings = door.core.settings
        refused = refused_root(Path(path), settings.api.allowed_roots, Path(settings.state_dir))
        if refused is not None:
            raise SourceError(refused)
    return path, name or None


_SYSTEM_FOLDERS = (
    "/etc", "/proc", "/sys", "/dev", "/boot", "/usr", "/bin", "/sbin", "/lib", "/lib32",
    "/lib64", "/var", "/run", "/private/etc", "/private/var", "/System", "/Library",
)  # fmt: skip
"""Folders the API never takes as a source unless ``[api] allowed_roots`` names them: the
API serves a source's files, and these hold the system's, not the user's images."""


def refused_root(folder: Path, allowed: Sequence[Path], state_dir: Path) -> str | None:
    """Why the API refuses ``folder`` as a source (the filesystem root, a system folder,
    the state directory), or None."""
    real = folder.resolve()
    if any(real.is_relative_to(Path(a).resolve()) for a in allowed):
        return None
    if real.is_relative_to(state_dir.resolve()):
        return f"{folder} holds imgrag's own state; give the folder of your images"
    system = next((s for s in _SYSTEM_FOLDERS if real.is_relative_to(s)), None)
    if real == Path(real.anchor) or system is not None:
        return (
            f"{folder} is a system folder, not served as a source over the API; add it to "
            "[api] allowed_roots if you mean it"
        )
    return None


_FOLDER_SHAPE = '{"path": "/absolute/folder", "name": null}'


async def _watch(door: LocalDoor, request: Request) -> Response:
    try:
        path, name = _target(await _command(request, _FOLDER_SHAPE), _FOLDER_SHAPE, door)
        if uri_of(path) is not None:
            raise SourceError(
                "a blob container is watched from the config: add a [[sources]] entry"
            )
        answer = await door.watch(Path(path), name)
    except ImgragError as exc:
        return _error(400, str(exc), exc)
    return JSONResponse(answer)


async def _ingest(door: LocalDoor, request: Request) -> Response:
    try:
        data = await _command(request, _FOLDER_SHAPE)
        path, name = _target(data, _FOLDER_SHAPE, door)
        summary = await door.ingest(
            path, name=name, prune=data.get("prune") is True, retry=data.get("retry") is True
        )
    except ImgragError as exc:
        return _error(400, str(exc), exc)
    return Response(summary.model_dump_json(), media_type="application/json")


async def _forget(door: LocalDoor, request: Request) -> Response:
    shape = '{"source": "name or /absolute/root"}'
    try:
        source = (await _command(request, shape)).get("source")
        if not isinstance(source, str) or not source:
            raise SourceError(f"the body must be {shape}")
        forgotten = await door.forget(daemon_target(door.core, source, door.watched()))
    except ImgragError as exc:
        return _error(400, str(exc), exc)
    return Response(forgotten.model_dump_json(), media_type="application/json")


_WRITES = {"/sources": _watch, "/ingest": _ingest, "/forget": _forget}


async def _read_body(request: Request) -> bytes | Response:
    """The body, or a 413 once it passes MAX_BODY (without reading the rest)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        return _error(
            413, f"the body is over {MAX_BODY // 2**20} MiB: send a smaller image", QueryError
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return _error(
                413, f"the body is over {MAX_BODY // 2**20} MiB: send a smaller image", QueryError
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _image_problem(encoded: str) -> Response | None:
    """A 400/413 for a query image that is not base64, not an image, or too many pixels."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        return _error(400, "image: must be base64-encoded image bytes", QueryError)
    try:
        with Image.open(io.BytesIO(raw)) as img:
            width, height = img.size
            fmt = img.format or ""
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        return _error(
            400, "image: not an image this server can read (try PNG, JPEG or WebP)", QueryError
        )
    problem = query_image_problem(width, height, fmt)
    return None if problem is None else _error(413, problem, QueryError)


class SignalFreeServer(uvicorn.Server):
    """uvicorn that never takes SIGINT/SIGTERM: the process that runs it owns them, so a
    stop finishes its work before the API goes away. (uvicorn takes them in
    ``capture_signals``; it stopped calling ``install_signal_handlers`` long ago.)"""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_server(app: Starlette) -> SignalFreeServer:
    """The one way the app is served, by the daemon and ``imgrag serve`` alike."""
    return SignalFreeServer(
        uvicorn.Config(
            app,
            log_config=None,  # uvicorn's loggers go through imgrag's one format
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
    )


async def serve_on(
    server: SignalFreeServer, sock: socket.socket, started: Callable[[int], None]
) -> None:
    """Serve on the bound ``sock`` until the server is told to exit; ``started`` hears the
    port once it answers. Raises why it could not start (the socket is bound beforehand,
    so a port in use is the caller's OSError, never uvicorn's exit)."""
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # raises the reason it could not start
            raise OSError(f"the HTTP server could not start on {sock.getsockname()}")
        await asyncio.sleep(0.01)
    started(sock.getsockname()[1])
    await task
