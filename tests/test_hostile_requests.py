"""Hostile request bodies and Host headers against the daemon's app, in process over a real
index (the emulator over HTTP, the embedded store): every one is a 4xx JSON error with
"error" and "kind", never a 500, and the same inputs are refused through ``Retriever``'s
and the CLI's door (``build_query``, ``parse_cli_filters``)."""

from __future__ import annotations

import base64
import io
import json
import struct
import uuid
import zlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imgrag._errors import FilterError, QueryError
from imgrag.connectors.embedder import Embedding, ImageInput, InputType
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.connectors.tiny import TinyEmbedder
from imgrag.pipeline.api import create_api
from imgrag.pipeline.door import LocalDoor
from imgrag.pipeline.filters import build_filter, parse_cli_filters
from imgrag.pipeline.images import DEFAULT_MAX_SIDE, MODEL_PIXELS, fit, normalize
from imgrag.pipeline.metrics import Metrics
from imgrag.pipeline.query import build_query
from imgrag.pipeline.retrieval import SearchService
from PIL import Image

from tests.ingest_harness import pipeline


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def nested_filter(depth: int) -> dict[str, Any]:
    flt: dict[str, Any] = {"must": [{"key": "folder", "match": {"value": "a"}}]}
    for _ in range(depth):
        flt = {"must": [flt]}
    return flt


HOSTILE_SEARCH: dict[str, object] = {
    "deep JSON": f'{{"text": "a", "x": {nested(100_000)}}}',
    "deep filter": '{"text": "a", "filter": ' + '{"must": [' * 2_000 + "{}" + "]}" * 2_000 + "}",
    "filter 40 deep": {"text": "a", "filter": nested_filter(40)},
    "empty key": {"text": "a", "filter": {"": "x"}},
    "bad path key": {"text": "a", "filter": {"must": [{"key": "a..b", "match": {"value": 1}}]}},
    "size 2**70": {"text": "a", "filter": {"size": 2**70}},
    "size -2**70": {"text": "a", "filter": {"size": -(2**70)}},
    "min_size 2**70": {"text": "a", "filter": {"min_size": 2**70}},
    "has_id not a uuid": {"text": "a", "filter": {"must": [{"has_id": ["not-a-uuid"]}]}},
    "geo_radius": {
        "text": "a",
        "filter": {
            "must": [
                {
                    "key": "place",
                    "geo_radius": {"center": {"lon": 1.0, "lat": 2.0}, "radius": 5.0},
                }
            ]
        },
    },
    "range 1e300": {"text": "a", "filter": {"must": [{"key": "size", "range": {"gt": 1e300}}]}},
    "limit string": {"text": "a", "limit": "10"},
    "limit true": {"text": "a", "limit": True},
    "limit float": {"text": "a", "limit": 10.0},
    "min_score NaN": '{"text": "a", "min_score": NaN}',
    "min_score Infinity": '{"text": "a", "min_score": Infinity}',
    "min_score string": {"text": "a", "min_score": "0.5"},
    "unique string": {"text": "a", "unique": "yes"},
}


@pytest.fixture
async def client(tmp_path: Path, emulator: EmulatorHandle) -> AsyncIterator[httpx.AsyncClient]:
    async with pipeline(tmp_path, emulator) as p:
        Image.new("RGB", (16, 16), "red").save(p.root / "red.png")
        await p.ingestor.reconcile()
        door = LocalDoor(p.runtime.core, runtime=p.runtime)
        app = create_api(door, Metrics(door.status_now), allowed_hosts=["gallery.lan"], writes=True)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            yield c


def body_of(value: object) -> bytes:
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


def assert_refused(r: httpx.Response, what: str) -> None:
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:300])
    body = r.json()
    assert isinstance(body["error"], str) and "\n" not in body["error"], (what, body)
    assert isinstance(body["kind"], str) and body["kind"], (what, body)


@pytest.mark.parametrize("name", list(HOSTILE_SEARCH))
async def test_each_hostile_search_body_is_a_4xx_json_error(
    client: httpx.AsyncClient, name: str
) -> None:
    r = await client.post(
        "/search",
        content=body_of(HOSTILE_SEARCH[name]),
        headers={"content-type": "application/json"},
    )
    assert_refused(r, name)


@pytest.mark.parametrize("route", ["/sources", "/ingest", "/forget"])
async def test_deeply_nested_command_bodies_are_4xx(client: httpx.AsyncClient, route: str) -> None:
    for body in (f'{{"path": {nested(100_000)}}}', f'{{"path": "/x", "n": {nested(60)}}}'):
        r = await client.post(route, content=body, headers={"content-type": "application/json"})
        assert_refused(r, route)
        assert "nests deeper" in r.json()["error"]


