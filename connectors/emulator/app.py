"""The Starlette app: the Foundry Models embeddings routes, under ``/models`` and at the root."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import math
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import numpy as np
from imgrag._errors import RequestRejected
from imgrag.connectors.embedder import ImageInput, InputType
from imgrag.connectors.emulator.faults import InjectedFault
from imgrag.connectors.emulator.inputs import InputProblem, decode_image, image_tokens, text_tokens
from imgrag.connectors.emulator.options import ENTRA_AUDIENCE
from imgrag.connectors.emulator.quota import Throttle
from imgrag.connectors.emulator.state import AuthKind, EmulatorState, RequestRecord
from imgrag.connectors.emulator.wire import (
    EmbeddingItem,
    EmbeddingsResponse,
    ErrorBody,
    ErrorDetail,
    ErrorInfo,
    ImageEmbeddingsRequest,
    ModelInfoOut,
    TextEmbeddingsRequest,
    UsageOut,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_EXTRA_OK = {"drop", "pass-through", "ignore"}
MAX_TEXTS_PER_REQUEST = 96


class ApiError(Exception):
    """An answer other than 200, raised anywhere while serving a request."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        detail: ErrorDetail | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers or {}
        self.body = body
        """A body in another shape than ``{"error": {...}}`` (the service uses several)."""

    def response(self) -> Response:
        if self.body is not None:
            headers = {"x-ms-error-code": self.code, **self.headers}
            return JSONResponse(self.body, self.status, headers=headers)
        body = ErrorBody(
            error=ErrorInfo(
                code=self.code, message=self.message, status=self.status, detail=self.detail
            )
        )
        headers = {"x-ms-error-code": self.code, **self.headers}
        return JSONResponse(body.model_dump(exclude_none=True), self.status, headers=headers)


def _unsupported(param: list[str], value: Any, message: str) -> ApiError:
    """The documented unsupported-parameter answer: flat, naming the parameter in
    ``detail.loc`` (Model Inference API reference, "Extensibility" / error example)."""
    return ApiError(
        422,
        "parameter_not_supported",
        message,
        body={
            "status": 422,
            "code": "parameter_not_supported",
            "detail": {"loc": param, "input": value},
            "message": message,
        },
    )


def invalid_input(message: str) -> ApiError:
    """A refused image, as Foundry answers it: nested, the message itself a JSON string."""
    inner = json.dumps({"message": message})
    return ApiError(
        422,
        "Invalid input",
        inner,
        body={"error": {"code": "Invalid input", "message": inner, "status": 422}},
    )


def _throttled(throttle: Throttle, state: EmulatorState) -> ApiError:
    what = {
        "requests": "requests per minute",
        "tokens": "tokens per minute",
        "concurrency": "concurrent requests",
    }[throttle.reason]
    if not state.options.retry_headers:
        # Some throttles carry no retry header at all, only the wait in the message.
        wait = state.options.message_wait_s
        top = state.options.message_wait_max_s
        if wait is not None and top is not None and top > wait:
            wait = state.random.uniform(wait, top)
        seconds = max(1, math.ceil(throttle.retry_after_s if wait is None else wait))
        return ApiError(429, "429", f"Rate limit is exceeded. Try again in {seconds} seconds.")
    return ApiError(
        429,
        "RateLimitExceeded",
        f"The deployment's limit on {what} was reached; retry after "
        f"{throttle.retry_after_header} seconds.",
        headers={
            "Retry-After": throttle.retry_after_header,
            "retry-after-ms": throttle.retry_after_ms_header,
            "x-ms-retry-after-ms": throttle.retry_after_ms_header,
        },
    )


# --- checks shared by every API route -------------------------------------------------------


_DENIED_KEY = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API endpoint "
    "for your resource."
)


def _denied(message: str) -> ApiError:
    return ApiError(401, "401", message, body={"error": {"code": "401", "message": message}})


