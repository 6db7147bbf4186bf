"""The Foundry emulator over real HTTP on loopback: auth, profiles, limits, faults, the log."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from imgrag.connectors.emulator import EmulatorHandle, running_emulator
from imgrag.connectors.tiny import TinyEmbedder
from PIL import Image
from pydantic import SecretStr

from tests.conftest import EMULATOR_KEY

PARAMS = {"api-version": "2025-04-01"}
AUTH = {"api-key": EMULATOR_KEY}


def png_url(color: tuple[int, int, int], size: tuple[int, int] = (40, 30), fmt: str = "PNG") -> str:
    img = Image.new("RGB", size, color)
    img.putpixel((1, 1), (255 - color[0], 255 - color[1], 255 - color[2]))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    mime = "jpeg" if fmt == "JPEG" else fmt.lower()
    return f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode()


RED, GREEN, BLUE = png_url((220, 20, 20)), png_url((20, 200, 40)), png_url((10, 30, 230))


def post_images(
    handle: EmulatorHandle,
    inputs: list[dict[str, Any]],
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    return httpx.post(
        f"{handle.url}/images/embeddings",
        params=PARAMS if params is None else params,
        headers=AUTH if headers is None else headers,
        json={"input": inputs, **body},
        timeout=10,
    )


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] and body["error"]["message"]
    return body["error"]


def flat_error_of(response: httpx.Response) -> dict[str, Any]:
    """The documented unsupported-parameter 422 (Model Inference API reference): flat, with
    ``status``, ``code``, ``message`` and ``detail.loc`` naming the parameter."""
    body = response.json()
    assert body["status"] == response.status_code == 422
    assert body["code"] == "parameter_not_supported" and body["message"]
    return body


def invalid_input_of(response: httpx.Response) -> str:
    """A refused image: ``422 {"error": {"code": "Invalid input", "message": "{\"message\":
    \"invalid data uri\"}", "status": 422}}`` (the shape Foundry answers, issue 11)."""
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "Invalid input" and error["status"] == 422
    inner: str = json.loads(error["message"])["message"]
    return inner


# -- auth and api-version ---------------------------------------------------------------------


def test_api_key_header_and_bearer_key_are_accepted(emulator: EmulatorHandle) -> None:
    assert post_images(emulator, [{"image": RED}]).status_code == 200
    bearer = {"Authorization": f"Bearer {EMULATOR_KEY}"}
    assert post_images(emulator, [{"image": RED}], headers=bearer).status_code == 200
    assert [r.auth for r in emulator.state.requests] == ["api-key", "bearer-key"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"api-key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}],
)
def test_missing_or_wrong_key_is_401_json(
    emulator: EmulatorHandle, headers: dict[str, str]
) -> None:
    response = post_images(emulator, [{"image": RED}], headers=headers)
    assert response.status_code == 401
    assert "Access denied" in error_of(response)["message"]
    assert EMULATOR_KEY not in response.text
    assert emulator.state.requests[-1].auth is None


def test_accepted_tokens_can_be_added_and_revoked(emulator: EmulatorHandle) -> None:
    token = {"Authorization": "Bearer entra-token-a"}
    assert post_images(emulator, [{"image": RED}], headers=token).status_code == 401
    emulator.state.accepted_tokens.add("entra-token-a")
    assert post_images(emulator, [{"image": RED}], headers=token).status_code == 200
    emulator.state.accepted_tokens.discard("entra-token-a")
    assert post_images(emulator, [{"image": RED}], headers=token).status_code == 401
    assert [r.auth for r in emulator.state.requests] == [None, "bearer-token", None]
    assert "entra-token-a" not in str([r.model_dump() for r in emulator.state.requests])


def test_api_version_is_required(emulator: EmulatorHandle) -> None:
    response = post_images(emulator, [{"image": RED}], params={})
    assert response.status_code == 400
    assert "api-version" in error_of(response)["message"]
    bad = post_images(emulator, [{"image": RED}], params={"api-version": "latest"})
    assert bad.status_code == 400


def test_info_names_the_model_at_root_and_under_models(emulator: EmulatorHandle) -> None:
    for base in (emulator.url, emulator.root_url):
        response = httpx.get(f"{base}/info", params=PARAMS, headers=AUTH)
        assert response.status_code == 200
        body = response.json()
        assert body["model_name"] == "Cohere-embed-v3-english"
        assert body["model_type"] == "embedding"  # what Cohere deployments answer
        assert body["model_provider_name"] == "Cohere"
    assert httpx.get(f"{emulator.url}/info", params=PARAMS).status_code == 401


def test_unknown_route_is_404_json(emulator: EmulatorHandle) -> None:
    response = httpx.post(f"{emulator.url}/chat/completions", params=PARAMS, headers=AUTH, json={})
    assert response.status_code == 404
    error_of(response)


# -- profiles ---------------------------------------------------------------------------------


def test_v3_one_image_ok_two_images_400(emulator: EmulatorHandle) -> None:
    one = post_images(emulator, [{"image": RED}], input_type="document")
    assert one.status_code == 200
    body = one.json()
    assert body["object"] == "list" and body["model"] == "Cohere-embed-v3-english" and body["id"]
    [item] = body["data"]
    assert item["index"] == 0 and item["object"] == "embedding"
    assert len(item["embedding"]) == 1024
    assert np.linalg.norm(item["embedding"]) == pytest.approx(1.0, abs=1e-5)
    assert one.headers["apim-request-id"] == one.headers["x-request-id"] == body["id"]

    two = post_images(emulator, [{"image": RED}, {"image": GREEN}])
    assert two.status_code == 400
    assert "too many inputs" in error_of(two)["message"].lower()


def test_v3_rejects_dimensions_and_text_with_422(emulator: EmulatorHandle) -> None:
    dims = post_images(emulator, [{"image": RED}], dimensions=1024)
    assert dims.status_code == 422
    assert flat_error_of(dims)["detail"] == {"loc": ["body", "dimensions"], "input": 1024}
    text = post_images(emulator, [{"image": RED, "text": "a red square"}])
    assert text.status_code == 422
    assert flat_error_of(text)["detail"]["loc"] == ["body", "input", "0", "text"]


def test_vectors_are_deterministic_and_content_derived(emulator: EmulatorHandle) -> None:
    def vector(url: str) -> np.ndarray:
        response = post_images(emulator, [{"image": url}])
        return np.asarray(response.json()["data"][0]["embedding"])

    red, red_again, blue = vector(RED), vector(RED), vector(BLUE)
    assert np.array_equal(red, red_again)
    assert float(red @ blue) < 0.99


def test_v4_several_images_with_dimensions_256(v4_emulator: EmulatorHandle) -> None:
    response = post_images(
        v4_emulator, [{"image": RED}, {"image": GREEN}, {"image": BLUE}], dimensions=256
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert [d["index"] for d in data] == [0, 1, 2]
    for item in data:
        assert len(item["embedding"]) == 256
        assert np.linalg.norm(item["embedding"]) == pytest.approx(1.0, abs=1e-5)
    assert v4_emulator.state.requests[-1].dimensions == 256
    default = post_images(v4_emulator, [{"image": RED}])
    assert len(default.json()["data"][0]["embedding"]) == 1536
    odd = post_images(v4_emulator, [{"image": RED}], dimensions=300)
    assert odd.status_code == 422
    assert "256" in flat_error_of(odd)["message"]


def test_v4_fuses_image_and_text(v4_emulator: EmulatorHandle) -> None:
    plain = post_images(v4_emulator, [{"image": RED}]).json()["data"][0]["embedding"]
    fused = post_images(v4_emulator, [{"image": RED, "text": "a red square"}])
    assert fused.status_code == 200
    vector = np.asarray(fused.json()["data"][0]["embedding"])
    assert not np.allclose(vector, plain)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert v4_emulator.state.requests[-1].text_inputs == [0]


def test_input_type_is_422_on_the_no_input_type_profile(
    no_input_type_emulator: EmulatorHandle,
) -> None:
    refused = post_images(no_input_type_emulator, [{"image": RED}], input_type="document")
    assert refused.status_code == 422
    error = flat_error_of(refused)
    assert error["detail"] == {"loc": ["body", "input_type"], "input": "document"}
    assert "input_type" in error["message"]
    assert refused.headers["x-ms-error-code"] == error["code"]
    assert post_images(no_input_type_emulator, [{"image": RED}]).status_code == 200


def test_text_route_embeds_and_counts_words(emulator: EmulatorHandle) -> None:
    response = httpx.post(
        f"{emulator.url}/embeddings",
        params=PARAMS,
        headers=AUTH,
        json={"input": ["a red car", "two words"], "input_type": "query"},
    )
    assert response.status_code == 200
    body = response.json()
    assert len(body["data"]) == 2 and len(body["data"][0]["embedding"]) == 1024
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    assert emulator.state.requests[-1].route == "texts"


def test_text_route_is_404_on_an_image_only_deployment() -> None:
    with running_emulator(backend="tiny", image_only=True) as handle:
        response = httpx.post(f"{handle.url}/embeddings", params=PARAMS, json={"input": ["x"]})
        assert response.status_code == 404
        assert "text" in error_of(response)["message"]
        assert post_images(handle, [{"image": RED}], headers={}).status_code == 200


def test_backend_dimension_differing_from_the_profile_is_served_and_reported() -> None:
    with running_emulator(backend="tiny", embedder=TinyEmbedder(dimension=64)) as handle:
        info = httpx.get(f"{handle.url}/info", params=PARAMS).json()
        assert info["emulator"]["dimension"] == 64
        assert "64" in info["emulator"]["dimension_note"]
        vector = post_images(handle, [{"image": RED}], headers={}).json()["data"][0]["embedding"]
        assert len(vector) == 64


# -- inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("https://example.com/cat.png", "data URL"),
        ("data:image/png;base64,@@not-base64@@", "base64"),
        ("data:image/png;base64," + base64.b64encode(b"not an image at all").decode(), "decoded"),
        ("data:text/plain;base64," + base64.b64encode(b"hello").decode(), "image"),
        (png_url((1, 2, 3), fmt="BMP"), "not supported"),
    ],
)
def test_bad_images_are_422_invalid_input(
    emulator: EmulatorHandle, image: str, expected: str
) -> None:
    response = post_images(emulator, [{"image": image}])
    assert expected in invalid_input_of(response)


def test_image_over_5_mb_is_422_invalid_input(emulator: EmulatorHandle) -> None:
    big = "data:image/png;base64," + base64.b64encode(b"\0" * (5 * 1024 * 1024 + 1)).decode()
    response = post_images(emulator, [{"image": big}])
    assert "at most 5242880 bytes" in invalid_input_of(response)


def test_jpeg_webp_gif_are_accepted(emulator: EmulatorHandle) -> None:
    for fmt in ("JPEG", "WEBP", "GIF"):
        assert post_images(emulator, [{"image": png_url((9, 99, 199), fmt=fmt)}]).status_code == 200


def test_malformed_body_and_unknown_parameters_are_400(emulator: EmulatorHandle) -> None:
    not_json = httpx.post(
        f"{emulator.url}/images/embeddings", params=PARAMS, headers=AUTH, content=b"{nope"
    )
    assert not_json.status_code == 400
    assert post_images(emulator, [{"image": RED}], input_type="search_document").status_code == 400
    extra = post_images(emulator, [{"image": RED}], truncate="END")
    assert extra.status_code == 400 and "truncate" in error_of(extra)["message"]
    passed = post_images(
        emulator, [{"image": RED}], headers={**AUTH, "extra-parameters": "pass-through"},
        truncate="END",
    )  # fmt: skip
    assert passed.status_code == 200
    unknown = post_images(emulator, [{"image": RED}], model="gpt-4o")
    assert unknown.status_code == 404
    assert error_of(unknown)["code"] == "unknown_model" and error_of(unknown)["details"]


# -- quota ------------------------------------------------------------------------------------


def test_rpm_quota_is_429_with_retry_hints(emulator: EmulatorHandle) -> None:
    emulator.state.options.rpm = 120  # two per 1 s window
    assert [post_images(emulator, [{"image": RED}]).status_code for _ in range(2)] == [200, 200]
    throttled = post_images(emulator, [{"image": RED}])
    assert throttled.status_code == 429
    error_of(throttled)
    seconds = int(throttled.headers["Retry-After"])
    millis = int(throttled.headers["x-ms-retry-after-ms"])
    assert seconds == 1 and 0 < millis <= 1000  # the 1 s window frees first
    assert seconds == -(-millis // 1000)  # the same moment, in two units
    assert throttled.headers["x-ratelimit-limit-requests"] == "120"
    assert throttled.headers["x-ratelimit-remaining-requests"] == "118"


def test_tpm_quota_counts_1000_tokens_per_image_and_can_be_overdrawn(
    emulator: EmulatorHandle,
) -> None:
    """A request is let in while any token quota is left, so ``remaining`` goes below zero,
    as reported for Azure deployments (openai/openai-dotnet#838)."""
    emulator.state.options.tpm = 1500
    assert post_images(emulator, [{"image": RED}]).headers["x-ratelimit-remaining-tokens"] == "500"
    overdrawn = post_images(emulator, [{"image": RED}])
    assert overdrawn.status_code == 200
    assert overdrawn.headers["x-ratelimit-remaining-tokens"] == "-500"
    assert overdrawn.headers["x-ratelimit-limit-tokens"] == "1500"
    throttled = post_images(emulator, [{"image": RED}])
    assert throttled.status_code == 429
    assert "tokens" in error_of(throttled)["message"]
    assert int(throttled.headers["Retry-After"]) >= 1


def test_max_concurrency_is_429_while_a_request_is_in_flight(emulator: EmulatorHandle) -> None:
    emulator.state.options.max_concurrency = 1
    emulator.state.hold()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(post_images, emulator, [{"image": RED}])
        emulator.state.wait_for(lambda s: s.held == 1)
        second = post_images(emulator, [{"image": GREEN}])
        assert second.status_code == 429
        assert "concurrent" in error_of(second)["message"]
        assert int(second.headers["Retry-After"]) >= 1 and "x-ms-retry-after-ms" in second.headers
        emulator.state.release()
        assert first.result(timeout=10).status_code == 200
    assert post_images(emulator, [{"image": GREEN}]).status_code == 200  # the slot came back
    assert emulator.state.in_flight == 0


# -- faults -----------------------------------------------------------------------------------


def test_inject_answers_the_next_requests(emulator: EmulatorHandle) -> None:
    emulator.state.inject(503, count=2)
    emulator.state.inject(429, retry_after=7, retry_after_ms=6500, headers={"x-extra": "yes"})
    statuses = [post_images(emulator, [{"image": RED}]) for _ in range(4)]
    assert [r.status_code for r in statuses] == [503, 503, 429, 200]
    throttled = statuses[2]
    assert throttled.headers["Retry-After"] == "7"
    assert throttled.headers["x-ms-retry-after-ms"] == "6500"
    assert throttled.headers["x-extra"] == "yes"
    assert "Retry-After" not in statuses[0].headers


def test_inject_a_malformed_success(emulator: EmulatorHandle) -> None:
    emulator.state.inject(200, body=b'{"data": [{"index": 0}]')
    response = post_images(emulator, [{"image": RED}])
    assert response.status_code == 200
    assert response.content == b'{"data": [{"index": 0}]'


def test_fail_rate_can_be_changed_while_running(emulator: EmulatorHandle) -> None:
    emulator.state.options.fail_rate = 1.0
    statuses = {post_images(emulator, [{"image": RED}]).status_code for _ in range(8)}
    assert statuses <= {500, 503} and statuses
    emulator.state.options.fail_rate = 0.0
    assert post_images(emulator, [{"image": RED}]).status_code == 200


def test_admin_route_steers_faults(emulator: EmulatorHandle) -> None:
    url = f"{emulator.root_url}/_emulator/faults"
    assert httpx.post(url, json={"fail_rate": 1.0}).status_code == 401
    answer = httpx.post(url, headers=AUTH, json={"fail_rate": 1.0, "latency_ms": 5})
    assert answer.status_code == 200
    assert answer.json()["fail_rate"] == 1.0 and emulator.state.options.latency_ms == 5
    assert post_images(emulator, [{"image": RED}]).status_code in (500, 503)
    httpx.post(url, headers=AUTH, json={"fail_rate": 0, "inject": {"status": 418, "count": 1}})
    assert post_images(emulator, [{"image": RED}]).status_code == 418
    assert httpx.post(url, headers=AUTH, json={"fail_rate": 2}).status_code == 400
    log = httpx.get(f"{emulator.root_url}/_emulator/requests", headers=AUTH).json()
    assert [r["status"] for r in log][-2:] in ([500, 418], [503, 418])


# -- encoding, usage, request log -------------------------------------------------------------


def test_base64_encoding_decodes_to_the_float_vector(v4_emulator: EmulatorHandle) -> None:
    floats = post_images(v4_emulator, [{"image": RED}], dimensions=512).json()["data"][0][
        "embedding"
    ]
    encoded = post_images(v4_emulator, [{"image": RED}], dimensions=512, encoding_format="base64")
    value = encoded.json()["data"][0]["embedding"]
    assert isinstance(value, str)
    decoded = np.frombuffer(base64.b64decode(value), dtype="<f4")
    assert decoded.shape == (512,)
    np.testing.assert_array_equal(decoded, np.asarray(floats, dtype=np.float32))
    assert v4_emulator.state.requests[-1].encoding_format == "base64"


def test_v4_usage_grows_with_pixels(v4_emulator: EmulatorHandle) -> None:
    """Cohere bills v4 images by pixel count: about 1,610 tokens for 512x512."""
    big = png_url((1, 2, 3), size=(512, 512))
    body = post_images(v4_emulator, [{"image": big}, {"image": big}]).json()
    assert body["usage"] == {"prompt_tokens": 3220, "total_tokens": 3220}
    small = post_images(v4_emulator, [{"image": RED}]).json()["usage"]["total_tokens"]  # 40x30
    assert small == round(1610 * 40 * 30 / 512**2)
    captioned = post_images(v4_emulator, [{"image": big, "text": "three small words"}]).json()
    assert captioned["usage"]["total_tokens"] == 1613


def test_request_log_records_what_reached_the_server(emulator: EmulatorHandle) -> None:
    headers = {**AUTH, "user-agent": "imgrag-test/1", "x-ms-client-request-id": "cid-1"}
    post_images(emulator, [{"image": RED}], headers=headers, input_type="document")
    post_images(emulator, [{"image": RED}], headers=headers, input_type="query")
    first, second = emulator.state.requests
    assert (first.input_type, second.input_type) == ("document", "query")
    assert first.route == "images" and first.inputs == 1 and first.text_inputs == []
    assert first.user_agent == "imgrag-test/1" and first.client_request_id == "cid-1"
    assert first.auth == "api-key" and first.status == 200 and first.tokens == 1000
    assert first.api_version == "2025-04-01"
    assert EMULATOR_KEY not in str([r.model_dump() for r in emulator.state.requests])


# -- the command ------------------------------------------------------------------------------


def test_cli_prints_the_endpoint_and_serves() -> None:
    env = {**os.environ, "IMGRAG_EMULATOR_API_KEY": "cli-key"}
    code = "from imgrag.pipeline.cli import app; app()"
    args = ["emulator", "--port", "0", "--backend", "tiny", "--model", "embed-v-4-0"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout=20)
        if not line or "http://127.0.0.1:" not in line[0]:
            proc.terminate()
            pytest.fail(f"no endpoint line: {line!r}; stderr: {proc.communicate(timeout=10)[1]}")
        endpoint = next(w for w in line[0].split() if w.startswith("http://")).rstrip(",")
        assert endpoint.endswith("/models")
        info = httpx.get(f"{endpoint}/info", params=PARAMS, headers={"api-key": "cli-key"})
        assert info.json()["model_name"] == "embed-v-4-0"
        assert httpx.get(f"{endpoint}/info", params=PARAMS).status_code == 401
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # waits, and closes both pipes


def test_local_backend_is_served_with_its_own_dimension(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local backend serves its own dimension, and builds its model in the cache it is
    given (the CLI passes the state directory's), never in the current folder."""
    pytest.importorskip("imgrag.connectors.local")
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "state" / "cache"
    with running_emulator(backend="local", model="embed-v-4-0", cache_dir=cache) as handle:
        assert handle.state.backend_name == "local"
        dimension = handle.state.backend.info.dimension
        info = httpx.get(f"{handle.url}/info", params=PARAMS).json()["emulator"]
        assert info["dimension"] == dimension
        response = post_images(handle, [{"image": RED, "text": "red"}], headers={})
        assert response.status_code == 200
        vector = response.json()["data"][0]["embedding"]
        assert len(vector) == dimension
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)
    assert any((cache / "local").glob("*.onnx"))
    assert not (tmp_path / ".imgrag").exists()


class _BrokenEmbedder(TinyEmbedder):
    async def embed_images(self, items: Any, input_type: Any) -> Any:
        raise RuntimeError("backend exploded")


def test_a_backend_failure_is_a_500_in_the_service_shape() -> None:
    with running_emulator(embedder=_BrokenEmbedder()) as handle:
        response = post_images(handle, [{"image": RED}], headers={})
        assert response.status_code == 500
        assert error_of(response)["code"] == "InternalServerError"
        assert handle.state.requests[-1].status == 500


# -- the service's contract (issue 11) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "api_key_alone", "bearer_key"),
    [("foundry", 200, 200), ("serverless", 401, 200), ("managed", 401, 200)],
)
def test_endpoint_kinds_read_their_own_key_header(
    kind: str, api_key_alone: int, bearer_key: int
) -> None:
    """Serverless and managed endpoints read only ``Authorization: Bearer <key>``; Foundry
    resources also read ``api-key`` (azure-ai-inference ``_patch.py`` sends both for that
    reason). ``api-key`` alone gets the service's 401 body."""
    with running_emulator(api_key=SecretStr(EMULATOR_KEY), backend="tiny", endpoint_kind=kind) as h:
        alone = post_images(h, [{"image": RED}])
        assert alone.status_code == api_key_alone
        if alone.status_code == 401:
            assert error_of(alone) == {"code": "401", "message": ANY_DENIED}
        bearer = {"Authorization": f"Bearer {EMULATOR_KEY}"}
        assert post_images(h, [{"image": RED}], headers=bearer).status_code == bearer_key


ANY_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API endpoint "
    "for your resource."
)


