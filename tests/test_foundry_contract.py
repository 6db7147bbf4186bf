"""The Foundry client against Microsoft's published contract, over real HTTP to the emulator.

Sources for the contract (each test names the ones it relies on):
- [SPEC] Azure AI Model Inference REST reference (learn.microsoft.com/rest/api/aifoundry/
  modelinference): routes, ``api-version=2025-04-01``, the flat 422 with ``detail.loc``.
- [LIFECYCLE] the Model Inference API version lifecycle: ``2024-05-01-preview`` deprecated
  2025-04-10, retired 2026-04-10; GA is ``2025-04-01``.
- [SDK] azure-sdk-for-python, sdk/ai/azure-ai-inference/azure/ai/inference/_patch.py: "For Key
  auth, we need to send these two auth HTTP request headers simultaneously" (Bearer for
  serverless / managed compute, api-key for Foundry resources); ``load_client`` accepts
  Cohere's ``model_type`` "embedding".
- [429-MSG] Azure-Samples/azure-search-openai-demo#177 ("Rate limit is exceeded. Try again in
  30 seconds."), openai/openai-node#1108 ("Please retry after 33 seconds"), and
  openai/openai-dotnet#838 (429 without ``retry-after``; ``x-ratelimit-*`` of -1).
- [COHERE] Cohere embed docs (cohere-ai/cohere-developer-experience#375): images as data URLs,
  up to 5 MB each; about 20 MB per request; v4 bills images by pixels.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from imgrag import (
    CredentialError,
    EmbedderError,
    InputTypeNotSupported,
    ModalityNotSupported,
    RequestRejected,
    TransientEmbedderError,
)
from imgrag.connectors.config import EmbedderConfig
from imgrag.connectors.embedder import ImageInput
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.connectors.emulator.server import running_emulator
from imgrag.connectors.foundry import FoundryEmbedder
from imgrag.connectors.foundry.endpoint import resolve
from imgrag.connectors.tiny import TinyEmbedder
from PIL import Image
from pydantic import SecretStr

from tests.foundry_helpers import EmulatorIdentity, FakeTime, images

KEY = "sk-contract-5b1d-never-printed"


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture(scope="module")
def foundry() -> Iterator[EmulatorHandle]:
    with running_emulator(api_key=SecretStr(KEY), backend="tiny") as handle:
        yield handle


@pytest.fixture(scope="module")
def v4_alias() -> Iterator[EmulatorHandle]:
    """An embed-v-4-0 deployment named ``photos-embedder``: deployment name != model."""
    with running_emulator(
        api_key=SecretStr(KEY),
        backend="tiny",
        model="embed-v-4-0",
        deployments=["photos-embedder"],
    ) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    for name in ("foundry", "v4_alias"):
        if name in request.fixturenames:
            handle = request.getfixturevalue(name)
            handle.state.reset()
            handle.state.options.rpm = 0
            handle.state.options.tpm = 0


def serve(**options: Any) -> Any:
    """An emulator for async tests: its tiny backend is owned here (no event loop to close it)."""
    return running_emulator(embedder=TinyEmbedder(dimension=1024), **options)


def make(
    handle: EmulatorHandle, fake_time: FakeTime | None = None, **fields: Any
) -> FoundryEmbedder:
    values: dict[str, Any] = {
        "provider": "foundry",
        "endpoint": handle.url,
        "api_key": SecretStr(KEY),
        "max_attempts": 3,
    }
    values.update(fields)
    if fake_time is None:
        return FoundryEmbedder(EmbedderConfig(**values))
    return FoundryEmbedder(
        EmbedderConfig(**values),
        clock=fake_time.clock,
        wall_clock=fake_time.wall_clock,
        sleep=fake_time.sleep,
    )


def posts(handle: EmulatorHandle) -> list[Any]:
    return [r for r in handle.state.requests if r.route in ("images", "texts")]


def png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 140, 200)).save(buf, format="PNG")
    return buf.getvalue()


# -- 1. api-version ---------------------------------------------------------------------------


async def test_default_api_version_is_the_ga_one_and_a_retired_one_is_one_clear_line(
    foundry: EmulatorHandle,
) -> None:
    """[LIFECYCLE]: 2024-05-01-preview is retired; the emulator refuses it as the service does
    (400 "API version not supported"), and the client's default is 2025-04-01."""
    emb = make(foundry)
    await emb.embed_images(images(1), "document")
    assert [r.api_version for r in posts(foundry)] == ["2025-04-01"]
    old = make(foundry, api_version="2024-05-01-preview")
    with pytest.raises(EmbedderError) as info:
        await old.embed_images(images(1), "document")
    message = str(info.value)
    assert "2024-05-01-preview" in message and 'api_version = "2025-04-01"' in message
    assert not isinstance(info.value, RequestRejected)  # not one file's fault
    await emb.aclose()
    await old.aclose()


