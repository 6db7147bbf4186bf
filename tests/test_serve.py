"""``imgrag serve`` (the gallery for an index nobody ingests into here) and the thumbnails
``imgrag ingest`` writes as it decodes each image: real subprocesses over a real embedded
store made by ``imgrag ingest``, and qdrant-client's local mode standing in for a server."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from imgrag.connectors.config import StoreConfig
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.connectors.paths import StatePaths
from imgrag.connectors.stores import QdrantIndex, open_index
from imgrag.pipeline.config import load_settings
from imgrag.pipeline.serve import gallery_app
from PIL import Image

from tests import images_factory as f
from tests.ingest_harness import reconcile_into_qdrant
from tests.test_cli_ingest import API_TOKEN, AUTH, cli_env, imgrag, spawn_imgrag
from tests.test_cli_people import one_line_error
from tests.test_daemon_api import spawn_watch, status_of, wait_for

TOKEN = "serve-token-42"


def photos(root: Path, n: int = 4) -> None:
    for i in range(n):
        f.save(f.photo(i, (300, 200)), root / ("a" if i % 2 else "b") / f"p{i}.png", "PNG")


def point_ids(env: dict[str, str]) -> dict[str, str]:
    """path → point id, read from the store (nothing else may hold it)."""
    settings = load_settings(env["IMGRAG_CONFIG"], state_dir=env["IMGRAG_STATE_DIR"])
    settings.store.collection = env["IMGRAG_STORE__COLLECTION"]
    index = open_index(settings.store, StatePaths.under(settings.state_dir))
    try:
        spec = index.recorded_spec(settings.store.collection)
        assert spec is not None
        index.ensure_collection(spec)
        return {s.path: s.id for s in index.file_states()}
    finally:
        index.close()


class Served:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc, self.url = proc, url


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    """Start ``imgrag serve --port 0`` with an environment; its URL once it listens."""
    started: list[subprocess.Popen[str]] = []

    def start(env: dict[str, str], *args: str) -> Served:
        proc = spawn_imgrag("serve", "--port", "0", *args, env=env)
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the ready line, or "" when it exits first
        if not line:
            raise AssertionError(f"imgrag serve did not start: {proc.communicate()[1]}")
        assert line.startswith("gallery on http://"), line
        return Served(proc, line.split()[2].rstrip("/"))

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def stop(served: Served, sig: int = signal.SIGTERM) -> str:
    served.proc.send_signal(sig)
    _, err = served.proc.communicate(timeout=30)
    assert served.proc.returncode == 0, err
    assert "Traceback" not in err, err
    return err


def test_ingest_writes_one_thumbnail_per_image_and_the_gallery_serves_it_alone(
    tmp_path: Path, emulator: EmulatorHandle, serve: object
) -> None:
    """The thumbnail is made while the image is decoded for embedding: with the originals
    replaced by bytes no decoder reads, ``/thumb/{id}`` still answers. Without thumbnails
    at ingest (``[ingest] thumbnails = false``) the same request finds nothing to show."""
    root = tmp_path / "inbox"
    photos(root)
    env = cli_env(tmp_path, emulator, IMGRAG_API__PORT="0")
    done = imgrag("ingest", str(root), env=env)
    assert done.returncode == 0, done.stderr
    ids = point_ids(env)
    thumbs = tmp_path / "state" / "thumbs"
    made = sorted(p.name for p in thumbs.rglob("*.webp"))
    digests = {hashlib.sha256((root / path).read_bytes()).hexdigest() for path in ids}
    assert made == sorted(f"{d}.webp" for d in digests)  # one per content, named by it
    for p in thumbs.rglob("*.webp"):
        with Image.open(p) as img:
            assert img.format == "WEBP" and max(img.size) == 256
    for path in ids:  # same size and mtime are not needed: the file is only read, never decoded
        (root / path).write_bytes(b"\x00" * 64)
    served = serve(env)  # type: ignore[operator]
    for path, pid in ids.items():
        r = httpx.get(f"{served.url}/thumb/{pid}", headers=AUTH, timeout=30)
        assert r.status_code == 200, (path, r.text)
        with Image.open(io.BytesIO(r.content)) as img:
            assert img.format == "WEBP"
    stop(served)

    other = tmp_path / "off"
    photos(other / "inbox")
    env_off = cli_env(other, emulator, IMGRAG_API__PORT="0", IMGRAG_INGEST__THUMBNAILS="false")
    assert imgrag("ingest", str(other / "inbox"), env=env_off).returncode == 0
    assert not list((other / "state" / "thumbs").rglob("*.webp"))
    ids_off = point_ids(env_off)
    for path in ids_off:
        (other / "inbox" / path).write_bytes(b"\x00" * 64)
    served = serve(env_off)  # type: ignore[operator]
    r = httpx.get(f"{served.url}/thumb/{next(iter(ids_off.values()))}", headers=AUTH, timeout=30)
    assert r.status_code == 404 and "thumbnail" in r.json()["error"]
    stop(served)


def test_thumbnails_follow_their_points_through_edits_removals_and_forget(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    """The cache holds one thumbnail per content the index holds: an edited file's former
    one goes when the pass ends, a removed file's goes with its point, and ``forget``
    empties it."""
    root = tmp_path / "inbox"
    photos(root)
    env = cli_env(tmp_path, emulator)
    thumbs = tmp_path / "state" / "thumbs"

    def cached() -> list[str]:
        return sorted(p.name for p in thumbs.rglob("*.webp"))

    def contents() -> list[str]:
        files = [root / path for path in point_ids(env)]
        return sorted(f"{hashlib.sha256(p.read_bytes()).hexdigest()}.webp" for p in files)

    assert imgrag("ingest", str(root), env=env).returncode == 0
    assert cached() == contents() and len(cached()) == 4
    f.save(f.photo(40, (300, 200)), root / "a" / "p1.png", "PNG")  # new content, same point
    assert imgrag("ingest", str(root), env=env).returncode == 0
    assert cached() == contents() and len(cached()) == 4
    (root / "b" / "p0.png").unlink()
    assert imgrag("ingest", str(root), env=env).returncode == 0
    assert len(point_ids(env)) == 3 and cached() == contents()
    forgot = imgrag("forget", str(root), env=env)
    assert forgot.returncode == 0, forgot.stderr
    assert cached() == []


def test_a_thumbnail_that_cannot_be_written_fails_no_file(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    root = tmp_path / "inbox"
    photos(root)
    env = cli_env(tmp_path, emulator)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "thumbs").write_text("a file where the cache folder goes")
    run = imgrag("ingest", str(root), "--json", env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["indexed"] == 4
    said = [line for line in run.stderr.splitlines() if "no thumbnail at ingest" in line]
    assert len(said) == 1, run.stderr  # logged once, not once per file


def test_serve_answers_like_the_daemon_for_a_stopped_daemons_store(
    tmp_path: Path, emulator: EmulatorHandle, serve: object
) -> None:
    root = tmp_path / "inbox"
    photos(root)
    env = cli_env(tmp_path, emulator, IMGRAG_API_TOKEN=TOKEN)
    assert imgrag("ingest", str(root), env=env).returncode == 0
    served = serve(env)  # type: ignore[operator]
    url = served.url
    assert httpx.get(f"{url}/").status_code == 401  # the token guards the page too
    auth = {"authorization": f"Bearer {TOKEN}"}
    page = httpx.get(f"{url}/", headers=auth)
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    evil = httpx.get(f"{url}/status", headers={**auth, "host": "evil.example"})
    assert evil.status_code == 421
    status = httpx.get(f"{url}/status", headers=auth).json()
    assert status["indexed"] == 4 and [s["root"] for s in status["sources"]] == [str(root)]
    hits = httpx.post(
        f"{url}/search", headers=auth, json={"image": _b64(root / "a" / "p1.png"), "limit": 2}
    )
    hits.raise_for_status()
    top = hits.json()[0]
    assert top["path"] == "a/p1.png"
    assert (
        httpx.get(f"{url}/image/{top['id']}", headers=auth).content
        == (root / "a" / "p1.png").read_bytes()
    )
    bad = httpx.post(f"{url}/search", headers={**auth, "content-type": "application/json"},
                     content=b"{")  # fmt: skip
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]
    stop(served, signal.SIGINT)  # Ctrl+C: a clean stop, no traceback


def _b64(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode()


def test_serve_refuses_a_running_daemons_store_with_its_url(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    root = tmp_path / "inbox"
    photos(root, 2)
    env = cli_env(tmp_path, emulator, IMGRAG_API__PORT="0")
    proc = spawn_watch(root, env, tmp_path / "daemon.log")
    try:
        from imgrag.pipeline.daemon_client import read_daemon_file

        daemon_file = tmp_path / "state" / "daemon.json"
        wait_for(lambda: read_daemon_file(daemon_file) is not None, what="the daemon")
        info = read_daemon_file(daemon_file)
        assert info is not None
        wait_for(lambda: (status_of(info.url) or {}).get("indexed") == 2, what="its pass")
        one_line_error(imgrag("serve", env=env), f"open {info.url}/ instead")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_serve_on_a_busy_port_or_an_empty_store_is_one_line(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    root = tmp_path / "inbox"
    photos(root, 1)
    env = cli_env(tmp_path, emulator)
    one_line_error(imgrag("serve", "--port", "0", env=env), "no collection 'cli'", "ingest")
    assert imgrag("ingest", str(root), env=env).returncode == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        one_line_error(imgrag("serve", "--port", str(port), env=env), str(port), "in use")
    usage = imgrag("serve", "--port", "70000", env=env)
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1, usage.stderr
    assert usage.stderr.startswith("error: ") and "--port" in usage.stderr
    assert "imgrag serve --help" in usage.stderr


def test_serve_over_a_qdrant_collection(tmp_path: Path, emulator: EmulatorHandle) -> None:
    """The server path, with qdrant-client's local mode standing in for the server."""
    root = tmp_path / "inbox"
    photos(root)
    env = cli_env(tmp_path, emulator)
    settings = load_settings(env["IMGRAG_CONFIG"], state_dir=tmp_path / "state")
    settings.embedder.provider = "foundry"
    settings.embedder.endpoint = emulator.url
    from pydantic import SecretStr

    from tests.conftest import EMULATOR_KEY

    settings.embedder.api_key = SecretStr(EMULATOR_KEY)
    settings.api.token = SecretStr(API_TOKEN)
    settings.store = StoreConfig(kind="qdrant", collection="served")
    settings.ingest.settle_seconds = 0
    location = tmp_path / "qdrant"

    async def ingest() -> None:
        assert (await reconcile_into_qdrant(settings, root, location)).indexed == 4

    async def query() -> None:
        index = QdrantIndex(settings.store, location=location)
        async with gallery_app(settings, index=index) as app:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1", headers=AUTH
            ) as c:
                status = (await c.get("/status")).json()
                assert status["indexed"] == 4 and status["store"]["kind"] == "qdrant"
                r = await c.post("/search", json={"image": _b64(root / "b" / "p2.png")})
                top = r.json()[0]
                assert top["path"] == "b/p2.png"
                thumb = await c.get(f"/thumb/{top['id']}")  # made on first request here
                assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"

    asyncio.run(ingest())
    asyncio.run(query())
