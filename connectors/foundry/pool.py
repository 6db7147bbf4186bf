"""A pool of Foundry deployments of one model, used as one embedder.

Each deployment keeps its own sender (a FoundryEmbedder: its client, credential, pacing
and quota). A request goes to the deployment that could send it soonest: the one with the
most free quota, given its requests/min schedule, the requests already queued there and
any pause a 429 imposed, so a throttled deployment sheds new work to the others. A
deployment that fails (5xx, timeout, connection error, refused credential) is taken out of
service; after a backoff that doubles up to a minute, one tiny embedding probes it, and it
returns when that succeeds with the pool's model and dimension. The failed request goes to
another deployment, so nothing is lost while one is out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from imgrag._errors import (
    ConnectorError,
    CredentialError,
    EmbedderError,
    TransientEmbedderError,
)
from imgrag.connectors.config import DeploymentConfig, EmbedderConfig
from imgrag.connectors.embedder import (
    DeploymentUsage,
    EmbedderInfo,
    Embedding,
    ImageInput,
    InputType,
    Usage,
)
from imgrag.connectors.foundry.client import _PROBE_PNG, FoundryEmbedder

log = logging.getLogger("imgrag.foundry.pool")

T = TypeVar("T")

BASE_BACKOFF = 1.0
MAX_BACKOFF = 60.0
_NOT_SERVING = (TransientEmbedderError, CredentialError)
"""Failures that say the deployment, not the input, is the problem."""


@dataclass(eq=False)
class Member:
    """One deployment of the pool and its health."""

    name: str
    sender: FoundryEmbedder
    healthy: bool = True
    retry_at: float = 0.0
    backoff: float = BASE_BACKOFF
    outstanding: int = 0
    failures: int = 0
    last_error: str = ""
    latency: float = 0.1
    """Moving average of a request's duration, to price a full concurrency limit."""
    probing: asyncio.Task[None] | None = field(default=None, repr=False)

    def load(self) -> float:
        """Requests under way here, as a fraction of its concurrency limit."""
        return self.outstanding / max(1, self.sender.config.max_concurrency)

    def start_delay(self) -> float:
        """Seconds before this deployment could send one more request."""
        pacer = self.sender._pacer
        # Whichever binds: the quota schedule, or the concurrency limit (requests beyond it
        # wait for earlier ones to finish).
        over = self.outstanding - max(1, int(pacer.limit)) + 1
        busy = over * self.latency / max(1.0, pacer.limit) if over > 0 else 0.0
        return max(pacer.start_delay(self.outstanding - pacer.booked), busy)


def member_config(base: EmbedderConfig, entry: DeploymentConfig) -> EmbedderConfig:
    """The ``[embedder]`` settings with one deployment's values over them. The pool moves a
    failed request to another deployment, so each sender tries a transient failure once."""
    update: dict[str, object] = {
        "endpoint": entry.endpoint,
        "model": entry.model or base.model,
        "deployments": [],
        "max_attempts": 1,
    }
    for name in (
        "endpoint_kind",
        "auth",
        "entra_scope",
        "requests_per_minute",
        "tokens_per_minute",
        "max_concurrency",
    ):
        value = getattr(entry, name)
        if value is not None:
            update[name] = value
    auth = update.get("auth", base.auth)
    if auth == "key" and entry.api_key_env:
        from pydantic import SecretStr

        key = os.environ.get(entry.api_key_env)
        if not key:
            raise ConnectorError(
                f"deployment {entry.name or entry.endpoint}: environment variable "
                f"{entry.api_key_env} is not set; export it with that endpoint's key"
            )
        update["api_key"] = SecretStr(key)
    return base.model_copy(update=update)


def _label(entry: DeploymentConfig, sender: FoundryEmbedder) -> str:
    if entry.name:
        return entry.name
    return f"{urlsplit(sender.endpoint).netloc}/{sender.config.model}"