# -- 2. key headers and endpoint kinds ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["serverless", "managed"])
async def test_key_reaches_serverless_and_managed_endpoints_as_bearer(kind: str) -> None:
    """[SDK]: serverless and managed compute read only ``Authorization: Bearer <key>``."""
    with serve(api_key=SecretStr(KEY), endpoint_kind=kind) as h:
        emb = make(h, endpoint=h.root_url, endpoint_kind=kind)
        out = await emb.embed_images(images(1), "document")
        await emb.aclose()
        assert len(out) == 1
        assert [r.auth for r in posts(h)] == ["bearer-key"]


def test_endpoint_kind_from_the_host_and_models_suffix() -> None:
    """Foundry resources get ``/models``; serverless and managed endpoints are kept as given."""
    cases = {
        "https://r.services.ai.azure.com": ("foundry", "https://r.services.ai.azure.com/models"),
        "https://r.cognitiveservices.azure.com/": (
            "foundry",
            "https://r.cognitiveservices.azure.com/models",
        ),
        "https://m.eastus2.models.ai.azure.com": (
            "serverless",
            "https://m.eastus2.models.ai.azure.com",
        ),
        "https://e.westeurope.inference.ml.azure.com": (
            "managed",
            "https://e.westeurope.inference.ml.azure.com",
        ),
    }
    for given, (kind, url) in cases.items():
        found = resolve(given)
        assert (found.kind, found.url) == (kind, url)


# -- 6. Entra scope by endpoint kind --------------------------------------------------------------


async def test_entra_scope_follows_the_endpoint_kind() -> None:
    """Managed online endpoints take tokens for https://ml.azure.com; the emulator checks the
    audience, so a cognitiveservices token is refused there."""
    with serve(api_key=SecretStr(KEY), endpoint_kind="managed", require_auth=True) as h:
        identity = EmulatorIdentity(h.state)
        config = EmbedderConfig(
            provider="foundry", endpoint=h.root_url, endpoint_kind="managed", auth="entra"
        )
        emb = FoundryEmbedder(config, credential=identity)
        assert len(await emb.embed_images(images(1), "document")) == 1
        await emb.aclose()
        assert identity.scopes == ["https://ml.azure.com/.default"]
        assert posts(h)[-1].auth == "bearer-token"
        # An explicit scope still wins, and a wrong audience is named as such.
        wrong = FoundryEmbedder(
            config.model_copy(
                update={"entra_scope": "https://cognitiveservices.azure.com/.default"}
            ),
            credential=EmulatorIdentity(h.state),
        )
        with pytest.raises(CredentialError, match="audience"):
            await wrong.embed_images(images(1), "document")
        await wrong.aclose()


def test_serverless_with_entra_is_one_line_before_any_request() -> None:
    config = EmbedderConfig(
        provider="foundry", endpoint="https://m.eastus2.models.ai.azure.com", auth="entra"
    )
    with pytest.raises(CredentialError, match='auth = "key"') as info:
        FoundryEmbedder(config, credential=object())
    assert "\n" not in str(info.value)


# -- 5. deployment name != model name -------------------------------------------------------------


async def test_deployment_name_is_sent_and_the_family_comes_from_info(
    v4_alias: EmulatorHandle,
) -> None:
    """``model`` is the deployment; ``GET /info?model=<deployment>`` names the model, whose
    limits (96 images per request for embed-v-4-0) then apply."""
    emb = make(v4_alias, model="photos-embedder")
    assert emb.max_images_per_request == 1  # nothing known before asking
    info = await emb.probe()
    assert emb.family == "embed-v-4-0" and info.max_images_per_request == 96
    [asked] = [r for r in v4_alias.state.requests if r.route == "info"]
    assert asked.model == "photos-embedder"
    await emb.embed_images(images(5), "document")
    assert [r.inputs for r in posts(v4_alias)][-1] == 5
    assert {r.model for r in posts(v4_alias)} == {"photos-embedder"}
    await emb.aclose()


async def test_unknown_deployment_is_one_line_naming_it(v4_alias: EmulatorHandle) -> None:
    emb = make(v4_alias, model="embed-v-4-0")  # the model's name, not the deployment's
    with pytest.raises(ModalityNotSupported) as info:
        await emb.probe()
    message = str(info.value)
    assert "'embed-v-4-0' was not found" in message and "deployment name" in message
    assert "ends in /models" not in message  # not the old advice about the URL
    await emb.aclose()