def _authenticate(state: EmulatorState, request: Request) -> AuthKind | None:
    """Check the credential the way the endpoint kind does.

    Foundry resources take the key as ``api-key`` or ``Authorization: Bearer``; serverless
    and managed endpoints read only the Bearer header (which is why the azure-ai-inference
    SDK sends both, see its ``_patch.py``). Entra tokens must be issued for the kind's
    audience; serverless endpoints take no Entra tokens.
    """
    options = state.options
    kind = options.endpoint_kind
    key = options.api_key.get_secret_value() if options.api_key else None
    header_key = request.headers.get("api-key")
    bearer = None
    authz = request.headers.get("authorization", "")
    if authz[:7].lower() == "bearer ":
        bearer = authz[7:].strip()
    key_header_read = kind == "foundry" and key and header_key is not None
    if key_header_read and hmac.compare_digest(header_key or "", key or ""):
        return "api-key"
    if key and bearer is not None and hmac.compare_digest(bearer, key):
        return "bearer-key"
    if bearer is not None and kind != "serverless":
        audience = state.token_audience(bearer)
        wanted = ENTRA_AUDIENCE[kind]
        if audience is not None:
            if audience in ("*", wanted):
                return "bearer-token"
            raise _denied(
                "Unauthorized. Access token is missing, invalid, audience is incorrect "
                f"({wanted}), or have expired."
            )
    if not options.auth_required:
        return None
    raise _denied(_DENIED_KEY)


def _api_version(state: EmulatorState, request: Request) -> str:
    version = request.query_params.get("api-version")
    if not version:
        raise ApiError(
            400,
            "MissingApiVersionParameter",
            "The 'api-version' query parameter is required, e.g. ?api-version=2025-04-01.",
        )
    if not _API_VERSION.match(version):
        raise ApiError(
            400,
            "InvalidApiVersionParameter",
            f"api-version {version!r} is not of the form YYYY-MM-DD or YYYY-MM-DD-preview.",
        )
    if version not in state.options.api_versions:
        # What the service answers for a retired or unknown version.
        body = {"error": {"code": "BadRequest", "message": "API version not supported"}}
        raise ApiError(400, "BadRequest", "API version not supported", body=body)
    return version


def _injected_response(fault: InjectedFault) -> Response:
    headers = dict(fault.headers)
    if fault.retry_after is not None:
        headers["Retry-After"] = f"{fault.retry_after:g}"
    if fault.retry_after_ms is not None:
        headers["x-ms-retry-after-ms"] = str(fault.retry_after_ms)
        headers["retry-after-ms"] = str(fault.retry_after_ms)
    if fault.body is not None:
        headers.setdefault("content-type", "application/json")
        return Response(fault.body, fault.status, headers=headers)
    if fault.status < 400:
        raise ValueError("an injected success needs a body")
    err = ApiError(
        fault.status, str(fault.status), f"Injected failure (HTTP {fault.status}).", headers=headers
    )
    return err.response()


# --- embeddings ------------------------------------------------------------------------------


def _encode(vector: np.ndarray, fmt: str) -> list[float] | list[int] | str:
    if fmt == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    if fmt == "int8":
        return np.clip(np.rint(vector * 127), -128, 127).astype(int).tolist()
    if fmt == "uint8":
        return np.clip(np.rint(vector * 127) + 128, 0, 255).astype(int).tolist()
    if fmt in ("binary", "ubinary"):
        packed = np.packbits(vector > 0).astype(int)
        return (packed - 128 if fmt == "binary" else packed).tolist()
    return [float(x) for x in vector.astype(np.float32)]


