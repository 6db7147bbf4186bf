"""The gallery's thumbnail cache: one WebP per content under an exact name, so writing,
finding and removing one never lists the cache; a renamed or copied file shares its
thumbnail; a content's thumbnail goes with the last point that holds it; a cache of the
former flat layout is adopted once. Real files, the real embedded store, the real CLI and
the real HTTP app."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pathlib
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from imgrag import NotServable
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.pipeline import ingest as ingest_module
from imgrag.pipeline import thumbnails as th
from imgrag.pipeline.api import create_api
from imgrag.pipeline.config import load_settings
from imgrag.pipeline.core import Core
from imgrag.pipeline.door import LocalDoor
from imgrag.pipeline.metrics import Metrics
from PIL import Image

from tests import images_factory as f
from tests.ingest_harness import pipeline
from tests.test_cli_ingest import cli_env, imgrag
from tests.test_serve import point_ids

_LISTERS: list[tuple[Any, str]] = [
    (os, "scandir"),
    (os, "listdir"),
    (os, "walk"),
    (glob, "glob"),
    (glob, "iglob"),
    (pathlib.Path, "iterdir"),
    (pathlib.Path, "glob"),
    (pathlib.Path, "rglob"),
    (pathlib.Path, "walk"),
]


@contextmanager
def listings() -> Iterator[list[str]]:
    """Every directory listing made inside the block, by whatever call (the folder listed)."""
    seen: list[str] = []
    mp = pytest.MonkeyPatch()
    for owner, name in _LISTERS:
        real = getattr(owner, name, None)
        if real is None:  # Path.walk is Python 3.12's
            continue

        def counted(*args: Any, _real: Any = real, **kw: Any) -> Any:
            seen.append(str(args[0]) if args else ".")
            return _real(*args, **kw)

        mp.setattr(owner, name, counted)
    try:
        yield seen
    finally:
        mp.undo()


def under(cache: Path, seen: list[str]) -> list[str]:
    return [p for p in seen if Path(p).resolve().is_relative_to(cache.resolve())]


def fake_sha(i: int, tag: str = "") -> str:
    return hashlib.sha256(f"{tag}{i}".encode()).hexdigest()


def filled_cache(cache: Path, n: int) -> None:
    """``n`` cached thumbnails (empty files: only their names matter) in the layout."""
    for i in range(n):
        target = th.cached_path(fake_sha(i), cache)
        assert target is not None
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    (cache / th.LAYOUT_MARKER).write_text(th.LAYOUT + "\n")


def webps(cache: Path) -> set[str]:
    return {p.name for p in cache.rglob("*.webp")}


@pytest.mark.parametrize("n", [1_000, 20_000])
def test_writing_finding_and_removing_a_thumbnail_lists_nothing_at_any_cache_size(
    tmp_path: Path, n: int
) -> None:
    """The same calls with 1,000 and 20,000 thumbnails cached: zero listings both times
    (equal counts is the requirement; zero is what an exact name gives)."""
    cache = tmp_path / "thumbs"
    filled_cache(cache, n)
    new, held, gone = fake_sha(1, "new"), fake_sha(2, "held"), fake_sha(3)
    image = f.photo(7, (300, 200))
    with listings() as seen:
        written = th.save_thumbnail(new, image, cache)
        again = th.save_thumbnail(new, image, cache)  # already cached: kept
        path = th.cached_path(new, cache)
        th.save_thumbnail(held, image, cache)
        removed = th.discard([new, held, gone], cache, held=lambda sha: sha == held)
    assert seen == []
    assert written == again == path and not written.exists()
    assert removed == 2 and th.cached_path(held, cache).is_file()  # type: ignore[union-attr]
    assert not th.cached_path(gone, cache).exists()  # type: ignore[union-attr]
    assert len(list(cache.iterdir())) <= 257  # 256 fan-out folders and the marker


async def test_a_pass_that_removes_edits_and_renames_files_never_lists_the_cache(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real indexer, with 20,000 other thumbnails cached: a deleted file's
    thumbnail and an edited file's former one are removed, a renamed file's is kept and not
    made again (only the edit's new content is written), and no folder of the cache is
    listed. The store is asked one count per content that left (the deleted file's and the
    edit's former one), none for the rename, whose content landed in the same pass."""
    written: list[str] = []
    real_save = th.save_thumbnail

    def save(sha256: str, image: Image.Image, cache: Path) -> Path:
        written.append(sha256)
        return real_save(sha256, image, cache)

    monkeypatch.setattr(ingest_module, "save_thumbnail", save)
    async with pipeline(tmp_path, emulator) as p:
        for i in range(3):
            f.save(f.photo(i, (120, 80)), p.root / f"p{i}.png", "PNG")
        assert (await p.ingestor.reconcile()).indexed == 3
        cache = p.runtime.core.thumbs
        assert len(webps(cache)) == 3 and len(written) == 3
        filled_cache(cache, 20_000)
        (p.root / "p0.png").unlink()
        f.save(f.photo(40, (120, 80)), p.root / "p1.png", "PNG")
        (p.root / "trip").mkdir()
        (p.root / "p2.png").rename(p.root / "trip" / "p2.png")
        written.clear()
        before = {path: str(pl["sha256"]) for path, pl in p.points().items()}
        counted: list[Any] = []
        real_count = p.runtime.index.count

        def count(flt: Any = None) -> int:
            counted.append(flt.must[0].match.value)
            return real_count(flt)

        monkeypatch.setattr(p.runtime.index, "count", count)
        with listings() as seen:
            summary = await p.ingestor.reconcile(prune=True)
        assert sorted(counted) == sorted([before["p0.png"], before["p1.png"]])
        assert (summary.removed, summary.indexed, summary.reused) == (2, 1, 1)
        assert under(cache, seen) == []
        sha = {path: str(pl["sha256"]) for path, pl in p.points().items()}
        assert written == [sha["p1.png"]]
        left = webps(cache) - {f"{fake_sha(i)}.webp" for i in range(20_000)}
        assert left == {f"{sha['p1.png']}.webp", f"{sha['trip/p2.png']}.webp"}