async def test_family_override_wins(v4_alias: EmulatorHandle) -> None:
    emb = make(v4_alias, model="photos-embedder", family="embed-v-4-0")
    assert emb.max_images_per_request == 96
    await emb.aclose()


# -- 3. errors are read from the body ------------------------------------------------------------


@pytest.mark.parametrize("on_unsupported", ["error", "omit"])
async def test_a_bad_image_is_that_files_rejection_not_an_unsupported_parameter(
    foundry: EmulatorHandle, on_unsupported: str
) -> None:
    """A bad data URL comes back as the nested 422 ``Invalid input`` whose message is itself
    JSON. It is the file's rejection (RequestRejected, journaled per file by ingest), and
    ``input_type`` keeps being sent."""
    emb = make(foundry, on_unsupported=on_unsupported)
    with pytest.raises(RequestRejected) as info:
        await emb.embed_images([ImageInput(b"these bytes are no image", "image/png")], "document")
    assert info.value.status == 422 and "could not be decoded" in str(info.value)
    assert not isinstance(info.value, InputTypeNotSupported)
    await emb.embed_images(images(1), "query")
    assert [r.input_type for r in posts(foundry)] == ["document", "query"]
    await emb.aclose()


async def test_unsupported_parameter_is_read_from_detail_loc(fake_time: FakeTime) -> None:
    """[SPEC]: the unsupported-parameter 422 is flat and names the parameter in ``detail.loc``."""
    with serve(api_key=SecretStr(KEY), model="emulator-no-input-type") as h:
        emb = make(h, fake_time, model="emulator-no-input-type", on_unsupported="omit")
        await emb.embed_images(images(1), "document")
        assert [(r.status, r.input_type) for r in posts(h)] == [(422, "document"), (200, None)]
        assert h.state.requests[0].error_code == "parameter_not_supported"
        await emb.aclose()


async def test_other_refusals_quote_the_service(foundry: EmulatorHandle) -> None:
    body = {"error": {"code": "content_filter", "message": "The request was filtered."}}
    foundry.state.inject(400, body=json.dumps(body).encode())
    emb = make(foundry)
    with pytest.raises(EmbedderError, match="content_filter: The request was filtered"):
        await emb.embed_images(images(1), "document")
    await emb.aclose()


# -- 4. throttling ------------------------------------------------------------------------------


def _message_only_429(seconds: int) -> bytes:
    return json.dumps(
        {
            "error": {
                "code": "429",
                "message": f"Rate limit is exceeded. Try again in {seconds} seconds.",
            }
        }
    ).encode()


async def test_429_without_retry_headers_waits_the_time_named_in_the_message(
    foundry: EmulatorHandle, fake_time: FakeTime
) -> None:
    """[429-MSG]: some 429s carry no Retry-After, only the wait in the message."""
    foundry.state.inject(429, body=_message_only_429(30))
    emb = make(foundry, fake_time)
    assert len(await emb.embed_images(images(1), "document")) == 1
    assert fake_time.sleeps == [pytest.approx(30.0)]
    await emb.aclose()


async def test_a_sustained_throttle_never_fails_the_file_within_the_budget(
    foundry: EmulatorHandle, fake_time: FakeTime
) -> None:
    """Twenty 429s in a row (more than max_attempts) are waited out; past the throttle budget
    the error says so and is transient (the file is retried later, not failed)."""
    foundry.state.inject(429, count=20, body=_message_only_429(20))
    emb = make(foundry, fake_time, max_attempts=3)
    assert len(await emb.embed_images(images(1), "document")) == 1
    assert emb.usage.throttled == 20
    foundry.state.inject(429, count=20, body=_message_only_429(40))
    short = make(foundry, fake_time, throttle_budget_seconds=100)
    with pytest.raises(TransientEmbedderError, match="throttle_budget_seconds"):
        await short.embed_images(images(1), "document")
    await emb.aclose()
    await short.aclose()


async def test_the_client_slows_down_when_the_service_says_the_quota_is_spent(
    foundry: EmulatorHandle, fake_time: FakeTime
) -> None:
    """``x-ratelimit-remaining-tokens`` can go below zero [429-MSG: openai-dotnet#838]; the
    next request then waits for the overdraft to flow back instead of drawing a 429."""
    foundry.state.options.tpm = 1500  # 1,000 tokens per v3 image: the 2nd request overdraws
    emb = make(foundry, fake_time)
    await emb.embed_images(images(1), "document")
    await emb.embed_images(images(1), "document")
    assert fake_time.sleeps == []
    foundry.state.quota.reset()  # the emulator's own minute has passed (real time)
    await emb.embed_images(images(1), "document")
    assert fake_time.sleeps and fake_time.sleeps[0] >= 20.0
    assert [r.status for r in posts(foundry)] == [200, 200, 200]
    await emb.aclose()