def _fit(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Truncate or zero-pad to the requested length and re-normalize."""
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    if dimensions < vectors.shape[1]:
        out = vectors[:, :dimensions]
    else:
        out = np.pad(vectors, ((0, 0), (0, dimensions - vectors.shape[1])))
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1.0, norms)


def check_deployment(state: EmulatorState, name: str | None) -> None:
    """``model`` names a deployment. A Foundry resource serves many, so it must be given;
    serverless and managed endpoints serve one model and do not route by it."""
    if state.options.endpoint_kind != "foundry":
        return
    if name is None:
        if state.options.endpoint_kind == "foundry" and len(state.options.deployment_names) > 1:
            raise ApiError(
                400,
                "no_model_name",
                "No model specified in request. Please provide a model name in the request "
                "body or as a x-ms-model-mesh-model-name header.",
            )
        return
    if name not in state.options.deployment_names:
        raise ApiError(
            404,
            "unknown_model",
            f"Unknown model: {name}",
            body={
                "error": {
                    "code": "unknown_model",
                    "message": f"Unknown model: {name}",
                    "details": f"Model {name} is not deployed on this resource.",
                }
            },
        )


def _parse(model: type[BaseModel], raw: bytes) -> Any:
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "BadRequest", "The request body is not valid JSON.") from None
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise ApiError(
            400,
            "BadRequest",
            f"Invalid request body: {where}: {err['msg']}.",
            detail=ErrorDetail(loc=["body", *map(str, err["loc"])], value=err.get("input")),
        ) from None


class _Embedder:
    """Serves one embeddings request against the state's profile and backend."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def check_common(
        self,
        body: ImageEmbeddingsRequest | TextEmbeddingsRequest,
        request: Request,
        record: RequestRecord,
    ) -> None:
        profile = self.state.profile
        record.model = body.model
        record.input_type = body.input_type
        record.dimensions = body.dimensions
        record.encoding_format = body.encoding_format
        if (
            body.extra_fields
            and request.headers.get("extra-parameters", "").lower() not in _EXTRA_OK
        ):
            raise ApiError(
                400,
                "BadRequest",
                f"Extra parameters {body.extra_fields} are not allowed unless the "
                "'extra-parameters' header is 'drop' or 'pass-through'.",
            )
        check_deployment(self.state, body.model)
        if body.input_type is not None and not profile.supports_input_type:
            raise _unsupported(
                ["body", "input_type"],
                body.input_type,
                f"The model {profile.name} does not support the parameter 'input_type'.",
            )
        if body.dimensions is not None:
            if len(profile.allowed_dimensions) <= 1:
                raise _unsupported(
                    ["body", "dimensions"],
                    body.dimensions,
                    f"The model {profile.name} does not support the parameter 'dimensions'.",
                )
            if body.dimensions not in profile.allowed_dimensions:
                allowed = ", ".join(map(str, profile.allowed_dimensions))
                raise _unsupported(
                    ["body", "dimensions"],
                    body.dimensions,
                    f"dimensions={body.dimensions} is not supported by "
                    f"{profile.name}; use one of {allowed}.",
                )

    async def images(self, body: ImageEmbeddingsRequest) -> tuple[np.ndarray, int]:
        profile = self.state.profile
        if len(body.input) > profile.max_images_per_request:
            raise ApiError(
                400,
                "BadRequest",
                f"Too many inputs: {len(body.input)} images were sent; {profile.name} accepts "
                f"at most {profile.max_images_per_request} per request.",
            )
        for i, item in enumerate(body.input):
            if item.text is not None and not profile.supports_image_text:
                raise _unsupported(
                    ["body", "input", str(i), "text"],
                    item.text,
                    f"The model {profile.name} does not support 'text' together with an image.",
                )
        limit = self.state.max_image_bytes

        def decode_all() -> list[tuple[ImageInput, int]]:
            return [decode_image(i, it.image, it.text, limit) for i, it in enumerate(body.input)]

        try:
            decoded = await asyncio.to_thread(decode_all)
        except InputProblem as exc:
            raise invalid_input(str(exc)) from None
        items = [item for item, _ in decoded]
        tokens = sum(
            image_tokens(pixels, profile.tokens_per_image, profile.pixel_priced)
            + (text_tokens(item.text) if item.text else 0)
            for item, pixels in decoded
        )
        return await self._admit_and_embed(tokens, lambda: self._embed_images(items, body))

    async def texts(self, body: TextEmbeddingsRequest) -> tuple[np.ndarray, int]:
        texts = body.texts
        if not texts:
            raise ApiError(400, "BadRequest", "'input' must contain at least one text.")
        if len(texts) > MAX_TEXTS_PER_REQUEST:
            raise ApiError(
                400,
                "BadRequest",
                f"Too many inputs: {len(texts)} texts were sent; "
                f"at most {MAX_TEXTS_PER_REQUEST} per request.",
            )
        tokens = sum(text_tokens(t) for t in texts)

        async def run() -> np.ndarray:
            found = await self.state.backend.embed_texts(texts, self._input_type(body))
            return np.asarray([e.vector for e in found], dtype=np.float32)

        return await self._admit_and_embed(tokens, run)

    async def _admit_and_embed(self, tokens: int, run: Any) -> tuple[np.ndarray, int]:
        state = self.state
        options = state.options
        throttle = state.quota.admit(tokens, options.rpm, options.tpm, options.rate_windows)
        if throttle is not None:
            raise _throttled(throttle, state)
        await state.pass_gate()
        delay = state.random.latency_s(state.options.latency_ms, state.options.jitter)
        if delay:
            await asyncio.sleep(delay)  # simulated service time
        failure = state.random.failure(state.options.fail_rate)
        if failure is not None:
            code = "InternalServerError" if failure == 500 else "ServiceUnavailable"
            raise ApiError(failure, code, f"Simulated transient failure (HTTP {failure}).")
        try:
            vectors = await run()
        except RequestRejected as exc:
            raise ApiError(exc.status or 400, "BadRequest", str(exc)) from None
        return vectors, tokens

    @staticmethod
    def _input_type(body: ImageEmbeddingsRequest | TextEmbeddingsRequest) -> InputType:
        return body.input_type or "document"

    async def _embed_images(
        self, items: Sequence[ImageInput], body: ImageEmbeddingsRequest
    ) -> np.ndarray:
        backend = self.state.backend
        input_type = self._input_type(body)
        if backend.info.supports_image_text or not any(it.text for it in items):
            found = await backend.embed_images(items, input_type)
            return np.asarray([e.vector for e in found], dtype=np.float32)
        # The backend cannot fuse: embed both sides and add them, as the fused models do.
        bare = [ImageInput(it.data, it.mime) for it in items]
        images = np.asarray(
            [e.vector for e in await backend.embed_images(bare, input_type)], dtype=np.float32
        )
        captioned = [i for i, it in enumerate(items) if it.text]
        texts = await backend.embed_texts([items[i].text or "" for i in captioned], input_type)
        for i, emb in zip(captioned, texts, strict=True):
            fused = images[i] + np.asarray(emb.vector, dtype=np.float32)
            images[i] = fused / (np.linalg.norm(fused) or 1.0)
        return images


