"""The daemon's local HTTP API: the routes for health, status, search and Prometheus metrics.
The client side, and the ``daemon.json`` that tells clients where to find it, is in
``daemon_client.py``."""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections.abc import Callable
from typing import Any

from imgrag.pipeline.filters import FilterError
from imgrag.pipeline.metrics import Metrics
from imgrag.pipeline.query import QueryError, SearchQuery, describe_validation_error
from imgrag.pipeline.retrieval import SearchService
from imgrag.pipeline.status import StatusReport
from pydantic import SecretStr, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


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
        # Counting pending files walks the folder: off the event loop.
        report_now = await asyncio.to_thread(report)
        return Response(report_now.model_dump_json(), media_type="application/json")

    async def search(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "missing or wrong bearer token (IMGRAG_API_TOKEN)")
        try:
            query = SearchQuery.model_validate_json(await request.body())
        except ValidationError as exc:
            return _error(400, describe_validation_error(exc))
        started = time.perf_counter()
        try:
            hits = await service.run(query)
        except (QueryError, FilterError) as exc:
            return _error(400, str(exc))
        finally:
            metrics.search_seconds.observe(time.perf_counter() - started)
        return JSONResponse([h.model_dump(mode="json") for h in hits])

    async def prometheus(request: Request) -> Response:
        body = await asyncio.to_thread(metrics.render)  # its status walks the folder
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/status", status),
            Route("/search", search, methods=["POST"]),
            Route("/metrics", prometheus),
        ]
    )
