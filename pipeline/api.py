"""The daemon's local HTTP API: health, status, search and Prometheus metrics."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgrag.pipeline.filters import FilterError
from imgrag.pipeline.metrics import Metrics
from imgrag.pipeline.retrieval import QueryError, SearchService
from imgrag.pipeline.status import StatusReport
from pydantic import BaseModel, Field, SecretStr, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class SearchRequest(BaseModel):
    """``POST /search`` body. Give ``text``, ``image_base64``, both, or ``similar_to``."""

    text: str | None = None
    image_base64: str | None = None
    similar_to: str | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    filter: dict[str, Any] | None = None
    score_threshold: float | None = None
    unique: bool = False


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_api(
    service: SearchService,
    report: Callable[[], StatusReport],
    metrics: Metrics,
    token: SecretStr | None = None,
    health_report: Callable[[], dict[str, Any]] | None = None,
) -> Starlette:
    """The ASGI app the daemon serves on loopback.

    ``/health`` says ``ok``, ``degraded`` (with the problems: a task down, the root
    missing, a refused key, a store that cannot write) or ``stopping``.
    """

    def authorized(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        return hmac.compare_digest(given.encode(), expected.encode())

    async def health(request: Request) -> Response:
        state = health_report() if health_report is not None else {"status": "ok"}
        return JSONResponse({**state, "pid": os.getpid()})

    async def status(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "missing or wrong bearer token (IMGRAG_API_TOKEN)")
        return Response(report().model_dump_json(), media_type="application/json")

    async def search(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "missing or wrong bearer token (IMGRAG_API_TOKEN)")
        try:
            body = SearchRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "body"
            return _error(400, f"{where}: {err['msg']}")
        started = time.perf_counter()
        try:
            if body.similar_to:
                hits = await service.similar(
                    body.similar_to, limit=body.limit, filter=body.filter, unique=body.unique
                )
            else:
                image = (
                    base64.b64decode(body.image_base64, validate=True)
                    if body.image_base64
                    else None
                )
                hits = await service.search(
                    text=body.text,
                    image=image,
                    limit=body.limit,
                    filter=body.filter,
                    score_threshold=body.score_threshold,
                    unique=body.unique,
                )
        except (QueryError, FilterError, binascii.Error) as exc:
            return _error(400, str(exc))
        finally:
            metrics.search_seconds.observe(time.perf_counter() - started)
        return JSONResponse([h.model_dump(mode="json") for h in hits])

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/status", status),
            Route("/search", search, methods=["POST"]),
            Route("/metrics", prometheus),
        ]
    )


class DaemonInfo(BaseModel):
    """What ``daemon.json`` in the state directory says about a running daemon."""

    pid: int
    host: str
    port: int
    root: str
    started_at: float

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def write_daemon_file(path: Path, info: DaemonInfo) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(info.model_dump_json())
    os.replace(tmp, path)


def read_daemon_file(path: Path) -> DaemonInfo | None:
    """The running daemon's info, or None when there is none (or it died)."""
    try:
        info = DaemonInfo.model_validate(json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, ValidationError):
        return None
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by someone else
    return info