class FoundryPool:
    """The Embedder protocol over several deployments of the same model."""

    def __init__(
        self,
        config: EmbedderConfig,
        *,
        senders: Sequence[FoundryEmbedder] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        if senders is None:
            if not config.deployments:
                raise ConnectorError("no [[embedder.deployments]] entries to pool")
            made: list[Member] = []
            for entry in config.deployments:
                sender = FoundryEmbedder(member_config(config, entry))
                made.append(Member(_label(entry, sender), sender))
            self.members = made
        else:
            self.members = [
                Member(f"{urlsplit(s.endpoint).netloc}/{s.config.model}", s) for s in senders
            ]
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ConnectorError(
                f"two [[embedder.deployments]] entries have the same name ({', '.join(names)}); "
                "give each a distinct name"
            )
        self._family = ""
        self._dimension = 0

    def __repr__(self) -> str:
        return f"FoundryPool({', '.join(m.name for m in self.members)})"

    # -- the Embedder protocol -----------------------------------------------------------

    @property
    def info(self) -> EmbedderInfo:
        serving = [m for m in self.members if m.healthy] or self.members
        first = serving[0].sender.info
        return first.model_copy(
            update={
                "model": self.config.model,
                "dimension": self._dimension or first.dimension,
                "family": self._family or first.family,
                "max_images_per_request": min(
                    m.sender.info.max_images_per_request for m in self.members
                ),
                "recommended_concurrency": sum(
                    m.sender.config.max_concurrency for m in self.members
                ),
            }
        )

    @property
    def usage(self) -> Usage:
        each = [m.sender.usage for m in self.members]
        total = Usage()
        for u in each:
            for name in ("requests", "images", "texts", "tokens", "retries", "throttled"):
                setattr(total, name, getattr(total, name) + getattr(u, name))
        served = sum(u.images + u.texts for u in each) or 1
        total.deployments = [
            DeploymentUsage(
                name=m.name,
                endpoint=m.sender.shown_endpoint,
                requests=u.requests,
                images=u.images,
                throttled=u.throttled,
                failures=m.failures,
                healthy=m.healthy,
                share=round((u.images + u.texts) / served, 4),
            )
            for m, u in zip(self.members, each, strict=True)
        ]
        return total

    async def embed_images(
        self, items: Sequence[ImageInput], input_type: InputType
    ) -> list[Embedding]:
        return await self._route(lambda s: s.embed_images(items, input_type))

    async def embed_texts(self, texts: Sequence[str], input_type: InputType) -> list[Embedding]:
        return await self._route(lambda s: s.embed_texts(texts, input_type))

    async def probe(self) -> EmbedderInfo:
        """Probe every deployment; all that answer must serve the same model family and
        dimension. Those that fail start out of service (all failing: the first error)."""
        results = await asyncio.gather(
            *(m.sender.probe() for m in self.members), return_exceptions=True
        )
        answered: list[Member] = []
        errors: list[BaseException] = []
        for member, result in zip(self.members, results, strict=True):
            if isinstance(result, _NOT_SERVING):
                errors.append(result)
                self._eject(member, result)
            elif isinstance(result, BaseException):
                raise result
            else:
                answered.append(member)
        if not answered:
            raise errors[0]
        first = answered[0]
        for other in answered[1:]:
            self._check_same(first, other)
        self._family = first.sender.family
        self._dimension = first.sender.info.dimension
        return self.info

    async def aclose(self) -> None:
        for m in self.members:
            if m.probing is not None:
                m.probing.cancel()
        await asyncio.gather(*(m.sender.aclose() for m in self.members))

    # -- routing and health ----------------------------------------------------------------

    def _check_same(self, first: Member, other: Member) -> None:
        a, b = first.sender, other.sender
        if (a.family, a.info.dimension) != (b.family, b.info.dimension):
            raise EmbedderError(
                f"the pool's deployments serve different models: {first.name} serves "
                f"{a.family or a.config.model} at {a.info.dimension} dimensions, {other.name} "
                f"serves {b.family or b.config.model} at {b.info.dimension}; every "
                "[[embedder.deployments]] entry must deploy the same model and dimensions"
            )

    def _pick(self) -> Member | None:
        now = self._clock()
        for m in self.members:
            if not m.healthy and m.probing is None and now >= m.retry_at:
                m.probing = asyncio.create_task(self._probe_back(m))
        serving = [m for m in self.members if m.healthy]
        if not serving:
            return None
        return min(serving, key=lambda m: (m.start_delay(), m.load()))

    async def _route(self, send: Callable[[FoundryEmbedder], Awaitable[list[T]]]) -> list[T]:
        """Send on the best deployment; a deployment failure moves the request on. Gives up
        after ``max_attempts`` failures per deployment, or a minute with none in service."""
        failures = 0
        limit = self.config.max_attempts * len(self.members)
        idle_since: float | None = None
        while True:
            member = self._pick()
            if member is None:
                now = self._clock()
                idle_since = now if idle_since is None else idle_since
                if now - idle_since > MAX_BACKOFF:
                    raise TransientEmbedderError(
                        "no deployment of the pool is in service: "
                        + "; ".join(f"{m.name}: {m.last_error}" for m in self.members),
                        attempts=failures,
                        status=None,
                    )
                await self._wait_for_one()
                continue
            idle_since = None
            member.outstanding += 1
            started = self._clock()
            try:
                out = await send(member.sender)
            except _NOT_SERVING as exc:
                if isinstance(exc, TransientEmbedderError) and exc.status == 429:
                    raise  # throttled past its budget: waiting elsewhere would not help
                self._eject(member, exc)
                failures += 1
                if failures >= limit:
                    raise
                continue
            finally:
                member.outstanding -= 1
            member.latency = 0.8 * member.latency + 0.2 * (self._clock() - started)
            member.backoff = BASE_BACKOFF
            return out

    async def _wait_for_one(self) -> None:
        """Sleep until the next deployment is due for its probe, or one is back."""
        now = self._clock()
        due = min(m.retry_at for m in self.members)
        probes = [m.probing for m in self.members if m.probing is not None]
        wait = max(0.05, min(due - now, 1.0))
        if probes:
            await asyncio.wait(probes, timeout=wait)
        else:
            await asyncio.sleep(wait)

    def _eject(self, member: Member, exc: BaseException) -> None:
        member.failures += 1
        member.last_error = " ".join(str(exc).split())
        if not member.healthy:
            return
        member.healthy = False
        member.retry_at = self._clock() + member.backoff
        log.warning(
            "deployment %s taken out of service for %.0fs: %s",
            member.name,
            member.backoff,
            member.last_error,
        )

    async def _probe_back(self, member: Member) -> None:
        """One tiny embedding; back in service if it succeeds with the pool's dimension."""
        try:
            if not member.sender.family and not member.sender.config.family:
                # Down at start: learn what it serves (GET /info and one tiny embedding).
                dimension = (await member.sender.probe()).dimension
            else:
                out = await member.sender.embed_images([ImageInput(_PROBE_PNG)], "document")
                dimension = len(out[0].vector)
            if self._family and member.sender.family and member.sender.family != self._family:
                raise EmbedderError(
                    f"{member.name} serves {member.sender.family}, the pool {self._family}; "
                    "check that deployment's model"
                )
            if self._dimension and dimension != self._dimension:
                raise EmbedderError(
                    f"{member.name} now serves {dimension} dimensions, the pool "
                    f"{self._dimension}; check that deployment's model"
                )
        except Exception as exc:  # any failure keeps it out, with a longer wait
            member.failures += 1
            member.last_error = " ".join(str(exc).split())
            member.backoff = min(member.backoff * 2, MAX_BACKOFF)
            member.retry_at = self._clock() + member.backoff
            if not isinstance(exc, _NOT_SERVING):  # it answers, but not as the pool needs
                log.error("deployment %s kept out of service: %s", member.name, member.last_error)
        else:
            member.healthy = True
            log.warning("deployment %s is back in service", member.name)
        finally:
            member.probing = None