# -- 8. pacing inside the service's 1 s and 10 s windows -------------------------------------------


async def test_requests_are_spread_inside_the_one_second_window(foundry: EmulatorHandle) -> None:
    """The service evaluates RPM over 1 s and 10 s windows. At 120 RPM the emulator allows
    two requests per second; a burst of ten seconds' quota would draw 429s."""
    foundry.state.options.rpm = 120
    emb = make(foundry, requests_per_minute=120, max_concurrency=8)
    out = await emb.embed_images(images(8), "document")
    await emb.aclose()
    assert len(out) == 8
    statuses = [r.status for r in posts(foundry)]
    # Evenly spaced, at most one request is unlucky with timing on a loaded machine; a burst
    # (what a ten-second bucket sends) has most of the eight refused.
    assert statuses.count(200) == 8 and statuses.count(429) <= 1


# -- 7. v4 payloads --------------------------------------------------------------------------------


async def test_v4_batches_by_bytes_and_splits_on_413(v4_alias: EmulatorHandle) -> None:
    """[COHERE]: about 20 MB per request. Requests are cut by bytes as well as by count, and a
    413 for several images splits them instead of failing them."""
    pictures = [ImageInput(png((64 + i, 64))) for i in range(6)]
    one = len(pictures[0].data) * 4 // 3 + 64
    v4_alias.state.options.max_request_bytes = 3 * one + 200  # about three images fit
    emb = make(v4_alias, model="photos-embedder", family="embed-v-4-0")
    out = await emb.embed_images(pictures, "document")
    assert len(out) == 6
    seen = [(r.status, r.inputs) for r in posts(v4_alias)]
    assert seen[0][0] == 413 and all(s == 200 for s, _ in seen[1:])
    assert sum(n for _, n in seen[1:]) == 6
    v4_alias.state.reset()
    capped = make(
        v4_alias, model="photos-embedder", family="embed-v-4-0", max_request_bytes=2 * one + 1100
    )
    await capped.embed_images(pictures, "document")
    assert [r.inputs for r in posts(v4_alias)] == [2, 2, 2]
    v4_alias.state.options.max_request_bytes = None
    await emb.aclose()
    await capped.aclose()


async def test_tokens_per_image_are_learned_from_usage(v4_alias: EmulatorHandle) -> None:
    """[COHERE]: v4 bills images by pixels (about 1,610 tokens at 512x512), so TPM pacing
    follows ``usage.prompt_tokens`` rather than a fixed 1,000."""
    emb = make(v4_alias, model="photos-embedder", family="embed-v-4-0")
    await emb.embed_images([ImageInput(png((1024, 1024)))], "document")
    assert emb.info.tokens_per_image == 4 * 1610
    assert posts(v4_alias)[-1].tokens == 4 * 1610
    await emb.aclose()


# -- credentials in the endpoint URL -----------------------------------------------------------


async def test_credentials_in_the_endpoint_url_never_print(
    foundry: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """Errors, reprs and logs (httpx logs each request URL at INFO) show the URL without
    its userinfo."""
    caplog.set_level(logging.DEBUG)
    url = foundry.url.replace("http://", "http://user:hunter2-url-secret@")
    emb = make(foundry, endpoint=url, api_key=SecretStr("wrong-key"))
    with pytest.raises(CredentialError) as info:
        await emb.embed_images(images(1), "document")
    assert "hunter2" not in str(info.value) and "hunter2" not in repr(emb)
    assert foundry.url in str(info.value)
    assert "hunter2" not in caplog.text and "HTTP Request" in caplog.text
    await emb.aclose()


async def test_a_model_not_in_the_catalog_starts_from_safe_defaults(
    foundry: EmulatorHandle,
) -> None:
    """Nothing known about the family: one image per request, the 20 MB cap, 1,000 tokens."""
    emb = make(foundry, model="Cohere-embed-v3-english", family="some-future-model")
    emb2 = make(foundry, model="my-deployment")
    for e in (emb, emb2):
        assert (e.max_images_per_request, e.max_request_bytes) == (1, 20_000_000)
        assert e.info.tokens_per_image == 1000
    assert len(await emb.embed_images(images(2), "document")) == 2
    await emb.aclose()
    await emb2.aclose()
