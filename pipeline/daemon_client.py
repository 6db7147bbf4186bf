"""Talking to a running daemon: finding it through ``daemon.json``, and its search, status
and health routes. The Retriever and the CLI both use this one client."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from imgrag import _errors
from imgrag._errors import DaemonError, ImgragError
from imgrag.pipeline.ingest import Summary
from imgrag.pipeline.retrieval import SearchHit
from imgrag.pipeline.status import FailurePage, StatusReport
from pydantic import BaseModel, SecretStr, ValidationError

if TYPE_CHECKING:
    from imgrag.pipeline.query import SearchQuery

    pass

log = logging.getLogger("imgrag.daemon_client")

_HEALTH_TIMEOUT = 3.0
_CALL_TIMEOUT = 120.0
_INGEST_TIMEOUT = 24 * 3600.0  # a delegated pass runs as long as the folder needs
STARTING_WAIT = 30.0
"""How long a client waits for a daemon that is starting (loading its model, waiting for
the embedder) before it says so and gives up."""


class DaemonInfo(BaseModel):
    """What ``daemon.json`` in the state directory says about a running daemon."""

    pid: int
    host: str
    port: int
    root: str
    started_at: float
    index: str | None = None
    """Which index the daemon serves (``Core.index_name``); None in files of older daemons."""

    @property
    def starting(self) -> bool:
        """The daemon owns the store but its API is not up yet (port 0)."""
        return self.port == 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def write_daemon_file(path: Path, info: DaemonInfo) -> None:
    """Publish the daemon's address atomically (readers never see half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(info.model_dump_json())
    os.replace(tmp, path)


def read_daemon_file(path: Path, *, starting: bool = False) -> DaemonInfo | None:
    """What ``daemon.json`` says, or None when there is none or its process is gone; a
    daemon still starting (no API yet) counts only with ``starting``."""
    try:
        info = DaemonInfo.model_validate(json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, ValidationError):
        return None
    if info.starting and not starting:
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
        cls,
        daemon_file: Path,
        token: SecretStr | None = None,
        *,
        wait: float = STARTING_WAIT,
        on_wait: Callable[[str], None] | None = None,
        index: str | None = None,
    ) -> DaemonClient | None:
        """A client for the daemon named in ``daemon_file``, or None when none answers there.

        A file left by a daemon that died, or whose pid now belongs to a process that does
        not answer on the port, counts as no daemon. A daemon that is starting is waited for
        up to ``wait`` seconds (``on_wait`` hears why, once); DaemonError if it is still not up.
        With ``index`` (the caller's ``Core.index_name``), a daemon serving another index is
        a DaemonError: it would answer from, or write into, the wrong one.
        """
        info = read_daemon_file(daemon_file, starting=True)
        if info is None:
            return None
        if info.starting:
            line = (
                f"the daemon (pid {info.pid}) is starting (loading the model or waiting for "
                f"the embedder); waiting up to {wait:.0f}s"
            )
            (on_wait or log.warning)(line)
            deadline = time.monotonic() + wait
            while info is not None and info.starting:
                if time.monotonic() > deadline:
                    raise DaemonError(
                        f"the daemon (pid {info.pid}) is still starting after {wait:.0f}s; "
                        "try again shortly (its log says what it waits for)"
                    )
                await asyncio.sleep(0.1)
                info = read_daemon_file(daemon_file, starting=True)
            if info is None:
                return None
        if index is not None and info.index not in (None, index):
            raise DaemonError(
                f"the daemon (pid {info.pid}) serves {info.index}, but this command is "
                f"configured for {index}; stop the daemon first, or run with its config"
            )
        client = cls(info, token)
        try:
            health = await client.health()
        except httpx.HTTPError as exc:
            log.info("daemon.json names pid %s, which does not answer: %s", info.pid, exc)
            await client.aclose()
            return None
        if health.get("pid") != info.pid:  # another server now has the port (every daemon's
            # /health names its pid, even to a client without the token)
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

    async def status(self, target: str | None = None) -> StatusReport:
        """``GET /status``: the daemon's view of the index (or of the source ``target``
        names: a name, a root or a folder inside one)."""
        response = await self._call("GET", "/status", params={"source": target} if target else None)
        return StatusReport.model_validate_json(response.content)

    async def failures(self, offset: int, limit: int) -> FailurePage:
        """``GET /failures``: one page of the files that failed, newest first."""
        params = {"offset": str(offset), "limit": str(limit)}
        response = await self._call("GET", "/failures", params=params)
        return FailurePage.model_validate_json(response.content)

    async def add_source(self, path: Path, name: str | None = None) -> dict[str, Any]:
        """``POST /sources``: watch one more folder (a subfolder names its source)."""
        body = json.dumps({"path": str(path.absolute()), "name": name})
        response = await self._call("POST", "/sources", content=body)
        answer = response.json()
        return answer if isinstance(answer, dict) else {}

    async def ingest(
        self, target: str, name: str | None = None, prune: bool = False, *, retry: bool = False
    ) -> Summary:
        """``POST /ingest``: one reconcile pass of a folder's source (its absolute path) or an
        ``az://`` location, run by the daemon (``retry``: its failures forgotten first)."""
        body = json.dumps({"path": target, "name": name, "prune": prune, "retry": retry})
        response = await self._call("POST", "/ingest", content=body, timeout=_INGEST_TIMEOUT)
        return Summary.model_validate_json(response.content)

    async def forget(self, source: str) -> dict[str, Any]:
        """``POST /forget``: the daemon stops watching ``source`` and removes its points."""
        body = json.dumps({"source": source})
        response = await self._call("POST", "/forget", content=body, timeout=_INGEST_TIMEOUT)
        answer = response.json()
        return answer if isinstance(answer, dict) else {}

    async def _call(
        self,
        method: str,
        route: str,
        content: str | None = None,
        timeout: float | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json"} if content is not None else None
        extra: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        if params:
            extra["params"] = params
        try:
            response = await self._http.request(
                method, route, content=content, headers=headers, **extra
            )
        except httpx.HTTPError as exc:
            raise DaemonError(
                f"the daemon (pid {self.info.pid}) at {self.info.url} did not answer: {exc}"
            ) from None
        if response.status_code != 200:
            raise self._refusal(response)
        return response

    def _refusal(self, response: httpx.Response) -> ImgragError:
        """The error the daemon answered, as the class it names (the same one this process
        would have raised answering the request itself), else a DaemonError."""
        try:
            body = response.json()
            message, kind = str(body.get("error", response.text)), body.get("kind")
        except (ValueError, AttributeError):
            message, kind = response.text, None
        if response.status_code == 401:
            return DaemonError(
                f"the daemon (pid {self.info.pid}) wants its token: run as the user who "
                "started it (the token is in its state directory's api_token file), or set "
                "IMGRAG_API_TOKEN to the token it was started with"
            )
        cls = getattr(_errors, str(kind), None) if kind else None
        if isinstance(cls, type) and issubclass(cls, ImgragError):
            return cls(message)
        return DaemonError(f"the daemon (pid {self.info.pid}) refused the request: {message}")

    async def aclose(self) -> None:
        await self._http.aclose()