async def test_a_valid_search_still_answers(client: httpx.AsyncClient) -> None:
    ok = {
        "text": "red",
        "limit": 5,
        "min_score": -1,
        "filter": {
            "must": [
                {"key": "size", "range": {"gte": 0}},
                {"has_id": [str(uuid.uuid4())]},
            ]
        },
    }
    r = await client.post("/search", json=ok)
    assert r.status_code == 200, r.text
    r = await client.post("/search", json={"text": "red", "filter": {"folder": ""}})
    assert r.status_code == 200, r.text


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
_filters = st.dictionaries(
    st.sampled_from(["", "must", "should", "must_not", "size", "min_size", "tags", "a.b", "$"]),
    _json,
    max_size=3,
) | st.fixed_dictionaries(
    {"must": st.lists(st.dictionaries(st.sampled_from(["key", "match", "has_id", "range"]), _json))}
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    flt=_filters,
    limit=_json,
    min_score=_json,
)
async def test_any_filter_limit_or_score_is_answered_or_refused_never_a_500(
    client: httpx.AsyncClient, flt: object, limit: object, min_score: object
) -> None:
    body = {"text": "a", "filter": flt, "limit": limit, "min_score": min_score}
    r = await client.post(
        "/search", content=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    if r.status_code != 200:
        assert_refused(r, repr(body))


@pytest.mark.parametrize(
    "fields",
    [
        {"text": "a", "limit": "10"},
        {"text": "a", "limit": True},
        {"text": "a", "min_score": float("nan")},
        {"text": "a", "filter": {"": "x"}},
        {"text": "a", "filter": {"size": 2**70}},
        {"text": "a", "filter": {"must": [{"has_id": ["x"]}]}},
        {"text": "a", "filter": nested_filter(2_000)},
        {"text": "a", "filter": {"must": [{"key": "g", "geo_radius": {}}]}},
    ],
)
def test_the_python_door_refuses_the_same_inputs(fields: dict[str, Any]) -> None:
    with pytest.raises((QueryError, FilterError)):
        build_query(**fields)


@pytest.mark.parametrize("pairs", [["=x"], ["a b=1"], ["min_size=-1"], [f"min_size={2**70}"]])
def test_the_cli_filters_refuse_bad_keys_and_sizes(pairs: list[str]) -> None:
    with pytest.raises(FilterError):
        build_filter(parse_cli_filters(pairs))


@pytest.mark.parametrize(
    ("host", "served"),
    [
        ("127.0.0.1:8765", True),
        ("[::1]:8765", True),
        ("gallery.lan", True),
        ("127.0.0.1:8765@evil.test", False),
        ("[::1]evil.test", False),
        ("127.0.0.1:80:80", False),
        ("127.0.0.1:", False),
        ("127.0.0.1:8765/evil.test", False),
        ("user@127.0.0.1", False),
        ("127.0.0.1 evil.test", False),
        ("", False),
    ],
)
async def test_only_an_allowed_name_and_an_optional_port_is_served(
    client: httpx.AsyncClient, host: str, served: bool
) -> None:
    r = await client.get("/status", headers={"host": host})
    if served:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 421, (host, r.status_code, r.text)
        assert "allowed_hosts" in r.json()["error"] and r.json()["kind"]


# -- query images: bounded memory -----------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` and whose pixel data is garbage: any
    attempt to decode it fails, so a refusal that names its size came from the header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"garbage")
        + chunk(b"IEND", b"")
    )


class Recording(TinyEmbedder):
    def __init__(self) -> None:
        super().__init__(16)
        self.seen: list[ImageInput] = []

    async def embed_images(
        self, items: Sequence[ImageInput], input_type: InputType
    ) -> list[Embedding]:
        self.seen.extend(items)
        return await super().embed_images(items, input_type)


async def test_a_large_png_query_is_refused_from_its_header_with_a_413(
    client: httpx.AsyncClient,
) -> None:
    raw = png_header_only(6100, 6100)  # 37 MP: over the budget of a full-size decode
    r = await client.post("/search", json={"image": base64.b64encode(raw).decode()})
    assert r.status_code == 413, r.text
    assert r.json()["kind"] == "QueryError"
    assert "6100x6100" in r.json()["error"] and "PNG" in r.json()["error"]
    assert "\n" not in r.json()["error"]


async def test_the_python_door_refuses_it_too_without_a_request() -> None:
    embedder = Recording()
    service = SearchService(embedder, index=None, source="s")  # type: ignore[arg-type]  # no index needed
    with pytest.raises(QueryError, match=r"6100x6100 is over 36 megapixels"):
        await service._vector(None, png_header_only(6100, 6100))
    assert embedder.seen == []
    # A JPEG decodes at reduced scale: 49 MP is taken, and sent within the model's budget.
    buf = io.BytesIO()
    Image.new("RGB", (7000, 7000), (10, 200, 30)).save(buf, format="JPEG", quality=40)
    await service._vector(None, buf.getvalue())
    with Image.open(io.BytesIO(embedder.seen[0].data)) as sent:
        assert sent.size == fit((7000, 7000), DEFAULT_MAX_SIDE, MODEL_PIXELS)
    await embedder.aclose()


def test_a_large_plain_rgb_image_is_shrunk_to_the_same_pixels_as_before() -> None:
    """Shrinking a plain RGB image before _to_rgb (to spare a full-size copy) changes no
    byte of what the embedder receives."""
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 255, (1500, 2600, 3), dtype=np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    got = normalize(buf.getvalue(), max_side=2048, max_area=1000 * 1000)
    size = fit(img.size, 2048, 1000 * 1000)
    assert size is not None
    before = img.copy().resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    with Image.open(io.BytesIO(got.data)) as sent:
        assert sent.size == size
        assert np.array_equal(np.asarray(sent), np.asarray(before))