# --- routes ----------------------------------------------------------------------------------


def _state(request: Request) -> EmulatorState:
    return request.app.state.emulator


def _new_record(request: Request, route: Literal["images", "texts", "info"]) -> RequestRecord:
    return RequestRecord(
        route=route,
        path=request.url.path,
        request_id=str(uuid.uuid4()),
        api_version=request.query_params.get("api-version"),
        user_agent=request.headers.get("user-agent"),
        client_request_id=request.headers.get("x-ms-client-request-id"),
    )


def _finish(state: EmulatorState, record: RequestRecord, response: Response) -> Response:
    response.headers["apim-request-id"] = record.request_id
    response.headers["x-request-id"] = record.request_id
    if record.client_request_id:
        response.headers["x-ms-client-request-id"] = record.client_request_id
    rpm, tpm = state.options.rpm, state.options.tpm
    if not state.options.ratelimit_headers:
        rpm = tpm = 0  # enforced, not reported
    left_requests, left_tokens = state.quota.remaining(rpm, tpm)
    if left_requests is not None:
        response.headers["x-ratelimit-limit-requests"] = str(rpm)
        response.headers["x-ratelimit-remaining-requests"] = str(left_requests)
    if left_tokens is not None:
        response.headers["x-ratelimit-limit-tokens"] = str(tpm)
        response.headers["x-ratelimit-remaining-tokens"] = str(left_tokens)
    record.status = response.status_code
    if response.status_code >= 400:
        record.error_code = response.headers.get("x-ms-error-code")
    state.notify()
    return response


