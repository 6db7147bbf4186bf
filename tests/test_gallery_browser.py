"""The gallery in a real headless browser: Debian's chromium driven by Playwright, against
``imgrag watch`` in a subprocess (the offline model, real photos, a token set).

Playwright drives the system chromium (``/usr/bin/chromium``); its own browser download is
never used. Without chromium or Playwright these tests skip and say why. Screenshots land in
``build/screenshots/`` (gitignored), the CI's artifacts.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imgrag.pipeline.daemon_client import read_daemon_file
from PIL import Image, ImageOps

from tests.test_cli_ingest import REPO
from tests.test_daemon_api import wait_for
from tests.test_gallery_api import skimage_photo

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = REPO / "build" / "screenshots"
TOKEN = "browser-token-123"
PHOTOS = {
    "earth/cat.png": "chelsea.png",
    "earth/coffee.png": "coffee.png",
    "earth/motorcycle.png": "motorcycle_left.png",
    "space/rocket.jpg": "rocket.jpg",
    "space/astronaut.png": "astronaut.png",
}
MORE = {"camera.png": "camera.png", "horse.png": "horse.png"}
"""A second source, watched by the same daemon."""
TOTAL = len(PHOTOS) + len(MORE)
WAIT_MS = 60_000


def _browser_or_skip() -> Any:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    manager = sync_playwright().start()
    try:
        return manager, manager.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
    except Error as exc:
        manager.stop()
        pytest.skip(f"chromium does not start here: {str(exc).splitlines()[0]}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    manager, browser = _browser_or_skip()
    try:
        yield browser
    finally:
        browser.close()
        manager.stop()


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The daemon's URL and first watched folder (a second one is the source ``more-...``)."""
    base = tmp_path_factory.mktemp("browser")
    root, more = base / "inbox", base / "more"
    for folder, photos in ((root, PHOTOS), (more, MORE)):
        for rel, name in photos.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(skimage_photo(name), folder / rel)
    env = {
        **os.environ,
        "IMGRAG_CONFIG": str(REPO / "configs" / "default.toml"),
        "IMGRAG_STATE_DIR": str(base / "state"),
        "IMGRAG_EMBEDDER__PROVIDER": "local",
        "IMGRAG_STORE__COLLECTION": "browser",
        "IMGRAG_INGEST__SETTLE_SECONDS": "0.3",
        "IMGRAG_API__PORT": "0",
        "IMGRAG_API_TOKEN": TOKEN,
    }
    log = base / "daemon.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "imgrag.pipeline.cli", "watch", str(root), str(more)],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    state = base / "state" / "daemon.json"
    try:
        wait_for(
            lambda: read_daemon_file(state) is not None or proc.poll() is not None,
            timeout=120,
            what="daemon.json",
        )
        info = read_daemon_file(state)
        assert info is not None, log.read_text()
        yield info.url, root
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


@pytest.fixture
def page(browser: Any, gallery: tuple[str, Path], request: pytest.FixtureRequest) -> Iterator[Any]:
    url, _ = gallery
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{url}/?token={TOKEN}")  # sets the cookie, then lands on /
    page.wait_for_function(
        "n => document.getElementById('status').dataset.indexed >= n",
        arg=TOTAL,
        timeout=120_000,
    )
    try:
        yield page
    finally:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{request.node.name}.png"), full_page=True)
        context.close()


def paths(page: Any) -> list[str]:
    return [str(p) for p in page.eval_on_selector_all(".hit img", "els => els.map(e => e.alt)")]


def wait_first(page: Any, path: str) -> None:
    page.wait_for_function(
        "p => { const i = document.querySelector('.hit img'); return i && i.alt === p; }",
        arg=path,
    )


