"""Talking to a running daemon: finding it through ``daemon.json``, and its search, status
and health routes. The Retriever and the CLI both use this one client."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import httpx
from imgrag.pipeline.query import QueryError, SearchQuery
from imgrag.pipeline.retrieval import SearchHit
from imgrag.pipeline.status import StatusReport
from pydantic import BaseModel, SecretStr, ValidationError

log = logging.getLogger("imgrag.daemon_client")

_HEALTH_TIMEOUT = 3.0
_CALL_TIMEOUT = 120.0


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


class DaemonError(QueryError):
    """The daemon answered with an error, or stopped answering."""


def write_daemon_file(path: Path, info: DaemonInfo) -> None:
    """Publish the daemon's address atomically (readers never see half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(info.model_dump_json())
    os.replace(tmp, path)


def read_daemon_file(path: Path) -> DaemonInfo | None:
    """What ``daemon.json`` says, or None when there is none or its process is gone."""
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


class DaemonClient:
    """An HTTP client for one daemon's local API. Use ``await DaemonClient.discover(...)``."""

    def __init__(self, info: DaemonInfo, token: SecretStr | None = None) -> None:
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
        self.info = info
        self._http = httpx.AsyncClient(
            base_url=info.url, headers=headers, timeout=httpx.Timeout(_CALL_TIMEOUT)
        )

    @classmethod
    async def discover(
        cls, daemon_file: Path, token: SecretStr | None = None
    ) -> DaemonClient | None:
        """A client for the daemon named in ``daemon_file``, or None when none answers there.

        A file left by a daemon that died, or whose pid now belongs to a process that does
        not answer on the port, counts as no daemon.
        """
        info = read_daemon_file(daemon_file)
        if info is None:
            return None
        client = cls(info, token)
        try:
            health = await client.health()
        except httpx.HTTPError as exc:
            log.info("daemon.json names pid %s, which does not answer: %s", info.pid, exc)
            await client.aclose()
            return None
        if health.get("pid") not in (None, info.pid):
            await client.aclose()
            return None
        return client

    async def health(self) -> dict[str, Any]:
        """``GET /health``: the daemon's liveness (and, when degraded, why)."""
        response = await self._http.get("/health", timeout=_HEALTH_TIMEOUT)
        try:
            body = response.json()
        except ValueError:
            raise httpx.HTTPError(f"/health answered {response.status_code}, not JSON") from None
        return body if isinstance(body, dict) else {}

    async def search(self, query: SearchQuery) -> list[SearchHit]:
        """``POST /search`` with the query as its body."""
        response = await self._call("POST", "/search", content=query.model_dump_json())
        return [SearchHit.model_validate(h) for h in response.json()]

    async def status(self) -> StatusReport:
        """``GET /status``: the daemon's view of the index."""
        response = await self._call("GET", "/status")
        return StatusReport.model_validate_json(response.content)

    async def _call(self, method: str, route: str, content: str | None = None) -> httpx.Response:
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = await self._http.request(method, route, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise DaemonError(
                f"the daemon (pid {self.info.pid}) at {self.info.url} did not answer: {exc}"
            ) from None
        if response.status_code != 200:
            try:
                message = response.json().get("error", response.text)
            except (ValueError, AttributeError):
                message = response.text
            raise DaemonError(f"the daemon (pid {self.info.pid}) refused {route}: {message}")
        return response

    async def aclose(self) -> None:
        await self._http.aclose()
