"""FoundryEmbedder: the Embedder protocol over the Azure AI Foundry Models REST API."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlsplit

import httpx
from imgrag.connectors.catalog import lookup
from imgrag.connectors.config import EmbedderConfig
from imgrag.connectors.embedder import EmbedderInfo, Embedding, ImageInput, InputType, Usage
from imgrag.connectors.errors import (
    ConnectorError,
    CredentialError,
    InputTypeNotSupported,
    ModalityNotSupported,
    RequestRejected,
    TransientEmbedderError,
)
from imgrag.connectors.foundry.auth import Auth, EntraAuth, KeyAuth, default_entra_credential
from imgrag.connectors.foundry.pacing import Pacer
from imgrag.connectors.foundry.retry import RETRYABLE_STATUS, backoff_delay, server_delay
from imgrag.connectors.foundry.wire import ServiceError, decode_vectors

log = logging.getLogger("imgrag.foundry")

_TEXT_BATCH = 96  # the service's limit on texts per request
_OPTIONAL_PARAMS = ("input_type", "dimensions", "encoding_format", "text")


def _probe_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (127, 127, 127)).save(buf, format="PNG")
    return buf.getvalue()


_PROBE_PNG = _probe_png()


def _user_agent() -> str:
    try:
        ours = version("imgrag")
    except PackageNotFoundError:
        ours = "0+unknown"
    return f"imgrag/{ours} httpx/{httpx.__version__}"


def normalize_endpoint(endpoint: str) -> str:
    """``https://x.services.ai.azure.com`` and ``.../models/`` both become ``.../models``."""
    endpoint = endpoint.strip().rstrip("/")
    parts = urlsplit(endpoint)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConnectorError(
            f"endpoint {endpoint!r} is not a URL: set [embedder] endpoint or "
            "AZURE_INFERENCE_ENDPOINT to e.g. https://<resource>.services.ai.azure.com/models"
        )
    if (
        parts.path in {"", "/"}
        and parts.hostname
        and parts.hostname.endswith(".services.ai.azure.com")
    ):
        endpoint += "/models"
    return endpoint


class _TooManyInputs(Exception):
    def __init__(self, limit: int) -> None:
        self.limit = limit


@dataclass(slots=True)
class _Call:
    route: str
    inputs: list[Any]
    input_type: InputType
    has_text: bool
    tokens: int