async def _embeddings(request: Request, route: Literal["images", "texts"]) -> Response:
    state = _state(request)
    record = _new_record(request, route)
    state.log(record)
    ticket: int | None = None
    try:
        record.auth = _authenticate(state, request)
        _api_version(state, request)
        fault = state.faults.pop()
        if fault is not None:
            return _finish(state, record, _injected_response(fault))
        if route == "texts" and state.options.image_only:
            raise ApiError(
                404,
                "NotFound",
                f"The model {state.profile.name} does not support the text modality "
                "on this deployment; use /images/embeddings.",
            )
        entered = state.quota.enter(state.options.max_concurrency, state.options.latency_ms / 1000)
        if isinstance(entered, Throttle):
            raise _throttled(entered, state)
        ticket = entered
        state.notify()
        cap = state.max_request_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _too_large(int(declared), cap)
        raw = await request.body()
        if len(raw) > cap:
            raise _too_large(len(raw), cap)
        serve = _Embedder(state)
        if route == "images":
            body = _parse(ImageEmbeddingsRequest, raw)
            record.inputs = len(body.input)
            record.text_inputs = [i for i, it in enumerate(body.input) if it.text is not None]
            serve.check_common(body, request, record)
            vectors, tokens = await serve.images(body)
        else:
            body = _parse(TextEmbeddingsRequest, raw)
            record.inputs = len(body.texts)
            serve.check_common(body, request, record)
            vectors, tokens = await serve.texts(body)
        record.tokens = tokens
        vectors = _fit(vectors, body.dimensions)
        fmt = body.encoding_format or "float"
        answer = EmbeddingsResponse(
            id=record.request_id,
            model=state.profile.name,
            data=[EmbeddingItem(index=i, embedding=_encode(v, fmt)) for i, v in enumerate(vectors)],
            usage=UsageOut(prompt_tokens=tokens, total_tokens=tokens),
        )
        return _finish(state, record, JSONResponse(answer.model_dump()))
    except ApiError as exc:
        return _finish(state, record, exc.response())
    except Exception as exc:  # a backend bug still gets the service's error shape and a log line
        log.exception("emulator request %s failed", record.request_id)
        error = ApiError(500, "InternalServerError", f"Internal error: {type(exc).__name__}.")
        return _finish(state, record, error.response())
    finally:
        if ticket is not None:
            state.quota.leave(ticket)
            state.notify()


def _too_large(size: int, cap: int) -> ApiError:
    return ApiError(
        413,
        "RequestEntityTooLarge",
        f"The request body is {size} bytes; requests may be at most {cap} bytes.",
    )


async def images_embeddings(request: Request) -> Response:
    return await _embeddings(request, "images")


async def text_embeddings(request: Request) -> Response:
    return await _embeddings(request, "texts")


def model_info(state: EmulatorState) -> ModelInfoOut:
    """What ``GET /info`` answers, including how the emulator differs from the real model."""
    profile = state.profile
    return ModelInfoOut(
        model_name=profile.name,
        model_provider_name=profile.provider,
        emulator={
            "backend": state.backend_name,
            "dimension": state.dimension,
            "profile_dimension": profile.dimension,
            "dimension_note": state.dimension_note,
            "allowed_dimensions": list(profile.allowed_dimensions),
            "max_images_per_request": profile.max_images_per_request,
            "supports_input_type": profile.supports_input_type,
            "supports_image_text": profile.supports_image_text,
            "supports_text": not state.options.image_only,
            "tokens_per_image": profile.tokens_per_image,
            "max_image_bytes": state.max_image_bytes,
            "max_request_bytes": state.max_request_bytes,
            "endpoint_kind": state.options.endpoint_kind,
            "deployments": state.options.deployment_names,
        },
    )