def test_entra_tokens_are_checked_for_the_audience_of_the_endpoint_kind() -> None:
    with running_emulator(backend="tiny", endpoint_kind="managed", require_auth=True) as h:
        ml = {"Authorization": f"Bearer {h.state.issue_token('https://ml.azure.com/.default')}"}
        cog = h.state.issue_token("https://cognitiveservices.azure.com/.default")
        assert post_images(h, [{"image": RED}], headers=ml).status_code == 200
        wrong = post_images(h, [{"image": RED}], headers={"Authorization": f"Bearer {cog}"})
        assert wrong.status_code == 401
        assert "audience is incorrect (https://ml.azure.com)" in error_of(wrong)["message"]


def test_retired_api_version_is_refused_as_the_service_does(emulator: EmulatorHandle) -> None:
    """2024-05-01-preview was retired on 2026-04-10 (Model Inference API lifecycle); the
    service answers 400 "API version not supported" (hotovo/aider-desk#460)."""
    old = post_images(emulator, [{"image": RED}], params={"api-version": "2024-05-01-preview"})
    assert old.status_code == 400
    assert error_of(old) == {"code": "BadRequest", "message": "API version not supported"}


def test_deployment_names_no_model_name_and_info_by_deployment() -> None:
    with running_emulator(
        backend="tiny", model="embed-v-4-0", deployments=["photos", "photos-canary"]
    ) as h:
        assert post_images(h, [{"image": RED}], headers={}, model="photos").status_code == 200
        missing = post_images(h, [{"image": RED}], headers={})
        assert missing.status_code == 400 and error_of(missing)["code"] == "no_model_name"
        unknown = post_images(h, [{"image": RED}], headers={}, model="embed-v-4-0")
        assert unknown.status_code == 404
        assert error_of(unknown)["code"] == "unknown_model"
        assert "embed-v-4-0" in error_of(unknown)["details"]
        info = httpx.get(f"{h.url}/info", params={**PARAMS, "model": "photos-canary"})
        assert info.json()["model_name"] == "embed-v-4-0"
        assert h.state.requests[-1].model == "photos-canary"