def test_a_typed_query_shows_the_expected_thumbnail_first_and_loaded(page: Any) -> None:
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("a photo of a cat")
    wait_first(page, "earth/cat.png")
    page.wait_for_function(
        "() => { const i = document.querySelector('.hit img');"
        " return i.complete && i.naturalWidth > 0; }"
    )
    assert page.evaluate("document.querySelector('.hit img').naturalWidth") == 256
    assert "earth/cat.png" in page.inner_text(".hit")
    page.keyboard.press("ArrowDown")  # from the search box into the results
    assert page.evaluate("document.activeElement.dataset.i") == "0"
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.i") == "1"
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail[open]")
    page.wait_for_function("() => document.getElementById('detail-img').naturalWidth > 0")
    assert "earth/cat.png" in page.inner_text("#detail-meta")
    page.click("#detail-more")  # more like this: the other photos, the cat itself left out
    page.wait_for_function(
        "() => document.getElementById('message').innerText.includes('like earth/cat.png')"
    )
    assert "earth/cat.png" not in paths(page) and len(paths(page)) == TOTAL - 1


def test_a_dropped_image_finds_its_near_duplicate(page: Any) -> None:
    with Image.open(skimage_photo("rocket.jpg")) as img:
        w, h = img.size
        query = ImageOps.mirror(img.convert("RGB")).crop((w // 10, h // 10, w - w // 10, h))
    buf = io.BytesIO()
    query.save(buf, format="JPEG", quality=85)
    page.evaluate(
        """b64 => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "query.jpg", { type: "image/jpeg" }));
            document.body.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true }));
        }""",
        base64.b64encode(buf.getvalue()).decode(),
    )
    wait_first(page, "space/rocket.jpg")
    assert page.is_visible("#example")


def test_a_folder_filter_narrows_the_results(page: Any) -> None:
    page.fill("#q", "a photo of a cat")
    wait_first(page, "earth/cat.png")
    page.wait_for_function("n => document.querySelectorAll('.hit').length === n", arg=TOTAL)
    page.fill("#f-folder", "space")
    page.wait_for_function("() => document.querySelectorAll('.hit').length === 2")
    assert sorted(paths(page)) == ["space/astronaut.png", "space/rocket.jpg"]


def test_the_source_filter_narrows_the_results(page: Any) -> None:
    page.fill("#q", "a photo of a cat")
    page.wait_for_function("n => document.querySelectorAll('.hit').length === n", arg=TOTAL)
    page.wait_for_function("() => document.getElementById('f-source').options.length === 3")
    more = page.evaluate(
        "[...document.getElementById('f-source').options].map(o => o.value)"
        ".find(v => v.startsWith('more-'))"
    )
    assert more, page.inner_html("#f-source")
    page.select_option("#f-source", more)
    page.wait_for_function("n => document.querySelectorAll('.hit').length === n", arg=len(MORE))
    assert sorted(paths(page)) == sorted(MORE)
    assert more in page.inner_text("#status-body")  # the status lists each source
    page.select_option("#f-source", "")
    page.wait_for_function("n => document.querySelectorAll('.hit').length === n", arg=TOTAL)


def test_a_new_file_shows_in_the_status_then_in_search_without_a_reload(
    page: Any, gallery: tuple[str, Path]
) -> None:
    _, root = gallery
    page.evaluate("window.__sameDocument = true")
    page.fill("#q", "old coins")
    page.wait_for_function("() => document.querySelectorAll('.hit').length > 0")
    assert "new/coins.png" not in paths(page)
    before = int(page.evaluate("document.getElementById('status').dataset.indexed"))
    (root / "new").mkdir()
    shutil.copy(skimage_photo("coins.png"), root / "new" / "coins.png")
    page.wait_for_function(
        "t => document.getElementById('status-body').innerText.includes(t)",
        arg=f"indexed {before + 1}",
    )
    wait_first(page, "new/coins.png")
    assert page.evaluate("window.__sameDocument") is True


def test_without_the_token_the_page_gives_nothing(browser: Any, gallery: tuple[str, Path]) -> None:
    url, _ = gallery
    context = browser.new_context()
    try:
        page = context.new_page()
        response = page.goto(f"{url}/")
        assert response is not None and response.status == 401
        assert page.query_selector("#results") is None
        assert page.query_selector("script") is None
        assert "token" in page.inner_text("body")
        wrong = page.goto(f"{url}/?token=wrong")
        assert wrong is not None and wrong.status == 401
        status = page.goto(f"{url}/status")
        assert status is not None and status.status == 401
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "without-token.png"))
    finally:
        context.close()
