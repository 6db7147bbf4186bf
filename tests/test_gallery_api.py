"""The gallery's HTTP side in process: the page, thumbnails and images by point id, and every
hardened input (Host check, content type, body and pixel limits, JSON errors, the token).
A real index (the offline model over scikit-image's photos, embedded Qdrant) and real files."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from imgrag import NotServable
from imgrag.connectors.config import StoreConfig
from imgrag.pipeline import api as api_module
from imgrag.pipeline.api import create_api
from imgrag.pipeline.config import IngestConfig, Settings
from imgrag.pipeline.door import LocalDoor
from imgrag.pipeline.metrics import Metrics
from imgrag.pipeline.runtime import open_runtime
from imgrag.pipeline.status import StatusReport
from imgrag.pipeline.thumbnails import file_of
from PIL import Image
from pydantic import SecretStr

PHOTOS = {
    "earth/cat.png": "chelsea.png",
    "earth/coffee.png": "coffee.png",
    "space/rocket.jpg": "rocket.jpg",
    "space/moon.png": "moon.png",
    "earth/gone.png": "coins.png",
}
TOKEN = "s3cret-token"
Api = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def skimage_photo(name: str) -> Path:
    return Path(str(resources.files("skimage").joinpath("data", name)))


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    base = tmp_path_factory.mktemp("gallery")
    root = base / "inbox"
    for rel, name in PHOTOS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(skimage_photo(name), root / rel)
    (root / "earth" / "coffee.json").write_text('{"tags": ["breakfast"], "caption": "hotel"}')
    settings = Settings(
        state_dir=base / "state",
        ingest=IngestConfig(settle_seconds=0),
        store=StoreConfig(collection="gallery"),
    )

    async def ingest() -> None:
        async with open_runtime(settings) as runtime:
            ingestor = runtime.ingestor(root)
            summary = await ingestor.reconcile()
            await ingestor.close()
        assert summary.failed == 0, summary

    asyncio.run(ingest())
    return settings, root


@pytest.fixture
def api(indexed: tuple[Settings, Path]) -> Api:
    settings, root = indexed

    @asynccontextmanager
    async def make(token: str | None = None, **kw: Any) -> AsyncIterator[httpx.AsyncClient]:
        async with open_runtime(settings) as runtime:
            door = LocalDoor(runtime.core, runtime=runtime)
            assert door.roots() == [root]  # the folder it indexed: the only one served
            app = create_api(
                door,
                Metrics(door.status_now),
                SecretStr(token) if token else None,
                allowed_hosts=["gallery.lan"],
                **kw,
            )
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                yield c

    return make


def png(size: tuple[int, int] = (32, 32), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


async def test_page_and_its_assets_are_served_with_a_csp(api: Api) -> None:
    async with api() as c:
        page = await c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="/static/gallery.js"' in page.text
        assert "https://" not in page.text  # everything local: no CDN
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        js = await c.get("/static/gallery.js")
        assert js.status_code == 200 and "text/javascript" in js.headers["content-type"]
        assert (await c.get("/static/gallery.css")).status_code == 200
        assert (await c.get("/static/__init__.py")).status_code == 404
        missing = await c.get("/nowhere")
        assert missing.status_code == 404 and "error" in missing.json()


HARDENING = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def assert_hardened(response: httpx.Response) -> None:
    """The security headers every answer carries, whatever route or status made it."""
    sent = {name: response.headers.get(name) for name in HARDENING}
    where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    assert sent == HARDENING, where
    assert "frame-ancestors 'none'" in response.headers.get("content-security-policy", ""), where


async def test_every_kind_of_answer_carries_the_security_headers(api: Api) -> None:
    async with api(token=TOKEN) as c:
        refused = [
            await c.get("/"),  # 401 on the page
            await c.post("/search", json={"text": "a cat"}),  # 401 on a JSON route
            await c.get("/status", headers={"host": "evil.example"}),  # 421
        ]
        assert [r.status_code for r in refused] == [401, 401, 421]
        opened = await c.get(f"/?token={TOKEN}")
        assert opened.status_code == 303
        hits = await c.post("/search", json={"text": "a photo of a cat", "limit": 5})
        cat = next(h for h in hits.json() if h["path"] == "earth/cat.png")
        served = {
            "text/html": await c.get("/"),
            "text/javascript": await c.get("/static/gallery.js"),
            "application/json": hits,
            "image/webp": await c.get(f"/thumb/{cat['id']}"),
            "image/png": await c.get(f"/image/{cat['id']}"),
        }
        for kind, r in served.items():
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind), kind
        missing = [
            await c.get("/nowhere"),
            await c.get(f"/thumb/{uuid.uuid4()}"),
            await c.get("/static/__init__.py"),
        ]
        assert [r.status_code for r in missing] == [404, 404, 404]
        wrong_method = await c.get("/search")
        assert wrong_method.status_code == 405
    for r in [*refused, opened, *served.values(), *missing, wrong_method]:
        assert_hardened(r)


@pytest.mark.parametrize(
    ("host", "served"),
    [
        ("127.0.0.1:8765", True),
        ("localhost", True),
        ("[::1]:8765", True),
        ("gallery.lan:8765", True),
        ("evil.example", False),
        ("evil.example:8765", False),
        ("127.0.0.1.evil.example", False),
    ],
)
async def test_host_header_is_checked_against_dns_rebinding(
    api: Api, host: str, served: bool
) -> None:
    async with api() as c:
        r = await c.get("/status", headers={"host": host})
        if served:
            assert r.status_code == 200, r.text
        else:
            assert r.status_code == 421 and "allowed_hosts" in r.json()["error"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (b'{"text": "a cat"}', "text/plain", 415, "application/json"),
        (b'{"text": "a cat"}', None, 415, "application/json"),
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b'["a cat"]', "application/json", 400, "JSON object"),
        (b'{"text": "a", "filter": {"min_size": "abc"}}', "application/json", 400, "min_size"),
        (b'{"text": "a", "filter": {"tags": 5}}', "application/json", 400, "tags"),
        (b'{"text": "a", "filter": {"taken_after": "soon"}}', "application/json", 400, "date"),
        (b'{"text": "a", "filter": {"must": 5}}', "application/json", 400, "must"),
        (b'{"text": "a", "filter": "cats"}', "application/json", 400, "filter"),
        (b'{"text": "a", "limit": "many"}', "application/json", 400, "limit"),
        (b'{"txt": "a"}', "application/json", 400, "txt"),
        (b'{"image": "%%%"}', "application/json", 400, "base64"),
        (b'{"image": "aGVsbG8="}', "application/json", 400, "not an image"),
        (b'{"similar_to": "earth/nope.png"}', "application/json", 400, "not in the index"),
    ],
)
async def test_every_bad_search_input_gets_a_json_error(
    api: Api, body: bytes, content_type: str | None, status: int, words: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    async with api() as c:
        r = await c.post("/search", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words in r.json()["error"]


async def test_body_and_pixel_limits(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    big = base64.b64encode(png((8000, 7000), "L")).decode()
    async with api() as c:
        r = await c.post("/search", json={"image": big})
        assert r.status_code == 413 and "megapixels" in r.json()["error"]
        monkeypatch.setattr(api_module, "MAX_BODY", 1000)
        r = await c.post("/search", json={"text": "x" * 2000})
        assert r.status_code == 413 and "MiB" in r.json()["error"]


async def test_thumbnails_and_images_by_point_id(api: Api, indexed: tuple[Settings, Path]) -> None:
    settings, root = indexed
    async with api() as c:
        hits = (await c.post("/search", json={"text": "a photo of a cat", "limit": 5})).json()
        cat = next(h for h in hits if h["path"] == "earth/cat.png")
        thumb = await c.get(f"/thumb/{cat['id']}")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
        with Image.open(io.BytesIO(thumb.content)) as img:
            assert img.format == "WEBP" and max(img.size) == 256
        digest = hashlib.sha256((root / "earth/cat.png").read_bytes()).hexdigest()
        assert (settings.state_dir / "thumbs" / digest[:2] / f"{digest}.webp").is_file()
        full = await c.get(f"/image/{cat['id']}")
        assert full.status_code == 200 and full.content == (root / "earth/cat.png").read_bytes()
        for bad in ("not-an-id", "..%2F..%2Fetc%2Fpasswd", str(uuid.uuid4())):
            for kind in ("thumb", "image"):
                r = await c.get(f"/{kind}/{bad}")
                assert r.status_code == 404 and "error" in r.json()
        gone = next(
            h
            for h in (await c.post("/search", json={"text": "old coins", "limit": 5})).json()
            if h["path"] == "earth/gone.png"
        )
        assert (await c.get(f"/thumb/{gone['id']}")).status_code == 200  # cached now
        (root / "earth/gone.png").unlink()
        for kind in ("thumb", "image"):
            r = await c.get(f"/{kind}/{gone['id']}")
            assert r.status_code == 404 and "gone" in r.json()["error"]


def test_only_files_really_below_a_registered_root_are_served(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.png").write_bytes(png())
    (root / "ok.png").write_bytes(png())
    (root / "link.png").symlink_to(outside / "secret.png")
    assert file_of({"root": str(root), "path": "ok.png"}, [root]) == (root / "ok.png").resolve()
    for payload, roots in [
        ({"root": str(root), "path": "../outside/secret.png"}, [root]),
        ({"root": str(root), "path": "link.png"}, [root]),
        ({"root": str(root), "path": "/etc/passwd"}, [root]),
        ({"root": str(outside), "path": "secret.png"}, [root]),  # not a registered root
        ({"root": str(root)}, [root]),
        (None, [root]),
    ]:
        with pytest.raises(NotServable):
            file_of(payload, roots)


async def test_the_token_guards_the_page_too(api: Api) -> None:
    async with api(token=TOKEN) as c:
        page = await c.get("/")
        assert page.status_code == 401 and "<html" not in page.text.lower()
        for path in ("/status", "/metrics", f"/thumb/{uuid.uuid4()}"):
            assert (await c.get(path)).status_code == 401
        assert (await c.post("/search", json={"text": "a cat"})).status_code == 401
        assert (await c.get("/?token=wrong")).status_code == 401
        assert (await c.get("/health")).status_code == 200
        opened = await c.get(f"/?token={TOKEN}")
        assert opened.status_code == 303 and opened.headers["location"] == "/"
        assert "httponly" in opened.headers["set-cookie"].lower()
        assert (await c.get("/")).status_code == 200  # the cookie now
        assert (await c.post("/search", json={"text": "a cat"})).status_code == 200
        c.cookies.clear()
        bearer = {"authorization": f"Bearer {TOKEN}"}
        assert (await c.post("/search", json={"text": "a cat"}, headers=bearer)).status_code == 200


async def test_hits_below_the_models_relevance_floor_are_weak(api: Api) -> None:
    async with api() as c:
        cat = (await c.post("/search", json={"text": "a photo of a cat", "limit": 3})).json()
        assert cat[0]["path"] == "earth/cat.png" and cat[0]["weak"] is False
        junk = (await c.post("/search", json={"text": "tax return 2023", "limit": 3})).json()
        assert junk and all(h["weak"] for h in junk)  # nothing relevant, said as such
        floor = min(h["score"] for h in cat if not h["weak"])
        hidden = await c.post(
            "/search", json={"text": "tax return 2023", "limit": 3, "min_score": floor}
        )
        assert hidden.json() == []


async def test_wrong_methods_and_internal_errors_answer_json(
    indexed: tuple[Settings, Path],
) -> None:
    settings, _ = indexed

    class Broken(LocalDoor):
        def status_now(self, target: str | None = None) -> StatusReport:
            raise RuntimeError("the journal is unreadable")

    async with open_runtime(settings) as runtime:
        door = Broken(runtime.core, runtime=runtime)
        app = create_api(door, Metrics(door.status_now))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            wrong = await c.get("/search")
            assert wrong.status_code == 405 and "error" in wrong.json()
            failed = await c.get("/status")
            assert failed.status_code == 500
            assert_hardened(wrong)
            assert_hardened(failed)
            assert failed.headers["content-type"] == "application/json"
            assert "the journal is unreadable" in failed.json()["error"]
