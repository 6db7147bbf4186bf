"""The Foundry client against the emulator over real HTTP on loopback."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
from imgrag import (
    ConnectorError,
    CredentialError,
    InputTypeNotSupported,
    MalformedResponse,
    TransientEmbedderError,
)
from imgrag.connectors.config import EmbedderConfig
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.connectors.emulator.options import EmulatorOptions
from imgrag.connectors.emulator.server import running_emulator
from imgrag.connectors.foundry import FoundryEmbedder, normalize_endpoint
from imgrag.connectors.foundry.retry import server_delay
from pydantic import SecretStr

from tests.conftest import EMULATOR_KEY
from tests.foundry_helpers import FakeTime, TokenIssuer, images

KEY = EMULATOR_KEY  # the shared emulators take this key; the no-logging check scans for it


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def client(handle: object, fake_time: FakeTime, **overrides: object) -> FoundryEmbedder:
    fields: dict[str, object] = {
        "provider": "foundry",
        "endpoint": handle.url,  # type: ignore[attr-defined]
        "api_key": SecretStr(KEY),
        "max_attempts": 4,
    }
    fields.update(overrides)
    return FoundryEmbedder(
        EmbedderConfig(**fields),  # type: ignore[arg-type]
        clock=fake_time.clock,
        wall_clock=fake_time.wall_clock,
        sleep=fake_time.sleep,
    )


def embed_requests(handle: object) -> list[object]:
    return [r for r in handle.state.requests if r.route in ("images", "texts")]  # type: ignore[attr-defined]


# -- auth -----------------------------------------------------------------------------------


async def test_key_auth_gets_normalized_vectors(
    emulator: EmulatorHandle, fake_time: FakeTime
) -> None:
    emb = client(emulator, fake_time, model="Cohere-embed-v3-english")
    out = await emb.embed_images(images(2), "document")
    await emb.aclose()
    assert len(out) == 2
    assert all(len(e.vector) == emb.info.dimension for e in out)
    assert out[0].vector != out[1].vector
    assert [r.auth for r in embed_requests(emulator)] == ["api-key", "api-key"]
    assert emb.usage.images == 2 and emb.usage.tokens == 2000


async def test_wrong_key_is_a_credential_error_without_the_key(
    emulator: EmulatorHandle, fake_time: FakeTime
) -> None:
    wrong = "sk-wrong-5b1d-never-print"
    emb = client(emulator, fake_time, api_key=SecretStr(wrong))
    with pytest.raises(CredentialError) as info:
        await emb.embed_images(images(1), "document")
    await emb.aclose()
    assert "401" in str(info.value) and "AZURE_INFERENCE_CREDENTIAL" in str(info.value)
    assert wrong not in str(info.value) and wrong not in repr(emb)


async def test_missing_key_fails_before_any_request(emulator: EmulatorHandle) -> None:
    with pytest.raises(CredentialError, match="AZURE_INFERENCE_CREDENTIAL"):
        FoundryEmbedder(EmbedderConfig(provider="foundry", endpoint=emulator.url))  # type: ignore[attr-defined]
    assert embed_requests(emulator) == []


def test_missing_endpoint_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_INFERENCE_ENDPOINT", raising=False)
    with pytest.raises(ConnectorError, match="AZURE_INFERENCE_ENDPOINT"):
        FoundryEmbedder(EmbedderConfig(provider="foundry", api_key=SecretStr(KEY)))


def test_endpoint_forms() -> None:
    assert (
        normalize_endpoint("https://res.services.ai.azure.com/")
        == "https://res.services.ai.azure.com/models"
    )
    assert normalize_endpoint("http://127.0.0.1:9/models/") == "http://127.0.0.1:9/models"
    with pytest.raises(ConnectorError, match="not a URL"):
        normalize_endpoint("res.services.ai.azure.com")


@pytest.fixture(scope="module")
def entra() -> Iterator[object]:
    with running_emulator(EmulatorOptions(port=0, backend="tiny", require_auth=True)) as handle:
        yield handle


async def test_entra_token_cached_refreshed_near_expiry_and_after_401(
    entra: object, fake_time: FakeTime
) -> None:
    handle = entra
    if True:
        issuer = TokenIssuer(fake_time, lifetime=3600)
        emb = FoundryEmbedder(
            EmbedderConfig(provider="foundry", endpoint=handle.url, auth="entra"),
            credential=issuer,
            clock=fake_time.clock,
            wall_clock=fake_time.wall_clock,
            sleep=fake_time.sleep,
        )
        handle.state.accepted_tokens.update({"entra-token-1", "entra-token-2", "entra-token-3"})
        await emb.embed_images(images(1), "document")
        await emb.embed_images(images(1), "document")
        assert issuer.issued == ["entra-token-1"]  # cached
        assert issuer.scopes == ["https://cognitiveservices.azure.com/.default"]

        fake_time.wall += 3600 - 60  # within the refresh margin
        await emb.embed_images(images(1), "document")
        assert issuer.issued == ["entra-token-1", "entra-token-2"]

        handle.state.accepted_tokens.discard("entra-token-2")  # revoked server-side
        out = await emb.embed_images(images(1), "query")
        assert len(out) == 1
        assert issuer.issued[-1] == "entra-token-3"
        statuses = [r.status for r in embed_requests(handle)]
        assert statuses == [200, 200, 200, 401, 200]

        handle.state.accepted_tokens.clear()
        with pytest.raises(CredentialError, match="Cognitive Services User"):
            await emb.embed_images(images(1), "query")
        assert len(issuer.issued) == 4  # one refresh per 401, then a clear error
        await emb.aclose()
        assert not any("entra-token" in json.dumps(r.model_dump()) for r in handle.state.requests)


# -- what reaches the server ----------------------------------------------------------------


async def test_input_type_reaches_the_server(emulator: EmulatorHandle, fake_time: FakeTime) -> None:
    emb = client(emulator, fake_time)
    doc = await emb.embed_images(images(1), "document")
    query = await emb.embed_images(images(1), "query")
    text = await emb.embed_texts(["a red car"], "query")
    await emb.aclose()
    reqs = embed_requests(emulator)
    assert [(r.route, r.input_type) for r in reqs] == [
        ("images", "document"),
        ("images", "query"),
        ("texts", "query"),
    ]
    assert (doc[0].input_type, query[0].input_type, text[0].input_type) == (
        "document",
        "query",
        "query",
    )
    assert all(r.user_agent and r.user_agent.startswith("imgrag/") for r in reqs)
    ids = [r.client_request_id for r in reqs]
    assert all(ids) and len(set(ids)) == 3


async def test_image_text_pairs(v4_emulator: EmulatorHandle, fake_time: FakeTime) -> None:
    emb = client(v4_emulator, fake_time, model="embed-v-4-0")
    items = images(2, text="a beach at sunset")
    items.append(images(3)[2])
    out = await emb.embed_images(items, "document")
    plain = await emb.embed_images(images(1), "document")
    await emb.aclose()
    assert [e.text_applied for e in out] == [True, True, False]
    assert embed_requests(v4_emulator)[0].text_inputs == [0, 1]
    assert out[0].vector != plain[0].vector  # the caption changed the embedding


async def test_ten_images_split_per_model_limit(
    emulator: EmulatorHandle, v4_emulator: EmulatorHandle, fake_time: FakeTime
) -> None:
    e3 = client(emulator, fake_time)
    e4 = client(v4_emulator, fake_time, model="embed-v-4-0")
    out3 = await e3.embed_images(images(10), "document")
    out4 = await e4.embed_images(images(10), "document")
    await e3.aclose()
    await e4.aclose()
    assert len(out3) == len(out4) == 10
    assert [r.inputs for r in embed_requests(emulator)] == [1] * 10
    assert [r.inputs for r in embed_requests(v4_emulator)] == [10]
    assert e3.usage.requests == 10 and e4.usage.requests == 1


async def test_order_is_kept_across_split_requests(
    emulator: EmulatorHandle, fake_time: FakeTime
) -> None:
    emb = client(emulator, fake_time, max_concurrency=4)
    batch = images(6)
    together = await emb.embed_images(batch, "document")
    alone = [(await emb.embed_images([item], "document"))[0] for item in batch]
    await emb.aclose()
    assert [e.vector for e in together] == [e.vector for e in alone]


async def test_unknown_limit_is_learned_from_too_many_inputs(
    emulator: EmulatorHandle, fake_time: FakeTime
) -> None:
    emb = client(emulator, fake_time, max_images_per_request=4)
    out = await emb.embed_images(images(4), "document")
    await emb.aclose()
    assert len(out) == 4
    statuses = [(r.inputs, r.status) for r in embed_requests(emulator)]
    assert statuses[0] == (4, 400)
    assert sorted(statuses[1:]) == [(1, 200)] * 4
    assert emb.max_images_per_request == 1


async def test_dimensions_and_base64(v4_emulator: EmulatorHandle, fake_time: FakeTime) -> None:
    floats = client(v4_emulator, fake_time, model="embed-v-4-0", dimensions=256)
    b64 = client(
        v4_emulator, fake_time, model="embed-v-4-0", dimensions=256, encoding_format="base64"
    )
    item = images(1)
    a = await floats.embed_images(item, "document")
    b = await b64.embed_images(item, "document")
    await floats.aclose()
    await b64.aclose()
    assert len(a[0].vector) == len(b[0].vector) == 256
    assert b[0].vector == pytest.approx(a[0].vector, abs=1e-6)
    assert [r.encoding_format for r in embed_requests(v4_emulator)] == [None, "base64"]
    assert [r.dimensions for r in embed_requests(v4_emulator)] == [256, 256]


# -- 422: unsupported parameters --------------------------------------------------------------


async def test_422_input_type_under_error(
    no_input_type_emulator: EmulatorHandle, fake_time: FakeTime
) -> None:
    emb = client(no_input_type_emulator, fake_time, model="emulator-no-input-type")
    with pytest.raises(InputTypeNotSupported) as info:
        await emb.embed_images(images(1), "document")
    await emb.aclose()
    assert "emulator-no-input-type" in str(info.value) and "input_type" in str(info.value)
    assert 'on_unsupported = "omit"' in str(info.value)


async def test_422_input_type_under_omit(
    no_input_type_emulator: EmulatorHandle, fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    emb = client(
        no_input_type_emulator, fake_time, model="emulator-no-input-type", on_unsupported="omit"
    )
    with caplog.at_level(logging.WARNING, logger="imgrag.foundry"):
        first = await emb.embed_images(images(1), "document")
        second = await emb.embed_images(images(2), "query")
    await emb.aclose()
    assert [e.input_type for e in first + second] == [None, None, None]
    warnings = [r for r in caplog.records if "input_type" in r.getMessage()]
    assert len(warnings) == 1
    reqs = embed_requests(no_input_type_emulator)
    assert [(r.input_type, r.status) for r in reqs] == [("document", 422)] + [(None, 200)] * 3
    assert sum(r.status == 422 for r in reqs) == 1  # learned once, never asked again
    assert emb.info.supports_input_type is False


# -- throttling and retries ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        ({"retry_after": 7}, 7.0),
        ({"retry_after_ms": 1500}, 1.5),
    ],
)
async def test_429_waits_as_told(
    emulator: EmulatorHandle, fake_time: FakeTime, hint: dict[str, float], expected: float
) -> None:
    emulator.state.inject(429, **hint)  # type: ignore[attr-defined]
    emb = client(emulator, fake_time)
    out = await emb.embed_images(images(1), "document")
    await emb.aclose()
    assert len(out) == 1
    assert fake_time.sleeps == [pytest.approx(expected)]
    assert emb.usage.throttled == 1 and emb.usage.retries == 1
    assert [r.status for r in embed_requests(emulator)] == [429, 200]


async def test_429_with_http_date_retry_after(
    emulator: EmulatorHandle, fake_time: FakeTime
) -> None:
    when = datetime.fromtimestamp(fake_time.wall + 12, tz=UTC)
    emulator.state.inject(429, headers={"Retry-After": format_datetime(when, usegmt=True)})  # type: ignore[attr-defined]
    emb = client(emulator, fake_time)
    await emb.embed_images(images(1), "document")
    await emb.aclose()
    assert fake_time.sleeps == [pytest.approx(12, abs=1)]


async def test_429_pauses_every_sender_and_halves_concurrency(
    emulator: EmulatorHandle, fake_time: FakeTime
) -> None:
    """After a 429 every sender waits once for the named time, and new requests start only
    while at most half the former concurrency is on the wire (AIMD). Counted on the wire."""
    state = emulator.state  # type: ignore[attr-defined]
    state.options.latency_ms = 30  # requests overlap
    state.inject(429, retry_after=5)
    wire = {"in_flight": 0, "throttled": False}
    after_429: list[int] = []

    async def on_request(request: httpx.Request) -> None:
        wire["in_flight"] += 1
        if wire["throttled"]:
            after_429.append(int(wire["in_flight"]))

    async def on_response(response: httpx.Response) -> None:
        wire["in_flight"] -= 1
        wire["throttled"] = wire["throttled"] or response.status_code == 429

    http = httpx.AsyncClient(
        timeout=10, event_hooks={"request": [on_request], "response": [on_response]}
    )
    config = EmbedderConfig(
        provider="foundry",
        endpoint=emulator.url,
        api_key=SecretStr(KEY),
        max_concurrency=8,  # type: ignore[attr-defined]
    )
    emb = FoundryEmbedder(config, http_client=http, clock=fake_time.clock, sleep=fake_time.sleep)
    try:
        out = await emb.embed_images(images(24), "document")
    finally:
        state.options.latency_ms = 0
        await http.aclose()
    assert len(out) == 24
    assert fake_time.sleeps.count(5.0) == 1  # one shared pause, not one per sender
    assert after_429 and after_429[0] <= 4  # the first new request waited for half of 8


async def test_5xx_then_success(emulator: EmulatorHandle, fake_time: FakeTime) -> None:
    emulator.state.inject(503, count=2)  # type: ignore[attr-defined]
    emb = client(emulator, fake_time)
    out = await emb.embed_images(images(1), "document")
    await emb.aclose()
    assert len(out) == 1
    assert [r.status for r in embed_requests(emulator)] == [503, 503, 200]
    assert len(fake_time.sleeps) == 2 and fake_time.sleeps[1] > fake_time.sleeps[0] * 0.9
    assert emb.usage.retries == 2


async def test_attempts_exhausted_names_attempts_status_and_message(
    emulator: EmulatorHandle, fake_time: FakeTime
) -> None:
    emulator.state.inject(  # type: ignore[attr-defined]
        500,
        count=5,
        body=b'{"error": {"code": "InternalServerError", "message": "backend on fire"}}',
    )
    emb = client(emulator, fake_time, max_attempts=3)
    with pytest.raises(TransientEmbedderError) as info:
        await emb.embed_images(images(1), "document")
    await emb.aclose()
    text = str(info.value)
    assert "3 attempts" in text and "500" in text and "backend on fire" in text
    assert info.value.attempts == 3 and info.value.status == 500
    assert len(embed_requests(emulator)) == 3


async def test_connection_refused_is_retried_then_reported(fake_time: FakeTime) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    emb = FoundryEmbedder(
        EmbedderConfig(
            provider="foundry",
            endpoint=f"http://127.0.0.1:{port}/models",
            api_key=SecretStr(KEY),
            max_attempts=3,
        ),
        clock=fake_time.clock,
        wall_clock=fake_time.wall_clock,
        sleep=fake_time.sleep,
    )
    with pytest.raises(TransientEmbedderError, match="ConnectError") as info:
        await emb.embed_images(images(1), "document")
    await emb.aclose()
    assert info.value.attempts == 3 and len(fake_time.sleeps) == 2


# -- malformed responses ---------------------------------------------------------------------


def _body(data: list[dict[str, object]]) -> bytes:
    return json.dumps({"data": data, "model": "m", "object": "list"}).encode()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html>gateway</html>", "malformed"),
        (_body([]), "0 embeddings for 2 inputs"),
        (
            _body([{"index": 0, "embedding": [0.1, 0.2]}, {"index": 0, "embedding": [0.1, 0.2]}]),
            "indexes",
        ),
        (
            _body([{"index": 0, "embedding": [0.1, 0.2]}, {"index": 1, "embedding": [0.1]}]),
            "different dimensions",
        ),
        (
            _body([{"index": 0, "embedding": [0.1, 1e999]}, {"index": 1, "embedding": [0.1, 0.2]}]),
            "non-finite",
        ),
        (_body([{"index": 0, "embedding": "AAAA"}, {"index": 1, "embedding": [0.1]}]), "string"),
    ],
)
async def test_malformed_responses_are_errors_with_request_id(
    v4_emulator: EmulatorHandle, fake_time: FakeTime, body: bytes, why: str
) -> None:
    v4_emulator.state.inject(200, body=body)  # type: ignore[attr-defined]
    emb = client(v4_emulator, fake_time, model="embed-v-4-0")
    with pytest.raises(MalformedResponse) as info:
        await emb.embed_images(images(2), "document")
    await emb.aclose()
    assert why in str(info.value)
    sent_id = embed_requests(v4_emulator)[0].client_request_id
    assert sent_id and sent_id in str(info.value)


# -- secrets ---------------------------------------------------------------------------------


async def test_key_never_in_logs_errors_or_reprs(
    emulator: EmulatorHandle, fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator.state.inject(503, count=9)  # type: ignore[attr-defined]
    emb = client(emulator, fake_time, max_attempts=2)
    texts = [
        repr(emb),
        repr(emb.config),
        str(emb.config.model_dump()),
        emb.config.model_dump_json(),
    ]
    with pytest.raises(TransientEmbedderError) as info:
        await emb.embed_images(images(1), "document")
    texts.append(str(info.value))
    emulator.state.faults.clear()  # type: ignore[attr-defined]
    await emb.embed_images(images(1), "document")
    await emb.aclose()
    texts += [r.getMessage() for r in caplog.records]
    assert any("HTTP Request" in t for t in texts)  # httpx did log at DEBUG
    assert not any(KEY in t for t in texts)


def test_server_delay_headers() -> None:
    now = 1_700_000_000.0
    assert server_delay(httpx.Headers({"retry-after-ms": "250"}), now) == 0.25
    assert server_delay(httpx.Headers({"x-ms-retry-after-ms": "900"}), now) == 0.9
    assert server_delay(httpx.Headers({"Retry-After": "3"}), now) == 3.0
    date = format_datetime(datetime.fromtimestamp(now + 30, tz=UTC), usegmt=True)
    assert server_delay(httpx.Headers({"Retry-After": date}), now) == pytest.approx(30)
    assert server_delay(httpx.Headers({}), now) is None


async def test_probe_checks_the_service_and_learns_its_dimension(fake_time: FakeTime) -> None:
    from imgrag.connectors.tiny import TinyEmbedder

    backend = TinyEmbedder(384)
    options = EmulatorOptions(port=0, api_key=SecretStr(KEY))
    with running_emulator(options, embedder=backend) as handle:
        emb = client(handle, fake_time)
        assert emb.info.dimension == 1024  # what the catalog says Cohere v3 makes
        info = await emb.probe()
        assert info.dimension == emb.info.dimension == 384  # what this deployment serves
        # GET /info?model=<deployment> first (the family), then one tiny image (the dimension)
        assert [(r.route, r.inputs) for r in handle.state.requests] == [("info", 0), ("images", 1)]
        await emb.aclose()
    await backend.aclose()