# -- a rename keeps its thumbnail ------------------------------------------------------------

_OPENED: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _OPENED is not None and isinstance(args[0], str | bytes | Path):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # every open() of this process, by any library


@contextmanager
def opens() -> Iterator[list[str]]:
    global _OPENED
    _OPENED = []
    try:
        yield _OPENED
    finally:
        _OPENED = None


def serving(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> httpx.AsyncClient:
    """The real HTTP app over the CLI's state, as ``imgrag serve`` builds it (no probe)."""
    for key in ("IMGRAG_STORE__COLLECTION", "IMGRAG_STATE_DIR"):
        monkeypatch.setenv(key, env[key])
    settings = load_settings(env["IMGRAG_CONFIG"])
    door = LocalDoor(Core.build(settings))
    app = create_api(door, Metrics(door.status_now), None)
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


async def test_a_renamed_folder_keeps_its_thumbnails_and_the_api_serves_them_undecoded(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``imgrag ingest`` writes the thumbnails; the folder is renamed; ``imgrag ingest
    --prune`` reuses every vector, and keeps every thumbnail file as it was (same inode,
    not remade); ``/thumb/{new id}`` then answers without opening the renamed originals."""
    photos = tmp_path / "photos"
    for i in range(4):
        f.save(f.photo(i, (300, 200)), photos / "2024" / f"p{i}.png", "PNG")
    env = cli_env(tmp_path, emulator)
    assert imgrag("ingest", str(photos), env=env).returncode == 0
    cache = tmp_path / "state" / "thumbs"
    made = {p.name: p.stat().st_ino for p in cache.rglob("*.webp")}
    assert len(made) == 4

    (photos / "2024").rename(photos / "2024-trip")
    done = imgrag("ingest", str(photos), "--prune", "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["requests"], summary["reused"], summary["removed"]) == (0, 4, 4)
    assert {p.name: p.stat().st_ino for p in cache.rglob("*.webp")} == made
    ids = point_ids(env)
    assert sorted(ids) == [f"2024-trip/p{i}.png" for i in range(4)]

    async with serving(env, monkeypatch) as c:
        with opens() as opened:
            for pid in ids.values():
                r = await c.get(f"/thumb/{pid}")
                assert r.status_code == 200, r.text
                assert r.headers["content-type"] == "image/webp"
    originals = {str((photos / rel).resolve()) for rel in ids}
    assert not originals & {os.path.realpath(p) for p in opened}
    assert {os.path.realpath(p) for p in opened} & {
        str(p.resolve()) for p in cache.rglob("*.webp")
    }  # the hook sees opens: the cached files were


# -- the last holder of a content ------------------------------------------------------------


def test_a_contents_thumbnail_goes_with_its_last_point_through_prune_and_forget(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    root, other = tmp_path / "inbox", tmp_path / "other"
    f.save(f.photo(0, (200, 150)), root / "a" / "p0.png", "PNG")
    f.save(f.photo(2, (200, 150)), root / "c" / "p2.png", "PNG")
    (root / "b").mkdir()
    other.mkdir()
    shutil.copy(root / "a" / "p0.png", root / "b" / "copy.png")
    shutil.copy(root / "c" / "p2.png", other / "p2-copy.png")
    env = cli_env(tmp_path, emulator)
    cache = tmp_path / "state" / "thumbs"
    p0, p2 = (
        f"{hashlib.sha256((root / n).read_bytes()).hexdigest()}.webp"
        for n in ("a/p0.png", "c/p2.png")
    )
    assert imgrag("ingest", str(root), env=env).returncode == 0
    assert imgrag("ingest", str(other), env=env).returncode == 0
    assert webps(cache) == {p0, p2}  # one per content: the copies share

    (root / "a" / "p0.png").unlink()
    assert imgrag("ingest", str(root), "--prune", env=env).returncode == 0
    assert webps(cache) == {p0, p2}  # b/copy.png still holds that content
    (root / "b" / "copy.png").unlink()
    assert imgrag("ingest", str(root), "--prune", env=env).returncode == 0
    assert webps(cache) == {p2}

    forgot = imgrag("forget", str(root), env=env)
    assert forgot.returncode == 0, forgot.stderr
    assert webps(cache) == {p2}  # the other source's copy still holds it
    assert imgrag("forget", str(other), env=env).returncode == 0
    assert webps(cache) == set()


# -- the former flat layout ------------------------------------------------------------------


async def test_a_flat_cache_is_adopted_once_and_never_listed_again(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    """A cache as the former layout left it (``{id}-{sha[:16]}.webp`` in one folder): the
    first indexer moves the thumbnails of points that still hold their content to their
    content names (not remade: same bytes), deletes the rest, and marks the cache; later
    openers list nothing."""
    async with pipeline(tmp_path, emulator) as p:
        for i in range(3):
            f.save(f.photo(i, (120, 80)), p.root / f"p{i}.png", "PNG")
        await p.ingestor.reconcile()
        cache = p.runtime.core.thumbs
        states = {s.path: s for s in p.runtime.index.file_states()}
    shutil.rmtree(cache)
    cache.mkdir()
    flat: dict[str, bytes] = {}
    for rel, s in states.items():
        flat[rel] = f"former thumbnail of {rel}".encode()
        (cache / f"{s.id}-{s.sha256[:16]}.webp").write_bytes(flat[rel])
    stale_edit = states["p0.png"]
    (cache / f"{stale_edit.id}-{'0' * 16}.webp").write_bytes(b"an edited file's old one")
    (cache / f"{stale_edit.id}-{stale_edit.sha256[:16]}.12345.part").write_bytes(b"half")
    (cache / "6f1c2f1e-4f7a-5d8e-9a57-3b1c0f9e2a10-0123456789abcdef.webp").write_bytes(b"gone")
    (cache / "notes.txt").write_text("not the cache's")

    async with pipeline(tmp_path, emulator) as p:
        with listings() as seen:
            await p.ingestor.load_state()
        assert [Path(s) for s in under(cache, seen)] == [cache]  # the one listing
    assert sorted(x.name for x in cache.iterdir() if x.is_file()) == ["LAYOUT", "notes.txt"]
    for rel, s in states.items():
        target = th.cached_path(s.sha256, cache)
        assert target is not None and target.read_bytes() == flat[rel]

    async with pipeline(tmp_path, emulator) as p:
        with listings() as seen:
            await p.ingestor.load_state()
            assert th.adopt_flat_cache(cache, lambda _: None) == 0
        assert under(cache, seen) == []


def test_thumbnail_refuses_what_names_no_content_or_no_point(tmp_path: Path) -> None:
    """The API's checks hold in the new layout: an id that is no UUID, a payload without a
    well-formed content hash, a file outside its root: nothing is read or written."""
    root = tmp_path / "root"
    f.save(f.photo(1), root / "x.png", "PNG")
    good = {"root": str(root), "path": "x.png", "sha256": fake_sha(1)}
    cache = tmp_path / "thumbs"
    bad: list[tuple[str, dict[str, Any]]] = [
        ("../../etc/passwd", good),
        ("6f1c2f1e-4f7a-5d8e-9a57-3b1c0f9e2a10", {**good, "sha256": "../../x"}),
        ("6f1c2f1e-4f7a-5d8e-9a57-3b1c0f9e2a10", {**good, "sha256": fake_sha(1)[:16]}),
        ("6f1c2f1e-4f7a-5d8e-9a57-3b1c0f9e2a10", {**good, "path": "../outside.png"}),
    ]
    for pid, payload in bad:
        with pytest.raises(NotServable):
            th.thumbnail(pid, payload, cache, [root])
    assert not cache.exists()
    made = th.thumbnail("6f1c2f1e-4f7a-5d8e-9a57-3b1c0f9e2a10", good, cache, [root])
    assert made == cache / fake_sha(1)[:2] / f"{fake_sha(1)}.webp"
    with Image.open(made) as img:
        assert img.format == "WEBP"
    opener_calls: list[Path] = []

    def opener(path: Path) -> Image.Image:
        opener_calls.append(path)
        return Image.open(path)

    other = {"root": str(root), "path": "x.png", "sha256": fake_sha(1)}
    th.thumbnail("0b1c2f1e-4f7a-5d8e-9a57-3b1c0f9e2a10", other, cache, [root], opener)
    assert opener_calls == []  # another point with the same content: its thumbnail


def test_a_cache_that_cannot_be_marked_is_not_listed_on_every_request(tmp_path: Path) -> None:
    """When the marker cannot be written (here a folder stands where it goes), the one
    listing is not repeated by every later thumbnail request of the process."""
    cache = tmp_path / "thumbs"
    (cache / th.LAYOUT_MARKER).mkdir(parents=True)
    (cache / "6f1c2f1e-4f7a-5d8e-9a57-3b1c0f9e2a10-0123456789abcdef.webp").write_bytes(b"x")
    with listings() as seen:
        for _ in range(3):
            assert th.adopt_flat_cache(cache, lambda _: None) == 0
    assert [Path(s) for s in under(cache, seen)] == [cache]
