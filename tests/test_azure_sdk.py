"""Microsoft's own azure-ai-inference SDK against the emulator: it speaks the real API.

Every test runs against the three endpoint profiles (Foundry resource, serverless, managed).
The SDK sends the key both as ``api-key`` and as ``Authorization: Bearer`` (its ``_patch.py``:
"Serverless API, Managed Compute and GitHub endpoints support the first header, and Azure
OpenAI and the new Unified Inference endpoints support the second"), so it reaches all three.
Its default api-version is the retired ``2024-05-01-preview``; the clients are built with the
GA ``2025-04-01`` (the API's version lifecycle page).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import numpy as np
import pytest
from azure.ai.inference import EmbeddingsClient, ImageEmbeddingsClient
from azure.ai.inference.models import (
    EmbeddingEncodingFormat,
    EmbeddingInputType,
    ImageEmbeddingInput,
)
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from imgrag.connectors.emulator import EmulatorHandle, running_emulator
from PIL import Image
from pydantic import SecretStr

from tests.conftest import EMULATOR_KEY


def data_url(color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


API_VERSION = "2025-04-01"
KINDS = ["foundry", "serverless", "managed"]


def sdk_client(
    handle: EmulatorHandle, key: str = EMULATOR_KEY, api_version: str = API_VERSION
) -> ImageEmbeddingsClient:
    return ImageEmbeddingsClient(
        endpoint=handle.url, credential=AzureKeyCredential(key), api_version=api_version
    )


@pytest.fixture(scope="module", params=KINDS)
def emulator(request: pytest.FixtureRequest) -> Iterator[EmulatorHandle]:
    """A Cohere-embed-v3-english emulator per endpoint profile (shadows the shared one)."""
    with running_emulator(
        api_key=SecretStr(EMULATOR_KEY), backend="tiny", endpoint_kind=request.param
    ) as h:
        yield h


@pytest.fixture(scope="module", params=KINDS)
def v4(request: pytest.FixtureRequest) -> Iterator[EmulatorHandle]:
    with running_emulator(
        api_key=SecretStr(EMULATOR_KEY),
        backend="tiny",
        model="embed-v-4-0",
        endpoint_kind=request.param,
    ) as h:
        yield h


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    for name in ("emulator", "v4"):
        if name in request.fixturenames:
            request.getfixturevalue(name).state.reset()


@pytest.mark.parametrize(
    ("input_type", "wire"),
    [(EmbeddingInputType.DOCUMENT, "document"), (EmbeddingInputType.QUERY, "query")],
)
def test_sdk_image_embeddings_with_input_type(
    emulator: EmulatorHandle, input_type: EmbeddingInputType, wire: str
) -> None:
    with sdk_client(emulator) as client:
        result = client.embed(
            input=[ImageEmbeddingInput(image=data_url((200, 40, 40)))], input_type=input_type
        )
    [item] = result.data
    assert item.index == 0 and len(item.embedding) == 1024
    assert np.linalg.norm(item.embedding) == pytest.approx(1.0, abs=1e-5)
    assert result.model == "Cohere-embed-v3-english"
    assert result.usage.prompt_tokens == result.usage.total_tokens == 1000
    [record] = emulator.state.requests
    assert record.input_type == wire
    assert record.route == "images" and record.status == 200
    assert record.user_agent and "azsdk-python-ai-inference" in record.user_agent
    # The SDK sends both headers: a Foundry resource reads api-key, the others the Bearer one.
    kind = emulator.options.endpoint_kind
    assert record.auth == ("api-key" if kind == "foundry" else "bearer-key")


def test_sdk_model_info(emulator: EmulatorHandle) -> None:
    with sdk_client(emulator) as client:
        info = client.get_model_info()
    assert info.model_name == "Cohere-embed-v3-english"
    assert info.model_type == "embedding"  # Cohere's value, accepted by the SDK's load_client
    assert info.model_provider_name == "Cohere"


def test_sdk_wrong_key_is_an_authentication_error(emulator: EmulatorHandle) -> None:
    with sdk_client(emulator, key="wrong") as client, pytest.raises(ClientAuthenticationError):
        client.embed(input=[ImageEmbeddingInput(image=data_url((1, 2, 3)))])
    assert emulator.state.requests[-1].status == 401


def test_sdk_sees_the_service_error_message(emulator: EmulatorHandle) -> None:
    two = [
        ImageEmbeddingInput(image=data_url((1, 2, 3))),
        ImageEmbeddingInput(image=data_url((4, 5, 6))),
    ]
    with sdk_client(emulator) as client, pytest.raises(HttpResponseError) as info:
        client.embed(input=two)
    assert info.value.status_code == 400
    assert "Too many inputs" in str(info.value)


def test_sdk_dimensions_base64_and_image_text_on_v4(v4: EmulatorHandle) -> None:
    with sdk_client(v4) as client:
        result = client.embed(
            input=[
                ImageEmbeddingInput(image=data_url((10, 200, 10)), text="a green square"),
                ImageEmbeddingInput(image=data_url((10, 10, 200))),
            ],
            dimensions=256,
            encoding_format=EmbeddingEncodingFormat.BASE64,
            input_type=EmbeddingInputType.QUERY,
        )
    vectors = [np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in result.data]
    assert [v.shape for v in vectors] == [(256,), (256,)]
    record = v4.state.requests[-1]
    assert (record.dimensions, record.encoding_format, record.text_inputs) == (256, "base64", [0])
    assert record.input_type == "query"


def test_sdk_text_embeddings(emulator: EmulatorHandle) -> None:
    with EmbeddingsClient(
        endpoint=emulator.url, credential=AzureKeyCredential(EMULATOR_KEY), api_version=API_VERSION
    ) as c:
        result = c.embed(input=["a red car", "a blue boat"], input_type=EmbeddingInputType.QUERY)
    assert len(result.data) == 2
    assert emulator.state.requests[-1].route == "texts"
    assert emulator.state.requests[-1].input_type == "query"


def test_sdk_default_api_version_is_refused_as_retired(emulator: EmulatorHandle) -> None:
    """The SDK's built-in default (2024-05-01-preview) was retired on 2026-04-10."""
    with (
        sdk_client(emulator, api_version="2024-05-01-preview") as client,
        pytest.raises(HttpResponseError, match="API version not supported") as info,
    ):
        client.embed(input=[ImageEmbeddingInput(image=data_url((1, 2, 3)))])
    assert info.value.status_code == 400