class FoundryEmbedder:
    """Embeds images, image+text pairs and texts through Azure AI Foundry Models.

    One ``httpx.AsyncClient`` is reused for every request. Requests are split to the model's
    images-per-request limit, paced to the configured quota, retried on 408/429/5xx and
    connection errors, and their responses validated.
    """

    def __init__(
        self,
        config: EmbedderConfig,
        *,
        credential: Any = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        endpoint = config.endpoint or os.environ.get("AZURE_INFERENCE_ENDPOINT", "")
        if not endpoint:
            raise ConnectorError(
                "no Foundry endpoint: set [embedder] endpoint or AZURE_INFERENCE_ENDPOINT "
                "(e.g. https://<resource>.services.ai.azure.com/models)"
            )
        self.endpoint = normalize_endpoint(endpoint)
        self._auth: Auth
        if config.auth == "key":
            self._auth = KeyAuth(config.api_key)
        else:
            cred = credential or default_entra_credential(config.entra_interactive)
            self._auth = EntraAuth(cred, config.entra_scope, wall_clock=wall_clock)
        facts = lookup(config.model)
        self._facts = facts
        self.max_images_per_request = config.max_images_per_request or (
            facts.max_images_per_request if facts else 1
        )
        self._dimension = config.dimensions or (facts.dimension if facts else 0)
        self._tokens_per_image = (
            config.tokens_per_image
            if config.tokens_per_image is not None
            else (facts.tokens_per_image if facts else 1000)
        )
        self._omitted: set[str] = set()
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._pacer = Pacer(
            max_concurrency=config.max_concurrency,
            requests_per_minute=config.requests_per_minute,
            tokens_per_minute=config.tokens_per_minute,
            clock=clock,
            sleep=sleep,
        )
        self._usage = Usage()
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=httpx.Timeout(
                config.timeout_seconds, connect=min(10.0, config.timeout_seconds)
            ),
            limits=httpx.Limits(
                max_connections=config.max_concurrency,
                max_keepalive_connections=config.max_concurrency,
            ),
            headers={"User-Agent": _user_agent()},
        )

    def __repr__(self) -> str:
        return (
            f"FoundryEmbedder(endpoint={self.endpoint!r}, model={self.config.model!r}, "
            f"auth={self._auth.kind!r})"
        )

    # -- the Embedder protocol ---------------------------------------------------------

    @property
    def info(self) -> EmbedderInfo:
        facts = self._facts
        return EmbedderInfo(
            provider="foundry",
            model=self.config.model,
            dimension=self._dimension,
            max_images_per_request=self.max_images_per_request,
            supports_input_type="input_type" not in self._omitted
            and (facts.supports_input_type if facts else True),
            supports_image_text="text" not in self._omitted
            and (facts.supports_image_text if facts else True),
            tokens_per_image=self._tokens_per_image,
            max_image_bytes=facts.max_image_bytes if facts else 5 * 1024 * 1024,
            recommended_concurrency=self.config.max_concurrency,
        )

    @property
    def usage(self) -> Usage:
        return self._usage.model_copy()

    async def embed_images(
        self, items: Sequence[ImageInput], input_type: InputType
    ) -> list[Embedding]:
        """Embed images (with their optional captions) in as few requests as the model allows."""
        encoded = [self._image_input(item) for item in items]
        return await self._embed_split("/images/embeddings", encoded, input_type)

    async def embed_texts(self, texts: Sequence[str], input_type: InputType) -> list[Embedding]:
        """Embed texts through the text embeddings route."""
        out: list[Embedding] = []
        for start in range(0, len(texts), _TEXT_BATCH):
            chunk = list(texts[start : start + _TEXT_BATCH])
            tokens = sum(max(1, len(t.split()) * 4 // 3) for t in chunk)
            out += await self._call(_Call("/embeddings", chunk, input_type, False, tokens))
        return out

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()
        await self._auth.aclose()

    async def probe(self) -> EmbedderInfo:
        """Embed one tiny image: proves the endpoint and credentials work before any real
        work starts, and learns the dimension the deployment actually serves."""
        out = await self.embed_images([ImageInput(_PROBE_PNG)], "document")
        if not self.config.dimensions:
            self._dimension = len(out[0].vector)
        return self.info

    # -- internals ----------------------------------------------------------------------

    @staticmethod
    def _image_input(item: ImageInput) -> dict[str, str]:
        url = f"data:{item.mime};base64,{base64.b64encode(item.data).decode('ascii')}"
        return {"image": url, "text": item.text} if item.text is not None else {"image": url}

    async def _embed_split(
        self, route: str, inputs: list[dict[str, str]], input_type: InputType
    ) -> list[Embedding]:
        size = self.max_images_per_request
        chunks = [inputs[i : i + size] for i in range(0, len(inputs), size)]
        results = await asyncio.gather(*(self._embed_chunk(route, c, input_type) for c in chunks))
        return [e for chunk in results for e in chunk]

    async def _embed_chunk(
        self, route: str, chunk: list[dict[str, str]], input_type: InputType
    ) -> list[Embedding]:
        call = _Call(
            route,
            chunk,
            input_type,
            any("text" in i for i in chunk),
            len(chunk) * self._tokens_per_image,
        )
        try:
            return await self._call(call)
        except _TooManyInputs as exc:
            # Learn the model's limit and split again; later calls start from it.
            self.max_images_per_request = max(1, min(exc.limit, len(chunk) - 1))
            log.info(
                "%s takes at most %d images per request; splitting",
                self.config.model,
                self.max_images_per_request,
            )
            return await self._embed_split(route, chunk, input_type)

    def _body(self, call: _Call) -> dict[str, Any]:
        inputs = call.inputs
        if "text" in self._omitted and call.has_text:
            inputs = [{"image": i["image"]} for i in inputs]
        body: dict[str, Any] = {"input": inputs, "model": self.config.model}
        if "input_type" not in self._omitted:
            body["input_type"] = call.input_type
        if self.config.dimensions and "dimensions" not in self._omitted:
            body["dimensions"] = self.config.dimensions
        if self.config.encoding_format != "float" and "encoding_format" not in self._omitted:
            body["encoding_format"] = self.config.encoding_format
        return body

    async def _call(self, call: _Call) -> list[Embedding]:
        url = f"{self.endpoint}{call.route}"
        params = {"api-version": self.config.api_version}
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            body = self._body(call)
            request_id = str(uuid.uuid4())
            response: httpx.Response | None = None
            failure = ""
            async with self._pacer.slot(call.tokens):
                headers = await self._auth.headers()
                headers["x-ms-client-request-id"] = request_id
                try:
                    response = await self._http.post(url, params=params, json=body, headers=headers)
                except httpx.TransportError as exc:
                    failure = f"{type(exc).__name__} talking to {urlsplit(url).netloc}"
                self._usage.requests += 1
            if response is not None and response.status_code == 200:
                return self._accept(call, body, response, request_id)
            status = response.status_code if response is not None else None
            if response is not None and status not in RETRYABLE_STATUS:
                if status in (401, 403) and not refreshed and await self._auth.refresh():
                    refreshed = True
                    continue
                self._handle_refusal(call, body, response, request_id)
                continue  # a parameter was dropped under on_unsupported = "omit"
            delay = server_delay(response.headers, self._wall_clock()) if response else None
            if status == 429:
                self._usage.throttled += 1
            if response is not None:
                failure = f"status {status}: {ServiceError.from_response(response.content).text()}"
            if attempt >= self.config.max_attempts:
                raise TransientEmbedderError(
                    f"gave up after {attempt} attempts to {url}: last {failure} "
                    f"(request id {request_id})",
                    attempts=attempt,
                    status=status,
                )
            self._usage.retries += 1
            wait = delay if delay is not None else backoff_delay(attempt, self._rng)
            if status == 429:
                self._pacer.on_throttled(wait)  # every sender waits, not just this one
            else:
                await self._sleep(wait)

    def _accept(
        self, call: _Call, body: dict[str, Any], response: httpx.Response, request_id: str
    ) -> list[Embedding]:
        rid = response.headers.get("apim-request-id") or response.headers.get("x-request-id")
        vectors, tokens = decode_vectors(
            response.content,
            expected=len(call.inputs),
            encoding=body.get("encoding_format", "float"),
            dimensions=body.get("dimensions"),
            request_id=f"{request_id}" + (f", service request id {rid}" if rid else ""),
        )
        self._pacer.on_success()
        if not self._dimension:
            self._dimension = len(vectors[0])
        if call.route == "/embeddings":
            self._usage.texts += len(call.inputs)
        else:
            self._usage.images += len(call.inputs)
        self._usage.tokens += tokens if tokens else call.tokens
        applied = body.get("input_type")
        return [
            Embedding(
                vector=vec,
                input_type=applied,
                text_applied=isinstance(item, dict) and "text" in body["input"][i],
            )
            for i, (vec, item) in enumerate(zip(vectors, call.inputs, strict=True))
        ]

    def _handle_refusal(
        self, call: _Call, body: dict[str, Any], response: httpx.Response, request_id: str
    ) -> None:
        """Raise the right error for a permanent refusal, or drop an unsupported parameter."""
        status = response.status_code
        err = ServiceError.from_response(response.content)
        said = err.text().lower()
        if status == 422:
            param = _unsupported_param(said, body)
            if param and self.config.on_unsupported == "omit":
                if param in self._omitted:
                    return  # a concurrent request learned it first; this one was sent before
                self._omitted.add(param)
                log.warning(
                    "%s does not accept %r; sending requests without it from now on "
                    '(set [embedder] on_unsupported = "error" to fail instead)',
                    self.config.model,
                    param,
                )
                return
            what = param or "a parameter"
            raise InputTypeNotSupported(
                f"model {self.config.model} does not support {what} (HTTP 422: {err.text()}); "
                'set [embedder] on_unsupported = "omit" to send requests without it '
                f"(request id {request_id})"
            )
        if status in (400, 413) and len(call.inputs) > 1 and _too_many_inputs(said):
            raise _TooManyInputs(_stated_limit(said, len(call.inputs)))
        raise self._error(response, request_id)

    def _error(self, response: httpx.Response, request_id: str) -> Exception:
        status = response.status_code
        said = ServiceError.from_response(response.content).text()
        where = f"{self.endpoint} (request id {request_id})"
        if status in (401, 403):
            fix = (
                "check AZURE_INFERENCE_CREDENTIAL is the key of this deployment"
                if self._auth.kind == "key"
                else "check the identity has the 'Cognitive Services User' role on the resource"
            )
            return CredentialError(
                f"the service refused the credentials (HTTP {status}) at {where}: {fix}"
            )
        if status == 404:
            return ModalityNotSupported(
                f"model {self.config.model} does not serve this route "
                f"(HTTP 404: {said}) at {where}; "
                "check the endpoint ends in /models and the model supports this input"
            )
        return RequestRejected(
            f"the service rejected the input (HTTP {status}: {said}) at {where}", status=status
        )


def _unsupported_param(said: str, body: dict[str, Any]) -> str | None:
    inputs = body.get("input", [])
    for name in _OPTIONAL_PARAMS:
        present = (
            any(isinstance(i, dict) and "text" in i for i in inputs)
            if name == "text"
            else name in body
        )
        if present and name in said:
            return name
    return "input_type" if "input_type" in body else None


def _too_many_inputs(said: str) -> bool:
    return "too many" in said or ("maximum" in said and "input" in said) or "at most" in said


def _stated_limit(said: str, sent: int) -> int:
    numbers = [int(n) for n in re.findall(r"\d+", said)]
    below = [n for n in numbers if 0 < n < sent]
    return min(below) if below else max(1, sent // 2)
