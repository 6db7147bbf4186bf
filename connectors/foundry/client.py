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
from imgrag._errors import (
    ConnectorError,
    CredentialError,
    EmbedderError,
    InputTypeNotSupported,
    ModalityNotSupported,
    RequestRejected,
    TransientEmbedderError,
)
from imgrag.connectors.catalog import MAX_REQUEST_BYTES, ModelFacts, lookup
from imgrag.connectors.config import EmbedderConfig
from imgrag.connectors.embedder import EmbedderInfo, Embedding, ImageInput, InputType, Usage
from imgrag.connectors.foundry.auth import Auth, EntraAuth, KeyAuth, default_entra_credential
from imgrag.connectors.foundry.endpoint import entra_scope, resolve
from imgrag.connectors.foundry.pacing import Pacer
from imgrag.connectors.foundry.retry import (
    RETRYABLE_STATUS,
    backoff_delay,
    message_delay,
    ratelimit_header,
    server_delay,
)
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


def normalize_endpoint(endpoint: str, kind: str = "auto") -> str:
    """``https://x.services.ai.azure.com`` and ``.../models/`` both become ``.../models``;
    serverless and managed endpoints are kept as given."""
    return resolve(endpoint, kind).url


class _TooManyInputs(Exception):
    def __init__(self, limit: int) -> None:
        self.limit = limit


class _TooLarge(Exception):
    """413 for a request of several images: send them in smaller requests."""