async def info(request: Request) -> Response:
    state = _state(request)
    record = _new_record(request, "info")
    state.log(record)
    try:
        record.auth = _authenticate(state, request)
        _api_version(state, request)
        record.model = request.query_params.get("model")
        check_deployment(state, record.model)
        return _finish(state, record, JSONResponse(model_info(state).model_dump()))
    except ApiError as exc:
        return _finish(state, record, exc.response())


# --- admin -----------------------------------------------------------------------------------


class InjectSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: int = Field(ge=100, le=599)
    count: int = Field(default=1, ge=1)
    retry_after: float | None = Field(default=None, ge=0)
    retry_after_ms: int | None = Field(default=None, ge=0)


class FaultsUpdate(BaseModel):
    """Body of ``POST /_emulator/faults``: every field optional, applied in place."""

    model_config = ConfigDict(extra="forbid")

    fail_rate: float | None = Field(default=None, ge=0, le=1)
    latency_ms: float | None = Field(default=None, ge=0)
    rpm: int | None = Field(default=None, ge=0)
    tpm: int | None = Field(default=None, ge=0)
    max_concurrency: int | None = Field(default=None, ge=0)
    inject: InjectSpec | None = None
    clear: bool = False
    """Drop scripted faults not yet consumed."""


def _admin_auth(request: Request) -> None:
    _authenticate(_state(request), request)


async def admin_faults(request: Request) -> Response:
    state = _state(request)
    try:
        _admin_auth(request)
        update = _parse(FaultsUpdate, await request.body())
    except ApiError as exc:
        return exc.response()
    if update.clear:
        state.faults.clear()
    for name in ("fail_rate", "latency_ms", "rpm", "tpm", "max_concurrency"):
        value = getattr(update, name)
        if value is not None:
            setattr(state.options, name, value)
    if update.inject is not None:
        spec = update.inject
        state.inject(
            spec.status,
            spec.count,
            retry_after=spec.retry_after,
            retry_after_ms=spec.retry_after_ms,
        )
    return JSONResponse(
        {
            "fail_rate": state.options.fail_rate,
            "latency_ms": state.options.latency_ms,
            "rpm": state.options.rpm,
            "tpm": state.options.tpm,
            "max_concurrency": state.options.max_concurrency,
            "pending_faults": len(state.faults),
        }
    )


async def admin_requests(request: Request) -> Response:
    state = _state(request)
    try:
        _admin_auth(request)
    except ApiError as exc:
        return exc.response()
    return JSONResponse([r.model_dump() for r in list(state.requests)])


async def admin_reset(request: Request) -> Response:
    state = _state(request)
    try:
        _admin_auth(request)
    except ApiError as exc:
        return exc.response()
    state.reset()
    return JSONResponse({"reset": True})


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = "Resource not found." if status == 404 else "Method not allowed."
    code = "NotFound" if status == 404 else str(status)
    return ApiError(status, code, message).response()


def create_app(state: EmulatorState) -> Starlette:
    """The ASGI app for one emulator state; the caller owns (and closes) the backend."""
    routes: list[Route] = []
    for prefix in ("/models", ""):
        routes += [
            Route(f"{prefix}/images/embeddings", images_embeddings, methods=["POST"]),
            Route(f"{prefix}/embeddings", text_embeddings, methods=["POST"]),
            Route(f"{prefix}/info", info, methods=["GET"]),
        ]
    routes += [
        Route("/_emulator/faults", admin_faults, methods=["POST"]),
        Route("/_emulator/requests", admin_requests, methods=["GET"]),
        Route("/_emulator/reset", admin_reset, methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        state.release()  # never leave held requests behind on shutdown

    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={404: _http_error, 405: _http_error}
    )
    app.state.emulator = state
    return app