def test_429_without_retry_headers_names_the_wait_only_in_its_message(
    emulator: EmulatorHandle,
) -> None:
    emulator.state.options.rpm = 60
    emulator.state.options.retry_headers = False
    emulator.state.options.message_wait_s = 30
    try:
        assert post_images(emulator, [{"image": RED}]).status_code == 200
        throttled = post_images(emulator, [{"image": RED}])
    finally:
        emulator.state.options.retry_headers = True
        emulator.state.options.message_wait_s = None
    assert throttled.status_code == 429
    assert error_of(throttled)["message"] == "Rate limit is exceeded. Try again in 30 seconds."
    assert not {"retry-after", "retry-after-ms", "x-ms-retry-after-ms"} & set(throttled.headers)


def test_rpm_is_enforced_over_one_and_ten_second_windows(emulator: EmulatorHandle) -> None:
    """The service evaluates RPM over 1 s and 10 s windows: 60 RPM allows one request per
    second and ten per 10 s, so a burst is throttled where a 60 s window would let it by."""
    emulator.state.options.rpm = 60
    assert [post_images(emulator, [{"image": RED}]).status_code for _ in range(2)] == [200, 429]
    emulator.state.reset()
    emulator.state.options.rate_windows = [10.0, 60.0]  # the 10 s window alone
    try:
        codes = [post_images(emulator, [{"image": RED}]).status_code for _ in range(11)]
    finally:
        emulator.state.options.rate_windows = [1.0, 10.0, 60.0]
    assert codes == [200] * 10 + [429]


def test_request_over_the_size_cap_is_413(v4_emulator: EmulatorHandle) -> None:
    v4_emulator.state.options.max_request_bytes = 1000
    try:
        big = post_images(v4_emulator, [{"image": RED}] * 20)
    finally:
        v4_emulator.state.options.max_request_bytes = None
    assert big.status_code == 413
    assert error_of(big)["code"] == "RequestEntityTooLarge"