_DEPLOYMENTS_HINT = (
    "set [embedder] model to the deployment name (Foundry portal: Models + endpoints, the "
    "Name column; or `az cognitiveservices account deployment list`)"
)


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
        where = resolve(endpoint, config.endpoint_kind)
        self.endpoint = where.url
        self.shown_endpoint = where.shown
        self.endpoint_kind = where.kind
        self._basic = httpx.BasicAuth(*where.userinfo) if where.userinfo else None
        self._auth: Auth
        if config.auth == "key":
            self._auth = KeyAuth(config.api_key)
        else:
            scope = entra_scope(where.kind, config.entra_scope)
            cred = credential or default_entra_credential(config.entra_interactive)
            self._auth = EntraAuth(cred, scope, wall_clock=wall_clock)
        self._facts: ModelFacts | None = None
        self.max_images_per_request = config.max_images_per_request or 1
        self._dimension = config.dimensions or 0
        self._tokens_per_image = (
            config.tokens_per_image if config.tokens_per_image is not None else 1000
        )
        self.max_request_bytes = config.max_request_bytes or MAX_REQUEST_BYTES
        self._learned_tokens = False
        self.family = ""
        self._apply_family(lookup(config.family or config.model))
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
            f"FoundryEmbedder(endpoint={self.shown_endpoint!r}, model={self.config.model!r}, "
            f"auth={self._auth.kind!r})"
        )

    def _apply_family(self, facts: ModelFacts | None) -> None:
        """Take the limits of the model behind the deployment; configured values win."""
        if facts is None:
            return
        cfg = self.config
        self._facts = facts
        self.family = facts.name
        if not cfg.max_images_per_request:
            self.max_images_per_request = facts.max_images_per_request
        if not cfg.dimensions and not self._dimension:
            self._dimension = facts.dimension
        if cfg.tokens_per_image is None and not self._learned_tokens:
            self._tokens_per_image = facts.tokens_per_image
        if not cfg.max_request_bytes:
            self.max_request_bytes = facts.max_request_bytes

    # -- the Embedder protocol ---------------------------------------------------------

    @property
    def info(self) -> EmbedderInfo:
        facts = self._facts
        return EmbedderInfo(
            provider="foundry",
            model=self.config.model,
            dimension=self._dimension,
            family=self.family,
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
        """Ask the deployment what model it serves (``GET /info``), then embed one tiny
        image: proves the endpoint, credentials and deployment name before any real work,
        and learns the model family and the dimension the deployment actually serves."""
        found = await self.model_info()
        if not self.config.family:
            name = str(found.get("model_name") or "")
            facts = lookup(name)
            if facts is None and name:
                log.info("%s serves %s, which is not in the catalog", self.config.model, name)
            self._apply_family(facts)
        out = await self.embed_images([ImageInput(_PROBE_PNG)], "document")
        if not self.config.dimensions:
            self._dimension = len(out[0].vector)
        return self.info

    async def model_info(self) -> dict[str, Any]:
        """``GET {endpoint}/info?model=<deployment>``: what the deployment says it serves."""
        request_id = str(uuid.uuid4())
        headers = await self._auth.headers()
        headers["x-ms-client-request-id"] = request_id
        try:
            response = await self._http.get(
                f"{self.endpoint}/info",
                params={"api-version": self.config.api_version, "model": self.config.model},
                headers=headers,
                auth=self._basic or httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as exc:
            raise TransientEmbedderError(
                f"{type(exc).__name__} talking to {self._host()}", attempts=1, status=None
            ) from None
        if response.status_code != 200:
            err = ServiceError.from_response(response.content)
            raise self._error(response, request_id, err)
        data: dict[str, Any] = response.json()
        return data

    # -- internals ----------------------------------------------------------------------

    @staticmethod
    def _image_input(item: ImageInput) -> dict[str, str]:
        url = f"data:{item.mime};base64,{base64.b64encode(item.data).decode('ascii')}"
        return {"image": url, "text": item.text} if item.text is not None else {"image": url}

    async def _embed_split(
        self, route: str, inputs: list[dict[str, str]], input_type: InputType
    ) -> list[Embedding]:
        chunks = _chunks(inputs, self.max_images_per_request, self.max_request_bytes)
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
        except _TooLarge:
            half = (len(chunk) + 1) // 2
            self.max_request_bytes = max(1, min(self.max_request_bytes, _size(chunk) // 2))
            log.info("%s refused %d images as too large; splitting", self.config.model, len(chunk))
            parts = [chunk[:half], chunk[half:]]
            done = await asyncio.gather(*(self._embed_split(route, p, input_type) for p in parts))
            return [e for part in done for e in part]
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
        attempt = 0  # transient failures other than throttling
        throttled_since: float | None = None
        while True:
            body = self._body(call)
            request_id = str(uuid.uuid4())
            response: httpx.Response | None = None
            failure = ""
            async with self._pacer.slot(call.tokens):
                headers = await self._auth.headers()
                headers["x-ms-client-request-id"] = request_id
                try:
                    response = await self._http.post(
                        url,
                        params=params,
                        json=body,
                        headers=headers,
                        auth=self._basic or httpx.USE_CLIENT_DEFAULT,
                    )
                except httpx.TransportError as exc:
                    failure = f"{type(exc).__name__} talking to {self._host()}"
                self._usage.requests += 1
            if response is not None:
                self._read_quota(response.headers)
            if response is not None and response.status_code == 200:
                return self._accept(call, body, response, request_id)
            status = response.status_code if response is not None else None
            if response is not None and status not in RETRYABLE_STATUS:
                if status in (401, 403) and not refreshed and await self._auth.refresh():
                    refreshed = True
                    continue
                self._handle_refusal(call, body, response, request_id)
                continue  # a parameter was dropped under on_unsupported = "omit"
            err = ServiceError.from_response(response.content) if response is not None else None
            if err is not None:
                failure = f"status {status}: {err.text()}"
            delay = server_delay(response.headers, self._wall_clock()) if response else None
            self._usage.retries += 1
            if status == 429:
                # Throttling always ends: wait as told, for up to the throttle budget.
                self._usage.throttled += 1
                if delay is None and err is not None:
                    delay = message_delay(err.message)
                if delay is None:
                    delay = backoff_delay(min(attempt + 1, 8), self._rng)
                now = self._clock()
                throttled_since = now if throttled_since is None else throttled_since
                budget = self.config.throttle_budget_seconds
                if now + delay - throttled_since > budget:
                    raise TransientEmbedderError(
                        f"still throttled after {budget:g}s of waiting at "
                        f"{self.shown_endpoint}: last {failure} (request id {request_id}); "
                        "raise [embedder] throttle_budget_seconds or the deployment's quota",
                        attempts=attempt + 1,
                        status=status,
                    )
                self._pacer.on_throttled(delay)  # every sender waits, not just this one
                continue
            attempt += 1
            if attempt >= self.config.max_attempts:
                raise TransientEmbedderError(
                    f"gave up after {attempt} attempts to {self.shown_endpoint}{call.route}: "
                    f"last {failure} (request id {request_id})",
                    attempts=attempt,
                    status=status,
                )
            await self._sleep(delay if delay is not None else backoff_delay(attempt, self._rng))

    def _host(self) -> str:
        parts = urlsplit(self.endpoint)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)

    def _read_quota(self, headers: httpx.Headers) -> None:
        """Follow the service's own quota counters (``x-ratelimit-*``)."""
        limit_requests = ratelimit_header(headers, "x-ratelimit-limit-requests")
        limit_tokens = ratelimit_header(headers, "x-ratelimit-limit-tokens")
        self._pacer.adopt_limits(limit_requests, limit_tokens)
        self._pacer.on_remaining(
            ratelimit_header(headers, "x-ratelimit-remaining-requests"),
            ratelimit_header(headers, "x-ratelimit-remaining-tokens"),
            limit_requests,
            limit_tokens,
        )

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
        if tokens:
            self._pacer.billed(call.tokens, tokens)
            if call.route == "/images/embeddings" and not call.has_text:
                self._learn_tokens(tokens / len(call.inputs))
        applied = body.get("input_type")
        return [
            Embedding(
                vector=vec,
                input_type=applied,
                text_applied=isinstance(item, dict) and "text" in body["input"][i],
            )
            for i, (vec, item) in enumerate(zip(vectors, call.inputs, strict=True))
        ]

    def _learn_tokens(self, per_image: float) -> None:
        """Pace TPM by what the service really bills per image (it grows with pixels)."""
        if self.config.tokens_per_image is not None:
            return
        if not self._learned_tokens:
            self._tokens_per_image = max(1, round(per_image))
            self._learned_tokens = True
        else:
            self._tokens_per_image = max(1, round(0.8 * self._tokens_per_image + 0.2 * per_image))

    def _handle_refusal(
        self, call: _Call, body: dict[str, Any], response: httpx.Response, request_id: str
    ) -> None:
        """Raise the right error for a permanent refusal, or drop an unsupported parameter."""
        status = response.status_code
        err = ServiceError.from_response(response.content)
        said = err.text().lower()
        param = _unsupported_param(err, body) if status in (400, 422) else None
        if param is not None:
            if self.config.on_unsupported == "omit":
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
            raise InputTypeNotSupported(
                f"model {self.config.model} does not support {param} (HTTP {status}: "
                f'{err.text()}); set [embedder] on_unsupported = "omit" to send requests '
                f"without it (request id {request_id})"
            )
        if status == 413 and len(call.inputs) > 1:
            raise _TooLarge
        if status in (400, 413) and len(call.inputs) > 1 and _too_many_inputs(said):
            raise _TooManyInputs(_stated_limit(said, len(call.inputs)))
        raise self._error(response, request_id, err)

    def _error(self, response: httpx.Response, request_id: str, err: ServiceError) -> Exception:
        status = response.status_code
        said = err.text()
        where = f"{self.shown_endpoint} (request id {request_id})"
        if status in (401, 403):
            if self._auth.kind == "key":
                fix = "check AZURE_INFERENCE_CREDENTIAL is the key of this endpoint"
            elif self.endpoint_kind == "managed":
                fix = "check the identity may call this online endpoint (AzureML Data Scientist)"
            else:
                fix = "check the identity has the 'Cognitive Services User' role on the resource"
            if "audience" in said.lower():
                fix = "the token is for another audience: check [embedder] entra_scope"
            return CredentialError(
                f"the service refused the credentials (HTTP {status}: {said}) at {where}: {fix}"
            )
        if err.code == "unknown_model" or "unknown model" in said.lower():
            return ModalityNotSupported(
                f"deployment {self.config.model!r} was not found at {where} "
                f"(HTTP {status}: {said}); {_DEPLOYMENTS_HINT}"
            )
        if err.code == "no_model_name":
            return ModalityNotSupported(
                f"the endpoint needs a deployment name (HTTP {status}: {said}) at {where}; "
                f"{_DEPLOYMENTS_HINT}"
            )
        if status == 404:
            return ModalityNotSupported(
                f"model {self.config.model} does not serve this route (HTTP 404: {said}) at "
                f"{where}; check the endpoint URL (Foundry resources end in /models) and that "
                "the model takes this input"
            )
        if "api version" in said.lower() or "api-version" in said.lower():
            return EmbedderError(
                f"the service refused api-version {self.config.api_version} (HTTP {status}: "
                f'{said}) at {where}; set [embedder] api_version = "2025-04-01"'
            )
        if status == 413 or (status in (400, 422) and _about_the_image(err)):
            return RequestRejected(
                f"the service rejected the image (HTTP {status}: {said}) at {where}",
                status=status,
            )
        return EmbedderError(f"the service refused the request (HTTP {status}: {said}) at {where}")


def _chunks(inputs: list[dict[str, str]], count: int, max_bytes: int) -> list[list[dict[str, str]]]:
    """Split to at most ``count`` inputs and about ``max_bytes`` of JSON per request."""
    budget = max(1, max_bytes - 1024)  # room for the rest of the body
    out: list[list[dict[str, str]]] = []
    current: list[dict[str, str]] = []
    size = 0
    for item in inputs:
        item_size = _size([item])
        if current and (len(current) >= count or size + item_size > budget):
            out.append(current)
            current, size = [], 0
        current.append(item)
        size += item_size
    if current:
        out.append(current)
    return out


def _size(items: list[dict[str, str]]) -> int:
    return sum(len(i.get("image", "")) + len(i.get("text", "")) * 2 + 32 for i in items)


def _about_the_image(err: ServiceError) -> bool:
    said = err.text().lower()
    return err.code.lower() in ("invalid input", "invalidimage") or any(
        word in said for word in ("image", "data uri", "base64", "too large")
    )


def _unsupported_param(err: ServiceError, body: dict[str, Any]) -> str | None:
    """The optional parameter a refusal names, in ``detail.loc`` or in its message; None
    when it names none (then it is not about a parameter at all)."""
    inputs = body.get("input", [])
    has_text = any(isinstance(i, dict) and "text" in i for i in inputs)
    loc = [part.lower() for part in err.loc]
    message = err.message.lower()
    for name in _OPTIONAL_PARAMS:
        present = has_text if name == "text" else name in body
        if not present:
            continue
        if name == "text":
            named = bool(loc) and loc[-1] == "text" and "input" in loc
        else:
            named = name in loc
        if not named and not loc:
            named = f"'{name}'" in message and "support" in message
        if named:
            return name
    return None


def _too_many_inputs(said: str) -> bool:
    return "too many" in said or ("maximum" in said and "input" in said) or "at most" in said


def _stated_limit(said: str, sent: int) -> int:
    numbers = [int(n) for n in re.findall(r"\d+", said)]
    below = [n for n in numbers if 0 < n < sent]
    return min(below) if below else max(1, sent // 2)
